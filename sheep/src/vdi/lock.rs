//! Attach locks: which hosts have a VDI attached, ordered without a
//! coordinator.
//!
//! Rules (the README's "Attach locks" section says the same for operators):
//! - A VDI name has at most one *active read-write* attachment (the lock
//!   holder), any number of read-only ones, and during a live migration one
//!   *pending* read-write attachment whose source is the holder.
//! - Every change of a name's attachments runs on the name's owner (the
//!   primary replica of the inode object of the name's hash, which also
//!   orders creates), one at a time. The owner reads the entry from every
//!   member of its view, keeps the newest, applies the change and writes the
//!   result to every member, all in that view: a member in another view
//!   refuses, and the change is retried once views agree. So every member
//!   of the view holds the current entry, and a new owner (after the old one
//!   died) starts from it.
//! - The pending destination takes the lock when the source is detached,
//!   or when the last NBD connection of the source closes (what QEMU's
//!   source does once a migration completes).
//! - An attachment belongs to the sheep it was made through, which serves
//!   its NBD export. When that sheep has been out of the view for the lock
//!   grace period, the name's owner releases its attachments (a pending
//!   destination on a live node then takes the lock).
//! - `dog vdi lock unlock` releases every attachment of a VDI.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytes::Bytes;
use qemu_proto::hash::sd_hash_vdi;
use qemu_proto::{ObjectId, SdResult};
use serde::{Deserialize, Serialize};

use super::ledger::{AttachMode, AttachState, Attachment, LedgerDelta, LockState, Versioned};
use super::{VdiRef, VdiReply, VdiRpc, VdiService};
use crate::cluster::View;
use crate::error::SheepError;
use crate::peer::Endpoint;

/// A change of a VDI name's attachments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Attach `attachment` (its id drawn by the node that asks).
    Attach {
        /// The VDI name.
        name: String,
        /// The new attachment; `state` says whether it is a migration
        /// destination.
        attachment: Attachment,
    },
    /// Detach one attachment.
    Detach {
        /// The VDI name.
        name: String,
        /// The attachment id.
        id: String,
    },
    /// The last NBD connection of attachment `id` closed: if it is the
    /// source of a pending migration, the destination takes the lock.
    SourceClosed {
        /// The VDI name.
        name: String,
        /// The attachment id.
        id: String,
    },
    /// These nodes left the cluster: release their attachments.
    ReleaseNodes {
        /// The VDI name.
        name: String,
        /// The departed nodes.
        nodes: Vec<SocketAddr>,
    },
    /// Release every attachment (`dog vdi lock unlock`).
    Unlock {
        /// The VDI name.
        name: String,
    },
}

impl LockOp {
    /// The VDI name it changes.
    pub fn name(&self) -> &str {
        match self {
            LockOp::Attach { name, .. }
            | LockOp::Detach { name, .. }
            | LockOp::SourceClosed { name, .. }
            | LockOp::ReleaseNodes { name, .. }
            | LockOp::Unlock { name } => name,
        }
    }
}

/// Why a lock change was refused; each maps to a result code and a message
/// for people.
fn refuse(code: SdResult, message: String) -> SheepError {
    SheepError::Refused { code, message }
}

