//! The VDI namespace: names to vids; creating, snapshotting, cloning and
//! deleting VDIs.
//!
//! Sheepdog maps a name to a vid by hashing it (FNV-1a, 24 bits) and probing
//! upwards for a free vid; lookups walk the same chain and read inode
//! headers. Sheepdog orders these operations through its coordinator;
//! Sheepfold orders them through placement instead:
//! - A VDI made from nothing is made by the *owner of its name*: the primary
//!   replica of the inode object of the name's hash vid. Creates of one name
//!   run there one at a time, so of two simultaneous creates exactly one
//!   succeeds and the other answers VDI_EXIST.
//! - VDIs that share objects form a *family* (a VDI, its snapshots, their
//!   clones...), named by its root vid. Every operation that changes who
//!   shares what (snapshot, clone, rollback, delete, flatten) runs on the
//!   *owner of the family*, the primary replica of the root's inode, one at
//!   a time, so a delete never frees an object a clone is taking a
//!   reference to.
//! - Before an inode is written, its vid is reserved, with its name, on
//!   every member of the view, in that view. A vid taken, a name being made
//!   elsewhere or an existing working VDI of that name is refused by any
//!   member, so two owners (say, in two views during a membership change)
//!   never hand out one vid or make one name twice.
//! - Then the inode is written to all its replicas and the VDI committed in
//!   every node's registry (which marks snapshots read-only everywhere).

mod durability;
mod ledger;
mod lock;
mod make;
mod manage;
mod prune;
mod registry;
mod volume;
mod volumes;

pub use ledger::{
    AttachMode, AttachState, Attachment, Ledger, LedgerDelta, LockState, RequestRecord, Versioned,
};
pub use lock::{apply as apply_lock_op, new_attachment_id, LockListener, LockOp};
pub use manage::{check_tag, VdiInfo};
pub use registry::{Claim, RegistrySnapshot, ReserveConflict, VdiMeta, VdiRegistry};
pub use volume::Volume;
pub use volumes::Volumes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qemu_proto::hash::sd_hash_vdi;
use qemu_proto::inode::{self, InodeHeader};
use qemu_proto::{ObjectId, SdResult};
use serde::{Deserialize, Serialize};

use crate::cluster::View;
use crate::error::SheepError;
use crate::format::FormatState;
use crate::gateway::Gateway;
use crate::peer::Endpoint;

/// A NEW_VDI request: a create, clone, snapshot or rebase (Sheepdog's
/// dispatch on `snapid` and `base_vdi_id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewVdi {
    /// Name.
    pub name: String,
    /// Size in bytes (0 for a clone: the base's size).
    pub size: u64,
    /// Copies (0: the cluster default; clones take the base's).
    pub copies: u8,
    /// log2 object size (0: the cluster default).
    pub block_size_shift: u8,
    /// Nonzero: make a snapshot (with `base` the working VDI) or rebase.
    pub snapid: u32,
    /// The VDI to clone or snapshot (0: a new VDI).
    pub base: u32,
}

/// Names a VDI: the working VDI of `name`, or one of its snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VdiRef {
    /// Name.
    pub name: String,
    /// Snapshot tag ("" for none).
    pub tag: String,
    /// Snapshot id (0 for none).
    pub snapid: u32,
}

/// Messages of the VDI namespace between sheep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VdiRpc {
    /// Make a VDI; sent to the name's or the family's owner.
    New(NewVdi),
    /// Delete a VDI; sent to its family's owner.
    Delete(VdiRef),
    /// Copy every shared object into a VDI; sent to its family's owner.
    Flatten(VdiRef),
    /// Look a name up; sent to the name's owner when the local registry
    /// does not know it.
    Lookup(VdiRef),
    /// Index entries of a VDI of `family` stopped pointing at these
    /// objects (owner vid, index); free those nobody references any more.
    /// Sent to the family's owner.
    Unreference {
        /// The family.
        family: u32,
        /// The objects given up, as (owner vid, index).
        objects: Vec<(u32, u32)>,
    },
    /// Hold a vid for a VDI being made.
    Reserve(Claim),
    /// Drop a reservation.
    Release {
        /// The vid.
        vid: u32,
    },
    /// A VDI was made or changed.
    Commit {
        /// The vid.
        vid: u32,
        /// What every node should know of it.
        meta: VdiMeta,
    },
    /// A VDI was deleted.
    MarkDeleted {
        /// The vid.
        vid: u32,
    },
    /// Send your registry (for merging).
    Registry,
    /// Change a name's attachments; sent to the name's owner.
    Lock(LockOp),
    /// Send your ledger entries of these names.
    LedgerGet {
        /// VDI names.
        names: Vec<String>,
    },
    /// Merge these ledger entries.
    LedgerPut(LedgerDelta),
    /// Send your whole ledger (for merging).
    LedgerAll,
    /// Snapshot a working VDI under a tag; sent to its family's owner.
    Snapshot {
        /// The NEW_VDI of the snapshot (`base` = the working vid).
        req: NewVdi,
        /// The tag, which no snapshot of that name may have yet.
        tag: String,
    },
    /// Grow a working VDI; sent to its family's owner.
    Resize {
        /// The VDI name.
        name: String,
        /// The new size in bytes.
        size: u64,
    },
    /// A VDI changed shape (resized): reload open volumes of this name.
    Changed {
        /// The VDI name.
        name: String,
    },
}

