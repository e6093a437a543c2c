//! The crate's one error type and the JSON envelope every response uses.
//!
//! Every handler returns `Result<_, ApiError>`; the status code of each variant is decided here
//! and nowhere else, so the HTTP layer and the Durable Object call layer agree on it.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown enum values, failed validation, oversized bodies.
    BadRequest(String),
    /// No credentials, or credentials that do not verify.
    Unauthorized(String),
    /// Valid credentials that do not cover this rig, agent or route.
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    /// The request conflicts with the current state (a different bead is hooked, duplicate identity).
    Conflict(String),
    /// A dependency is not there yet (the town's container before issue 4).
    Unavailable(String),
    /// Anything unexpected. The detail is logged, never sent: it may name internals.
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict(_) => 409,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The message a client sees.
    pub fn public_message(&self) -> &str {
        match self {
            Self::BadRequest(m)
            | Self::Unauthorized(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Unavailable(m) => m,
            Self::MethodNotAllowed => "method not allowed",
            Self::Internal(_) => "internal error",
        }
    }

    /// Rebuilds an error from a status and message received from a Durable Object, so an error
    /// raised inside a DO reaches the client with the same status.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            400 => Self::BadRequest(message),
            401 => Self::Unauthorized(message),
            403 => Self::Forbidden(message),
            404 => Self::NotFound(message),
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict(message),
            503 => Self::Unavailable(message),
            _ => Self::Internal(format!("status {status}: {message}")),
        }
    }

    /// `{"success": false, "error": "..."}`
    pub fn envelope(&self) -> Value {
        json!({ "success": false, "error": self.public_message() })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Internal(detail) => write!(f, "internal error: {detail}"),
            other => write!(f, "{} {}", other.status(), other.public_message()),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    /// Body parse errors: serde's message says what was wrong and where ("unknown variant
    /// `x`, expected one of ...", "invalid type: integer, expected a string at line 1").
    fn from(e: serde_json::Error) -> Self {
        Self::BadRequest(format!("invalid request body: {e}"))
    }
}

/// `{"success": true, "data": ...}`
pub fn success(data: Value) -> Value {
    json!({ "success": true, "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_do_replies() {
        for e in [
            ApiError::bad_request("x"),
            ApiError::Unauthorized("x".into()),
            ApiError::Forbidden("x".into()),
            ApiError::not_found("bead"),
            ApiError::Conflict("x".into()),
            ApiError::Unavailable("x".into()),
        ] {
            let back = ApiError::from_status(e.status(), e.public_message().to_string());
            assert_eq!(back, e);
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let e = ApiError::Internal("SQLITE_ERROR near secret".into());
        assert_eq!(e.envelope(), json!({"success": false, "error": "internal error"}));
        assert_eq!(e.status(), 500);
    }
}
