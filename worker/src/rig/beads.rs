//! Beads: creation (including escalations), listing with filters, status changes and close.

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::validate;

use super::op::{rig_ops, to_json, RigOp};
use super::rows::BeadRow;
use super::Rig;
use crate::api::{self, FollowUp, Incoming, Plan};
use crate::auth::check_body_agent;
use crate::body::{Kind, NON_EMPTY, STR};
use crate::db::{Db, Select};
use crate::error::{ApiError, ApiResult};
use crate::escalations::NewEscalation;
use crate::model::{Bead, BeadStatus, BeadType, EventKind, Priority};
use crate::params;
use crate::requests::{
    labels, metadata, opt_id, opt_text, text, Issues, Validate, MAX_TEXT, MAX_TITLE, PRIORITIES,
};
use crate::routes::{Endpoint, Rule};

/// Beads: the reference's routes (an agent of the rig, or internal callers).
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/beads", Rule::Rig, create_bead),
    Endpoint::get("/api/rigs/:rigId/beads", Rule::Rig, list_beads),
    Endpoint::get("/api/rigs/:rigId/beads/:beadId", Rule::Rig, get_bead),
    Endpoint::patch("/api/rigs/:rigId/beads/:beadId/status", Rule::Rig, update_status),
    Endpoint::post("/api/rigs/:rigId/beads/:beadId/close", Rule::Rig, close_bead),
];

fn create_bead(req: &Incoming) -> ApiResult<Plan> {
    api::created(req.param("rigId")?, CreateBead(req.body()?), FollowUp::None)
}

fn list_beads(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, ListBeads(crate::query::bead_filter(req.query)?))
}

fn get_bead(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, GetBead { bead_id: req.param("beadId")? })
}

fn update_status(req: &Incoming) -> ApiResult<Plan> {
    let update: StatusUpdate = req.body()?;
    check_body_agent(&req.caller, "agent_id", &update.agent_id)?;
    let bead_id = req.param("beadId")?;
    api::rig(req.param("rigId")?, UpdateBeadStatus { bead_id, update })
}

fn close_bead(req: &Incoming) -> ApiResult<Plan> {
    let close: CloseRequest = req.body()?;
    check_body_agent(&req.caller, "agent_id", &close.agent_id)?;
    let op = CloseBead { bead_id: req.param("beadId")?, agent_id: close.agent_id };
    api::rig(req.param("rigId")?, op)
}

const BEAD_TYPES: Kind = Kind::Enum(&["issue", "message", "escalation", "merge_request"]);

/// `failed` is ours (the reference has open, in_progress, closed).
const BEAD_STATUSES: Kind = Kind::Enum(&["open", "in_progress", "closed", "failed"]);

request_body! {
    /// `POST /api/rigs/:rigId/beads`
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct NewBead {
        pub bead_type as "type": BeadType = req(BEAD_TYPES),
        pub title: String = req(NON_EMPTY),
        pub body: Option<String> = opt(STR),
        pub priority: Option<Priority> = opt(PRIORITIES),
        pub labels: Option<Vec<String>> = opt(Kind::StrArray),
        pub metadata: Option<Value> = opt(Kind::Record),
        pub assignee_agent_id: Option<String> = opt(STR),
        pub convoy_id: Option<String> = opt(STR),
    }
}

impl Validate for NewBead {
    fn check(&self, i: &mut Issues) {
        i.add("title", text(&self.title, MAX_TITLE));
        i.add("body", opt_text(&self.body, MAX_TEXT));
        i.add("labels", labels(&self.labels));
        i.add("metadata", metadata(&self.metadata));
        i.add("assignee_agent_id", opt_id(&self.assignee_agent_id));
        i.add("convoy_id", opt_id(&self.convoy_id));
    }
}

request_body! {
    /// `PATCH /api/rigs/:rigId/beads/:beadId/status`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct StatusUpdate {
        pub status: BeadStatus = req(BEAD_STATUSES),
        pub agent_id: String = req(NON_EMPTY),
    }
}

impl Validate for StatusUpdate {
    fn check(&self, i: &mut Issues) {
        i.add("agent_id", validate::id(&self.agent_id));
    }
}

request_body! {
    /// `POST /api/rigs/:rigId/beads/:beadId/close`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CloseRequest {
        pub agent_id: String = req(NON_EMPTY),
    }
}

impl Validate for CloseRequest {
    fn check(&self, i: &mut Issues) {
        i.add("agent_id", validate::id(&self.agent_id));
    }
}

/// Query of `GET /api/rigs/:rigId/beads`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeadFilter {
    pub status: Option<BeadStatus>,
    pub bead_type: Option<BeadType>,
    pub assignee_agent_id: Option<String>,
    pub convoy_id: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// Creates a bead (not an escalation's: see `escalations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateBead(pub NewBead);

impl RigOp for CreateBead {
    const NAME: &'static str = "create_bead";
    const NEEDS_CONFIGURED_RIG: bool = true;
    const NOTIFIES: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.create_bead(&self.0)?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListBeads(pub BeadFilter);

impl RigOp for ListBeads {
    const NAME: &'static str = "list_beads";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.list_beads(&self.0)?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetBead {
    pub bead_id: String,
}

impl RigOp for GetBead {
    const NAME: &'static str = "get_bead";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.bead(&self.bead_id)?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateBeadStatus {
    pub bead_id: String,
    pub update: StatusUpdate,
}

impl RigOp for UpdateBeadStatus {
    const NAME: &'static str = "update_bead_status";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.update_status(&self.bead_id, &self.update)?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseBead {
    pub bead_id: String,
    pub agent_id: String,
}

impl RigOp for CloseBead {
    const NAME: &'static str = "close_bead";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.close_bead(&self.bead_id, &self.agent_id)?)
    }
}

