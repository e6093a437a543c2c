//! Saving the agents' work before the container goes away (the server's own SIGTERM).
//!
//! A container's disk is ephemeral: whatever an agent has not pushed is lost when the container
//! stops. So before the agents are stopped, each running agent is asked to commit and push, gets
//! up to `SHUTDOWN_DRAIN_MS` to finish its turn, and then whatever is still uncommitted or
//! unpushed in its worktree is committed as a WIP commit and pushed to its branch.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared_types::{AgentEventKind, ProcessStatus, SendMessageRequest};

use super::Supervisor;
use crate::agents::Agent;

const DRAIN_PROMPT: &str = "The container is shutting down in a few seconds. Commit your work now and push your \
branch; do not start anything new. Anything not pushed will be saved as a WIP commit.";

impl Supervisor {
    /// Asks running agents to push, waits (bounded by `SHUTDOWN_DRAIN_MS`) for their turns to end,
    /// then saves each one's worktree. Failures are logged and recorded as events; they never
    /// hold up the shutdown beyond the git timeout.
    pub(super) async fn drain(self: &Arc<Self>) {
        let running: Vec<Arc<Agent>> = self.registry.all().into_iter().filter(|a| a.status() == ProcessStatus::Running).collect();
        if running.is_empty() {
            return;
        }
        let window = self.config.shutdown_drain;
        if !window.is_zero() {
            let asks = running.iter().map(|a| self.message(&a.id, SendMessageRequest { prompt: DRAIN_PROMPT.into() }));
            for (agent, result) in running.iter().zip(futures_util::future::join_all(asks).await) {
                if let Err(e) = result {
                    tracing::warn!(agent = %agent.id, error = %e, "could not ask the agent to push before shutdown");
                }
            }
            // The message makes the session busy shortly after; then wait for every turn to end.
            tokio::time::sleep(Duration::from_millis(500).min(window)).await;
            let deadline = tokio::time::Instant::now() + window;
            while tokio::time::Instant::now() < deadline && running.iter().any(|a| a.status() == ProcessStatus::Running && a.lock().busy) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let saves = running.iter().map(|a| self.save(a));
        futures_util::future::join_all(saves).await;
    }

    async fn save(&self, agent: &Agent) {
        let (workdir, spec) = {
            let s = agent.lock();
            (s.workdir.clone(), s.spec.clone())
        };
        let Some(workdir) = workdir else { return };
        match self.git.save_work(&workdir, &spec.branch, &spec.git_url).await {
            Ok(committed) => {
                let detail = if committed { "uncommitted work saved as a WIP commit and pushed" } else { "branch pushed" };
                tracing::info!(agent = %agent.id, branch = %spec.branch, committed, "saved the agent's work before shutdown");
                agent.record(AgentEventKind::Supervisor, json!({ "action": "save_work", "detail": detail }));
            }
            Err(e) => {
                tracing::warn!(agent = %agent.id, error = %e, "could not save the agent's work before shutdown");
                agent.record(AgentEventKind::Error, json!({ "message": format!("saving work before shutdown failed: {e}"), "source": "drain" }));
            }
        }
    }
}
