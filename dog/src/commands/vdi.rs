//! `dog vdi create`, `vdi list` and `vdi delete`, and the VDI walk shared
//! with `node info`.
//!
//! The walk (`parse_vdi` in dog) reads the in-use bitmap (READ_VDIS), then
//! for each vid in ascending order the inode header and, when asked, the
//! `data_vdi_id` array; reads are pipelined. `vdi read`/`vdi write` live in
//! [`super::vdi_io`].

use qemu_proto::consts::{SD_INODE_DATA_INDEX, SD_INODE_HEADER_SIZE, VDI_BITMAP_BYTES};
use qemu_proto::inode::{decode_data_vdi_ids, DATA_VDI_ID_OFFSET};
use qemu_proto::{InodeHeader, ObjectId, Opcode, SdResult};

use crate::client::{request, Connection, Reply};
use crate::commands::vdi_io::WriteChunk;
use crate::commands::{
    check_vdi_name, connect_with_nodes, find_vdi, lookup_vdi, name_payload, new_vdi, open_failed,
    print_out, read_failed, read_obj_req, read_object, warn, Ctx, NewVdi, WriteSpec,
};
use crate::error::{exit, DogError};
use crate::options::{Copies, SnapshotSel};
use crate::output;
use crate::pipeline::{run_ordered, Step, Task, DEFAULT_WINDOW};
use crate::size::{parse_size, strnumber};

/// `SD_MAX_VDI_SIZE`: 4 MiB objects times 2^32 of them.
const SD_MAX_VDI_SIZE: u64 = (1 << 22) << 32;

/// Per-vid task of the walk.
struct InodeTask {
    oid: ObjectId,
    name: Option<String>,
    want_ids: bool,
    header: Option<InodeHeader>,
}

/// A finished walk step: a VDI, nothing (deleted / filtered), or a warning.
enum WalkOut {
    Inode(InodeHeader, Vec<u32>),
    Skip,
    Warn(String),
}

impl Task for InodeTask {
    type Output = WalkOut;

    fn step(&mut self, reply: Option<Reply>) -> Result<Step<WalkOut>, DogError> {
        let Some(reply) = reply else {
            let req = read_obj_req(self.oid, SD_INODE_HEADER_SIZE as u32, 0);
            return Ok(Step::Send(req, Vec::new()));
        };
        let result = reply.rsp.result;
        let Some(header) = self.header.take() else {
            if result == SdResult::NO_OBJ {
                return Ok(Step::Done(WalkOut::Skip));
            }
            if result != SdResult::SUCCESS {
                let e = read_failed(self.oid, result).then("Failed to read inode header", 1);
                return Ok(Step::Done(WalkOut::Warn(e.to_string())));
            }
            let header = match InodeHeader::decode(&reply.data) {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Step::Done(WalkOut::Warn(format!(
                        "Failed to read inode header of {:016x}: {e}",
                        self.oid.0
                    ))))
                }
            };
            if header.is_deleted() || self.name.as_ref().is_some_and(|n| *n != header.name) {
                return Ok(Step::Done(WalkOut::Skip));
            }
            let nr = if header.store_policy == 0 {
                header.nr_objects().min(SD_INODE_DATA_INDEX)
            } else {
                0
            };
            if !self.want_ids || nr == 0 {
                return Ok(Step::Done(WalkOut::Inode(header, Vec::new())));
            }
            self.header = Some(header);
            let req = read_obj_req(self.oid, (nr * 4) as u32, DATA_VDI_ID_OFFSET);
            return Ok(Step::Send(req, Vec::new()));
        };
        if result != SdResult::SUCCESS {
            let e = read_failed(self.oid, result).then("Failed to read inode", 1);
            return Ok(Step::Done(WalkOut::Warn(e.to_string())));
        }
        let ids = decode_data_vdi_ids(&reply.data);
        Ok(Step::Done(WalkOut::Inode(header, ids)))
    }
}

