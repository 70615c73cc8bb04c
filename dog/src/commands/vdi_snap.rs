//! Snapshots and their relatives: `dog vdi snapshot`, `vdi clone`,
//! `vdi rollback`, `vdi resize`, `vdi tree`, and Sheepfold's `vdi flatten`.
//!
//! The sheep does the heavy lifting (reference 2.6 and the issue 4
//! contract): NEW_VDI with `snapid = 1` and the working vid snapshots a
//! VDI, NEW_VDI with `snapid = 0` and a snapshot's vid clones it. dog only
//! looks things up, writes the tag (snapshot) or the new size (resize)
//! into the inode header, and for `clone -P` / `clone -n` copies the data
//! objects itself, like Sheepdog's dog.

use std::io::IsTerminal;

use qemu_proto::consts::{SD_INODE_DATA_INDEX, SD_MAX_VDI_TAG_LEN};
use qemu_proto::inode::{data_vid_offset, decode_data_vdi_ids, DATA_VDI_ID_OFFSET};
use qemu_proto::{InodeHeader, ObjectId, Opcode, SdResult};

use crate::client::{request, Connection, Reply};
use crate::commands::vdi::{del_vdi, walk_inodes};
use crate::commands::vdi_io::{open_vdi, read_vdi_failed, Opened};
use crate::commands::{
    check_vdi_name, confirm, find_vdi, lookup_vdi, name_payload, new_vdi, open_failed, print_out,
    read_failed, read_inode_header, read_obj_req, read_object, warn, write_failed, write_obj_req,
    write_object, Ctx, NewVdi, WriteSpec,
};
use crate::error::{exit, DogError};
use crate::options::SnapshotSel;
use crate::output::format_time;
use crate::pipeline::{run_ordered, Step, Task, DEFAULT_WINDOW};
use crate::size::parse_size;
use crate::treeview::{self, TreeEntry, YOU_ARE_HERE};

/// `SD_MAX_VDI_SIZE`: 4 MiB objects times 2^32 of them (hyper volumes).
const SD_MAX_VDI_SIZE: u64 = (1 << 22) << 32;
/// Offset of `tag` in the inode.
const TAG_OFFSET: u64 = 256;
/// Offset of `vdi_size` in the inode.
const VDI_SIZE_OFFSET: u64 = 536;
/// Data bytes `clone` keeps in flight at most (objects may be 2 GiB).
const COPY_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// The prompt of `vdi rollback` without `-f`.
const ROLLBACK_PROMPT: &str = "This operation discards any changes made since the previous\n\
                               snapshot was taken.  Continue? [yes/no]: ";

/// The NEW_VDI parameters that derive a VDI from `inode` (same size,
/// redundancy and object size).
fn derived(inode: &InodeHeader, base_vid: u32, snapshot: bool) -> NewVdi {
    NewVdi {
        size: inode.vdi_size,
        base_vid,
        snapshot,
        copies: inode.nr_copies,
        copy_policy: inode.copy_policy,
        store_policy: inode.store_policy,
        block_size_shift: inode.block_size_shift,
    }
}

/// The `data_vdi_id` entries of the VDI `vid` covering its size.
fn read_data_vdi_ids(
    conn: &mut Connection,
    vid: u32,
    inode: &InodeHeader,
) -> Result<Vec<u32>, DogError> {
    let nr = inode.nr_objects().min(SD_INODE_DATA_INDEX) as u32;
    if nr == 0 {
        return Ok(Vec::new());
    }
    let data = read_object(conn, ObjectId::inode(vid), nr * 4, DATA_VDI_ID_OFFSET)?;
    let mut ids = decode_data_vdi_ids(&data);
    ids.resize(nr as usize, 0);
    Ok(ids)
}

/// The 256-byte tag field: `tag` NUL-padded (at most 255 bytes).
fn tag_field(tag: &str) -> Vec<u8> {
    let mut buf = vec![0u8; SD_MAX_VDI_TAG_LEN];
    let n = tag.len().min(SD_MAX_VDI_TAG_LEN - 1);
    buf[..n].copy_from_slice(&tag.as_bytes()[..n]);
    buf
}

