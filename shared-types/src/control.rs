//! Requests and responses of the container control server (port 8080 in the container).
//!
//! Field names are camelCase on the wire, exactly as the reference implementation's
//! TypeScript interfaces, so its Worker and ours can drive the same container.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{self, ValidationIssue, ValidationPolicy};

/// The agent id of a town's mayor (one per town, and one town per container). Its `rigId` is
/// the town's id: it belongs to no rig.
pub const MAYOR_AGENT_ID: &str = "mayor";

/// Longest message a person may send a town's mayor, in bytes (the Worker's rule; `gt` and the
/// dashboard check it before sending).
pub const MAX_MAYOR_MESSAGE_BYTES: usize = 16 * 1024;

/// Largest prompt or system prompt the control server accepts, in bytes.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;

/// The role an agent plays in its rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentRole {
    Mayor,
    Polecat,
    Refinery,
    Witness,
}

impl AgentRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Mayor => "mayor",
            AgentRole::Polecat => "polecat",
            AgentRole::Refinery => "refinery",
            AgentRole::Witness => "witness",
        }
    }
}

/// `POST /agents/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartAgentRequest {
    pub agent_id: String,
    pub rig_id: String,
    pub town_id: String,
    pub role: AgentRole,
    pub name: String,
    pub identity: String,
    /// The first message the agent receives (for a polecat: its bead).
    pub prompt: String,
    /// `provider/model`, as Kilo's `-m` flag takes it.
    pub model: String,
    /// The agent's definition: replaces the main body of the CLI's default system prompt.
    pub system_prompt: String,
    pub git_url: String,
    pub branch: String,
    pub default_branch: String,
    /// Extra environment for the agent; values are secrets as far as logs are concerned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// Names this run (our addition; optional, so the reference's requests stay valid). A start
    /// repeating the `dispatchId` of the agent's current run answers with that run instead of
    /// a 409, so a retried dispatch never starts a second process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_id: Option<String>,
    /// The bead this run works (our addition; optional): its usage is counted to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bead_id: Option<String>,
    /// The convoy of that bead, if any (our addition; optional): usage is summed per convoy too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convoy_id: Option<String>,
    /// The town's cap on running agents, its spending guard (our addition; optional). A start
    /// that would run more is refused with a 429 naming the cap, and the scheduler keeps the
    /// bead queued; the control server's own capacity applies as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_agents: Option<u32>,
    /// How many merges into the default branch the Worker has recorded for the rig (our
    /// addition; optional). The rig's clone is fetched again unless its last fetch was made
    /// for a start that had seen as many: a merge on the forge moves the origin without the
    /// control server knowing, and new work must never branch from a default branch older than
    /// a merge the town has already counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merges_seen: Option<u64>,
}

impl StartAgentRequest {
    /// Every problem with the request, so a client can fix them all at once.
    pub fn validate(&self, policy: ValidationPolicy) -> Result<(), Vec<ValidationIssue>> {
        let mut issues = validate::Issues::default();
        issues.check("agentId", validate::id(&self.agent_id));
        issues.check("rigId", validate::id(&self.rig_id));
        issues.check("townId", validate::id(&self.town_id));
        issues.check("name", validate::agent_name(&self.name));
        issues.check("identity", validate::text(&self.identity, 256, false));
        issues.check("prompt", validate::text(&self.prompt, MAX_PROMPT_BYTES, false));
        issues.check("systemPrompt", validate::text(&self.system_prompt, MAX_PROMPT_BYTES, true));
        issues.check("model", validate::model(&self.model));
        if self.role == AgentRole::Mayor {
            // The mayor works on the town, not in a checkout: it gets a private scratch folder.
            let none = |v: &str| {
                if v.is_empty() {
                    Ok(())
                } else {
                    Err("must be empty for the mayor (it works without a checkout)".to_string())
                }
            };
            issues.check("gitUrl", none(&self.git_url));
            issues.check("branch", none(&self.branch));
            issues.check("defaultBranch", none(&self.default_branch));
        } else {
            issues.check("gitUrl", validate::git_url(&self.git_url, policy).map(|_| ()));
            issues.check("branch", validate::branch(&self.branch));
            issues.check("defaultBranch", validate::branch(&self.default_branch));
        }
        if let Some(d) = &self.dispatch_id {
            issues.check("dispatchId", validate::id(d));
        }
        if let Some(b) = &self.bead_id {
            issues.check("beadId", validate::id(b));
        }
        validate::env_vars(&self.env_vars, issues.list());
        issues.into_result()
    }
}

