//! The VDI namespace: names to vids, creation and deletion.
//!
//! Sheepdog maps a name to a vid by hashing it (FNV-1a, 24 bits) and probing
//! upwards for a free vid; lookups walk the same chain and read inode
//! headers. Sheepdog orders creates through its coordinator; Sheepfold
//! orders them through placement instead:
//! - The *owner* of a name is the primary replica of the inode object of the
//!   name's hash vid. Every create and delete of that name runs on its owner,
//!   one at a time, so of two simultaneous creates of one name exactly one
//!   succeeds and the other finds the VDI and answers VDI_EXIST.
//! - Different names can probe into the same vid. Before writing an inode the
//!   owner reserves the vid (with the name) on every member of its view, in
//!   that view; a vid or a name already reserved elsewhere is refused, so two
//!   owners never hand out one vid, even while views change.
//! - Then the inode is written to all its replicas, and the vid is committed
//!   in every node's registry.

mod registry;
mod volume;

pub use registry::{RegistrySnapshot, ReserveConflict, VdiMeta, VdiRegistry};
pub use volume::{Volume, Volumes};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use qemu_proto::hash::sd_hash_vdi;
use qemu_proto::inode::{self, InodeHeader};
use qemu_proto::{ObjectId, SdResult};
use serde::{Deserialize, Serialize};

use crate::cluster::View;
use crate::error::SheepError;
use crate::format::FormatState;
use crate::gateway::Gateway;
use crate::peer::Endpoint;

/// How many objects a delete removes at once.
const DELETE_PARALLELISM: usize = 16;

/// A request to create a VDI (NEW_VDI).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateVdi {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Copies (0: the cluster default).
    pub copies: u8,
    /// log2 object size (0: the cluster default).
    pub block_size_shift: u8,
}

/// Messages of the VDI namespace between sheep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VdiRpc {
    /// Create a VDI; sent to the name's owner.
    Create(CreateVdi),
    /// Delete a VDI; sent to the name's owner.
    Delete {
        /// Name.
        name: String,
        /// Snapshot tag ("" for none).
        tag: String,
        /// Snapshot id (0 for the working VDI).
        snapid: u32,
    },
    /// Look a name up; sent to the owner when the local registry misses.
    Lookup {
        /// Name.
        name: String,
        /// Snapshot tag.
        tag: String,
        /// Snapshot id.
        snapid: u32,
    },
    /// Hold a vid for a create of `name`.
    Reserve {
        /// The vid.
        vid: u32,
        /// The name being created.
        name: String,
    },
    /// Drop a reservation.
    Release {
        /// The vid.
        vid: u32,
    },
    /// A VDI was created.
    Commit {
        /// The vid.
        vid: u32,
        /// Its copies and object size.
        meta: VdiMeta,
    },
    /// A VDI was deleted.
    MarkDeleted {
        /// The vid.
        vid: u32,
    },
    /// Send your registry (for merging).
    Registry,
}

/// Successful answers to [`VdiRpc`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VdiReply {
    /// Done.
    Done,
    /// The vid of a created, deleted or found VDI.
    Vid(u32),
    /// A reservation was refused.
    Conflict(ReserveConflict),
    /// The node's registry.
    Registry(RegistrySnapshot),
}

/// VDI operations of one node.
pub struct VdiService {
    local: SocketAddr,
    gateway: Arc<Gateway>,
    registry: Arc<VdiRegistry>,
    format: Arc<FormatState>,
    owner_lock: tokio::sync::Mutex<()>,
}

