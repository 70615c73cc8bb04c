//! The dog subcommands and what they share.
//!
//! [`Ctx`] holds the global options (daemon address, port, raw, verbose).
//! This module also owns the requests several commands send: the node list
//! (`update_node_list` in dog), VDI lookup by name (GET_VDI_INFO), and the
//! READ_OBJ / WRITE_OBJ builders with dog's failure messages.

pub mod check;
pub mod cluster;
pub mod lock;
pub mod node;
pub mod node_admin;
pub mod recovery;
pub mod vdi;
pub mod vdi_io;
pub mod vdi_snap;

use std::io::{self, BufRead, Write};
use std::net::IpAddr;

use qemu_proto::consts::{
    SD_INODE_HEADER_SIZE, SD_MAX_NODES, SD_MAX_VDI_LEN, SD_MAX_VDI_TAG_LEN, SD_NODE_SIZE,
};
use qemu_proto::flags::{CMD_COW, CMD_WRITE};
use qemu_proto::node::decode_node_list;
use qemu_proto::{InodeHeader, ObjArgs, ObjectId, Opcode, SdNode, SdRequest, SdResult, VdiArgs};

use crate::client::{request, Connection};
use crate::error::{exit, DogError};

/// Global options of every command.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Daemon address (`-a`, `SHEEPDOG_DOG_ADDR`).
    pub addr: IpAddr,
    /// Daemon port (`-p`, `SHEEPDOG_DOG_PORT`).
    pub port: u16,
    /// `-r`: raw output.
    pub raw: bool,
    /// `-v`: verbose output.
    pub verbose: bool,
}

impl Ctx {
    /// Connects to the daemon given by `-a`/`-p`.
    pub fn connect(&self) -> Result<Connection, DogError> {
        Connection::connect(self.addr, self.port)
    }
}

/// The cluster's members as GET_NODE_LIST reports them.
#[derive(Debug, Clone)]
pub struct NodeList {
    /// Nodes sorted by (address bytes, port): the ids dog prints.
    pub nodes: Vec<SdNode>,
    /// The epoch in the reply header.
    pub epoch: u32,
}

impl NodeList {
    /// Number of distinct zones.
    pub fn zones(&self) -> usize {
        let mut zones: Vec<u32> = self.nodes.iter().map(|n| n.zone).collect();
        zones.sort_unstable();
        zones.dedup();
        zones.len()
    }
}

/// dog's `update_node_list`: GET_NODE_LIST with room for every node.
/// Failures read "Failed to get node list" (exit 2); an empty cluster
/// "There are no active sheep daemons" (exit 1).
pub fn get_node_list(conn: &mut Connection) -> Result<NodeList, DogError> {
    let fail = |e: DogError| e.then("Failed to get node list", exit::SYSFAIL);
    let mut req = request(Opcode::GetNodeList);
    req.data_length = (SD_MAX_NODES * SD_NODE_SIZE) as u32;
    let reply = conn.exec(req, &[]).map_err(fail)?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(fail(DogError::sysfail(format!(
            "Failed to update node list: {}",
            reply.rsp.result.message()
        ))));
    }
    let nr = reply.data.len() / SD_NODE_SIZE;
    if nr == 0 {
        return Err(DogError::failure("There are no active sheep daemons"));
    }
    let mut nodes = decode_node_list(&reply.data, nr)
        .map_err(|e| fail(DogError::sysfail(format!("bad node list: {e}"))))?;
    nodes.sort_by_key(|n| n.nid);
    Ok(NodeList {
        nodes,
        epoch: reply.rsp.epoch,
    })
}

/// Connects and fetches the node list, as dog does first for the commands
/// flagged NEED_NODELIST (a connection failure also says "Failed to get
/// node list").
pub fn connect_with_nodes(ctx: &Ctx) -> Result<(Connection, NodeList), DogError> {
    let mut conn = ctx
        .connect()
        .map_err(|e| e.then("Failed to get node list", exit::SYSFAIL))?;
    let nodes = get_node_list(&mut conn)?;
    Ok((conn, nodes))
}

/// Checks a VDI name given on the command line: non-empty and shorter than
/// 256 bytes (Sheepdog would silently truncate it). Returns the reason.
pub fn check_vdi_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("VDI name is empty".into())
    } else if name.len() >= SD_MAX_VDI_LEN {
        Err(format!(
            "VDI name is too long ({} bytes, at most {} allowed)",
            name.len(),
            SD_MAX_VDI_LEN - 1
        ))
    } else {
        Ok(())
    }
}

/// `name` NUL-padded to 256 bytes, followed by `tag` NUL-padded to 256 when
/// given (the payload of GET_VDI_INFO and DEL_VDI).
pub fn name_payload(name: &str, tag: Option<&str>) -> Vec<u8> {
    let len = SD_MAX_VDI_LEN + if tag.is_some() { SD_MAX_VDI_TAG_LEN } else { 0 };
    let mut buf = vec![0u8; len];
    let n = name.len().min(SD_MAX_VDI_LEN - 1);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    if let Some(tag) = tag {
        let t = tag.len().min(SD_MAX_VDI_TAG_LEN - 1);
        buf[SD_MAX_VDI_LEN..SD_MAX_VDI_LEN + t].copy_from_slice(&tag.as_bytes()[..t]);
    }
    buf
}

