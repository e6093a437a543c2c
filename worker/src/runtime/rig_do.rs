//! RigDO: one per rig (`idFromName(rigId)`), running [`crate::rig::object`] on its SQLite
//! storage: the rig's ops, and the scheduler in its alarm.

use std::cell::{Cell, RefCell};

use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::call::{serve, KEY_HEADER, REPLAY_HEADER};
use super::effects::WorkerEffects;
use super::sql;
use crate::error::ApiResult;
use crate::rig::object::RigObject;
use crate::rig::op::RigCall;
use crate::rig::schema;

#[durable_object]
pub struct RigDO {
    state: State,
    env: Env,
    ready: Cell<bool>,
}

impl RigDO {
    fn fx(&self) -> WorkerEffects<'_> {
        WorkerEffects { env: &self.env, storage: self.state.storage() }
    }

    fn db(&self) -> ApiResult<sql::SqlDb> {
        sql::open(&self.state.storage(), &self.ready, schema::MIGRATIONS)
    }
}

impl DurableObject for RigDO {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, ready: Cell::new(false) }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let key = req.headers().get(KEY_HEADER)?;
        let replayed = RefCell::new(false);
        let mut resp = serve(req, async |call: RigCall| {
            let (db, fx) = (self.db()?, self.fx());
            let (data, replay) =
                RigObject { db: &db, fx: &fx }.handle(&call, key.as_deref()).await?;
            *replayed.borrow_mut() = replay;
            Ok(data)
        })
        .await?;
        if *replayed.borrow() {
            resp.headers_mut().set(REPLAY_HEADER, "1")?;
        }
        Ok(resp)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        match self.db() {
            Ok(db) => RigObject { db: &db, fx: &self.fx() }.alarm().await,
            Err(e) => worker::console_error!("rig: alarm without storage: {e}"),
        }
        Response::ok("ok")
    }
}
