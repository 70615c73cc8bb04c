//! Handlers for the cluster as a whole: status and capacity of the cluster
//! and of each node, every attach lock, `/metrics`, the OpenAPI file, and
//! the JSON answers for unknown routes and methods.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{model, Api, OPENAPI};
use crate::cluster::Member;
use crate::error::SheepError;
use crate::node::NodeReport;

fn node_json(m: &Member, report: &Result<NodeReport, SheepError>) -> Value {
    let mut v = json!({
        "addr": m.addr.to_string(),
        "zone": m.zone,
        "vnodes": m.vnodes,
    });
    match report {
        Ok(r) => {
            v["status"] = json!(r.status);
            v["capacity"] = json!({"total": r.used + r.free, "used": r.used, "free": r.free});
            v["objects"] = json!(r.objects);
            v["object_bytes"] = json!(r.object_bytes);
            v["recovery"] = json!({
                "in_progress": r.in_recovery,
                "done": r.recovery_done,
                "total": r.recovery_total,
            });
            v["nbd_port"] = json!(r.ports.nbd);
            v["http_port"] = json!(r.ports.http);
        }
        Err(e) => {
            v["status"] = json!("unreachable");
            v["error"] = json!(e.to_string());
        }
    }
    v
}

/// `GET /v1/cluster`: status, format, capacity, and every node.
pub async fn cluster(State(api): State<Api>) -> axum::Json<Value> {
    let sheep = &api.sheep;
    let reports = sheep.cluster_report().await;
    let (mut used, mut free, mut objects) = (0u64, 0u64, 0u64);
    for (m, r) in &reports {
        if let (true, Ok(r)) = (m.stores_data(), r) {
            used += r.used;
            free += r.free;
            objects += r.objects;
        }
    }
    let cfg = sheep.format.config();
    let attachments: usize = sheep
        .vdis
        .ledger()
        .locked()
        .iter()
        .map(|(_, s)| s.attachments.len())
        .sum();
    axum::Json(json!({
        "status": sheep.status().as_str(),
        "epoch": sheep.format.epoch(),
        "ctime": cfg.as_ref().map(|c| c.ctime),
        "copies": cfg.as_ref().map(|c| c.copies),
        "block_size_shift": cfg.as_ref().map(|c| c.block_size_shift),
        "capacity": {"total": used + free, "used": used, "free": free},
        "objects": objects,
        "vdis": sheep.vdis.registry().live_vids().len(),
        "attachments": attachments,
        "nodes": reports.iter().map(|(m, r)| node_json(m, r)).collect::<Vec<_>>(),
    }))
}

/// `GET /v1/nodes`: every node of the view with its status and capacity.
pub async fn nodes(State(api): State<Api>) -> axum::Json<Value> {
    let reports = api.sheep.cluster_report().await;
    axum::Json(json!({
        "nodes": reports.iter().map(|(m, r)| node_json(m, r)).collect::<Vec<_>>(),
    }))
}

/// `GET /v1/node`: the node answering.
pub async fn node(State(api): State<Api>) -> axum::Json<Value> {
    let me = api.sheep.membership.local();
    axum::Json(node_json(&me, &Ok(api.sheep.report().await)))
}

/// `GET /v1/locks`: every attachment of every VDI (what `dog vdi lock
/// list` shows).
pub async fn locks(State(api): State<Api>) -> axum::Json<Value> {
    let list: Vec<Value> = api
        .sheep
        .vdis
        .ledger()
        .locked()
        .iter()
        .flat_map(|(name, s)| {
            s.attachments
                .iter()
                .map(|a| model::attachment_json(name, a))
                .collect::<Vec<_>>()
        })
        .collect();
    axum::Json(json!({ "attachments": list }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(api): State<Api>) -> Response {
    crate::metrics::collect(&api.sheep, api.catalog.session_count()).await;
    let text = api.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/openapi.json`: this API's description.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Any other path.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new("not_found", format!("no such route: {}", uri.path()))
}

/// A known path with a method it does not take.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut r = ApiError::new(
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