/// The signal `POST /agents/:id/stop` sends first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StopSignal {
    /// Graceful: SIGTERM, then SIGKILL after the grace period.
    #[default]
    #[serde(rename = "SIGTERM")]
    Term,
    /// Immediate.
    #[serde(rename = "SIGKILL")]
    Kill,
}

/// `POST /agents/:id/stop`; the body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopAgentRequest {
    #[serde(default)]
    pub signal: Option<StopSignal>,
}

/// `POST /agents/:id/message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    pub prompt: String,
}

impl SendMessageRequest {
    pub fn validate(&self) -> Result<(), Vec<ValidationIssue>> {
        validate::text(&self.prompt, MAX_PROMPT_BYTES, false)
            .map_err(|m| vec![ValidationIssue::new("prompt", m)])
    }
}

/// `POST /agents/:id/wind-down` (our addition): the agent is asked to wrap up, given up to
/// `graceMs` to answer, then its work is saved (a WIP commit of anything uncommitted, pushed)
/// and it is stopped; its status names `reason` from then on (`stopReason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindDownRequest {
    /// Why, in words the agent and a person read (a spending budget used up).
    pub reason: String,
    /// How long the agent has to wrap up (default [`WindDownRequest::DEFAULT_GRACE_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// Only a run working this bead is wound down (a bead over its own budget must not stop
    /// the next bead its agent has taken meanwhile): otherwise a 409 and nothing happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bead_id: Option<String>,
}

impl WindDownRequest {
    pub const DEFAULT_GRACE_MS: u64 = 120_000;
    /// The longest wrap-up allowed (a typo guard: an hour).
    pub const MAX_GRACE_MS: u64 = 3_600_000;

    pub fn validate(&self) -> Result<(), Vec<ValidationIssue>> {
        let mut issues = validate::Issues::default();
        issues.check("reason", validate::text(&self.reason, 2_000, false));
        let grace = match self.grace_ms {
            Some(ms) if ms > Self::MAX_GRACE_MS => {
                Err(format!("must be at most {} (an hour)", Self::MAX_GRACE_MS))
            }
            _ => Ok(()),
        };
        issues.check("graceMs", grace);
        issues.into_result()
    }

    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.grace_ms.unwrap_or(Self::DEFAULT_GRACE_MS))
    }
}

/// `POST /agents/:id/credentials`: replaces the agent's Worker credential (the token its tool
/// calls are forwarded with), so a long-running agent outlives its first token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCredentialsRequest {
    pub token: String,
}

impl UpdateCredentialsRequest {
    pub fn validate(&self) -> Result<(), Vec<ValidationIssue>> {
        let t = &self.token;
        if t.is_empty() || t.len() > 8192 || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(vec![ValidationIssue::new(
                "token",
                "must be 1 to 8192 characters without whitespace",
            )]);
        }
        Ok(())
    }
}

/// `POST /agents/:id/credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatedResponse {
    pub updated: bool,
}

/// Lifecycle of an agent's process: `starting -> running -> stopping -> exited | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    Starting,
    Running,
    Stopping,
    Exited,
    Failed,
}

impl ProcessStatus {
    /// Starting, running or stopping: the agent holds resources and counts as active.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Failed => "failed",
        }
    }
}

/// An agent as the control server sees it (`201` of `/agents/start`, items of `GET /agents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentProcess {
    pub agent_id: String,
    pub rig_id: String,
    pub town_id: String,
    pub role: AgentRole,
    pub name: String,
    pub pid: Option<u32>,
    pub status: ProcessStatus,
    pub exit_code: Option<i32>,
    pub workdir: String,
    pub started_at: String,
    pub last_activity_at: String,
    /// Why the agent failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The boot of the control server that runs the agent (our addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// `GET /agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentList {
    pub agents: Vec<AgentProcess>,
}

