//! The RigDO's logic: one rig's beads, agents, hooks, mail, review queue and event log.
//!
//! Written against [`Db`] and free of `await`: each [`RigOp`] runs as one synchronous sequence
//! of statements, which a Durable Object executes atomically (see [`crate::db`]). Checks come
//! before writes, so a refused request changes nothing.

pub mod agents;
pub mod beads;
pub mod config;
pub mod convoys;
pub mod events;
mod idempotency;
pub mod mail;
mod notices;
mod refinery;
pub mod review;
mod rows;
mod schedule;
pub mod schema;
pub mod sling;
#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::rpc::RigOp;

/// One request's view of the rig: its storage, the request's time and an id source.
pub struct Rig<'a, D: Db> {
    pub db: &'a D,
    /// ISO-8601 time of this request; every record it writes carries the same time.
    pub now: String,
    pub new_id: &'a dyn Fn() -> String,
}

fn to_json<T: serde::Serialize>(v: T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

impl<D: Db> Rig<'_, D> {
    pub fn handle(&self, op: RigOp) -> ApiResult<Value> {
        if op.needs_configured_rig() && !self.is_configured()? {
            return Err(ApiError::not_found("rig"));
        }
        if let Some(agent_id) = op.run_proof() {
            self.run_started(agent_id)?;
        }
        match op {
            RigOp::Configure { rig_id, config } => to_json(self.configure(&rig_id, &config)?),
            RigOp::GetConfig => to_json(self.config()?),
            RigOp::CreateBead(b) => to_json(self.create_bead(&b)?),
            RigOp::ListBeads(f) => to_json(self.list_beads(&f)?),
            RigOp::GetBead { bead_id } => to_json(self.bead(&bead_id)?),
            RigOp::UpdateBeadStatus { bead_id, update } => {
                to_json(self.update_status(&bead_id, &update)?)
            }
            RigOp::CloseBead { bead_id, agent_id } => {
                to_json(self.close_bead(&bead_id, &agent_id)?)
            }
            RigOp::RegisterAgent(a) => to_json(self.register_agent(&a)?),
            RigOp::ListAgents(f) => to_json(self.list_agents(&f)?),
            RigOp::GetAgent { agent_id } => to_json(self.agent(&agent_id)?),
            RigOp::Hook { agent_id, bead_id } => to_json(self.hook(&agent_id, &bead_id)?),
            RigOp::Unhook { agent_id } => to_json(self.unhook(&agent_id)?),
            RigOp::Prime { agent_id } => self.prime(&agent_id),
            RigOp::Done { agent_id, done } => self.done(&agent_id, &done),
            RigOp::Checkpoint { agent_id, data } => to_json(self.checkpoint(&agent_id, &data)?),
            RigOp::CheckMail { agent_id } => to_json(self.check_mail(&agent_id)?),
            RigOp::Heartbeat { agent_id } => to_json(self.heartbeat(&agent_id)?),
            RigOp::ContainerHeartbeat { agents } => {
                to_json(serde_json::json!({ "updated": self.container_heartbeat(&agents)? }))
            }
            RigOp::SendMail(m) => to_json(self.send_mail(&m)?),
            RigOp::SubmitReview(r) => to_json(self.submit_review(&r)?),
            RigOp::ListReviews(f) => to_json(self.list_reviews(&f)?),
            RigOp::CreateEscalation(e) => to_json(self.create_escalation(&e)?),
            RigOp::Sling { rig_id, sling } => self.sling(&rig_id, &sling),
            RigOp::ListEvents(f) => to_json(self.list_events(&f)?),
            RigOp::CreateConvoy { rig_id, convoy } => self.create_convoy(&rig_id, &convoy),
            RigOp::ListConvoys => to_json(self.list_convoys()?),
            RigOp::GetConvoy { convoy_id } => self.convoy(&convoy_id),
            RigOp::ResolveEscalation { escalation_id, answer } => {
                self.resolve_escalation(&escalation_id, &answer)
            }
        }
    }
}
