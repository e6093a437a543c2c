//! The control server's one error type. Every handler returns `Result<_, Error>`; this file
//! alone decides which status code and message each failure gets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared_types::{BodyIssue, ErrorBody, ValidationIssue};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or invalid; nothing was changed.
    #[error("{message}")]
    BadRequest { message: String, issues: Vec<ValidationIssue> },
    #[error("{0}")]
    TooLarge(String),
    #[error("missing or wrong container token")]
    Unauthorized,
    /// Authenticated, but not allowed to act for this agent.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the agent's current state (e.g. already running).
    #[error("{0}")]
    Conflict(String),
    /// A git operation failed (clone, fetch, worktree); the message is safe to show.
    #[error("git: {0}")]
    Git(String),
    /// The Kilo CLI did not start or did not answer.
    #[error("agent runtime: {0}")]
    Agent(String),
    /// No room for another agent now (see `capacity.rs`); the caller should try again later.
    #[error("{0}")]
    AtCapacity(String),
    /// The server is shutting down and takes no new work.
    #[error("the control server is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Git's own refusals (what the request named is not there) are the caller's to fix.
impl From<crate::git::GitError> for Error {
    fn from(e: crate::git::GitError) -> Self {
        match e {
            crate::git::GitError::Invalid(m) => Self::bad_request(m),
            crate::git::GitError::Failed(m) => Self::Git(m),
        }
    }
}

impl Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), issues: Vec::new() }
    }

    /// Every problem of a request body, as the reference answers it: `Invalid request body`
    /// with one issue per problem.
    pub fn invalid(issues: Vec<ValidationIssue>) -> Self {
        Self::BadRequest { message: "Invalid request body".into(), issues }
    }

    /// The reference's words for an agent the server does not know.
    pub fn unknown_agent(agent_id: &str) -> Self {
        Self::NotFound(format!("Agent {agent_id} not found"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Git(_) | Self::Agent(_) => StatusCode::BAD_GATEWAY,
            Self::AtCapacity(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        }
        let issues = match &self {
            Self::BadRequest { issues, .. } => issues.iter().map(BodyIssue::from).collect(),
            _ => Vec::new(),
        };
        let boot_id = matches!(self, Self::NotFound(_)).then(|| crate::boot::id().to_string());
        let mut response =
            (status, Json(ErrorBody { error: self.to_string(), issues, boot_id })).into_response();
        if matches!(self, Self::TooLarge(_)) {
            close_connection(&mut response);
        }
        response
    }
}

/// Marks a response as the connection's last. Needed whenever the server answers before it has
/// read the request's whole body (a body over the limit, a refused token): the server then
/// closes the connection, and without this header a client that pools connections reuses the
/// closed one for its next request, which fails with "connection closed before message
/// completed" (seen in the bad-input test: hyper's IncompleteMessage after a 413).
pub fn close_connection(response: &mut Response) {
    response
        .headers_mut()
        .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
}