/// The `-v` line of `vdi snapshot`.
pub fn snapshot_verbose(new_vid: u32, vid: u32, raw: bool) -> String {
    if raw {
        format!("{new_vid:x} {vid:x}\n")
    } else {
        format!("new VID of original VDI: {new_vid:x}, VDI ID of newly created snapshot: {vid:x}\n")
    }
}

/// dog's message for a tag that already names a snapshot.
pub fn snapshot_exists(name: &str, id: i32, tag: &str) -> String {
    format!(
        "Failed to create snapshot for {name}, maybe snapshot id ({id}) or tag ({tag}) is existed"
    )
}

/// `dog vdi snapshot [-s TAG] [-R] [-v] [-r] NAME`.
///
/// GET_VDI_INFO with the tag (an existing snapshot with that tag is an
/// error), the working VDI's header, WRITE_OBJ of the tag into the working
/// inode, then NEW_VDI `snapid = 1`, `base = working vid`: the working
/// inode becomes the snapshot and the reply names the new working VDI.
pub fn snapshot(ctx: &Ctx, name: &str, snap: &SnapshotSel, reduce: bool) -> Result<(), DogError> {
    if snap.id != 0 {
        return Err(DogError::usage(
            "Please specify a non-integer value for a snapshot tag name",
        ));
    }
    let failed =
        |why: &dyn std::fmt::Display| format!("Failed to create snapshot for {name}: {why}");
    check_vdi_name(name).map_err(|why| DogError::Exit {
        message: failed(&why),
        code: exit::USAGE,
    })?;
    let eio = |e: DogError| e.then(failed(&SdResult::EIO.message()), exit::FAILURE);
    let mut conn = ctx.connect().map_err(eio)?;

    let (vid, inode) = match lookup_vdi(&mut conn, name, snap.id, &snap.tag).map_err(eio)? {
        Ok(vid) => {
            let inode = read_inode_header(&mut conn, vid)?;
            if inode.is_snapshot() {
                return Err(DogError::failure(snapshot_exists(name, snap.id, &snap.tag)));
            }
            (vid, inode)
        }
        Err(SdResult::NO_TAG) => {
            let vid = find_vdi(&mut conn, name, 0, "")?;
            let inode = read_inode_header(&mut conn, vid)
                .map_err(|e| e.then(format!("Failed to read a vdi {name}"), exit::FAILURE))?;
            (vid, inode)
        }
        Err(result) => return Err(DogError::failure(failed(&result.message()))),
    };
    if inode.store_policy != 0 {
        return Err(DogError::failure(
            "creating a snapshot of hypervolume is not supported",
        ));
    }
    if reduce {
        let ids = read_data_vdi_ids(&mut conn, vid, &inode)?;
        if !ids.contains(&vid) {
            if ctx.verbose {
                warn(&format!(
                    "VDI {name} doesn't have its own objects, skipping creation of snapshot"
                ));
            }
            return Ok(());
        }
    }

    let spec = WriteSpec {
        oid: ObjectId::inode(vid),
        cow_oid: 0,
        offset: TAG_OFFSET,
        copies: inode.nr_copies,
        copy_policy: inode.copy_policy,
        create: false,
    };
    write_object(&mut conn, &spec, &tag_field(&snap.tag))?;
    let new_vid = new_vdi(&mut conn, name, &derived(&inode, vid, true))?;
    if ctx.verbose {
        print_out(&snapshot_verbose(new_vid, vid, ctx.raw))?;
    }
    Ok(())
}

/// Options of `dog vdi clone`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneOpts {
    /// `-P`: give the clone its own copy of every object (and create the
    /// unallocated ones).
    pub prealloc: bool,
    /// `-n`: no parent at all; copy the allocated objects.
    pub no_share: bool,
}

