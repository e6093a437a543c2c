//! A bead past the town's token budget for one bead (`max_tokens_per_bead`): the TownContainer
//! counts the town's usage, sees the bead over its cap, and sends [`StopOverBudget`] here
//! before it winds the bead's agent down. The bead fails, its agent is unhooked (so the
//! scheduler does not dispatch it again), and an escalation bead tells the mayor.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::beads::NewBead;
use super::op::{rig_ops, RigOp};
use super::rows::AgentRow;
use super::Rig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::model::{Agent, BeadStatus, BeadType, EventKind, Priority};
use crate::params;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopOverBudget {
    pub bead_id: String,
    /// Why, naming the budget (for the bead's events and the escalation).
    pub reason: String,
}

impl RigOp for StopOverBudget {
    const NAME: &'static str = "stop_over_budget";
    const NOTIFIES: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        rig.stop_over_budget(&self.bead_id, &self.reason)
    }
}

rig_ops!(StopOverBudget);

impl<D: Db> Rig<'_, D> {
    /// Fails the bead for `reason` and escalates it; `{"stopped": false}` when it had already
    /// ended (closed or failed: a repeated report changes nothing), else `{"stopped": true,
    /// "agent_id": the agent it was hooked to, "escalation_id"}`. An unknown bead is a 404.
    pub fn stop_over_budget(&self, bead_id: &str, reason: &str) -> ApiResult<Value> {
        let bead = self.bead(bead_id)?;
        if matches!(bead.status, BeadStatus::Closed | BeadStatus::Failed) {
            return Ok(json!({ "stopped": false }));
        }
        let holder: Option<Agent> = self
            .db
            .first::<AgentRow>(
                "SELECT * FROM agents WHERE current_hook_bead_id = ?",
                params![bead_id],
            )?
            .map(Agent::from);
        match &holder {
            Some(agent) => self.give_up(agent, &bead, reason)?,
            None => {
                self.db.exec(
                    "UPDATE beads SET status = 'failed', updated_at = ? WHERE id = ?",
                    params![&self.now, bead_id],
                )?;
                self.log(
                    Some(bead_id),
                    None,
                    EventKind::StatusChanged,
                    json!({ "from": bead.status, "to": "failed", "reason": reason }),
                )?;
            }
        }
        let agent_id = holder.map(|a| a.id);
        let escalation = self.insert_bead(&NewBead {
            bead_type: BeadType::Escalation,
            title: format!(
                "Bead over its token budget: {}",
                bead.title.chars().take(200).collect::<String>()
            ),
            body: Some(format!(
                "{reason}. Its agent was asked to wrap up and stopped; its work is pushed on its \
                 branch. Raise max_tokens_per_bead and reopen the bead, or split the work."
            )),
            priority: Some(Priority::High),
            labels: None,
            metadata: Some(json!({ "bead_id": bead.id, "agent_id": agent_id })),
            assignee_agent_id: None,
            convoy_id: None,
        })?;
        self.log(
            Some(bead_id),
            agent_id.as_deref(),
            EventKind::Escalated,
            json!({ "escalation_id": escalation.id, "reason": reason }),
        )?;
        Ok(json!({ "stopped": true, "agent_id": agent_id, "escalation_id": escalation.id }))
    }
}