/// Successful answers to [`VdiRpc`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VdiReply {
    /// Done.
    Done,
    /// The vid of a made, deleted or found VDI.
    Vid(u32),
    /// A reservation was refused.
    Conflict(ReserveConflict),
    /// The node's registry.
    Registry(RegistrySnapshot),
    /// A name's attachments after a lock change.
    Lock(LockState),
    /// A lock change was refused (result code, message for people).
    Refused(u32, String),
    /// Ledger entries.
    Ledger(LedgerDelta),
}

/// VDI operations of one node.
pub struct VdiService {
    local: SocketAddr,
    gateway: Arc<Gateway>,
    registry: Arc<VdiRegistry>,
    format: Arc<FormatState>,
    owner_lock: tokio::sync::Mutex<()>,
    ledger: Arc<Ledger>,
    lock_lock: tokio::sync::Mutex<()>,
    lock_listener: std::sync::OnceLock<LockListener>,
}

impl VdiService {
    /// Assembles the service.
    pub fn new(
        local: SocketAddr,
        gateway: Arc<Gateway>,
        registry: Arc<VdiRegistry>,
        format: Arc<FormatState>,
    ) -> Self {
        // The ledger lives beside the registry. A ledger that cannot be
        // read starts empty: every other member holds a copy, merged in
        // when this node joins them.
        let ledger_path = registry.path().map(|p| p.with_file_name("ledger"));
        let ledger = Ledger::load(ledger_path.clone()).unwrap_or_else(|e| {
            tracing::error!("cannot read the ledger, starting with the peers' copy: {e}");
            if let Some(p) = &ledger_path {
                let _ = std::fs::remove_file(p);
            }
            Ledger::load(ledger_path).unwrap_or_else(|_| Ledger::load(None).expect("empty ledger"))
        });
        VdiService {
            local,
            gateway,
            registry,
            format,
            owner_lock: tokio::sync::Mutex::new(()),
            ledger: Arc::new(ledger),
            lock_lock: tokio::sync::Mutex::new(()),
            lock_listener: std::sync::OnceLock::new(),
        }
    }

    /// This node's registry.
    pub fn registry(&self) -> &Arc<VdiRegistry> {
        &self.registry
    }

    /// Copies of `vid`'s objects: the registry's, else the cluster default.
    pub fn copies(&self, vid: u32) -> usize {
        match self.registry.meta(vid) {
            Some(m) => usize::from(m.copies),
            None => usize::from(self.format.config().map_or(0, |c| c.copies)),
        }
    }

    /// Data object size of `vid`.
    pub fn object_size(&self, vid: u32) -> u64 {
        let shift = match self.registry.meta(vid) {
            Some(m) => m.block_size_shift,
            None => self
                .format
                .config()
                .map_or(qemu_proto::consts::SD_DEFAULT_BLOCK_SIZE_SHIFT, |c| {
                    c.block_size_shift
                }),
        };
        1u64 << shift
    }

    /// True if `vid` is a snapshot: its data objects are read-only.
    pub fn is_snapshot(&self, vid: u32) -> bool {
        self.registry.is_snapshot(vid)
    }

    /// Reads a VDI's inode header.
    pub async fn read_header(&self, vid: u32) -> Result<InodeHeader, SheepError> {
        let bytes = self
            .gateway
            .read(
                ObjectId::inode(vid),
                0,
                qemu_proto::consts::SD_INODE_HEADER_SIZE as u32,
                self.copies(vid),
            )
            .await?;
        InodeHeader::decode(&bytes).map_err(|_| SdResult::EIO.into())
    }

    /// Reads a VDI's data_vdi_id array.
    pub async fn read_index(&self, vid: u32, header: &InodeHeader) -> Result<Vec<u32>, SheepError> {
        let bytes = self
            .gateway
            .read(
                ObjectId::inode(vid),
                inode::DATA_VDI_ID_OFFSET,
                (header.nr_objects() * 4) as u32,
                usize::from(header.nr_copies),
            )
            .await?;
        Ok(inode::decode_data_vdi_ids(&bytes))
    }

