//! Agents and their hooks: register, list, hook/unhook, prime, done, checkpoint, heartbeat.
//!
//! Hook rules (reference): hooking sets the agent `working` and the bead `in_progress` with the
//! agent as assignee; re-hooking the same bead is a no-op; hooking a different bead while one is
//! hooked is refused (409), as is hooking a closed/failed bead or one hooked by another agent.

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::validate;

use super::op::{rig_ops, to_json, RigCall, RigOp};
use super::rows::AgentRow;
use super::Rig;
use crate::api::{self, FollowUp, Incoming, Plan};
use crate::body::{Kind, NON_EMPTY, STR};
use crate::db::{Db, Select};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    Agent, AgentRole, AgentStatus, BeadStatus, EventKind, PrimeContext, ReviewEntry,
};
use crate::params;
use crate::requests::{
    json_size, opt_text, text, url, Issues, Validate, MAX_CHECKPOINT, MAX_IDENTITY, MAX_TEXT,
};
use crate::rig::review::NewReview;
use crate::routes::{Endpoint, Rule};

/// Agents and their hooks: the reference's routes (an agent of the rig, or internal callers;
/// the routes under `/agents/:agentId/` are that agent's own).
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/agents", Rule::Rig, register),
    Endpoint::get("/api/rigs/:rigId/agents", Rule::Rig, list),
    Endpoint::get("/api/rigs/:rigId/agents/:agentId", Rule::Rig, get),
    Endpoint::post("/api/rigs/:rigId/agents/:agentId/hook", Rule::RigAgent, hook),
    Endpoint::delete("/api/rigs/:rigId/agents/:agentId/hook", Rule::RigAgent, unhook),
    Endpoint::get("/api/rigs/:rigId/agents/:agentId/prime", Rule::RigAgent, prime),
    Endpoint::post("/api/rigs/:rigId/agents/:agentId/done", Rule::RigAgent, done),
    Endpoint::post("/api/rigs/:rigId/agents/:agentId/checkpoint", Rule::RigAgent, checkpoint),
    Endpoint::post("/api/rigs/:rigId/agents/:agentId/heartbeat", Rule::RigAgent, heartbeat),
];

fn register(req: &Incoming) -> ApiResult<Plan> {
    let op = RegisterAgent(req.body()?);
    api::created(req.param("rigId")?, op, FollowUp::IdentityFromAgent)
}

fn list(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, ListAgents(crate::query::agent_filter(req.query)?))
}

fn get(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, GetAgent { agent_id: req.param("agentId")? })
}

fn hook(req: &Incoming) -> ApiResult<Plan> {
    let h: HookRequest = req.body()?;
    let op = Hook { agent_id: req.param("agentId")?, bead_id: h.bead_id };
    api::ack(req.param("rigId")?, op, 200, "hooked")
}

fn unhook(req: &Incoming) -> ApiResult<Plan> {
    let op = Unhook { agent_id: req.param("agentId")? };
    api::ack(req.param("rigId")?, op, 200, "unhooked")
}

fn prime(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, Prime { agent_id: req.param("agentId")? })
}

fn done(req: &Incoming) -> ApiResult<Plan> {
    let op = RigCall::of(&Done { agent_id: req.param("agentId")?, done: req.body()? })?;
    api::rig_plan(req.param("rigId")?, op, 200, FollowUp::Completion, api::Reply::Ack("done"))
}

fn checkpoint(req: &Incoming) -> ApiResult<Plan> {
    let c: CheckpointRequest = req.body()?;
    let op = Checkpoint { agent_id: req.param("agentId")?, data: c.data };
    api::ack(req.param("rigId")?, op, 200, "written")
}

fn heartbeat(req: &Incoming) -> ApiResult<Plan> {
    let op = Heartbeat { agent_id: req.param("agentId")? };
    api::ack(req.param("rigId")?, op, 200, "heartbeat")
}

const ROLES: Kind = Kind::Enum(&["polecat", "refinery", "mayor", "witness"]);

request_body! {
    /// `POST /api/rigs/:rigId/agents`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewAgent {
        pub role: AgentRole = req(ROLES),
        pub name: String = req(NON_EMPTY),
        pub identity: String = req(NON_EMPTY),
    }
}

impl Validate for NewAgent {
    fn check(&self, i: &mut Issues) {
        i.add("name", validate::agent_name(&self.name));
        i.add("identity", text(&self.identity, MAX_IDENTITY));
    }
}

request_body! {
    /// `POST /api/rigs/:rigId/agents/:agentId/hook`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HookRequest {
        pub bead_id: String = req(NON_EMPTY),
    }
}

impl Validate for HookRequest {
    fn check(&self, i: &mut Issues) {
        i.add("bead_id", validate::id(&self.bead_id));
    }
}

request_body! {
    /// `POST /api/rigs/:rigId/agents/:agentId/done`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DoneRequest {
        pub branch: String = req(NON_EMPTY),
        pub pr_url: Option<String> = opt(STR),
        pub summary: Option<String> = opt(STR),
    }
}

