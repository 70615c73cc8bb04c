//! What this node knows about the VDI id space: which vids are in use, which
//! are deleted, each live VDI's copies and object size, and the short-lived
//! reservations of creates in progress.
//!
//! The in-use and deleted sets only grow (a deleted vid stays "in use" as a
//! tombstone, so open-addressing probe chains over the bitmap stay intact, as
//! in Sheepdog). Sets that only grow merge by union, so nodes converge by
//! exchanging them, whatever order they learn things in. The registry is
//! persisted to `STORE_DIR/vdis` (tmp file, fsync, rename) after each change.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qemu_proto::VdiBitmap;
use serde::{Deserialize, Serialize};

/// How long a reservation holds if its creator never commits it.
const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// What every node knows about a live VDI (Sheepdog's `vdi_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdiMeta {
    /// The VDI's name (snapshots share their working VDI's name).
    pub name: String,
    /// Number of copies of each object.
    pub copies: u8,
    /// log2 of the data object size.
    pub block_size_shift: u8,
    /// A read-only snapshot.
    pub snapshot: bool,
    /// The vid at the root of the tree of snapshots and clones this VDI
    /// belongs to. VDIs share objects only within a family, and the
    /// family's owner orders every operation that changes who shares what.
    pub family: u32,
    /// Bumped on every change of this entry; the higher one wins a merge.
    pub generation: u64,
}
/// The registry's persisted and exchanged form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    /// Live VDIs.
    pub live: Vec<(u32, VdiMeta)>,
    /// Deleted vids (tombstones).
    pub deleted: Vec<u32>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReserveConflict {
    /// The vid is in use or reserved for another name.
    VidTaken,
    /// A create of the same name is in progress under another vid.
    NameBusy,
    /// A working VDI of that name exists.
    NameExists,
}

struct Reservation {
    name: String,
    family: u32,
    expires: Instant,
}

/// A request to hold a vid for a VDI being made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The vid.
    pub vid: u32,
    /// The new VDI's name.
    pub name: String,
    /// Its family (its own vid for a new family).
    pub family: u32,
    /// The working VDI it replaces (a snapshot), which may share its name.
    pub replaces: Option<u32>,
}

struct State {
    inuse: VdiBitmap,
    deleted: VdiBitmap,
    live: BTreeMap<u32, VdiMeta>,
    reservations: HashMap<u32, Reservation>,
}

/// This node's VDI registry.
pub struct VdiRegistry {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl VdiRegistry {
    /// Loads the registry from `path` (or starts empty); `None` keeps it in
    /// memory only.
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let snapshot = match &path {
            Some(p) if p.exists() => rmp_serde::from_slice(&std::fs::read(p)?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            _ => RegistrySnapshot::default(),
        };
        let reg = VdiRegistry {
            path,
            state: Mutex::new(State {
                inuse: VdiBitmap::new(),
                deleted: VdiBitmap::new(),
                live: BTreeMap::new(),
                reservations: HashMap::new(),
            }),
        };
        reg.merge(&snapshot);
        Ok(reg)
    }

    /// Where the registry is persisted (`None`: in memory only).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Everything known, for persisting or sending to a peer.
    pub fn snapshot(&self) -> RegistrySnapshot {
        let st = self.state.lock().expect("registry lock");
        RegistrySnapshot {
            live: st.live.iter().map(|(v, m)| (*v, m.clone())).collect(),
            deleted: st.deleted.iter_set().collect(),
        }
    }

    /// Merges a peer's knowledge; returns true if anything was new.
    pub fn merge(&self, other: &RegistrySnapshot) -> bool {
        let mut st = self.state.lock().expect("registry lock");
        let mut changed = false;
        for &vid in &other.deleted {
            if !st.deleted.test(vid) {
                st.deleted.set(vid);
                st.inuse.set(vid);
                st.live.remove(&vid);
                changed = true;
            }
        }
        for (vid, meta) in &other.live {
            if st.deleted.test(*vid) {
                continue;
            }
            let newer = st
                .live
                .get(vid)
                .is_none_or(|known| known.generation < meta.generation);
            if newer {
                st.live.insert(*vid, meta.clone());
                st.inuse.set(*vid);
                st.reservations.remove(vid);
                changed = true;
            }
        }
        changed
    }

