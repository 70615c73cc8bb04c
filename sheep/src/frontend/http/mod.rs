//! The storage-driver API: HTTP/JSON for cloud panels, served by every sheep
//! on `--http-port` (axum), with `/metrics` for Prometheus beside it.
//!
//! Owns the routes, the request and answer documents and the mapping of
//! errors to stable codes; the work is done by the VDI layer
//! ([`crate::vdi::VdiService`]) and the node. Every route is registered
//! through [`Routes::add`], which also records it, so [`route_table`] is
//! exactly what the router serves; a test checks it against
//! `docs/openapi.json`, which the server also serves at
//! `/v1/openapi.json`.
//!
//! Invariants: a handler never panics on input (bodies are parsed by hand
//! into strict types, sizes and names are checked before use), every
//! error is JSON with a code from [`error::CODES`], and handlers hold no
//! state of their own besides the in-flight idempotency keys, so
//! concurrent calls are as safe as the VDI layer's operations, which are
//! ordered by the owners of the names and families they touch.

mod cluster;
pub mod error;
mod idempotency;
pub mod model;
mod vdis;

use std::sync::Arc;

use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::frontend::attach::AttachCatalog;
use crate::node::Sheep;

pub use error::ApiError;
pub use idempotency::{HEADER as IDEMPOTENCY_HEADER, REPLAYED as REPLAYED_HEADER};

/// The OpenAPI description of this API (served at `/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

/// What every handler can reach.
#[derive(Clone)]
pub struct Api {
    sheep: Arc<Sheep>,
    catalog: Arc<AttachCatalog>,
    metrics: Option<PrometheusHandle>,
    inflight: Arc<idempotency::InFlight>,
}

impl Api {
    /// The API of `sheep`, whose NBD exports `catalog` serves; `metrics`
    /// renders `/metrics` (`None`: no recorder installed, `/metrics` is
    /// empty).
    pub fn new(
        sheep: Arc<Sheep>,
        catalog: Arc<AttachCatalog>,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Api {
            sheep,
            catalog,
            metrics,
            inflight: Arc::default(),
        }
    }
}

/// A router that remembers what it routes.
struct Routes {
    router: Router<Api>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<Api>) -> Self {
        self.router = self.router.route(path, route);
        self.table.push((method, path));
        self
    }
}

fn routes() -> Routes {
    Routes {
        router: Router::new(),
        table: Vec::new(),
    }
    .add("get", "/v1/cluster", get(cluster::cluster))
    .add("get", "/v1/nodes", get(cluster::nodes))
    .add("get", "/v1/node", get(cluster::node))
    .add("get", "/v1/locks", get(cluster::locks))
    .add("get", "/v1/openapi.json", get(cluster::openapi))
    .add("get", "/metrics", get(cluster::metrics))
    .add("get", "/v1/vdis", get(vdis::list))
    .add("post", "/v1/vdis", post(vdis::create))
    .add("get", "/v1/vdis/{name}", get(vdis::show))
    .add("delete", "/v1/vdis/{name}", delete(vdis::remove))
    .add("post", "/v1/vdis/{name}/resize", post(vdis::resize))
    .add("post", "/v1/vdis/{name}/snapshots", post(vdis::snapshot))
    .add(
        "delete",
        "/v1/vdis/{name}/snapshots/{tag}",
        delete(vdis::remove_snapshot),
    )
    .add(
        "post",
        "/v1/vdis/{name}/snapshots/{tag}/clones",
        post(vdis::clone),
    )
    .add("get", "/v1/vdis/{name}/attachments", get(vdis::attachments))
    .add("post", "/v1/vdis/{name}/attachments", post(vdis::attach))
    .add(
        "delete",
        "/v1/vdis/{name}/attachments/{id}",
        delete(vdis::detach),
    )
}

/// Every (method, path) the API serves, paths in OpenAPI's template form.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().table
}

/// The complete router.
pub fn router(api: Api) -> Router {
    routes()
        .router
        .fallback(cluster::not_found)
        .method_not_allowed_fallback(cluster::method_not_allowed)
        .with_state(api)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(api: Api, listener: TcpListener) {
    if let Err(e) = axum::serve(listener, router(api)).await {
        tracing::error!("the HTTP API stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI file documents exactly the routes the router serves.
    #[test]
    fn openapi_matches_the_router() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = route_table()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        // Every error code is documented, and nothing else.
        let codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
            ["properties"]["code"]["enum"]
            .as_array()
            .expect("error code enum")
            .iter()
            .map(|c| c.as_str().expect("code"))
            .collect();
        let mut ours: Vec<&str> = error::CODES.iter().map(|(c, _)| *c).collect();
        let mut theirs = codes.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}