impl Validate for DoneRequest {
    fn check(&self, i: &mut Issues) {
        i.add("branch", validate::branch(&self.branch));
        i.add("pr_url", url(&self.pr_url));
        i.add("summary", opt_text(&self.summary, MAX_TEXT));
    }
}

request_body! {
    /// `POST /api/rigs/:rigId/agents/:agentId/checkpoint`: any JSON value, bounded; `{}`
    /// stores `null` (as the reference).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct CheckpointRequest {
        #[serde(default)]
        pub data: Value = opt(Kind::Any),
    }
}

impl Validate for CheckpointRequest {
    fn check(&self, i: &mut Issues) {
        i.add("data", json_size(&self.data, MAX_CHECKPOINT));
    }
}

/// Query of `GET /api/rigs/:rigId/agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFilter {
    pub role: Option<AgentRole>,
    pub status: Option<AgentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterAgent(pub NewAgent);

impl RigOp for RegisterAgent {
    const NAME: &'static str = "register_agent";
    const NEEDS_CONFIGURED_RIG: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.register_agent(&self.0)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListAgents(pub AgentFilter);

impl RigOp for ListAgents {
    const NAME: &'static str = "list_agents";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.list_agents(&self.0)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetAgent {
    pub agent_id: String,
}

impl RigOp for GetAgent {
    const NAME: &'static str = "get_agent";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.agent(&self.agent_id)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub agent_id: String,
    pub bead_id: String,
}

impl RigOp for Hook {
    const NAME: &'static str = "hook";
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.hook(&self.agent_id, &self.bead_id)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unhook {
    pub agent_id: String,
}

impl RigOp for Unhook {
    const NAME: &'static str = "unhook";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.unhook(&self.agent_id)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prime {
    pub agent_id: String,
}

impl RigOp for Prime {
    const NAME: &'static str = "prime";
    fn run_proof(&self) -> Option<&str> {
        Some(&self.agent_id)
    }
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.prime(&self.agent_id)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub agent_id: String,
    pub done: DoneRequest,
}

impl RigOp for Done {
    const NAME: &'static str = "done";
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        rig.done(&self.agent_id, &self.done)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub agent_id: String,
    pub data: Value,
}

impl RigOp for Checkpoint {
    const NAME: &'static str = "checkpoint";
    fn run_proof(&self) -> Option<&str> {
        Some(&self.agent_id)
    }
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.checkpoint(&self.agent_id, &self.data)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent_id: String,
}

impl RigOp for Heartbeat {
    const NAME: &'static str = "heartbeat";
    fn run_proof(&self) -> Option<&str> {
        Some(&self.agent_id)
    }
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.heartbeat(&self.agent_id)?)
    }
}
/// From the container's batched heartbeat: `(agent id, last activity)`. Unknown agents are
/// skipped; answers how many were updated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerHeartbeat {
    pub agents: Vec<(String, String)>,
}

impl RigOp for ContainerHeartbeat {
    const NAME: &'static str = "container_heartbeat";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(json!({ "updated": rig.container_heartbeat(&self.agents)? }))
    }
}

rig_ops!(
    RegisterAgent,
    ListAgents,
    GetAgent,
    Hook,
    Unhook,
    Prime,
    Done,
    Checkpoint,
    Heartbeat,
    ContainerHeartbeat
);

