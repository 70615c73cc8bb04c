//! Issue 6, "Done when" 4: `/metrics` in Prometheus's text format, scraped
//! while a recovery runs, and the Grafana dashboard.
//!
//! [`recovery_moves_the_counters`]: 3 sheep in distinct zones, 2 copies,
//! `--recovery-grace 0` and a slow recovery throttle. After client I/O over
//! NBD and the Sheepdog protocol (dog), the request counters and latency
//! histograms of both front ends and of peer RPC are non-zero; an attach shows
//! in the lock gauges. Then a 4th node joins: scraping it while recovery runs
//! shows a pass in progress with objects to move, the received-objects counter
//! rising from scrape to scrape, and the membership-changes counter counting
//! the join; at the end nothing is left to move.
//! [`dashboard_queries_exported_metrics`]: the Grafana JSON parses and every
//! metric its queries name is one the server exports.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sheepfold_tests::api::Api;
use sheepfold_tests::cluster::Cluster;
use sheepfold_tests::data::random_bytes;
use sheepfold_tests::nbd_raw::{self, good_read, good_write};

const MIB: usize = 1 << 20;

/// A scrape: (metric with labels, value) per sample line.
fn scrape(api: &Api) -> Vec<(String, f64)> {
    let a = api.get("/metrics");
    assert_eq!(a.status, 200, "{}", a.text);
    a.text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn value(samples: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            let base = k.split('{').next().unwrap_or_default();
            base == name && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

fn names(samples: &[(String, f64)]) -> BTreeSet<String> {
    samples
        .iter()
        .map(|(k, _)| k.split('{').next().unwrap_or_default().to_string())
        .collect()
}

fn cluster() -> Cluster {
    let c = Cluster::builder()
        .nodes(3)
        .distinct_zones()
        .sheep_args(&["--recovery-grace", "0", "-R", "max=1,interval=200"])
        .start();
    c.format(2);
    c
}

/// Client I/O through both front ends and an attach.
fn activity(c: &Cluster) {
    let api = Api::new(c.http_port(0));
    api.expect(
        201,
        "POST",
        "/v1/vdis",
        Some(&json!({"name": "busy", "size": 64 * MIB})),
    );
    let data = random_bytes(9, 64 * MIB);
    let (mut s, _) = nbd_raw::session(c.nbd_port(0), "busy");
    for off in (0..64 * MIB).step_by(MIB) {
        good_write(&mut s, off as u64, &data[off..off + MIB]);
    }
    assert_eq!(good_read(&mut s, 0, 4096), data[..4096]);
    drop(s);
    c.write_vdi(0, "busy", 0, &data[..MIB]);
    api.expect(
        201,
        "POST",
        "/v1/vdis/busy/attachments",
        Some(&json!({"host": "hv"})),
    );
}

#[test]
fn recovery_moves_the_counters() {
    let mut c = cluster();
    activity(&c);
    let api0 = Api::new(c.http_port(0));
    let m = scrape(&api0);
    for (frontend, op) in [("nbd", "write"), ("nbd", "read"), ("sheepdog", "write")] {
        let labels = [
            &format!("frontend=\"{frontend}\"") as &str,
            &format!("op=\"{op}\""),
        ];
        assert!(
            value(&m, "sheepfold_client_requests_total", &labels) > 0.0,
            "{frontend} {op}"
        );
        assert!(
            value(
                &m,
                "sheepfold_client_request_duration_seconds_count",
                &labels
            ) > 0.0,
            "{frontend} {op} latency"
        );
        assert!(
            value(
                &m,
                "sheepfold_client_request_duration_seconds_bucket",
                &labels
            ) > 0.0,
            "{frontend} {op} histogram buckets"
        );
    }
    assert!(value(&m, "sheepfold_peer_rpc_duration_seconds_count", &[]) > 0.0);
    assert!(value(&m, "sheepfold_objects", &[]) > 0.0);
    assert!(value(&m, "sheepfold_object_bytes", &[]) > 0.0);
    // Every node reports its own share; together they hold both copies of the 64 MiB VDI
    // (each node's share depends on the ring, so only the sum is certain).
    let held: f64 = (0..3)
        .map(|i| {
            value(
                &scrape(&Api::new(c.http_port(i))),
                "sheepfold_object_bytes",
                &[],
            )
        })
        .sum();
    assert!(
        held >= (2 * 64 * MIB) as f64,
        "object bytes over all nodes: {held}"
    );
    assert!(value(&m, "sheepfold_node_capacity_bytes", &[]) > 0.0);
    assert_eq!(
        value(&m, "sheepfold_attachments", &["kind=\"holder\""]),
        1.0
    );
    assert_eq!(value(&m, "sheepfold_locked_vdis", &[]), 1.0);
    assert_eq!(value(&m, "sheepfold_view_members", &[]), 3.0);
    let changes_before = value(&m, "sheepfold_membership_changes_total", &[]);

    // A 4th node joins: the ring gives it objects, which it pulls slowly.
    let new = c.add_node();
    let api_new = Api::new(c.http_port(new));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut received = Vec::new();
    let mut saw_pass = false;
    loop {
        let m = scrape(&api_new);
        let got = value(&m, "sheepfold_recovery_received_objects_total", &[]);
        let in_progress = value(&m, "sheepfold_recovery_in_progress", &[]);
        let remaining = value(&m, "sheepfold_recovery_pass_remaining", &[]);
        if in_progress == 1.0 && remaining > 0.0 {
            saw_pass = true;
        }
        if received.last() != Some(&got) {
            received.push(got);
        }
        if saw_pass && got > 0.0 && in_progress == 0.0 && remaining == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recovery did not finish: received {received:?}, in progress {in_progress}, remaining {remaining}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(saw_pass, "never saw a pass with objects to move");
    assert!(
        received.len() >= 3,
        "the received-objects counter should rise over several scrapes during recovery: {received:?}"
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "{received:?}");
    let after = scrape(&api0);
    assert!(
        value(&after, "sheepfold_membership_changes_total", &[]) > changes_before,
        "the join is a membership change"
    );
    assert_eq!(value(&after, "sheepfold_view_members", &[]), 4.0);
    for i in 0..c.len() {
        c.assert_no_panic(i);
    }
}

/// Every `sheepfold_*` metric a PromQL expression names.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sheepfold_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_queries_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the Grafana dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let c = Cluster::builder().nodes(1).start();
    c.format(1);
    activity(&c);
    let exported = names(&scrape(&Api::new(c.http_port(0))));
    let mut queried = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let found = metrics_in(expr);
            assert!(!found.is_empty(), "query names no metric: {expr}");
            queried.extend(found);
        }
    }
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not export: {missing:?}"
    );
    // Everything issue 6 asks to watch is on the dashboard.
    for m in [
        "sheepfold_node_capacity_bytes",
        "sheepfold_node_used_bytes",
        "sheepfold_objects",
        "sheepfold_object_bytes",
        "sheepfold_client_requests_total",
        "sheepfold_client_request_duration_seconds_bucket",
        "sheepfold_peer_rpc_duration_seconds_bucket",
        "sheepfold_recovery_pass_remaining",
        "sheepfold_recovery_pass_done",
        "sheepfold_recovery_received_objects_total",
        "sheepfold_membership_changes_total",
        "sheepfold_attachments",
    ] {
        assert!(queried.contains(m), "the dashboard does not show {m}");
    }
}
