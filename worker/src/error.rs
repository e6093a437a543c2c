//! The crate's one error type and the JSON envelope every response uses.
//!
//! Every handler returns `Result<_, ApiError>`; the status code of each variant is decided here
//! and nowhere else, so the HTTP layer and the Durable Object call layer agree on it.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Bad query parameters, malformed path ids, and other bad input outside a body.
    BadRequest(String),
    /// A request body that is not what the route takes: 400 `Invalid request body` with every
    /// problem as a zod-shaped issue (see [`crate::body`]), as the reference answers.
    InvalidBody(Vec<Value>),
    /// No credentials, or credentials that do not verify.
    Unauthorized(String),
    /// Valid credentials that do not cover this rig, agent or route.
    Forbidden(String),
    NotFound(String),
    /// The request conflicts with the current state (a different bead is hooked, duplicate identity).
    Conflict(String),
    /// A limit was reached (a spending cap, the mayor's per-turn limits); the message names it.
    TooManyRequests(String),
    /// A dependency is not there yet (the town's container when none can run).
    Unavailable(String),
    /// Anything unexpected. The detail is logged, never sent: it may name internals.
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// Anything unexpected, from any error type (the detail is logged, never sent).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// `Bead not found`, `Agent not found`, ... (the reference's capitalisation).
    pub fn not_found(what: &str) -> Self {
        let mut chars = what.chars();
        let first: String = chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
        Self::NotFound(format!("{first}{} not found", chars.as_str()))
    }

    /// An unknown path, or a known path with another method (the reference has no 405).
    pub fn no_route() -> Self {
        Self::NotFound("Not found".into())
    }

    /// One body problem that is not about a particular field (`path: []`).
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::InvalidBody(vec![crate::body::custom(Vec::new(), &message.into())])
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) | Self::InvalidBody(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::TooManyRequests(_) => 429,
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
            | Self::TooManyRequests(m)
            | Self::Unavailable(m) => m,
            Self::InvalidBody(_) => "Invalid request body",
            Self::Internal(_) => "Internal server error",
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
            409 => Self::Conflict(message),
            429 => Self::TooManyRequests(message),
            503 => Self::Unavailable(message),
            _ => Self::Internal(format!("status {status}: {message}")),
        }
    }

    /// `{"success": false, "error": "..."}`, plus `"issues": [...]` for an invalid body.
    pub fn envelope(&self) -> Value {
        match self {
            Self::InvalidBody(issues) => {
                json!({ "success": false, "error": self.public_message(), "issues": issues })
            }
            _ => json!({ "success": false, "error": self.public_message() }),
        }
    }

    /// Every issue's message, `; `-joined (an invalid body's detail; the message otherwise).
    pub fn detail(&self) -> String {
        match self {
            Self::InvalidBody(issues) => issues
                .iter()
                .map(|i| format!("{}: {}", i["path"], i["message"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.public_message().to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Internal(detail) => write!(f, "internal error: {detail}"),
            Self::InvalidBody(_) => write!(f, "400 Invalid request body: {}", self.detail()),
            other => write!(f, "{} {}", other.status(), other.public_message()),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    /// Body parse errors: serde's message says what was wrong ("unknown variant `x`, expected
    /// one of ...", "invalid type: integer, expected a string"), as a `custom` issue.
    fn from(e: serde_json::Error) -> Self {
        Self::invalid_body(e.to_string())
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
            ApiError::no_route(),
            ApiError::Conflict("x".into()),
            ApiError::TooManyRequests("x".into()),
            ApiError::Unavailable("x".into()),
        ] {
            let back = ApiError::from_status(e.status(), e.public_message().to_string());
            assert_eq!(back, e);
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let e = ApiError::Internal("SQLITE_ERROR near secret".into());
        assert_eq!(e.envelope(), json!({"success": false, "error": "Internal server error"}));
        assert_eq!(e.status(), 500);
    }

    #[test]
    fn reference_messages() {
        assert_eq!(ApiError::not_found("bead").public_message(), "Bead not found");
        assert_eq!(ApiError::not_found("agent").public_message(), "Agent not found");
        assert_eq!(
            ApiError::no_route().envelope(),
            json!({"success": false, "error": "Not found"})
        );
        let e = ApiError::invalid_body("bad");
        assert_eq!(
            e.envelope(),
            json!({"success": false, "error": "Invalid request body", "issues": [{"code": "custom", "path": [], "message": "bad"}]})
        );
        assert_eq!(e.status(), 400);
    }
}
