//! A VDI as a block device: byte ranges split into objects, objects
//! allocated on first write, copy-on-write from a parent's objects, freed by
//! trim, and reported by block status. Front ends (NBD) serve volumes
//! through [`BlockExport`]; [`super::Volumes`] is the node's catalog of them.
//!
//! The inode's `data_vdi_id` array says which VDI owns each object (0: none
//! yet, reads as zeros). A volume caches that array. Invariants:
//! - One [`Volume`] per VDI per node, shared by every connection to it, so
//!   two connections never both allocate the same object.
//! - Allocating an object (first write, or copy-on-write of a parent's
//!   object) runs under a per-object lock: create the object on its
//!   replicas, then point the inode's index entry at it, then update the
//!   cache. A crash in between leaves at worst an unreferenced object. (An
//!   unsynced allocation that no other sheep may be reading creates the
//!   object and points the index in parallel: see [`Volume::allocate`].)
//! - Freeing runs the other way: the index entry is cleared first, then the
//!   object removed, so a reader never follows an index to a missing object.
//! - Durability follows the client: with FUA each step is synced on every
//!   replica; without, the next flush syncs everything written so far
//!   ([`Durability`] also sends writes synchronously for clients that flush
//!   after every write, and skips flushes that have nothing to sync).
//! - Other nodes may serve the same VDI: before allocating an object, and
//!   before reporting or reading a range as unallocated, a volume re-reads
//!   those index entries from the inode; objects are created exclusively,
//!   so an object another node made is written into, never replaced.
//! - While the VDI is attached on more than one node (a live migration, or
//!   read-only attachments beside the writer), the volume is *coherent*:
//!   every read and block-status re-reads the index entries it covers, since
//!   another node may have moved an entry from a parent's object to a fresh
//!   copy-on-write one (an entry the cache does not think is a hole).
//! - A volume follows its VDI: when a snapshot freezes the VDI under it
//!   (writes get READONLY) or another node changed the index (a read finds
//!   no object), it looks the VDI up again and retries once, as QEMU's
//!   sheepdog driver does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use qemu_proto::inode;
use qemu_proto::{ObjectId, SdResult};

use super::durability::Durability;
use super::{VdiRef, VdiService};
use crate::cluster::BoxFuture;
use crate::error::SheepError;
use crate::frontend::export::{BlockExport, Extent};
use crate::gateway::Gateway;
use crate::store::CreateMode;

/// Allocation locks are striped: objects whose index is equal modulo this
/// share a lock, which bounds memory for huge VDIs.
const ALLOC_STRIPES: usize = 64;

/// What a volume knows of its VDI; replaced whole when it reloads.
struct Snapshot {
    vid: u32,
    size: u64,
    object_shift: u8,
    copies: usize,
    read_only: bool,
    index: Vec<u32>,
}

/// One open VDI.
pub struct Volume {
    vdis: Arc<VdiService>,
    gateway: Arc<Gateway>,
    export: VdiRef,
    state: RwLock<Snapshot>,
    alloc_locks: Vec<tokio::sync::Mutex<()>>,
    durability: Durability,
    coherent: AtomicBool,
}

