//! RigDO: one per rig (`idFromName(rigId)`), running [`crate::rig`] on its SQLite storage.

use std::cell::Cell;

use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::call::serve;
use super::{platform, sql};
use crate::rig::{schema, Rig};
use crate::rpc::RigOp;

#[durable_object(fetch)]
pub struct RigDO {
    state: State,
    ready: Cell<bool>,
}

impl DurableObject for RigDO {
    fn new(state: State, _env: Env) -> Self {
        Self { state, ready: Cell::new(false) }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        serve(req, async |op: RigOp| {
            let db = sql::open(&self.state.storage(), &self.ready, schema::MIGRATIONS)?;
            Rig { db: &db, now: platform::now_iso(), new_id: &platform::new_id }.handle(op)
        })
        .await
    }
}