/// dog's lookup failure text.
pub fn open_failed(name: &str, snapid: i32, tag: &str, reason: impl std::fmt::Display) -> String {
    format!("Failed to open VDI {name} (snapshot id: {snapid} snapshot tag: {tag}): {reason}")
}

/// GET_VDI_INFO (`find_vdi_name`) with the sheep's answer as is: the vid,
/// or the failed result. `Err` only for a transport failure.
pub fn lookup_vdi(
    conn: &mut Connection,
    name: &str,
    snapid: i32,
    tag: &str,
) -> Result<Result<u32, SdResult>, DogError> {
    let mut req = request(Opcode::GetVdiInfo);
    req.flags = CMD_WRITE;
    let mut vdi = req.vdi();
    vdi.snapid = snapid as u32;
    req.set_vdi(&vdi);
    let reply = conn.exec(req, &name_payload(name, Some(tag)))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Ok(Err(reply.rsp.result));
    }
    Ok(Ok(reply.rsp.vdi().vdi_id))
}

/// GET_VDI_INFO (`find_vdi_name`): the vid of `name` at snapshot `snapid`
/// or `tag`. Failures print dog's "Failed to open VDI ..." line, exit 1.
pub fn find_vdi(
    conn: &mut Connection,
    name: &str,
    snapid: i32,
    tag: &str,
) -> Result<u32, DogError> {
    let found = lookup_vdi(conn, name, snapid, tag).map_err(|e| {
        e.then(
            open_failed(name, snapid, tag, SdResult::EIO.message()),
            exit::FAILURE,
        )
    })?;
    found.map_err(|result| DogError::failure(open_failed(name, snapid, tag, result.message())))
}

/// Parameters of a NEW_VDI request (`do_vdi_create`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NewVdi {
    /// Size in bytes.
    pub size: u64,
    /// Base vid: the snapshot to clone or the working VDI to snapshot.
    pub base_vid: u32,
    /// Make a snapshot (`snapid = 1` on the wire).
    pub snapshot: bool,
    /// Copies (0 = cluster default).
    pub copies: u8,
    /// Copy policy.
    pub copy_policy: u8,
    /// Store policy (1 = hyper volume).
    pub store_policy: u8,
    /// Object size shift (0 = cluster default).
    pub block_size_shift: u8,
}

/// NEW_VDI (`do_vdi_create`): the vid in the reply. A refusal prints
/// "Failed to create VDI %s: %s" (exit 1); transport failures exit 2.
pub fn new_vdi(conn: &mut Connection, name: &str, p: &NewVdi) -> Result<u32, DogError> {
    let mut req = request(Opcode::NewVdi);
    req.flags = CMD_WRITE;
    req.set_vdi(&VdiArgs {
        vdi_size: p.size,
        base_vdi_id: p.base_vid,
        snapid: u32::from(p.snapshot),
        copies: p.copies,
        copy_policy: p.copy_policy,
        store_policy: p.store_policy,
        block_size_shift: p.block_size_shift,
        ..Default::default()
    });
    let reply = conn
        .exec(req, &name_payload(name, None))
        .map_err(|e| e.with_code(exit::SYSFAIL))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(format!(
            "Failed to create VDI {name}: {}",
            reply.rsp.result.message()
        )));
    }
    Ok(reply.rsp.vdi().vdi_id)
}

/// Reads and decodes an inode header (`dog_read_object` of 4664 bytes):
/// failures print "Failed to read object ..." (exit 1).
pub fn read_inode_header(conn: &mut Connection, vid: u32) -> Result<InodeHeader, DogError> {
    let oid = ObjectId::inode(vid);
    let data = read_object(conn, oid, SD_INODE_HEADER_SIZE as u32, 0)?;
    InodeHeader::decode(&data)
        .map_err(|e| DogError::failure(format!("Failed to read object {:016x} {e}", oid.0)))
}

/// Writes `data` into an object with one WRITE_OBJ; failures print
/// `dog_write_object`'s "Failed to write object %016x: %s" (exit 1).
pub fn write_object(conn: &mut Connection, spec: &WriteSpec, data: &[u8]) -> Result<(), DogError> {
    let reply = conn.exec(write_obj_req(spec), data).map_err(|e| {
        e.then(
            format!("Failed to write object {:016x}", spec.oid.0),
            exit::SYSFAIL,
        )
    })?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(write_failed(spec.oid, reply.rsp.result));
    }
    Ok(())
}

/// A READ_OBJ request for `len` bytes of `oid` at `offset`.
pub fn read_obj_req(oid: ObjectId, len: u32, offset: u64) -> SdRequest {
    let mut req = request(Opcode::ReadObj);
    req.data_length = len;
    req.set_obj(&ObjArgs {
        oid: oid.0,
        offset,
        ..Default::default()
    });
    req
}

