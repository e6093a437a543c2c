//! AgentIdentityDO: one per agent identity (`idFromName(identity)`).

use std::cell::Cell;

use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::call::serve;
use super::{platform, sql};
use crate::error::ApiError;
use crate::identity::{Identity, MIGRATIONS};
use crate::rpc::IdentityOp;

#[durable_object(fetch)]
pub struct AgentIdentityDO {
    state: State,
    ready: Cell<bool>,
}

impl DurableObject for AgentIdentityDO {
    fn new(state: State, _env: Env) -> Self {
        Self { state, ready: Cell::new(false) }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        serve(req, async |op: IdentityOp| {
            let db = sql::open(&self.state.storage(), &self.ready, MIGRATIONS)?;
            let id = Identity { db: &db, now: platform::now_iso() };
            let record = match op {
                IdentityOp::Upsert { identity, agent_id, name, role, rig_id, town_id } => {
                    id.upsert(&identity, &agent_id, &name, &role, &rig_id, town_id.as_deref())?
                }
                IdentityOp::RecordCompletion { bead_id, .. } => id.record_completion(&bead_id)?,
                IdentityOp::Get => id.get()?,
            };
            serde_json::to_value(record).map_err(ApiError::internal)
        })
        .await
    }
}
