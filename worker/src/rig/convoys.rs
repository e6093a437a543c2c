//! Convoys: beads slung together. A convoy is `landed` once every bead in it is closed (merged),
//! `stuck` once one has failed (escalated), `open` otherwise.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::op::{rig_ops, to_json, RigOp};
use super::rows::BeadRow;
use super::Rig;
use crate::api::{self, FollowUp, Incoming, Plan};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::model::{Bead, BeadStatus, EventKind};
use crate::params;
use crate::requests::{text, Issues, Shape, Validate, MAX_TITLE};
use crate::rig::sling::SlingRequest;
use crate::routes::{Endpoint, Rule};

/// Convoys (internal): beads slung together, and their state.
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/convoys", Rule::Internal, create),
    Endpoint::get("/api/rigs/:rigId/convoys", Rule::Internal, list),
    Endpoint::get("/api/rigs/:rigId/convoys/:convoyId", Rule::Internal, get),
];

fn create(req: &Incoming) -> ApiResult<Plan> {
    let rig_id = req.param("rigId")?;
    let op = CreateConvoy { rig_id: rig_id.clone(), convoy: req.body()? };
    api::created(rig_id, op, FollowUp::IdentityFromConvoy)
}

fn list(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, ListConvoys)
}

fn get(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, GetConvoy { convoy_id: req.param("convoyId")? })
}

/// Most beads in one convoy.
pub const MAX_CONVOY_BEADS: usize = 50;

/// `POST /api/rigs/:rigId/convoys` (internal): beads slung together as one convoy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConvoy {
    pub title: String,
    /// Each as a sling request (its own `convoy_id`, if any, is replaced by the new convoy's).
    pub beads: Vec<SlingRequest>,
}

impl Shape for NewConvoy {}

impl Validate for NewConvoy {
    fn check(&self, i: &mut Issues) {
        i.add("title", text(&self.title, MAX_TITLE));
        if self.beads.is_empty() || self.beads.len() > MAX_CONVOY_BEADS {
            i.add("beads", Err(format!("must list 1 to {MAX_CONVOY_BEADS} beads")));
        }
        for (n, b) in self.beads.iter().enumerate() {
            let mut inner = Issues::default();
            b.check(&mut inner);
            i.nested(&format!("beads[{n}]"), inner);
        }
    }
}

#[derive(Deserialize)]
struct ConvoyRow {
    id: String,
    title: String,
    created_at: String,
    landed_at: Option<String>,
}

