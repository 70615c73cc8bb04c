//! `dog vdi lock list` and `dog vdi lock unlock NAME`.
//!
//! In Sheepdog these show and release the locks QEMU takes (with `cluster
//! format -l`); in Sheepfold the locks are the attachments a panel makes
//! through the storage API (and the NBD sessions that use them), so `list`
//! asks for every attachment (LIST_LOCKS, Sheepfold's 0xe2) and `unlock`
//! sends RELEASE_VDI with the vid and no payload, as Sheepdog's dog does,
//! which releases every attachment of the VDI.
//!
//! `list` keeps Sheepdog's header, `  Name         Id  VDI id  Tag
//! Owner node(s)`; each row is one attachment: name, snapshot id (0, the
//! working VDI), vid, tag (empty), then the owner as `NODE host=HOST
//! id=ID`, followed by ` rw`/` ro`, and for a live-migration destination
//! ` pending from=SOURCE`. With `-r` the fields are separated by single
//! spaces (the name escaped as in `vdi list -r`).

use qemu_proto::locks::{decode_lock_list, LockEntry};
use qemu_proto::{Opcode, SdResult, VdiArgs};

use crate::client::request;
use crate::commands::{check_vdi_name, find_vdi, print_out, Ctx};
use crate::error::{exit, DogError};
use crate::output::escape_name;

/// The header of `vdi lock list`, as Sheepdog prints it.
pub const LIST_HEADER: &str = "  Name         Id  VDI id  Tag            Owner node(s)\n";

/// One row of `vdi lock list`.
pub fn list_row(e: &LockEntry, raw: bool) -> String {
    let mut owner = format!(
        "{} host={} id={} {}",
        e.node,
        e.host,
        e.id,
        if e.read_only { "ro" } else { "rw" }
    );
    if e.pending {
        owner.push_str(&format!(" pending from={}", e.from));
    }
    if raw {
        format!("{} 0 {:x}  {owner}\n", escape_name(&e.name), e.vid)
    } else {
        format!(
            "  {:<12} {:>2}  {:>6x}  {:<15}{owner}\n",
            e.name, 0, e.vid, ""
        )
    }
}

/// `dog vdi lock list [-r]`.
pub fn list(ctx: &Ctx) -> Result<(), DogError> {
    let failed = |why: &dyn std::fmt::Display| format!("Failed to list locks: {why}");
    let mut conn = ctx.connect()?;
    let mut req = request(Opcode::ListLocks);
    req.data_length = 16 << 20;
    let reply = conn
        .exec(req, &[])
        .map_err(|e| e.then(failed(&SdResult::EIO.message()), exit::SYSFAIL))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(failed(&reply.rsp.result.message())));
    }
    let entries =
        decode_lock_list(&reply.data).map_err(|e| DogError::sysfail(failed(&e.to_string())))?;
    let mut out = String::new();
    if !ctx.raw {
        out.push_str(LIST_HEADER);
    }
    for e in &entries {
        out.push_str(&list_row(e, ctx.raw));
    }
    print_out(&out)
}

/// `dog vdi lock unlock NAME`: releases every attachment of the VDI.
pub fn unlock(ctx: &Ctx, name: &str) -> Result<(), DogError> {
    let failed = |why: &dyn std::fmt::Display| format!("Failed to unlock VDI {name}: {why}");
    check_vdi_name(name).map_err(|why| DogError::Exit {
        message: failed(&why),
        code: exit::USAGE,
    })?;
    let mut conn = ctx.connect()?;
    let vid = find_vdi(&mut conn, name, 0, "")?;
    let mut req = request(Opcode::ReleaseVdi);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_with_the_header() {
        let e = LockEntry {
            vid: 0x7c2b25,
            name: "vm1".into(),
            id: "a-0123456789abcdef".into(),
            host: "hv-a".into(),
            node: "127.0.0.1:7000".into(),
            ..LockEntry::default()
        };
        let row = list_row(&e, false);
        assert_eq!(
            row,
            "  vm1           0  7c2b25                 127.0.0.1:7000 host=hv-a id=a-0123456789abcdef rw\n"
        );
        assert_eq!(row.find("127.0.0.1"), LIST_HEADER.find("Owner"));
        assert_eq!(
            row.find("7c2b25").map(|i| i + 6),
            LIST_HEADER.find("VDI id").map(|i| i + 6)
        );
        let p = LockEntry {
            pending: true,
            from: "a-0123456789abcdef".into(),
            id: "a-1111111111111111".into(),
            node: "127.0.0.1:7001".into(),
            ..e
        };
        assert_eq!(
            list_row(&p, true),
            "vm1 0 7c2b25  127.0.0.1:7001 host=hv-a id=a-1111111111111111 rw pending from=a-0123456789abcdef\n"
        );
    }
}