/// `GET /agents/:id/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatusResponse {
    pub agent_id: String,
    pub status: ProcessStatus,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub started_at: String,
    pub last_activity_at: String,
    /// Why the run was stopped by the town rather than by its own end (our addition): set by a
    /// wind-down, so the scheduler does not count the run as lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub status: HealthStatus,
    /// Active (starting, running or stopping) agents.
    pub agents: usize,
    /// Milliseconds since the server started.
    pub uptime: u64,
    /// How many agents may run at once now (our addition; from the memory limit or
    /// `MAX_AGENTS`). A start past it is refused with 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    /// Agents at work (our addition): the active ones, less a mayor waiting between messages.
    /// What keeps the town's container awake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_work: Option<usize>,
    /// The warm pool of pre-started Kilo processes (our addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolStatus>,
    /// How agents are kept apart: `uid` (each Kilo process under its own unprivileged uid) or
    /// `none` (the server is not root: every agent runs as the server's uid). Our addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Names this run of the control server (our addition): a new boot id means every run of
    /// the previous one is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// `/health`'s `pool`: pre-started `kilo serve` processes waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// How many the pool keeps ready (`WARM_POOL_SIZE`).
    pub size: usize,
    /// Started and healthy, waiting for an agent.
    pub ready: usize,
    /// Being started.
    pub starting: usize,
    /// The model the pooled processes are configured for (learned from the last start unless
    /// `WARM_POOL_MODEL` is set); `None` until known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Process ids of the ready processes (each is handed to one agent, never to a second).
    pub pids: Vec<u32>,
    /// Warm-up turns the control server's stand-in model has answered (each pooled process
    /// runs one before it is ready): what a warm-up costs never reaches a provider.
    #[serde(default, rename = "warmupTurns")]
    pub warmup_turns: u64,
}

/// `POST /agents/:id/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedResponse {
    pub stopped: bool,
}

/// `POST /agents/:id/message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentResponse {
    pub sent: bool,
}

/// A frame of an agent's live stream (`GET /agents/:id/ws`), as the reference's live stream
/// has it, with `id` added: the event's id. The last is an `agent.exited` frame, whose `data`
/// is `{type, properties: {reason}}`; an `error` frame precedes a refusing close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamFrame {
    pub agent_id: String,
    pub id: i64,
    pub event: String,
    pub data: serde_json::Value,
    pub timestamp: String,
}

impl StreamFrame {
    pub fn new(agent_id: &str, id: i64, event: &str, data: &serde_json::Value, at: &str) -> Self {
        Self {
            agent_id: agent_id.into(),
            id,
            event: event.into(),
            data: data.clone(),
            timestamp: at.into(),
        }
    }

    /// The frame's text, as sent.
    pub fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `POST /agents/:id/stream-ticket`: a one-shot ticket, valid for 60 s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamTicket {
    pub ticket: String,
    pub expires_at: String,
}

/// Error body of the control server: `{"error": "...", "issues": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<BodyIssue>,
    /// On a 404: the boot of the control server that does not know the thing asked for, so a
    /// caller can tell "not started yet" from "lost with an earlier boot" (our addition).
    #[serde(default, rename = "bootId", skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// One problem with a request body, shaped as the reference implementation's (zod) issues:
/// `{"code": "custom", "path": ["gitUrl"], "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyIssue {
    pub code: String,
    pub path: Vec<String>,
    pub message: String,
}

impl From<&ValidationIssue> for BodyIssue {
    /// A field name such as `envVars.FOO` becomes the path `["envVars", "FOO"]`.
    fn from(i: &ValidationIssue) -> Self {
        Self {
            code: "custom".into(),
            path: i.field.split('.').map(str::to_string).collect(),
            message: i.message.clone(),
        }
    }
}

/// What kind of thing happened to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    /// The process status changed; `data.status`.
    Status,
    /// The agent called a tool; `data.tool`, `data.state`.
    ToolCall,
    /// The model produced text; `data.text`.
    Text,
    /// Something went wrong; `data.message`, `data.source`.
    Error,
    /// The control server acted on the agent's work (e.g. saved it before a shutdown);
    /// `data.action`, `data.detail`.
    Supervisor,
    /// A model call finished: its tokens and cost; `data` is a [`crate::UsageReport`].
    Usage,
}

