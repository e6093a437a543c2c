//! The control server's HTTP API (axum). One module per resource; every handler returns
//! `Result<_, Error>` and [`crate::error`] turns failures into `{"error": ...}` responses.
//!
//! Auth: every route but `/health` needs `X-Container-Token` when `CONTAINER_TOKEN` is set;
//! `/internal/tools/*` is called by the tool files inside Kilo processes and is authenticated
//! by the per-process tool key instead; `/agents/:id/stream` by a one-shot ticket.

mod agents;
mod extract;
mod health;
mod merges;
mod stream;
mod tools;
mod warmup;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;

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
        .route("/agents/{agent_id}/wind-down", post(agents::wind_down))
        .route("/agents/{agent_id}/status", get(agents::status))
        .route("/agents/{agent_id}/credentials", post(agents::credentials))
        .route("/agents/{agent_id}/events", get(agents::events))
        .route("/agents/{agent_id}/output", get(agents::output))
        .route("/agents/{agent_id}/stream-ticket", post(stream::ticket))
        .route("/rigs/{rig_id}/merges", post(merges::start))
        .route("/rigs/{rig_id}/merges/{review_id}", get(merges::status))
        .route("/rigs/{rig_id}/worktrees/remove", post(merges::abandon))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health::health))
        .route("/agents/{agent_id}/stream", get(stream::stream))
        .route("/agents/{agent_id}/ws", get(stream::websocket))
        .route("/internal/tools/{tool}", post(tools::call))
        .route("/warmup/v1/models", get(warmup::models))
        .route("/warmup/v1/chat/completions", post(warmup::completions))
        .merge(protected)
        .fallback(|| async { Error::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(limit_body))
        .with_state(state)
}

/// Checks `X-Container-Token` against the configured secret in constant time.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    if let Some(expected) = &state.supervisor.config.container_token {
        let given = request.headers().get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !crate::secret::equal(given, expected) {
            return Ok(early_answer(request, Error::Unauthorized).await);
        }
    }
    Ok(next.run(request).await)
}

/// Refuses a body whose declared length is over [`MAX_BODY`] before any handler runs.
async fn limit_body(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return early_answer(
            request,
            Error::TooLarge(format!("request body is larger than {MAX_BODY} bytes")),
        )
        .await;
    }
    next.run(request).await
}

/// Most of an unwanted body read (and thrown away) before an early answer, and for how long.
const DISCARD_MAX: usize = 16 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Answers a request without using its body. The body is read and thrown away first (bounded):
/// a server that closes a connection while the client is still sending makes the kernel reset
/// it, and the client may then lose the answer itself. The answer also closes the connection
/// (see [`crate::error::close_connection`]), so a pooling client never reuses it.
async fn early_answer(request: Request, error: Error) -> Response {
    let mut stream = request.into_body().into_data_stream();
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DISCARD_MAX {
                break;
            }
        }
    })
    .await;
    let mut response = error.into_response();
    crate::error::close_connection(&mut response);
    response
}
