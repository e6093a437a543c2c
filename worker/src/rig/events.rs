//! The bead event log: an append-only record of what happened to each bead.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::op::{rig_ops, to_json, RigOp};
use super::rows::EventRow;
use super::Rig;
use crate::api::{self, Incoming, Plan};
use crate::db::{Db, Select};
use crate::error::ApiResult;
use crate::model::{BeadEvent, EventKind};
use crate::params;
use crate::routes::{Endpoint, Rule};

/// The event log (internal): the rig's, or one bead's.
pub const ROUTES: &[Endpoint] = &[
    Endpoint::get("/api/rigs/:rigId/events", Rule::Internal, list),
    Endpoint::get("/api/rigs/:rigId/beads/:beadId/events", Rule::Internal, of_bead),
];

fn list(req: &Incoming) -> ApiResult<Plan> {
    let filter = crate::query::event_filter(req.query, None)?;
    api::rig(req.param("rigId")?, ListEvents(filter))
}

fn of_bead(req: &Incoming) -> ApiResult<Plan> {
    let filter = crate::query::event_filter(req.query, Some(req.param("beadId")?))?;
    api::rig(req.param("rigId")?, ListEvents(filter))
}

/// Query of the event log routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    pub bead_id: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListEvents(pub EventFilter);

impl RigOp for ListEvents {
    const NAME: &'static str = "list_events";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.list_events(&self.0)?)
    }
}

rig_ops!(ListEvents);

impl<D: Db> Rig<'_, D> {
    pub(super) fn log(
        &self,
        bead_id: Option<&str>,
        agent_id: Option<&str>,
        kind: EventKind,
        data: Value,
    ) -> ApiResult<()> {
        self.db.exec(
            "INSERT INTO bead_events (id, bead_id, agent_id, kind, data, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            params![(self.new_id)(), bead_id, agent_id, kind.as_str(), data.to_string(), &self.now],
        )?;
        Ok(())
    }

    pub(super) fn list_events(&self, f: &EventFilter) -> ApiResult<Vec<BeadEvent>> {
        let (sql, params) = Select::new("SELECT * FROM bead_events")
            .eq("bead_id", f.bead_id.clone())
            .page("rowid", f.limit, f.offset);
        Ok(self.db.query::<EventRow>(&sql, params)?.into_iter().map(Into::into).collect())
    }
}
