//! Deleting VDIs without leaking or losing objects, and flattening a clone.
//!
//! A data object `(owner, idx)` is referenced by every VDI whose index entry
//! `idx` is `owner`; only VDIs of one family can reference it. Deleting a
//! VDI therefore frees exactly the objects it references that no other live
//! member of its family references, and removes its inode. Objects it
//! shares stay (under its vid) until their last referrer is deleted, so
//! deleting a base or a snapshot leaves its clones working, and deleting
//! every VDI leaves no object behind. This runs on the family's owner, one
//! operation at a time, so no clone can take a reference meanwhile.
//!
//! A copy-on-write child's object may be *backed* by the object it was
//! copied from (it holds only the blocks written into it; see
//! `gateway::backing`). Before an object is freed, every member's own
//! object at the same index, which may be such a child, is made plain.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use qemu_proto::inode;
use qemu_proto::{ObjectId, SdResult};

use super::{VdiMeta, VdiRef, VdiRpc, VdiService};
use crate::cluster::View;
use crate::error::SheepError;
use crate::store::CreateMode;

/// How many objects a delete or flatten works on at once.
const PARALLELISM: usize = 16;

/// An object to free, and the objects that may be backed by it.
struct Garbage {
    oid: ObjectId,
    dependents: Vec<ObjectId>,
}

impl VdiService {
    pub(super) async fn delete_as_owner(&self, view: &View, r: &VdiRef) -> Result<u32, SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        self.check_detached(r)?;
        let (vid, header) = self.lookup_local(r).await?;
        let family = self.registry.meta(vid).map_or(vid, |m| m.family);
        self.wait_family_quiet(family).await?;
        let index = self.read_index(vid, &header).await?;

        // Tombstone first: from here clients cannot find the VDI, and a
        // crash midway leaves unreferenced objects, never a VDI whose
        // objects vanish under it.
        self.registry.mark_deleted(vid);
        self.persist_registry();
        self.broadcast(view, VdiRpc::MarkDeleted { vid }).await;

