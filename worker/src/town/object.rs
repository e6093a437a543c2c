//! The TownDO's handler: each [`TownOp`] over the town's storage and [`Effects`] (the RigDO it
//! configures, the town index it joins, the mayor's container calls). The runtime only opens
//! the storage and passes the calls in.

use std::cell::Cell;

use serde_json::Value;

use super::{Town, INDEX};
use crate::db::Db;
use crate::effects::{rig_op, Effects};
use crate::error::{ApiError, ApiResult};
use crate::rig::config::Configure;
use crate::rig::op::to_json;
use crate::rpc::TownOp;

/// What a TownDO keeps in memory between its requests.
#[derive(Debug, Default)]
pub struct Memory {
    /// A delivery to the mayor is under way (one at a time)...
    pub delivering: Cell<bool>,
    /// ...and another was asked for meanwhile.
    pub again: Cell<bool>,
}

pub struct TownObject<'a, D: Db, E: Effects> {
    pub db: &'a D,
    pub fx: &'a E,
    pub memory: &'a Memory,
}

impl<D: Db, E: Effects> TownObject<'_, D, E> {
    /// Runs `op`. `key`: the call's idempotency key, honoured by the mayor's ops (its retried
    /// tool calls); the town's own ops are idempotent or create with fresh ids.
    pub async fn handle(&self, op: TownOp, key: Option<&str>) -> ApiResult<Value> {
        if let TownOp::Mayor(op) = op {
            return self.mayor_once(op, key).await;
        }
        let new_id = || self.fx.new_id();
        let town = Town { db: self.db, now: self.fx.now_iso(), new_id: &new_id };
        match op {
            TownOp::Create { town_id, town: t } => {
                let created = town.create(&town_id, &t)?;
                let index =
                    TownOp::Index { town_id, name: t.name.clone(), created_at: town.now.clone() };
                // The town exists either way; unlisted, it is still reachable by its id.
                if let Err(e) = self.fx.town(INDEX, &index).await {
                    self.fx.log_error(&format!("could not add the town to the town index: {e}"));
                }
                Ok(created)
            }
            TownOp::Index { town_id, name, created_at } => {
                town.index_add(&town_id, &name, &created_at).map(|()| Value::Null)
            }
            TownOp::ListTowns => to_json(town.index_list()?),
            TownOp::Get => town.get(),
            TownOp::CreateRig { rig } => {
                let (rig_id, config) = town.prepare_rig(&rig)?;
                rig_op(self.fx, &rig_id, &Configure { rig_id: rig_id.clone(), config }).await?;
                to_json(town.insert_rig(&rig_id, &rig)?)
            }
            TownOp::ListRigs => {
                town.get()?;
                to_json(town.rigs()?)
            }
            TownOp::CreateEscalation(e) => town.create_escalation(&e),
            TownOp::ListEscalations => to_json(town.escalations()?),
            TownOp::GetLimits => to_json(town.limits()?),
            TownOp::SetLimits(limits) => to_json(town.set_limits(&limits)?),
            TownOp::Mayor(_) => Err(ApiError::Internal("mayor ops are handled above".into())),
        }
    }

    /// The TownDO's alarm: the mayor's pending deliveries.
    pub async fn alarm(&self) {
        if let Err(e) = self.mayor_alarm().await {
            self.fx.log_error(&format!("mayor: alarm failed: {e}"));
        }
    }
}
