//! The bead event log: an append-only record of what happened to each bead.

use serde_json::Value;

use super::rows::EventRow;
use super::Rig;
use crate::db::{Db, Select};
use crate::error::ApiResult;
use crate::model::{BeadEvent, EventKind};
use crate::params;
use crate::requests::EventFilter;

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
