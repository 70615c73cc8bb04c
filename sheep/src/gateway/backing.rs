//! Backed copies, seen from the gateway. A copy-on-write child is created
//! holding only what its first write brings, and names its parent's object
//! as its *backing*; the store keeps the blocks written into the child and
//! reports which parts of a read it never wrote. Replicas resolve those
//! parts by reading the backing object through the gateway, so to every
//! reader (clients, recovery, checks) a backed copy's content is the backing
//! object overlaid with the blocks written into the child. A first write
//! into a shared object then costs a small create, not a 4 MiB copy.
//!
//! Invariants:
//! - A backing object never changes: it is an object of a snapshot (the
//!   callers of [`Gateway::create_from`] ensure it).
//! - A backing object outlives every copy backed by it: before the VDI
//!   layer frees an object of a snapshot, it makes every copy that may be
//!   backed by it plain ([`Gateway::unback`]).
//! - Copies move between nodes whole: a fetch resolves the backing, so a
//!   recovered or repaired copy is a plain one with the same content and
//!   version.

use bytes::Bytes;
use qemu_proto::ObjectId;

use crate::error::SheepError;
use crate::store::{Backing, BaseBlocks, ReadOut};

use super::{Gateway, ObjectRpc};

/// Checksum block size of the store: the unit a backed copy holds.
const BLOCK: u64 = crate::store::layout::BLOCK;

impl Gateway {
    /// The bytes of a local read at `offset`, with the parts a backed copy
    /// never wrote read from its backing object.
    pub(super) async fn resolve_read(
        &self,
        offset: u64,
        read: ReadOut,
    ) -> Result<Vec<u8>, SheepError> {
        let mut data = read.data;
        let Some((backing, parts)) = read.from_backing.filter(|(_, p)| !p.is_empty()) else {
            return Ok(data);
        };
        // One read spans every part: parts are usually one run, and a read
        // of the blocks between them costs less than a round trip each.
        let (first, _) = parts[0];
        let end = parts.iter().map(|(at, n)| at + n).max().unwrap_or(first);
        let base = self
            .read(
                ObjectId(backing.oid),
                first,
                (end - first) as u32,
                usize::from(backing.copies),
            )
            .await?;
        for (at, n) in parts {
            let (src, dst) = ((at - first) as usize, (at - offset) as usize);
            data[dst..dst + n as usize].copy_from_slice(&base[src..src + n as usize]);
        }
        Ok(data)
    }

    /// The whole content of a local copy (from [`crate::store::ObjectStore::fetch`]),
    /// with a backed copy's never-written parts read from its backing.
    pub(super) async fn resolve_whole(&self, read: ReadOut) -> Result<Vec<u8>, SheepError> {
        let mut data = read.data;
        let Some((backing, parts)) = read.from_backing else {
            return Ok(data);
        };
        let base = self.fetch_whole(backing).await?;
        // Past the copy's own extent everything is the backing's.
        let own = data.len();
        if base.len() > own {
            data.extend_from_slice(&base[own..]);
        }
        for (at, n) in parts {
            let (from, to) = (at as usize, ((at + n) as usize).min(base.len()));
            if from < to {
                data[from..to].copy_from_slice(&base[from..to]);
            }
        }
        Ok(data)
    }

    /// The whole content of `backing` (itself resolved), from the first of
    /// its replicas that has it.
    pub(super) async fn fetch_whole(&self, backing: Backing) -> Result<Bytes, SheepError> {
        let oid = ObjectId(backing.oid);
        self.settle(|view, placement| async move {
            let sources = placement.replicas(oid, usize::from(backing.copies));
            self.fetch(view.id, oid, &sources)
                .await
                .map(|(_, data)| data)
        })
        .await
    }

    /// The backing content of the given blocks, for a write into a backed
    /// copy that covers them only partly.
    pub(super) async fn base_blocks(
        &self,
        backing: Backing,
        blocks: &[u64],
    ) -> Result<BaseBlocks, SheepError> {
        let reads = blocks.iter().map(|b| async move {
            let content = self
                .read(
                    ObjectId(backing.oid),
                    b * BLOCK,
                    BLOCK as u32,
                    usize::from(backing.copies),
                )
                .await?;
            Ok::<_, SheepError>((*b, content.to_vec()))
        });
        futures::future::try_join_all(reads).await
    }

    /// Makes every replica's copy of `oid` a plain one if it is backed by
    /// `from` (by anything, with `None`). Replicas without the object, or
    /// with a plain copy, have nothing to do.
    pub async fn unback(
        &self,
        oid: ObjectId,
        from: Option<ObjectId>,
        copies: usize,
    ) -> Result<(), SheepError> {
        self.settle(|view, placement| async move {
            let targets = placement.replicas(oid, copies);
            let rpc = ObjectRpc::Unback {
                oid: oid.0,
                from: from.map(|f| f.0),
            };
            // Per-target "no object" answers are fine; anything else failed.
            self.fan_out(&targets, view.id, &rpc, &Bytes::new())
                .await
                .map(|_| ())
        })
        .await
    }

    /// Serves [`ObjectRpc::Unback`] from the local store.
    pub(super) async fn unback_local(
        &self,
        oid: ObjectId,
        from: Option<ObjectId>,
    ) -> Result<(), SheepError> {
        let Some(store) = self.store() else {
            return Err(qemu_proto::SdResult::GATEWAY_MODE.into());
        };
        let Some(backing) = store.meta(oid).and_then(|m| m.backing) else {
            return Ok(());
        };
        if from.is_some_and(|f| f.0 != backing.oid) {
            return Ok(());
        }
        let content = self.fetch_whole(backing).await?;
        store.fill(oid, backing, content).await?;
        tracing::debug!(%oid, "filled a backed copy");
        Ok(())
    }
}
