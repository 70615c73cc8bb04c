//! VDI operations a storage API needs whole, which Sheepdog's dog splits
//! into several client-side steps: a tagged snapshot, a resize, a clone of
//! a snapshot by tag, and a listing with sizes and usage. Snapshots and
//! resizes run on the family's owner (like every change to a family), so
//! two of them never interleave.

use bytes::Bytes;
use qemu_proto::inode::{self, InodeHeader};
use qemu_proto::{ObjectId, SdResult};

use super::{NewVdi, VdiRef, VdiReply, VdiRpc, VdiService};
use crate::cluster::View;
use crate::error::SheepError;

/// Offset of `vdi_size` in the inode header.
const VDI_SIZE_OFFSET: u64 = 536;

/// What a listing says about one VDI (working VDI or snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiInfo {
    /// Its vid.
    pub vid: u32,
    /// The header of its inode.
    pub header: InodeHeader,
    /// Bytes of objects it owns (not shared with an ancestor).
    pub own_bytes: u64,
    /// Bytes of objects it shares with an ancestor.
    pub shared_bytes: u64,
}

fn refused(code: SdResult, message: String) -> SheepError {
    SheepError::Refused { code, message }
}

fn working(name: &str) -> VdiRef {
    VdiRef {
        name: name.to_string(),
        tag: String::new(),
        snapid: 0,
    }
}

impl VdiService {
    /// Snapshots the working VDI `name` under `tag` (which no snapshot of
    /// `name` may have yet). Returns (the snapshot's vid, the new working
    /// vid).
    pub async fn snapshot(&self, name: &str, tag: &str) -> Result<(u32, u32), SheepError> {
        let (vid, header) = self.lookup(&working(name)).await?;
        let req = NewVdi {
            name: name.to_string(),
            size: header.vdi_size,
            copies: header.nr_copies,
            block_size_shift: header.block_size_shift,
            snapid: 1,
            base: vid,
        };
        let key = ObjectId::inode(self.registry.meta(vid).map_or(vid, |m| m.family));
        let rpc = VdiRpc::Snapshot {
            req,
            tag: tag.to_string(),
        };
        match self.on_owner(key, rpc).await? {
            VdiReply::Vid(new) => Ok((vid, new)),
            VdiReply::Refused(code, message) => Err(refused(SdResult(code), message)),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Clones snapshot `tag` of `src` as a new VDI `dst` of at least the
    /// snapshot's size (`size` 0: the same size).
    pub async fn clone_snapshot(
        &self,
        src: &str,
        tag: &str,
        dst: &str,
        size: u64,
    ) -> Result<u32, SheepError> {
        let (snap, _) = self
            .lookup(&VdiRef {
                name: src.to_string(),
                tag: tag.to_string(),
                snapid: 0,
            })
            .await?;
        self.new_vdi(NewVdi {
            name: dst.to_string(),
            size,
            copies: 0,
            block_size_shift: 0,
            snapid: 0,
            base: snap,
        })
        .await
    }

    /// Grows the working VDI `name` to `size` bytes (shrinking is refused,
    /// as in Sheepdog). Runs on the family's owner.
    pub async fn resize(&self, name: &str, size: u64) -> Result<(), SheepError> {
        let (vid, _) = self.lookup(&working(name)).await?;
        let key = ObjectId::inode(self.registry.meta(vid).map_or(vid, |m| m.family));
        let rpc = VdiRpc::Resize {
            name: name.to_string(),
            size,
        };
        match self.on_owner(key, rpc).await? {
            VdiReply::Done => {}
            VdiReply::Refused(code, message) => return Err(refused(SdResult(code), message)),
            _ => return Err(SdResult::SYSTEM_ERROR.into()),
        }
        // Volumes open anywhere must see the new size.
        self.announce_change(name).await;
        Ok(())
    }

    pub(super) async fn resize_as_owner(
        &self,
        _view: &View,
        name: &str,
        size: u64,
    ) -> Result<(), SheepError> {
        let _one_at_a_time = self.owner_lock.lock().await;
        let (vid, header) = self.lookup_local(&working(name)).await?;
        let max = inode::max_vdi_size(header.block_size_shift);
        if size > max {
            return Err(refused(
                SdResult::INVALID_PARMS,
                format!("{size} bytes is larger than the largest VDI ({max} bytes)"),
            ));
        }
        if size < header.vdi_size {
            return Err(refused(
                SdResult::INVALID_PARMS,
                format!(
                    "shrinking VDIs is not supported ({name} has {} bytes)",
                    header.vdi_size
                ),
            ));
        }
        self.gateway
            .write(
                ObjectId::inode(vid),
                VDI_SIZE_OFFSET,
                Bytes::copy_from_slice(&size.to_le_bytes()),
                usize::from(header.nr_copies),
                true,
            )
            .await
    }

    /// Every live VDI (working VDIs and snapshots) with its usage.
    pub async fn list_vdis(&self) -> Result<Vec<VdiInfo>, SheepError> {
        let mut out = Vec::new();
        for vid in self.registry.live_vids() {
            match self.info(vid).await {
                Ok(Some(i)) => out.push(i),
                Ok(None) => {}
                Err(e) if e.is_no_object() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One VDI's listing entry (`None` if its inode says it was deleted).
    pub async fn info(&self, vid: u32) -> Result<Option<VdiInfo>, SheepError> {
        let header = self.read_header(vid).await?;
        if header.is_deleted() {
            return Ok(None);
        }
        let index = self.read_index(vid, &header).await?;
        let size = header.object_size();
        let own = index.iter().filter(|o| **o == vid).count() as u64;
        let shared = index.iter().filter(|o| **o != 0 && **o != vid).count() as u64;
        Ok(Some(VdiInfo {
            vid,
            header,
            own_bytes: own * size,
            shared_bytes: shared * size,
        }))
    }

    /// The working VDI `name`'s listing entry.
    pub async fn info_by_name(&self, name: &str) -> Result<VdiInfo, SheepError> {
        let (vid, _) = self.lookup(&working(name)).await?;
        self.info(vid).await?.ok_or(SdResult::NO_VDI.into())
    }

    /// Refuses to delete the working VDI `name` while it is attached.
    pub(super) fn check_detached(&self, r: &VdiRef) -> Result<(), SheepError> {
        if !r.tag.is_empty() || r.snapid != 0 {
            return Ok(());
        }
        let lock = self.ledger.lock(&r.name);
        match lock.attachments.first() {
            None => Ok(()),
            Some(a) => Err(refused(
                SdResult::VDI_LOCKED,
                format!(
                    "{} is attached on host {} (attachment {}); detach it first",
                    r.name, a.host, a.id
                ),
            )),
        }
    }
}

/// Checks a snapshot tag for the API: non-empty, short enough, and not a
/// number (a number would name a snapshot id).
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("a snapshot tag must not be empty".into());
    }
    if tag.len() >= qemu_proto::consts::SD_MAX_VDI_TAG_LEN || tag.contains('\0') {
        return Err("a snapshot tag must be shorter than 256 bytes, without NUL".into());
    }
    if tag.parse::<u32>().is_ok() {
        return Err("a snapshot tag must not be a number".into());
    }
    Ok(())
}
