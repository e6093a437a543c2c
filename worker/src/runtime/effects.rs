//! [`Effects`] on workers-rs: calls through Durable Object stubs, the object's alarm and
//! storage, the runtime's clock and ids, the Worker's vars.

use js_sys::{Array, Object, Reflect, Uint8Array};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Fetch, Headers, Request, RequestInit, Storage};

use super::call::{call, call_once, container_call};
use super::{platform, IDENTITY_BINDING, RIG_BINDING, TOWN_BINDING};
use crate::effects::{Effects, Inbound, Outbound};
use crate::error::{ApiError, ApiResult};
use crate::rig::op::RigCall;
use crate::routes::Method;
use crate::rpc::IdentityOp;
use crate::shards::ShardRef;
use crate::town::op::TownCall;

pub struct WorkerEffects<'a> {
    pub env: &'a Env,
    pub storage: Storage,
}

/// The Worker's method as workers-rs names it.
pub(super) fn method(m: Method) -> worker::Method {
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
        at: &ShardRef,
        m: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResult<(u16, Value)> {
        container_call(self.env, at, method(m), path, body).await
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

    fn log_info(&self, message: &str) {
        worker::console_log!("{message}");
    }

    async fn http(&self, req: &Outbound) -> ApiResult<Inbound> {
        let headers = Headers::new();
        for (name, value) in &req.headers {
            headers.set(name, value).map_err(ApiError::internal)?;
        }
        let mut init = RequestInit::new();
        init.with_method(method(req.method)).with_headers(headers);
        if let Some(body) = &req.body {
            init.with_body(Some(body.as_str().into()));
        }
        let request = Request::new_with_init(&req.url, &init).map_err(ApiError::internal)?;
        let mut resp = Fetch::Request(request)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(format!("{e}")))?;
        let kept = crate::effects::KEPT_HEADERS
            .iter()
            .filter_map(|name| Some((name.to_string(), resp.headers().get(name).ok()??)))
            .collect();
        Ok(Inbound {
            status: resp.status_code(),
            body: resp.text().await.unwrap_or_default(),
            headers: kept,
        })
    }

    async fn sign_rs256(&self, pkcs8_der: &[u8], message: &[u8]) -> ApiResult<Vec<u8>> {
        sign_rs256(pkcs8_der, message).await.map_err(|e| {
            ApiError::Internal(format!(
                "WebCrypto: {}",
                e.as_string().unwrap_or_else(|| format!("{e:?}"))
            ))
        })
    }
}

/// `crypto.subtle.importKey("pkcs8", …)` then `crypto.subtle.sign(…)`.
async fn sign_rs256(pkcs8_der: &[u8], message: &[u8]) -> Result<Vec<u8>, JsValue> {
    let subtle =
        Reflect::get(&Reflect::get(&js_sys::global(), &"crypto".into())?, &"subtle".into())?;
    let algorithm = Object::new();
    Reflect::set(&algorithm, &"name".into(), &"RSASSA-PKCS1-v1_5".into())?;
    Reflect::set(&algorithm, &"hash".into(), &"SHA-256".into())?;
    let call = |name: &str, args: Array| -> Result<JsFuture, JsValue> {
        let f: js_sys::Function = Reflect::get(&subtle, &name.into())?.dyn_into()?;
        Ok(JsFuture::from(f.apply(&subtle, &args)?.dyn_into::<js_sys::Promise>()?))
    };
    let import = Array::of5(
        &"pkcs8".into(),
        &Uint8Array::from(pkcs8_der),
        &algorithm,
        &false.into(),
        &Array::of1(&"sign".into()),
    );
    let key = call("importKey", import)?.await?;
    let signed = call("sign", Array::of3(&algorithm, &key, &Uint8Array::from(message)))?.await?;
    Ok(Uint8Array::new(&signed).to_vec())
}
