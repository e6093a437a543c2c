//! The scheduler's storage side: which agents need a dispatch, a witness check or a GUPP
//! reminder, and the state changes each outcome makes. Each function is one synchronous step;
//! the alarm (runtime) awaits the container between them.

use serde::Deserialize;
use serde_json::json;

use super::Rig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::model::{Agent, Bead, EventKind};
use crate::params;
use crate::scheduler::{GUPP_BODY, GUPP_SUBJECT, SCHEDULER_SENDER};

#[derive(Deserialize)]
struct Due {
    id: String,
    dispatch_attempts: i64,
    dispatched_ms: Option<i64>,
}

/// Hooked agents the scheduler looks after (not dead).
const HOOKED: &str = "SELECT id, dispatch_attempts, dispatched_ms FROM agents
     WHERE current_hook_bead_id IS NOT NULL AND status != 'dead' ORDER BY rowid";

impl<D: Db> Rig<'_, D> {
    /// Is there hooked work? (The alarm is armed only while there is.)
    pub fn has_work(&self) -> ApiResult<bool> {
        Ok(!self.db.query::<Due>(HOOKED, vec![])?.is_empty())
    }

    /// Hooked agents not yet sent to the container, with their bead and attempts so far.
    pub fn due_dispatches(&self) -> ApiResult<Vec<(Agent, Bead, i64)>> {
        let mut out = Vec::new();
        for due in self.db.query::<Due>(HOOKED, vec![])?.into_iter().filter(|d| d.dispatched_ms.is_none()) {
            let agent = self.agent(&due.id)?;
            if let Some(bead_id) = agent.current_hook_bead_id.clone() {
                out.push((agent, self.bead(&bead_id)?, due.dispatch_attempts));
            }
        }
        Ok(out)
    }

    /// Dispatched agents with hooked work: `(agent, dispatched_ms)`.
    pub fn dispatched(&self) -> ApiResult<Vec<(Agent, i64)>> {
        let mut out = Vec::new();
        for due in self.db.query::<Due>(HOOKED, vec![])? {
            if let Some(ms) = due.dispatched_ms {
                out.push((self.agent(&due.id)?, ms));
            }
        }
        Ok(out)
    }

    /// The container accepted the start: count the attempt and remember when.
    pub fn mark_dispatched(&self, agent: &Agent, now_ms: i64) -> ApiResult<()> {
        self.db.exec(
            "UPDATE agents SET dispatched_ms = ?, dispatch_attempts = dispatch_attempts + 1, last_activity_at = ? WHERE id = ?",
            params![now_ms, &self.now, &agent.id],
        )?;
        self.log(agent.current_hook_bead_id.as_deref(), Some(&agent.id), EventKind::AgentDispatched, json!({}))
    }

    /// A start the container refused (or that never arrived) counts as an attempt too.
    pub fn mark_dispatch_failed(&self, agent: &Agent, reason: &str) -> ApiResult<()> {
        self.db.exec("UPDATE agents SET dispatch_attempts = dispatch_attempts + 1 WHERE id = ?", params![&agent.id])?;
        self.log(agent.current_hook_bead_id.as_deref(), Some(&agent.id), EventKind::AgentExited, json!({ "reason": reason, "phase": "dispatch" }))
    }

    /// The agent's process is gone without `done`: the next pass dispatches again.
    pub fn mark_exited(&self, agent: &Agent, reason: &str) -> ApiResult<()> {
        self.db.exec("UPDATE agents SET dispatched_ms = NULL WHERE id = ?", params![&agent.id])?;
        self.log(agent.current_hook_bead_id.as_deref(), Some(&agent.id), EventKind::AgentExited, json!({ "reason": reason }))
    }

    /// The attempt limit is reached: the bead fails, the agent is unhooked and idle.
    pub fn give_up(&self, agent: &Agent, bead: &Bead, attempts: i64) -> ApiResult<()> {
        self.db.exec("UPDATE beads SET status = 'failed', updated_at = ? WHERE id = ?", params![&self.now, &bead.id])?;
        self.log(Some(&bead.id), Some(&agent.id), EventKind::StatusChanged, json!({ "from": bead.status, "to": "failed", "reason": format!("{attempts} dispatch attempts") }))?;
        self.unhook(&agent.id)?;
        self.db.exec("UPDATE agents SET dispatched_ms = NULL, dispatch_attempts = 0 WHERE id = ?", params![&agent.id])?;
        Ok(())
    }

    /// Dispatched agents idle on hooked work for `after_ms` and not reminded since.
    pub fn gupp_due(&self, now_ms: i64, after_ms: i64) -> ApiResult<Vec<Agent>> {
        #[derive(Deserialize)]
        struct Row {
            id: String,
            gupp_ms: Option<i64>,
        }
        let rows: Vec<Row> = self.db.query(
            "SELECT id, gupp_ms FROM agents WHERE current_hook_bead_id IS NOT NULL AND dispatched_ms IS NOT NULL
             AND status != 'dead' ORDER BY rowid",
            vec![],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let agent = self.agent(&row.id)?;
            let active = agent.last_activity_at.as_deref().and_then(crate::time::millis_from_iso).unwrap_or(0);
            let since = active.max(row.gupp_ms.unwrap_or(0));
            if now_ms - since >= after_ms {
                out.push(agent);
            }
        }
        Ok(out)
    }

    pub fn send_gupp(&self, agent: &Agent, now_ms: i64) -> ApiResult<()> {
        let id = (self.new_id)();
        self.db.exec(
            "INSERT INTO mail (id, from_agent_id, to_agent_id, subject, body, delivered, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
            params![&id, SCHEDULER_SENDER, &agent.id, GUPP_SUBJECT, GUPP_BODY, &self.now],
        )?;
        self.db.exec("UPDATE agents SET gupp_ms = ? WHERE id = ?", params![now_ms, &agent.id])?;
        self.log(agent.current_hook_bead_id.as_deref(), None, EventKind::MailSent, json!({ "mail_id": id, "to_agent_id": agent.id, "gupp": true }))
    }
}
