//! What a Durable Object's logic asks of the world beyond its own SQL storage: calls to other
//! objects and to the town's container, its alarm and key-value state, the clock, ids and the
//! Worker's vars. The logic is written against [`Effects`] (and [`crate::db::Db`]), so it
//! builds natively: `runtime/` implements it on workers-rs, and the native tests on an
//! in-process world whose objects run the same logic over SQLite (`crate::native_world`).

use serde_json::Value;

use crate::error::ApiResult;
use crate::rig::op::RigCall;
use crate::routes::Method;
use crate::rpc::IdentityOp;
use crate::shards::ShardRef;
use crate::town::op::TownCall;

// The futures are not `Send`: a Durable Object runs on one thread (wasm has no other), and the
// native tests poll them on one.
#[allow(async_fn_in_trait)]
pub trait Effects {
    /// Calls `call` on the rig's RigDO with an idempotency key; `.1`: the reply is a replay of
    /// the one kept for that key.
    async fn rig(
        &self,
        rig_id: &str,
        call: &RigCall,
        key: Option<&str>,
    ) -> ApiResult<(Value, bool)>;

    async fn town(&self, town_id: &str, op: &TownCall) -> ApiResult<Value>;

    async fn identity(&self, identity: &str, op: &IdentityOp) -> ApiResult<Value>;

    /// Calls a town's TownContainer (and through it that shard's control server): `(status,
    /// JSON body)`; `Err` only when the call could not be made.
    async fn container(
        &self,
        at: &ShardRef,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResult<(u16, Value)>;

    /// When the object's alarm fires next (ms since the epoch), if one is set.
    async fn alarm_at(&self) -> Option<i64>;

    /// Sets the object's alarm to fire in `after_ms` (replacing a pending one).
    async fn set_alarm(&self, after_ms: u64);

    /// The object's own small counters, next to its SQL storage.
    async fn counter(&self, key: &str) -> i64;
    async fn set_counter(&self, key: &str, value: i64);

    fn now_ms(&self) -> i64;

    fn new_id(&self) -> String;

    /// A Worker var or secret; unset and empty are the same.
    fn var(&self, name: &str) -> Option<String>;

    /// An HTTP request to a forge's API. `Err` only when it could not be sent.
    async fn http(&self, req: &Outbound) -> ApiResult<Inbound>;

    /// An RSASSA-PKCS1-v1_5 SHA-256 signature of `message` with a PKCS#8 private key. The
    /// platform's own (WebCrypto in the Worker): an RSA implementation compiled into the wasm
    /// would cost more than the rest of the forge code.
    async fn sign_rs256(&self, pkcs8_der: &[u8], message: &[u8]) -> ApiResult<Vec<u8>>;

    /// An error the object carries on from (logged, never answered).
    fn log_error(&self, message: &str);

    /// A change an operator reads in the log (never a secret).
    fn log_info(&self, message: &str);

    fn now_iso(&self) -> String {
        crate::time::iso_from_millis(self.now_ms())
    }

    /// Makes the object's alarm fire in `after_ms`, unless one is already pending.
    async fn arm_alarm(&self, after_ms: u64) {
        if self.alarm_at().await.is_none() {
            self.set_alarm(after_ms).await;
        }
    }
}

/// An outgoing HTTP request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub method: Method,
    pub url: String,
    /// Never logged: may hold a credential.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// Its answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inbound {
    pub status: u16,
    pub body: String,
    /// The answer's headers the forge clients read, by lowercase name ([`KEPT_HEADERS`]).
    pub headers: Vec<(String, String)>,
}

/// The answer headers kept in [`Inbound::headers`]: how a forge paces its callers, and the
/// validator of a conditional read.
pub const KEPT_HEADERS: &[&str] = &[
    "etag",
    "retry-after",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-remaining",
    "ratelimit-reset",
];

impl Inbound {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, body: body.into(), headers: Vec::new() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Calls a rig op without a key and keeps its data.
pub async fn rig_op<E: Effects, O: crate::rig::op::RigOp>(
    fx: &E,
    rig_id: &str,
    op: &O,
) -> ApiResult<Value> {
    Ok(fx.rig(rig_id, &RigCall::of(op)?, None).await?.0)
}
