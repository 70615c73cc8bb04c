//! The gateway: object I/O for clients, routed to the replicas of the
//! current placement. Any sheep is a gateway.
//!
//! Rules:
//! - A write, create or remove goes to every replica of the placement in the
//!   gateway's current view, in parallel, and succeeds only when all of them
//!   succeed. Each peer request carries the view id; a replica in another view
//!   refuses it, and the gateway retries once its view changes (bounded by
//!   [`SETTLE_DEADLINE`]). So an acknowledged write is on every replica that
//!   the agreed placement names.
//! - A read goes to one replica (this node first if it is one, else the
//!   primary) and falls back to the others.
//! - A replica that lacks an object a write expects (a new replica after a
//!   membership change) gets a full copy from a replica that has it, created
//!   exclusively so it never overwrites a copy a concurrent write already
//!   made; then the write is applied to it.

mod backing;
mod copy;
mod replica;

pub use copy::{CopyCounters, CLIENTS_ACTIVE};
pub use replica::{CopyState, ObjectReply, ObjectRpc, ScrubState};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qemu_proto::ObjectId;
use tokio::sync::watch;

use crate::cluster::View;
use crate::error::SheepError;
use crate::peer::{Endpoint, PeerClient};
use crate::placement::Placement;
use crate::store::{Backing, CreateMode, ObjectStore};

/// How long a request may wait for the membership to settle before failing.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

/// Routes object I/O to replicas.
pub struct Gateway {
    local: SocketAddr,
    store: Option<Arc<ObjectStore>>,
    peers: Arc<PeerClient>,
    views: watch::Receiver<Arc<View>>,
    placement: Mutex<(Arc<View>, Arc<Placement>)>,
    counters: Arc<CopyCounters>,
    serving: std::sync::OnceLock<ServingCheck>,
}

/// Says whether this node may serve I/O now (it runs, with a majority of
/// its last epoch); see [`Gateway::set_serving_check`].
pub type ServingCheck = Arc<dyn Fn() -> bool + Send + Sync>;

impl Gateway {
    /// A gateway for the node at `local`; `store` is `None` on a gateway-only node.
    pub fn new(
        local: SocketAddr,
        store: Option<Arc<ObjectStore>>,
        peers: Arc<PeerClient>,
        views: watch::Receiver<Arc<View>>,
    ) -> Self {
        let view = views.borrow().clone();
        let placement = Arc::new(Placement::new(&view));
        Gateway {
            local,
            store,
            peers,
            views,
            placement: Mutex::new((view, placement)),
            counters: Arc::new(CopyCounters::default()),
            serving: std::sync::OnceLock::new(),
        }
    }

    /// The local store, if this node stores objects.
    pub fn store(&self) -> Option<&Arc<ObjectStore>> {
        self.store.as_ref()
    }

    /// This node's data address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Receives every new view.
    pub fn views(&self) -> watch::Receiver<Arc<View>> {
        self.views.clone()
    }

    /// The peer connection pool.
    pub fn peers(&self) -> &Arc<PeerClient> {
        &self.peers
    }

    /// The current view and its placement (the ring is rebuilt only when the
    /// view changes).
    pub fn current(&self) -> (Arc<View>, Arc<Placement>) {
        let view = self.views.borrow().clone();
        let mut cached = self.placement.lock().expect("placement lock");
        if cached.0.id != view.id {
            *cached = (view.clone(), Arc::new(Placement::new(&view)));
        }
        cached.clone()
    }

    /// Installs the node's rule for serving I/O. Without it (unit tests)
    /// the gateway always serves.
    pub fn set_serving_check(&self, check: ServingCheck) {
        let _ = self.serving.set(check);
    }

