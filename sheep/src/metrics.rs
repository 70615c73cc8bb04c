//! Metrics in Prometheus's text format, served at `/metrics` on the HTTP
//! port.
//!
//! Two kinds:
//! - *Data-path instruments* (client requests per front end and operation,
//!   their latency, peer RPC latency) are registered once, when first used,
//!   and kept in [`Instruments`]: the hot path then only increments an
//!   atomic counter and records into a lock-free histogram, with no lookup,
//!   lock or allocation per request.
//! - *State gauges* (capacity, objects, recovery progress, membership,
//!   attach locks) are read from the node when `/metrics` is scraped, by
//!   [`collect`], so nothing on the data path maintains them.
//!
//! The recorder is process-global (the `metrics` facade's design), which
//! fits the daemon: one sheep per process. Without a recorder (the
//! in-process multi-sheep tests) every instrument is a no-op.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::node::Sheep;

/// Latency buckets in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric name the daemon exports (the Grafana dashboard test checks
/// that each metric the dashboard queries is one of these).
pub const METRIC_NAMES: &[&str] = &[
    "sheepfold_client_requests_total",
    "sheepfold_client_request_errors_total",
    "sheepfold_client_request_duration_seconds",
    "sheepfold_peer_rpc_duration_seconds",
    "sheepfold_peer_rpc_errors_total",
    "sheepfold_node_capacity_bytes",
    "sheepfold_node_used_bytes",
    "sheepfold_node_free_bytes",
    "sheepfold_node_running",
    "sheepfold_objects",
    "sheepfold_object_bytes",
    "sheepfold_recovery_in_progress",
    "sheepfold_recovery_pass_objects",
    "sheepfold_recovery_pass_done",
    "sheepfold_recovery_pass_remaining",
    "sheepfold_recovery_received_objects_total",
    "sheepfold_recovery_received_bytes_total",
    "sheepfold_recovery_sent_bytes_total",
    "sheepfold_membership_changes_total",
    "sheepfold_cluster_epoch",
    "sheepfold_view_members",
    "sheepfold_vdis",
    "sheepfold_locked_vdis",
    "sheepfold_attachments",
    "sheepfold_nbd_sessions",
    "sheepfold_store_synced_writes_total",
];

/// Counters and a histogram for one kind of client request.
pub struct OpInstruments {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
}

impl OpInstruments {
    fn new(frontend: &'static str, op: &'static str) -> Self {
        let labels = [("frontend", frontend), ("op", op)];
        OpInstruments {
            requests: counter!("sheepfold_client_requests_total", &labels),
            errors: counter!("sheepfold_client_request_errors_total", &labels),
            latency: histogram!("sheepfold_client_request_duration_seconds", &labels),
        }
    }

    /// Records one request that took `took`.
    pub fn record(&self, took: Duration, ok: bool) {
        self.requests.increment(1);
        if !ok {
            self.errors.increment(1);
        }
        self.latency.record(took.as_secs_f64());
    }
}

/// Client request instruments of one front end, by operation.
pub struct FrontendInstruments {
    /// Reads.
    pub read: OpInstruments,
    /// Writes (and creates).
    pub write: OpInstruments,
    /// Flushes.
    pub flush: OpInstruments,
    /// Everything else (trim, block status, VDI and admin requests).
    pub other: OpInstruments,
}

impl FrontendInstruments {
    fn new(frontend: &'static str) -> Self {
        FrontendInstruments {
            read: OpInstruments::new(frontend, "read"),
            write: OpInstruments::new(frontend, "write"),
            flush: OpInstruments::new(frontend, "flush"),
            other: OpInstruments::new(frontend, "other"),
        }
    }
}

/// The data-path instruments.
pub struct Instruments {
    /// NBD requests.
    pub nbd: FrontendInstruments,
    /// Sheepdog-protocol requests (QEMU, dog).
    pub sheepdog: FrontendInstruments,
    /// Peer RPC round trips.
    pub peer_rpc: Histogram,
    /// Peer RPCs that failed (network, timeout, view mismatch).
    pub peer_errors: Counter,
}

/// The instruments, registered on first use.
pub fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| Instruments {
        nbd: FrontendInstruments::new("nbd"),
        sheepdog: FrontendInstruments::new("sheepdog"),
        peer_rpc: histogram!("sheepfold_peer_rpc_duration_seconds"),
        peer_errors: counter!("sheepfold_peer_rpc_errors_total"),
    })
}

/// Installs the process-wide Prometheus recorder (call before anything
/// records) and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let upkeep = handle.clone();
    // Without the exporter's own HTTP listener, histograms are drained
    // only by upkeep.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Sets the state gauges from the node (at scrape time).
pub async fn collect(sheep: &Sheep, nbd_sessions: usize) {
    let r = sheep.report().await;
    gauge!("sheepfold_node_capacity_bytes").set((r.used + r.free) as f64);
    gauge!("sheepfold_node_used_bytes").set(r.used as f64);
    gauge!("sheepfold_node_free_bytes").set(r.free as f64);
    gauge!("sheepfold_node_running").set(if r.status == "running" { 1.0 } else { 0.0 });
    gauge!("sheepfold_objects").set(r.objects as f64);
    gauge!("sheepfold_object_bytes").set(r.object_bytes as f64);
    gauge!("sheepfold_recovery_in_progress").set(if r.in_recovery { 1.0 } else { 0.0 });
    gauge!("sheepfold_recovery_pass_objects").set(r.recovery_total as f64);
    gauge!("sheepfold_recovery_pass_done").set(r.recovery_done as f64);
    gauge!("sheepfold_recovery_pass_remaining")
        .set(r.recovery_total.saturating_sub(r.recovery_done) as f64);
    let c = sheep.recovery.counters();
    counter!("sheepfold_recovery_received_objects_total").absolute(c.objects_received);
    counter!("sheepfold_recovery_received_bytes_total").absolute(c.bytes_received);
    counter!("sheepfold_recovery_sent_bytes_total").absolute(c.bytes_sent);
    counter!("sheepfold_membership_changes_total").absolute(sheep.membership_changes());
    gauge!("sheepfold_cluster_epoch").set(f64::from(sheep.format.epoch()));
    gauge!("sheepfold_view_members").set(sheep.view().members.len() as f64);
    gauge!("sheepfold_vdis").set(sheep.vdis.registry().live_vids().len() as f64);
    let locked = sheep.vdis.ledger().locked();
    gauge!("sheepfold_locked_vdis").set(locked.len() as f64);
    let (holders, pending, read_only) = crate::frontend::attach::count(&locked);
    gauge!("sheepfold_attachments", "kind" => "holder").set(holders as f64);
    gauge!("sheepfold_attachments", "kind" => "pending").set(pending as f64);
    gauge!("sheepfold_attachments", "kind" => "read_only").set(read_only as f64);
    gauge!("sheepfold_nbd_sessions").set(nbd_sessions as f64);
    if let Some(store) = sheep.gateway.store() {
        let w = store.synced_writes();
        counter!("sheepfold_store_synced_writes_total", "how" => "fdatasync").absolute(w.fdatasync);
        counter!("sheepfold_store_synced_writes_total", "how" => "overwrite").absolute(w.overwrite);
    }
}
