//! [`Effects`] on workers-rs: calls through Durable Object stubs, the object's alarm and
//! storage, the runtime's clock and ids, the Worker's vars.

use serde_json::Value;
use worker::{Env, Storage};

use super::call::{call, call_once, container_call};
use super::{platform, IDENTITY_BINDING, RIG_BINDING, TOWN_BINDING};
use crate::effects::Effects;
use crate::error::ApiResult;
use crate::rig::op::RigCall;
use crate::routes::Method;
use crate::rpc::IdentityOp;
use crate::town::op::TownCall;

pub struct WorkerEffects<'a> {
    pub env: &'a Env,
    pub storage: Storage,
}

fn method(m: Method) -> worker::Method {
    match m {
        Method::Get => worker::Method::Get,
        Method::Post => worker::Method::Post,
        Method::Put => worker::Method::Put,
        Method::Patch => worker::Method::Patch,
        Method::Delete => worker::Method::Delete,
        Method::Other => worker::Method::Options,
    }
}

impl Effects for WorkerEffects<'_> {
    async fn rig(&self, rig_id: &str, c: &RigCall, key: Option<&str>) -> ApiResult<(Value, bool)> {
        call_once(self.env, RIG_BINDING, rig_id, c, key).await
    }

    async fn town(&self, town_id: &str, op: &TownCall) -> ApiResult<Value> {
        call(self.env, TOWN_BINDING, town_id, op).await
    }

    async fn identity(&self, identity: &str, op: &IdentityOp) -> ApiResult<Value> {
        call(self.env, IDENTITY_BINDING, identity, op).await
    }

    async fn container(
        &self,
        town_id: &str,
        m: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResult<(u16, Value)> {
        container_call(self.env, town_id, method(m), path, body).await
    }

    async fn alarm_at(&self) -> Option<i64> {
        self.storage.get_alarm().await.ok().flatten()
    }

    async fn set_alarm(&self, after_ms: u64) {
        let after = std::time::Duration::from_millis(after_ms);
        if let Err(e) = self.storage.set_alarm(after).await {
            self.log_error(&format!("cannot set the object's alarm: {e}"));
        }
    }

    async fn counter(&self, key: &str) -> i64 {
        self.storage.get(key).await.ok().flatten().unwrap_or(0)
    }

    async fn set_counter(&self, key: &str, value: i64) {
        if let Err(e) = self.storage.put(key, value).await {
            self.log_error(&format!("cannot keep {key}: {e}"));
        }
    }

    fn now_ms(&self) -> i64 {
        platform::now_millis()
    }

    fn new_id(&self) -> String {
        platform::new_id()
    }

    fn var(&self, name: &str) -> Option<String> {
        platform::var(self.env, name)
    }

    fn log_error(&self, message: &str) {
        worker::console_error!("{message}");
    }
}
