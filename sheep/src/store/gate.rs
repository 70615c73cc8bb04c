//! The gate every object access passes: it keeps recovery and client I/O
//! on one object apart, and holds back client I/O on copies that may be
//! stale.
//!
//! - Client reads and writes take an object's lock shared; installing a
//!   recovered copy takes it exclusive, so no write slips in between the
//!   fetch of a fresh copy and its installation (a write that arrives
//!   meanwhile waits and is applied on top).
//! - A node that restarts, or that lost the majority of its cluster (a
//!   partition), may hold copies that missed acknowledged writes. All its
//!   copies are then *unverified*: client I/O on one asks the recovery
//!   engine to verify it first (a priority request) and waits at most
//!   [`CLIENT_WAIT`]; copies verified against the other replicas, or
//!   written by a create since, are served normally.
//!
//! Locks are striped by object id, so memory does not grow with objects.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use qemu_proto::ObjectId;
use tokio::sync::{mpsc, Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::StoreError;

/// How long client I/O waits for an object under recovery before the
/// request fails with a retryable error (the gateway then tries another
/// replica or retries later).
pub const CLIENT_WAIT: Duration = Duration::from_secs(3);

const STRIPES: usize = 1024;

/// Object locks and the set of unverified copies.
pub struct Gate {
    stripes: Vec<std::sync::Arc<RwLock<()>>>,
    unverified: Mutex<HashSet<ObjectId>>,
    /// Mirrors `!unverified.is_empty()`, so the common case (everything
    /// verified) costs client I/O no lock.
    any_unverified: AtomicBool,
    corrupt: Mutex<HashSet<ObjectId>>,
    verified: Notify,
    urgent_tx: mpsc::UnboundedSender<ObjectId>,
    urgent_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectId>>>,
}

/// Shared access to one object (client I/O).
pub type SharedGuard = OwnedRwLockReadGuard<()>;
/// Exclusive access to one object (installing a recovered copy).
pub type ExclusiveGuard = OwnedRwLockWriteGuard<()>;

impl Default for Gate {
    fn default() -> Self {
        let (urgent_tx, urgent_rx) = mpsc::unbounded_channel();
        Gate {
            stripes: (0..STRIPES)
                .map(|_| std::sync::Arc::new(RwLock::new(())))
                .collect(),
            unverified: Mutex::new(HashSet::new()),
            any_unverified: AtomicBool::new(false),
            corrupt: Mutex::new(HashSet::new()),
            verified: Notify::new(),
            urgent_tx,
            urgent_rx: Mutex::new(Some(urgent_rx)),
        }
    }
}

impl Gate {
    fn stripe(&self, oid: ObjectId) -> std::sync::Arc<RwLock<()>> {
        let h = oid.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54;
        self.stripes[h as usize % STRIPES].clone()
    }

    /// Client access: waits (bounded) until the copy is verified and no
    /// recovery is installing it.
    pub async fn client(&self, oid: ObjectId) -> Result<SharedGuard, StoreError> {
        let deadline = tokio::time::Instant::now() + CLIENT_WAIT;
        loop {
            let waiting = self.verified.notified();
            if !self.is_unverified(oid) {
                break;
            }
            self.request(oid);
            if tokio::time::timeout_at(deadline, waiting).await.is_err() {
                return Err(StoreError::Busy(oid));
            }
        }
        tokio::time::timeout_at(deadline, self.stripe(oid).read_owned())
            .await
            .map_err(|_| StoreError::Busy(oid))
    }

    /// Internal access (copies for other nodes, checks): never waits for
    /// verification, only for an installation in progress.
    pub async fn internal(&self, oid: ObjectId) -> SharedGuard {
        self.stripe(oid).read_owned().await
    }

    /// Exclusive access for installing a copy.
    pub async fn exclusive(&self, oid: ObjectId) -> ExclusiveGuard {
        self.stripe(oid).write_owned().await
    }

    /// True while `oid`'s local copy may be stale.
    pub fn is_unverified(&self, oid: ObjectId) -> bool {
        self.any_unverified.load(Ordering::Acquire)
            && self.unverified.lock().expect("gate lock").contains(&oid)
    }

    /// Every unverified copy.
    pub fn unverified(&self) -> Vec<ObjectId> {
        let mut v: Vec<ObjectId> = self
            .unverified
            .lock()
            .expect("gate lock")
            .iter()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// Marks these copies unverified (after a restart or a lost majority).
    pub fn suspect(&self, oids: impl IntoIterator<Item = ObjectId>) {
        let mut set = self.unverified.lock().expect("gate lock");
        set.extend(oids);
        self.any_unverified
            .store(!set.is_empty(), Ordering::Release);
    }

    /// Marks a copy verified and wakes the I/O waiting for it.
    pub fn verified(&self, oid: ObjectId) {
        let mut set = self.unverified.lock().expect("gate lock");
        if set.remove(&oid) {
            self.any_unverified
                .store(!set.is_empty(), Ordering::Release);
            drop(set);
            self.verified.notify_waiters();
        }
    }

    /// Records that the local copy failed a checksum: it is unverified
    /// until replaced, and verification must not keep it even if its
    /// version is the newest.
    pub fn corrupt(&self, oid: ObjectId) {
        self.corrupt.lock().expect("gate lock").insert(oid);
        self.suspect([oid]);
        self.request(oid);
    }

    /// True (once) if the local copy was found corrupt.
    pub fn take_corrupt(&self, oid: ObjectId) -> bool {
        self.corrupt.lock().expect("gate lock").remove(&oid)
    }

    /// Asks the recovery engine to verify `oid` before anything else.
    pub fn request(&self, oid: ObjectId) {
        let _ = self.urgent_tx.send(oid);
    }

    /// The recovery engine's queue of objects that client I/O is waiting
    /// for; taken once.
    pub fn take_urgent(&self) -> Option<mpsc::UnboundedReceiver<ObjectId>> {
        self.urgent_rx.lock().expect("gate lock").take()
    }
}
