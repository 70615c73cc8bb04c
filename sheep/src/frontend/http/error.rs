//! The storage API's errors: a stable machine-readable code, a message for
//! people, and an HTTP status. The body is always
//! `{"error": {"code": "...", "message": "..."}}`; the codes are listed in
//! the OpenAPI file and never change meaning.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qemu_proto::SdResult;
use serde_json::json;

use crate::error::SheepError;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
}

/// Every error code the API returns, with its HTTP status.
pub const CODES: &[(&str, u16)] = &[
    ("bad_request", 400),
    ("bad_name", 400),
    ("bad_size", 400),
    ("no_vdi", 404),
    ("no_snapshot", 404),
    ("not_locked", 404),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("vdi_exists", 409),
    ("snapshot_exists", 409),
    ("locked", 409),
    ("read_only", 409),
    ("idempotency_conflict", 422),
    ("internal", 500),
    ("halted", 503),
    ("not_formatted", 503),
    ("waiting_for_join", 503),
    ("try_again", 503),
    ("no_space", 507),
];

impl ApiError {
    /// An error with `code`, whose status comes from [`CODES`].
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        let status = CODES
            .iter()
            .find(|(c, _)| *c == code)
            .and_then(|(_, s)| StatusCode::from_u16(*s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<SheepError> for ApiError {
    fn from(e: SheepError) -> Self {
        let message = match &e {
            SheepError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let code = match e.result() {
            SdResult::NO_VDI | SdResult::NO_BASE_VDI => "no_vdi",
            SdResult::NO_TAG => "no_snapshot",
            SdResult::VDI_EXIST => "vdi_exists",
            SdResult::VDI_LOCKED => "locked",
            SdResult::VDI_NOT_LOCKED => "not_locked",
            SdResult::INVALID_PARMS => "bad_request",
            SdResult::READONLY => "read_only",
            SdResult::HALT => "halted",
            SdResult::WAIT_FOR_FORMAT => "not_formatted",
            SdResult::WAIT_FOR_JOIN => "waiting_for_join",
            SdResult::AGAIN | SdResult::NETWORK_ERROR => "try_again",
            SdResult::NO_SPACE | SdResult::FULL_VDI => "no_space",
            _ => "internal",
        };
        ApiError::new(code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(ApiError::new("no_vdi", "x").status, StatusCode::NOT_FOUND);
        assert_eq!(ApiError::new("locked", "x").status, StatusCode::CONFLICT);
        let e: ApiError = SheepError::Refused {
            code: SdResult::VDI_LOCKED,
            message: "held by hv-a".into(),
        }
        .into();
        assert_eq!((e.code, e.message.as_str()), ("locked", "held by hv-a"));
        let e: ApiError = SheepError::from(SdResult::HALT).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        for (code, status) in CODES {
            assert_eq!(ApiError::new(code, "").status.as_u16(), *status, "{code}");
        }
    }
}
