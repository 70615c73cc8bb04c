//! What a node tells the storage API and the metrics about itself (status,
//! capacity, objects, recovery, the ports clients use), gathered from every
//! member for cluster-wide answers; and the rule that releases the attach
//! locks of nodes that left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{NodeStatus, Sheep};
use crate::cluster::Member;
use crate::error::SheepError;
use crate::format::{ClusterReply, ClusterRpc};

/// How long a cluster-wide report waits for one node.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The ports clients reach a node at besides the data port (0: disabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPorts {
    /// NBD.
    pub nbd: u16,
    /// The HTTP storage API and metrics.
    pub http: u16,
}

/// One node's state for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// `running`, `halted`, `waiting_for_format` or `waiting_for_join`.
    pub status: String,
    /// Bytes of the store's file system used by objects.
    pub used: u64,
    /// Bytes free on that file system.
    pub free: u64,
    /// Objects (copies) stored.
    pub objects: u64,
    /// Bytes those objects hold.
    pub object_bytes: u64,
    /// A recovery pass is running or waiting.
    pub in_recovery: bool,
    /// Objects of the current pass done.
    pub recovery_done: u64,
    /// Objects the current pass must copy.
    pub recovery_total: u64,
    /// Client ports.
    pub ports: ClientPorts,
}

impl NodeStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Running => "running",
            NodeStatus::Halted => "halted",
            NodeStatus::WaitForFormat => "waiting_for_format",
            NodeStatus::WaitForJoin => "waiting_for_join",
        }
    }
}

impl Sheep {
    /// Records the client ports (from the command line) for reports.
    pub fn set_client_ports(&self, ports: ClientPorts) {
        let _ = self.ports.set(ports);
    }

    /// The client ports this node serves.
    pub fn client_ports(&self) -> ClientPorts {
        self.ports.get().copied().unwrap_or_default()
    }

    /// How long a node may be out of the view before its attachments are
    /// released.
    pub fn set_lock_grace(&self, grace: Duration) {
        self.lock_grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    /// Views this node has seen since it started.
    pub fn membership_changes(&self) -> u64 {
        self.membership_changes.load(Ordering::Relaxed)
    }

    /// This node's report.
    pub async fn report(&self) -> NodeReport {
        let (used, free, objects, object_bytes) = match self.gateway.store() {
            Some(store) => {
                let (used, free) = store.usage().await.unwrap_or((0, 0));
                let list = store.list();
                let bytes = list.iter().map(|(_, m)| m.extent).sum();
                (used, free, list.len() as u64, bytes)
            }
            None => (0, 0, 0, 0),
        };
        let r = self.recovery.status();
        NodeReport {
            status: self.status().as_str().to_string(),
            used,
            free,
            objects,
            object_bytes,
            in_recovery: r.in_recovery,
            recovery_done: r.finished,
            recovery_total: r.total,
            ports: self.client_ports(),
        }
    }

    /// Every member of the view with its report (an error for a member
    /// that did not answer in time).
    pub async fn cluster_report(&self) -> Vec<(Member, Result<NodeReport, SheepError>)> {
        let view = self.view();
        let calls = view.members.iter().map(|m| async move {
            if m.addr == self.local.addr {
                return (m.clone(), Ok(self.report().await));
            }
            let r = tokio::time::timeout(
                REPORT_TIMEOUT,
                self.cluster_call(m.addr, &ClusterRpc::Report),
            )
            .await;
            let r = match r {
                Ok(Ok(ClusterReply::Report(rep))) => Ok(rep),
                Ok(Ok(_)) => Err(qemu_proto::SdResult::SYSTEM_ERROR.into()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(SheepError::Unsettled(format!("{} did not answer", m.addr))),
            };
            (m.clone(), r)
        });
        futures::future::join_all(calls).await
    }

    /// Releases the attachments of nodes that have been out of the view for
    /// the lock grace period (the name's owner does it; see `vdi/lock.rs`).
    /// Runs until the node stops.
    pub(super) async fn release_departed_holders(self: Arc<Self>) {
        let mut views = self.membership.subscribe();
        let mut gone_since: BTreeMap<SocketAddr, Instant> = BTreeMap::new();
        loop {
            let view = views.borrow_and_update().clone();
            if self.status() == NodeStatus::Running {
                let grace = Duration::from_millis(self.lock_grace_ms.load(Ordering::Relaxed));
                let holders: BTreeSet<SocketAddr> = self
                    .vdis
                    .ledger()
                    .locked()
                    .iter()
                    .flat_map(|(_, s)| s.attachments.iter().map(|a| a.node))
                    .collect();
                gone_since.retain(|addr, _| holders.contains(addr));
                let now = Instant::now();
                let mut gone = BTreeSet::new();
                for addr in holders {
                    if view.member(addr).is_some() {
                        gone_since.remove(&addr);
                        continue;
                    }
                    let since = *gone_since.entry(addr).or_insert(now);
                    if now.duration_since(since) >= grace {
                        gone.insert(addr);
                    }
                }
                if !gone.is_empty() {
                    self.vdis.release_departed(&gone).await;
                }
            }
            tokio::select! {
                changed = views.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