    /// Forgets everything (a new cluster format).
    pub fn clear(&self) {
        let mut st = self.state.lock().expect("registry lock");
        st.inuse = VdiBitmap::new();
        st.deleted = VdiBitmap::new();
        st.live.clear();
        st.reservations.clear();
    }

    /// The in-use bitmap (live and deleted vids), as READ_VDIS returns it.
    pub fn inuse_bytes(&self) -> Vec<u8> {
        self.state
            .lock()
            .expect("registry lock")
            .inuse
            .as_bytes()
            .to_vec()
    }

    /// The deleted bitmap, as READ_DEL_VDIS returns it.
    pub fn deleted_bytes(&self) -> Vec<u8> {
        self.state
            .lock()
            .expect("registry lock")
            .deleted
            .as_bytes()
            .to_vec()
    }

    /// What is known of a live VDI.
    pub fn meta(&self, vid: u32) -> Option<VdiMeta> {
        self.state
            .lock()
            .expect("registry lock")
            .live
            .get(&vid)
            .cloned()
    }

    /// True if `vid` is a snapshot (checked on every write: no cloning).
    pub fn is_snapshot(&self, vid: u32) -> bool {
        self.state
            .lock()
            .expect("registry lock")
            .live
            .get(&vid)
            .is_some_and(|m| m.snapshot)
    }

    /// Live VDIs of a family (with their metadata).
    pub fn family(&self, family: u32) -> Vec<(u32, VdiMeta)> {
        let st = self.state.lock().expect("registry lock");
        st.live
            .iter()
            .filter(|(_, m)| m.family == family)
            .map(|(v, m)| (*v, m.clone()))
            .collect()
    }

    /// True while a create into `family` (a clone, a snapshot) is reserved
    /// but not committed: its new inode may soon reference the family's
    /// objects.
    pub fn family_busy(&self, family: u32) -> bool {
        let st = self.state.lock().expect("registry lock");
        let now = Instant::now();
        st.reservations
            .values()
            .any(|r| r.family == family && r.expires > now)
    }

    /// Live vids.
    pub fn live_vids(&self) -> Vec<u32> {
        self.state
            .lock()
            .expect("registry lock")
            .live
            .keys()
            .copied()
            .collect()
    }

    /// The probe chain of a name's hash: the in-use vids from `start`
    /// upwards (wrapping past the end to 1) up to the first free vid, with
    /// deleted ones left out. Sheepdog looks names up along this chain.
    pub fn chain(&self, start: u32) -> Vec<u32> {
        let st = self.state.lock().expect("registry lock");
        let mut out = Vec::new();
        let mut vid = start;
        for _ in 0..qemu_proto::consts::SD_NR_VDIS {
            if !st.inuse.test(vid) {
                break;
            }
            if !st.deleted.test(vid) {
                out.push(vid);
            }
            vid = next_vid(vid);
        }
        out
    }

    /// The first vid at or after `start` that is neither in use nor
    /// reserved; `None` if the id space is full.
    pub fn free_vid(&self, start: u32) -> Option<u32> {
        let mut st = self.state.lock().expect("registry lock");
        let now = Instant::now();
        st.reservations.retain(|_, r| r.expires > now);
        let mut vid = start.max(1);
        for _ in 0..qemu_proto::consts::SD_NR_VDIS {
            if !st.inuse.test(vid) && !st.reservations.contains_key(&vid) {
                return Some(vid);
            }
            vid = next_vid(vid);
        }
        None
    }

    /// Holds a vid for a VDI being made until it commits or expires. Refused
    /// if the vid is taken, if another make of the name is in progress, or
    /// if a working VDI of that name exists (other than the one replaced).
    pub fn reserve(&self, claim: &Claim) -> Result<(), ReserveConflict> {
        let mut st = self.state.lock().expect("registry lock");
        let now = Instant::now();
        st.reservations.retain(|_, r| r.expires > now);
        if st.inuse.test(claim.vid) {
            return Err(ReserveConflict::VidTaken);
        }
        if let Some(r) = st.reservations.get(&claim.vid) {
            if r.name != claim.name {
                return Err(ReserveConflict::VidTaken);
            }
        }
        if st
            .reservations
            .iter()
            .any(|(v, r)| *v != claim.vid && r.name == claim.name)
        {
            return Err(ReserveConflict::NameBusy);
        }
        if st
            .live
            .iter()
            .any(|(v, m)| m.name == claim.name && !m.snapshot && Some(*v) != claim.replaces)
        {
            return Err(ReserveConflict::NameExists);
        }
        st.reservations.insert(
            claim.vid,
            Reservation {
                name: claim.name.clone(),
                family: claim.family,
                expires: now + RESERVATION_TTL,
            },
        );
        Ok(())
    }

