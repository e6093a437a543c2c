//! The mayor's replies: when a turn of the mayor ends, its text is its answer to the people
//! talking to it. It goes to the Worker (`POST /api/mayor/:town/tools/reply`, with the mayor's
//! own credential), which adds it to the town's transcript.
//!
//! Sent in order, one at a time, through the tool path's forwarding: retried while the Worker
//! is unreachable (one idempotency key across the tries, so a reply is kept once). A reply that
//! still cannot be sent is logged and dropped: the mayor's next turn goes on without it.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use super::Supervisor;
use crate::tools::forward::{forward, WorkerCall};

impl Supervisor {
    /// Starts the forwarder of the mayor's replies (once, at start-up).
    pub fn forward_mayor_replies(self: &Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        self.registry.set_reply_sink(tx);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((agent_id, text)) = rx.recv().await {
                let Ok(agent) = this.registry.get(&agent_id) else { continue };
                let (town, token) = {
                    let s = agent.lock();
                    (s.spec.town_id.clone(), s.api_token.clone())
                };
                let Some(api_url) = this.config.api_url.as_deref() else {
                    tracing::warn!(
                        "GASTOWN_API_URL is not configured: the mayor's reply goes nowhere"
                    );
                    continue;
                };
                let call = WorkerCall {
                    method: Method::POST,
                    path: format!("/api/mayor/{town}/tools/reply"),
                    body: Some(json!({ "text": text })),
                    returns_data: false,
                };
                match forward(&this.http, api_url, token.as_deref(), call).await {
                    Ok(_) => {
                        tracing::info!(agent = %agent_id, "the mayor's reply was kept by the Worker")
                    }
                    Err(e) => {
                        tracing::warn!(agent = %agent_id, error = %e, "the mayor's reply could not be sent")
                    }
                }
            }
        });
    }
}
