//! The TownDO's interface, one op at a time, as the RigDO's ([`crate::rig::op`]): each op is a
//! type in the resource module that owns it, implementing [`TownOp`] and listed in that
//! module's `town_ops!`; it travels as a [`TownCall`], `{"op": "<name>", "args": {...}}`. A
//! town op may await other objects and the container ([`Effects`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::object::TownObject;
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};

#[allow(async_fn_in_trait)]
pub trait TownOp: Serialize + DeserializeOwned {
    /// The op's name on the wire (snake_case).
    const NAME: &'static str;

    /// The op's data on success. `key`: the call's idempotency key (honoured by the mayor's
    /// ops, whose retried tool calls must not act twice).
    async fn run<D: Db, E: Effects>(
        self,
        town: &TownObject<'_, D, E>,
        key: Option<&str>,
    ) -> ApiResult<Value>;
}

/// An op on its way to a TownDO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TownCall {
    pub op: String,
    #[serde(default)]
    pub args: Value,
}

impl TownCall {
    pub fn of<O: TownOp>(op: &O) -> ApiResult<Self> {
        Self::named(O::NAME, serde_json::to_value(op))
    }

    /// What [`TownCall::of`] does but encoding: one copy in the wasm rather than one per op.
    #[inline(never)]
    fn named(op: &str, args: serde_json::Result<Value>) -> ApiResult<Self> {
        Ok(Self { op: op.into(), args: args.map_err(ApiError::internal)? })
    }

    /// The op's arguments, when this call is `O`.
    pub fn args<O: TownOp>(&self) -> Option<ApiResult<O>> {
        (self.op == O::NAME).then(|| {
            // From a copy: a type's one decoder reads owned values (crate::json).
            crate::json::decode::<O>(self.args.clone())
                .map_err(|e| crate::rig::op::undecodable(O::NAME, e))
        })
    }
}

/// `town_ops!(A, B, ...)` in a resource module: its `run_town_op`, which runs a call naming one
/// of the listed ops (`None` for another module's).
macro_rules! town_ops {
    ($($op:ty),* $(,)?) => {
        /// Runs `call` when it names one of this module's town ops.
        pub(crate) async fn run_town_op<D: $crate::db::Db, E: $crate::effects::Effects>(
            town: &$crate::town::object::TownObject<'_, D, E>,
            call: &$crate::town::op::TownCall,
            key: Option<&str>,
        ) -> Option<$crate::error::ApiResult<serde_json::Value>> {
            $(
                if let Some(op) = call.args::<$op>() {
                    return Some(match op {
                        Ok(op) => $crate::town::op::TownOp::run(op, town, key).await,
                        Err(e) => Err(e),
                    });
                }
            )*
            None
        }
    };
}
pub(crate) use town_ops;
