//! `dog vdi check` and `dog cluster check`.
//!
//! Sheepdog's dog reads every replica of every object itself and rewrites
//! the odd ones out. Sheepfold's sheep does that work: dog sends one
//! CHECK_VDI (Sheepfold, 0xe1) per VDI and prints what came back with
//! Sheepdog's lines ("fixed replica %016lx", "finish check&repair %s").
//! `cluster check` does the same for every VDI, working ones and snapshots,
//! in `vdi list` order, each introduced by Sheepdog's "fix vdi %s" /
//! "fix snapshot %s (id: %d, tag: \"%s\")".

use qemu_proto::recovery::CheckVdiReply;
use qemu_proto::{InodeHeader, Opcode, SdResult, VdiArgs};

use crate::client::{request, Connection};
use crate::commands::{check_vdi_name, connect_with_nodes, find_vdi, open_failed, print_out, vdi};
use crate::commands::{warn, Ctx};
use crate::error::{exit, DogError};
use crate::options::SnapshotSel;
use crate::output_admin;

/// CHECK_VDI for `vid`; a refusal reads "Failed to check VDI %s: %s"
/// (exit 1), a lost connection exits 2.
pub fn check_vid(conn: &mut Connection, name: &str, vid: u32) -> Result<CheckVdiReply, DogError> {
    let failed = |why: &dyn std::fmt::Display| format!("Failed to check VDI {name}: {why}");
    let mut req = request(Opcode::CheckVdi);
    req.data_length = CheckVdiReply::MAX_SIZE as u32;
    req.set_vdi(&VdiArgs {
        base_vdi_id: vid,
        ..Default::default()
    });
    let reply = conn
        .exec(req, &[])
        .map_err(|e| e.then(failed(&SdResult::EIO.message()), exit::SYSFAIL))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(failed(&reply.rsp.result.message())));
    }
    CheckVdiReply::decode(&reply.data)
        .map_err(|e| DogError::sysfail(failed(&format!("bad reply: {e}"))))
}

/// `dog vdi check [-s ID|TAG] [-e] NAME`.
pub fn vdi_check(ctx: &Ctx, name: &str, snap: &SnapshotSel, exist: bool) -> Result<(), DogError> {
    check_vdi_name(name).map_err(|why| DogError::Exit {
        message: open_failed(name, snap.id, &snap.tag, why),
        code: exit::USAGE,
    })?;
    let (mut conn, _nl) = connect_with_nodes(ctx)?;
    let vid = find_vdi(&mut conn, name, snap.id, &snap.tag)
        .map_err(|e| e.then("FATAL: no inode objects", exit::FAILURE))?;
    let report = check_vid(&mut conn, name, vid)?;
    print_out(&output_admin::vdi_check(name, &report.fixed, exist))
}

/// `dog cluster check`: every live VDI in vid order. A VDI that cannot be
/// checked is reported and skipped; dog then exits 1.
pub fn cluster_check(ctx: &Ctx) -> Result<(), DogError> {
    let (mut conn, _nl) = connect_with_nodes(ctx)?;
    let mut inodes: Vec<InodeHeader> = Vec::new();
    let mut failures = vdi::walk_inodes(&mut conn, None, false, |inode, _| {
        inodes.push(inode);
        Ok(())
    })?;
    for inode in &inodes {
        print_out(&output_admin::cluster_check_header(inode))?;
        match check_vid(&mut conn, &inode.name, inode.vdi_id) {
            Ok(report) => print_out(&output_admin::vdi_check(&inode.name, &report.fixed, false))?,
            Err(e) if e.code() == exit::FAILURE => {
                warn(&e.to_string());
                failures += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if failures > 0 {
        return Err(DogError::Exit {
            message: String::new(),
            code: exit::FAILURE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-request sheep: checks the CHECK_VDI header and answers with
    /// `result` and `data`.
    fn fake_sheep(
        result: SdResult,
        data: Vec<u8>,
    ) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut h = [0u8; 48];
            s.read_exact(&mut h).unwrap();
            let req = qemu_proto::SdRequest::from_bytes(&h);
            assert_eq!(req.opcode, 0xe1);
            assert_eq!(req.proto_ver, 0x0a);
            assert_eq!(req.vdi().base_vdi_id, 0x7c2b25);
            assert_eq!(req.data_length as usize, CheckVdiReply::MAX_SIZE);
            let mut rsp = qemu_proto::SdResponse::for_request(&req, result);
            rsp.data_length = data.len() as u32;
            s.write_all(&rsp.to_bytes()).unwrap();
            s.write_all(&data).unwrap();
        });
        (addr, t)
    }

    #[test]
    fn check_request_and_reply() {
        let sent = CheckVdiReply {
            objects: 5,
            fixed: vec![0x007c_2b25_0000_0002],
        };
        let (addr, t) = fake_sheep(SdResult::SUCCESS, sent.encode());
        let mut conn = Connection::connect(addr.ip(), addr.port()).unwrap();
        assert_eq!(check_vid(&mut conn, "test", 0x7c2b25).unwrap(), sent);
        t.join().unwrap();

        let (addr, t) = fake_sheep(SdResult::NO_VDI, Vec::new());
        let mut conn = Connection::connect(addr.ip(), addr.port()).unwrap();
        let e = check_vid(&mut conn, "test", 0x7c2b25).unwrap_err();
        assert_eq!(e.to_string(), "Failed to check VDI test: No VDI found");
        assert_eq!(e.code(), 1);
        t.join().unwrap();
    }
}
