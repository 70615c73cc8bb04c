//! Attach locks at the block-device front end: which NBD opens are allowed,
//! the sessions each attachment has on this node, fencing, and the
//! live-migration handoff when a source's last connection closes.
//!
//! Export names (the NBD export is a VDI name, as before):
//! - `NAME@a-<16 hex>` opens attachment `a-...` of `NAME` (the name an
//!   attach answer gives, in its libvirt XML). Only the sheep the
//!   attachment was made through serves it; read-only attachments are
//!   served read-only; a pending migration destination is served
//!   read-write beside its source.
//! - `NAME` opens the working VDI directly, unless a read-write attachment
//!   (or a pending one) exists: then the open is refused with a message
//!   naming the holder, so a second VM can never write the disk.
//! - `NAME@TAG` and `NAME@ID` open snapshots, read-only, always.
//!
//! Invariants:
//! - A session whose attachment disappears (detached, released because its
//!   node left, unlocked by an operator), and a direct session of a VDI
//!   that a read-write attachment then claims, is *fenced*: every later
//!   request fails, so a host that lost its lock cannot write any more.
//! - When the last session of an attachment that is the source of a pending
//!   migration closes, the destination takes the lock.
//! - On every change of a VDI's attachments, its volume on this node (if
//!   open) reloads its index and turns coherent while the VDI is attached
//!   on more than one node; this happens before the change is acknowledged
//!   to the name's owner, so when a detach returns every node reads fresh.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use qemu_proto::SdResult;

use crate::cluster::BoxFuture;
use crate::error::SheepError;
use crate::frontend::export::{BlockExport, ExportCatalog, Extent};
use crate::vdi::{AttachMode, AttachState, LockOp, LockState, Volume, Volumes};

/// One open session of a VDI on this node.
struct Session {
    name: String,
    /// The attachment it opened, or `None` for a direct open by name.
    attachment: Option<String>,
    fenced: AtomicBool,
    catalog: Weak<AttachCatalog>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (Some(catalog), Some(id)) = (self.catalog.upgrade(), self.attachment.take()) {
            catalog.closed(self.name.clone(), id);
        }
    }
}

/// The node's block-device catalog with attach locks applied.
pub struct AttachCatalog {
    volumes: Arc<Volumes>,
    local: SocketAddr,
    sessions: Mutex<Vec<Weak<Session>>>,
    this: Weak<AttachCatalog>,
}

impl AttachCatalog {
    /// Wraps `volumes` and starts reacting to lock changes.
    pub fn new(volumes: Arc<Volumes>, local: SocketAddr) -> Arc<Self> {
        let catalog = Arc::new_cyclic(|this| AttachCatalog {
            volumes,
            local,
            sessions: Mutex::new(Vec::new()),
            this: this.clone(),
        });
        let weak = Arc::downgrade(&catalog);
        catalog
            .volumes
            .vdis()
            .set_lock_listener(Arc::new(move |name, state| {
                let weak = weak.clone();
                Box::pin(async move {
                    if let Some(c) = weak.upgrade() {
                        c.changed(&name, &state).await;
                    }
                })
            }));
        catalog
    }

    /// Open sessions per attachment id on this node (for metrics and
    /// tests).
    pub fn session_count(&self) -> usize {
        let mut s = self.sessions.lock().expect("sessions lock");
        s.retain(|w| w.strong_count() > 0);
        s.len()
    }

    async fn open_export(&self, export: &str) -> Result<Arc<dyn BlockExport>, SheepError> {
        let vdis = self.volumes.vdis();
        if let Some((name, id)) = attachment_export(export) {
            let lock = vdis.ledger().lock(name);
            if let Some(att) = lock.get(id) {
                if att.node != self.local {
                    return Err(refused(
                        SdResult::VDI_LOCKED,
                        format!(
                            "attachment {id} of {name} is served by the sheep at {}; connect there",
                            att.node
                        ),
                    ));
                }
                let read_only = att.mode == AttachMode::ReadOnly;
                let volume = self.volumes.open_volume(name).await?;
                volume.set_coherent(lock.shared());
                let session = self.register(name, Some(id.to_string()));
                return Ok(Arc::new(Attached {
                    volume,
                    session,
                    read_only,
                }));
            }
            // Not an attachment (any more): perhaps a snapshot tag.
            return match self.volumes.open_volume(export).await {
                Err(e) if e.result() == SdResult::NO_TAG => Err(refused(
                    SdResult::VDI_NOT_LOCKED,
                    format!("{name} has no attachment {id}: it was detached or released"),
                )),
                Err(e) => Err(e),
                Ok(v) => Ok(v),
            };
        }
        if export.contains('@') {
            // A snapshot: read-only, never locked.
            let v: Arc<dyn BlockExport> = self.volumes.open_volume(export).await?;
            return Ok(v);
        }
        let lock = vdis.ledger().lock(export);
        if let Some(a) = lock.holder().or(lock.pending()) {
            return Err(refused(
                SdResult::VDI_LOCKED,
                format!(
                    "{export} is attached read-write on host {} (attachment {}, through {}); \
                     open it through its attachment, or attach it with migrate_from to migrate",
                    a.host, a.id, a.node
                ),
            ));
        }
        let volume = self.volumes.open_volume(export).await?;
        volume.set_coherent(lock.shared());
        let session = self.register(export, None);
        Ok(Arc::new(Attached {
            volume,
            session,
            read_only: false,
        }))
    }