impl Volume {
    /// Opens the VDI named by `export`.
    pub async fn open(
        vdis: Arc<VdiService>,
        gateway: Arc<Gateway>,
        export: VdiRef,
    ) -> Result<Self, SheepError> {
        let state = Self::load(&vdis, &export).await?;
        Ok(Volume {
            vdis,
            gateway,
            export,
            state: RwLock::new(state),
            alloc_locks: (0..ALLOC_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            durability: Durability::default(),
            coherent: AtomicBool::new(false),
        })
    }

    /// Coherent mode on or off (see the module docs).
    pub fn set_coherent(&self, on: bool) {
        self.coherent.store(on, Ordering::Relaxed);
    }

    /// True in coherent mode.
    pub fn is_coherent(&self) -> bool {
        self.coherent.load(Ordering::Relaxed)
    }

    /// Drops everything cached and reads the VDI again (its index, size and
    /// current vid).
    pub async fn invalidate(&self) -> Result<(), SheepError> {
        self.reload().await
    }

    async fn load(vdis: &VdiService, export: &VdiRef) -> Result<Snapshot, SheepError> {
        let (vid, header) = vdis.lookup(export).await?;
        let index = vdis.read_index(vid, &header).await?;
        Ok(Snapshot {
            vid,
            size: header.vdi_size,
            object_shift: header.block_size_shift,
            copies: usize::from(header.nr_copies),
            read_only: header.is_snapshot() || vdis.is_snapshot(vid),
            index,
        })
    }

    /// Looks the VDI up again (after a snapshot, or a change made through
    /// another node).
    async fn reload(&self) -> Result<(), SheepError> {
        let fresh = Self::load(&self.vdis, &self.export).await?;
        *self.state.write().expect("volume lock") = fresh;
        Ok(())
    }

    fn vid(&self) -> u32 {
        self.state.read().expect("volume lock").vid
    }

    fn copies(&self) -> usize {
        self.state.read().expect("volume lock").copies
    }

    fn owner(&self, idx: u32) -> u32 {
        self.state.read().expect("volume lock").index[idx as usize]
    }

    /// Re-reads index entries `[first, first + count)` from the inode into
    /// the cache: another node may have allocated (or copied) objects this
    /// volume has not seen.
    async fn refresh(&self, first: u32, count: u32) -> Result<(), SheepError> {
        let (vid, copies) = (self.vid(), self.copies());
        let raw = self
            .gateway
            .read(
                ObjectId::inode(vid),
                inode::data_vid_offset(first),
                count * 4,
                copies,
            )
            .await?;
        let mut st = self.state.write().expect("volume lock");
        if st.vid == vid {
            for (i, owner) in inode::decode_data_vdi_ids(&raw).into_iter().enumerate() {
                st.index[first as usize + i] = owner;
            }
        }
        Ok(())
    }

    /// Refreshes the span of index entries under `[offset, offset + len)`
    /// if the cache thinks any of them unallocated: only then can the cache
    /// be missing something another node wrote.
    async fn refresh_holes(&self, offset: u64, len: u64) -> Result<(), SheepError> {
        let size = self.object_size();
        let first = (offset / size) as u32;
        let last = ((offset + len).div_ceil(size)) as u32;
        let any_hole = self.is_coherent() || (first..last).any(|idx| self.owner(idx) == 0);
        if any_hole {
            self.refresh(first, last - first).await?;
        }
        Ok(())
    }

    fn object_size(&self) -> u64 {
        1 << self.state.read().expect("volume lock").object_shift
    }

    fn disk_size(&self) -> u64 {
        self.state.read().expect("volume lock").size
    }

    /// Splits `[offset, offset + len)` into (object index, offset in the
    /// object, length) pieces.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (u32, u64, u64)> {
        let size = self.object_size();
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let idx = pos / size;
            let start = pos % size;
            let n = (size - start).min(end - pos);
            pos += n;
            Some((idx as u32, start, n))
        })
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), SheepError> {
        let st = self.state.read().expect("volume lock");
        if write && st.read_only {
            return Err(SdResult::READONLY.into());
        }
        match offset.checked_add(len) {
            Some(end) if end <= st.size => Ok(()),
            _ => Err(SdResult::INVALID_PARMS.into()),
        }
    }

    async fn read_range(&self, offset: u64, len: u32) -> Result<Bytes, SheepError> {
        match self.try_read(offset, len).await {
            Err(e) if e.is_no_object() => {
                self.reload().await?;
                self.try_read(offset, len).await
            }
            other => other,
        }
    }

    async fn try_read(&self, offset: u64, len: u32) -> Result<Bytes, SheepError> {
        self.check(offset, u64::from(len), false)?;
        self.refresh_holes(offset, u64::from(len)).await?;
        let copies = self.copies();
        let reads = self
            .pieces(offset, u64::from(len))
            .map(|(idx, start, n)| async move {
                match self.owner(idx) {
                    0 => Ok(Bytes::from(vec![0u8; n as usize])),
                    owner => {
                        self.gateway
                            .read(ObjectId::data(owner, idx), start, n as u32, copies)
                            .await
                    }
                }
            });
        let parts = futures::future::try_join_all(reads).await?;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let mut out = BytesMut::with_capacity(len as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out.freeze())
    }

    async fn write_range(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), SheepError> {
        let sync = self.durability.begin_write(fua);
        let r = self.write_range_as(offset, data, sync).await;
        self.durability.end_write(sync);
        r
    }

    async fn write_range_as(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), SheepError> {
        match self.try_write(offset, data.clone(), fua).await {
            Err(e) if e.result() == SdResult::READONLY || e.is_no_object() => {
                // A snapshot froze our vid, or the index changed elsewhere:
                // follow the VDI to its current working vid and try again.
                self.reload().await?;
                self.try_write(offset, data, fua).await
            }
            other => other,
        }
    }

    async fn try_write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), SheepError> {
        self.check(offset, data.len() as u64, true)?;
        let mut at = 0usize;
        let writes: Vec<_> = self
            .pieces(offset, data.len() as u64)
            .map(|(idx, start, n)| {
                let chunk = data.slice(at..at + n as usize);
                at += n as usize;
                self.write_object(idx, start, chunk, fua)
            })
            .collect();
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// Writes into one object, allocating it (or copying it from its owner)
    /// first if this VDI does not own it yet.
    async fn write_object(
        &self,
        idx: u32,
        start: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<(), SheepError> {
        let (vid, copies) = (self.vid(), self.copies());
        if self.vdis.is_snapshot(vid) {
            return Err(SdResult::READONLY.into());
        }
        let oid = ObjectId::data(vid, idx);
        if self.owner(idx) != vid {
            let _alloc = self.alloc_locks[idx as usize % ALLOC_STRIPES].lock().await;
            // Another node may have allocated or copied this object since
            // we cached the index: ask the inode before making one.
            self.refresh(idx, 1).await?;
            let previous = self.owner(idx);
            if previous != vid {
                return self.allocate(idx, previous, start, data, fua).await;
            }
        }
        self.gateway.write(oid, start, data, copies, fua).await
    }

    /// Makes this VDI's own object `idx`, holding `data` at `start` (a fresh
    /// object, or a copy-on-write one backed by `previous`'s), and points
    /// the index at it.
    async fn allocate(
        &self,
        idx: u32,
        previous: u32,
        start: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<(), SheepError> {
        let (vid, copies) = (self.vid(), self.copies());
        let oid = ObjectId::data(vid, idx);
        let create = async {
            match previous {
                0 => {
                    self.gateway
                        .create_with_mode(
                            oid,
                            start,
                            data.clone(),
                            copies,
                            fua,
                            CreateMode::Exclusive,
                        )
                        .await
                }
                // The parent is a snapshot (only snapshots have children),
                // so the new object can read through to it.
                parent => {
                    self.gateway
                        .create_from(
                            oid,
                            ObjectId::data(parent, idx),
                            self.vdis.copies(parent),
                            self.vdis.is_snapshot(parent),
                            start,
                            data.clone(),
                            copies,
                            fua,
                            CreateMode::Exclusive,
                        )
                        .await
                }
            }
        };
        // The object must exist before the index names it for whoever may
        // follow the index meanwhile (a sheep serving the VDI elsewhere, in
        // coherent mode) and, for a synced write, after a crash. An
        // unsynced write read only through this volume has neither: no
        // order between two unsynced writes survives a crash anyway, and
        // this volume's cache names the object only once both are done. So
        // then the object and its index entry go out together.
        let made = if fua || self.is_coherent() {
            let made = create.await;
            if made.is_ok() {
                self.point_index(idx, vid, fua).await?;
            }
            made
        } else {
            let (made, pointed) = tokio::join!(create, self.point_index(idx, vid, fua));
            if let Err(e) = &made {
                if e.result() != SdResult::OID_EXIST {
                    // Nothing was made: point the index back where it was.
                    let _ = self.point_index(idx, previous, fua).await;
                }
            }
            pointed?;
            made
        };
        match made {
            Ok(()) => {}
            // Made by another node in the meantime: write into it and point
            // the index at it (the same value that node sets).
            Err(e) if e.result() == SdResult::OID_EXIST => {
                self.gateway.write(oid, start, data, copies, fua).await?;
                self.point_index(idx, vid, fua).await?;
            }
            Err(e) => return Err(e),
        }
        self.cache_owner(vid, idx, vid);
        Ok(())
    }

    /// Points index entry `idx` at `owner` in the inode, then in the cache.
    async fn set_owner(&self, idx: u32, owner: u32, sync: bool) -> Result<(), SheepError> {
        let vid = self.vid();
        self.point_index(idx, owner, sync).await?;
        self.cache_owner(vid, idx, owner);
        Ok(())
    }

    /// Points index entry `idx` at `owner` in the inode (not the cache).
    async fn point_index(&self, idx: u32, owner: u32, sync: bool) -> Result<(), SheepError> {
        let (vid, copies) = (self.vid(), self.copies());
        self.gateway
            .write(
                ObjectId::inode(vid),
                inode::data_vid_offset(idx),
                Bytes::copy_from_slice(&owner.to_le_bytes()),
                copies,
                sync,
            )
            .await
    }

    /// Records in the cache that `vid`'s index entry `idx` is `owner`
    /// (unless the volume moved to another vid meanwhile).
    fn cache_owner(&self, vid: u32, idx: u32, owner: u32) {
        let mut st = self.state.write().expect("volume lock");
        if st.vid == vid {
            st.index[idx as usize] = owner;
        }
    }

    /// [`Volume::discard`] as a write of the durability policy.
    async fn discard_range(
        &self,
        offset: u64,
        len: u64,
        zero_partial: bool,
        fua: bool,
    ) -> Result<(), SheepError> {
        let sync = self.durability.begin_write(fua);
        let r = self.discard(offset, len, zero_partial, sync).await;
        self.durability.end_write(sync);
        r
    }

    /// Makes a range read as zeros: whole objects are dropped from the
    /// index (and removed if this VDI owns them); with `zero_partial`, the
    /// allocated parts of partial objects are overwritten with zeros.
    async fn discard(
        &self,
        offset: u64,
        len: u64,
        zero_partial: bool,
        fua: bool,
    ) -> Result<(), SheepError> {
        self.check(offset, len, true)?;
        let size = self.object_size();
        let (vid, copies, disk_size) = (self.vid(), self.copies(), self.disk_size());
        for (idx, start, n) in self.pieces(offset, len).collect::<Vec<_>>() {
            let alloc = self.alloc_locks[idx as usize % ALLOC_STRIPES].lock().await;
            let owner = self.owner(idx);
            if owner == 0 {
                continue;
            }
            let whole = n == size || (start == 0 && u64::from(idx) * size + n >= disk_size);
            if whole {
                // Unlink first: a crash then leaves an unreferenced object,
                // never an index entry pointing at nothing.
                self.set_owner(idx, 0, true).await?;
                if owner == vid {
                    self.gateway
                        .remove(ObjectId::data(owner, idx), copies)
                        .await?;
                }
            } else if zero_partial {
                drop(alloc);
                self.write_object(idx, start, Bytes::from(vec![0u8; n as usize]), fua)
                    .await?;
            }
        }
        Ok(())
    }

    async fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>, SheepError> {
        self.check(offset, len, false)?;
        self.refresh_holes(offset, len).await?;
        let mut out: Vec<Extent> = Vec::new();
        for (idx, _, n) in self.pieces(offset, len) {
            let hole = self.owner(idx) == 0;
            match out.last_mut() {
                Some(last) if last.hole == hole => last.len += n,
                _ => out.push(Extent { len: n, hole }),
            }
        }
        Ok(out)
    }
}

impl BlockExport for Volume {
    fn size(&self) -> u64 {
        self.disk_size()
    }

    fn read_only(&self) -> bool {
        self.state.read().expect("volume lock").read_only
    }

    fn block_size(&self) -> u32 {
        self.object_size().min(u64::from(u32::MAX)) as u32
    }

    fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, SheepError>> {
        Box::pin(self.read_range(offset, len))
    }

    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(self.write_range(offset, data, fua))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            if let Some(round) = self.durability.begin_flush() {
                self.gateway.flush_all().await?;
                self.durability.end_flush(round);
            }
            Ok(())
        })
    }

    fn trim(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(self.discard_range(offset, len, false, false))
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(self.discard_range(offset, len, true, fua))
    }

    fn block_status(
        &self,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, Result<Vec<Extent>, SheepError>> {
        Box::pin(self.extents(offset, len))
    }
}