    /// Finds a VDI: the working VDI of a name, or a snapshot by tag or id.
    pub async fn lookup(&self, r: &VdiRef) -> Result<(u32, InodeHeader), SheepError> {
        match self.lookup_local(r).await {
            Err(SheepError::Result(code)) if code == SdResult::NO_VDI => {}
            other => return other,
        }
        // Our registry may lag behind a create that just happened; the
        // name's owner has it.
        let key = ObjectId::inode(sd_hash_vdi(&r.name));
        let vid = match self.on_owner(key, VdiRpc::Lookup(r.clone())).await? {
            VdiReply::Vid(vid) => vid,
            _ => return Err(SdResult::NO_VDI.into()),
        };
        Ok((vid, self.read_header(vid).await?))
    }

    /// Looks a name up along its probe chain in this node's registry.
    async fn lookup_local(&self, r: &VdiRef) -> Result<(u32, InodeHeader), SheepError> {
        let mut name_exists = false;
        for vid in self.registry.chain(sd_hash_vdi(&r.name)).into_iter().rev() {
            let header = match self.read_header(vid).await {
                Ok(h) => h,
                Err(e) if e.is_no_object() => continue,
                Err(e) => return Err(e),
            };
            if header.name != r.name {
                continue;
            }
            if r.tag.is_empty() && r.snapid == 0 {
                if header.is_snapshot() || self.is_snapshot(vid) {
                    // Only snapshots remain: the working VDI was deleted.
                    return Err(SdResult::NO_VDI.into());
                }
                return Ok((vid, header));
            }
            name_exists = true;
            let tag_matches = !r.tag.is_empty() && header.tag == r.tag;
            let id_matches = r.snapid != 0 && header.snap_id == r.snapid;
            if header.is_snapshot() && (tag_matches || id_matches) {
                return Ok((vid, header));
            }
        }
        Err(if name_exists {
            SdResult::NO_TAG
        } else {
            SdResult::NO_VDI
        }
        .into())
    }

    /// The family a VDI belongs to.
    fn family_of(&self, vid: u32) -> Result<u32, SheepError> {
        self.registry
            .meta(vid)
            .map(|m| m.family)
            .ok_or_else(|| SdResult::NO_VDI.into())
    }