    fn register(&self, name: &str, attachment: Option<String>) -> Arc<Session> {
        let session = Arc::new(Session {
            name: name.to_string(),
            attachment,
            fenced: AtomicBool::new(false),
            catalog: self.this.clone(),
        });
        let mut all = self.sessions.lock().expect("sessions lock");
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&session));
        session
    }

    /// Sessions of `name` still open.
    fn sessions_of(&self, name: &str) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.name == name)
            .collect()
    }

    /// A session of attachment `id` closed: if it was the last one and the
    /// attachment is the source of a pending migration, hand over.
    fn closed(&self, name: String, id: String) {
        let others = self
            .sessions_of(&name)
            .iter()
            .any(|s| s.attachment.as_deref() == Some(id.as_str()));
        let lock = self.volumes.vdis().ledger().lock(&name);
        let is_source = lock
            .pending()
            .is_some_and(|p| p.state == AttachState::Pending { from: id.clone() });
        if others || !is_source {
            return;
        }
        let vdis = self.volumes.vdis().clone();
        tokio::spawn(async move {
            tracing::info!(name = %name, source = %id, "migration source closed: handing over");
            if let Err(e) = vdis.lock_op(LockOp::SourceClosed { name, id }).await {
                tracing::warn!("handing a migrated VDI over: {e}");
            }
        });
    }

    /// Reacts to a change of `name`'s attachments (see the module docs).
    async fn changed(&self, name: &str, state: &LockState) {
        let claimed = state.holder().is_some() || state.pending().is_some();
        for s in self.sessions_of(name) {
            let lost = match &s.attachment {
                Some(id) => state.get(id).is_none(),
                None => claimed,
            };
            if lost && !s.fenced.swap(true, Ordering::Relaxed) {
                tracing::warn!(name = %name, attachment = ?s.attachment, "fencing an NBD session");
            }
        }
        if let Some(volume) = self.volumes.find(name) {
            if let Err(e) = volume.invalidate().await {
                tracing::debug!(name = %name, "reloading a volume: {e}");
            }
            volume.set_coherent(state.shared());
        }
    }
}

impl ExportCatalog for AttachCatalog {
    fn open(&self, name: &str) -> BoxFuture<'_, Result<Arc<dyn BlockExport>, SheepError>> {
        let name = name.to_string();
        Box::pin(async move { self.open_export(&name).await })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, SheepError>> {
        self.volumes.list()
    }
}

/// Splits `NAME@a-<16 hex>` into the name and the attachment id.
pub fn attachment_export(export: &str) -> Option<(&str, &str)> {
    let (name, id) = export.rsplit_once('@')?;
    let hex = id.strip_prefix("a-")?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty())
        .then_some((name, id))
}

/// The export name of an attachment.
pub fn export_name(name: &str, attachment: &str) -> String {
    format!("{name}@{attachment}")
}

fn refused(code: SdResult, message: String) -> SheepError {
    SheepError::Refused { code, message }
}

/// A volume as one session sees it: read-only for read-only attachments,
/// and refusing everything once fenced.
struct Attached {
    volume: Arc<Volume>,
    session: Arc<Session>,
    read_only: bool,
}

impl Attached {
    fn check(&self) -> Result<(), SheepError> {
        if self.session.fenced.load(Ordering::Relaxed) {
            return Err(refused(
                SdResult::VDI_LOCKED,
                format!(
                    "{} was attached elsewhere or detached: this session is fenced",
                    self.session.name
                ),
            ));
        }
        Ok(())
    }

    fn check_write(&self) -> Result<(), SheepError> {
        self.check()?;
        if self.read_only {
            return Err(SdResult::READONLY.into());
        }
        Ok(())
    }
}

impl BlockExport for Attached {
    fn size(&self) -> u64 {
        self.volume.size()
    }

    fn read_only(&self) -> bool {
        self.read_only || self.volume.read_only()
    }

    fn block_size(&self) -> u32 {
        self.volume.block_size()
    }

    fn read(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, SheepError>> {
        Box::pin(async move {
            self.check()?;
            self.volume.read(offset, len).await
        })
    }

    fn write(&self, offset: u64, data: Bytes, fua: bool) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.check_write()?;
            self.volume.write(offset, data, fua).await
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.check()?;
            self.volume.flush().await
        })
    }

    fn trim(&self, offset: u64, len: u64) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.check_write()?;
            self.volume.trim(offset, len).await
        })
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        fua: bool,
    ) -> BoxFuture<'_, Result<(), SheepError>> {
        Box::pin(async move {
            self.check_write()?;
            self.volume.write_zeroes(offset, len, fua).await
        })
    }

    fn block_status(
        &self,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'_, Result<Vec<Extent>, SheepError>> {
        Box::pin(async move {
            self.check()?;
            self.volume.block_status(offset, len).await
        })
    }
}

/// Attachments per node and mode, for metrics: (holders, pending,
/// read-only).
pub fn count(locks: &[(String, LockState)]) -> (usize, usize, usize) {
    let mut out = (0, 0, 0);
    for (_, s) in locks {
        for a in &s.attachments {
            match (a.mode, &a.state) {
                (AttachMode::ReadOnly, _) => out.2 += 1,
                (_, AttachState::Active) => out.0 += 1,
                (_, AttachState::Pending { .. }) => out.1 += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_exports() {
        assert_eq!(
            attachment_export("vm1@a-0123456789abcdef"),
            Some(("vm1", "a-0123456789abcdef"))
        );
        assert_eq!(
            attachment_export("a@b@a-0123456789abcdef"),
            Some(("a@b", "a-0123456789abcdef"))
        );
        assert_eq!(attachment_export("vm1@a-0123"), None);
        assert_eq!(attachment_export("vm1@gold"), None);
        assert_eq!(attachment_export("vm1"), None);
        assert_eq!(attachment_export("@a-0123456789abcdef"), None);
        assert_eq!(
            export_name("vm1", "a-0123456789abcdef"),
            "vm1@a-0123456789abcdef"
        );
    }
}