/// `dog vdi clone -s TAG|ID [-P] [-n] [-v] [-r] SRC DST`.
///
/// NEW_VDI `snapid = 0` with the snapshot's vid as base (0 with `-n`),
/// with the snapshot's size, redundancy and object size; with `-P` or `-n`
/// every object is then read and written into the clone.
pub fn clone(
    ctx: &Ctx,
    src: &str,
    dst: Option<&str>,
    snap: &SnapshotSel,
    opts: CloneOpts,
) -> Result<(), DogError> {
    let Some(dst) = dst else {
        return Err(DogError::usage("Destination VDI name must be specified"));
    };
    if snap.id == 0 && snap.tag.is_empty() {
        return Err(DogError::usage(
            "Only snapshot VDIs can be cloned\nPlease specify the '-s' option",
        ));
    }
    check_vdi_name(dst).map_err(|why| DogError::Exit {
        message: format!("Failed to create VDI {dst}: {why}"),
        code: exit::USAGE,
    })?;
    let Opened {
        mut conn,
        vid: snap_vid,
        inode,
    } = open_vdi(ctx, src, snap)?;
    if !inode.is_snapshot() {
        return Err(DogError::failure("Only snapshot VDIs can be cloned"));
    }
    let base_vid = if opts.no_share { 0 } else { snap_vid };
    let new_vid = new_vdi(&mut conn, dst, &derived(&inode, base_vid, false))?;
    if opts.prealloc || opts.no_share {
        let ids = read_data_vdi_ids(&mut conn, snap_vid, &inode)
            .map_err(|e| e.then(read_vdi_failed(src, snap), exit::FAILURE))?;
        copy_objects(&mut conn, &inode, &ids, new_vid, opts)
            .map_err(|e| e.with_code(exit::FAILURE))?;
    }
    if ctx.verbose {
        if ctx.raw {
            print_out(&format!("{new_vid:x}\n"))?;
        } else {
            print_out(&format!("VDI ID of newly created clone: {new_vid:x}\n"))?;
        }
    }
    Ok(())
}

/// Where one object of a copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyStage {
    Start,
    Read,
    Written,
    Indexed,
}

/// One object of `clone -P`/`-n`: read the source object (unless it is
/// unallocated), create the clone's object with its data (or empty), then
/// point the clone's index entry at it.
struct CopyChunk {
    src: Option<ObjectId>,
    object_size: u32,
    dst: WriteSpec,
    inode_oid: ObjectId,
    new_vid: u32,
    idx: u32,
    stage: CopyStage,
}

impl CopyChunk {
    fn check(&self, reply: &Reply, oid: ObjectId, read: bool) -> Result<(), DogError> {
        match reply.rsp.result {
            SdResult::SUCCESS => Ok(()),
            r if read => Err(read_failed(oid, r)),
            r => Err(write_failed(oid, r)),
        }
    }
}

impl Task for CopyChunk {
    type Output = ();

    fn step(&mut self, reply: Option<Reply>) -> Result<Step<()>, DogError> {
        match (self.stage, reply) {
            (CopyStage::Start, _) => match self.src {
                Some(src) => {
                    self.stage = CopyStage::Read;
                    Ok(Step::Send(
                        read_obj_req(src, self.object_size, 0),
                        Vec::new(),
                    ))
                }
                None => {
                    self.stage = CopyStage::Written;
                    Ok(Step::Send(write_obj_req(&self.dst), Vec::new()))
                }
            },
            (CopyStage::Read, Some(reply)) => {
                let src = self.src.expect("read stage has a source");
                self.check(&reply, src, true)?;
                let mut data = reply.data;
                data.resize(self.object_size as usize, 0);
                self.stage = CopyStage::Written;
                Ok(Step::Send(write_obj_req(&self.dst), data))
            }
            (CopyStage::Written, Some(reply)) => {
                self.check(&reply, self.dst.oid, false)?;
                let spec = WriteSpec {
                    oid: self.inode_oid,
                    cow_oid: 0,
                    offset: data_vid_offset(self.idx),
                    create: false,
                    ..self.dst
                };
                self.stage = CopyStage::Indexed;
                Ok(Step::Send(
                    write_obj_req(&spec),
                    self.new_vid.to_le_bytes().to_vec(),
                ))
            }
            (CopyStage::Indexed, Some(reply)) => {
                self.check(&reply, self.inode_oid, false)?;
                Ok(Step::Done(()))
            }
            (_, None) => Err(DogError::failure("copy step without a reply")),
        }
    }
}

