//! Idempotent requests: a create, clone, snapshot, attach, detach or delete
//! sent with an `Idempotency-Key` header is answered once; repeating it
//! with the same key (through this node or any other) returns the first
//! answer, marked with `Idempotent-Replayed: true`, without doing anything.
//!
//! Scope (also in the README): the answer is stored in the ledger, which
//! every node holds, before it is returned; repeats on this node wait for a
//! first attempt still running; two copies of one request sent at the same
//! moment to two different nodes may both run (creates and deletes of one
//! name are still ordered by its owner, so one of them takes effect and the
//! other gets `vdi_exists` or `no_vdi`). Successful and client-error (4xx)
//! answers are kept for 24 hours; server errors (5xx) are not, so a retry
//! after `halted` or `try_again` runs again. A key reused for a different
//! request gets `idempotency_conflict`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use crate::vdi::{RequestRecord, VdiService};

/// The request header carrying the key.
pub const HEADER: &str = "idempotency-key";

/// The answer header marking a replay.
pub const REPLAYED: &str = "idempotent-replayed";

/// Keys being answered on this node right now.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The key of a request, if it has a valid one.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 200 printable ASCII characters")
        })?;
    Ok(Some(k.to_string()))
}

/// What identifies a request besides its key.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    format!(
        "{method} {path} {}:{:08x}",
        body.len(),
        crc32c::crc32c(body)
    )
}

/// An answer: status and JSON body.
pub type Answer = Result<(StatusCode, Value), ApiError>;

fn respond(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

impl InFlight {
    /// Runs `op` unless `key` was answered before; stores the answer.
    pub async fn run<F>(
        &self,
        vdis: &VdiService,
        key: Option<String>,
        fingerprint: String,
        op: F,
    ) -> Response
    where
        F: Future<Output = Answer>,
    {
        let Some(key) = key else {
            return match op.await {
                Ok((status, body)) => respond(status, body),
                Err(e) => e.into_response(),
            };
        };
        let slot = self
            .keys
            .lock()
            .expect("in-flight lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = slot.lock().await;
        let response = match vdis.ledger().request(&key) {
            Some(rec) if rec.fingerprint != fingerprint => ApiError::new(
                "idempotency_conflict",
                format!("Idempotency-Key {key:?} was used for a different request"),
            )
            .into_response(),
            Some(rec) => replay(&rec),
            None => {
                let (status, body) = match op.await {
                    Ok(answer) => answer,
                    Err(e) => (e.status, e.body()),
                };
                if status.is_success() || status.is_client_error() {
                    let rec = RequestRecord {
                        fingerprint,
                        status: status.as_u16(),
                        body: body.to_string(),
                        at: crate::util::unix_now(),
                    };
                    vdis.share_request(&key, rec).await;
                }
                respond(status, body)
            }
        };
        drop(guard);
        let mut keys = self.keys.lock().expect("in-flight lock");
        if Arc::strong_count(&slot) <= 2 {
            keys.remove(&key);
        }
        response
    }
}

fn replay(rec: &RequestRecord) -> Response {
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
    let body: Value = serde_json::from_str(&rec.body).unwrap_or(Value::Null);
    let mut r = respond(status, body);
    r.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    r
}
