//! `dog vdi read` (VDI data to stdout) and `dog vdi write` (stdin to VDI).
//!
//! Both look the VDI up (GET_VDI_INFO), read its inode header and the slice
//! of `data_vdi_id` covering the byte range, then walk the range object by
//! object with up to [`DEFAULT_WINDOW`] objects in flight. Unallocated
//! objects read as zeros; writing one creates it (CREATE_AND_WRITE_OBJ) and
//! then records it in the inode (WRITE_OBJ of 4 bytes at 4664 + 4 * idx).

use std::io::{self, Read, Write};

use qemu_proto::consts::{MAX_BLOCK_SIZE_SHIFT, MIN_BLOCK_SIZE_SHIFT, SD_INODE_HEADER_SIZE};
use qemu_proto::inode::{data_vid_offset, decode_data_vdi_ids};
use qemu_proto::{InodeHeader, ObjectId, SdResult};

use crate::client::{Connection, Reply};
use crate::commands::{
    check_vdi_name, find_vdi, open_failed, read_failed, read_obj_req, read_object, write_failed,
    write_obj_req, Ctx, WriteSpec,
};
use crate::error::{exit, strerror, DogError};
use crate::options::SnapshotSel;
use crate::pipeline::{run_ordered, Step, Task, DEFAULT_WINDOW};
use crate::size::parse_size;

/// A looked-up VDI: connection, vid and inode header.
pub(crate) struct Opened {
    /// The connection the lookup went over.
    pub conn: Connection,
    /// The VDI's vid.
    pub vid: u32,
    /// Its inode header.
    pub inode: InodeHeader,
}

/// dog's message when the inode cannot be read (`read_vdi_obj`).
pub(crate) fn read_vdi_failed(name: &str, snap: &SnapshotSel) -> String {
    if snap.id != 0 {
        format!("Failed to read a snapshot {name}:{}", snap.id)
    } else if !snap.tag.is_empty() {
        format!("Failed to read a snapshot {name}:{}", snap.tag)
    } else {
        format!("Failed to read a vdi {name}")
    }
}

/// Connects, finds the VDI and reads its inode header (exit 1 on failure).
pub(crate) fn open_vdi(ctx: &Ctx, name: &str, snap: &SnapshotSel) -> Result<Opened, DogError> {
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
    let vid = find_vdi(&mut conn, name, snap.id, &snap.tag)?;
    let oid = ObjectId::inode(vid);
    let fail = |e: DogError| e.then(read_vdi_failed(name, snap), exit::FAILURE);
    let data = read_object(&mut conn, oid, SD_INODE_HEADER_SIZE as u32, 0).map_err(fail)?;
    let inode = InodeHeader::decode(&data).map_err(|e| fail(DogError::failure(e.to_string())))?;
    if inode.store_policy != 0 {
        return Err(DogError::failure(format!(
            "{}: hyper volumes are not supported",
            read_vdi_failed(name, snap)
        )));
    }
    if !(MIN_BLOCK_SIZE_SHIFT..=MAX_BLOCK_SIZE_SHIFT).contains(&inode.block_size_shift) {
        return Err(DogError::failure(format!(
            "{}: invalid block size shift {}",
            read_vdi_failed(name, snap),
            inode.block_size_shift
        )));
    }
    Ok(Opened { conn, vid, inode })
}

/// The byte range of a read or write, resolved against the VDI size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    /// First object index.
    first_idx: u32,
    /// Offset inside the first object.
    offset: u64,
    /// Bytes to transfer.
    total: u64,
    /// Number of objects touched.
    nr_objs: u32,
}

/// Parses `[OFFSET [LEN]]` (Sheepdog size syntax; errors are usage errors).
fn parse_offset_len(offset: Option<&str>, len: Option<&str>) -> Result<(u64, u64), DogError> {
    let off = offset.map(parse_size).transpose()?.unwrap_or(0);
    let len = len.map(parse_size).transpose()?.unwrap_or(u64::MAX);
    Ok((off, len))
}

/// Clamps `len` to the VDI and splits the range by object size.
fn resolve_range(vdi_size: u64, object_size: u64, offset: u64, len: u64) -> Range {
    let total = len.min(vdi_size - offset);
    let first = offset / object_size;
    let nr_objs = if total == 0 {
        0
    } else {
        (offset + total - 1) / object_size - first + 1
    };
    Range {
        first_idx: first as u32,
        offset: offset % object_size,
        total,
        nr_objs: nr_objs as u32,
    }
}

