//! `dog node recovery [info|stat|get-throttle|set-throttle]` and `dog
//! cluster recover {enable|disable|force}`.
//!
//! `info` asks every node for its STAT_RECOVERY state (on the node's own
//! address) and lists those in recovery; `stat` (Sheepfold) lists every
//! node's cumulative counters from the same reply's extension. The
//! throttle commands send GET/SET_RECOVERY and the `cluster recover`
//! commands ENABLE/DISABLE_RECOVER and FORCE_RECOVER to the node at
//! `-a`/`-p`.

use qemu_proto::consts::{SD_MAX_NODES, SD_NODE_SIZE};
use qemu_proto::flags::CMD_WRITE;
use qemu_proto::recovery::{RecoveryThrottling, StatRecoveryReply};
use qemu_proto::{Opcode, SdNode, SdResult};

use crate::client::{request, Connection};
use crate::commands::{confirm, connect_with_nodes, print_out, warn, Ctx};
use crate::error::{exit, DogError};
use crate::options::strtol;
use crate::output::host_port;
use crate::output_admin;

/// Sheepdog's confirmation before `cluster recover force` (RECOVER_PRINT).
const RECOVER_PRINT: &str = "Caution! Please try starting all the cluster nodes normally before\n\
running this command.\n\n\
The cluster may need to be force recovered if:\n  \
- the master node fails to start because of epoch mismatch; or\n  \
- some nodes fail to start after a cluster shutdown.\n\n\
Are you sure you want to continue? [yes/no]: ";

/// The failure of a request dog sends with `send_light_req` and then
/// reports as "Failed to execute request" (exit 1).
pub fn request_failed(result: SdResult) -> DogError {
    DogError::failure(format!(
        "Response's result: {}\nFailed to execute request",
        result.message()
    ))
}

/// STAT_RECOVERY on one node (connection failures exit 2, a refusal
/// prints sheep's text and exits 1, as dog does).
fn stat_recovery(node: &SdNode) -> Result<StatRecoveryReply, DogError> {
    let mut conn = Connection::connect(node.nid.addr, node.nid.port)?;
    let mut req = request(Opcode::StatRecovery);
    req.data_length = StatRecoveryReply::SIZE as u32;
    let reply = conn.exec(req, &[])?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(reply.rsp.result.message()));
    }
    StatRecoveryReply::decode(&reply.data).map_err(|e| {
        DogError::sysfail(format!(
            "bad STAT_RECOVERY reply from {}: {e}",
            host_port(node)
        ))
    })
}

/// `dog node recovery [info] [-r]`: the nodes in recovery and their
/// progress. With none, the plain output is exactly the two header lines.
pub fn info(ctx: &Ctx) -> Result<(), DogError> {
    let (_conn, nl) = connect_with_nodes(ctx)?;
    print_out(output_admin::recovery_info_header(ctx.raw))?;
    for (id, node) in nl.nodes.iter().enumerate() {
        let reply = stat_recovery(node)?;
        print_out(&output_admin::recovery_info_row(
            id,
            node,
            &reply.state,
            ctx.raw,
        ))?;
    }
    Ok(())
}

/// `dog node recovery stat [-r]` (Sheepfold): every node's cumulative
/// recovery counters. A node that does not report them (a Sheepdog sheep)
/// is named on stderr and skipped.
pub fn stat(ctx: &Ctx) -> Result<(), DogError> {
    let (_conn, nl) = connect_with_nodes(ctx)?;
    print_out(output_admin::recovery_stat_header(ctx.raw))?;
    for (id, node) in nl.nodes.iter().enumerate() {
        match stat_recovery(node)?.stats {
            Some(stats) => print_out(&output_admin::recovery_stat_row(id, node, &stats, ctx.raw))?,
            None => warn(&format!(
                "{} does not report recovery counters",
                host_port(node)
            )),
        }
    }
    Ok(())
}

/// Parses `set-throttle MAX INTERVAL` as dog does: decimal, MAX within
/// u32, INTERVAL non-negative, both zero or both non-zero. Errors exit 64.
pub fn parse_throttle(
    max: Option<&str>,
    interval: Option<&str>,
) -> Result<RecoveryThrottling, DogError> {
    let usage = |message: String| DogError::Exit {
        message,
        code: exit::USAGE,
    };
    let (Some(max_s), Some(interval_s)) = (max, interval) else {
        return Err(usage(format!(
            "Invalid interval max ({}), interval ({})",
            max.unwrap_or("(null)"),
            interval.unwrap_or("(null)")
        )));
    };
    let (max, rest) = strtol(max_s);
    if rest.len() == max_s.len() || !rest.is_empty() || !(0..=i64::from(u32::MAX)).contains(&max) {
        return Err(usage(format!("Invalid max ({max_s})")));
    }
    let (interval, rest) = strtol(interval_s);
    if rest.len() == interval_s.len() || !rest.is_empty() || interval < 0 || interval == i64::MAX {
        return Err(usage(format!("Invalid interval ({interval_s})")));
    }
    let t = RecoveryThrottling::new(max as u32, interval as u64);
    if !t.is_valid() {
        return Err(usage(format!(
            "Invalid interval max ({}), interval ({})",
            t.max_exec_count, t.queue_work_interval
        )));
    }
    Ok(t)
}