    /// Drops a reservation (the create failed).
    pub fn release(&self, vid: u32) {
        self.state
            .lock()
            .expect("registry lock")
            .reservations
            .remove(&vid);
    }

    /// Records a created VDI.
    pub fn commit(&self, vid: u32, meta: VdiMeta) {
        self.merge(&RegistrySnapshot {
            live: vec![(vid, meta)],
            deleted: vec![],
        });
    }

    /// Records a deleted VDI.
    pub fn mark_deleted(&self, vid: u32) {
        self.merge(&RegistrySnapshot {
            live: vec![],
            deleted: vec![vid],
        });
    }

    /// Writes the registry to disk: tmp file, fsync, rename, so a crash
    /// leaves either the old or the new registry.
    pub fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = rmp_serde::to_vec(&self.snapshot()).map_err(std::io::Error::other)?;
        crate::util::write_file_atomic(path, &bytes)
    }
}

fn next_vid(vid: u32) -> u32 {
    if vid + 1 >= qemu_proto::consts::SD_NR_VDIS {
        1
    } else {
        vid + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> VdiMeta {
        VdiMeta {
            name: name.into(),
            copies: 2,
            block_size_shift: 22,
            snapshot: false,
            family: 1,
            generation: 1,
        }
    }

    fn claim(vid: u32, name: &str) -> Claim {
        Claim {
            vid,
            name: name.into(),
            family: vid,
            replaces: None,
        }
    }

    #[test]
    fn chains_skip_deleted_and_stop_at_free() {
        let r = VdiRegistry::load(None).unwrap();
        r.commit(10, meta("a"));
        r.commit(11, meta("b"));
        r.commit(13, meta("c"));
        r.mark_deleted(11);
        assert_eq!(r.chain(10), vec![10]);
        assert_eq!(r.free_vid(10), Some(12));
        assert_eq!(r.chain(13), vec![13]);
    }

    #[test]
    fn reservations_conflict_by_vid_and_by_name() {
        let r = VdiRegistry::load(None).unwrap();
        r.reserve(&claim(5, "a")).unwrap();
        assert!(r.family_busy(5));
        assert_eq!(r.reserve(&claim(5, "b")), Err(ReserveConflict::VidTaken));
        assert_eq!(r.reserve(&claim(6, "a")), Err(ReserveConflict::NameBusy));
        assert_eq!(r.free_vid(5), Some(6));
        r.commit(5, meta("a"));
        assert!(!r.family_busy(5));
        assert_eq!(r.reserve(&claim(5, "a")), Err(ReserveConflict::VidTaken));
        assert_eq!(r.reserve(&claim(7, "a")), Err(ReserveConflict::NameExists));
        // A snapshot's new working VDI replaces the old one, same name.
        let snap = Claim {
            replaces: Some(5),
            ..claim(7, "a")
        };
        assert_eq!(r.reserve(&snap), Ok(()));
    }

    #[test]
    fn merge_is_a_union_and_deletion_wins() {
        let a = VdiRegistry::load(None).unwrap();
        let b = VdiRegistry::load(None).unwrap();
        a.commit(1, meta("x"));
        b.commit(2, meta("y"));
        b.mark_deleted(1);
        assert!(a.merge(&b.snapshot()));
        assert!(!a.merge(&b.snapshot()));
        assert_eq!(a.live_vids(), vec![2]);
        assert!(a.chain(1).is_empty() || a.chain(1) == vec![2]);
    }

    #[test]
    fn higher_generation_wins() {
        let r = VdiRegistry::load(None).unwrap();
        r.commit(3, meta("w"));
        let snap = VdiMeta {
            snapshot: true,
            generation: 2,
            ..meta("w")
        };
        r.commit(3, snap.clone());
        r.commit(3, meta("w"));
        assert_eq!(r.meta(3), Some(snap));
    }

    #[test]
    fn persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vdis");
        let r = VdiRegistry::load(Some(path.clone())).unwrap();
        r.commit(7, meta("z"));
        r.mark_deleted(8);
        r.persist().unwrap();
        let again = VdiRegistry::load(Some(path)).unwrap();
        assert_eq!(again.snapshot(), r.snapshot());
    }
}
