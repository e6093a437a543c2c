//! TownDO: one per town (`idFromName(townId)`), running [`crate::town::object`] on its SQLite
//! storage: the town, its rigs, town-level escalations and its mayor (whose alarm delivers what
//! the mayor has not received yet).

use std::cell::Cell;

use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::call::{serve, KEY_HEADER};
use super::effects::WorkerEffects;
use super::sql;
use crate::error::ApiResult;
use crate::town::object::{Memory, TownObject};
use crate::town::op::TownCall;
use crate::town::MIGRATIONS;

#[durable_object]
pub struct TownDO {
    state: State,
    env: Env,
    ready: Cell<bool>,
    memory: Memory,
}

impl TownDO {
    fn fx(&self) -> WorkerEffects<'_> {
        WorkerEffects { env: &self.env, storage: self.state.storage() }
    }

    fn db(&self) -> ApiResult<sql::SqlDb> {
        sql::open(&self.state.storage(), &self.ready, MIGRATIONS)
    }
}

impl DurableObject for TownDO {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, ready: Cell::new(false), memory: Memory::default() }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let key = req.headers().get(KEY_HEADER)?;
        serve(req, async |call: TownCall| {
            let (db, fx) = (self.db()?, self.fx());
            TownObject { db: &db, fx: &fx, memory: &self.memory }
                .handle(&call, key.as_deref())
                .await
        })
        .await
    }

    async fn alarm(&self) -> worker::Result<Response> {
        match self.db() {
            Ok(db) => {
                let fx = self.fx();
                TownObject { db: &db, fx: &fx, memory: &self.memory }.alarm().await
            }
            Err(e) => worker::console_error!("town: alarm without storage: {e}"),
        }
        Response::ok("ok")
    }
}
