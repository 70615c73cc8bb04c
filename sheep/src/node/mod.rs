//! A running sheep: every layer assembled, the peer dispatcher, and the
//! background task that reacts to membership changes.
//! Operator commands live in [`admin`].
//!
//! Node status, as Sheepdog reports it to clients:
//! - *waiting for format* until this node holds a cluster format;
//! - *waiting for join* after a restart, until every node of the last epoch
//!   this node logged is back in its view, so that a node that restarts
//!   first never serves (or places writes) as if it were the whole cluster;
//! - *halted* while its view holds no strict majority of the storing nodes
//!   of its last epoch: in a network partition only the side with a
//!   majority keeps serving, so the two sides never accept conflicting
//!   writes; a minority side waits until the partition heals;
//! - *running* otherwise. Only views with such a majority become epochs,
//!   so each epoch holds a majority of the one before.

mod admin;
mod report;

pub use report::{ClientPorts, NodeReport};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use qemu_proto::SdResult;

use crate::cluster::{
    BoxFuture, GossipMembership, GossipOptions, LocalDirectory, Member, Membership, Seeds, View,
};
use crate::config::{ClusterDriver, Options};
use crate::error::SheepError;
use crate::format::{ClusterConfig, ClusterReply, ClusterRpc, FormatState};
use crate::gateway::{Gateway, ObjectReply, ObjectRpc};
use crate::peer::{decode_meta, encode_meta, Endpoint, PeerClient, PeerService};
use crate::recovery::{Recovery, RecoveryControl, RecoveryOptions};
use crate::store::ObjectStore;
use crate::vdi::{VdiRegistry, VdiReply, VdiRpc, VdiService, Volumes};

/// How long a view must hold before it is logged as an epoch.
const EPOCH_SETTLE: Duration = Duration::from_millis(500);

/// How long a node may be out of the view before its attach locks are
/// released (`--lock-grace`).
pub const DEFAULT_LOCK_GRACE: Duration = Duration::from_secs(10);

/// How long a format waits for every node to see the same view.
const FORMAT_SETTLE: Duration = Duration::from_secs(10);

/// Why a sheep could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad option.
    #[error("{0}")]
    Config(String),
    /// The store directory or a socket could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a node tells clients about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// No cluster format yet.
    WaitForFormat,
    /// Restarted; waiting for the nodes of its last epoch.
    WaitForJoin,
    /// In a minority of its last epoch (a partition or too many failures).
    Halted,
    /// Serving.
    Running,
}

/// One sheep.
pub struct Sheep {
    /// This node as advertised.
    pub local: Member,
    /// Membership service.
    pub membership: Arc<dyn Membership>,
    /// Cluster format and epoch log.
    pub format: Arc<FormatState>,
    /// Object routing.
    pub gateway: Arc<Gateway>,
    /// VDI namespace.
    pub vdis: Arc<VdiService>,
    /// VDIs open as block devices (for NBD).
    pub volumes: Arc<Volumes>,
    /// Recovery settings, progress and counters.
    pub recovery: Arc<RecoveryControl>,
    engine: std::sync::OnceLock<Arc<Recovery>>,
    waiting_for: Mutex<Option<BTreeSet<SocketAddr>>>,
    format_lock: tokio::sync::Mutex<()>,
    stop: tokio::sync::Notify,
    ports: std::sync::OnceLock<ClientPorts>,
    membership_changes: std::sync::atomic::AtomicU64,
    lock_grace_ms: std::sync::atomic::AtomicU64,
}

impl Sheep {
    /// Opens the store, joins the cluster and starts background work.
    pub async fn start(opts: &Options) -> Result<Arc<Sheep>, StartError> {
        std::fs::create_dir_all(&opts.store_dir)?;
        let driver = opts.driver().map_err(StartError::Config)?;
        let format = Arc::new(FormatState::load(Some(opts.store_dir.join("config")))?);
        let registry = Arc::new(VdiRegistry::load(Some(opts.store_dir.join("vdis")))?);
        let store = if opts.gateway {
            None
        } else {
            Some(Arc::new(ObjectStore::open(&opts.store_dir, opts.nosync)?))
        };
        let ip = opts.advertised_ip();
        let local = Member {
            addr: SocketAddr::new(ip, opts.port),
            zone: opts.zone(),
            vnodes: if opts.gateway { 0 } else { opts.vnodes },
            ctime: format.ctime(),
            space: match &store {
                Some(s) => s.usage().await.map(|(u, f)| u + f).unwrap_or(0),
                None => 0,
            },
        };
        let gossip_port = opts.gossip_port().map_err(StartError::Config)?;
        let seeds = match driver {
            ClusterDriver::Local(dir) => Seeds::Directory(LocalDirectory::open(dir)?),
            ClusterDriver::Gossip(list) => Seeds::Static(list),
        };
        let (probe_interval, probe_timeout) = opts.probe();
        let membership = GossipMembership::start(
            local.clone(),
            GossipOptions {
                bind: SocketAddr::new(opts.bind, gossip_port),
                advertise: SocketAddr::new(ip, gossip_port),
                seeds,
                probe_interval,
                probe_timeout,
                suspicion_mult: opts.suspicion_mult,
            },
        )
        .await?;
        Ok(Self::assemble(
            local,
            membership,
            format,
            registry,
            store,
            opts.recovery(),
        ))
    }

