//! Recovery passes: after a view change, gather every node's object list,
//! pull what this node should hold, then drop what it no longer should.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use qemu_proto::ObjectId;

use crate::cluster::View;
use crate::error::SheepError;
use crate::gateway::{CopyState, ObjectReply, ObjectRpc, CLIENTS_ACTIVE};

use super::{best_version, needs_pull, sources, Holdings, Recovery, RecoveryPhase};

/// Pause between attempts when a pass cannot proceed (a peer in another
/// view, the node not running, recovery paused, the disk too full).
const WAIT: Duration = Duration::from_millis(300);

/// Objects pulled at once when unthrottled and no client uses the node.
const PARALLEL_PULLS: usize = 4;

/// How often a pass that may not start a pull now (throttled, or yielding
/// to clients) looks again.
const PACE_CHECK: Duration = Duration::from_millis(10);

/// How a pass ended.
enum Outcome {
    /// Every pull and drop done.
    Done,
    /// The view changed: start over in the new one.
    Superseded,
}

impl Recovery {
    /// The engine's main loop.
    pub(super) async fn run_passes(self: Arc<Self>) {
        let mut views = self.gateway.views();
        // Storing members of the view of the last finished pass; nodes
        // missing from a newer view "departed" at the recorded time.
        let mut settled: Option<BTreeSet<SocketAddr>> = None;
        let mut departed: HashMap<SocketAddr, Instant> = HashMap::new();
        loop {
            let view = views.borrow_and_update().clone();
            let present: BTreeSet<SocketAddr> = view.members.iter().map(|m| m.addr).collect();
            departed.retain(|a, _| !present.contains(a));
            if let Some(s) = &settled {
                for gone in s.difference(&present) {
                    departed.entry(*gone).or_insert_with(Instant::now);
                }
            }
            let outcome = self.pass_when_due(&view, &departed, &mut views).await;
            if let Outcome::Done = outcome {
                settled = Some(present);
                departed.clear();
                self.control.update_status(|s| s.in_recovery = false);
                if views.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Waits for the grace period (if nodes departed) and for the node to
    /// run, then runs the pass; a view change cuts either short.
    async fn pass_when_due(
        &self,
        view: &Arc<View>,
        departed: &HashMap<SocketAddr, Instant>,
        views: &mut tokio::sync::watch::Receiver<Arc<View>>,
    ) -> Outcome {
        let due = departed
            .values()
            .min()
            .map(|first| *first + self.options.grace);
        self.control.update_status(|s| {
            s.in_recovery = true;
            s.phase = RecoveryPhase::PrepareList;
            s.finished = 0;
            s.total = 0;
        });
        loop {
            let waiting_grace = due.is_some_and(|d| Instant::now() < d);
            if (self.is_running)() && !waiting_grace {
                break;
            }
            tokio::select! {
                _ = views.changed() => return Outcome::Superseded,
                _ = tokio::time::sleep(WAIT) => {}
            }
        }
        match self.pass(view, views).await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!("recovery pass failed, retrying: {e}");
                tokio::select! {
                    _ = views.changed() => {}
                    _ = tokio::time::sleep(WAIT) => {}
                }
                Outcome::Superseded
            }
        }
    }

    /// One pass in `view`.
    async fn pass(
        &self,
        view: &Arc<View>,
        views: &mut tokio::sync::watch::Receiver<Arc<View>>,
    ) -> Result<Outcome, SheepError> {
        let store = self.gateway.store().expect("a storing node");
        let holdings = self.gather(view).await?;
        let placement = self.gateway.current().1;
        if self.gateway.current().0.id != view.id {
            return Ok(Outcome::Superseded);
        }
        let local = self.gateway.local();
        let mut pulls = Vec::new();
        let mut drops = Vec::new();
        for (oid, holders) in &holdings {
            let replicas = placement.replicas(*oid, (self.copies_of)(*oid));
            let mine = holders.iter().find(|(a, _)| *a == local).map(|(_, c)| *c);
            let others: Vec<(SocketAddr, CopyState)> = holders
                .iter()
                .filter(|(a, _)| *a != local)
                .copied()
                .collect();
            if replicas.contains(&local) {
                let best = best_version(&others);
                if needs_pull(mine, best) {
                    let best = best.expect("a pull has a source");
                    pulls.push((*oid, sources(&others, best, &replicas)));
                } else {
                    store.gate().verified(*oid);
                }
            } else if let Some(m) = mine {
                drops.push((*oid, m, replicas));
            }
        }
        self.control.update_status(|s| {
            s.phase = RecoveryPhase::RecoverObjects;
            s.total = pulls.len() as u64;
        });
        if !pulls.is_empty() {
            tracing::info!(objects = pulls.len(), "recovering objects");
        }
        if let Outcome::Superseded = self.pull_all(view, pulls, views).await? {
            return Ok(Outcome::Superseded);
        }
        self.control
            .update_status(|s| s.phase = RecoveryPhase::NotifyCompletion);
        self.drop_moved(view, drops, views).await
    }

    /// Every member's object list (gateway-only members hold none).
    async fn gather(&self, view: &View) -> Result<Holdings, SheepError> {
        let calls = view.members.iter().map(|m| async move {
            let r = self
                .gateway
                .call_replica(m.addr, view.id, ObjectRpc::List, Bytes::new())
                .await;
            (m.addr, r)
        });
        let mut holdings: Holdings = HashMap::new();
        for (addr, r) in futures::future::join_all(calls).await {
            match r {
                Ok((ObjectReply::List(list), _)) => {
                    for (oid, c) in list {
                        holdings.entry(ObjectId(oid)).or_default().push((addr, c));
                    }
                }
                Ok(_) => {}
                Err(e) if e.result() == qemu_proto::SdResult::GATEWAY_MODE => {}
                Err(e) => return Err(e),
            }
        }
        Ok(holdings)
    }

    /// Pulls every object of the plan, throttled, several at a time: up to
    /// [`PARALLEL_PULLS`] while no client uses this node; while clients do,
    /// one at a time with a rest as long as each pull (their I/O comes
    /// first).
    async fn pull_all(
        &self,
        view: &View,
        pulls: Vec<(ObjectId, Vec<SocketAddr>)>,
        views: &mut tokio::sync::watch::Receiver<Arc<View>>,
    ) -> Result<Outcome, SheepError> {
        let store = self.gateway.store().expect("a storing node");
        let mut queue = pulls.into_iter().peekable();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut window = (Instant::now(), 0u32);
        let mut rest_until = Instant::now();
        loop {
            // Wait while paused or too full; a view change ends the pass.
            while !self.control.enabled() || self.too_full().await {
                tokio::select! {
                    _ = views.changed() => return Ok(Outcome::Superseded),
                    _ = self.control.changed.notified() => {}
                    _ = tokio::time::sleep(WAIT) => {}
                }
            }
            let clients = store.clients_active_within(CLIENTS_ACTIVE);
            let limit = if clients { 1 } else { PARALLEL_PULLS };
            let throttle = self.control.throttle();
            let mut may_start = running.len() < limit && queue.peek().is_some();
            if clients && Instant::now() < rest_until {
                // Clients share the disk: after each pull, rest as long as
                // it took, so recovery takes at most half the disk's time
                // (like Ceph's recovery sleep).
                may_start = false;
            }
            if may_start && !throttle.is_unthrottled() {
                let interval = Duration::from_millis(throttle.interval_ms);
                if window.0.elapsed() >= interval {
                    window = (Instant::now(), 0);
                }
                may_start = window.1 < throttle.max;
            }
            if may_start {
                let (oid, from) = queue.next().expect("peeked");
                window.1 += 1;
                running.push(async move {
                    let started = Instant::now();
                    let r = self.gateway.pull(view.id, oid, &from, false).await;
                    (r, started.elapsed())
                });
                continue;
            }
            if running.is_empty() && queue.peek().is_none() {
                return Ok(Outcome::Done);
            }
            tokio::select! {
                _ = views.changed() => return Ok(Outcome::Superseded),
                done = running.next(), if !running.is_empty() => {
                    let Some((done, took)) = done else { continue };
                    rest_until = Instant::now() + took;
                    if let Err(e) = done {
                        if e.is_transient() {
                            return Err(e);
                        }
                        tracing::warn!("recovering an object: {e}");
                    }
                    self.control.update_status(|s| s.finished += 1);
                }
                // Throttled, or yielding to clients: look again shortly.
                _ = tokio::time::sleep(PACE_CHECK) => {}
            }
        }
    }

    /// Drops local copies of objects this node no longer holds a place
    /// for, once every replica holds a copy at least as new and verified.
    async fn drop_moved(
        &self,
        view: &View,
        mut drops: Vec<(ObjectId, CopyState, Vec<SocketAddr>)>,
        views: &mut tokio::sync::watch::Receiver<Arc<View>>,
    ) -> Result<Outcome, SheepError> {
        let store = self.gateway.store().expect("a storing node");
        while !drops.is_empty() {
            let mut left = Vec::new();
            for (oid, mine, replicas) in drops {
                if self.everyone_has(view, oid, mine, &replicas).await? {
                    store.remove(oid).await?;
                } else {
                    left.push((oid, mine, replicas));
                }
            }
            drops = left;
            if drops.is_empty() {
                break;
            }
            // The new replicas are still pulling: look again shortly.
            tokio::select! {
                _ = views.changed() => return Ok(Outcome::Superseded),
                _ = tokio::time::sleep(WAIT) => {}
            }
        }
        Ok(Outcome::Done)
    }

    async fn everyone_has(
        &self,
        view: &View,
        oid: ObjectId,
        mine: CopyState,
        replicas: &[SocketAddr],
    ) -> Result<bool, SheepError> {
        if replicas.is_empty() {
            return Ok(false);
        }
        for addr in replicas {
            let rpc = ObjectRpc::Stat { oid: oid.0 };
            match self
                .gateway
                .call_replica(*addr, view.id, rpc, Bytes::new())
                .await?
            {
                (ObjectReply::Stat(Some(c)), _) if c.authoritative && c.version >= mine.version => {
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// True while the store's file system is above the high-water mark.
    async fn too_full(&self) -> bool {
        let store = self.gateway.store().expect("a storing node");
        match store.fill_percent() {
            Ok(p) if p >= self.options.high_water_pct as u64 => {
                tracing::warn!(
                    percent = p,
                    "store above the high-water mark: recovery paused"
                );
                true
            }
            _ => false,
        }
    }
}
