//! The RigDO's logic: one rig's beads, agents, hooks, mail, review queue and event log.
//!
//! Each resource module (beads, agents, mail, ...) holds its routes, bodies, ops ([`op::RigOp`])
//! and SQL. Written against [`Db`] and free of `await`: each op runs as one synchronous sequence
//! of statements, which a Durable Object executes atomically (see [`crate::db`]). Checks come
//! before writes, so a refused request changes nothing.

pub mod agents;
pub mod beads;
pub mod budget;
pub mod config;
pub mod convoys;
pub mod events;
mod idempotency;
pub mod mail;
mod notices;
pub mod object;
#[cfg(test)]
mod object_tests;
pub mod op;
mod pulls;
mod refinery;
pub mod review;
mod rows;
mod schedule;
pub mod schema;
pub mod sling;
#[cfg(test)]
mod tests;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use op::{Ran, RigCall};

/// One request's view of the rig: its storage, the request's time and an id source.
pub struct Rig<'a, D: Db> {
    pub db: &'a D,
    /// ISO-8601 time of this request; every record it writes carries the same time.
    pub now: String,
    pub new_id: &'a dyn Fn() -> String,
}

impl<D: Db> Rig<'_, D> {
    /// Runs the op `call` names, with its module's `run_op`.
    pub fn handle(&self, call: &RigCall) -> ApiResult<Ran> {
        let ran = beads::run_op(self, call)
            .or_else(|| agents::run_op(self, call))
            .or_else(|| mail::run_op(self, call))
            .or_else(|| review::run_op(self, call))
            .or_else(|| config::run_op(self, call))
            .or_else(|| sling::run_op(self, call))
            .or_else(|| events::run_op(self, call))
            .or_else(|| convoys::run_op(self, call))
            .or_else(|| budget::run_op(self, call))
            .or_else(|| crate::escalations::run_op(self, call));
        ran.unwrap_or_else(|| Err(ApiError::Internal(format!("no rig op {}", call.op))))
    }
}