    /// Makes a VDI (NEW_VDI) and returns the vid the client should use.
    pub async fn new_vdi(&self, req: NewVdi) -> Result<u32, SheepError> {
        let key = if req.base == 0 {
            ObjectId::inode(sd_hash_vdi(&req.name))
        } else {
            ObjectId::inode(
                self.family_of(req.base)
                    .map_err(|_| SdResult::NO_BASE_VDI)?,
            )
        };
        match self.on_owner(key, VdiRpc::New(req)).await? {
            VdiReply::Vid(vid) => Ok(vid),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Deletes a VDI and frees the objects nothing references any more.
    /// The working VDI of an attached name is not deleted.
    pub async fn delete(&self, r: VdiRef) -> Result<u32, SheepError> {
        self.check_detached(&r)?;
        let (vid, _) = self.lookup(&r).await?;
        let key = ObjectId::inode(self.family_of(vid)?);
        match self.on_owner(key, VdiRpc::Delete(r)).await? {
            VdiReply::Vid(vid) => Ok(vid),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Makes a VDI independent of its ancestors.
    pub async fn flatten(&self, r: VdiRef) -> Result<u32, SheepError> {
        let (vid, _) = self.lookup(&r).await?;
        let key = ObjectId::inode(self.family_of(vid)?);
        match self.on_owner(key, VdiRpc::Flatten(r)).await? {
            VdiReply::Vid(vid) => Ok(vid),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Called after a client rewrote index entries of `vid`'s inode (QEMU
    /// drops references that way when it discards or deletes): frees the
    /// objects (owner vid, index) that no VDI references any more, as
    /// Sheepdog's gateway does.
    pub async fn unreference(&self, vid: u32, objects: Vec<(u32, u32)>) -> Result<(), SheepError> {
        if objects.is_empty() {
            return Ok(());
        }
        let family = self.family_of(vid)?;
        let rpc = VdiRpc::Unreference { family, objects };
        self.on_owner(ObjectId::inode(family), rpc)
            .await
            .map(|_| ())
    }

    /// Runs `rpc` on the owner of `key` (the primary replica of that inode
    /// object): here, or forwarded in our view.
    async fn on_owner(&self, key: ObjectId, rpc: VdiRpc) -> Result<VdiReply, SheepError> {
        self.gateway
            .settle(|view, placement| {
                let rpc = rpc.clone();
                async move {
                    let owner = placement.primary(key).ok_or(SheepError::NoStorage)?;
                    if owner == self.local {
                        return self.handle_in(&view, rpc).await;
                    }
                    let (rep, _) = self
                        .gateway
                        .peers()
                        .request::<_, VdiReply>(owner, view.id, Endpoint::Vdi, &rpc, Bytes::new())
                        .await?;
                    rep.map_err(SheepError::from_result)
                }
            })
            .await
    }

    /// Serves a request from a peer (already checked to be in our view).
    pub async fn handle(&self, rpc: VdiRpc) -> Result<VdiReply, SheepError> {
        let view = self.gateway.current().0;
        self.handle_in(&view, rpc).await
    }

    async fn handle_in(&self, view: &View, rpc: VdiRpc) -> Result<VdiReply, SheepError> {
        match rpc {
            VdiRpc::New(req) => self.make(view, req, None).await.map(VdiReply::Vid),
            VdiRpc::Snapshot { req, tag } => {
                refusal(self.make(view, req, Some(tag)).await.map(VdiReply::Vid))
            }
            VdiRpc::Resize { name, size } => refusal(
                self.resize_as_owner(view, &name, size)
                    .await
                    .map(|_| VdiReply::Done),
            ),
            VdiRpc::Delete(r) => self.delete_as_owner(view, &r).await.map(VdiReply::Vid),
            VdiRpc::Flatten(r) => self.flatten_as_owner(view, &r).await.map(VdiReply::Vid),
            VdiRpc::Lookup(r) => self
                .lookup_local(&r)
                .await
                .map(|(vid, _)| VdiReply::Vid(vid)),
            VdiRpc::Unreference { family, objects } => {
                self.unreference_as_owner(family, &objects).await?;
                Ok(VdiReply::Done)
            }
            VdiRpc::Reserve(claim) => Ok(match self.registry.reserve(&claim) {
                Ok(()) => VdiReply::Done,
                Err(c) => VdiReply::Conflict(c),
            }),
            VdiRpc::Release { vid } => {
                self.registry.release(vid);
                Ok(VdiReply::Done)
            }
            VdiRpc::Commit { vid, meta } => {
                self.registry.commit(vid, meta);
                self.persist_registry();
                Ok(VdiReply::Done)
            }
            VdiRpc::MarkDeleted { vid } => {
                self.registry.mark_deleted(vid);
                self.persist_registry();
                Ok(VdiReply::Done)
            }
            VdiRpc::Registry => Ok(VdiReply::Registry(self.registry.snapshot())),
            VdiRpc::Lock(op) => refusal(self.lock_as_owner(view, op).await.map(VdiReply::Lock)),
            VdiRpc::LedgerGet { names } => Ok(VdiReply::Ledger(LedgerDelta {
                locks: names
                    .into_iter()
                    .map(|n| {
                        let e = self.ledger.lock_entry(&n);
                        (n, e)
                    })
                    .collect(),
                requests: Vec::new(),
            })),
            VdiRpc::LedgerPut(delta) => {
                self.apply_ledger(delta).await;
                Ok(VdiReply::Done)
            }
            VdiRpc::LedgerAll => Ok(VdiReply::Ledger(self.ledger.all())),
            VdiRpc::Changed { name } => {
                self.notify_changed(&name).await;
                Ok(VdiReply::Done)
            }
        }
    }

    /// Sends `rpc` to every other member of `view`, best effort: a member
    /// that misses it learns the same facts when registries are merged.
    async fn broadcast(&self, view: &View, rpc: VdiRpc) {
        let calls = view
            .members
            .iter()
            .filter(|m| m.addr != self.local)
            .map(|m| {
                let rpc = rpc.clone();
                async move {
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        self.gateway.peers().request::<_, VdiReply>(
                            m.addr,
                            0,
                            Endpoint::Vdi,
                            &rpc,
                            Bytes::new(),
                        ),
                    )
                    .await;
                    if !matches!(r, Ok(Ok((Ok(_), _)))) {
                        tracing::debug!(peer = %m.addr, "VDI broadcast not delivered");
                    }
                }
            });
        futures::future::join_all(calls).await;
    }

    /// Merges a peer's registry into ours.
    pub async fn pull_registry(&self, peer: SocketAddr) {
        let r = self
            .gateway
            .peers()
            .request::<_, VdiReply>(peer, 0, Endpoint::Vdi, &VdiRpc::Registry, Bytes::new())
            .await;
        if let Ok((Ok(VdiReply::Registry(snap)), _)) = r {
            if self.registry.merge(&snap) {
                self.persist_registry();
            }
        }
        self.pull_ledger(peer).await;
    }

    fn persist_registry(&self) {
        if let Err(e) = self.registry.persist() {
            tracing::error!("persisting the VDI registry: {e}");
        }
    }
}

/// Carries a refusal's message to the gateway that asked: peer replies
/// carry only a result code otherwise.
fn refusal(r: Result<VdiReply, SheepError>) -> Result<VdiReply, SheepError> {
    match r {
        Err(SheepError::Refused { code, message }) => Ok(VdiReply::Refused(code.0, message)),
        other => other,
    }
}