/// Applies `op` to `state` (a pure function: the owner calls it between
/// reading and writing the entry).
pub fn apply(state: &LockState, op: &LockOp) -> Result<LockState, SheepError> {
    let mut next = state.clone();
    match op {
        LockOp::Attach { name, attachment } => {
            if next.get(&attachment.id).is_some() {
                return Ok(next);
            }
            if attachment.mode == AttachMode::ReadWrite {
                match (&attachment.state, next.holder()) {
                    (AttachState::Active, Some(h)) => {
                        return Err(refuse(
                            SdResult::VDI_LOCKED,
                            format!(
                                "{name} is attached read-write on host {} (attachment {}, \
                                 through {}); detach it first, or attach with migrate_from \
                                 set to that attachment to migrate",
                                h.host, h.id, h.node
                            ),
                        ))
                    }
                    (AttachState::Pending { from }, holder) => {
                        if holder.is_none_or(|h| &h.id != from) {
                            return Err(refuse(
                                SdResult::VDI_NOT_LOCKED,
                                format!(
                                    "{name} has no read-write attachment {from} to migrate from"
                                ),
                            ));
                        }
                        if let Some(p) = next.pending() {
                            return Err(refuse(
                                SdResult::VDI_LOCKED,
                                format!(
                                    "a migration of {name} to host {} (attachment {}) is \
                                     already pending",
                                    p.host, p.id
                                ),
                            ));
                        }
                    }
                    (AttachState::Active, None) => {}
                }
            } else if attachment.state != AttachState::Active {
                return Err(refuse(
                    SdResult::INVALID_PARMS,
                    "only a read-write attachment can be a migration destination".into(),
                ));
            }
            next.attachments.push(attachment.clone());
        }
        LockOp::Detach { name, id } => {
            if next.get(id).is_none() {
                return Err(refuse(
                    SdResult::VDI_NOT_LOCKED,
                    format!("{name} has no attachment {id}"),
                ));
            }
            remove_and_promote(&mut next, |a| &a.id == id);
        }
        LockOp::SourceClosed { id, .. } => {
            let is_source = next
                .pending()
                .is_some_and(|p| p.state == AttachState::Pending { from: id.clone() });
            if is_source {
                remove_and_promote(&mut next, |a| &a.id == id);
            }
        }
        LockOp::ReleaseNodes { nodes, .. } => {
            remove_and_promote(&mut next, |a| nodes.contains(&a.node));
        }
        LockOp::Unlock { .. } => next.attachments.clear(),
    }
    Ok(next)
}

/// Removes the attachments `gone` selects; if the holder went and its
/// migration destination stays, the destination becomes the holder.
fn remove_and_promote(state: &mut LockState, gone: impl Fn(&Attachment) -> bool) {
    let holder_gone = state.holder().is_some_and(&gone);
    state.attachments.retain(|a| !gone(a));
    if holder_gone {
        if let Some(p) = state
            .attachments
            .iter_mut()
            .find(|a| matches!(a.state, AttachState::Pending { .. }))
        {
            p.state = AttachState::Active;
        }
    }
}

/// A fresh attachment id: `a-` and 16 hex digits.
pub fn new_attachment_id() -> String {
    format!("a-{:016x}", rand::random::<u64>())
}

impl VdiService {
    /// The replicated table of attachments and request answers.
    pub fn ledger(&self) -> &std::sync::Arc<super::Ledger> {
        &self.ledger
    }

    /// Changes a name's attachments on its owner; returns the new state.
    /// Attaching needs the working VDI to exist.
    pub async fn lock_op(&self, op: LockOp) -> Result<LockState, SheepError> {
        if let LockOp::Attach { name, .. } = &op {
            self.lookup(&VdiRef {
                name: name.clone(),
                tag: String::new(),
                snapid: 0,
            })
            .await?;
        }
        let key = ObjectId::inode(sd_hash_vdi(op.name()));
        match self.on_owner(key, VdiRpc::Lock(op)).await? {
            VdiReply::Lock(state) => Ok(state),
            VdiReply::Refused(code, message) => Err(refuse(SdResult(code), message)),
            _ => Err(SdResult::SYSTEM_ERROR.into()),
        }
    }

    /// Runs a lock change as the name's owner (see the module docs).
    pub(super) async fn lock_as_owner(
        &self,
        view: &View,
        op: LockOp,
    ) -> Result<LockState, SheepError> {
        let _one_at_a_time = self.lock_lock.lock().await;
        let name = op.name().to_string();
        let current = self.collect_lock(view, &name).await?;
        let next = apply(&current.value, &op)?;
        if next == current.value {
            return Ok(next);
        }
        let entry = Versioned {
            generation: current.generation + 1,
            stamp: rand::random(),
            value: next.clone(),
        };
        let delta = LedgerDelta {
            locks: vec![(name.clone(), entry)],
            requests: Vec::new(),
        };
        self.put_everywhere(view, delta).await?;
        tracing::info!(name = %name, attachments = next.attachments.len(), ?op, "attachments changed");
        Ok(next)
    }

    /// The newest lock entry of `name` among every member of `view`.
    async fn collect_lock(
        &self,
        view: &View,
        name: &str,
    ) -> Result<Versioned<LockState>, SheepError> {
        let mut best = self.ledger.lock_entry(name);
        let rpc = VdiRpc::LedgerGet {
            names: vec![name.to_string()],
        };
        let calls = view
            .members
            .iter()
            .filter(|m| m.addr != self.local)
            .map(|m| self.call_in_view(view, m.addr, &rpc));
        for r in futures::future::join_all(calls).await {
            if let VdiReply::Ledger(delta) = r? {
                for (n, e) in delta.locks {
                    if n == name && (e.generation, e.stamp) > (best.generation, best.stamp) {
                        best = e;
                    }
                }
            }
        }
        Ok(best)
    }

