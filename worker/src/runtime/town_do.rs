//! TownDO: one per town (`idFromName(townId)`): the town, its rigs (each rig's RigDO is
//! configured from here, a DO-to-DO call), town-level escalations, and the town's mayor
//! (`runtime/mayor.rs`; its alarm delivers what the mayor has not received yet).

use std::cell::Cell;

use serde_json::Value;
use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::call::{call, serve, KEY_HEADER};
use super::{platform, sql, RIG_BINDING, TOWN_BINDING};
use crate::error::{ApiError, ApiResult};
use crate::rpc::{RigOp, TownOp};
use crate::town::{Town, MIGRATIONS};

#[durable_object]
pub struct TownDO {
    pub(super) state: State,
    pub(super) env: Env,
    pub(super) ready: Cell<bool>,
    /// A delivery to the mayor is under way (one at a time), and another was asked for meanwhile.
    pub(super) delivering: Cell<bool>,
    pub(super) again: Cell<bool>,
}

fn to_json<T: serde::Serialize>(v: T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}

impl TownDO {
    pub(super) fn var(&self, name: &str) -> Option<String> {
        platform::var(&self.env, name)
    }
}

impl DurableObject for TownDO {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            ready: Cell::new(false),
            delivering: Cell::new(false),
            again: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let key = req.headers().get(KEY_HEADER)?;
        serve(req, async |op: TownOp| {
            if let TownOp::Mayor(op) = op {
                return self.mayor_once(op, key.as_deref()).await;
            }
            let db = sql::open(&self.state.storage(), &self.ready, MIGRATIONS)?;
            let town = Town { db: &db, now: platform::now_iso(), new_id: &platform::new_id };
            match op {
                TownOp::Create { town_id, town: t } => {
                    let created = town.create(&town_id, &t)?;
                    let index = TownOp::Index {
                        town_id,
                        name: t.name.clone(),
                        created_at: town.now.clone(),
                    };
                    // The town exists either way; unlisted, it is still reachable by its id.
                    if let Err(e) = call(&self.env, TOWN_BINDING, crate::town::INDEX, &index).await
                    {
                        worker::console_error!("could not add the town to the town index: {e}");
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
                    let op = RigOp::Configure { rig_id: rig_id.clone(), config };
                    call(&self.env, RIG_BINDING, &rig_id, &op).await?;
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
        })
        .await
    }

    async fn alarm(&self) -> worker::Result<Response> {
        if let Err(e) = self.mayor_alarm().await {
            worker::console_error!("mayor: alarm failed: {e}");
        }
        Response::ok("ok")
    }
}