/// Copies the objects `ids` of a snapshot into the clone `new_vid` (Sheepdog's
/// `vdi_clone` loop): allocated objects are read and written in full;
/// unallocated ones are created empty with `-P` and skipped otherwise.
fn copy_objects(
    conn: &mut Connection,
    inode: &InodeHeader,
    ids: &[u32],
    new_vid: u32,
    opts: CloneOpts,
) -> Result<(), DogError> {
    let object_size = inode.object_size();
    let window = (COPY_BYTES_IN_FLIGHT / object_size).clamp(1, DEFAULT_WINDOW as u64) as usize;
    let mut idx = 0usize;
    run_ordered(
        conn,
        window,
        || {
            while idx < ids.len() && ids[idx] == 0 && !opts.prealloc {
                idx += 1;
            }
            if idx >= ids.len() {
                return Ok(None);
            }
            let i = idx as u32;
            let owner = ids[idx];
            idx += 1;
            Ok(Some(CopyChunk {
                src: (owner != 0).then(|| ObjectId::data(owner, i)),
                object_size: object_size as u32,
                dst: WriteSpec {
                    oid: ObjectId::data(new_vid, i),
                    cow_oid: 0,
                    offset: 0,
                    copies: inode.nr_copies,
                    copy_policy: inode.copy_policy,
                    create: true,
                },
                inode_oid: ObjectId::inode(new_vid),
                new_vid,
                idx: i,
                stage: CopyStage::Start,
            }))
        },
        |()| Ok(()),
    )
}

/// `dog vdi rollback -s TAG|ID [-f] [-v] [-r] NAME`.
///
/// Looks the snapshot up, asks for confirmation (unless `-f`), deletes the
/// working VDI (DEL_VDI) and creates a new one from the snapshot (NEW_VDI
/// `snapid = 0`, `base = snapshot`, the snapshot's size and redundancy).
pub fn rollback(ctx: &Ctx, name: &str, snap: &SnapshotSel, force: bool) -> Result<(), DogError> {
    if snap.id == 0 && snap.tag.is_empty() {
        return Err(DogError::usage("Please specify the '-s' option"));
    }
    let Opened {
        mut conn,
        vid: base_vid,
        inode,
    } = open_vdi(ctx, name, snap)?;
    if !force {
        confirm(ROLLBACK_PROMPT)?;
    }

    // Sheepdog's do_vdi_delete(name, 0, NULL): a missing working VDI is
    // reported (its tag printed as "(null)") and the rollback goes on.
    let current = SnapshotSel::default();
    let lost = |e: DogError| e.then("Failed to delete the current state", exit::FAILURE);
    match lookup_vdi(&mut conn, name, 0, "").map_err(lost)? {
        Ok(_) => {
            if let Err(result) = del_vdi(&mut conn, name, &current).map_err(lost)? {
                return Err(DogError::failure(format!(
                    "Failed to delete {name}: {}\nFailed to delete the current state",
                    result.message()
                )));
            }
        }
        Err(result) => warn(&open_failed(name, 0, "(null)", result.message())),
    }

    let new_vid = new_vdi(&mut conn, name, &derived(&inode, base_vid, false))?;
    if ctx.verbose {
        if ctx.raw {
            print_out(&format!("{new_vid:x}\n"))?;
        } else {
            print_out(&format!("New VDI ID of rollbacked VDI: {new_vid:x}\n"))?;
        }
    }
    Ok(())
}