    /// Merges `delta` here and on every member of `view`; fails (to be
    /// retried in a settled view) unless every member took it.
    pub(super) async fn put_everywhere(
        &self,
        view: &View,
        delta: LedgerDelta,
    ) -> Result<(), SheepError> {
        let rpc = VdiRpc::LedgerPut(delta.clone());
        let calls = view
            .members
            .iter()
            .filter(|m| m.addr != self.local)
            .map(|m| self.call_in_view(view, m.addr, &rpc));
        let results = futures::future::join_all(calls).await;
        // Apply here even if a peer failed: the entry is newer than ours
        // either way, and the retry re-reads it.
        self.apply_ledger(delta).await;
        for r in results {
            r?;
        }
        Ok(())
    }

    /// Merges entries into this node's ledger and lets the listeners
    /// (open volumes, NBD sessions) react before returning, so that when a
    /// lock change is acknowledged every member has acted on it.
    pub(super) async fn apply_ledger(&self, delta: LedgerDelta) {
        let changed = self.ledger.merge(&delta);
        if changed.is_empty() {
            return;
        }
        let listener = self.lock_listener.get().cloned();
        if let Some(listener) = listener {
            for name in changed {
                let state = self.ledger.lock(&name);
                listener(name, state).await;
            }
        }
    }

    /// Installs the code that reacts to changes of attachments on this
    /// node (set once, by the front ends).
    pub fn set_lock_listener(&self, listener: LockListener) {
        let _ = self.lock_listener.set(listener);
    }

    /// Tells every member that `name`'s VDI changed shape (resized, made
    /// anew): open volumes reload it. Best effort.
    pub async fn announce_change(&self, name: &str) {
        let (view, _) = self.gateway.current();
        let rpc = VdiRpc::Changed {
            name: name.to_string(),
        };
        self.broadcast(&view, rpc).await;
        self.notify_changed(name).await;
    }

    pub(super) async fn notify_changed(&self, name: &str) {
        let listener = self.lock_listener.get().cloned();
        if let Some(listener) = listener {
            listener(name.to_string(), self.ledger.lock(name)).await;
        }
    }

    /// Sends a VDI message to `addr` in `view`.
    async fn call_in_view(
        &self,
        view: &View,
        addr: SocketAddr,
        rpc: &VdiRpc,
    ) -> Result<VdiReply, SheepError> {
        let (rep, _) = self
            .gateway
            .peers()
            .request::<_, VdiReply>(addr, view.id, Endpoint::Vdi, rpc, Bytes::new())
            .await?;
        rep.map_err(SheepError::from_result)
    }

    /// Stores the answer to an idempotent request here and on every member
    /// (best effort: a member that misses it merges it when it next pulls
    /// our ledger).
    pub async fn share_request(&self, key: &str, record: super::RequestRecord) {
        let delta = LedgerDelta {
            locks: Vec::new(),
            requests: vec![(
                key.to_string(),
                Versioned {
                    generation: 1,
                    stamp: rand::random(),
                    value: record,
                },
            )],
        };
        self.ledger.merge(&delta);
        let (view, _) = self.gateway.current();
        self.broadcast(&view, VdiRpc::LedgerPut(delta)).await;
    }

    /// Merges a peer's whole ledger into ours.
    pub async fn pull_ledger(&self, peer: SocketAddr) {
        let r = self
            .gateway
            .peers()
            .request::<_, VdiReply>(peer, 0, Endpoint::Vdi, &VdiRpc::LedgerAll, Bytes::new())
            .await;
        if let Ok((Ok(VdiReply::Ledger(delta)), _)) = r {
            self.apply_ledger(delta).await;
        }
    }

