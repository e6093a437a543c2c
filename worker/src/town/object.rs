//! The TownDO's handler: each town op (`super::op`) over the town's storage and [`Effects`]
//! (the RigDO it configures, the town index it joins, the mayor's container calls). The runtime
//! only opens the storage and passes the calls in.

use std::cell::Cell;

use serde_json::Value;

use super::op::TownCall;
use super::Town;
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};

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
    /// Runs the op `call` names, with its module's `run_town_op`. `key`: the call's
    /// idempotency key, honoured by the mayor's ops (its retried tool calls); the town's own
    /// ops are idempotent or create with fresh ids.
    pub async fn handle(&self, call: &TownCall, key: Option<&str>) -> ApiResult<Value> {
        if let Some(done) = super::run_town_op(self, call, key).await {
            return done;
        }
        if let Some(done) = crate::escalations::run_town_op(self, call, key).await {
            return done;
        }
        if let Some(done) = crate::spending::run_town_op(self, call, key).await {
            return done;
        }
        if let Some(done) = crate::mayor::routes::run_town_op(self, call, key).await {
            return done;
        }
        if let Some(done) = crate::forge::run_town_op(self, call, key).await {
            return done;
        }
        if let Some(done) = crate::forge::webhooks::run_town_op(self, call, key).await {
            return done;
        }
        if let Some(done) = crate::shards::run_town_op(self, call, key).await {
            return done;
        }
        Err(ApiError::Internal(format!("no town op {}", call.op)))
    }

    /// Runs `f` on the town's storage, as one step of this request.
    pub(crate) fn with_town<T>(&self, f: impl FnOnce(&Town<'_, D>) -> T) -> T {
        let new_id = || self.fx.new_id();
        f(&Town { db: self.db, now: self.fx.now_iso(), new_id: &new_id })
    }

    /// The TownDO's alarm: the mayor's pending deliveries.
    pub async fn alarm(&self) {
        if let Err(e) = self.mayor_alarm().await {
            self.fx.log_error(&format!("mayor: alarm failed: {e}"));
        }
    }
}