/// Why `resize` refuses `new_size` for `inode`, as (message, exit code).
pub fn resize_check(inode: &InodeHeader, new_size: u64) -> Result<(), DogError> {
    if inode.store_policy == 0 {
        let object_size = 1u64 << (inode.block_size_shift & 63);
        let old_max_total_size = object_size.saturating_mul(SD_INODE_DATA_INDEX);
        if new_size > old_max_total_size {
            return Err(DogError::usage(format!(
                "New VDI size is too large. This volume's max size is {old_max_total_size}"
            )));
        }
    } else if new_size > SD_MAX_VDI_SIZE {
        return Err(DogError::usage(format!(
            "New VDI size is too large This volume's max size is {SD_MAX_VDI_SIZE}"
        )));
    }
    if new_size < inode.vdi_size {
        return Err(DogError::usage("Shrinking VDIs is not implemented"));
    }
    Ok(())
}

/// `dog vdi resize NAME SIZE`: grow only; the new `vdi_size` is written
/// into the working inode (WRITE_OBJ of 8 bytes at offset 536).
pub fn resize(ctx: &Ctx, name: &str, size_arg: Option<&str>) -> Result<(), DogError> {
    let Some(size_arg) = size_arg else {
        return Err(DogError::usage("Please specify the new size for the VDI"));
    };
    let new_size = parse_size(size_arg)?;
    let Opened {
        mut conn,
        vid,
        inode,
    } = open_vdi(ctx, name, &SnapshotSel::default())?;
    resize_check(&inode, new_size)?;
    let spec = WriteSpec {
        oid: ObjectId::inode(vid),
        cow_oid: 0,
        offset: VDI_SIZE_OFFSET,
        copies: inode.nr_copies,
        copy_policy: inode.copy_policy,
        create: false,
    };
    write_object(&mut conn, &spec, &new_size.to_le_bytes())
        .map_err(|e| e.then("Failed to update an inode header", exit::FAILURE))
}

/// `dog vdi flatten NAME` (Sheepfold): FLATTEN_VDI makes the sheep copy
/// every object the working VDI shares with its ancestors into it and
/// clear its parent. Failures read "Failed to flatten VDI %s: %s" (exit 1).
pub fn flatten(ctx: &Ctx, name: &str) -> Result<(), DogError> {
    let failed = |why: &dyn std::fmt::Display| format!("Failed to flatten VDI {name}: {why}");
    check_vdi_name(name).map_err(|why| DogError::Exit {
        message: failed(&why),
        code: exit::USAGE,
    })?;
    let mut conn = ctx.connect()?;
    let mut req = request(Opcode::FlattenVdi);
    req.flags = qemu_proto::flags::CMD_WRITE;
    let reply = conn
        .exec(req, &name_payload(name, None))
        .map_err(|e| e.then(failed(&SdResult::EIO.message()), exit::SYSFAIL))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(failed(&reply.rsp.result.message())));
    }
    Ok(())
}

/// The tree label of an inode: its creation time for a snapshot, "(you are
/// here)" for a working VDI.
pub fn tree_label<Tz: chrono::TimeZone>(tz: &Tz, inode: &InodeHeader) -> String
where
    Tz::Offset: std::fmt::Display,
{
    if inode.is_snapshot() {
        format_time(tz, inode.create_time >> 32, "[%Y-%m-%d %H:%M]")
    } else {
        YOU_ARE_HERE.to_string()
    }
}

/// `dog vdi tree`: every live VDI, grouped by name along `parent_vdi_id`;
/// the working VDIs are bold when stdout is a terminal.
pub fn tree(ctx: &Ctx) -> Result<(), DogError> {
    let mut conn = ctx.connect()?;
    let highlight = std::io::stdout().is_terminal() && !ctx.raw;
    let mut entries = Vec::new();
    let failures = walk_inodes(&mut conn, None, false, |inode, _| {
        entries.push(TreeEntry {
            label: tree_label(&chrono::Local, &inode),
            highlight: highlight && !inode.is_snapshot(),
            vid: inode.vdi_id,
            pvid: inode.parent_vdi_id,
            name: inode.name,
        });
        Ok(())
    })?;
    print_out(&treeview::render(&entries))?;
    if failures > 0 {
        return Err(DogError::Exit {
            message: String::new(),
            code: exit::FAILURE,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "vdi_snap_tests.rs"]
mod tests;
