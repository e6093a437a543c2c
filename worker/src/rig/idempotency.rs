//! The RigDO's idempotent ops (`crate::idempotency`): the lookup, the op and the record of its
//! reply happen in one synchronous sequence, which the Durable Object runs atomically.

use serde_json::Value;

use super::Rig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::idempotency::{lookup, record};
use crate::rpc::RigOp;

impl<D: Db> Rig<'_, D> {
    /// Runs `op` once per `key`; `.1` is true when the reply is a replay of the first one.
    pub fn handle_once(&self, key: Option<&str>, op: RigOp) -> (ApiResult<Value>, bool) {
        let Some(key) = key else { return (self.handle(op), false) };
        match lookup(self.db, key) {
            Ok(Some(kept)) => return (kept, true),
            Ok(None) => {}
            Err(e) => return (Err(e), false),
        }
        let result = self.handle(op);
        match record(self.db, key, &self.now, &result) {
            Ok(()) => (result, false),
            Err(e) => (Err(e), false),
        }
    }
}
