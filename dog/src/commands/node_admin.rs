//! `dog node kill` and `dog node vnodes set|get`.
//!
//! `kill` sends KILL_NODE to the node with the given id (its position in
//! `dog node list`) or, with `-l`, to the node at `-a`/`-p`; the sheep
//! answers and then leaves the cluster and exits. `vnodes set N` /
//! `vnodes get` act on the node at `-a`/`-p` (SET_VNODES / GET_VNODES, an
//! int32 payload); 0 vnodes drains a node in Sheepfold.

use qemu_proto::flags::CMD_WRITE;
use qemu_proto::node::NodeId;
use qemu_proto::{Opcode, SdResult};

use crate::client::{request, Connection};
use crate::commands::recovery::request_failed;
use crate::commands::{connect_with_nodes, print_out, Ctx};
use crate::error::{exit, DogError};
use crate::options::{is_numeric, strtol};

fn usage_exit(message: impl Into<String>) -> DogError {
    DogError::Exit {
        message: message.into(),
        code: exit::USAGE,
    }
}

/// The node `dog node kill` targets: `-l` (the `-a`/`-p` node) or an id
/// below `nr_nodes`; dog's messages for the wrong combinations (exit 64).
pub fn kill_target(
    id: Option<&str>,
    local: bool,
    nr_nodes: usize,
) -> Result<Option<usize>, DogError> {
    match (id, local) {
        (Some(_), true) => Err(usage_exit(
            "don't use -l option and specify node id at the same time",
        )),
        (None, true) => Ok(None),
        (None, false) => Err(usage_exit("please specify -l option or node id")),
        (Some(p), false) => {
            if !is_numeric(p) {
                return Err(usage_exit(format!(
                    "Invalid node id '{p}', please specify a numeric value"
                )));
            }
            let id = strtol(p).0.clamp(0, i64::from(i32::MAX));
            if id as usize >= nr_nodes {
                return Err(usage_exit(format!("Invalid node id '{id}'")));
            }
            Ok(Some(id as usize))
        }
    }
}

/// `dog node kill ID` / `dog node kill -l`.
pub fn kill(ctx: &Ctx, id: Option<&str>, local: bool) -> Result<(), DogError> {
    let (_conn, nl) = connect_with_nodes(ctx)?;
    let nid = match kill_target(id, local, nl.nodes.len())? {
        Some(i) => nl.nodes[i].nid,
        None => NodeId::new(ctx.addr, ctx.port),
    };
    let failed = |e: DogError| e.then("Failed to execute request", exit::FAILURE);
    let mut conn = Connection::connect(nid.addr, nid.port).map_err(failed)?;
    let reply = conn.exec(request(Opcode::KillNode), &[]).map_err(failed)?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(request_failed(reply.rsp.result));
    }
    Ok(())
}

/// Parses `vnodes set N`: a decimal in 0..=65535 (Sheepdog requires at
/// least 1; Sheepfold takes 0 to drain the node).
pub fn parse_vnodes(s: &str) -> Result<u16, DogError> {
    let invalid = || {
        usage_exit(format!(
            "Invalid number of vnodes '{s}': must be an integer between 0 and {}",
            u16::MAX
        ))
    };
    if !is_numeric(s) {
        return Err(invalid());
    }
    u16::try_from(strtol(s).0).map_err(|_| invalid())
}

/// `dog node vnodes set N`: SET_VNODES on the node at `-a`/`-p`.
pub fn vnodes_set(ctx: &Ctx, vnodes: u16) -> Result<(), DogError> {
    let failed = |e: DogError| e.then("Failed to execute request", exit::FAILURE);
    let mut conn = ctx.connect().map_err(failed)?;
    let mut req = request(Opcode::SetVnodes);
    req.flags = CMD_WRITE;
    let payload = i32::from(vnodes).to_le_bytes();
    let reply = conn.exec(req, &payload).map_err(failed)?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(request_failed(reply.rsp.result));
    }
    Ok(())
}

/// `dog node vnodes get`: the vnodes of the node at `-a`/`-p`, one number
/// on stdout.
pub fn vnodes_get(ctx: &Ctx) -> Result<(), DogError> {
    let failed = |e: DogError| e.then("Failed to execute request", exit::FAILURE);
    let mut conn = ctx.connect().map_err(failed)?;
    let mut req = request(Opcode::GetVnodes);
    req.data_length = 4;
    let reply = conn.exec(req, &[]).map_err(failed)?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(request_failed(reply.rsp.result));
    }
    let bytes: [u8; 4] = reply
        .data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DogError::sysfail("bad GET_VNODES reply: fewer than 4 bytes"))?;
    print_out(&format!("{}\n", i32::from_le_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, DogError>) -> (String, i32) {
        let e = r.unwrap_err();
        (e.to_string(), e.code())
    }

    #[test]
    fn kill_targets() {
        assert_eq!(kill_target(Some("2"), false, 3).unwrap(), Some(2));
        assert_eq!(kill_target(None, true, 3).unwrap(), None);
        assert_eq!(
            err(kill_target(Some("3"), false, 3)),
            ("Invalid node id '3'".into(), 64)
        );
        assert_eq!(
            err(kill_target(Some("x1"), false, 3)),
            (
                "Invalid node id 'x1', please specify a numeric value".into(),
                64
            )
        );
        assert_eq!(
            err(kill_target(Some("-1"), false, 3)).0,
            "Invalid node id '-1', please specify a numeric value"
        );
        assert_eq!(
            err(kill_target(Some("1"), true, 3)).0,
            "don't use -l option and specify node id at the same time"
        );
        assert_eq!(
            err(kill_target(None, false, 3)).0,
            "please specify -l option or node id"
        );
        assert_eq!(
            err(kill_target(Some("99999999999999999999"), false, 3)).0,
            "Invalid node id '2147483647'"
        );
    }

    #[test]
    fn vnodes_values() {
        assert_eq!(parse_vnodes("0").unwrap(), 0);
        assert_eq!(parse_vnodes("128").unwrap(), 128);
        assert_eq!(parse_vnodes("65535").unwrap(), 65535);
        for bad in ["65536", "-1", "", "12a", " 1"] {
            assert_eq!(
                err(parse_vnodes(bad)),
                (
                    format!(
                        "Invalid number of vnodes '{bad}': must be an integer between 0 and 65535"
                    ),
                    64
                )
            );
        }
    }
}