/// Reads `data_vdi_id[first..first + count]` of the inode.
fn read_ids(conn: &mut Connection, vid: u32, first: u32, count: u32) -> Result<Vec<u32>, DogError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let data = read_object(
        conn,
        ObjectId::inode(vid),
        count * 4,
        data_vid_offset(first),
    )?;
    let mut ids = decode_data_vdi_ids(&data);
    ids.resize(count as usize, 0);
    Ok(ids)
}

/// One object's share of a read.
struct ReadChunk {
    oid: Option<ObjectId>,
    len: u32,
    offset: u64,
}

impl Task for ReadChunk {
    type Output = Vec<u8>;

    fn step(&mut self, reply: Option<Reply>) -> Result<Step<Vec<u8>>, DogError> {
        let Some(oid) = self.oid else {
            return Ok(Step::Done(vec![0; self.len as usize]));
        };
        let Some(reply) = reply else {
            return Ok(Step::Send(
                read_obj_req(oid, self.len, self.offset),
                Vec::new(),
            ));
        };
        if reply.rsp.result != SdResult::SUCCESS {
            return Err(
                read_failed(oid, reply.rsp.result).then("Failed to read VDI", exit::FAILURE)
            );
        }
        let mut data = reply.data;
        data.resize(self.len as usize, 0);
        Ok(Step::Done(data))
    }
}

/// `dog vdi read NAME [OFFSET [LEN]] [-s ID|TAG]`: the data goes to stdout.
pub fn read(
    ctx: &Ctx,
    name: &str,
    offset: Option<&str>,
    len: Option<&str>,
    snap: &SnapshotSel,
) -> Result<(), DogError> {
    let (offset, len) = parse_offset_len(offset, len)?;
    let Opened {
        mut conn,
        vid,
        inode,
    } = open_vdi(ctx, name, snap)?;
    if inode.vdi_size < offset {
        return Err(DogError::failure(
            "Read offset is beyond the end of the VDI",
        ));
    }
    let object_size = inode.object_size();
    let range = resolve_range(inode.vdi_size, object_size, offset, len);
    let ids = read_ids(&mut conn, vid, range.first_idx, range.nr_objs)
        .map_err(|e| e.then(read_vdi_failed(name, snap), exit::FAILURE))?;

    let (mut done, mut i, mut in_obj) = (0u64, 0usize, range.offset);
    let mut out = io::stdout().lock();
    run_ordered(
        &mut conn,
        DEFAULT_WINDOW,
        || {
            if done >= range.total {
                return Ok(None);
            }
            let len = (range.total - done).min(object_size - in_obj);
            let idx = range.first_idx + i as u32;
            let chunk = ReadChunk {
                oid: match ids[i] {
                    0 => None,
                    owner => Some(ObjectId::data(owner, idx)),
                },
                len: len as u32,
                offset: in_obj,
            };
            done += len;
            in_obj = 0;
            i += 1;
            Ok(Some(chunk))
        },
        |data| {
            out.write_all(&data).map_err(|e| {
                DogError::sysfail(format!("Failed to write to stdout: {}", strerror(&e)))
            })
        },
    )?;
    out.flush()
        .map_err(|e| DogError::sysfail(format!("Failed to write to stdout: {}", strerror(&e))))
}

/// One object's share of a write: write (or create) the object, then, if
/// it was created, point the inode's index entry at it. Also used with no
/// data by `vdi create -P` to preallocate objects.
pub(crate) struct WriteChunk {
    /// The object write.
    pub spec: WriteSpec,
    /// Bytes to write at `spec.offset`.
    pub data: Vec<u8>,
    /// The VDI's inode object.
    pub inode_oid: ObjectId,
    /// The VDI's vid (the new index entry).
    pub vid: u32,
    /// The object's index in the VDI.
    pub idx: u32,
    /// Set once the object write has succeeded.
    pub written: bool,
}

impl Task for WriteChunk {
    type Output = ();

    fn step(&mut self, reply: Option<Reply>) -> Result<Step<()>, DogError> {
        let Some(reply) = reply else {
            let data = std::mem::take(&mut self.data);
            return Ok(Step::Send(write_obj_req(&self.spec), data));
        };
        if !self.written {
            if reply.rsp.result != SdResult::SUCCESS {
                return Err(write_failed(self.spec.oid, reply.rsp.result)
                    .then("Failed to write VDI", exit::FAILURE));
            }
            self.written = true;
            if !self.spec.create {
                return Ok(Step::Done(()));
            }
            let spec = WriteSpec {
                oid: self.inode_oid,
                cow_oid: 0,
                offset: data_vid_offset(self.idx),
                create: false,
                ..self.spec
            };
            return Ok(Step::Send(
                write_obj_req(&spec),
                self.vid.to_le_bytes().to_vec(),
            ));
        }
        if reply.rsp.result != SdResult::SUCCESS {
            return Err(write_failed(self.inode_oid, reply.rsp.result));
        }
        Ok(Step::Done(()))
    }
}

