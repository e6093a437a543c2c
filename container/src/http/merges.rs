//! `/rigs/:rig_id/merges`: the refinery's merge jobs (see `supervisor/merge.rs`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use shared_types::{MergeRequest, MergeStatus};

use super::extract::JsonBody;
use super::AppState;
use crate::error::{Error, Result};

/// 202 with the job (`running`), or 200 with the job already under that review id.
pub async fn start(
    State(state): State<AppState>,
    Path(rig_id): Path<String>,
    JsonBody(request): JsonBody<MergeRequest>,
) -> Result<(StatusCode, Json<MergeStatus>)> {
    let status = state.supervisor.start_merge(&rig_id, request)?;
    let code = if status.state.is_final() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((code, Json(status)))
}

pub async fn status(
    State(state): State<AppState>,
    Path((rig_id, review_id)): Path<(String, String)>,
) -> Result<Json<MergeStatus>> {
    for (field, value) in [("rigId", &rig_id), ("reviewId", &review_id)] {
        shared_types::validate::id(value)
            .map_err(|m| Error::bad_request(format!("{field} {m}")))?;
    }
    Ok(Json(state.supervisor.merge_status(&rig_id, &review_id)?))
}

#[derive(Debug, serde::Deserialize)]
pub struct AbandonRequest {
    branch: String,
}

/// `{branch}` -> 202 `{removing: true}`: the worktree of a branch that will not be merged goes.
pub async fn abandon(
    State(state): State<AppState>,
    Path(rig_id): Path<String>,
    JsonBody(request): JsonBody<AbandonRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    state.supervisor.abandon_branch(&rig_id, &request.branch)?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "removing": true }))))
}