/// Walks every live VDI in vid order (optionally only those named `name`),
/// calling `f` with its header and (if `want_ids`) its `data_vdi_id`
/// array. Unreadable inodes are reported on stderr and
/// skipped; the number of such failures is returned.
pub fn walk_inodes(
    conn: &mut Connection,
    name: Option<&str>,
    want_ids: bool,
    mut f: impl FnMut(InodeHeader, Vec<u32>) -> Result<(), DogError>,
) -> Result<usize, DogError> {
    let mut req = request(Opcode::ReadVdis);
    req.data_length = VDI_BITMAP_BYTES as u32;
    let reply = conn.exec(req, &[])?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::sysfail(reply.rsp.result.message()));
    }
    let bitmap = reply.data;
    let mut vids = bitmap.iter().enumerate().flat_map(|(byte, &bits)| {
        (0..8u32)
            .filter(move |bit| bits & (1 << bit) != 0)
            .map(move |bit| byte as u32 * 8 + bit)
    });
    let mut failures = 0;
    run_ordered(
        conn,
        DEFAULT_WINDOW,
        || {
            Ok(vids.next().map(|vid| InodeTask {
                oid: ObjectId::inode(vid),
                name: name.map(str::to_string),
                want_ids,
                header: None,
            }))
        },
        |out| match out {
            WalkOut::Inode(h, ids) => f(h, ids),
            WalkOut::Skip => Ok(()),
            WalkOut::Warn(text) => {
                warn(&text);
                failures += 1;
                Ok(())
            }
        },
    )?;
    Ok(failures)
}

/// `dog vdi list [-r] [NAME]`.
pub fn list(ctx: &Ctx, name: Option<&str>) -> Result<(), DogError> {
    let mut conn = ctx.connect()?;
    print_out(output::vdi_list_header(ctx.raw))?;
    let mut rows = String::new();
    let failures = walk_inodes(&mut conn, name, true, |inode, ids| {
        let (my, cow) = output::inode_stat(inode.vdi_id, &ids);
        rows.push_str(&output::vdi_list_row(
            &chrono::Local,
            &inode,
            my,
            cow,
            ctx.raw,
        ));
        if rows.len() >= 64 * 1024 {
            print_out(&rows)?;
            rows.clear();
        }
        Ok(())
    })?;
    print_out(&rows)?;
    if failures > 0 {
        return Err(DogError::Exit {
            message: String::new(),
            code: exit::FAILURE,
        });
    }
    Ok(())
}

/// Options of `dog vdi create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// `-P`: preallocate every data object.
    pub prealloc: bool,
    /// `-c`: redundancy (0 copies = cluster default).
    pub copies: Copies,
    /// `-z`: object size shift (0 = cluster default).
    pub block_size_shift: u8,
}

/// `dog vdi create NAME SIZE [-P] [-c N] [-z S] [-v] [-r]`.
pub fn create(ctx: &Ctx, name: &str, size_arg: &str, opts: &CreateOpts) -> Result<(), DogError> {
    let size = parse_size(size_arg)?;
    check_vdi_name(name).map_err(|why| DogError::Exit {
        message: format!("Failed to create VDI {name}: {why}"),
        code: exit::USAGE,
    })?;
    let (mut conn, _) = connect_with_nodes(ctx)?;

    let object_size: u64 = if opts.block_size_shift != 0 {
        1 << opts.block_size_shift
    } else {
        1 << cluster_block_size_shift(&mut conn, name)?
    };
    let old_max_total_size = object_size * SD_INODE_DATA_INDEX;
    if size > old_max_total_size {
        return Err(DogError::usage(format!(
            "VDI size is larger than {} bytes, please use '-y' to create a hyper volume with size \
             up to {} bytes or use '-z' to create larger object size volume",
            strnumber(old_max_total_size, ctx.raw),
            strnumber(SD_MAX_VDI_SIZE, ctx.raw)
        )));
    }
    if size > SD_MAX_VDI_SIZE {
        return Err(DogError::usage("VDI size is too large"));
    }

    let vid = new_vdi(
        &mut conn,
        name,
        &NewVdi {
            size,
            copies: opts.copies.copies,
            copy_policy: opts.copies.policy,
            block_size_shift: opts.block_size_shift,
            ..Default::default()
        },
    )?;
    if opts.prealloc {
        prealloc(&mut conn, vid)?;
    }
    if ctx.verbose {
        if ctx.raw {
            print_out(&format!("{vid:x}\n"))?;
        } else {
            print_out(&format!("VDI ID of newly created VDI: {vid:x}\n"))?;
        }
    }
    Ok(())
}

