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
//! Each object has its own lock, made when first needed and forgotten when
//! nobody holds it (at the next sweep), so memory follows the objects in use. (Locks shared by
//! several objects would deadlock two nodes that pull different objects
//! from each other: a pull holds its object's lock while it fetches, and a
//! fetch waits for the lock of the object it reads.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qemu_proto::ObjectId;
use tokio::sync::{mpsc, Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::StoreError;

/// How long client I/O waits for an object under recovery before the
/// request fails with a retryable error (the gateway then tries another
/// replica or retries later).
pub const CLIENT_WAIT: Duration = Duration::from_secs(3);

/// Forgotten locks are swept from the table when it grows past this (or
/// past twice the locks still held at the last sweep, so sweeping stays
/// amortized when many objects are busy at once).
const SWEEP_AT: usize = 4096;

/// Per-object locks, by object id. An entry stays until a sweep finds that
/// only the table holds it (nobody holds or waits for that lock, so a fresh
/// one is the same), which keeps objects in use free of allocations.
struct LockTable {
    locks: HashMap<ObjectId, Arc<RwLock<()>>>,
    sweep_at: usize,
}

/// Object locks and the set of unverified copies.
pub struct Gate {
    locks: Mutex<LockTable>,
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
            locks: Mutex::new(LockTable {
                locks: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
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
    /// The lock of `oid` (the one every current holder holds).
    fn lock(&self, oid: ObjectId) -> Arc<RwLock<()>> {
        let mut table = self.locks.lock().expect("gate lock");
        if let Some(l) = table.locks.get(&oid) {
            return l.clone();
        }
        if table.locks.len() >= table.sweep_at {
            table.locks.retain(|_, l| Arc::strong_count(l) > 1);
            table.sweep_at = (2 * table.locks.len()).max(SWEEP_AT);
        }
        table.locks.entry(oid).or_default().clone()
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
        tokio::time::timeout_at(deadline, self.lock(oid).read_owned())
            .await
            .map_err(|_| StoreError::Busy(oid))
    }

    /// Internal access (copies for other nodes, checks): never waits for
    /// verification, only for an installation in progress.
    pub async fn internal(&self, oid: ObjectId) -> SharedGuard {
        self.lock(oid).read_owned().await
    }

    /// Exclusive access for installing a copy.
    pub async fn exclusive(&self, oid: ObjectId) -> ExclusiveGuard {
        self.lock(oid).write_owned().await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_never_share_a_lock_and_idle_locks_are_forgotten() {
        let gate = Gate::default();
        // Many objects held exclusively at once: a read of any other object
        // still goes through (no two objects share a lock).
        let held: Vec<_> =
            futures::future::join_all((0..2000).map(|i| gate.exclusive(ObjectId::data(1, i))))
                .await;
        for i in 0..2000 {
            let other = ObjectId::data(2, i);
            let got = tokio::time::timeout(Duration::from_millis(100), gate.internal(other)).await;
            assert!(got.is_ok(), "{other} waited for a lock it does not share");
        }
        // The same object's lock is the same lock.
        let oid = ObjectId::data(1, 7);
        let waited = tokio::time::timeout(Duration::from_millis(50), gate.internal(oid)).await;
        assert!(
            waited.is_err(),
            "a read of {oid} went past its exclusive holder"
        );
        drop(held);
        assert!(gate.client(oid).await.is_ok());
        // Released locks do not pile up.
        for i in 0..3 * SWEEP_AT as u32 {
            drop(gate.internal(ObjectId::data(3, i)).await);
        }
        assert!(gate.locks.lock().unwrap().locks.len() <= SWEEP_AT);
    }
}
