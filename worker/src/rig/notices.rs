//! The rig's outbox to its town's mayor: escalations raised and convoys landed are written here
//! in the same step as the change itself, and the RigDO runtime sends them to the TownDO after
//! the op (or the scheduler pass), forgetting each once the TownDO took it. A TownDO that cannot
//! be reached loses nothing: the notice waits for the next op or pass.
//!
//! Also the mayor's answer to an escalation ([`Rig::resolve_escalation`]).

use serde::Deserialize;
use serde_json::{json, Value};

use super::Rig;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::mayor::routes::{Notice, NoticeKind};
use crate::mayor::MAYOR_AGENT_ID;
use crate::model::{Bead, BeadStatus, BeadType, EventKind};
use crate::params;

/// Most notices sent in one flush (the rest wait for the next).
pub const FLUSH_BATCH: i64 = 20;

impl<D: Db> Rig<'_, D> {
    /// Writes a notice for the town's mayor (nothing for a rig that is not configured).
    pub(super) fn notify(
        &self,
        kind: NoticeKind,
        ref_id: &str,
        title: &str,
        detail: Value,
    ) -> ApiResult<()> {
        let Ok(config) = self.config() else { return Ok(()) };
        let notice = Notice {
            rig_id: config.rig_id,
            kind,
            ref_id: ref_id.into(),
            title: title.into(),
            detail,
        };
        let text = serde_json::to_string(&notice).map_err(ApiError::internal)?;
        self.db.exec(
            "INSERT INTO town_notices (notice, created_at) VALUES (?, ?)",
            params![text, &self.now],
        )?;
        Ok(())
    }

    /// A new escalation bead, for the mayor.
    pub(super) fn notify_escalation(&self, bead: &Bead) -> ApiResult<()> {
        let detail = json!({
            "body": bead.body, "priority": bead.priority.as_str(), "from_agent_id": bead.metadata["from_agent_id"],
        });
        self.notify(NoticeKind::Escalation, &bead.id, &bead.title, detail)
    }

    /// The notices waiting to be sent, oldest first: `(id, town id, notice)`.
    pub fn pending_notices(&self) -> ApiResult<Vec<(i64, String, Notice)>> {
        #[derive(Deserialize)]
        struct Row {
            id: i64,
            notice: String,
        }
        let Ok(config) = self.config() else { return Ok(Vec::new()) };
        let rows: Vec<Row> = self.db.query(
            "SELECT id, notice FROM town_notices ORDER BY id LIMIT ?",
            params![FLUSH_BATCH],
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some((r.id, config.town_id.clone(), crate::json::from_text(&r.notice).ok()?))
            })
            .collect())
    }

    pub fn forget_notice(&self, id: i64) -> ApiResult<()> {
        self.db.exec("DELETE FROM town_notices WHERE id = ?", params![id])?;
        Ok(())
    }

    /// The mayor answers escalation `id`: the bead is closed and the answer mailed, from the
    /// mayor, to the agent that raised it (when an agent of this rig did). An escalation that
    /// is already closed is a 409 and nothing is sent twice.
    pub(crate) fn resolve_escalation(&self, id: &str, answer: &str) -> ApiResult<Value> {
        let bead = self.bead(id)?;
        if bead.bead_type != BeadType::Escalation {
            return Err(ApiError::bad_request(format!(
                "escalation_id: bead {id} is not an escalation"
            )));
        }
        if bead.status == BeadStatus::Closed {
            return Err(ApiError::Conflict(format!("escalation {id} is already resolved")));
        }
        let to = bead.metadata["from_agent_id"]
            .as_str()
            .filter(|a| self.agent(a).is_ok())
            .map(str::to_string);
        self.set_status(&bead, BeadStatus::Closed, MAYOR_AGENT_ID, EventKind::Closed)?;
        let mailed = match &to {
            Some(agent) => {
                let mail_id = (self.new_id)();
                let subject = format!("Re: {}", bead.title.chars().take(200).collect::<String>());
                self.db.exec(
                    "INSERT INTO mail (id, from_agent_id, to_agent_id, subject, body, delivered, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
                    params![&mail_id, MAYOR_AGENT_ID, agent, subject, answer, &self.now],
                )?;
                self.log(
                    Some(&bead.id),
                    None,
                    EventKind::MailSent,
                    json!({ "mail_id": mail_id, "to_agent_id": agent, "from": MAYOR_AGENT_ID }),
                )?;
                true
            }
            None => false,
        };
        Ok(json!({ "resolved": true, "escalation_id": id, "mailed_to": to, "mailed": mailed }))
    }
}