impl<D: Db> Rig<'_, D> {
    pub(super) fn agent(&self, id: &str) -> ApiResult<Agent> {
        self.db
            .first::<AgentRow>("SELECT * FROM agents WHERE id = ?", params![id])?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found("agent"))
    }

    pub(super) fn register_agent(&self, a: &NewAgent) -> ApiResult<Agent> {
        let taken: Option<AgentRow> =
            self.db.first("SELECT * FROM agents WHERE identity = ?", params![&a.identity])?;
        if taken.is_some() {
            return Err(ApiError::Conflict(
                "an agent with this identity already exists in this rig".into(),
            ));
        }
        let id = (self.new_id)();
        self.db.exec(
            "INSERT INTO agents (id, role, name, identity, status, last_activity_at, created_at) VALUES (?, ?, ?, ?, 'idle', ?, ?)",
            params![&id, a.role.as_str(), &a.name, &a.identity, &self.now, &self.now],
        )?;
        self.agent(&id)
    }

    pub(super) fn list_agents(&self, f: &AgentFilter) -> ApiResult<Vec<Agent>> {
        let (sql, params) = Select::new("SELECT * FROM agents")
            .eq("role", f.role.map(|r| r.as_str()))
            .eq("status", f.status.map(|s| s.as_str()))
            .order("rowid");
        Ok(self.db.query::<AgentRow>(&sql, params)?.into_iter().map(Into::into).collect())
    }

    pub(super) fn hook(&self, agent_id: &str, bead_id: &str) -> ApiResult<Agent> {
        let agent = self.agent(agent_id)?;
        let bead = self.bead(bead_id)?;
        match agent.current_hook_bead_id.as_deref() {
            Some(h) if h == bead_id => return Ok(agent),
            Some(_) => {
                return Err(ApiError::Conflict(
                    "agent already has a different bead hooked; unhook it first".into(),
                ))
            }
            None => {}
        }
        if matches!(bead.status, BeadStatus::Closed | BeadStatus::Failed) {
            return Err(ApiError::Conflict(format!(
                "bead is {} and cannot be hooked",
                bead.status.as_str()
            )));
        }
        let holder: Option<AgentRow> = self
            .db
            .first("SELECT * FROM agents WHERE current_hook_bead_id = ?", params![bead_id])?;
        if holder.is_some() {
            return Err(ApiError::Conflict("bead is hooked by another agent".into()));
        }
        self.db.exec(
            "UPDATE agents SET current_hook_bead_id = ?, status = 'working', last_activity_at = ?, dispatched_ms = NULL,
                    dispatch_attempts = 0, lost_runs = 0, gupp_ms = NULL WHERE id = ?",
            params![bead_id, &self.now, agent_id],
        )?;
        self.db.exec(
            "UPDATE beads SET status = 'in_progress', assignee_agent_id = ?, updated_at = ? WHERE id = ?",
            params![agent_id, &self.now, bead_id],
        )?;
        self.log(Some(bead_id), Some(agent_id), EventKind::Hooked, json!({ "from": bead.status }))?;
        self.agent(agent_id)
    }

    /// Clears the hook and sets the agent idle; without a hook it is a no-op.
    pub(super) fn unhook(&self, agent_id: &str) -> ApiResult<Agent> {
        let agent = self.agent(agent_id)?;
        let Some(bead_id) = agent.current_hook_bead_id else { return Ok(agent) };
        self.db.exec(
            "UPDATE agents SET current_hook_bead_id = NULL, status = 'idle', last_activity_at = ?, dispatched_ms = NULL
             WHERE id = ?",
            params![&self.now, agent_id],
        )?;
        self.log(Some(&bead_id), Some(agent_id), EventKind::Unhooked, json!({}))?;
        self.agent(agent_id)
    }

    /// The agent's context. Does not mark mail delivered (only the mail check does).
    pub(super) fn prime(&self, agent_id: &str) -> ApiResult<PrimeContext> {
        let agent = self.agent(agent_id)?;
        let hooked = match agent.current_hook_bead_id.as_deref() {
            Some(b) => Some(self.bead(b)?),
            None => None,
        };
        let mail = self.undelivered_mail(agent_id)?;
        let open = self.open_beads_of(agent_id)?;
        Ok(PrimeContext { agent, hooked_bead: hooked, undelivered_mail: mail, open_beads: open })
    }

    /// Submits the hooked bead's branch to the review queue, unhooks, and sets the agent idle.
    /// With nothing hooked there is nothing to submit: `review_entry` is null (the reference
    /// answers `done` all the same).
    pub(super) fn done(&self, agent_id: &str, d: &DoneRequest) -> ApiResult<Value> {
        let agent = self.agent(agent_id)?;
        let Some(bead_id) = agent.current_hook_bead_id.clone() else {
            return Ok(json!({ "agent": agent, "review_entry": null }));
        };
        let entry: ReviewEntry = self.insert_review(&NewReview {
            agent_id: agent_id.into(),
            bead_id,
            branch: d.branch.clone(),
            pr_url: d.pr_url.clone(),
            summary: d.summary.clone(),
        })?;
        let agent = self.unhook(agent_id)?;
        Ok(json!({ "agent": agent, "review_entry": entry }))
    }

    pub(super) fn checkpoint(&self, agent_id: &str, data: &Value) -> ApiResult<Agent> {
        self.agent(agent_id)?;
        self.db.exec(
            "UPDATE agents SET checkpoint = ?, last_activity_at = ? WHERE id = ?",
            params![data.to_string(), &self.now, agent_id],
        )?;
        self.agent(agent_id)
    }

    /// Touches the agent. An unknown agent is not an error (as the reference: the container's
    /// heartbeat may outlive the agent's record); `null` then.
    pub(super) fn heartbeat(&self, agent_id: &str) -> ApiResult<Option<Agent>> {
        self.db.exec(
            "UPDATE agents SET last_activity_at = ? WHERE id = ?",
            params![&self.now, agent_id],
        )?;
        Ok(self.agent(agent_id).ok())
    }

    /// Applies the container's heartbeat entries; agents this rig does not know are skipped.
    pub(super) fn container_heartbeat(&self, entries: &[(String, String)]) -> ApiResult<usize> {
        let mut updated = 0;
        for (agent_id, at) in entries {
            updated += usize::from(
                self.db.exec(
                    "UPDATE agents SET last_activity_at = ? WHERE id = ? AND status != 'dead'",
                    params![at, agent_id],
                )? > 0,
            );
        }
        Ok(updated)
    }
}
