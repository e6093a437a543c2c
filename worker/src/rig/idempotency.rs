//! The RigDO's idempotent ops (`crate::idempotency`): the lookup, the op and the record of its
//! reply happen in one synchronous sequence, which the Durable Object runs atomically.

use super::op::{Ran, RigCall};
use super::Rig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::idempotency::{lookup, record};

impl<D: Db> Rig<'_, D> {
    /// Runs `call` once per `key`; `.1` is true when the reply is a replay of the first one.
    pub fn handle_once(&self, key: Option<&str>, call: &RigCall) -> (ApiResult<Ran>, bool) {
        let Some(key) = key else { return (self.handle(call), false) };
        match lookup(self.db, key) {
            Ok(Some(kept)) => return (kept.map(Ran::replay), true),
            Ok(None) => {}
            Err(e) => return (Err(e), false),
        }
        let result = self.handle(call);
        let reply = result.as_ref().map(|ran| ran.data.clone()).map_err(Clone::clone);
        match record(self.db, key, &self.now, &reply) {
            Ok(()) => (result, false),
            Err(e) => (Err(e), false),
        }
    }
}
