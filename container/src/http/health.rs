//! `GET /health`: no auth, so the Worker's container helper can probe readiness.

use axum::extract::State;
use axum::Json;
use shared_types::{HealthResponse, HealthStatus};

use super::AppState;

/// `ok`, or `degraded` while the server is shutting down (it takes no new agents then).
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    let s = &state.supervisor;
    let status = if s.is_shutting_down() { HealthStatus::Degraded } else { HealthStatus::Ok };
    Json(HealthResponse {
        status,
        agents: s.registry.active_count(),
        at_work: Some(s.registry.at_work_count()),
        uptime: s.uptime_ms(),
        capacity: Some(s.capacity()),
        pool: Some(s.pool_status()),
        isolation: Some(s.uids.mode().to_string()),
        boot_id: Some(crate::boot::id().to_string()),
    })
}
