//! The cluster format and this node's epoch log.
//!
//! The format (`dog cluster format`) is a [`ClusterConfig`] stamped with its
//! creation time (`ctime`). It is persisted in `STORE_DIR/config` and its
//! ctime travels in gossip metadata, so the membership view holds only nodes
//! of the same format. Agreement needs no coordinator:
//! - A format request is delivered to every live gossip member; each one
//!   discards its objects and VDI registry, persists the new config and
//!   announces the new ctime. The request succeeds when all have done so.
//! - An unformatted node (a new one, or one whose store was wiped) adopts
//!   the newest format a peer holds. A node that holds a *different* format
//!   never adopts another by itself: it stays out of the view (and gets no
//!   data) until an operator formats again, so a stray node can never wipe a
//!   cluster or be wiped by one.
//!
//! Epochs: Sheepdog numbers cluster-wide membership changes through its
//! coordinator. Sheepfold has none, so each node logs the views it has seen
//! (`STORE_DIR/epochs`), numbered from 1 at format time. `dog cluster info`
//! shows this log; two nodes may number the same change differently.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::cluster::View;
use crate::util::write_file_atomic;

/// The cluster-wide settings chosen at format time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Creation time, Sheepdog encoding (seconds << 32 | nanoseconds).
    pub ctime: u64,
    /// Default number of copies.
    pub copies: u8,
    /// Default copy policy (0 = replication).
    pub copy_policy: u8,
    /// Cluster flags (`CLUSTER_FLAG_*`).
    pub flags: u16,
    /// Default log2 of the data object size.
    pub block_size_shift: u8,
    /// Backend store name, for display ("plain").
    pub store: String,
}

/// One entry of the epoch log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Unix seconds when this node saw the view.
    pub time: u64,
    /// The storing members then: (address, vnodes, zone).
    pub nodes: Vec<(std::net::SocketAddr, u16, u32)>,
}

/// Messages about the cluster format and node status between sheep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterRpc {
    /// Adopt this format; `members` are the nodes it is delivered to (the
    /// first epoch).
    Format {
        /// The new format.
        config: ClusterConfig,
        /// Every node the format goes to.
        members: Vec<crate::cluster::Member>,
    },
    /// Which format do you hold?
    GetFormat,
    /// Which view are you in?
    GetView,
    /// Pause (`false`) or resume background recovery.
    SetRecovery {
        /// Resume when true.
        enabled: bool,
    },
    /// Change the recovery throttle.
    SetThrottle {
        /// The new throttle.
        throttle: crate::recovery::Throttle,
    },
    /// How are you (status, capacity, recovery, client ports)?
    Report,
}

/// Successful answers to [`ClusterRpc`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterReply {
    /// Done.
    Done,
    /// The node's format.
    Format(Option<ClusterConfig>),
    /// The node's current view id.
    View(u64),
    /// The node's report.
    Report(crate::node::NodeReport),
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    config: Option<ClusterConfig>,
    epochs: Vec<EpochRecord>,
}

/// The format and epoch log of this node.
pub struct FormatState {
    path: Option<PathBuf>,
    state: Mutex<Persisted>,
}

impl FormatState {
    /// Loads `path` (`None`: memory only, for tests).
    pub fn load(path: Option<PathBuf>) -> std::io::Result<Self> {
        let state = match &path {
            Some(p) if p.exists() => rmp_serde::from_slice(&std::fs::read(p)?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            _ => Persisted::default(),
        };
        Ok(FormatState {
            path,
            state: Mutex::new(state),
        })
    }

    /// The current format, if any.
    pub fn config(&self) -> Option<ClusterConfig> {
        self.state.lock().expect("format lock").config.clone()
    }

    /// True once a format is installed (cheap: checked on every request).
    pub fn is_formatted(&self) -> bool {
        self.state.lock().expect("format lock").config.is_some()
    }

    /// Calls `f` with the newest epoch, without copying it (the node's
    /// majority rule reads it on every request).
    pub fn with_last_epoch<R>(&self, f: impl FnOnce(Option<&EpochRecord>) -> R) -> R {
        f(self.state.lock().expect("format lock").epochs.last())
    }

    /// The format's ctime, 0 when unformatted.
    pub fn ctime(&self) -> u64 {
        self.config().map_or(0, |c| c.ctime)
    }

    /// Installs a format and starts a new epoch log with `view`.
    pub fn install(&self, config: ClusterConfig, view: &View) -> std::io::Result<()> {
        let mut st = self.state.lock().expect("format lock");
        st.config = Some(config);
        st.epochs.clear();
        st.epochs.push(record(1, view));
        self.persist(&st)
    }

    /// Logs `view` as a new epoch if it differs from the last one.
    pub fn observe(&self, view: &View) -> std::io::Result<()> {
        let mut st = self.state.lock().expect("format lock");
        if st.config.is_none() {
            return Ok(());
        }
        let next = st.epochs.last().map_or(1, |e| e.epoch + 1);
        let rec = record(next, view);
        if st.epochs.last().map(|e| &e.nodes) == Some(&rec.nodes) {
            return Ok(());
        }
        st.epochs.push(rec);
        self.persist(&st)
    }

    /// The epoch log, newest first.
    pub fn epochs(&self) -> Vec<EpochRecord> {
        let st = self.state.lock().expect("format lock");
        st.epochs.iter().rev().cloned().collect()
    }

    /// The latest epoch, if any.
    pub fn last_epoch(&self) -> Option<EpochRecord> {
        self.state
            .lock()
            .expect("format lock")
            .epochs
            .last()
            .cloned()
    }

    /// The latest epoch number (0 before format).
    pub fn epoch(&self) -> u32 {
        let st = self.state.lock().expect("format lock");
        st.epochs.last().map_or(0, |e| e.epoch)
    }

    fn persist(&self, st: &Persisted) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = rmp_serde::to_vec(st).map_err(std::io::Error::other)?;
        write_file_atomic(path, &bytes)
    }
}

fn record(epoch: u32, view: &View) -> EpochRecord {
    EpochRecord {
        epoch,
        time: crate::util::unix_now(),
        nodes: view
            .members
            .iter()
            .map(|m| (m.addr, m.vnodes, m.zone))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Member;

    fn view(n: u16) -> View {
        View::new(
            (0..n)
                .map(|i| Member {
                    addr: ([127, 0, 0, 1], 7000 + i).into(),
                    zone: u32::from(i),
                    vnodes: 128,
                    ctime: 5,
                    space: 0,
                })
                .collect(),
        )
    }

    #[test]
    fn epochs_count_view_changes_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let f = FormatState::load(Some(path.clone())).unwrap();
        f.observe(&view(2)).unwrap();
        assert_eq!(f.epoch(), 0, "no epochs before format");
        let cfg = ClusterConfig {
            ctime: 5,
            copies: 2,
            copy_policy: 0,
            flags: 0,
            block_size_shift: 22,
            store: "plain".into(),
        };
        f.install(cfg.clone(), &view(2)).unwrap();
        f.observe(&view(2)).unwrap();
        f.observe(&view(3)).unwrap();
        assert_eq!(f.epoch(), 2);
        let again = FormatState::load(Some(path)).unwrap();
        assert_eq!(again.config(), Some(cfg));
        assert_eq!(again.epochs()[0].nodes.len(), 3);
    }
}
