//! The stand-in model of a pooled process's warm-up turn: an OpenAI-compatible endpoint that
//! answers every completion at once with a fixed reply, streamed as a provider streams it.
//! Served by the control server itself on loopback, so a warm-up calls no provider and costs
//! nothing. It holds nothing and answers nothing but that reply.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::kilo::config::WARMUP_MODEL;

/// `GET /warmup/v1/models`
pub async fn models() -> impl IntoResponse {
    Json(json!({ "object": "list", "data": [{ "id": WARMUP_MODEL, "object": "model" }] }))
}

/// `POST /warmup/v1/chat/completions`: one short text, then the end of the stream.
pub async fn completions(State(state): State<AppState>) -> impl IntoResponse {
    state.supervisor.warmup_turns.fetch_add(1, Ordering::Relaxed);
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let c = json!({
            "id": "warmup", "object": "chat.completion.chunk", "created": 0, "model": WARMUP_MODEL,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        format!("data: {c}\n\n")
    };
    let body = [
        chunk(json!({ "role": "assistant", "content": "ready" }), None),
        chunk(json!({}), Some("stop")),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body)
}