    /// Wires the layers together over any membership (tests use an
    /// in-memory one) and starts the view watcher.
    pub fn assemble(
        local: Member,
        membership: Arc<dyn Membership>,
        format: Arc<FormatState>,
        registry: Arc<VdiRegistry>,
        store: Option<Arc<ObjectStore>>,
        recovery_options: RecoveryOptions,
    ) -> Arc<Sheep> {
        let peers = Arc::new(PeerClient::new());
        let gateway = Arc::new(Gateway::new(
            local.addr,
            store,
            peers,
            membership.subscribe(),
        ));
        let vdis = Arc::new(VdiService::new(
            local.addr,
            gateway.clone(),
            registry,
            format.clone(),
        ));
        // After a restart, wait for the nodes of the last epoch.
        let waiting_for = format.last_epoch().map(|e| {
            e.nodes
                .iter()
                .filter(|(_, vnodes, _)| *vnodes > 0)
                .map(|(addr, _, _)| *addr)
                .collect::<BTreeSet<_>>()
        });
        let volumes = Arc::new(Volumes::new(vdis.clone(), gateway.clone()));
        let recovery = Arc::new(RecoveryControl::new(
            recovery_options.throttle,
            gateway.counters().clone(),
        ));
        let sheep = Arc::new(Sheep {
            local,
            membership,
            format,
            gateway,
            vdis,
            volumes,
            recovery: recovery.clone(),
            engine: std::sync::OnceLock::new(),
            waiting_for: Mutex::new(waiting_for),
            format_lock: tokio::sync::Mutex::new(()),
            stop: tokio::sync::Notify::new(),
            ports: std::sync::OnceLock::new(),
            membership_changes: std::sync::atomic::AtomicU64::new(0),
            lock_grace_ms: std::sync::atomic::AtomicU64::new(DEFAULT_LOCK_GRACE.as_millis() as u64),
        });
        let copies_vdis = sheep.vdis.clone();
        let weak = Arc::downgrade(&sheep);
        let engine = Recovery::start(
            sheep.gateway.clone(),
            recovery,
            Arc::new(move |oid| copies_vdis.copies(oid.vid())),
            Arc::new(move || {
                weak.upgrade()
                    .is_some_and(|s| s.status() == NodeStatus::Running)
            }),
            recovery_options,
        );
        let _ = sheep.engine.set(engine);
        let weak = Arc::downgrade(&sheep);
        sheep.gateway.set_serving_check(Arc::new(move || {
            weak.upgrade()
                .is_some_and(|s| s.status() == NodeStatus::Running)
        }));
        tokio::spawn(sheep.clone().watch_views());
        tokio::spawn(sheep.clone().release_departed_holders());
        sheep
    }

    /// The node's status for clients.
    pub fn status(&self) -> NodeStatus {
        if !self.format.is_formatted() {
            NodeStatus::WaitForFormat
        } else if self.waiting_for.lock().expect("wait lock").is_some() {
            NodeStatus::WaitForJoin
        } else if !self.has_majority(&self.view()) {
            NodeStatus::Halted
        } else {
            NodeStatus::Running
        }
    }

    /// True when `view` holds a strict majority of the storing nodes of the
    /// last logged epoch (always true before the first epoch).
    fn has_majority(&self, view: &View) -> bool {
        self.format.with_last_epoch(|last| {
            let Some(last) = last else {
                return true;
            };
            let (mut storing, mut present) = (0, 0);
            for (addr, vnodes, _) in &last.nodes {
                if *vnodes > 0 {
                    storing += 1;
                    if view.member(*addr).is_some_and(|m| m.stores_data()) {
                        present += 1;
                    }
                }
            }
            storing == 0 || present * 2 > storing
        })
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.gateway.current().0
    }

