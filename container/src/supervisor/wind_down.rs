//! `POST /agents/:id/wind-down`: the town stops a run in good order when a spending budget is
//! used up. The agent gets one wrap-up message and up to the grace period to answer it; then
//! its work is saved the way the drain saves it (anything uncommitted as a WIP commit, the
//! branch pushed) and the run is stopped. Its status names the reason from then on, so the
//! scheduler holds the bead queued instead of counting a lost run.

use std::sync::Arc;

use serde_json::json;
use shared_types::WindDownRequest;
use shared_types::{AgentEventKind, AgentRole, ProcessStatus, SendMessageRequest, StopSignal};

use super::Supervisor;
use crate::error::{Error, Result};

/// The message that asks an agent to wrap up.
fn wrap_up(reason: &str) -> String {
    format!(
        "Stop now: {reason}. Do not start anything new. Commit what you have with a message \
that says what is done and what is left, and push your branch. Do not call gt_done unless the \
work is complete. Whatever is not pushed when you are stopped is saved as a WIP commit."
    )
}

impl Supervisor {
    /// Winds the agent's current run down (see the module). Answers at once; the wait, the save
    /// and the stop happen in the background.
    ///
    /// - unknown agent: not found;
    /// - its run works another bead than the one named: refused;
    /// - the mayor: refused (it has no checkout and works only while a person writes to it);
    /// - already winding down: accepted, nothing more (one wrap-up message per run);
    /// - still starting (no session yet): stopped at once, nothing to save yet;
    /// - stopping or ended: refused, there is nothing left to wind down;
    /// - a run that ends on its own meanwhile (`gt_done`) is left alone, and so is a newer run.
    pub async fn wind_down(
        self: &Arc<Self>,
        agent_id: &str,
        request: WindDownRequest,
    ) -> Result<()> {
        request.validate().map_err(Error::invalid)?;
        let agent = self.agent(agent_id)?;
        let (status, generation) = {
            let mut s = agent.lock();
            if s.spec.role == AgentRole::Mayor {
                return Err(Error::Conflict(
                    "the mayor is not wound down: it works only while a person writes to it".into(),
                ));
            }
            if request.bead_id.is_some() && request.bead_id != s.spec.bead_id {
                return Err(Error::Conflict(format!(
                    "agent {agent_id} is not working bead {}",
                    request.bead_id.as_deref().unwrap_or_default()
                )));
            }
            if s.stop_reason.is_some() && s.status.is_active() {
                return Ok(());
            }
            if !matches!(s.status, ProcessStatus::Starting | ProcessStatus::Running) {
                return Err(Error::Conflict(format!(
                    "agent {agent_id} is {} and has nothing to wind down",
                    s.status.as_str()
                )));
            }
            s.stop_reason = Some(request.reason.clone());
            (s.status, s.generation)
        };
        agent.record(
            AgentEventKind::Supervisor,
            json!({ "action": "wind_down", "reason": request.reason, "graceMs": request.grace().as_millis() as u64 }),
        );
        tracing::info!(agent = agent_id, reason = %request.reason, "winding the agent down");
        if status == ProcessStatus::Starting {
            return self.stop_run(agent_id, Some(generation), StopSignal::Term).await;
        }
        let prompt = wrap_up(&request.reason);
        if let Err(e) = self.message(agent_id, SendMessageRequest { prompt: prompt.clone() }).await
        {
            tracing::warn!(agent = agent_id, error = %e, "could not ask the agent to wrap up");
        }
        let this = self.clone();
        let id = agent_id.to_string();
        tokio::spawn(async move {
            let late = this.await_answers(vec![agent.clone()], &prompt, request.grace()).await;
            if !late.is_empty() {
                tracing::info!(agent = %id, "the agent did not wrap up within its grace period");
            }
            let ours = {
                let s = agent.lock();
                s.generation == generation && s.status == ProcessStatus::Running && !s.work_done
            };
            if ours {
                this.save(&agent, "when the agent was wound down").await;
            }
            if let Err(e) = this.stop_run(&id, Some(generation), StopSignal::Term).await {
                tracing::warn!(agent = %id, error = %e, "could not stop the wound-down agent");
            }
        });
        Ok(())
    }
}
