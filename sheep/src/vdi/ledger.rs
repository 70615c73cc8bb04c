//! The ledger: small facts about VDIs that every node keeps a copy of and
//! that must outlive any one node — who has a VDI attached (the attach
//! locks) and the answers to API requests that carried an idempotency key.
//!
//! Every entry is versioned by `(generation, stamp)`: a change bumps the
//! generation and draws a random stamp, and merging keeps the larger pair.
//! Merging is therefore commutative and idempotent, so nodes converge
//! whatever order they learn things in (a node that joins pulls everyone's
//! ledger, as it does the VDI registry). Lock entries are changed only by
//! the name's owner, which first reads the entry from every member of its
//! view and writes the result to every member (see `lock.rs`); the random
//! stamp only breaks ties that a partial write followed by an owner change
//! could leave.
//!
//! The ledger is persisted to `STORE_DIR/ledger` (tmp file, fsync, rename)
//! after each change, so a full-cluster restart keeps the locks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How long the answer to an idempotent request is kept.
pub const REQUEST_TTL_SECS: u64 = 24 * 3600;

/// At most this many request answers are kept (the oldest go first).
const MAX_REQUESTS: usize = 4096;

/// A value with the version that orders it against other copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Bumped by every change.
    pub generation: u64,
    /// Random; breaks ties between two changes with one generation.
    pub stamp: u64,
    /// The value.
    pub value: T,
}

impl<T> Versioned<T> {
    fn key(&self) -> (u64, u64) {
        (self.generation, self.stamp)
    }
}

/// Read-write or read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachMode {
    /// One VM writes: the lock. At most one at a time (plus a migration
    /// destination).
    ReadWrite,
    /// Any number of readers.
    ReadOnly,
}

/// Where an attachment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachState {
    /// Holds (or, read-only, shares) the VDI.
    Active,
    /// A live-migration destination: may open the VDI while the source
    /// `from` still has it, and takes the lock when the source closes.
    Pending {
        /// The source attachment's id.
        from: String,
    },
}

/// One host's use of a VDI, made through one sheep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Random id (`a-` and 16 hex digits); also names its NBD export.
    pub id: String,
    /// The host (hypervisor) the panel named.
    pub host: String,
    /// The sheep the attachment was made through, which serves it; when
    /// that sheep leaves the cluster the attachment is released.
    pub node: SocketAddr,
    /// That sheep's NBD port (0: it serves no NBD).
    pub nbd_port: u16,
    /// Read-write or read-only.
    pub mode: AttachMode,
    /// Active, or a pending migration destination.
    pub state: AttachState,
    /// When it was made (Unix seconds).
    pub since: u64,
}

/// The attachments of one VDI name (empty: unlocked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// Every attachment, oldest first.
    pub attachments: Vec<Attachment>,
}

impl LockState {
    /// The active read-write attachment: the lock holder.
    pub fn holder(&self) -> Option<&Attachment> {
        self.attachments
            .iter()
            .find(|a| a.mode == AttachMode::ReadWrite && a.state == AttachState::Active)
    }

    /// The pending migration destination, if any.
    pub fn pending(&self) -> Option<&Attachment> {
        self.attachments
            .iter()
            .find(|a| matches!(a.state, AttachState::Pending { .. }))
    }

    /// The attachment with this id.
    pub fn get(&self, id: &str) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.id == id)
    }

    /// True when the VDI may be in use on more than one node at once, so
    /// volumes must not trust their cached index.
    pub fn shared(&self) -> bool {
        self.attachments.len() > 1
    }
}

/// The stored answer to a request with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// What the request was (method, path, body digest): a key reused for
    /// a different request is refused rather than answered wrongly.
    pub fingerprint: String,
    /// HTTP status of the first answer.
    pub status: u16,
    /// Its JSON body.
    pub body: String,
    /// When it was answered (Unix seconds).
    pub at: u64,
}

/// Entries to merge, as exchanged between nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerDelta {
    /// Lock entries by VDI name.
    pub locks: Vec<(String, Versioned<LockState>)>,
    /// Request answers by idempotency key.
    pub requests: Vec<(String, Versioned<RequestRecord>)>,
}

impl LedgerDelta {
    /// True if there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.requests.is_empty()
    }
}

#[derive(Default)]
struct State {
    locks: BTreeMap<String, Versioned<LockState>>,
    requests: BTreeMap<String, Versioned<RequestRecord>>,
}

/// This node's copy of the ledger.
pub struct Ledger {
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Bumped on every change of a lock entry, with the names changed.
    changes: watch::Sender<(u64, Vec<String>)>,
}

impl Ledger {
    /// Loads the ledger from `path` (or starts empty); `None` keeps it in
    /// memory only.
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let delta: LedgerDelta = match &path {
            Some(p) if p.exists() => rmp_serde::from_slice(&std::fs::read(p)?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            _ => LedgerDelta::default(),
        };
        let ledger = Ledger {
            path,
            state: Mutex::new(State::default()),
            changes: watch::channel((0, Vec::new())).0,
        };
        ledger.merge(&delta);
        Ok(ledger)
    }

    /// Receives a notice after every change of lock entries.
    pub fn subscribe(&self) -> watch::Receiver<(u64, Vec<String>)> {
        self.changes.subscribe()
    }