/// `landed`, `stuck` or `open`, from the convoy's beads.
pub fn convoy_status(beads: &[Bead]) -> &'static str {
    if beads.iter().any(|b| b.status == BeadStatus::Failed) {
        "stuck"
    } else if !beads.is_empty() && beads.iter().all(|b| b.status == BeadStatus::Closed) {
        "landed"
    } else {
        "open"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateConvoy {
    pub rig_id: String,
    pub convoy: NewConvoy,
}

impl RigOp for CreateConvoy {
    const NAME: &'static str = "create_convoy";
    const NEEDS_CONFIGURED_RIG: bool = true;
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        rig.create_convoy(&self.rig_id, &self.convoy)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListConvoys;

impl RigOp for ListConvoys {
    const NAME: &'static str = "list_convoys";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.list_convoys()?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetConvoy {
    pub convoy_id: String,
}

impl RigOp for GetConvoy {
    const NAME: &'static str = "get_convoy";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        rig.convoy(&self.convoy_id)
    }
}

rig_ops!(CreateConvoy, ListConvoys, GetConvoy);

impl<D: Db> Rig<'_, D> {
    /// Creates the convoy and slings each of its beads (each hooked to an idle or new polecat),
    /// in one step. Returns the convoy with its beads and the agents they went to.
    pub(super) fn create_convoy(&self, rig_id: &str, c: &NewConvoy) -> ApiResult<Value> {
        let id = (self.new_id)();
        self.db.exec(
            "INSERT INTO convoys (id, title, created_at) VALUES (?, ?, ?)",
            params![&id, &c.title, &self.now],
        )?;
        let mut agents = Vec::new();
        for spec in &c.beads {
            let sling = SlingRequest { convoy_id: Some(id.clone()), ..spec.clone() };
            let slung = self.sling(rig_id, &sling)?;
            agents.push(json!({ "agent": slung.agent, "agent_created": slung.agent_created }));
        }
        let mut convoy = self.convoy(&id)?;
        convoy["slung"] = Value::Array(agents);
        Ok(convoy)
    }

    /// The convoy with its beads and status; 404 if this rig has no such convoy.
    pub(super) fn convoy(&self, id: &str) -> ApiResult<Value> {
        let row: ConvoyRow = self
            .db
            .first("SELECT * FROM convoys WHERE id = ?", params![id])?
            .ok_or_else(|| ApiError::not_found("convoy"))?;
        let beads = self.convoy_beads(id)?;
        Ok(json!({
            "id": row.id, "title": row.title, "status": convoy_status(&beads), "created_at": row.created_at,
            "landed_at": row.landed_at, "beads": beads,
        }))
    }

    pub(super) fn list_convoys(&self) -> ApiResult<Vec<Value>> {
        let rows: Vec<ConvoyRow> = self.db.query("SELECT * FROM convoys ORDER BY rowid", vec![])?;
        rows.into_iter().map(|r| self.convoy(&r.id)).collect()
    }

    /// A bead may only join a convoy of this rig.
    pub(super) fn check_convoy(&self, id: &str) -> ApiResult<()> {
        self.db
            .first::<ConvoyRow>("SELECT * FROM convoys WHERE id = ?", params![id])?
            .map(|_| ())
            .ok_or_else(|| ApiError::not_found("convoy"))
    }

    fn convoy_beads(&self, id: &str) -> ApiResult<Vec<Bead>> {
        Ok(self
            .db
            .query::<BeadRow>(
                "SELECT * FROM beads WHERE convoy_id = ? ORDER BY rowid",
                params![id],
            )?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Records the landing once the convoy's last bead is closed.
    pub(super) fn land_if_done(&self, id: &str) -> ApiResult<()> {
        let beads = self.convoy_beads(id)?;
        if convoy_status(&beads) == "landed" {
            let changed = self.db.exec(
                "UPDATE convoys SET landed_at = ? WHERE id = ? AND landed_at IS NULL",
                params![&self.now, id],
            )?;
            if changed > 0 {
                self.log(
                    None,
                    None,
                    EventKind::Merged,
                    json!({ "convoy_id": id, "landed": true, "beads": beads.len() }),
                )?;
                let title: Option<ConvoyRow> =
                    self.db.first("SELECT * FROM convoys WHERE id = ?", params![id])?;
                let title = title.map(|c| c.title).unwrap_or_default();
                self.notify(
                    crate::mayor::routes::NoticeKind::ConvoyLanded,
                    id,
                    &title,
                    json!({ "beads": beads.len() }),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::convoy_status;
    use crate::model::Bead;
    use serde_json::json;

    fn bead(status: &str) -> Bead {
        serde_json::from_value(json!({"id": "b", "type": "issue", "status": status, "title": "t", "body": null, "assignee_agent_id": null,
            "convoy_id": "c", "molecule_id": null, "priority": "medium", "labels": [], "metadata": {}, "created_at": "x", "updated_at": "x",
            "closed_at": null}))
        .expect("bead")
    }

    #[test]
    fn a_convoy_lands_when_every_bead_is_closed_and_sticks_on_a_failure() {
        assert_eq!(convoy_status(&[]), "open");
        assert_eq!(convoy_status(&[bead("closed"), bead("in_progress")]), "open");
        assert_eq!(convoy_status(&[bead("closed"), bead("closed")]), "landed");
        assert_eq!(convoy_status(&[bead("closed"), bead("failed")]), "stuck");
    }
}