    /// Releases the attachments made through nodes outside the view, for
    /// the names this node owns. `gone` are the departed nodes whose grace
    /// period is over.
    pub async fn release_departed(&self, gone: &BTreeSet<SocketAddr>) {
        let (_, placement) = self.gateway.current();
        for (name, state) in self.ledger.locked() {
            let nodes: Vec<SocketAddr> = state
                .attachments
                .iter()
                .map(|a| a.node)
                .filter(|n| gone.contains(n))
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let owner = placement.primary(ObjectId::inode(sd_hash_vdi(&name)));
            if owner != Some(self.local) {
                continue;
            }
            tracing::warn!(name = %name, ?nodes, "releasing the attachments of departed nodes");
            if let Err(e) = self.lock_op(LockOp::ReleaseNodes { name, nodes }).await {
                tracing::warn!("releasing attachments: {e}");
            }
        }
    }
}

/// Reacts to a change of a name's attachments (or of the VDI itself).
pub type LockListener = std::sync::Arc<
    dyn Fn(String, LockState) -> crate::cluster::BoxFuture<'static, ()> + Send + Sync,
>;

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str, mode: AttachMode, state: AttachState, node: u16) -> Attachment {
        Attachment {
            id: id.into(),
            host: format!("host-{id}"),
            node: SocketAddr::from(([127, 0, 0, 1], node)),
            nbd_port: node + 3809,
            mode,
            state,
            since: 0,
        }
    }

    fn attach(state: &LockState, a: Attachment) -> Result<LockState, SheepError> {
        apply(
            state,
            &LockOp::Attach {
                name: "v".into(),
                attachment: a,
            },
        )
    }

    #[test]
    fn one_writer_many_readers() {
        let rw = |id| att(id, AttachMode::ReadWrite, AttachState::Active, 7000);
        let s = attach(&LockState::default(), rw("a")).unwrap();
        let e = attach(&s, rw("b")).unwrap_err();
        assert_eq!(e.result(), SdResult::VDI_LOCKED);
        assert!(e.to_string().contains("host-a"), "{e}");
        let s = attach(
            &s,
            att("r", AttachMode::ReadOnly, AttachState::Active, 7001),
        )
        .unwrap();
        assert_eq!(s.attachments.len(), 2);
        assert_eq!(
            attach(&s, rw("a")).unwrap(),
            s,
            "repeating an attach is a no-op"
        );
    }

    #[test]
    fn migration_hands_over_on_detach_or_close() {
        let s = attach(
            &LockState::default(),
            att("a", AttachMode::ReadWrite, AttachState::Active, 7000),
        )
        .unwrap();
        let dest = |from: &str| {
            att(
                "b",
                AttachMode::ReadWrite,
                AttachState::Pending { from: from.into() },
                7001,
            )
        };
        assert_eq!(
            attach(&s, dest("zz")).unwrap_err().result(),
            SdResult::VDI_NOT_LOCKED
        );
        let s = attach(&s, dest("a")).unwrap();
        assert_eq!(s.holder().unwrap().id, "a");
        assert_eq!(s.pending().unwrap().id, "b");
        // The destination closing changes nothing; the source closing hands over.
        let closed = |id: &str| LockOp::SourceClosed {
            name: "v".into(),
            id: id.into(),
        };
        assert_eq!(apply(&s, &closed("b")).unwrap(), s);
        let after = apply(&s, &closed("a")).unwrap();
        assert_eq!(after.holder().unwrap().id, "b");
        assert!(after.pending().is_none() && after.attachments.len() == 1);
        let detached = apply(
            &s,
            &LockOp::Detach {
                name: "v".into(),
                id: "a".into(),
            },
        )
        .unwrap();
        assert_eq!(detached, after);
    }

    #[test]
    fn departed_nodes_lose_their_attachments() {
        let s = LockState {
            attachments: vec![
                att("a", AttachMode::ReadWrite, AttachState::Active, 7000),
                att(
                    "b",
                    AttachMode::ReadWrite,
                    AttachState::Pending { from: "a".into() },
                    7001,
                ),
            ],
        };
        let release = |port: u16| LockOp::ReleaseNodes {
            name: "v".into(),
            nodes: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        };
        let s1 = apply(&s, &release(7000)).unwrap();
        assert_eq!(s1.holder().unwrap().id, "b");
        let s2 = apply(&s, &release(7001)).unwrap();
        assert_eq!(s2.holder().unwrap().id, "a");
        assert!(s2.pending().is_none());
        let u = apply(&s, &LockOp::Unlock { name: "v".into() }).unwrap();
        assert!(u.attachments.is_empty());
    }
}