    /// Runs `op` in the current view, retrying transient failures (a peer
    /// unreachable or in another view) in the next view until the deadline.
    pub async fn settle<T, F, Fut>(&self, mut op: F) -> Result<T, SheepError>
    where
        F: FnMut(Arc<View>, Arc<Placement>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SheepError>>,
    {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        let mut views = self.views.clone();
        loop {
            // A node in a minority (or still waiting for its last epoch)
            // sees a placement that names only the nodes it can reach:
            // writing there would fork the data. Every front end passes
            // here, so none of them can.
            if self.serving.get().is_some_and(|serving| !serving()) {
                return Err(qemu_proto::SdResult::HALT.into());
            }
            views.borrow_and_update();
            let (view, placement) = self.current();
            match op(view, placement).await {
                Err(e) if e.is_transient() => {
                    if Instant::now() >= deadline {
                        return Err(SheepError::Unsettled(e.to_string()));
                    }
                    tracing::debug!("retrying in the next view: {e}");
                    // Wake on a view change, or poll again shortly: the
                    // other side's view may be the one that must change.
                    let _ = tokio::time::timeout(Duration::from_millis(200), views.changed()).await;
                }
                other => return other,
            }
        }
    }

    /// Sends one object request to one replica (locally if it is this node).
    pub async fn call_replica(
        &self,
        addr: SocketAddr,
        view: u64,
        rpc: ObjectRpc,
        data: Bytes,
    ) -> Result<(ObjectReply, Bytes), SheepError> {
        if addr == self.local {
            return Box::pin(self.serve_replica(rpc, data)).await;
        }
        let (rep, data) = self
            .peers
            .request::<_, ObjectReply>(addr, view, Endpoint::Object, &rpc, data)
            .await?;
        rep.map(|r| (r, data)).map_err(SheepError::from_result)
    }

    /// Reads `len` bytes of `oid` at `offset` from one of its `copies` replicas.
    pub async fn read(
        &self,
        oid: ObjectId,
        offset: u64,
        len: u32,
        copies: usize,
    ) -> Result<Bytes, SheepError> {
        self.settle(|view, placement| async move {
            let mut targets = placement.replicas(oid, copies);
            if targets.is_empty() {
                return Err(SheepError::NoStorage);
            }
            // Reading locally saves a network hop.
            if let Some(pos) = targets.iter().position(|a| *a == self.local) {
                targets.swap(0, pos);
            }
            let mut last = None;
            for addr in targets {
                let rpc = ObjectRpc::Read {
                    oid: oid.0,
                    offset,
                    len,
                };
                match self.call_replica(addr, view.id, rpc, Bytes::new()).await {
                    Ok((_, data)) => return Ok(data),
                    Err(e) => {
                        tracing::debug!(%oid, %addr, "read failed, trying the next replica: {e}");
                        // Prefer reporting a transient error, so the read is
                        // retried, over "no object" from a replica that
                        // simply has not got it.
                        if last.as_ref().is_none_or(|l: &SheepError| !l.is_transient()) {
                            last = Some(e);
                        }
                    }
                }
            }
            Err(last.expect("at least one replica was tried"))
        })
        .await
    }

    /// Writes into an existing object on all of its replicas.
    pub async fn write(
        &self,
        oid: ObjectId,
        offset: u64,
        data: Bytes,
        copies: usize,
        sync: bool,
    ) -> Result<(), SheepError> {
        // One id for every replica and every retry: versions count writes.
        let write_id = rand::random::<u64>();
        self.settle(|view, placement| {
            let data = data.clone();
            async move {
                let targets = placement.replicas(oid, copies);
                let rpc = ObjectRpc::Write {
                    oid: oid.0,
                    offset,
                    sync,
                    write_id,
                };
                let results = self.fan_out(&targets, view.id, &rpc, &data).await?;
                let (have, lack): (Vec<_>, Vec<_>) =
                    targets.iter().zip(results).partition(|(_, r)| r.is_ok());
                if lack.is_empty() {
                    return Ok(());
                }
                let Some((source, _)) = have.first() else {
                    return Err(SheepError::Store(crate::store::StoreError::NoObject(oid)));
                };
                for (addr, _) in lack {
                    // The source applied this write before the copy was
                    // fetched, so a fresh copy holds it; a copy made by
                    // someone else meanwhile may not.
                    if !self.copy_object(view.id, oid, **source, *addr).await? {
                        self.call_replica(*addr, view.id, rpc.clone(), data.clone())
                            .await?;
                    }
                }
                Ok(())
            }
        })
        .await
    }

    /// Creates `oid` on all of its replicas with `data` at `offset`,
    /// replacing any copy already there.
    pub async fn create(
        &self,
        oid: ObjectId,
        offset: u64,
        data: Bytes,
        copies: usize,
        sync: bool,
    ) -> Result<(), SheepError> {
        self.create_with_mode(oid, offset, data, copies, sync, CreateMode::Replace)
            .await
    }

    /// Creates `oid` on all of its replicas; `mode` says what happens to a
    /// copy already there.
    pub async fn create_with_mode(
        &self,
        oid: ObjectId,
        offset: u64,
        data: Bytes,
        copies: usize,
        sync: bool,
        mode: CreateMode,
    ) -> Result<(), SheepError> {
        self.create_copies(oid, offset, data, copies, sync, mode, None)
            .await
    }

    /// Creates `oid` on all of its replicas, plain or backed.
    #[allow(clippy::too_many_arguments)]
    async fn create_copies(
        &self,
        oid: ObjectId,
        offset: u64,
        data: Bytes,
        copies: usize,
        sync: bool,
        mode: CreateMode,
        backing: Option<Backing>,
    ) -> Result<(), SheepError> {
        let write_id = rand::random::<u64>();
        self.settle(|view, placement| {
            let data = data.clone();
            async move {
                let targets = placement.replicas(oid, copies);
                let rpc = ObjectRpc::Create {
                    oid: oid.0,
                    offset,
                    mode,
                    sync,
                    write_id,
                    backing,
                };
                self.fan_out_all(&targets, view.id, &rpc, &data).await
            }
        })
        .await
    }

    /// Creates `oid` as a copy of `src` with `data` laid over it at
    /// `offset`: copy-on-write of a shared object. When `src` never changes
    /// (an object of a snapshot), nothing is copied: the new object is
    /// backed by `src` (see [`backing`]). Otherwise `src` is copied whole.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_from(
        &self,
        oid: ObjectId,
        src: ObjectId,
        src_copies: usize,
        src_immutable: bool,
        offset: u64,
        data: Bytes,
        copies: usize,
        sync: bool,
        mode: CreateMode,
    ) -> Result<(), SheepError> {
        let backing = Backing {
            oid: src.0,
            copies: src_copies as u8,
        };
        if src_immutable {
            return self
                .create_copies(oid, offset, data, copies, sync, mode, Some(backing))
                .await;
        }
        let base = self.fetch_whole(backing).await?;
        let (at, end) = (offset as usize, offset as usize + data.len());
        let mut full = bytes::BytesMut::from(&base[..]);
        if full.len() < end {
            full.resize(end, 0);
        }
        full[at..end].copy_from_slice(&data);
        self.create_copies(oid, 0, full.freeze(), copies, sync, mode, None)
            .await
    }