        let garbage = self.unreferenced(family, &index).await?;
        let copies = usize::from(header.nr_copies);
        self.gateway.remove(ObjectId::inode(vid), copies).await?;
        let mut removals = futures::stream::iter(garbage)
            .map(|g| self.free(g, copies))
            .buffer_unordered(PARALLELISM);
        while let Some(r) = removals.next().await {
            r?;
        }
        tracing::info!(name = %r.name, vid = format_args!("{vid:x}"), "deleted VDI");
        Ok(vid)
    }

    /// Frees the given objects (owner vid, index) that no live member of
    /// `family` references.
    pub(super) async fn unreference_as_owner(
        &self,
        family: u32,
        objects: &[(u32, u32)],
    ) -> Result<(), SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        let Some(len) = objects.iter().map(|(_, idx)| *idx as usize + 1).max() else {
            return Ok(());
        };
        let copies = self.copies(objects[0].0);
        // Check each object at its own index: a sparse index with just
        // those entries (an index holds one owner per entry, so objects
        // at the same index go in separate rounds).
        let mut pending: Vec<(u32, u32)> = objects.to_vec();
        let mut garbage = Vec::new();
        while !pending.is_empty() {
            let mut index = vec![0u32; len];
            let mut later = Vec::new();
            for (owner, idx) in pending {
                match index[idx as usize] {
                    0 => index[idx as usize] = owner,
                    o if o == owner => {}
                    _ => later.push((owner, idx)),
                }
            }
            garbage.extend(self.unreferenced(family, &index).await?);
            pending = later;
        }
        let mut removals = futures::stream::iter(garbage)
            .map(|g| self.free(g, copies))
            .buffer_unordered(PARALLELISM);
        while let Some(r) = removals.next().await {
            r?;
        }
        Ok(())
    }

    /// Removes an object nobody references, after making plain the copies
    /// that may read through to it.
    async fn free(&self, garbage: Garbage, copies: usize) -> Result<(), SheepError> {
        for child in &garbage.dependents {
            self.gateway
                .unback(*child, Some(garbage.oid), self.copies(child.vid()))
                .await?;
        }
        self.gateway.remove(garbage.oid, copies).await
    }

    /// The objects `index` references that no live member of `family`
    /// references, each with the members' own objects at its index.
    async fn unreferenced(&self, family: u32, index: &[u32]) -> Result<Vec<Garbage>, SheepError> {
        let mut kept: HashSet<(u32, u32)> = HashSet::new();
        let mut own: HashMap<u32, Vec<u32>> = HashMap::new();
        for (member, _) in self.registry.family(family) {
            let header = match self.read_header(member).await {
                Ok(h) => h,
                Err(e) if e.is_no_object() => continue,
                Err(e) => return Err(e),
            };
            let theirs = self.read_index(member, &header).await?;
            for (idx, (mine, their)) in index.iter().zip(theirs.iter()).enumerate() {
                if *mine == 0 {
                    continue;
                }
                if mine == their {
                    kept.insert((*mine, idx as u32));
                }
                if *their == member {
                    own.entry(idx as u32).or_default().push(member);
                }
            }
        }
        Ok(index
            .iter()
            .enumerate()
            .filter(|(idx, owner)| **owner != 0 && !kept.contains(&(**owner, *idx as u32)))
            .map(|(idx, owner)| {
                let idx = idx as u32;
                let dependents = own
                    .get(&idx)
                    .into_iter()
                    .flatten()
                    .filter(|m| *m != owner)
                    .map(|m| ObjectId::data(*m, idx))
                    .collect();
                Garbage {
                    oid: ObjectId::data(*owner, idx),
                    dependents,
                }
            })
            .collect())
    }

    /// Waits until no VDI of `family` is being made elsewhere (possible only
    /// while the family's owner moves with the membership).
    async fn wait_family_quiet(&self, family: u32) -> Result<(), SheepError> {
        for _ in 0..300 {
            if !self.registry.family_busy(family) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(SdResult::AGAIN.into())
    }

    /// Copies every object the working VDI shares into the VDI itself, then
    /// makes it the root of a family of its own and frees the ancestors'
    /// objects that nothing references any more. Safe while the VDI is in
    /// use: copies are created exclusively, so a copy-on-write a client did
    /// first is kept, and the index entry is set only where it still points
    /// at the ancestor.
    pub(super) async fn flatten_as_owner(
        &self,
        view: &View,
        r: &VdiRef,
    ) -> Result<u32, SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        let (vid, mut header) = self.lookup_local(r).await?;
        if header.is_snapshot() {
            return Err(SdResult::READONLY.into());
        }
        let copies = usize::from(header.nr_copies);
        let size = header.object_size();
        let index = self.read_index(vid, &header).await?;
        let shared: Vec<(u32, u32)> = index
            .iter()
            .enumerate()
            .filter(|(_, owner)| **owner != 0 && **owner != vid)
            .map(|(idx, owner)| (idx as u32, *owner))
            .collect();
        let mut copies_made = futures::stream::iter(shared)
            .map(|(idx, owner)| self.unshare(vid, idx, owner, size, copies))
            .buffer_unordered(PARALLELISM);
        while let Some(r) = copies_made.next().await {
            r?;
        }
        // Objects this VDI copied on write may still read through to its
        // ancestors' objects: make them plain before leaving the family.
        let own: Vec<ObjectId> = index
            .iter()
            .enumerate()
            .filter(|(_, owner)| **owner == vid)
            .map(|(idx, _)| ObjectId::data(vid, idx as u32))
            .collect();
        let mut filled = futures::stream::iter(own)
            .map(|oid| self.gateway.unback(oid, None, copies))
            .buffer_unordered(PARALLELISM);
        while let Some(r) = filled.next().await {
            r?;
        }
        header.parent_vdi_id = 0;
        self.gateway
            .write(
                ObjectId::inode(vid),
                0,
                Bytes::from(header.encode()),
                copies,
                true,
            )
            .await?;
        if let Some(meta) = self.registry.meta(vid) {
            let old_family = meta.family;
            let independent = VdiMeta {
                family: vid,
                generation: meta.generation + 1,
                ..meta
            };
            self.registry.commit(vid, independent.clone());
            self.persist_registry();
            self.broadcast(
                view,
                VdiRpc::Commit {
                    vid,
                    meta: independent,
                },
            )
            .await;
            // The ancestors' objects this VDI no longer uses may have been
            // used by nobody else.
            let released: Vec<u32> = index
                .iter()
                .map(|owner| if *owner == vid { 0 } else { *owner })
                .collect();
            for garbage in self.unreferenced(old_family, &released).await? {
                self.free(garbage, copies).await?;
            }
        }
        tracing::info!(name = %r.name, vid = format_args!("{vid:x}"), "flattened VDI");
        Ok(vid)
    }

    /// Gives `vid` its own copy of object `idx`, now `owner`'s.
    async fn unshare(
        &self,
        vid: u32,
        idx: u32,
        owner: u32,
        size: u64,
        copies: usize,
    ) -> Result<(), SheepError> {
        let content = self
            .gateway
            .read(ObjectId::data(owner, idx), 0, size as u32, copies)
            .await?;
        match self
            .gateway
            .create_with_mode(
                ObjectId::data(vid, idx),
                0,
                content,
                copies,
                true,
                CreateMode::Exclusive,
            )
            .await
        {
            Ok(()) => {}
            // The VDI wrote there first (copy-on-write): its copy is newer,
            // but may read through to the ancestor's object.
            Err(e) if e.result() == SdResult::OID_EXIST => {
                self.gateway
                    .unback(ObjectId::data(vid, idx), None, copies)
                    .await?
            }
            Err(e) => return Err(e),
        }
        // Point the index at the copy (a client's copy-on-write sets the
        // same value, so the two never conflict).
        self.gateway
            .write(
                ObjectId::inode(vid),
                inode::data_vid_offset(idx),
                Bytes::copy_from_slice(&vid.to_le_bytes()),
                copies,
                true,
            )
            .await
    }
}
