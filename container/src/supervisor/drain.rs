//! Saving the agents' work before the container goes away (the server's own SIGTERM).
//!
//! A container's disk is ephemeral: whatever an agent has not pushed is lost when the container
//! stops. So before the agents are stopped, each running agent is asked to commit and push, gets
//! up to `SHUTDOWN_DRAIN_MS` to finish its turn, and then whatever is still uncommitted or
//! unpushed in its worktree is committed as a WIP commit and pushed to its branch. The wait for
//! an answer and the save serve the wind-down of one run as well (`wind_down.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared_types::{AgentEventKind, ProcessStatus, SendMessageRequest};

use super::Supervisor;
use crate::agents::Agent;

const DRAIN_PROMPT: &str =
    "The container is shutting down in a few seconds. Commit your work now and push your \
branch; do not start anything new. Anything not pushed will be saved as a WIP commit.";

/// How many of a session's last messages the drain reads to find its prompt and the answer.
const HISTORY: usize = 50;
/// How often the drain looks at the sessions while it waits.
const POLL: Duration = Duration::from_millis(250);

impl Supervisor {
    /// Asks running agents to push, waits (bounded by `SHUTDOWN_DRAIN_MS`) until each one's
    /// session shows the request answered, then saves each one's worktree. Failures are logged
    /// and recorded as events; they never hold up the shutdown beyond the git timeout.
    ///
    /// The wait reads the session's history rather than its busy flag: a request that arrives
    /// mid-turn is queued by Kilo behind the running turn (the session never looks idle in
    /// between), and one that arrives between turns takes a moment to turn the session busy.
    /// Both are answered only when an assistant reply to the request itself has finished.
    pub(super) async fn drain(self: &Arc<Self>) {
        let running: Vec<Arc<Agent>> = self
            .registry
            .all()
            .into_iter()
            .filter(|a| a.status() == ProcessStatus::Running)
            .collect();
        if running.is_empty() {
            return;
        }
        let window = self.config.shutdown_drain;
        if !window.is_zero() {
            let asks = running
                .iter()
                .map(|a| self.message(&a.id, SendMessageRequest { prompt: DRAIN_PROMPT.into() }));
            let mut asked = Vec::new();
            for (agent, result) in running.iter().zip(futures_util::future::join_all(asks).await) {
                match result {
                    Ok(()) => asked.push(agent.clone()),
                    Err(e) => {
                        tracing::warn!(agent = %agent.id, error = %e, "could not ask the agent to push before shutdown")
                    }
                }
            }
            for agent in self.await_answers(asked, DRAIN_PROMPT, window).await {
                tracing::warn!(agent = %agent.id, "the agent did not finish its turn within the drain window");
            }
        }
        let saves = running.iter().map(|a| self.save(a, "when the container shut down"));
        futures_util::future::join_all(saves).await;
    }

    /// Waits, at most `window`, until each agent has answered `prompt` (see [`answered`]) or
    /// stopped running; the agents still not done when the window ends.
    pub(super) async fn await_answers(
        &self,
        mut waiting: Vec<Arc<Agent>>,
        prompt: &str,
        window: Duration,
    ) -> Vec<Arc<Agent>> {
        let deadline = tokio::time::Instant::now() + window;
        while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            let checks = waiting.iter().map(|a| self.has_answered(a, prompt));
            let finished = futures_util::future::join_all(checks).await;
            waiting = waiting
                .into_iter()
                .zip(finished)
                .filter(|(_, done)| !done)
                .map(|(a, _)| a)
                .collect();
        }
        waiting
    }

    /// Whether the agent no longer needs waiting for: it has answered `prompt`, or it is no
    /// longer running (nothing more will come from it).
    async fn has_answered(&self, agent: &Agent, prompt: &str) -> bool {
        let live = self.registry.live_session(agent);
        let (ProcessStatus::Running, Some(live)) = (agent.status(), live) else {
            return true;
        };
        match live.server.client.last_messages(&live.session, &live.workdir, HISTORY).await {
            Ok(messages) => answered(&messages, prompt),
            Err(e) => {
                tracing::debug!(agent = %agent.id, error = %e, "could not read the session while waiting for its answer");
                false
            }
        }
    }

    /// Saves the agent's work (`when`: why now, for the log and its events): anything
    /// uncommitted as a WIP commit, then its branch pushed. The mayor has no checkout.
    pub(super) async fn save(&self, agent: &Agent, when: &str) {
        let spec = agent.lock().spec.clone();
        if spec.role == shared_types::AgentRole::Mayor {
            // No checkout: its conversation is kept by the Worker (the town's transcript).
            return;
        }
        match self.save_work_of(agent, when).await {
            Ok(committed) => {
                let detail = if committed {
                    "uncommitted work saved as a WIP commit and pushed"
                } else {
                    "branch pushed"
                };
                tracing::info!(agent = %agent.id, branch = %spec.branch, committed, "saved the agent's work {when}");
                agent.record(
                    AgentEventKind::Supervisor,
                    json!({ "action": "save_work", "detail": detail }),
                );
            }
            Err(crate::error::Error::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(agent = %agent.id, error = %e, "could not save the agent's work {when}");
                agent.record(AgentEventKind::Error, json!({ "message": format!("saving work {when} failed: {e}"), "source": "save_work" }));
            }
        }
    }
}

