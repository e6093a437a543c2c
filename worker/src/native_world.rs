//! [`Effects`] for the native tests: an in-process world whose RigDOs are the real rig logic
//! ([`crate::rig::Rig`]) over SQLite ([`NativeDb`]), with a fixed clock and counted ids. What
//! stands in for the town's container is a function of the request, and every container call,
//! identity op, alarm and logged error is recorded for the test to read.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde_json::Value;

use crate::effects::{Effects, Inbound, Outbound};
use crate::error::{ApiError, ApiResult};
use crate::native_db::NativeDb;
use crate::rig::op::RigCall;
use crate::rig::Rig;
use crate::routes::Method;
use crate::rpc::IdentityOp;
use crate::shards::{ListShards, PlaceRig, ShardOfRig, ShardRef};
use crate::town::op::TownCall;
use crate::town::{IndexTown, ListTowns, Town};

/// Runs a future of the native world to its end: nothing in it waits, so one poll does.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a native-world future waited"),
    }
}

/// A call the world's container received.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerCall {
    /// The town's shard called.
    pub shard: u32,
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

type ContainerFn = Box<dyn Fn(&ContainerCall) -> (u16, Value)>;
type ForgeFn = Box<dyn Fn(&Outbound) -> Inbound>;

pub struct World {
    rigs: RefCell<BTreeMap<String, NativeDb>>,
    index: NativeDb,
    container: RefCell<ContainerFn>,
    pub container_calls: RefCell<Vec<ContainerCall>>,
    forge: RefCell<ForgeFn>,
    pub forge_calls: RefCell<Vec<Outbound>>,
    /// What the TownDO answers a rig's forge token op with (`None`: no forge, a 404).
    pub forge_token: RefCell<Option<Value>>,
    /// The town's limits, as the TownDO answers `get_limits`.
    pub town_limits: RefCell<Value>,
    /// The notices sent to the town's mayor, and whether the TownDO keeps them (a town whose
    /// mayor nobody has talked to does not).
    pub mayor_notices: RefCell<Vec<crate::mayor::routes::Notice>>,
    pub mayor_keeps: Cell<bool>,
    pub identity_ops: RefCell<Vec<(String, IdentityOp)>>,
    /// The shard the TownDO places every rig on, and the placements asked for.
    pub rig_shard: Cell<u32>,
    pub placements: RefCell<Vec<PlaceRig>>,
    /// What the TownDO lists as the town's shards.
    pub shard_views: RefCell<Value>,
    /// Every delay the alarm was set with, and when it fires next.
    pub alarms: RefCell<Vec<u64>>,
    pub alarm: Cell<Option<i64>>,
    counters: RefCell<BTreeMap<String, i64>>,
    pub errors: RefCell<Vec<String>>,
    pub logs: RefCell<Vec<String>>,
    vars: BTreeMap<String, String>,
    /// The clock, shareable with a stand-in that must read the same time.
    pub now_ms: std::rc::Rc<Cell<i64>>,
    ids: Cell<u64>,
}

impl World {
    /// A world with these Worker vars, whose container answers every call with a 404.
    pub fn new(vars: &[(&str, &str)]) -> Self {
        Self {
            rigs: RefCell::default(),
            index: NativeDb::with(crate::town::MIGRATIONS),
            container: RefCell::new(Box::new(|_| (404, serde_json::json!({"error": "none"})))),
            container_calls: RefCell::default(),
            forge: RefCell::new(Box::new(|_| Inbound::new(404, "{}"))),
            forge_calls: RefCell::default(),
            forge_token: RefCell::default(),
            town_limits: RefCell::new(Value::Null),
            mayor_notices: RefCell::default(),
            mayor_keeps: Cell::new(true),
            identity_ops: RefCell::default(),
            rig_shard: Cell::new(0),
            placements: RefCell::default(),
            shard_views: RefCell::new(Value::Array(Vec::new())),
            alarms: RefCell::default(),
            alarm: Cell::new(None),
            counters: RefCell::default(),
            errors: RefCell::default(),
            logs: RefCell::default(),
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            now_ms: std::rc::Rc::new(Cell::new(1_796_000_000_000)),
            ids: Cell::new(0),
        }
    }

    /// How the town's container answers from now on.
    pub fn container_answers(&self, f: impl Fn(&ContainerCall) -> (u16, Value) + 'static) {
        *self.container.borrow_mut() = Box::new(f);
    }

    /// How the forge's API answers from now on.
    pub fn forge_answers(&self, f: impl Fn(&Outbound) -> Inbound + 'static) {
        *self.forge.borrow_mut() = Box::new(f);
    }