/// Reads up to `buf.len()` bytes (less only at end of input).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `dog vdi write NAME [OFFSET [LEN]]`: data comes from stdin. A short read
/// is zero-padded to the end of the current object and ends the write.
pub fn write(
    ctx: &Ctx,
    name: &str,
    offset: Option<&str>,
    len: Option<&str>,
) -> Result<(), DogError> {
    let (offset, len) = parse_offset_len(offset, len)?;
    let snap = SnapshotSel::default();
    let Opened {
        mut conn,
        vid,
        inode,
    } = open_vdi(ctx, name, &snap)?;
    if inode.vdi_size < offset {
        return Err(DogError::failure(
            "Write offset is beyond the end of the VDI",
        ));
    }
    let object_size = inode.object_size();
    let range = resolve_range(inode.vdi_size, object_size, offset, len);
    let ids = read_ids(&mut conn, vid, range.first_idx, range.nr_objs)
        .map_err(|e| e.then(read_vdi_failed(name, &snap), exit::FAILURE))?;

    let mut stdin = io::stdin().lock();
    let (mut done, mut total, mut i, mut in_obj) = (0u64, range.total, 0usize, range.offset);
    run_ordered(
        &mut conn,
        DEFAULT_WINDOW,
        || {
            if done >= total {
                return Ok(None);
            }
            let len = (total - done).min(object_size - in_obj) as usize;
            let mut data = vec![0u8; len];
            let n = read_full(&mut stdin, &mut data).map_err(|e| {
                DogError::sysfail(format!("Failed to read from stdin: {}", strerror(&e)))
            })?;
            if n == 0 {
                // Input ended on an object boundary: nothing left to write
                // (an unwritten object already reads as zeros).
                return Ok(None);
            }
            if n < len {
                total = done + len as u64;
            }
            let idx = range.first_idx + i as u32;
            let owner = ids[i];
            let chunk = WriteChunk {
                spec: WriteSpec {
                    oid: ObjectId::data(inode.vdi_id, idx),
                    cow_oid: if owner != 0 && owner != inode.vdi_id {
                        ObjectId::data(owner, idx).0
                    } else {
                        0
                    },
                    offset: in_obj,
                    copies: inode.nr_copies,
                    copy_policy: inode.copy_policy,
                    create: owner != inode.vdi_id,
                },
                data,
                inode_oid: ObjectId::inode(vid),
                vid,
                idx,
                written: false,
            };
            in_obj += len as u64;
            if in_obj == object_size {
                in_obj = 0;
                i += 1;
            }
            done += len as u64;
            Ok(Some(chunk))
        },
        |()| Ok(()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn ranges() {
        let obj = 4 * MB;
        assert_eq!(
            resolve_range(10 * MB, obj, 0, u64::MAX),
            Range {
                first_idx: 0,
                offset: 0,
                total: 10 * MB,
                nr_objs: 3
            }
        );
        assert_eq!(
            resolve_range(10 * MB, obj, 5 * MB, MB),
            Range {
                first_idx: 1,
                offset: MB,
                total: MB,
                nr_objs: 1
            }
        );
        assert_eq!(
            resolve_range(10 * MB, obj, 3 * MB, 2 * MB),
            Range {
                first_idx: 0,
                offset: 3 * MB,
                total: 2 * MB,
                nr_objs: 2
            }
        );
        assert_eq!(resolve_range(10 * MB, obj, 10 * MB, 5).nr_objs, 0);
        assert_eq!(resolve_range(4095, obj, 0, u64::MAX).total, 4095);
    }

    #[test]
    fn offsets_use_size_syntax() {
        assert_eq!(parse_offset_len(None, None).unwrap(), (0, u64::MAX));
        assert_eq!(
            parse_offset_len(Some("1M"), Some("4k")).unwrap(),
            (MB, 4096)
        );
        assert_eq!(parse_offset_len(Some("x"), None).unwrap_err().code(), 64);
    }

    #[test]
    fn inode_read_messages() {
        let mut s = SnapshotSel::default();
        assert_eq!(read_vdi_failed("v", &s), "Failed to read a vdi v");
        s.tag = "t".into();
        assert_eq!(read_vdi_failed("v", &s), "Failed to read a snapshot v:t");
        s.id = 2;
        assert_eq!(read_vdi_failed("v", &s), "Failed to read a snapshot v:2");
    }
}