/// `dog node recovery set-throttle MAX INTERVAL_MS`: SET_RECOVERY (the
/// sheep applies it on every node).
pub fn set_throttle(ctx: &Ctx, throttle: RecoveryThrottling) -> Result<(), DogError> {
    let (mut conn, _nl) = connect_with_nodes(ctx)?;
    let mut req = request(Opcode::SetRecovery);
    req.flags = CMD_WRITE;
    let reply = conn
        .exec(req, &throttle.encode())
        .map_err(|e| e.then("Failed to execute request", exit::FAILURE))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(request_failed(reply.rsp.result));
    }
    Ok(())
}

/// `dog node recovery get-throttle`: GET_RECOVERY, printed as
/// "max (N), interval (MS)".
pub fn get_throttle(ctx: &Ctx) -> Result<(), DogError> {
    let (mut conn, _nl) = connect_with_nodes(ctx)?;
    let mut req = request(Opcode::GetRecovery);
    req.data_length = RecoveryThrottling::SIZE as u32;
    let reply = conn
        .exec(req, &[])
        .map_err(|e| e.then("Failed to execute request", exit::FAILURE))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(request_failed(reply.rsp.result));
    }
    let t = RecoveryThrottling::decode(&reply.data)
        .map_err(|e| DogError::sysfail(format!("bad GET_RECOVERY reply: {e}")))?;
    print_out(&output_admin::throttle(&t))
}

/// `dog cluster recover enable|disable`: ENABLE/DISABLE_RECOVER, then
/// "Cluster recovery: enable|disable". Every failure exits 1, as dog's
/// `send_light_req` callers do.
pub fn set_enabled(ctx: &Ctx, enable: bool) -> Result<(), DogError> {
    let op = if enable {
        Opcode::EnableRecover
    } else {
        Opcode::DisableRecover
    };
    let mut conn = ctx.connect().map_err(|e| e.with_code(exit::FAILURE))?;
    let reply = conn
        .exec(request(op), &[])
        .map_err(|e| e.with_code(exit::FAILURE))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(format!(
            "Response's result: {}",
            reply.rsp.result.message()
        )));
    }
    print_out(output_admin::cluster_recover(enable))
}

/// `dog cluster recover force [-f]`: after confirmation, FORCE_RECOVER.
/// Sheepdog's sheep refuses it unless the cluster waits for nodes that
/// will not come back ("Cluster is running/halted and cannot be force
/// recovered"); Sheepfold's does the same, and answers "Operation is not
/// supported" while waiting for the nodes of its last epoch.
pub fn force(ctx: &Ctx, yes: bool) -> Result<(), DogError> {
    if !yes {
        confirm(RECOVER_PRINT)?;
    }
    let mut conn = ctx.connect()?;
    let mut req = request(Opcode::ForceRecover);
    req.data_length = (SD_MAX_NODES * SD_NODE_SIZE) as u32;
    let reply = conn.exec(req, &[])?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(format!(
            "failed to execute request, {}",
            reply.rsp.result.message()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(max: Option<&str>, interval: Option<&str>) -> (String, i32) {
        let e = parse_throttle(max, interval).unwrap_err();
        (e.to_string(), e.code())
    }

    #[test]
    fn throttle_arguments() {
        assert_eq!(
            parse_throttle(Some("4"), Some("1000")).unwrap(),
            RecoveryThrottling::new(4, 1000)
        );
        assert_eq!(
            parse_throttle(Some("0"), Some("0")).unwrap(),
            RecoveryThrottling::new(0, 0)
        );
        assert_eq!(
            parse_throttle(Some("4294967295"), Some("1")).unwrap(),
            RecoveryThrottling::new(u32::MAX, 1)
        );
        assert_eq!(err(Some("x"), Some("1")), ("Invalid max (x)".into(), 64));
        assert_eq!(
            err(Some("4294967296"), Some("1")),
            ("Invalid max (4294967296)".into(), 64)
        );
        assert_eq!(err(Some("-1"), Some("1")).0, "Invalid max (-1)");
        assert_eq!(err(Some("1"), Some("5s")).0, "Invalid interval (5s)");
        assert_eq!(err(Some("1"), Some("-5")).0, "Invalid interval (-5)");
        assert_eq!(
            err(Some("0"), Some("10")),
            ("Invalid interval max (0), interval (10)".into(), 64)
        );
        assert_eq!(
            err(Some("3"), Some("0")).0,
            "Invalid interval max (3), interval (0)"
        );
        assert_eq!(
            err(Some("3"), None).0,
            "Invalid interval max (3), interval ((null))"
        );
    }

    #[test]
    fn failure_text() {
        let e = request_failed(SdResult::INVALID_PARMS);
        assert_eq!(
            e.to_string(),
            "Response's result: Invalid parameters\nFailed to execute request"
        );
        assert_eq!(e.code(), 1);
    }
}