/// Where and how a write goes.
#[derive(Debug, Clone, Copy)]
pub struct WriteSpec {
    /// Target object.
    pub oid: ObjectId,
    /// Copy-on-write source (0 = none).
    pub cow_oid: u64,
    /// Offset inside the object.
    pub offset: u64,
    /// Redundancy of the VDI.
    pub copies: u8,
    /// Copy policy of the VDI.
    pub copy_policy: u8,
    /// CREATE_AND_WRITE_OBJ instead of WRITE_OBJ.
    pub create: bool,
}

/// A CREATE_AND_WRITE_OBJ or WRITE_OBJ request (`dog_write_object`); the
/// payload goes with it to [`Connection::send`].
pub fn write_obj_req(spec: &WriteSpec) -> SdRequest {
    let op = if spec.create {
        Opcode::CreateAndWriteObj
    } else {
        Opcode::WriteObj
    };
    let mut req = request(op);
    req.flags = CMD_WRITE;
    if spec.cow_oid != 0 {
        req.flags |= CMD_COW;
    }
    req.set_obj(&ObjArgs {
        oid: spec.oid.0,
        cow_oid: spec.cow_oid,
        copies: spec.copies,
        copy_policy: spec.copy_policy,
        offset: spec.offset,
        ..Default::default()
    });
    req
}

/// `dog_read_object`'s failure line.
pub fn read_failed(oid: ObjectId, result: SdResult) -> DogError {
    DogError::failure(format!(
        "Failed to read object {:016x} {}",
        oid.0,
        result.message()
    ))
}

/// `dog_write_object`'s failure line.
pub fn write_failed(oid: ObjectId, result: SdResult) -> DogError {
    DogError::failure(format!(
        "Failed to write object {:016x}: {}",
        oid.0,
        result.message()
    ))
}

/// Reads an object range with one request; failures give dog's
/// "Failed to read object" line (exit 1; socket errors keep exit 2).
pub fn read_object(
    conn: &mut Connection,
    oid: ObjectId,
    len: u32,
    offset: u64,
) -> Result<Vec<u8>, DogError> {
    let reply = conn
        .exec(read_obj_req(oid, len, offset), &[])
        .map_err(|e| {
            e.then(
                format!("Failed to read object {:016x}", oid.0),
                exit::SYSFAIL,
            )
        })?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(read_failed(oid, reply.rsp.result));
    }
    Ok(reply.data)
}

/// dog's `confirm`: prints `message`, reads a line from stdin and goes on
/// only if it starts with "yes" (any case); otherwise dog exits 0.
pub fn confirm(message: &str) -> Result<(), DogError> {
    let mut out = io::stdout();
    let _ = out.write_all(message.as_bytes());
    let _ = out.flush();
    let mut line = String::new();
    let n = io::stdin().lock().read_line(&mut line).unwrap_or(0);
    let answer = line.as_bytes();
    if n > 0 && answer.len() >= 3 && answer[..3].eq_ignore_ascii_case(b"yes") {
        Ok(())
    } else {
        Err(DogError::Declined)
    }
}

/// Writes `text` to stdout, mapping failures to exit 2.
pub fn print_out(text: &str) -> Result<(), DogError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| {
            DogError::sysfail(format!(
                "failed to write to stdout: {}",
                crate::error::strerror(&e)
            ))
        })
}

/// Prints one stderr line now (for errors dog reports and then continues).
pub fn warn(text: &str) {
    let _ = io::stdout().flush();
    eprintln!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_checks() {
        assert!(check_vdi_name("a").is_ok());
        assert!(check_vdi_name(&"x".repeat(255)).is_ok());
        assert_eq!(check_vdi_name("").unwrap_err(), "VDI name is empty");
        assert_eq!(
            check_vdi_name(&"x".repeat(256)).unwrap_err(),
            "VDI name is too long (256 bytes, at most 255 allowed)"
        );
    }

    #[test]
    fn payloads() {
        let p = name_payload("test", Some("snap"));
        assert_eq!(p.len(), 512);
        assert_eq!(&p[..5], b"test\0");
        assert_eq!(&p[256..261], b"snap\0");
        assert_eq!(name_payload("v", None).len(), 256);
    }

    #[test]
    fn open_failed_text() {
        assert_eq!(
            open_failed("foo", 0, "", SdResult::NO_VDI.message()),
            "Failed to open VDI foo (snapshot id: 0 snapshot tag: ): No VDI found"
        );
    }

    #[test]
    fn requests() {
        let r = read_obj_req(ObjectId(0x807c2b2500000000), 4664, 0);
        assert_eq!(r.data_length, 4664);
        assert_eq!(r.obj().oid, 0x807c2b2500000000);
        let w = write_obj_req(&WriteSpec {
            oid: ObjectId(1),
            cow_oid: 2,
            offset: 512,
            copies: 3,
            copy_policy: 0,
            create: true,
        });
        assert_eq!(w.opcode, Opcode::CreateAndWriteObj.as_u8());
        assert_eq!(w.flags, CMD_WRITE | CMD_COW);
        assert_eq!(w.obj().copies, 3);
        assert_eq!(w.obj().offset, 512);
    }
}
