//! One agent's record: what it was started with, where its process is in its lifecycle, and
//! its event buffer. All mutation goes through [`Agent::transition`] and friends, which keep the
//! state machine honest and log every change as an event.
//!
//! ```text
//! starting -> running -> stopping -> exited | failed
//!     \          \______________________^  ^
//!      \________________________________/  (start errors and crashes)
//! exited | failed -> starting               (a fresh start of the same agent)
//! ```

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::json;
use shared_types::{
    AgentEventKind, AgentProcess, AgentRole, AgentStatusResponse, ProcessStatus, StartAgentRequest,
};

use super::events::EventBuffer;
use super::placements::Placement;
use crate::clock;

/// What an agent was started with: its start request, with the first prompt taken out (it is
/// sent once, not kept) and the Worker credential taken out of `envVars` (see [`split_request`]).
/// Immutable for one run of the agent. `env_vars` values are secrets: never log them.
pub type AgentSpec = StartAgentRequest;

/// The envVars key that carries the agent's Worker credential.
pub const SESSION_TOKEN_VAR: &str = "GASTOWN_SESSION_TOKEN";

/// Splits a start request into the spec kept for the agent's run, its first prompt, and
/// `GASTOWN_SESSION_TOKEN`: the credential the control server uses when it forwards the agent's
/// tool calls. The credential is never put in the agent's process environment, and it can be
/// replaced while the agent runs ([`Agent::set_token`]).
pub fn split_request(mut r: StartAgentRequest) -> (AgentSpec, String, Option<String>) {
    let api_token = r.env_vars.remove(SESSION_TOKEN_VAR);
    let prompt = std::mem::take(&mut r.prompt);
    (r, prompt, api_token)
}

#[derive(Debug)]
pub struct AgentState {
    pub spec: Arc<AgentSpec>,
    pub status: ProcessStatus,
    /// Increases with every fresh start, so work belonging to an earlier run can tell that it
    /// is stale and must not touch the record.
    pub generation: u64,
    pub exit_code: Option<i32>,
    pub started_at: SystemTime,
    pub last_activity_at: SystemTime,
    pub error: Option<String>,
    /// The agent's Worker credential (see [`AgentSpec::from_request`]). A secret: never logged.
    pub api_token: Option<String>,
    /// A turn of the agent's session is in progress (from Kilo's session status events).
    pub busy: bool,
    /// This run is past its way to the model: the model answered a step (Kilo's
    /// `step-start`), or a turn ended without one (a failed model call).
    pub past_first_step: bool,
    /// Turn ends seen on the agent's session. Waiting for this count to move does not depend
    /// on having seen the turn's start, which an event stream that reconnected may have missed.
    pub turns_ended: u64,
    /// The run's work is over: the agent called `gt_done` and the Worker took it. The process
    /// is being released; a start for new work may replace the run at once.
    pub work_done: bool,
    pub events: EventBuffer,
    /// The mayor's text of its current turn: its reply to people, sent to the Worker when the
    /// turn ends (empty for other roles).
    pub turn_text: Vec<String>,
    /// Why the town is winding this run down (a budget used up): the run ends with its work
    /// saved and its status names the reason ([`crate::supervisor`]'s wind-down).
    pub stop_reason: Option<String>,
}

#[derive(Debug)]
pub struct Agent {
    pub id: String,
    state: Mutex<AgentState>,
    /// Woken on every new event, for streams that follow the agent.
    changed: tokio::sync::Notify,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("agent cannot go from {from} to {to}")]
pub struct BadTransition {
    pub from: &'static str,
    pub to: &'static str,
}

/// Whether the state machine allows `from -> to`.
pub fn allowed(from: ProcessStatus, to: ProcessStatus) -> bool {
    use ProcessStatus::*;
    matches!(
        (from, to),
        (Starting, Running | Stopping | Exited | Failed)
            | (Running, Stopping | Exited | Failed)
            | (Stopping, Exited | Failed)
            | (Exited | Failed, Starting)
    )
}

