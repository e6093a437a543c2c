//! `/agents`: start, list, status, events, message, wind-down, stop.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shared_types::{
    AgentEvents, AgentList, AgentOutput, AgentProcess, AgentStatusResponse, SendMessageRequest,
    SentResponse, StartAgentRequest, StopAgentRequest, StoppedResponse, UpdateCredentialsRequest,
    UpdatedResponse, WindDownRequest,
};

use super::extract::{AgentId, JsonBody, OptionalJsonBody, QueryParams};
use super::AppState;
use crate::error::Result;

#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    /// Answer once the run is running (or failed) instead of once it is claimed.
    #[serde(default)]
    wait: bool,
}

/// 201 with the new run (`starting`; `running` with `?wait=true`); 200 with the existing run
/// when the same dispatch is repeated.
pub async fn start(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<StartQuery>,
    JsonBody(request): JsonBody<StartAgentRequest>,
) -> Result<(StatusCode, Json<AgentProcess>)> {
    let started = state.supervisor.start(request, q.wait).await?;
    let status = if started.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(started.process)))
}

pub async fn list(State(state): State<AppState>) -> Json<AgentList> {
    Json(AgentList {
        agents: state
            .supervisor
            .registry
            .all()
            .iter()
            .map(|a| state.supervisor.registry.process(a))
            .collect(),
    })
}

pub async fn status(
    State(state): State<AppState>,
    AgentId(id): AgentId,
) -> Result<Json<AgentStatusResponse>> {
    let agent = state.supervisor.agent(&id)?;
    Ok(Json(state.supervisor.registry.status(&agent)))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

pub async fn events(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<AgentEvents>> {
    let agent = state.supervisor.agent(&id)?;
    let limit = q.limit.unwrap_or(500).clamp(1, 1000);
    let events = agent.lock().events.after(q.after, limit);
    Ok(Json(events))
}

#[derive(Debug, Deserialize)]
pub struct OutputQuery {
    lines: Option<usize>,
}

pub async fn output(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    QueryParams(q): QueryParams<OutputQuery>,
) -> Result<Json<AgentOutput>> {
    let lines = state.supervisor.output(&id, q.lines.unwrap_or(200).clamp(1, 2000))?;
    Ok(Json(AgentOutput { lines }))
}

pub async fn message(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    JsonBody(request): JsonBody<SendMessageRequest>,
) -> Result<Json<SentResponse>> {
    state.supervisor.message(&id, request).await?;
    Ok(Json(SentResponse { sent: true }))
}

/// Replaces the agent's Worker credential; the next tool call uses the new one.
pub async fn credentials(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    JsonBody(request): JsonBody<UpdateCredentialsRequest>,
) -> Result<Json<UpdatedResponse>> {
    request.validate().map_err(crate::error::Error::invalid)?;
    state.supervisor.agent(&id)?.set_token(request.token);
    Ok(Json(UpdatedResponse { updated: true }))
}

/// Winds the agent's run down: 202 at once, the wrap-up, save and stop follow.
pub async fn wind_down(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    JsonBody(request): JsonBody<WindDownRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    state.supervisor.wind_down(&id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "windingDown": true }))))
}

pub async fn stop(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    OptionalJsonBody(request): OptionalJsonBody<StopAgentRequest>,
) -> Result<Json<StoppedResponse>> {
    state.supervisor.stop(&id, request.signal.unwrap_or_default()).await?;
    Ok(Json(StoppedResponse { stopped: true }))
}