rig_ops!(CreateBead, ListBeads, GetBead, UpdateBeadStatus, CloseBead);

impl<D: Db> Rig<'_, D> {
    pub fn bead(&self, id: &str) -> ApiResult<Bead> {
        self.db
            .first::<BeadRow>("SELECT * FROM beads WHERE id = ?", params![id])?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found("bead"))
    }

    pub(super) fn create_bead(&self, b: &NewBead) -> ApiResult<Bead> {
        if let Some(a) = &b.assignee_agent_id {
            self.agent(a)?;
        }
        self.insert_bead(b)
    }

    /// Inserts a bead (checks done by the caller) and logs `created`.
    pub(super) fn insert_bead(&self, b: &NewBead) -> ApiResult<Bead> {
        let id = (self.new_id)();
        let labels = serde_json::to_string(b.labels.as_deref().unwrap_or_default())
            .unwrap_or_else(|_| "[]".into());
        let metadata = b.metadata.clone().filter(|m| !m.is_null()).unwrap_or_else(|| json!({}));
        self.db.exec(
            "INSERT INTO beads (id, type, status, title, body, assignee_agent_id, convoy_id, priority, labels,
                                metadata, created_at, updated_at)
             VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                &id,
                b.bead_type.as_str(),
                &b.title,
                b.body.clone(),
                b.assignee_agent_id.clone(),
                b.convoy_id.clone(),
                b.priority.unwrap_or_default().as_str(),
                labels,
                metadata.to_string(),
                &self.now,
                &self.now
            ],
        )?;
        self.log(
            Some(&id),
            b.assignee_agent_id.as_deref(),
            EventKind::Created,
            json!({ "type": b.bead_type }),
        )?;
        let bead = self.bead(&id)?;
        if bead.bead_type == BeadType::Escalation {
            // Every escalation of the rig reaches the town's mayor (agents' and the refinery's).
            self.notify_escalation(&bead)?;
        }
        Ok(bead)
    }

    pub(crate) fn list_beads(&self, f: &BeadFilter) -> ApiResult<Vec<Bead>> {
        let (sql, params) = list_sql(f);
        Ok(self.db.query::<BeadRow>(&sql, params)?.into_iter().map(Into::into).collect())
    }

    /// Sets a bead's status (`closed_at` follows `closed`) and logs the change.
    pub(super) fn set_status(
        &self,
        bead: &Bead,
        status: BeadStatus,
        agent_id: &str,
        kind: EventKind,
    ) -> ApiResult<Bead> {
        let closed_at = (status == BeadStatus::Closed).then(|| self.now.clone());
        self.db.exec(
            "UPDATE beads SET status = ?, updated_at = ?, closed_at = ? WHERE id = ?",
            params![status.as_str(), &self.now, closed_at, &bead.id],
        )?;
        self.log(
            Some(&bead.id),
            Some(agent_id),
            kind,
            json!({ "from": bead.status, "to": status }),
        )?;
        self.bead(&bead.id)
    }

    pub(super) fn update_status(&self, bead_id: &str, u: &StatusUpdate) -> ApiResult<Bead> {
        let bead = self.bead(bead_id)?;
        self.agent(&u.agent_id)?;
        if bead.status == u.status {
            return Ok(bead);
        }
        let kind = if u.status == BeadStatus::Closed {
            EventKind::Closed
        } else {
            EventKind::StatusChanged
        };
        self.set_status(&bead, u.status, &u.agent_id, kind)
    }

    /// Closing an already closed bead is a no-op.
    pub(super) fn close_bead(&self, bead_id: &str, agent_id: &str) -> ApiResult<Bead> {
        let bead = self.bead(bead_id)?;
        self.agent(agent_id)?;
        if bead.status == BeadStatus::Closed {
            return Ok(bead);
        }
        self.set_status(&bead, BeadStatus::Closed, agent_id, EventKind::Closed)
    }

    /// An escalation is a bead of type `escalation`, `medium` priority unless given (as any bead).
    pub(crate) fn create_escalation(&self, e: &NewEscalation) -> ApiResult<Bead> {
        self.insert_bead(&NewBead {
            bead_type: BeadType::Escalation,
            title: e.title.clone(),
            body: e.body.clone(),
            priority: e.priority,
            labels: None,
            metadata: e.metadata.clone(),
            assignee_agent_id: None,
            convoy_id: None,
        })
    }

    /// The agent's own unfinished beads (the prime context's `open_beads`), newest first: every
    /// bead assigned to it that is not closed (nor failed, our extra end state), the hooked one
    /// included.
    pub(super) fn open_beads_of(&self, agent_id: &str) -> ApiResult<Vec<Bead>> {
        let rows = self.db.query::<BeadRow>(
            "SELECT * FROM beads WHERE assignee_agent_id = ? AND status NOT IN ('closed', 'failed')
             ORDER BY created_at DESC, rowid DESC",
            params![agent_id],
        )?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

/// A page of beads, newest first. Each filter has an index that also gives the order
/// (`schema::V8`), so a page costs the same at 0 and at 100,000 beads.
pub(super) fn list_sql(f: &BeadFilter) -> (String, Vec<crate::db::SqlValue>) {
    Select::new("SELECT * FROM beads")
        .eq("status", f.status.map(|s| s.as_str()))
        .eq("type", f.bead_type.map(|t| t.as_str()))
        .eq("assignee_agent_id", f.assignee_agent_id.clone())
        .eq("convoy_id", f.convoy_id.clone())
        .page("created_at DESC, rowid DESC", f.limit, f.offset)
}