    /// Runs `f` on the rig's storage (created empty on first use), as one of its requests.
    pub fn with_rig<T>(&self, rig_id: &str, f: impl FnOnce(&Rig<'_, NativeDb>) -> T) -> T {
        let mut rigs = self.rigs.borrow_mut();
        let db = rigs
            .entry(rig_id.to_string())
            .or_insert_with(|| NativeDb::with(crate::rig::schema::MIGRATIONS));
        let new_id = || self.new_id();
        f(&Rig { db, now: self.now_iso(), new_id: &new_id })
    }
}

impl Effects for World {
    async fn rig(
        &self,
        rig_id: &str,
        call: &RigCall,
        key: Option<&str>,
    ) -> ApiResult<(Value, bool)> {
        let (result, replayed) = self.with_rig(rig_id, |rig| rig.handle_once(key, call));
        Ok((result?.data, replayed))
    }

    async fn town(&self, _town_id: &str, op: &TownCall) -> ApiResult<Value> {
        let new_id = || self.new_id();
        let index = Town { db: &self.index, now: self.now_iso(), new_id: &new_id };
        if let Some(op) = op.args::<IndexTown>() {
            let op = op?;
            return index.index_add(&op.town_id, &op.name, &op.created_at).map(|()| Value::Null);
        }
        if let Some(place) = op.args::<PlaceRig>() {
            self.placements.borrow_mut().push(place?);
            return Ok(serde_json::json!({ "shard": self.rig_shard.get() }));
        }
        if op.args::<ShardOfRig>().is_some() {
            return Ok(serde_json::json!({ "shard": self.rig_shard.get() }));
        }
        if op.args::<ListShards>().is_some() {
            return Ok(self.shard_views.borrow().clone());
        }
        if op.args::<ListTowns>().is_some() {
            return crate::rig::op::to_json(index.index_list()?);
        }
        if op.args::<crate::spending::GetLimits>().is_some() {
            return Ok(self.town_limits.borrow().clone());
        }
        if let Some(mayor) = op.args::<crate::mayor::routes::MayorCall>() {
            let crate::mayor::routes::MayorCall(crate::mayor::routes::MayorOp::Notice(n)) = mayor?
            else {
                return Err(ApiError::Internal("the native world's mayor takes notices".into()));
            };
            self.mayor_notices.borrow_mut().push(n);
            return Ok(serde_json::json!({ "kept": self.mayor_keeps.get() }));
        }
        if op.args::<crate::forge::ForgeToken>().is_some() {
            return self.forge_token.borrow().clone().ok_or_else(|| {
                ApiError::NotFound("no forge is configured for this rig or its town".into())
            });
        }
        Err(ApiError::Internal(format!("the native world has no town op {}", op.op)))
    }

    async fn identity(&self, identity: &str, op: &IdentityOp) -> ApiResult<Value> {
        self.identity_ops.borrow_mut().push((identity.to_string(), op.clone()));
        Ok(Value::Null)
    }

    async fn container(
        &self,
        at: &ShardRef,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResult<(u16, Value)> {
        let call =
            ContainerCall { shard: at.shard, method, path: path.to_string(), body: body.cloned() };
        let answer = (self.container.borrow())(&call);
        self.container_calls.borrow_mut().push(call);
        Ok(answer)
    }

    async fn alarm_at(&self) -> Option<i64> {
        self.alarm.get()
    }

    async fn set_alarm(&self, after_ms: u64) {
        self.alarms.borrow_mut().push(after_ms);
        self.alarm.set(Some(self.now_ms.get() + after_ms as i64));
    }

    async fn counter(&self, key: &str) -> i64 {
        self.counters.borrow().get(key).copied().unwrap_or(0)
    }

    async fn set_counter(&self, key: &str, value: i64) {
        self.counters.borrow_mut().insert(key.to_string(), value);
    }

    fn now_ms(&self) -> i64 {
        self.now_ms.get()
    }

    fn new_id(&self) -> String {
        self.ids.set(self.ids.get() + 1);
        format!("id-{:04}", self.ids.get())
    }

    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn log_error(&self, message: &str) {
        self.errors.borrow_mut().push(message.to_string());
    }

    fn log_info(&self, message: &str) {
        self.logs.borrow_mut().push(message.to_string());
    }

    async fn http(&self, req: &Outbound) -> ApiResult<Inbound> {
        let answer = (self.forge.borrow())(req);
        self.forge_calls.borrow_mut().push(req.clone());
        Ok(answer)
    }

    async fn sign_rs256(&self, pkcs8_der: &[u8], message: &[u8]) -> ApiResult<Vec<u8>> {
        use rsa::pkcs1v15::SigningKey;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::{SignatureEncoding, Signer};
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8_der)
            .map_err(|e| ApiError::Internal(format!("not a PKCS#8 RSA key: {e}")))?;
        Ok(SigningKey::<sha2::Sha256>::new(key).sign(message).to_vec())
    }
}