    /// Leaves the cluster.
    pub async fn shutdown(&self) {
        self.membership.shutdown().await;
    }

    /// Formats the cluster: every live gossip member adopts `config`.
    pub async fn format_cluster(&self, config: ClusterConfig) -> Result<(), SheepError> {
        let mut targets = self.membership.all_online().await;
        if !targets.iter().any(|m| m.addr == self.local.addr) {
            targets.push(self.local.clone());
        }
        let members: Vec<Member> = targets
            .iter()
            .map(|m| Member {
                ctime: config.ctime,
                ..m.clone()
            })
            .collect();
        let (config, members) = (&config, &members);
        let calls = targets.iter().map(|m| {
            let rpc = ClusterRpc::Format {
                config: config.clone(),
                members: members.clone(),
            };
            async move {
                if m.addr == self.local.addr {
                    return self.apply_format(config.clone(), members.clone()).await;
                }
                self.cluster_call(m.addr, &rpc).await.map(|_| ())
            }
        });
        for r in futures::future::join_all(calls).await {
            r?;
        }
        // Settle before answering, so the next client request finds every
        // node in one view rather than each alone in its own.
        let deadline = tokio::time::Instant::now() + FORMAT_SETTLE;
        while tokio::time::Instant::now() < deadline {
            let mine = self.view().id;
            let views = futures::future::join_all(
                targets
                    .iter()
                    .filter(|m| m.addr != self.local.addr)
                    .map(|m| self.cluster_call(m.addr, &ClusterRpc::GetView)),
            )
            .await;
            let settled = self.view().members.len() == targets.len()
                && views
                    .iter()
                    .all(|v| matches!(v, Ok(ClusterReply::View(id)) if *id == mine));
            if settled {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("format delivered, but the views did not settle in time");
        Ok(())
    }

    /// Installs a format on this node (idempotent for the same ctime).
    async fn apply_format(
        &self,
        config: ClusterConfig,
        members: Vec<Member>,
    ) -> Result<(), SheepError> {
        let _one_at_a_time = self.format_lock.lock().await;
        if self.format.ctime() == config.ctime {
            return Ok(());
        }
        // A new format discards the old cluster's data, as in Sheepdog.
        if let Some(store) = self.gateway.store() {
            store.purge().await?;
        }
        self.vdis.registry().clear();
        self.vdis.ledger().clear();
        self.vdis
            .registry()
            .persist()
            .map_err(|e| SheepError::Store(e.into()))?;
        let ctime = config.ctime;
        self.format
            .install(config, &View::new(members))
            .map_err(|e| SheepError::Store(e.into()))?;
        *self.waiting_for.lock().expect("wait lock") = None;
        self.membership.set_ctime(ctime).await;
        tracing::info!(ctime = format_args!("{ctime:x}"), "cluster formatted");
        Ok(())
    }

    /// An unformatted node adopts the newest format held by a live peer.
    async fn learn_format(&self) {
        let online = self.membership.all_online().await;
        let Some(newest) = online
            .iter()
            .filter(|m| m.ctime != 0)
            .max_by_key(|m| m.ctime)
        else {
            return;
        };
        let Ok(ClusterReply::Format(Some(config))) =
            self.cluster_call(newest.addr, &ClusterRpc::GetFormat).await
        else {
            return;
        };
        let members = online
            .iter()
            .filter(|m| m.ctime == config.ctime)
            .cloned()
            .chain(std::iter::once(Member {
                ctime: config.ctime,
                ..self.local.clone()
            }))
            .collect();
        let source = newest.addr;
        match self.apply_format(config, members).await {
            Ok(()) => self.vdis.pull_registry(source).await,
            Err(e) => tracing::warn!("adopting the cluster format: {e}"),
        }
    }

    async fn cluster_call(
        &self,
        addr: SocketAddr,
        rpc: &ClusterRpc,
    ) -> Result<ClusterReply, SheepError> {
        let (rep, _) = self
            .gateway
            .peers()
            .request::<_, ClusterReply>(addr, 0, Endpoint::Cluster, rpc, Bytes::new())
            .await?;
        rep.map_err(SheepError::from_result)
    }

    async fn handle_cluster(&self, rpc: ClusterRpc) -> Result<ClusterReply, SheepError> {
        match rpc {
            ClusterRpc::Format { config, members } => {
                self.apply_format(config, members).await?;
                Ok(ClusterReply::Done)
            }
            ClusterRpc::GetFormat => Ok(ClusterReply::Format(self.format.config())),
            ClusterRpc::GetView => Ok(ClusterReply::View(self.view().id)),
            ClusterRpc::SetRecovery { .. } | ClusterRpc::SetThrottle { .. } => Ok(self
                .apply_recovery_setting(&rpc)
                .expect("a recovery setting")),
            ClusterRpc::Report => Ok(ClusterReply::Report(self.report().await)),
        }
    }

    /// Reacts to membership changes: logs epochs, ends the join wait, merges
    /// VDI registries with newcomers and, while unformatted, learns the format.
    async fn watch_views(self: Arc<Self>) {
        let mut views = self.membership.subscribe();
        let mut known: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut was_halted = false;
        let mut last_view = 0;
        loop {
            let view = views.borrow_and_update().clone();
            if view.id != last_view {
                last_view = view.id;
                self.membership_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // In a minority the other side may write without us: from now
            // on our copies may be stale until verified again.
            let halted = self.format.is_formatted() && !self.has_majority(&view);
            if halted && !was_halted {
                if let Some(engine) = self.engine.get() {
                    engine.suspect_everything();
                }
            }
            was_halted = halted;
            self.log_epoch_when_stable(&view).await;
            let present: BTreeSet<SocketAddr> = view.members.iter().map(|m| m.addr).collect();
            {
                let mut waiting = self.waiting_for.lock().expect("wait lock");
                if waiting.as_ref().is_some_and(|w| w.is_subset(&present)) {
                    tracing::info!("every node of the last epoch is back: running");
                    *waiting = None;
                }
            }
            for addr in present.difference(&known) {
                if *addr != self.local.addr {
                    let me = self.clone();
                    let addr = *addr;
                    tokio::spawn(async move { me.vdis.pull_registry(addr).await });
                }
            }
            known = present;
            if !self.format.is_formatted() {
                self.learn_format().await;
            }
            tokio::select! {
                changed = views.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Logs `view` as an epoch once it has held for [`EPOCH_SETTLE`]: gossip
    /// passes through short-lived views (a format spreading, nodes joining
    /// one by one) that are not worth an epoch each.
    async fn log_epoch_when_stable(&self, view: &View) {
        let mut views = self.membership.subscribe();
        tokio::time::sleep(EPOCH_SETTLE).await;
        if views.borrow_and_update().id != view.id {
            return;
        }
        if !self.has_majority(view) {
            tracing::warn!(
                nodes = view.members.len(),
                "no majority of the last epoch in view: halted until it returns"
            );
            return;
        }
        if let Err(e) = self.format.observe(view) {
            tracing::error!("logging the epoch: {e}");
        }
    }
}

fn reply<T: serde::Serialize>(r: Result<T, SheepError>, data: Bytes) -> (Bytes, Bytes) {
    match r {
        Ok(v) => (encode_meta(&Ok::<T, u32>(v)), data),
        Err(e) => (encode_meta(&Err::<T, u32>(e.result().0)), Bytes::new()),
    }
}

impl PeerService for Sheep {
    fn handle(&self, meta: Bytes, data: Bytes) -> BoxFuture<'_, (Bytes, Bytes)> {
        Box::pin(async move {
            let bad = || reply::<()>(Err(SdResult::INVALID_PARMS.into()), Bytes::new());
            let Ok((endpoint, body)) = Endpoint::split(&meta) else {
                return bad();
            };
            match endpoint {
                Endpoint::Object => {
                    let Ok(rpc) = decode_meta::<ObjectRpc>(&body) else {
                        return bad();
                    };
                    match self.gateway.serve_replica(rpc, data).await {
                        Ok((rep, data)) => reply(Ok::<ObjectReply, _>(rep), data),
                        Err(e) => reply::<ObjectReply>(Err(e), Bytes::new()),
                    }
                }
                Endpoint::Vdi => {
                    let Ok(rpc) = decode_meta::<VdiRpc>(&body) else {
                        return bad();
                    };
                    reply::<VdiReply>(self.vdis.handle(rpc).await, Bytes::new())
                }
                Endpoint::Cluster => {
                    let Ok(rpc) = decode_meta::<ClusterRpc>(&body) else {
                        return bad();
                    };
                    reply::<ClusterReply>(self.handle_cluster(rpc).await, Bytes::new())
                }
            }
        })
    }
}
