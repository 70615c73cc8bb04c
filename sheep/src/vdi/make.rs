//! Making VDIs: a new VDI, a clone of a snapshot, a snapshot of a working
//! VDI, a rebase. All run on the owner that orders them (see the module
//! above) under its lock, and end the same way: reserve a vid everywhere,
//! write the inode to its replicas, commit everywhere.

use bytes::Bytes;
use qemu_proto::hash::sd_hash_vdi;
use qemu_proto::inode::{self, InodeHeader};
use qemu_proto::{ObjectId, SdResult};

use super::{Claim, NewVdi, ReserveConflict, VdiMeta, VdiRef, VdiReply, VdiRpc, VdiService};
use crate::cluster::View;
use crate::error::SheepError;
use crate::peer::Endpoint;

impl VdiService {
    /// Dispatches NEW_VDI as Sheepdog does, on `snapid` and `base`.
    /// With `tag`, a snapshot of the working VDI only (never a rebase),
    /// under a tag no snapshot of that name has yet, written into the
    /// snapshot's inode.
    pub(super) async fn make(
        &self,
        view: &View,
        req: NewVdi,
        tag: Option<String>,
    ) -> Result<u32, SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        match (req.snapid, req.base) {
            (0, 0) => self.make_new(view, req).await,
            (0, base) => self.make_clone(view, req, base).await,
            (_, base) => self.make_snapshot(view, req, base, tag).await,
        }
    }

    async fn make_new(&self, view: &View, req: NewVdi) -> Result<u32, SheepError> {
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
        let snap_id = self.next_snap_id(&req.name).await?;
        let header = InodeHeader {
            name: req.name.clone(),
            create_time: crate::util::sd_now(),
            vdi_size: req.size,
            nr_copies: copies,
            block_size_shift: shift,
            snap_id,
            ..InodeHeader::default()
        };
        self.install(view, header, Vec::new(), None, None).await
    }

    /// A clone of snapshot `base` (also dog's rollback and QEMU's branch,
    /// which delete the working VDI and clone a snapshot under its name).
    async fn make_clone(&self, view: &View, req: NewVdi, base: u32) -> Result<u32, SheepError> {
        let meta = self.registry.meta(base).ok_or(SdResult::NO_BASE_VDI)?;
        if !meta.snapshot {
            return Err(SdResult::INVALID_PARMS.into());
        }
        let base_header = self.read_header(base).await?;
        if req.size != 0 && req.size < base_header.vdi_size {
            return Err(SdResult::INVALID_PARMS.into());
        }
        let size = req.size.max(base_header.vdi_size);
        if size > inode::max_vdi_size(base_header.block_size_shift) {
            return Err(SdResult::INVALID_PARMS.into());
        }
        let index = self.read_index(base, &base_header).await?;
        let header = InodeHeader {
            name: req.name.clone(),
            create_time: crate::util::sd_now(),
            vdi_size: size,
            nr_copies: base_header.nr_copies,
            copy_policy: base_header.copy_policy,
            block_size_shift: base_header.block_size_shift,
            snap_id: self.next_snap_id(&req.name).await?,
            parent_vdi_id: base,
            ..InodeHeader::default()
        };
        self.install(view, header, index, Some(meta.family), None)
            .await
    }

    /// A snapshot: the working VDI keeps its vid and becomes read-only; a
    /// new working VDI, sharing every object, takes its place. With `base`
    /// other than the working VDI (a rebase), the new working VDI shares
    /// `base`'s objects instead.
    async fn make_snapshot(
        &self,
        view: &View,
        req: NewVdi,
        base: u32,
        tag: Option<String>,
    ) -> Result<u32, SheepError> {
        let name_only = VdiRef {
            name: req.name.clone(),
            tag: String::new(),
            snapid: 0,
        };
        let (working, working_header) = self.lookup_local(&name_only).await?;
        if let Some(tag) = &tag {
            let refuse = |code, message| SheepError::Refused { code, message };
            if base != working {
                let why = format!("{} changed while it was being snapshotted", req.name);
                return Err(refuse(SdResult::AGAIN, why));
            }
            let tagged = VdiRef {
                name: req.name.clone(),
                tag: tag.clone(),
                snapid: 0,
            };
            if self.lookup_local(&tagged).await.is_ok() {
                let why = format!("{} already has a snapshot tagged {tag:?}", req.name);
                return Err(refuse(SdResult::VDI_EXIST, why));
            }
        }
        let working_meta = self.registry.meta(working).ok_or(SdResult::NO_VDI)?;
        let (source, source_header) = if base == working {
            (working, working_header.clone())
        } else {
            let m = self.registry.meta(base).ok_or(SdResult::NO_BASE_VDI)?;
            if m.family != working_meta.family {
                return Err(SdResult::INVALID_PARMS.into());
            }
            (base, self.read_header(base).await?)
        };
        let index = self.read_index(source, &source_header).await?;
        let header = InodeHeader {
            name: req.name.clone(),
            create_time: crate::util::sd_now(),
            vdi_size: working_header.vdi_size.max(source_header.vdi_size),
            nr_copies: working_header.nr_copies,
            copy_policy: working_header.copy_policy,
            block_size_shift: working_header.block_size_shift,
            snap_id: working_header.snap_id + 1,
            parent_vdi_id: source,
            ..InodeHeader::default()
        };
        let frozen = VdiMeta {
            snapshot: true,
            generation: working_meta.generation + 1,
            ..working_meta.clone()
        };
        let vid = self
            .install(
                view,
                header,
                index,
                Some(working_meta.family),
                Some((working, frozen)),
            )
            .await?;
        // Stamp the old working VDI's inode as a snapshot. Every node has
        // already been told it is read-only.
        let mut snap_header = working_header;
        snap_header.snap_ctime = crate::util::sd_now();
        if let Some(tag) = tag {
            snap_header.tag = tag;
        }
        self.gateway
            .write(
                ObjectId::inode(working),
                0,
                Bytes::from(snap_header.encode()),
                usize::from(snap_header.nr_copies),
                true,
            )
            .await?;
        tracing::info!(name = %req.name, snapshot = format_args!("{working:x}"),
            working = format_args!("{vid:x}"), "snapshot taken");
        Ok(vid)
    }

    /// The snap_id for a new working VDI of `name`: one more than any VDI
    /// of that name still has (1 for a new name).
    async fn next_snap_id(&self, name: &str) -> Result<u32, SheepError> {
        let mut highest = 0;
        for vid in self.registry.chain(sd_hash_vdi(name)) {
            match self.read_header(vid).await {
                Ok(h) if h.name == name => highest = highest.max(h.snap_id),
                Ok(_) => {}
                Err(e) if e.is_no_object() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(highest + 1)
    }

    /// Reserves a vid for `header.name`, writes the inode (header and
    /// `index`) to its replicas, and commits it everywhere, together with
    /// `replaced` (the old working VDI turned snapshot) if any. `family` is
    /// the family joined (`None`: a new family rooted at the new vid).
    async fn install(
        &self,
        view: &View,
        mut header: InodeHeader,
        index: Vec<u32>,
        family: Option<u32>,
        replaced: Option<(u32, VdiMeta)>,
    ) -> Result<u32, SheepError> {
        let vid = self
            .reserve_vid(view, &header.name, family, replaced.as_ref().map(|r| r.0))
            .await?;
        header.vdi_id = vid;
        let mut content = header.encode();
        content.extend_from_slice(&inode::encode_data_vdi_ids(&index));
        let copies = usize::from(header.nr_copies);
        let written = self
            .gateway
            .create(ObjectId::inode(vid), 0, Bytes::from(content), copies, true)
            .await;
        if let Err(e) = written {
            self.registry.release(vid);
            self.broadcast(view, VdiRpc::Release { vid }).await;
            return Err(e);
        }
        let meta = VdiMeta {
            name: header.name.clone(),
            copies: header.nr_copies,
            block_size_shift: header.block_size_shift,
            snapshot: false,
            family: family.unwrap_or(vid),
            generation: 1,
        };
        // The old working VDI turns read-only in the same round as its
        // successor appears, so no node sees two working VDIs of one name.
        let mut commits = vec![(vid, meta)];
        commits.extend(replaced);
        for (v, m) in commits {
            self.registry.commit(v, m.clone());
            self.broadcast(view, VdiRpc::Commit { vid: v, meta: m })
                .await;
        }
        self.persist_registry();
        tracing::info!(name = %header.name, vid = format_args!("{vid:x}"), "made VDI");
        Ok(vid)
    }

    /// Picks the first free vid along the name's chain and reserves it on
    /// every member of `view`.
    async fn reserve_vid(
        &self,
        view: &View,
        name: &str,
        family: Option<u32>,
        replaces: Option<u32>,
    ) -> Result<u32, SheepError> {
        let mut start = sd_hash_vdi(name);
        for _ in 0..1000 {
            let vid = self.registry.free_vid(start).ok_or(SdResult::FULL_VDI)?;
            let claim = Claim {
                vid,
                name: name.to_string(),
                family: family.unwrap_or(vid),
                replaces,
            };
            match self.reserve_everywhere(view, &claim).await {
                Ok(()) => return Ok(vid),
                Err(outcome) => {
                    self.registry.release(vid);
                    self.broadcast(view, VdiRpc::Release { vid }).await;
                    match outcome? {
                        ReserveConflict::VidTaken => start = vid.wrapping_add(1).max(1),
                        ReserveConflict::NameExists => return Err(SdResult::VDI_EXIST.into()),
                        // Another owner (in another view) is making this
                        // name; let the views settle and decide again.
                        ReserveConflict::NameBusy => return Err(SdResult::AGAIN.into()),
                    }
                }
            }
        }
        Err(SdResult::FULL_VDI.into())
    }

    /// Reserves `claim` here and on every member of `view` (in that view).
    /// `Err(Ok(conflict))` is a refusal, `Err(Err(e))` a failure.
    async fn reserve_everywhere(
        &self,
        view: &View,
        claim: &Claim,
    ) -> Result<(), Result<ReserveConflict, SheepError>> {
        self.registry.reserve(claim).map_err(Ok)?;
        let rpc = VdiRpc::Reserve(claim.clone());
        let calls = view
            .members
            .iter()
            .filter(|m| m.addr != self.local)
            .map(|m| {
                let rpc = rpc.clone();
                async move {
                    self.gateway
                        .peers()
                        .request::<_, VdiReply>(m.addr, view.id, Endpoint::Vdi, &rpc, Bytes::new())
                        .await
                }
            });
        for r in futures::future::join_all(calls).await {
            match r {
                Ok((Ok(VdiReply::Conflict(c)), _)) => return Err(Ok(c)),
                Ok((Ok(_), _)) => {}
                Ok((Err(code), _)) => return Err(Err(SheepError::from_result(code))),
                Err(e) => return Err(Err(e.into())),
            }
        }
        Ok(())
    }
}
