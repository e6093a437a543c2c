//! The control server's HTTP API (axum). One module per resource; every handler returns
//! `Result<_, Error>` and [`crate::error`] turns failures into `{"error": ...}` responses.
//!
//! Auth: every route but `/health` needs `X-Container-Token` when `CONTAINER_TOKEN` is set;
//! `/internal/tools/*` is called by the tool files inside Kilo processes and is authenticated
//! by the per-process tool key instead; `/agents/:id/stream` by a one-shot ticket.

mod agents;
mod extract;
mod health;
mod stream;
mod tools;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::Error;
use crate::supervisor::Supervisor;

/// Header carrying the container secret.
pub const TOKEN_HEADER: &str = "x-container-token";
/// Largest request body: a start request with two 256 KiB prompts and envVars fits.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub supervisor: Arc<Supervisor>,
    pub tickets: Arc<stream::Tickets>,
}

pub fn router(supervisor: Arc<Supervisor>) -> Router {
    let state = AppState { supervisor, tickets: Arc::new(stream::Tickets::default()) };
    let protected = Router::new()
        .route("/agents", get(agents::list))
        .route("/agents/start", post(agents::start))
        .route("/agents/{agent_id}/stop", post(agents::stop))
        .route("/agents/{agent_id}/message", post(agents::message))
        .route("/agents/{agent_id}/status", get(agents::status))
        .route("/agents/{agent_id}/credentials", post(agents::credentials))
        .route("/agents/{agent_id}/events", get(agents::events))
        .route("/agents/{agent_id}/output", get(agents::output))
        .route("/agents/{agent_id}/stream-ticket", post(stream::ticket))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health::health))
        .route("/agents/{agent_id}/stream", get(stream::stream))
        .route("/internal/tools/{tool}", post(tools::call))
        .merge(protected)
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Checks `X-Container-Token` against the configured secret in constant time.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, Error> {
    if let Some(expected) = &state.supervisor.config.container_token {
        let given = request.headers().get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !crate::secret::equal(given, expected) {
            return Err(Error::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}
