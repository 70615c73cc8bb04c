//! Membership through SWIM gossip (the `memberlist` crate).
//!
//! memberlist gives failure detection and carries each node's [`Member`]
//! record as gossip metadata. This module turns its member table into
//! [`View`]s. Two facts about memberlist shape the code:
//! - Only `online_members()` is trustworthy; `NodeState::state()` stays
//!   `Alive` for dead nodes. So the view is rebuilt by polling
//!   `online_members()` on a short interval rather than from events.
//! - Dropping the handle does not stop it: [`GossipMembership::shutdown`] must
//!   be called, and it is, by the daemon on exit.
//! - Reaping dead nodes corrupts its member table (0.8.5): it moves them to
//!   the end of its node list without fixing its id -> index map, and a later
//!   alive message about the node left with a stale index panics the task
//!   handling it (seen in the partition test: index out of bounds in
//!   `alive_node`). So nodes are never reaped ([`NEVER_REAP`]): a dead node
//!   keeps its entry, revived when it comes back under the same id (its
//!   address); the cost is that gossip keeps picking long-dead nodes among
//!   its targets.
//!
//! Seeds (from the `-c local` runtime directory or `-c gossip:HOST:PORT,...`)
//! are re-joined periodically while they are not online, so a node that
//! started before its peers, or a healed network partition, converges again.
//!
//! Gossip runs on a runtime of its own (`gossip_runtime`, one thread), not
//! on the node's: probes must be answered even while the node's runtime is
//! busy or blocked (a page-cache write the kernel throttles, a long pass over
//! data), or peers would declare a merely slow node dead (after about 10 s of
//! silence) and start moving its data.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use indexmap::IndexSet;
use memberlist::delegate::{CompositeDelegate, NodeDelegate, VoidDelegate};
use memberlist::net::NetTransportOptions;
use memberlist::proto::{MaybeResolvedAddress, Meta};
use memberlist::tokio::{TokioSocketAddrResolver, TokioTcp, TokioTcpMemberlist};
use memberlist::Options;
use smol_str::SmolStr;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{view_of, BoxFuture, LocalDirectory, Member, Membership, View};

/// memberlist's `gossip_to_the_dead_time`: how long a dead node stays in
/// its member table (and among gossip targets) before it is reaped. Reaping
/// is what corrupts the table (see the module comment), so: a century.
const NEVER_REAP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often the member table is turned into a view.
const VIEW_POLL: Duration = Duration::from_millis(100);
/// How often absent seeds are joined again.
const REJOIN_EVERY: Duration = Duration::from_secs(2);

type Void = VoidDelegate<SmolStr, SocketAddr>;
type Delegate = CompositeDelegate<SmolStr, SocketAddr, Void, Void, Void, Void, MetaDelegate>;
type Gossip = TokioTcpMemberlist<SmolStr, TokioSocketAddrResolver, Delegate>;

/// Where a node finds its first peers.
#[derive(Debug, Clone)]
pub enum Seeds {
    /// `-c local[:DIR]`: every node registered in a runtime directory.
    Directory(LocalDirectory),
    /// `-c gossip:HOST:PORT,...`: fixed gossip addresses.
    Static(Vec<SocketAddr>),
}

/// Gossip settings; the failure-detector timings decide how fast a crashed
/// node leaves the view (about probe + timeout + mult x probe).
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// UDP and TCP address gossip binds to.
    pub bind: SocketAddr,
    /// Address advertised to peers (bind may be 0.0.0.0).
    pub advertise: SocketAddr,
    /// Where to find peers.
    pub seeds: Seeds,
    /// Interval between failure-detector probes.
    pub probe_interval: Duration,
    /// How long a probe waits for its ack.
    pub probe_timeout: Duration,
    /// Suspicion multiplier (suspect for mult x log(n) x probe_interval).
    pub suspicion_mult: usize,
}

/// Hands our [`Member`] record to memberlist as node metadata.
struct MetaDelegate {
    member: Arc<RwLock<Member>>,
}

impl NodeDelegate for MetaDelegate {
    async fn node_meta(&self, limit: usize) -> Meta {
        let member = self.member.read().expect("member lock").clone();
        let bytes = rmp_serde::to_vec(&member).unwrap_or_default();
        // memberlist panics on oversized metadata; ours is ~40 bytes, but
        // never hand it something it would panic on.
        if bytes.len() > limit {
            tracing::error!(len = bytes.len(), limit, "node metadata too large");
            return Meta::empty();
        }
        Meta::try_from(bytes).unwrap_or_else(|_| Meta::empty())
    }
}