impl VdiService {
    /// Assembles the service.
    pub fn new(
        local: SocketAddr,
        gateway: Arc<Gateway>,
        registry: Arc<VdiRegistry>,
        format: Arc<FormatState>,
    ) -> Self {
        VdiService {
            local,
            gateway,
            registry,
            format,
            owner_lock: tokio::sync::Mutex::new(()),
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

    /// Finds the vid of `name` (and a snapshot by tag or id).
    pub async fn lookup(
        &self,
        name: &str,
        tag: &str,
        snapid: u32,
    ) -> Result<(u32, InodeHeader), SheepError> {
        match self.lookup_local(name, tag, snapid).await {
            Err(SheepError::Result(r)) if r == SdResult::NO_VDI => {}
            other => return other,
        }
        // Our registry may lag behind a create that just happened; the
        // owner's is authoritative for its names.
        let rpc = VdiRpc::Lookup {
            name: name.to_string(),
            tag: tag.to_string(),
            snapid,
        };
        let vid = match self.on_owner(name, rpc).await? {
            VdiReply::Vid(vid) => vid,
            _ => return Err(SdResult::NO_VDI.into()),
        };
        Ok((vid, self.read_header(vid).await?))
    }

    /// Looks a name up along its probe chain in this node's registry.
    async fn lookup_local(
        &self,
        name: &str,
        tag: &str,
        snapid: u32,
    ) -> Result<(u32, InodeHeader), SheepError> {
        let mut name_exists = false;
        for vid in self.registry.chain(sd_hash_vdi(name)).into_iter().rev() {
            let header = match self.read_header(vid).await {
                Ok(h) => h,
                Err(e) if e.is_no_object() => continue,
                Err(e) => return Err(e),
            };
            if header.name != name {
                continue;
            }
            if tag.is_empty() && snapid == 0 {
                if header.is_snapshot() {
                    // Only snapshots remain: the working VDI was deleted.
                    return Err(SdResult::NO_VDI.into());
                }
                return Ok((vid, header));
            }
            name_exists = true;
            if header.is_snapshot()
                && ((!tag.is_empty() && header.tag == tag)
                    || (snapid != 0 && header.snap_id == snapid))
            {
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

    /// Creates a VDI (on the name's owner) and returns its vid.
    pub async fn create(&self, req: CreateVdi) -> Result<u32, SheepError> {
        match self
            .on_owner(&req.name.clone(), VdiRpc::Create(req))
            .await?
        {
            VdiReply::Vid(vid) => Ok(vid),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Deletes a VDI and frees its objects (on the name's owner).
    pub async fn delete(&self, name: &str, tag: &str, snapid: u32) -> Result<u32, SheepError> {
        let rpc = VdiRpc::Delete {
            name: name.to_string(),
            tag: tag.to_string(),
            snapid,
        };
        match self.on_owner(name, rpc).await? {
            VdiReply::Vid(vid) => Ok(vid),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Runs `rpc` on the owner of `name`: here, or forwarded in our view.
    async fn on_owner(&self, name: &str, rpc: VdiRpc) -> Result<VdiReply, SheepError> {
        let owner_oid = ObjectId::inode(sd_hash_vdi(name));
        self.gateway
            .settle(|view, placement| {
                let rpc = rpc.clone();
                async move {
                    let owner = placement.primary(owner_oid).ok_or(SheepError::NoStorage)?;
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
            VdiRpc::Create(req) => self.create_as_owner(view, req).await.map(VdiReply::Vid),
            VdiRpc::Delete { name, tag, snapid } => self
                .delete_as_owner(view, &name, &tag, snapid)
                .await
                .map(VdiReply::Vid),
            VdiRpc::Lookup { name, tag, snapid } => self
                .lookup_local(&name, &tag, snapid)
                .await
                .map(|(vid, _)| VdiReply::Vid(vid)),
            VdiRpc::Reserve { vid, name } => Ok(match self.registry.reserve(vid, &name) {
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
        }
    }

    async fn create_as_owner(&self, view: &View, req: CreateVdi) -> Result<u32, SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        let config = self.format.config().ok_or(SdResult::WAIT_FOR_FORMAT)?;
        let copies = if req.copies == 0 {
            config.copies
        } else {
            req.copies
        };
        let shift = if req.block_size_shift == 0 {
            config.block_size_shift
        } else {
            req.block_size_shift
        };
        if req.size > inode::max_vdi_size(shift) || copies == 0 {
            return Err(SdResult::INVALID_PARMS.into());
        }
        match self.lookup_local(&req.name, "", 0).await {
            Ok(_) => return Err(SdResult::VDI_EXIST.into()),
            Err(SheepError::Result(r)) if r == SdResult::NO_VDI => {}
            Err(e) => return Err(e),
        }
        let vid = self.reserve_vid(view, &req.name).await?;
        let header = InodeHeader {
            name: req.name.clone(),
            create_time: crate::util::sd_now(),
            vdi_size: req.size,
            nr_copies: copies,
            block_size_shift: shift,
            snap_id: 1,
            vdi_id: vid,
            ..InodeHeader::default()
        };
        let meta = VdiMeta {
            copies,
            block_size_shift: shift,
        };
        let written = self
            .gateway
            .create(
                ObjectId::inode(vid),
                0,
                Bytes::from(header.encode()),
                usize::from(copies),
                true,
            )
            .await;
        if let Err(e) = written {
            self.broadcast(view, VdiRpc::Release { vid }).await;
            return Err(e);
        }
        self.registry.commit(vid, meta);
        self.persist_registry();
        self.broadcast(view, VdiRpc::Commit { vid, meta }).await;
        tracing::info!(name = %req.name, vid = format_args!("{vid:x}"), "created VDI");
        Ok(vid)
    }

    /// Picks the first free vid along the name's chain and reserves it on
    /// every member of `view`.
    async fn reserve_vid(&self, view: &View, name: &str) -> Result<u32, SheepError> {
        let mut start = sd_hash_vdi(name);
        for _ in 0..1000 {
            let vid = self.registry.free_vid(start).ok_or(SdResult::FULL_VDI)?;
            let rpc = VdiRpc::Reserve {
                vid,
                name: name.to_string(),
            };
            let mut conflict = None;
            for m in &view.members {
                let reply = if m.addr == self.local {
                    Ok(match self.registry.reserve(vid, name) {
                        Ok(()) => VdiReply::Done,
                        Err(c) => VdiReply::Conflict(c),
                    })
                } else {
                    self.gateway
                        .peers()
                        .request::<_, VdiReply>(m.addr, view.id, Endpoint::Vdi, &rpc, Bytes::new())
                        .await
                        .map_err(SheepError::from)
                        .and_then(|(r, _)| r.map_err(SheepError::from_result))
                };
                match reply {
                    Ok(VdiReply::Conflict(c)) => conflict = Some(Ok(c)),
                    Ok(_) => continue,
                    Err(e) => conflict = Some(Err(e)),
                }
                break;
            }
            match conflict {
                None => return Ok(vid),
                Some(outcome) => {
                    self.broadcast(view, VdiRpc::Release { vid }).await;
                    match outcome? {
                        ReserveConflict::VidTaken => start = vid.wrapping_add(1).max(1),
                        // Another owner (in another view) is creating this
                        // name; let the views settle and decide again.
                        ReserveConflict::NameBusy => return Err(SdResult::AGAIN.into()),
                    }
                }
            }
        }
        Err(SdResult::FULL_VDI.into())
    }

    async fn delete_as_owner(
        &self,
        view: &View,
        name: &str,
        tag: &str,
        snapid: u32,
    ) -> Result<u32, SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        let (vid, header) = self.lookup_local(name, tag, snapid).await?;
        let copies = usize::from(header.nr_copies);
        let count = header.nr_objects() as u32;
        let index = self
            .gateway
            .read(
                ObjectId::inode(vid),
                inode::DATA_VDI_ID_OFFSET,
                count * 4,
                copies,
            )
            .await?;
        // Tombstone first: if we crash midway, the VDI is gone for clients
        // and only unreferenced objects are left behind, never a VDI whose
        // objects vanish under it.
        self.registry.mark_deleted(vid);
        self.persist_registry();
        self.broadcast(view, VdiRpc::MarkDeleted { vid }).await;
        self.gateway.remove(ObjectId::inode(vid), copies).await?;
        let owned: Vec<u32> = inode::decode_data_vdi_ids(&index)
            .into_iter()
            .enumerate()
            .filter(|(_, owner)| *owner == vid)
            .map(|(idx, _)| idx as u32)
            .collect();
        let mut removals = futures::stream::iter(owned)
            .map(|idx| self.gateway.remove(ObjectId::data(vid, idx), copies))
            .buffer_unordered(DELETE_PARALLELISM);
        while let Some(r) = removals.next().await {
            r?;
        }
        tracing::info!(%name, vid = format_args!("{vid:x}"), "deleted VDI");
        Ok(vid)
    }

    /// Sends `rpc` to every other member of `view`, best effort: a member
    /// that misses it learns the same facts when registries are merged.
    async fn broadcast(&self, view: &View, rpc: VdiRpc) {
        if let VdiRpc::Release { vid } = &rpc {
            self.registry.release(*vid);
        }
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
    }

    fn persist_registry(&self) {
        if let Err(e) = self.registry.persist() {
            tracing::error!("persisting the VDI registry: {e}");
        }
    }
}