/// CLUSTER_INFO: the cluster's default object size shift, or dog's errors
/// for an unformatted or failing cluster (exit 1).
fn cluster_block_size_shift(conn: &mut Connection, name: &str) -> Result<u8, DogError> {
    let mut req = request(Opcode::ClusterInfo);
    req.data_length = qemu_proto::consts::CLUSTER_INFO_SIZE as u32;
    let reply = conn
        .exec(req, &[])
        .map_err(|e| e.then("Fail to execute request: SD_OP_CLUSTER_INFO", exit::FAILURE))?;
    let cinfo = qemu_proto::ClusterInfo::decode(&reply.data).ok();
    if cinfo.as_ref().is_some_and(|c| c.ctime == 0) {
        return Err(DogError::failure(format!(
            "Failed to create VDI {name}: {}",
            SdResult::WAIT_FOR_FORMAT.message()
        )));
    }
    if reply.rsp.result != SdResult::SUCCESS {
        return Err(DogError::failure(reply.rsp.result.message()));
    }
    let cinfo = cinfo.ok_or_else(|| DogError::failure("short CLUSTER_INFO reply"))?;
    Ok(cinfo.block_size_shift)
}

/// `vdi create -P`: creates every data object of the new VDI.
fn prealloc(conn: &mut Connection, vid: u32) -> Result<(), DogError> {
    let inode_oid = ObjectId::inode(vid);
    let data = read_object(conn, inode_oid, SD_INODE_HEADER_SIZE as u32, 0)
        .map_err(|e| e.then("Failed to read a newly created VDI object", exit::FAILURE))?;
    let inode = InodeHeader::decode(&data).map_err(|e| {
        DogError::failure(format!("Failed to read a newly created VDI object: {e}"))
    })?;
    let max_idx = inode.nr_objects().min(SD_INODE_DATA_INDEX) as u32;
    let mut idx = 0u32;
    run_ordered(
        conn,
        DEFAULT_WINDOW,
        || {
            if idx >= max_idx {
                return Ok(None);
            }
            let task = WriteChunk {
                spec: WriteSpec {
                    oid: ObjectId::data(vid, idx),
                    cow_oid: 0,
                    offset: 0,
                    copies: inode.nr_copies,
                    copy_policy: inode.copy_policy,
                    create: true,
                },
                data: Vec::new(),
                inode_oid,
                vid,
                idx,
                written: false,
            };
            idx += 1;
            Ok(Some(task))
        },
        |()| Ok(()),
    )
    .map_err(|e| e.with_code(exit::FAILURE))
}

/// `dog vdi delete NAME [-s ID|TAG]`: GET_VDI_INFO then DEL_VDI; the sheep
/// frees the objects. A missing VDI or tag exits 0, as in Sheepdog.
pub fn delete(ctx: &Ctx, name: &str, snap: &SnapshotSel) -> Result<(), DogError> {
    check_vdi_name(name).map_err(|why| DogError::Exit {
        message: open_failed(name, snap.id, &snap.tag, why),
        code: exit::USAGE,
    })?;
    let mut conn = ctx.connect().map_err(|e| {
        e.then(
            open_failed(name, snap.id, &snap.tag, SdResult::EIO.message()),
            exit::FAILURE,
        )
    })?;
    match lookup_vdi(&mut conn, name, snap.id, &snap.tag) {
        // Deleting what is not there is not an error for Sheepdog's dog,
        // and OpenStack Cinder relies on that: it reads the message on
        // stderr and only warns. Every other failure exits non-zero.
        Ok(Err(result)) if result == SdResult::NO_VDI || result == SdResult::NO_TAG => {
            warn(&open_failed(name, snap.id, &snap.tag, result.message()));
            return Ok(());
        }
        _ => {}
    }
    find_vdi(&mut conn, name, snap.id, &snap.tag)?;

    match del_vdi(&mut conn, name, snap)? {
        Ok(()) => Ok(()),
        Err(result) => Err(DogError::Exit {
            message: format!("Failed to delete {name}: {}", result.message()),
            code: if result == SdResult::NO_VDI {
                exit::MISSING
            } else {
                exit::FAILURE
            },
        }),
    }
}

/// DEL_VDI of `name` at snapshot `snap` (payload name + tag, `vdi.snapid`):
/// the sheep's refusal as is; `Err` only for a transport failure.
pub fn del_vdi(
    conn: &mut Connection,
    name: &str,
    snap: &SnapshotSel,
) -> Result<Result<(), SdResult>, DogError> {
    let mut req = request(Opcode::DelVdi);
    req.flags = qemu_proto::flags::CMD_WRITE;
    let mut args = req.vdi();
    args.snapid = snap.id as u32;
    req.set_vdi(&args);
    let reply = conn.exec(req, &name_payload(name, Some(&snap.tag)))?;
    if reply.rsp.result != SdResult::SUCCESS {
        return Ok(Err(reply.rsp.result));
    }
    Ok(Ok(()))
}