    /// Removes `oid` from all of its replicas.
    pub async fn remove(&self, oid: ObjectId, copies: usize) -> Result<(), SheepError> {
        self.settle(|view, placement| async move {
            let targets = placement.replicas(oid, copies);
            let rpc = ObjectRpc::Remove { oid: oid.0 };
            self.fan_out_all(&targets, view.id, &rpc, &Bytes::new())
                .await
        })
        .await
    }

    /// Makes every unsynced write durable on every storing node.
    pub async fn flush_all(&self) -> Result<(), SheepError> {
        self.settle(|view, _| async move {
            let targets: Vec<SocketAddr> = view.storage_members().map(|m| m.addr).collect();
            self.fan_out_all(&targets, view.id, &ObjectRpc::Flush, &Bytes::new())
                .await
        })
        .await
    }

    /// Sends `rpc` to every target in parallel. Transient failures abort the
    /// whole attempt (so `settle` retries it); "no object" and other definite
    /// answers are returned per target.
    async fn fan_out(
        &self,
        targets: &[SocketAddr],
        view: u64,
        rpc: &ObjectRpc,
        data: &Bytes,
    ) -> Result<Vec<Result<(), SheepError>>, SheepError> {
        if targets.is_empty() {
            return Err(SheepError::NoStorage);
        }
        let calls = targets.iter().map(|addr| {
            let (rpc, data) = (rpc.clone(), data.clone());
            async move {
                if *addr == self.local {
                    // Let the peers' requests reach their sockets first: a
                    // local write may occupy this thread (or the CPU its
                    // blocking thread wakes on) for tens of microseconds,
                    // and the replicas should be working meanwhile.
                    tokio::task::yield_now().await;
                }
                self.call_replica(*addr, view, rpc, data).await
            }
        });
        let mut out = Vec::with_capacity(targets.len());
        for r in futures::future::join_all(calls).await {
            match r {
                Err(e) if e.is_transient() => return Err(e),
                Err(e) if e.is_no_object() => out.push(Err(e)),
                Err(e) => return Err(e),
                Ok(_) => out.push(Ok(())),
            }
        }
        Ok(out)
    }

    /// Sends `rpc` to every target in parallel; succeeds only if all do.
    async fn fan_out_all(
        &self,
        targets: &[SocketAddr],
        view: u64,
        rpc: &ObjectRpc,
        data: &Bytes,
    ) -> Result<(), SheepError> {
        self.fan_out(targets, view, rpc, data)
            .await?
            .into_iter()
            .collect()
    }
}