/// Whether a session's history (oldest first, as `GET /session/{id}/message` returns it) shows
/// `prompt` answered: after the last user message carrying it, an assistant reply to that
/// message (its `parentID`) that ended the turn. A step that ends with tool calls (`finish: "tool-calls"`) does not end the turn;
/// an error does.
pub(crate) fn answered(messages: &[serde_json::Value], prompt: &str) -> bool {
    let carries_prompt = |m: &serde_json::Value| {
        m["info"]["role"] == "user"
            && m["parts"].as_array().is_some_and(|parts| {
                parts.iter().any(|p| p["type"] == "text" && p["text"] == prompt)
            })
    };
    let Some(asked) = messages.iter().rposition(carries_prompt) else { return false };
    let asked_id = &messages[asked]["info"]["id"];
    messages[asked + 1..].iter().any(|m| {
        let info = &m["info"];
        info["role"] == "assistant"
            && &info["parentID"] == asked_id
            && (!info["error"].is_null()
                || (info["time"]["completed"].is_number() && info["finish"] != "tool-calls"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn user(id: &str, text: &str) -> Value {
        json!({ "info": { "id": id, "role": "user", "time": { "created": 1 } }, "parts": [{ "type": "text", "text": text }] })
    }

    fn assistant(parent: &str, completed: bool, finish: Option<&str>) -> Value {
        let mut info = json!({ "id": format!("a-{parent}"), "role": "assistant", "parentID": parent, "time": { "created": 1 } });
        if completed {
            info["time"]["completed"] = json!(2);
        }
        if let Some(f) = finish {
            info["finish"] = json!(f);
        }
        json!({ "info": info, "parts": [] })
    }

    #[test]
    fn a_request_is_answered_only_by_a_finished_reply_to_it() {
        let p = "push now";
        // Not yet stored (prompt_async not processed yet).
        assert!(!answered(&[user("m1", "work"), assistant("m1", true, Some("stop"))], p));
        // Queued behind a running turn: the earlier turn finishing does not count.
        assert!(!answered(
            &[user("m1", "work"), user("m2", p), assistant("m1", true, Some("stop"))],
            p
        ));
        // Being answered: a tool step, then a step still streaming.
        let mut h = vec![
            user("m1", "work"),
            assistant("m1", true, Some("stop")),
            user("m2", p),
            assistant("m2", true, Some("tool-calls")),
        ];
        assert!(!answered(&h, p));
        h.push(assistant("m2", false, None));
        assert!(!answered(&h, p));
        h.push(assistant("m2", true, Some("stop")));
        assert!(answered(&h, p));
        // A failed reply ends the turn too.
        let mut failed = assistant("m2", false, None);
        failed["info"]["error"] = json!({ "name": "APIError" });
        assert!(answered(&[user("m2", p), failed], p));
        // A second request waits for its own answer.
        h.push(user("m3", p));
        assert!(!answered(&h, p));
    }
}
