//! Recovery: keeping N fresh copies of every object as nodes fail, return,
//! drain and join, with no coordinator.
//!
//! Every storing node runs the same engine on its own view:
//! - **Passes.** When the view changes, the node asks every member for its
//!   object list (ids and versions), then pulls each object the ring now
//!   places on it and that it lacks or holds in an older version, from a
//!   node holding the best copy; once every replica of an object it no
//!   longer should hold has that object at least as new, it drops its copy.
//!   Each object therefore moves once, to its new place, and a drained node
//!   (vnodes 0) ends up empty.
//! - **Grace.** If nodes left the view since the last finished pass, the
//!   pass waits [`RecoveryOptions::grace`] first, so a quick reboot does not
//!   move every object twice. Meanwhile a write to an object that lost a
//!   replica copies it to the stand-in on demand (the gateway's repair).
//! - **Verification.** Copies on a node that restarted or lost its
//!   majority may be stale; they stay unverified (the store's gate holds
//!   client I/O back) until a pass or an urgent verification compares them
//!   with the others. The best copy is the newest *verified* one; only if no
//!   verified copy exists anywhere does the newest unverified one win.
//! - **Operators** pause it, throttle it and watch it through
//!   [`RecoveryControl`].

mod check;
mod control;
mod pass;
mod verify;

pub use check::{check_vdi, CheckReport};
pub use control::{RecoveryControl, RecoveryCounters, RecoveryPhase, RecoveryStatus, Throttle};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qemu_proto::ObjectId;

use crate::gateway::{CopyState, Gateway};
use crate::store::Version;

/// Settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryOptions {
    /// How long a node may be gone before the others restore full
    /// redundancy without it.
    pub grace: Duration,
    /// Initial throttle.
    pub throttle: Throttle,
    /// Recovery pauses while the store's file system is fuller than this
    /// (percent).
    pub high_water_pct: u8,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions {
            grace: Duration::from_secs(300),
            throttle: Throttle::UNTHROTTLED,
            high_water_pct: 95,
        }
    }
}

/// How many copies an object of a VDI has (from the VDI registry).
pub type CopiesOf = Arc<dyn Fn(ObjectId) -> usize + Send + Sync>;

/// Tells whether this node may serve and recover (it is running, not
/// waiting for its last epoch or halted in a minority).
pub type IsRunning = Arc<dyn Fn() -> bool + Send + Sync>;

/// The recovery engine of one node.
pub struct Recovery {
    gateway: Arc<Gateway>,
    control: Arc<RecoveryControl>,
    copies_of: CopiesOf,
    is_running: IsRunning,
    options: RecoveryOptions,
}

impl Recovery {
    /// Starts the engine (a no-op on a gateway-only node).
    pub fn start(
        gateway: Arc<Gateway>,
        control: Arc<RecoveryControl>,
        copies_of: CopiesOf,
        is_running: IsRunning,
        options: RecoveryOptions,
    ) -> Arc<Recovery> {
        let r = Arc::new(Recovery {
            gateway,
            control,
            copies_of,
            is_running,
            options,
        });
        if r.gateway.store().is_some() {
            tokio::spawn(r.clone().run_passes());
            tokio::spawn(r.clone().serve_urgent());
        }
        r
    }

    /// Every local copy becomes unverified: called when this node lost the
    /// majority of its cluster, so the other side may have written since.
    pub fn suspect_everything(&self) {
        if let Some(store) = self.gateway.store() {
            store
                .gate()
                .suspect(store.list().into_iter().map(|(oid, _)| oid));
        }
    }
}

/// The copy to converge on among `holders`: the newest verified copy, or
/// the newest of all when none is verified.
pub(crate) fn best_version(holders: &[(SocketAddr, CopyState)]) -> Option<Version> {
    let verified = holders
        .iter()
        .filter(|(_, c)| c.authoritative)
        .map(|(_, c)| c.version)
        .max();
    verified.or_else(|| holders.iter().map(|(_, c)| c.version).max())
}

/// Whether the local copy `mine` must be replaced by `best`.
pub(crate) fn needs_pull(mine: Option<CopyState>, best: Option<Version>) -> bool {
    match (mine, best) {
        (None, Some(_)) => true,
        (_, None) => false,
        // A verified copy only yields to a newer one.
        (Some(m), Some(b)) if m.authoritative => b > m.version,
        // An unverified copy yields to any other best copy.
        (Some(m), Some(b)) => b != m.version,
    }
}

/// Nodes holding version `best` of an object, replicas of `prefer` first.
pub(crate) fn sources(
    holders: &[(SocketAddr, CopyState)],
    best: Version,
    prefer: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = holders
        .iter()
        .filter(|(_, c)| c.version == best)
        .map(|(a, _)| *a)
        .collect();
    v.sort_by_key(|a| !prefer.contains(a));
    v
}

/// Object lists gathered from every node: who holds what.
pub(crate) type Holdings = HashMap<ObjectId, Vec<(SocketAddr, CopyState)>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn st(count: u64, authoritative: bool) -> CopyState {
        CopyState {
            version: Version { count, history: 0 },
            authoritative,
        }
    }

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn verified_copies_win_over_newer_unverified_ones() {
        let holders = vec![(a(1), st(5, true)), (a(2), st(9, false))];
        assert_eq!(best_version(&holders).unwrap().count, 5);
        // A stale or diverged unverified copy yields to the verified one...
        assert!(needs_pull(Some(st(9, false)), best_version(&holders)));
        assert!(needs_pull(Some(st(4, false)), best_version(&holders)));
        // ...a verified one only to a newer one.
        assert!(!needs_pull(Some(st(6, true)), best_version(&holders)));
        assert!(needs_pull(Some(st(4, true)), best_version(&holders)));
        assert!(needs_pull(None, best_version(&holders)));
        assert!(!needs_pull(Some(st(4, false)), None));
        let unverified_only = vec![(a(1), st(3, false)), (a(2), st(7, false))];
        assert_eq!(best_version(&unverified_only).unwrap().count, 7);
        assert_eq!(
            sources(
                &holders,
                Version {
                    count: 5,
                    history: 0
                },
                &[a(2)]
            ),
            vec![a(1)]
        );
    }
}