/// One entry of an agent's event buffer. Ids increase by one per event of that agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    pub id: u64,
    pub at: String,
    pub kind: AgentEventKind,
    pub data: serde_json::Value,
}

/// `GET /agents/:id/output?lines=N`: the tail of the agent's Kilo process output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOutput {
    pub lines: Vec<String>,
}

/// `GET /agents/:id/events?after=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvents {
    pub events: Vec<AgentEvent>,
    /// The id to pass as `after` next time.
    pub next_after: u64,
    /// Events after `after` that were dropped because the buffer is bounded.
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> serde_json::Value {
        serde_json::json!({
            "agentId": "a1", "rigId": "r1", "townId": "t1", "role": "polecat", "name": "toast",
            "identity": "toast@r1", "prompt": "do it", "model": "p/m", "systemPrompt": "you are",
            "gitUrl": "https://github.com/o/r.git", "branch": "polecat/toast/abcd1234",
            "defaultBranch": "main", "envVars": {"GITHUB_TOKEN": "x"}
        })
    }

    #[test]
    fn start_request_is_camel_case_and_round_trips() {
        let r: StartAgentRequest = serde_json::from_value(request()).expect("valid request");
        assert_eq!(r.role, AgentRole::Polecat);
        assert_eq!(serde_json::to_value(&r).expect("serializes"), request());
        assert!(r.validate(ValidationPolicy::default()).is_ok());
    }

    #[test]
    fn env_vars_are_optional_and_unknown_roles_refused() {
        let mut v = request();
        v.as_object_mut().expect("object").remove("envVars");
        let r: StartAgentRequest =
            serde_json::from_value(v.clone()).expect("valid without envVars");
        assert!(r.env_vars.is_empty());
        v["role"] = "king".into();
        assert!(serde_json::from_value::<StartAgentRequest>(v).is_err());
    }

    #[test]
    fn validation_lists_every_issue() {
        let mut v = request();
        v["rigId"] = "../x".into();
        v["branch"] = "a..b".into();
        v["envVars"] = serde_json::json!({"LD_PRELOAD": "x"});
        let r: StartAgentRequest = serde_json::from_value(v).expect("parses");
        let issues = r.validate(ValidationPolicy::default()).expect_err("invalid");
        let fields: Vec<_> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["rigId", "branch", "envVars.LD_PRELOAD"]);
    }

    #[test]
    fn the_mayor_starts_without_a_checkout_and_nobody_else_does() {
        let mut v = request();
        v["role"] = "mayor".into();
        let r: StartAgentRequest = serde_json::from_value(v.clone()).expect("parses");
        let fields: Vec<_> = r
            .validate(ValidationPolicy::default())
            .expect_err("a mayor with a checkout")
            .iter()
            .map(|i| i.field.clone())
            .collect();
        assert_eq!(fields, ["gitUrl", "branch", "defaultBranch"]);
        for f in ["gitUrl", "branch", "defaultBranch"] {
            v[f] = "".into();
        }
        let r: StartAgentRequest = serde_json::from_value(v.clone()).expect("parses");
        assert!(r.validate(ValidationPolicy::default()).is_ok());
        v["role"] = "polecat".into();
        let r: StartAgentRequest = serde_json::from_value(v).expect("parses");
        assert_eq!(
            r.validate(ValidationPolicy::default()).map_err(|i| i.len()),
            Err(3),
            "a polecat needs its checkout"
        );
    }

    #[test]
    fn stop_signal_names() {
        let s: StopAgentRequest = serde_json::from_str(r#"{"signal":"SIGKILL"}"#).expect("parses");
        assert_eq!(s.signal, Some(StopSignal::Kill));
        assert!(serde_json::from_str::<StopAgentRequest>(r#"{"signal":"SIGHUP"}"#).is_err());
    }

    #[test]
    fn statuses() {
        assert_eq!(serde_json::to_string(&ProcessStatus::Stopping).expect("ser"), "\"stopping\"");
        assert!(ProcessStatus::Stopping.is_active());
        assert!(!ProcessStatus::Exited.is_active());
    }
}