/// The runtime gossip runs on, started on first use: a thread of its own
/// serving every node of this process (one, outside tests).
fn gossip_runtime() -> std::io::Result<tokio::runtime::Handle> {
    static HANDLE: Mutex<Option<tokio::runtime::Handle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().expect("gossip runtime lock");
    if let Some(h) = &*handle {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let h = rt.handle().clone();
    std::thread::Builder::new()
        .name("sheep-gossip".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    *handle = Some(h.clone());
    Ok(h)
}

/// Membership of a real sheep: memberlist plus a view publisher.
pub struct GossipMembership {
    gossip: Gossip,
    member: Arc<RwLock<Member>>,
    view_tx: watch::Sender<Arc<View>>,
    options: GossipOptions,
    tasks: Vec<JoinHandle<()>>,
}

impl GossipMembership {
    /// Starts gossip on the gossip runtime, announces this node and joins
    /// whatever seeds answer.
    pub async fn start(local: Member, options: GossipOptions) -> std::io::Result<Arc<Self>> {
        // memberlist spawns its probe, gossip and listener tasks on the
        // runtime it is created on, and so does the view poller below.
        gossip_runtime()?
            .spawn(Self::start_here(local, options))
            .await
            .map_err(std::io::Error::other)?
    }

    async fn start_here(local: Member, options: GossipOptions) -> std::io::Result<Arc<Self>> {
        let member = Arc::new(RwLock::new(local.clone()));
        let delegate =
            CompositeDelegate::<SmolStr, SocketAddr>::new().with_node_delegate(MetaDelegate {
                member: member.clone(),
            });
        let transport = NetTransportOptions::<SmolStr, TokioSocketAddrResolver, TokioTcp>::new(
            SmolStr::new(local.id()),
        )
        .with_bind_addresses(IndexSet::from([options.bind]))
        .with_advertise_address(options.advertise);
        let opts = Options::lan()
            .with_probe_interval(options.probe_interval)
            .with_probe_timeout(options.probe_timeout)
            .with_suspicion_mult(options.suspicion_mult)
            .with_gossip_interval(Duration::from_millis(100))
            .with_push_pull_interval(Duration::from_secs(10))
            .with_gossip_to_the_dead_time(NEVER_REAP);
        let gossip = Gossip::with_delegate(delegate, transport, opts)
            .await
            .map_err(|e| std::io::Error::other(format!("gossip on {}: {e}", options.bind)))?;
        if let Seeds::Directory(dir) = &options.seeds {
            dir.register(options.advertise)?;
        }
        let (view_tx, _) = watch::channel(Arc::new(View::new(vec![local])));
        let mut this = GossipMembership {
            gossip,
            member,
            view_tx,
            options,
            tasks: Vec::new(),
        };
        this.join_absent_seeds().await;
        this.refresh_view().await;
        let this = Arc::new_cyclic(|weak: &std::sync::Weak<GossipMembership>| {
            let weak = weak.clone();
            this.tasks.push(tokio::spawn(async move {
                let mut since_join = Duration::ZERO;
                loop {
                    tokio::time::sleep(VIEW_POLL).await;
                    let Some(me) = weak.upgrade() else { return };
                    me.refresh_view().await;
                    since_join += VIEW_POLL;
                    if since_join >= REJOIN_EVERY {
                        since_join = Duration::ZERO;
                        me.join_absent_seeds().await;
                    }
                }
            }));
            this
        });
        Ok(this)
    }

    fn seeds(&self) -> Vec<SocketAddr> {
        match &self.options.seeds {
            Seeds::Directory(dir) => dir.seeds(self.options.advertise),
            Seeds::Static(list) => list.clone(),
        }
    }

    /// Joins every seed that is not currently an online member.
    async fn join_absent_seeds(&self) {
        let online: Vec<SocketAddr> = self
            .gossip
            .online_members()
            .await
            .iter()
            .map(|n| *n.address())
            .collect();
        let absent: Vec<SocketAddr> = self
            .seeds()
            .into_iter()
            .filter(|s| *s != self.options.advertise && !online.contains(s))
            .collect();
        if absent.is_empty() {
            return;
        }
        let joins = absent
            .into_iter()
            .map(|seed| self.gossip.join(MaybeResolvedAddress::Resolved(seed)));
        for r in futures::future::join_all(joins).await {
            if let Err(e) = r {
                tracing::debug!("seed did not answer: {e}");
            }
        }
    }

    /// Rebuilds the view from the online members and publishes it if changed.
    async fn refresh_view(&self) {
        let local = self.member.read().expect("member lock").clone();
        let online = self.online_records().await;
        let view = view_of(&local, online);
        self.view_tx.send_if_modified(|cur| {
            if **cur != view {
                tracing::info!(
                    nodes = view.members.len(),
                    view = format_args!("{:016x}", view.id),
                    "membership view changed"
                );
                *cur = Arc::new(view);
                true
            } else {
                false
            }
        });
    }

    async fn online_records(&self) -> Vec<Member> {
        self.gossip
            .online_members()
            .await
            .iter()
            .filter_map(|n| rmp_serde::from_slice::<Member>(n.meta().as_bytes()).ok())
            .collect()
    }
}

impl Membership for GossipMembership {
    fn local(&self) -> Member {
        self.member.read().expect("member lock").clone()
    }

    fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view_tx.subscribe()
    }

    fn all_online(&self) -> BoxFuture<'_, Vec<Member>> {
        Box::pin(self.online_records())
    }

    fn set_ctime(&self, ctime: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.member.write().expect("member lock").ctime = ctime;
            if let Err(e) = self.gossip.update_node(Duration::from_secs(2)).await {
                tracing::warn!("announcing the new format: {e}");
            }
            self.refresh_view().await;
        })
    }

    fn set_vnodes(&self, vnodes: u16) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.member.write().expect("member lock").vnodes = vnodes;
            if let Err(e) = self.gossip.update_node(Duration::from_secs(2)).await {
                tracing::warn!("announcing the new vnodes: {e}");
            }
            self.refresh_view().await;
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for t in &self.tasks {
                t.abort();
            }
            if let Seeds::Directory(dir) = &self.options.seeds {
                dir.unregister(self.options.advertise);
            }
            if let Err(e) = self.gossip.leave(Duration::from_secs(1)).await {
                tracing::debug!("gossip leave: {e}");
            }
            if let Err(e) = self.gossip.shutdown().await {
                tracing::debug!("gossip shutdown: {e}");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn node(data_port: u16, gossip_port: u16, seed: u16) -> (Member, GossipOptions) {
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        let gossip = SocketAddr::new(ip, gossip_port);
        let member = Member {
            addr: SocketAddr::new(ip, data_port),
            zone: u32::from(data_port),
            vnodes: 16,
            ctime: 1,
            space: 0,
        };
        let options = GossipOptions {
            bind: gossip,
            advertise: gossip,
            seeds: Seeds::Static(vec![SocketAddr::new(ip, seed)]),
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(150),
            suspicion_mult: 2,
        };
        (member, options)
    }

    /// A node on a runtime of its own thread, until `stop`; returns whether
    /// its view ever lacked one of the `expect` nodes after they all met.
    fn run_node(
        member: Member,
        options: GossipOptions,
        expect: usize,
        met: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<bool> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let gossip = GossipMembership::start(member, options).await.unwrap();
                let views = gossip.subscribe();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while views.borrow().members.len() < expect {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the nodes never met"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                met.fetch_add(1, Ordering::SeqCst);
                let mut lost = false;
                while !stop.load(Ordering::SeqCst) {
                    lost |= views.borrow().members.len() < expect;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                gossip.shutdown().await;
                lost
            })
        })
    }

    /// Node A's one runtime worker is blocked for 12 s (with A's gossip on
    /// that runtime, B and C declare it dead after about 10.5 s: its sockets
    /// stay open, so this takes longer than a crash): B and C, whose
    /// runtimes run on, must never lose A, as its gossip does not run there.
    #[test]
    fn a_node_whose_runtime_is_blocked_stays_in_the_view() {
        let (pa, pb, pc) = (free_port(), free_port(), free_port());
        let (a, a_opts) = node(7001, pa, pb);
        // Like the daemon's: one worker thread.
        let rt_a = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let gossip_a = rt_a.block_on(GossipMembership::start(a, a_opts)).unwrap();
        let met = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let others: Vec<_> = [(7002, pb), (7003, pc)]
            .into_iter()
            .map(|(data, gossip)| {
                let (m, o) = node(data, gossip, pa);
                run_node(m, o, 3, met.clone(), stop.clone())
            })
            .collect();
        while met.load(Ordering::SeqCst) < 2 {
            assert!(!others.iter().any(|t| t.is_finished()), "a node gave up");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Blocks the only worker of A's runtime, as a stalled write would.
        rt_a.block_on(rt_a.spawn(async { std::thread::sleep(Duration::from_secs(12)) }))
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let lost = others.into_iter().any(|t| t.join().unwrap());
        rt_a.block_on(gossip_a.shutdown());
        assert!(
            !lost,
            "A was declared dead while only its runtime was blocked"
        );
    }
}
