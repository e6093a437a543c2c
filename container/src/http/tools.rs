//! `POST /internal/tools/:tool`: a Gastown tool call from a tool file inside a Kilo process.
//!
//! The caller proves which Kilo process it runs in with that process's tool key, and names its
//! session; the session must belong to an agent on that same process. The call is then made
//! to the Worker with that agent's credential, so an agent can only ever act as itself, even
//! when several agents share one Kilo process.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use shared_types::AgentEventKind;

use super::extract::JsonBody;
use super::AppState;
use crate::error::{Error, Result};
use crate::tools::forward::{forward, route};
use crate::tools::js::TOOL_KEY_HEADER;

#[derive(Debug, Deserialize)]
pub struct ToolCall {
    #[serde(rename = "sessionID")]
    session_id: String,
    #[serde(default)]
    args: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct ToolOutput {
    output: String,
}

pub async fn call(
    State(state): State<AppState>,
    Path(tool): Path<String>,
    headers: HeaderMap,
    JsonBody(call): JsonBody<ToolCall>,
) -> Result<Json<ToolOutput>> {
    let s = &state.supervisor;
    let key = headers.get(TOOL_KEY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    let server = s.server_by_tool_key(key).ok_or(Error::Unauthorized)?;
    let agent = s
        .registry
        .agent_for_session(&call.session_id)
        .ok_or_else(|| Error::NotFound("unknown session".into()))?;
    let (spec, token, generation) = {
        let st = agent.lock();
        (st.spec.clone(), st.api_token.clone(), st.generation)
    };
    let run = s.registry.placements.placed(&agent.id, generation);
    let on = |p: &crate::agents::Placement| {
        p.server.as_ref().is_some_and(|placed| placed.id == server.id)
            && p.session.as_deref() == Some(call.session_id.as_str())
    };
    if !run.as_ref().is_some_and(on) {
        return Err(Error::Forbidden("the session does not belong to this Kilo process".into()));
    }
    let api_url = s.config.api_url.as_deref().ok_or_else(|| {
        Error::Agent("GASTOWN_API_URL is not configured on the control server".into())
    })?;
    let worker_call = route(&tool, &call.args, &spec).map_err(|e| Error::bad_request(e.0))?;
    let failed = |message: String| {
        agent.record(
            AgentEventKind::Error,
            json!({ "message": message, "source": "tool", "tool": tool }),
        );
        Error::Agent(message)
    };
    // The agent commits; the server pushes for it, with a credential the agent never holds.
    // Done submits what was pushed, so a failed push stops it.
    let mut pushed = None;
    if tool == "gt_done" {
        let branch = worker_call.body.as_ref().and_then(|b| b["branch"].as_str()).unwrap_or("");
        if branch != spec.branch {
            return Err(failed(format!(
                "gt_done: branch must be your branch '{}', not '{branch}'",
                spec.branch
            )));
        }
        let push = s.push_branch_of(&agent).await;
        pushed = Some(push.map_err(|e| {
            failed(format!("gt_done: {branch} was not pushed, so nothing was submitted: {e}"))
        })?);
    }
    tracing::info!(agent = %agent.id, tool = %tool, path = %worker_call.path, "forwarding tool call");
    let mut output =
        forward(&s.http, api_url, token.as_deref(), worker_call).await.map_err(|e| failed(e.0))?;
    if tool == "gt_done" {
        // The Worker took the branch: this run's work is over (done is the done tool, never an
        // idle session).
        s.work_done(&agent, generation);
    }
    if tool == "gt_checkpoint" {
        // Work in progress is pushed with the checkpoint; the checkpoint stands either way.
        pushed = match s.push_branch_of(&agent).await {
            Ok(p) => Some(p),
            Err(e) => {
                output.push_str(&format!("\nyour branch was not pushed: {e}"));
                None
            }
        };
    }
    if let Some(p) = pushed {
        output.push_str(&format!("\npushed {} at {}", spec.branch, p.commit));
    }
    Ok(Json(ToolOutput { output }))
}
