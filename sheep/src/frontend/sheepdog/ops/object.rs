//! The object opcodes QEMU's driver and dog send (READ_OBJ, WRITE_OBJ,
//! CREATE_AND_WRITE_OBJ): range and kind checks, the copies to write, the
//! sync flag, and inode index updates in place.

use super::*;

/// The object size limit for `oid`, or an error for kinds we do not serve.
pub(super) fn object_size(sheep: &Sheep, oid: ObjectId) -> Result<u64, SdResult> {
    if oid.is_inode() {
        Ok(SD_INODE_SIZE)
    } else if oid.is_data() || oid.is_vmstate() {
        Ok(sheep.vdis.object_size(oid.vid()))
    } else {
        Err(SdResult::INVALID_PARMS)
    }
}

/// Checks that `offset + len` stays inside the object.
pub(super) fn check_range(
    sheep: &Sheep,
    oid: ObjectId,
    offset: u64,
    len: u32,
) -> Result<(), SdResult> {
    let size = object_size(sheep, oid)?;
    if len > MAX_DATA
        || offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > size)
    {
        return Err(SdResult::INVALID_PARMS);
    }
    Ok(())
}

/// Copies: as the client says, else what the VDI was created with.
pub(super) fn copies_for(sheep: &Sheep, req: &SdRequest, oid: ObjectId) -> usize {
    match req.obj().copies {
        0 => sheep.vdis.copies(oid.vid()),
        n => usize::from(n),
    }
}

/// The client asked for a synchronous write unless it set the CACHE flag.
pub(super) fn wants_sync(req: &SdRequest) -> bool {
    req.flags & flags::CMD_CACHE == 0
}

pub(super) async fn read_obj(sheep: &Sheep, req: &SdRequest) -> OpResult {
    let args = req.obj();
    let oid = ObjectId(args.oid);
    check_range(sheep, oid, args.offset, req.data_length)?;
    let copies = copies_for(sheep, req, oid);
    sheep
        .gateway
        .read(oid, args.offset, req.data_length, copies)
        .await
}

/// Data objects of a snapshot are read-only (inode objects never are: tags
/// and sizes of snapshots may change). A client that gets READONLY looks
/// its VDI up again and finds the new working VDI, as QEMU does.
pub(super) fn check_writable(sheep: &Sheep, oid: ObjectId) -> Result<(), SdResult> {
    if !oid.is_inode() && sheep.vdis.is_snapshot(oid.vid()) {
        return Err(SdResult::READONLY);
    }
    Ok(())
}

pub(super) async fn write_obj(sheep: &Sheep, req: &SdRequest, data: Bytes) -> OpResult {
    let args = req.obj();
    let oid = ObjectId(args.oid);
    check_range(sheep, oid, args.offset, data.len() as u32)?;
    check_writable(sheep, oid)?;
    let copies = copies_for(sheep, req, oid);
    let entries = index_entries(oid, args.offset, data.len());
    let before = match entries {
        Some((first, count)) => Some(
            sheep
                .gateway
                .read(oid, inode::data_vid_offset(first), count * 4, copies)
                .await?,
        ),
        None => None,
    };
    sheep
        .gateway
        .write(oid, args.offset, data.clone(), copies, wants_sync(req))
        .await?;
    if let (Some((first, _)), Some(before)) = (entries, before) {
        // The client rewrote index entries (QEMU's discard and snapshot
        // delete do): the objects they pointed at may now be garbage.
        let base = inode::data_vid_offset(first);
        let mut after = before.to_vec();
        for (i, byte) in data.iter().enumerate() {
            let at = args.offset + i as u64;
            if at >= base && at < base + after.len() as u64 {
                after[(at - base) as usize] = *byte;
            }
        }
        let old = inode::decode_data_vdi_ids(&before);
        let new = inode::decode_data_vdi_ids(&after);
        let released: Vec<(u32, u32)> = old
            .iter()
            .zip(&new)
            .enumerate()
            .filter(|(_, (o, n))| **o != 0 && o != n)
            .map(|(i, (o, _))| (*o, first + i as u32))
            .collect();
        sheep.vdis.unreference(oid.vid(), released).await?;
    }
    Ok(Bytes::new())
}

/// The index entries (first, count) a write into `oid` at `offset` touches,
/// if `oid` is an inode and the write reaches its data_vdi_id array.
pub(super) fn index_entries(oid: ObjectId, offset: u64, len: usize) -> Option<(u32, u32)> {
    let start = inode::DATA_VDI_ID_OFFSET;
    let end = start + 4 * consts::SD_INODE_DATA_INDEX;
    let (lo, hi) = (offset.max(start), (offset + len as u64).min(end));
    if !oid.is_inode() || lo >= hi {
        return None;
    }
    let first = (lo - start) / 4;
    let last = (hi - start).div_ceil(4);
    Some((first as u32, (last - first) as u32))
}

pub(super) async fn create_and_write_obj(sheep: &Sheep, req: &SdRequest, data: Bytes) -> OpResult {
    let args = req.obj();
    let oid = ObjectId(args.oid);
    check_range(sheep, oid, args.offset, data.len() as u32)?;
    check_writable(sheep, oid)?;
    let copies = copies_for(sheep, req, oid);
    let sync = wants_sync(req);
    if req.flags & flags::CMD_COW != 0 {
        // Copy-on-write: the new object starts as a copy of `cow_oid`.
        let src = ObjectId(args.cow_oid);
        let size = object_size(sheep, oid)?;
        if object_size(sheep, src)? != size {
            return Err(SdResult::INVALID_PARMS.into());
        }
        let src_copies = sheep.vdis.copies(src.vid());
        // Only a snapshot's object is sure never to change under a copy
        // that reads through to it.
        let immutable = src.is_data() && sheep.vdis.is_snapshot(src.vid());
        sheep
            .gateway
            .create_from(
                oid,
                src,
                src_copies,
                immutable,
                args.offset,
                data,
                copies,
                sync,
                CreateMode::Replace,
            )
            .await?;
    } else {
        sheep
            .gateway
            .create(oid, args.offset, data, copies, sync)
            .await?;
    }
    Ok(Bytes::new())
}