impl Agent {
    /// A new record in `starting`, generation 1.
    pub fn new(spec: AgentSpec, api_token: Option<String>, event_capacity: usize) -> Self {
        let now = SystemTime::now();
        let mut events = EventBuffer::new(event_capacity);
        events.push(AgentEventKind::Status, json!({ "status": "starting" }));
        Self {
            id: spec.agent_id.clone(),
            state: Mutex::new(AgentState {
                spec: Arc::new(spec),
                status: ProcessStatus::Starting,
                generation: 1,
                exit_code: None,
                started_at: now,
                last_activity_at: now,
                error: None,
                api_token,
                busy: false,
                past_first_step: false,
                turns_ended: 0,
                turn_text: Vec::new(),
                work_done: false,
                stop_reason: None,
                events,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Resolves at the next event of this agent.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Waits while `cond` holds for the record, at most `within`; wakes on every change of the
    /// record and, as a fallback for changes that notify nobody (the busy flag), every 200 ms.
    pub async fn wait_while(
        &self,
        within: std::time::Duration,
        cond: impl Fn(&AgentState) -> bool,
    ) {
        let _ = tokio::time::timeout(within, async {
            while cond(&self.lock()) {
                tokio::select! {
                    _ = self.changed() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        })
        .await;
    }

    /// The record's state. The lock is never held across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, AgentState> {
        // A panic while holding this lock cannot leave the record half-written in a way that
        // matters more than losing the agent, so recover the guard instead of propagating.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves an exited or failed agent back to `starting` with a new spec and generation; the
    /// event buffer carries over so event ids keep increasing. Returns the new generation.
    pub fn restart(
        &self,
        spec: AgentSpec,
        api_token: Option<String>,
    ) -> Result<u64, BadTransition> {
        let mut s = self.lock();
        check(s.status, ProcessStatus::Starting)?;
        let now = SystemTime::now();
        s.spec = Arc::new(spec);
        s.status = ProcessStatus::Starting;
        s.generation += 1;
        s.exit_code = None;
        s.started_at = now;
        s.last_activity_at = now;
        s.error = None;
        s.api_token = api_token;
        s.busy = false;
        s.past_first_step = false;
        s.work_done = false;
        s.stop_reason = None;
        s.events.push(AgentEventKind::Status, json!({ "status": "starting" }));
        let generation = s.generation;
        drop(s);
        self.changed.notify_waiters();
        Ok(generation)
    }

    /// Applies `to` if the machine allows it and, when `generation` is given, only if the record
    /// still belongs to that run.
    pub fn transition(
        &self,
        generation: Option<u64>,
        to: ProcessStatus,
    ) -> Result<(), BadTransition> {
        let mut s = self.lock();
        if generation.is_some_and(|g| g != s.generation) {
            return Err(BadTransition { from: "an earlier run", to: to.as_str() });
        }
        transition_locked(&mut s, to)?;
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Records the process's end: `exited` when it stopped on request or with code 0, `failed`
    /// otherwise. Does nothing if the record belongs to a later run or already ended.
    pub fn finish(&self, generation: u64, exit_code: Option<i32>, error: Option<String>) {
        let mut s = self.lock();
        if s.generation != generation || !s.status.is_active() {
            return;
        }
        let requested = s.status == ProcessStatus::Stopping;
        let to = if requested || (exit_code == Some(0) && error.is_none()) {
            ProcessStatus::Exited
        } else {
            ProcessStatus::Failed
        };
        s.exit_code = exit_code;
        if let Some(e) = &error {
            s.events.push(AgentEventKind::Error, json!({ "message": e }));
            s.error = Some(e.clone());
        }
        let _ = transition_locked(&mut s, to);
        drop(s);
        self.changed.notify_waiters();
    }

    /// Appends an event and counts it as activity.
    pub fn record(&self, kind: AgentEventKind, data: serde_json::Value) {
        let mut s = self.lock();
        if kind == AgentEventKind::Text && s.spec.role == AgentRole::Mayor {
            if let Some(text) = data["text"].as_str().filter(|t| !t.trim().is_empty()) {
                s.turn_text.push(text.to_string());
            }
        }
        s.events.push(kind, data);
        s.last_activity_at = SystemTime::now();
        drop(s);
        self.changed.notify_waiters();
    }

    /// Marks run `generation` as having finished its work (`gt_done` accepted). Returns the
    /// count of turn ends so far, or `None` when the record has moved on to another run, the
    /// run already ended or was already marked.
    pub fn mark_work_done(&self, generation: u64) -> Option<u64> {
        let mut s = self.lock();
        if s.generation != generation || !s.status.is_active() || s.work_done {
            return None;
        }
        s.work_done = true;
        s.events.push(AgentEventKind::Supervisor, json!({ "action": "work_done", "detail": "gt_done accepted; the run ends when its turn does" }));
        let turns_ended = s.turns_ended;
        drop(s);
        self.changed.notify_waiters();
        Some(turns_ended)
    }

    /// Replaces the agent's Worker credential (tokens expire under long-running agents).
    pub fn set_token(&self, token: String) {
        self.lock().api_token = Some(token);
    }

    /// The model answered a step of this run (also activity).
    pub fn stepped(&self) {
        let mut s = self.lock();
        s.past_first_step = true;
        s.last_activity_at = SystemTime::now();
    }

    /// Whether the run is still on its way to the model: starting, or running with its first
    /// turn neither answered by the model nor over. What a refill of the warm pool yields to.
    pub fn getting_going(&self) -> bool {
        let s = self.lock();
        s.status == ProcessStatus::Starting
            || (s.status == ProcessStatus::Running && !s.past_first_step)
    }

    /// Counts as activity without an event.
    pub fn touch(&self) {
        self.lock().last_activity_at = SystemTime::now();
    }

    /// Records whether a turn is in progress (also activity). When a turn of the mayor ends,
    /// returns its text (its reply to people), once; `None` otherwise.
    pub fn set_busy(&self, busy: bool) -> Option<String> {
        let mut s = self.lock();
        s.busy = busy;
        if !busy {
            s.turns_ended += 1;
            s.past_first_step = true;
        }
        s.last_activity_at = SystemTime::now();
        let reply = (!busy && !s.turn_text.is_empty())
            .then(|| std::mem::take(&mut s.turn_text).join("\n\n"));
        drop(s);
        self.changed.notify_waiters();
        reply
    }

    /// Whether the agent is at work: active, and for the mayor (which waits between messages)
    /// starting or in a turn. Only agents at work keep the container awake.
    pub fn at_work(&self) -> bool {
        let s = self.lock();
        s.status.is_active()
            && (s.spec.role != AgentRole::Mayor || s.busy || s.status == ProcessStatus::Starting)
    }

    pub fn status(&self) -> ProcessStatus {
        self.lock().status
    }

    pub fn spec(&self) -> Arc<AgentSpec> {
        self.lock().spec.clone()
    }

    /// The record as the API shows it; `run`: the agent's placement (`placements.rs`), whose
    /// pid and folder count only if it is this run's.
    pub fn to_process(&self, run: Option<&Placement>) -> AgentProcess {
        let s = self.lock();
        let run = run.filter(|p| p.generation == s.generation);
        AgentProcess {
            agent_id: self.id.clone(),
            rig_id: s.spec.rig_id.clone(),
            town_id: s.spec.town_id.clone(),
            role: s.spec.role,
            name: s.spec.name.clone(),
            pid: run.map(|p| p.pid),
            status: s.status,
            exit_code: s.exit_code,
            workdir: run
                .and_then(|p| p.workdir.as_ref())
                .map(|w| w.display().to_string())
                .unwrap_or_default(),
            started_at: clock::iso(s.started_at),
            last_activity_at: clock::iso(s.last_activity_at),
            error: s.error.clone(),
            boot_id: Some(crate::boot::id().to_string()),
        }
    }

    /// The status as the API shows it (`run` as for [`Self::to_process`]).
    pub fn to_status(&self, run: Option<&Placement>) -> AgentStatusResponse {
        let s = self.lock();
        AgentStatusResponse {
            agent_id: self.id.clone(),
            status: s.status,
            pid: run.filter(|p| p.generation == s.generation).map(|p| p.pid),
            exit_code: s.exit_code,
            started_at: clock::iso(s.started_at),
            last_activity_at: clock::iso(s.last_activity_at),
            stop_reason: s.stop_reason.clone(),
        }
    }
}

fn check(from: ProcessStatus, to: ProcessStatus) -> Result<(), BadTransition> {
    if allowed(from, to) {
        Ok(())
    } else {
        Err(BadTransition { from: from.as_str(), to: to.as_str() })
    }
}

fn transition_locked(s: &mut AgentState, to: ProcessStatus) -> Result<(), BadTransition> {
    check(s.status, to)?;
    s.status = to;
    s.last_activity_at = SystemTime::now();
    let mut data = json!({ "status": to.as_str() });
    if let Some(code) = s.exit_code.filter(|_| !to.is_active()) {
        data["exitCode"] = code.into();
    }
    s.events.push(AgentEventKind::Status, data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProcessStatus::*;

    fn spec() -> AgentSpec {
        spec_and_token().0
    }

    fn spec_and_token() -> (AgentSpec, Option<String>) {
        let (spec, _, token) = split_request(request());
        (spec, token)
    }

    fn request() -> StartAgentRequest {
        serde_json::from_value(json!({
            "agentId": "a1", "rigId": "r1", "townId": "t1", "role": "polecat", "name": "toast",
            "identity": "toast", "prompt": "p", "model": "m/m", "systemPrompt": "",
            "gitUrl": "https://x.test/r", "branch": "b", "defaultBranch": "main",
            "envVars": {"GASTOWN_SESSION_TOKEN": "jwt", "FOO": "bar"}
        }))
        .expect("valid request")
    }

    fn statuses(a: &Agent) -> Vec<String> {
        let s = a.lock();
        s.events
            .after(0, 100)
            .events
            .iter()
            .filter(|e| e.kind == AgentEventKind::Status)
            .map(|e| e.data["status"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn the_token_and_prompt_are_held_apart_from_the_spec() {
        let (s, prompt, token) = split_request(request());
        assert_eq!(token.as_deref(), Some("jwt"));
        assert_eq!(prompt, "p");
        assert!(s.prompt.is_empty(), "the prompt is sent once, not kept");
        assert!(!s.env_vars.contains_key(SESSION_TOKEN_VAR));
        assert_eq!(s.env_vars.get("FOO").map(String::as_str), Some("bar"));
    }

    #[test]
    fn transition_table() {
        let all = [Starting, Running, Stopping, Exited, Failed];
        let allowed_pairs: Vec<_> = all
            .iter()
            .flat_map(|f| all.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| allowed(*f, *t))
            .collect();
        assert_eq!(
            allowed_pairs,
            [
                (Starting, Running),
                (Starting, Stopping),
                (Starting, Exited),
                (Starting, Failed),
                (Running, Stopping),
                (Running, Exited),
                (Running, Failed),
                (Stopping, Exited),
                (Stopping, Failed),
                (Exited, Starting),
                (Failed, Starting),
            ]
        );
    }

    #[test]
    fn a_run_is_getting_going_until_the_model_answers_or_its_turn_ends() {
        let a = Agent::new(spec(), None, 100);
        assert!(a.getting_going(), "starting");
        a.transition(Some(1), Running).expect("running");
        a.set_busy(true);
        assert!(a.getting_going(), "prompted, the model not reached yet");
        a.stepped();
        assert!(!a.getting_going(), "the model answered");
        a.finish(1, Some(0), None);
        let generation = a.restart(spec(), None).expect("restart");
        a.transition(Some(generation), Running).expect("running");
        assert!(a.getting_going(), "a new run starts over");
        a.set_busy(false);
        assert!(!a.getting_going(), "a turn that ended without a step (a failed call)");
    }

    #[test]
    fn lifecycle_is_recorded_as_events() {
        let a = Agent::new(spec(), None, 100);
        a.transition(Some(1), Running).expect("starting -> running");
        assert_eq!(
            a.transition(Some(1), Starting),
            Err(BadTransition { from: "running", to: "starting" })
        );
        a.transition(None, Stopping).expect("running -> stopping");
        a.finish(1, Some(143), None);
        assert_eq!(a.status(), Exited, "a requested stop ends as exited whatever the code");
        assert_eq!(a.to_status(None).exit_code, Some(143));
        assert_eq!(statuses(&a), ["starting", "running", "stopping", "exited"]);
    }

    #[test]
    fn a_crash_is_a_failure_and_a_restart_is_a_new_generation() {
        let a = Agent::new(spec(), None, 100);
        a.transition(Some(1), Running).expect("running");
        a.finish(1, Some(1), Some("kilo died".into()));
        assert_eq!(a.status(), Failed);
        assert_eq!(a.to_process(None).error.as_deref(), Some("kilo died"));
        let g = a.restart(spec(), None).expect("failed -> starting");
        assert_eq!(g, 2);
        assert_eq!(a.to_process(None).exit_code, None);
        // Work of the first run can no longer touch the record.
        assert!(a.transition(Some(1), Running).is_err());
        a.finish(1, Some(0), None);
        assert_eq!(a.status(), Starting);
        assert_eq!(statuses(&a), ["starting", "running", "failed", "starting"]);
    }

    #[test]
    fn restart_of_an_active_agent_is_refused() {
        let a = Agent::new(spec(), None, 100);
        assert!(a.restart(spec(), None).is_err());
    }

    #[test]
    fn clean_exit_without_a_stop_is_exited() {
        let a = Agent::new(spec(), None, 100);
        a.transition(Some(1), Running).expect("running");
        a.finish(1, Some(0), None);
        assert_eq!(a.status(), Exited);
    }
}
