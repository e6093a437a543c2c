//! The RigDO's interface, one op at a time: each op is a type in the resource module that owns
//! it (`beads::CreateBead`, `agents::Hook`, ...) implementing [`RigOp`], and is listed there
//! in that module's `rig_ops!`. An op travels as a [`RigCall`], `{"op": "<name>", "args":
//! {...}}`, from the Worker (or another object) to the rig's RigDO, which runs it with
//! [`super::Rig::handle`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Rig;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};

/// One op of the RigDO: its name on the wire, what the object does around it, and its run
/// over the rig's storage (synchronous, so atomic in the Durable Object).
pub trait RigOp: Serialize + DeserializeOwned {
    /// The op's name on the wire (snake_case).
    const NAME: &'static str;
    /// It creates work or agents: refused with 404 `Rig not found`, creating nothing, on a rig
    /// no town has configured (a mistyped rig id must not leave a bead nobody can run).
    const NEEDS_CONFIGURED_RIG: bool = false;
    /// Hooked work may wait for a dispatch after it, or a review entry for the refinery: it
    /// arms the scheduler's alarm.
    const ARMS_SCHEDULER: bool = false;
    /// It may write a notice for the town's mayor: the outbox is sent after it.
    const NOTIFIES: bool = false;

    /// The agent whose run this op proves started for real (its own calls from inside a run);
    /// the scheduler's attempt count then resets.
    fn run_proof(&self) -> Option<&str> {
        None
    }

    /// The op's data on success.
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value>;
}

/// An op on its way to a RigDO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RigCall {
    pub op: String,
    #[serde(default)]
    pub args: Value,
}

impl RigCall {
    pub fn of<O: RigOp>(op: &O) -> ApiResult<Self> {
        Self::named(O::NAME, serde_json::to_value(op))
    }

    /// What [`RigCall::of`] does but encoding: one copy in the wasm rather than one per op.
    #[inline(never)]
    fn named(op: &str, args: serde_json::Result<Value>) -> ApiResult<Self> {
        Ok(Self { op: op.into(), args: args.map_err(ApiError::internal)? })
    }
}

/// An op's arguments that do not decode (not generic: one copy in the wasm).
#[inline(never)]
pub(crate) fn undecodable(name: &str, e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("undecodable {name} op: {e}"))
}

/// What running an op gave, and what the object does next.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    pub data: Value,
    pub arms_scheduler: bool,
    pub notifies: bool,
}

impl Ran {
    /// A kept reply sent again: its effects happened the first time.
    pub fn replay(data: Value) -> Self {
        Self { data, arms_scheduler: false, notifies: false }
    }
}

impl<D: Db> Rig<'_, D> {
    /// Runs the op `O` from its wire arguments, with the checks every op gets.
    pub(crate) fn run<O: RigOp>(&self, args: &Value) -> ApiResult<Ran> {
        // From a copy: a type's one decoder reads owned values (crate::json).
        let op = crate::json::decode::<O>(args.clone()).map_err(|e| undecodable(O::NAME, e))?;
        self.may_run(O::NEEDS_CONFIGURED_RIG, op.run_proof())?;
        Ok(Ran { data: op.run(self)?, arms_scheduler: O::ARMS_SCHEDULER, notifies: O::NOTIFIES })
    }

    /// The checks of [`Rig::run`] before the op runs (not generic: one copy in the wasm).
    #[inline(never)]
    fn may_run(&self, needs_configured_rig: bool, run_proof: Option<&str>) -> ApiResult<()> {
        if needs_configured_rig && !self.is_configured()? {
            return Err(ApiError::not_found("rig"));
        }
        if let Some(agent_id) = run_proof {
            self.run_started(agent_id)?;
        }
        Ok(())
    }
}

/// `rig_ops!(A, B, ...)` in a resource module: its `run_op`, which runs a call naming one of
/// the listed ops (`None` for another module's).
macro_rules! rig_ops {
    ($($op:ty),* $(,)?) => {
        /// Runs `call` when it names one of this module's ops.
        pub(crate) fn run_op<D: $crate::db::Db>(
            rig: &$crate::rig::Rig<'_, D>,
            call: &$crate::rig::op::RigCall,
        ) -> Option<$crate::error::ApiResult<$crate::rig::op::Ran>> {
            $(
                if call.op == <$op as $crate::rig::op::RigOp>::NAME {
                    return Some(rig.run::<$op>(&call.args));
                }
            )*
            None
        }
    };
}
pub(crate) use rig_ops;

/// Serializes an op's reply.
pub(crate) fn to_json<T: Serialize>(v: T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}
