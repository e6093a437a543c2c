//! The review queue's storage side for the refinery: which entry to merge next, and what a
//! finished merge changes (entry, bead, convoy, escalation, the rework hook). Each function is
//! one synchronous step, conditioned on the state it read, so a pass that raced with another
//! request changes nothing twice.

use serde::Deserialize;
use serde_json::json;
use shared_types::MergeStatus;

use super::rows::ReviewRow;
use super::Rig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::model::{Bead, BeadType, EventKind, Priority, ReviewEntry};
use crate::params;
use crate::refinery::{self, Verdict};
use crate::rig::beads::NewBead;

impl<D: Db> Rig<'_, D> {
    /// The entry being merged now, if any (one merge at a time per rig).
    pub fn running_review(&self) -> ApiResult<Option<ReviewEntry>> {
        Ok(self
            .db
            .first::<ReviewRow>(
                "SELECT * FROM review_queue WHERE status = 'running' ORDER BY rowid LIMIT 1",
                vec![],
            )?
            .map(Into::into))
    }

    /// The oldest entry waiting for a merge.
    pub fn next_review(&self) -> ApiResult<Option<ReviewEntry>> {
        Ok(self
            .db
            .first::<ReviewRow>(
                "SELECT * FROM review_queue WHERE status = 'pending' ORDER BY rowid LIMIT 1",
                vec![],
            )?
            .map(Into::into))
    }

    /// `pending -> running` (only from pending). Returns whether it changed.
    pub fn start_review(&self, entry: &ReviewEntry) -> ApiResult<bool> {
        let changed = self.db.exec(
            "UPDATE review_queue SET status = 'running' WHERE id = ? AND status = 'pending'",
            params![&entry.id],
        )?;
        if changed > 0 {
            self.log(
                Some(&entry.bead_id),
                Some(&entry.agent_id),
                EventKind::MergeStarted,
                json!({ "review_id": entry.id, "branch": entry.branch }),
            )?;
        }
        Ok(changed > 0)
    }

    /// `running -> pending` (only from running): the merge was lost with the shard that ran it,
    /// and is started again, wherever the rig runs by then. Returns whether it changed.
    pub fn requeue_review(&self, entry_id: &str) -> ApiResult<bool> {
        let changed = self.db.exec(
            "UPDATE review_queue SET status = 'pending' WHERE id = ? AND status = 'running'",
            params![entry_id],
        )?;
        Ok(changed > 0)
    }

    /// Applies a finished merge to a running entry (nothing if it is no longer running) and
    /// returns the verdict it applied:
    /// - merged: entry `merged`, bead `closed`, its convoy landed if it was the last bead;
    /// - rework: entry `rework`, the bead's round counted and its note kept for the next
    ///   prompt, and the bead hooked to its polecat again if that one is free;
    /// - escalate: entry `rework` (or `failed`), bead `failed`, an escalation bead raised.
    pub fn finish_review(
        &self,
        entry_id: &str,
        status: &MergeStatus,
    ) -> ApiResult<Option<Verdict>> {
        let Some(entry) = self
            .db
            .first::<ReviewRow>(
                "SELECT * FROM review_queue WHERE id = ? AND status = 'running'",
                params![entry_id],
            )?
            .map(ReviewEntry::from)
        else {
            return Ok(None);
        };
        let bead = self.bead(&entry.bead_id)?;
        let config = self.config()?;
        let rounds = self.rework_rounds(&bead.id)?;
        let verdict = refinery::verdict(status, rounds, &config.merge);
        let result = serde_json::to_string(status).unwrap_or_else(|_| "{}".into());
        let set_entry = |to: &str| {
            self.db.exec(
                "UPDATE review_queue SET status = ?, processed_at = ?, result = ? WHERE id = ?",
                params![to, &self.now, result.clone(), &entry.id],
            )
        };
        match &verdict {
            Verdict::Merged { commit } => {
                set_entry("merged")?;
                self.db.exec(
                    "UPDATE beads SET status = 'closed', closed_at = ?, updated_at = ?, rework_note = NULL WHERE id = ?",
                    params![&self.now, &self.now, &bead.id],
                )?;
                self.log(
                    Some(&bead.id),
                    Some(&entry.agent_id),
                    EventKind::Merged,
                    json!({ "review_id": entry.id, "commit": commit, "branch": entry.branch }),
                )?;
                self.log(
                    Some(&bead.id),
                    None,
                    EventKind::Closed,
                    json!({ "from": bead.status, "to": "closed" }),
                )?;
                if let Some(convoy) = &bead.convoy_id {
                    self.land_if_done(convoy)?;
                }
            }
            Verdict::Rework { note } => {
                set_entry("rework")?;
                self.db.exec("UPDATE beads SET rework_rounds = rework_rounds + 1, rework_note = ?, updated_at = ? WHERE id = ?", params![note, &self.now, &bead.id])?;
                self.log(Some(&bead.id), Some(&entry.agent_id), EventKind::Rework, json!({ "review_id": entry.id, "round": rounds + 1, "state": status.state, "detail": status.detail }))?;
                self.hook_rework()?;
            }
            Verdict::Escalate { reason, entry_failed } => {
                set_entry(if *entry_failed { "failed" } else { "rework" })?;
                self.db.exec("UPDATE beads SET status = 'failed', updated_at = ?, rework_note = NULL WHERE id = ?", params![&self.now, &bead.id])?;
                self.escalate_review(&bead, &entry, "Bead cannot be merged", reason)?;
            }
            Verdict::Returned { reason } => {
                set_entry("failed")?;
                self.db.exec("UPDATE beads SET status = 'open', assignee_agent_id = NULL, updated_at = ?, rework_note = NULL WHERE id = ?", params![&self.now, &bead.id])?;
                self.log(
                    Some(&bead.id),
                    None,
                    EventKind::StatusChanged,
                    json!({ "from": bead.status, "to": "open" }),
                )?;
                self.escalate_review(&bead, &entry, "Pull request closed without merging", reason)?;
            }
        }
        Ok(Some(verdict))
    }

    /// Raises the escalation bead for a review that needs a person.
    fn escalate_review(
        &self,
        bead: &Bead,
        entry: &ReviewEntry,
        what: &str,
        reason: &str,
    ) -> ApiResult<()> {
        let escalation = self.insert_bead(&NewBead {
            bead_type: BeadType::Escalation,
            title: format!("{what}: {}", bead.title.chars().take(200).collect::<String>()),
            body: Some(reason.to_string()),
            priority: Some(Priority::High),
            labels: None,
            metadata: Some(json!({ "bead_id": bead.id, "review_id": entry.id, "branch": entry.branch, "pr_url": entry.pr_url })),
            assignee_agent_id: None,
            convoy_id: None,
        })?;
        self.log(
            Some(&bead.id),
            Some(&entry.agent_id),
            EventKind::Escalated,
            json!({ "review_id": entry.id, "escalation_id": escalation.id, "reason": reason }),
        )
    }

    fn rework_rounds(&self, bead_id: &str) -> ApiResult<u32> {
        #[derive(Deserialize)]
        struct Row {
            rework_rounds: i64,
        }
        Ok(self
            .db
            .first::<Row>("SELECT rework_rounds FROM beads WHERE id = ?", params![bead_id])?
            .map_or(0, |r| r.rework_rounds.max(0) as u32))
    }

    /// How many entries have merged into the default branch, whatever the strategy (the
    /// status index counts them without reading the queue).
    pub fn merges(&self) -> ApiResult<u64> {
        #[derive(Deserialize)]
        struct Row {
            n: i64,
        }
        let sql = "SELECT COUNT(*) AS n FROM review_queue WHERE status = 'merged'";
        Ok(self.db.first::<Row>(sql, vec![])?.map_or(0, |r| r.n.max(0) as u64))
    }

    /// Why the bead's last merge failed, for its polecat's next prompt (`None`: no rework).
    pub fn rework_note(&self, bead_id: &str) -> ApiResult<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            rework_note: Option<String>,
        }
        Ok(self
            .db
            .first::<Row>("SELECT rework_note FROM beads WHERE id = ?", params![bead_id])?
            .and_then(|r| r.rework_note))
    }

    /// Hooks beads waiting for rework to their polecat once it is free: a bead in progress with
    /// a rework note, no review entry pending or running, hooked by nobody, whose assignee is
    /// idle and unhooked. Returns how many were hooked.
    pub fn hook_rework(&self) -> ApiResult<usize> {
        #[derive(Deserialize)]
        struct Waiting {
            id: String,
            assignee_agent_id: String,
        }
        let waiting: Vec<Waiting> = self.db.query(
            "SELECT b.id, b.assignee_agent_id FROM beads b JOIN agents a ON a.id = b.assignee_agent_id
             WHERE b.rework_note IS NOT NULL AND b.status = 'in_progress'
               AND a.current_hook_bead_id IS NULL AND a.status = 'idle'
               AND NOT EXISTS (SELECT 1 FROM agents h WHERE h.current_hook_bead_id = b.id)
               AND NOT EXISTS (SELECT 1 FROM review_queue r WHERE r.bead_id = b.id AND r.status IN ('pending', 'running'))
             ORDER BY b.rowid",
            vec![],
        )?;
        let mut hooked = 0;
        for w in waiting {
            // One bead per agent: a second waiting bead of the same agent waits for the next pass.
            if self.agent(&w.assignee_agent_id)?.current_hook_bead_id.is_none() {
                self.hook(&w.assignee_agent_id, &w.id)?;
                hooked += 1;
            }
        }
        Ok(hooked)
    }

    /// Is there refinery work (entries pending or running, rework waiting)?
    pub fn has_merge_work(&self) -> ApiResult<bool> {
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        let n = self.db.first::<Count>(
            "SELECT (SELECT COUNT(*) FROM review_queue WHERE status IN ('pending', 'running'))
                  + (SELECT COUNT(*) FROM beads WHERE rework_note IS NOT NULL AND status = 'in_progress') AS n",
            vec![],
        )?;
        Ok(n.is_some_and(|c| c.n > 0))
    }
}
