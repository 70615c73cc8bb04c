//! Operator commands on a running sheep: stopping it (`dog node kill`),
//! draining it (`dog node vnodes set 0`), recovery settings that apply to
//! every node (`dog cluster recover enable|disable`, `dog node recovery
//! set-throttle`) and replica checks (`dog vdi check`, `dog cluster check`).

use std::sync::Arc;

use crate::error::SheepError;
use crate::format::{ClusterReply, ClusterRpc};
use crate::recovery::{CheckReport, Throttle};

use super::Sheep;

impl Sheep {
    /// Stops this node: it leaves the cluster and the process exits, as on
    /// SIGTERM. Returns at once so the client gets its answer first.
    pub fn kill(self: &Arc<Self>) {
        tracing::info!("killed by an operator");
        self.stop.notify_one();
    }

    /// Resolves when an operator asked this node to stop.
    pub async fn stop_requested(&self) {
        self.stop.notified().await
    }

    /// This node's virtual nodes on the ring.
    pub fn vnodes(&self) -> u16 {
        self.membership.local().vnodes
    }

    /// Changes this node's virtual nodes. 0 drains it: the ring gives it
    /// nothing, recovery moves each of its objects once to its new place,
    /// and the node then holds nothing and can leave without further
    /// movement. A gateway-only node (no store) cannot take vnodes.
    pub async fn set_vnodes(&self, vnodes: u16) -> Result<(), SheepError> {
        if vnodes > 0 && self.gateway.store().is_none() {
            return Err(qemu_proto::SdResult::GATEWAY_MODE.into());
        }
        self.membership.set_vnodes(vnodes).await;
        tracing::info!(vnodes, "vnodes changed");
        Ok(())
    }

    /// Pauses or resumes background recovery on every node of the view.
    pub async fn set_recovery_everywhere(&self, enabled: bool) -> Result<(), SheepError> {
        self.on_every_member(ClusterRpc::SetRecovery { enabled })
            .await
    }

    /// Sets the recovery throttle on every node of the view.
    pub async fn set_throttle_everywhere(&self, throttle: Throttle) -> Result<(), SheepError> {
        self.on_every_member(ClusterRpc::SetThrottle { throttle })
            .await
    }

    /// Compares every replica of every object of VDI `vid`, repairs missing,
    /// corrupt or stale copies from a good one, and says what it fixed.
    pub async fn check_vdi(&self, vid: u32) -> Result<CheckReport, SheepError> {
        crate::recovery::check_vdi(&self.vdis, &self.gateway, vid).await
    }

    /// Applies a setting locally and on every other member of the view.
    async fn on_every_member(&self, rpc: ClusterRpc) -> Result<(), SheepError> {
        let view = self.view();
        let calls = view.members.iter().map(|m| {
            let rpc = rpc.clone();
            async move {
                if m.addr == self.local.addr {
                    self.handle_cluster(rpc).await.map(|_| ())
                } else {
                    self.cluster_call(m.addr, &rpc).await.map(|_| ())
                }
            }
        });
        for r in futures::future::join_all(calls).await {
            r?;
        }
        Ok(())
    }

    /// Applies a recovery setting sent by [`Self::on_every_member`].
    pub(super) fn apply_recovery_setting(&self, rpc: &ClusterRpc) -> Option<ClusterReply> {
        match rpc {
            ClusterRpc::SetRecovery { enabled } => {
                self.recovery.set_enabled(*enabled);
                Some(ClusterReply::Done)
            }
            ClusterRpc::SetThrottle { throttle } => {
                self.recovery.set_throttle(*throttle);
                Some(ClusterReply::Done)
            }
            _ => None,
        }
    }
}