    /// Merges entries (keeping the newer version of each); returns the
    /// names whose lock entry changed. Persists if anything changed.
    pub fn merge(&self, delta: &LedgerDelta) -> Vec<String> {
        let mut changed_locks = Vec::new();
        let mut changed = false;
        {
            let mut st = self.state.lock().expect("ledger lock");
            for (name, entry) in &delta.locks {
                if st.locks.get(name).is_none_or(|e| e.key() < entry.key()) {
                    st.locks.insert(name.clone(), entry.clone());
                    changed_locks.push(name.clone());
                }
            }
            for (key, entry) in &delta.requests {
                if st.requests.get(key).is_none_or(|e| e.key() < entry.key()) {
                    st.requests.insert(key.clone(), entry.clone());
                    changed = true;
                }
            }
            prune_requests(&mut st.requests, crate::util::unix_now());
        }
        if changed || !changed_locks.is_empty() {
            self.persist();
        }
        if !changed_locks.is_empty() {
            let names = changed_locks.clone();
            self.changes.send_modify(|(n, list)| {
                *n += 1;
                *list = names;
            });
        }
        changed_locks
    }

    /// Everything, for a node that merges ours.
    pub fn all(&self) -> LedgerDelta {
        let st = self.state.lock().expect("ledger lock");
        LedgerDelta {
            locks: st
                .locks
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            requests: st
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The lock entry of a VDI name (generation 0 and unlocked if none).
    pub fn lock_entry(&self, name: &str) -> Versioned<LockState> {
        self.state
            .lock()
            .expect("ledger lock")
            .locks
            .get(name)
            .cloned()
            .unwrap_or(Versioned {
                generation: 0,
                stamp: 0,
                value: LockState::default(),
            })
    }

    /// The attachments of a VDI name.
    pub fn lock(&self, name: &str) -> LockState {
        self.lock_entry(name).value
    }

    /// Every name with at least one attachment, with its attachments.
    pub fn locked(&self) -> Vec<(String, LockState)> {
        self.state
            .lock()
            .expect("ledger lock")
            .locks
            .iter()
            .filter(|(_, e)| !e.value.attachments.is_empty())
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// The stored answer for an idempotency key.
    pub fn request(&self, key: &str) -> Option<RequestRecord> {
        let st = self.state.lock().expect("ledger lock");
        st.requests
            .get(key)
            .filter(|r| r.value.at + REQUEST_TTL_SECS > crate::util::unix_now())
            .map(|r| r.value.clone())
    }

    /// Forgets everything (a new cluster format).
    pub fn clear(&self) {
        *self.state.lock().expect("ledger lock") = State::default();
        self.persist();
    }

    fn persist(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let written = rmp_serde::to_vec(&self.all())
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::util::write_file_atomic(path, &bytes));
        if let Err(e) = written {
            tracing::error!("persisting the ledger: {e}");
        }
    }
}

/// Drops expired answers, then the oldest beyond [`MAX_REQUESTS`].
fn prune_requests(requests: &mut BTreeMap<String, Versioned<RequestRecord>>, now: u64) {
    requests.retain(|_, r| r.value.at + REQUEST_TTL_SECS > now);
    if requests.len() > MAX_REQUESTS {
        let mut ages: Vec<(u64, String)> = requests
            .iter()
            .map(|(k, r)| (r.value.at, k.clone()))
            .collect();
        ages.sort();
        for (_, k) in ages.into_iter().take(requests.len() - MAX_REQUESTS) {
            requests.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str) -> Attachment {
        Attachment {
            id: id.into(),
            host: "h".into(),
            node: "127.0.0.1:7000".parse().unwrap(),
            nbd_port: 10809,
            mode: AttachMode::ReadWrite,
            state: AttachState::Active,
            since: 1,
        }
    }

    fn entry(generation: u64, stamp: u64, ids: &[&str]) -> Versioned<LockState> {
        Versioned {
            generation,
            stamp,
            value: LockState {
                attachments: ids.iter().map(|i| att(i)).collect(),
            },
        }
    }

    #[test]
    fn merge_keeps_the_newest_in_any_order() {
        let a = Ledger::load(None).unwrap();
        let b = Ledger::load(None).unwrap();
        let d1 = LedgerDelta {
            locks: vec![("v".into(), entry(1, 5, &["x"]))],
            ..Default::default()
        };
        let d2 = LedgerDelta {
            locks: vec![("v".into(), entry(2, 1, &[]))],
            ..Default::default()
        };
        let d3 = LedgerDelta {
            locks: vec![("v".into(), entry(2, 9, &["y"]))],
            ..Default::default()
        };
        for d in [&d1, &d2, &d3] {
            a.merge(d);
        }
        for d in [&d3, &d1, &d2] {
            b.merge(d);
        }
        assert_eq!(a.lock_entry("v"), b.lock_entry("v"));
        assert_eq!(a.lock("v").holder().unwrap().id, "y");
        assert!(a.merge(&d1).is_empty(), "an old entry changes nothing");
    }

    #[test]
    fn requests_expire_and_are_bounded() {
        let mut m = BTreeMap::new();
        let rec = |at| Versioned {
            generation: 1,
            stamp: 0,
            value: RequestRecord {
                fingerprint: String::new(),
                status: 200,
                body: String::new(),
                at,
            },
        };
        m.insert("old".to_string(), rec(0));
        for i in 0..(MAX_REQUESTS + 3) {
            m.insert(format!("k{i}"), rec(REQUEST_TTL_SECS + i as u64));
        }
        prune_requests(&mut m, REQUEST_TTL_SECS + 1);
        assert!(!m.contains_key("old"));
        assert_eq!(m.len(), MAX_REQUESTS);
        assert!(!m.contains_key("k0") && m.contains_key(&format!("k{}", MAX_REQUESTS + 2)));
    }
}
