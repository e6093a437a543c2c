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
use crate::scheduler::{DueDispatch, Run, GUPP_BODY, GUPP_SUBJECT, SCHEDULER_SENDER};

#[derive(Deserialize)]
struct Due {
    id: String,
    dispatch_attempts: i64,
    lost_runs: i64,
    dispatched_ms: Option<i64>,
    dispatch_gen: i64,
    dispatch_boot: Option<String>,
}

/// Hooked agents the scheduler looks after (not dead).
const HOOKED: &str = "SELECT id, dispatch_attempts, lost_runs, dispatched_ms, dispatch_gen, dispatch_boot FROM agents
     WHERE current_hook_bead_id IS NOT NULL AND status != 'dead' ORDER BY rowid";

impl<D: Db> Rig<'_, D> {
    /// Is there hooked work or refinery work? (The alarm is armed only while there is.)
    pub fn has_work(&self) -> ApiResult<bool> {
        Ok(!self.db.query::<Due>(HOOKED, vec![])?.is_empty() || self.has_merge_work()?)
    }

    /// Hooked agents not yet sent to the container, with their bead and attempts so far.
    pub fn due_dispatches(&self) -> ApiResult<Vec<DueDispatch>> {
        let mut out = Vec::new();
        let merges_seen = self.merges()?;
        for due in
            self.db.query::<Due>(HOOKED, vec![])?.into_iter().filter(|d| d.dispatched_ms.is_none())
        {
            let agent = self.agent(&due.id)?;
            if let Some(bead_id) = agent.current_hook_bead_id.clone() {
                let rework_note = self.rework_note(&bead_id)?;
                let bead = self.bead(&bead_id)?;
                out.push(DueDispatch {
                    agent,
                    bead,
                    attempts: due.dispatch_attempts,
                    lost_runs: due.lost_runs,
                    generation: due.dispatch_gen,
                    rework_note,
                    merges_seen,
                });
            }
        }
        Ok(out)
    }

    /// Dispatched agents with hooked work, each with its run.
    pub fn dispatched(&self) -> ApiResult<Vec<(Agent, Run)>> {
        let mut out = Vec::new();
        for due in self.db.query::<Due>(HOOKED, vec![])? {
            if let Some(dispatched_ms) = due.dispatched_ms {
                out.push((self.agent(&due.id)?, Run { dispatched_ms, boot_id: due.dispatch_boot }));
            }
        }
        Ok(out)
    }

    // Every transition below is a compare-and-set on what the pass read before it awaited the
    // container: the agent's hooked bead (and, for the witness, the dispatch it judged). A hook
    // that changed meanwhile (done, unhook, a new sling) is left alone.

    /// The container accepted the start: remember when and which boot of the control server
    /// took it, and count the attempt if it started a new run (`new_run`: 201). A 200 is the
    /// run an earlier, unanswered start of the same dispatch began, which costs no second attempt.
    pub fn mark_dispatched(
        &self,
        agent: &Agent,
        now_ms: i64,
        new_run: bool,
        boot_id: Option<&str>,
    ) -> ApiResult<()> {
        let changed = self.db.exec(
            "UPDATE agents SET dispatched_ms = ?, dispatch_boot = ?, dispatch_attempts = dispatch_attempts + ?, last_activity_at = ?
             WHERE id = ? AND current_hook_bead_id IS ? AND dispatched_ms IS NULL",
            params![now_ms, boot_id, i64::from(new_run), &self.now, &agent.id, agent.current_hook_bead_id.clone()],
        )?;
        if changed == 0 {
            return Ok(());
        }
        self.log(
            agent.current_hook_bead_id.as_deref(),
            Some(&agent.id),
            EventKind::AgentDispatched,
            json!({}),
        )
    }

    /// A start the container refused (or that never arrived) counts as an attempt too.
    pub fn mark_dispatch_failed(&self, agent: &Agent, reason: &str) -> ApiResult<()> {
        let changed = self.db.exec(
            "UPDATE agents SET dispatch_attempts = dispatch_attempts + 1 WHERE id = ? AND current_hook_bead_id IS ? AND dispatched_ms IS NULL",
            params![&agent.id, agent.current_hook_bead_id.clone()],
        )?;
        if changed == 0 {
            return Ok(());
        }
        self.log(
            agent.current_hook_bead_id.as_deref(),
            Some(&agent.id),
            EventKind::AgentExited,
            json!({ "reason": reason, "phase": "dispatch" }),
        )
    }

    /// The container has no room for the agent now: the bead stays hooked and waits for a later
    /// pass, and no attempt is counted. The reason is logged once per wait (not every pass).
    pub fn mark_queued(&self, agent: &Agent, reason: &str) -> ApiResult<()> {
        #[derive(Deserialize)]
        struct Last {
            kind: String,
        }
        let bead = agent.current_hook_bead_id.as_deref();
        let last: Option<Last> = self.db.first(
            "SELECT kind FROM bead_events WHERE bead_id = ? ORDER BY rowid DESC LIMIT 1",
            params![bead],
        )?;
        if last.is_some_and(|l| l.kind == EventKind::Queued.as_str()) {
            return Ok(());
        }
        self.log(bead, Some(&agent.id), EventKind::Queued, json!({ "reason": reason }))
    }

    /// The agent called the API from inside its run: the run started for real, so the failed
    /// starts before it no longer count against the bead (a transient cold-start failure early
    /// on must not fail a bead that later worked for hours).
    pub(super) fn run_started(&self, agent_id: &str) -> ApiResult<()> {
        self.db.exec(
            "UPDATE agents SET dispatch_attempts = 0 WHERE id = ? AND dispatched_ms IS NOT NULL AND dispatch_attempts > 0",
            params![agent_id],
        )?;
        Ok(())
    }

    /// The agent's process is gone without `done`: the next pass dispatches again, as a new run.
    /// A `lost` run that had started for real (its attempts were reset) counts as a lost run; a
    /// run the town wound down (not `lost`) does not.
    pub fn mark_exited(
        &self,
        agent: &Agent,
        dispatched_ms: i64,
        reason: &str,
        lost: bool,
    ) -> ApiResult<()> {
        let changed = self.db.exec(
            "UPDATE agents SET dispatched_ms = NULL, dispatch_gen = dispatch_gen + 1,
                    lost_runs = lost_runs + (CASE WHEN ? AND dispatch_attempts = 0 THEN 1 ELSE 0 END)
             WHERE id = ? AND current_hook_bead_id IS ? AND dispatched_ms = ?",
            params![lost, &agent.id, agent.current_hook_bead_id.clone(), dispatched_ms],
        )?;
        if changed == 0 {
            return Ok(());
        }
        self.log(
            agent.current_hook_bead_id.as_deref(),
            Some(&agent.id),
            EventKind::AgentExited,
            json!({ "reason": reason }),
        )
    }

    /// A limit is reached (`reason`): the bead fails, the agent is unhooked and idle.
    pub fn give_up(&self, agent: &Agent, bead: &Bead, reason: &str) -> ApiResult<()> {
        if self.agent(&agent.id)?.current_hook_bead_id.as_deref() != Some(bead.id.as_str()) {
            return Ok(());
        }
        self.db.exec(
            "UPDATE beads SET status = 'failed', updated_at = ? WHERE id = ?",
            params![&self.now, &bead.id],
        )?;
        self.log(
            Some(&bead.id),
            Some(&agent.id),
            EventKind::StatusChanged,
            json!({ "from": bead.status, "to": "failed", "reason": reason }),
        )?;
        self.unhook(&agent.id)?;
        self.db.exec("UPDATE agents SET dispatched_ms = NULL, dispatch_attempts = 0, lost_runs = 0 WHERE id = ?", params![&agent.id])?;
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
            let active = agent
                .last_activity_at
                .as_deref()
                .and_then(crate::time::millis_from_iso)
                .unwrap_or(0);
            let since = active.max(row.gupp_ms.unwrap_or(0));
            if now_ms - since >= after_ms {
                out.push(agent);
            }
        }
        Ok(out)
    }

    /// Records a GUPP reminder. `delivered`: it went into the agent's session as a message;
    /// otherwise it is left as mail (the agent reads it with gt_mail_check).
    pub fn send_gupp(&self, agent: &Agent, now_ms: i64, delivered: bool) -> ApiResult<()> {
        let id = (self.new_id)();
        self.db.exec(
            "INSERT INTO mail (id, from_agent_id, to_agent_id, subject, body, delivered, created_at, delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![&id, SCHEDULER_SENDER, &agent.id, GUPP_SUBJECT, GUPP_BODY, delivered as i64, &self.now, delivered.then(|| self.now.clone())],
        )?;
        self.db.exec("UPDATE agents SET gupp_ms = ? WHERE id = ?", params![now_ms, &agent.id])?;
        let kind = if delivered { EventKind::Nudged } else { EventKind::MailSent };
        self.log(
            agent.current_hook_bead_id.as_deref(),
            None,
            kind,
            json!({ "mail_id": id, "to_agent_id": agent.id, "gupp": true, "delivered": delivered }),
        )
    }

    /// Dispatched agents with unread mail that were not nudged within `every_ms`: `(agent,
    /// unread count)`.
    pub fn mail_nudges_due(&self, now_ms: i64, every_ms: i64) -> ApiResult<Vec<(Agent, i64)>> {
        #[derive(Deserialize)]
        struct Row {
            id: String,
            unread: i64,
        }
        let rows: Vec<Row> = self.db.query(
            "SELECT a.id, COUNT(m.id) AS unread FROM agents a JOIN mail m ON m.to_agent_id = a.id AND m.delivered = 0
             WHERE a.current_hook_bead_id IS NOT NULL AND a.dispatched_ms IS NOT NULL AND a.status != 'dead'
               AND (a.nudged_ms IS NULL OR a.nudged_ms <= ?)
             GROUP BY a.id ORDER BY a.rowid",
            params![now_ms - every_ms],
        )?;
        rows.into_iter().map(|r| Ok((self.agent(&r.id)?, r.unread))).collect()
    }

    /// Records that the agent was told about its mail (the mail stays unread until it checks).
    pub fn mark_nudged(&self, agent: &Agent, now_ms: i64, unread: i64) -> ApiResult<()> {
        self.db.exec("UPDATE agents SET nudged_ms = ? WHERE id = ?", params![now_ms, &agent.id])?;
        self.log(
            agent.current_hook_bead_id.as_deref(),
            Some(&agent.id),
            EventKind::Nudged,
            json!({ "unread_mail": unread }),
        )
    }
}
