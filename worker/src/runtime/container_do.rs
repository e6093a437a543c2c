//! TownContainer: one per town (`idFromName(townId)`), the town's container.
//!
//! With a container runtime (`state.container()` is `Some`: production, or `wrangler dev` with
//! Docker) it starts the container with its env vars when needed, waits for the control
//! server's port with a deadline, and proxies requests to it. Without one (local development
//! with containers disabled), requests go to `CONTAINER_URL`, a control server run natively;
//! the rest of the path is the same. Either way the container secret is added as
//! `X-Container-Token`. Real activity renews `sleepAfter` (`CONTAINER_SLEEP_AFTER_MS`), which
//! the alarm enforces; the alarm is armed only while the container is in use.

use std::time::Duration;

use js_sys::{Function, Object, Reflect};
use serde_json::json;
use wasm_bindgen::{JsCast, JsValue};
use worker::{Container, Delay, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response, State};

use super::call::json_response;
use super::platform::now_millis;
use crate::container::{self, AlarmAction, Target};
use crate::error::{ApiError, ApiResult};

const LAST_ACTIVITY: &str = "last_activity_ms";
const STATE: &str = "container_state";

#[worker::durable_object]
pub struct TownContainer {
    state: State,
    env: Env,
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).filter(|s| !s.is_empty())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A request to forward, kept as bytes so it can be sent again while the port is not ready.
struct Outgoing {
    method: Method,
    path: String,
    body: Vec<u8>,
}

impl Outgoing {
    fn request(&self, url: &str, token: Option<&str>) -> worker::Result<Request> {
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        if let Some(t) = token {
            headers.set("x-container-token", t)?;
        }
        let mut init = RequestInit::new();
        init.with_method(self.method.clone()).with_headers(headers);
        if !self.body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(self.body.as_slice()).into()));
        }
        Request::new_with_init(url, &init)
    }
}

/// Starts the container with a plain JS options object. (The crate's `ContainerStartupOptions`
/// conversion drops the fields it is given, so the object is built here.)
fn start(c: &Container, env: &Env) -> worker::Result<()> {
    let vars = Object::new();
    for (k, v) in container::container_env(|k| var(env, k)) {
        Reflect::set(&vars, &JsValue::from_str(&k), &JsValue::from_str(&v))?;
    }
    let options = Object::new();
    Reflect::set(&options, &JsValue::from_str("env"), &vars)?;
    Reflect::set(&options, &JsValue::from_str("enableInternet"), &JsValue::TRUE)?;
    let start: Function = Reflect::get(c.as_ref(), &JsValue::from_str("start"))?.dyn_into()?;
    start.call1(c.as_ref(), &options)?;
    Ok(())
}

impl TownContainer {
    async fn record(&self, status: &str, detail: Option<String>) {
        worker::console_log!("town container: {status}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default());
        let entry = json!({ "status": status, "detail": detail, "at": crate::time::iso_from_millis(now_millis()) });
        let _ = self.state.storage().put(STATE, entry).await;
    }

    /// Renews `sleepAfter` and makes sure the alarm will look at it.
    async fn touch(&self) -> ApiResult<()> {
        let now = now_millis();
        let storage = self.state.storage();
        storage.put(LAST_ACTIVITY, now).await.map_err(internal)?;
        if storage.get_alarm().await.map_err(internal)?.is_none() {
            let after = container::sleep_after_ms(var(&self.env, "CONTAINER_SLEEP_AFTER_MS").as_deref());
            storage.set_alarm(Duration::from_millis(after as u64)).await.map_err(internal)?;
        }
        Ok(())
    }

    /// onStart / onStop / onError: start the container and watch for its exit.
    async fn ensure_started(&self, c: &Container) -> ApiResult<()> {
        if c.running() {
            return Ok(());
        }
        start(c, &self.env).map_err(|e| ApiError::Unavailable(format!("container failed to start: {e}")))?;
        self.record("starting", None).await;
        if let Some(watched) = self.state.container() {
            let storage = self.state.storage();
            self.state.wait_until(async move {
                let (status, detail) = match watched.wait_for_exit().await {
                    Ok(()) => ("stopped", None),
                    Err(e) => ("failed", Some(e.to_string())),
                };
                worker::console_log!("town container: {status}");
                let at = crate::time::iso_from_millis(now_millis());
                let _ = storage.put(STATE, json!({ "status": status, "detail": detail, "at": at })).await;
            });
        }
        Ok(())
    }

    async fn via_container(&self, c: &Container, out: &Outgoing) -> ApiResult<Response> {
        self.ensure_started(c).await?;
        let token = var(&self.env, "CONTAINER_TOKEN");
        let url = format!("http://container{}", out.path);
        let deadline = now_millis() + container::START_DEADLINE_MS;
        loop {
            let port = c.get_tcp_port(container::DEFAULT_PORT).map_err(internal)?;
            let req = out.request(&url, token.as_deref()).map_err(internal)?;
            match port.fetch_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(e) if container::port_not_ready(&e.to_string()) && now_millis() < deadline => {
                    Delay::from(Duration::from_millis(container::PORT_POLL_MS)).await;
                }
                Err(e) => {
                    // A container that stops answering is replaced, not waited on forever
                    // (reference lesson 9): the next request starts a fresh one, and the
                    // scheduler's witness pass re-dispatches the agents it lost.
                    self.record("unresponsive", Some(e.to_string())).await;
                    if let Err(d) = c.destroy(Some("control server unresponsive")).await {
                        worker::console_error!("town container: could not destroy the unresponsive container: {d}");
                    }
                    return Err(ApiError::Unavailable(format!("container did not answer: {e}")));
                }
            }
        }
    }

    async fn via_url(&self, base: &str, out: &Outgoing) -> ApiResult<Response> {
        let url = container::forward_url(base, &out.path)?;
        let req = out.request(&url, var(&self.env, "CONTAINER_TOKEN").as_deref()).map_err(internal)?;
        Fetch::Request(req)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(format!("control server at CONTAINER_URL did not answer: {e}")))
    }

    async fn forward(&self, mut req: Request) -> ApiResult<Response> {
        let out = Outgoing {
            method: req.method(),
            path: req.path(),
            body: req.bytes().await.map_err(internal)?,
        };
        let target = container::target(self.state.container().is_some(), var(&self.env, "CONTAINER_URL").as_deref());
        if target != Target::Unavailable && container::is_activity(out.method.as_ref(), &out.path) {
            self.touch().await?;
        }
        match target {
            Target::Container => match self.state.container() {
                Some(c) => self.via_container(&c, &out).await,
                None => Err(container::unavailable()),
            },
            Target::Url(base) => self.via_url(&base, &out).await,
            Target::Unavailable => Err(container::unavailable()),
        }
    }
}

impl DurableObject for TownContainer {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        match self.forward(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                if let ApiError::Internal(detail) = &e {
                    worker::console_error!("town container: {detail}");
                }
                json_response(e.status(), &e.envelope())
            }
        }
    }

    /// Enforces `sleepAfter`: stops an idle container; re-arms only while it is in use.
    async fn alarm(&self) -> worker::Result<Response> {
        let storage = self.state.storage();
        let last: Option<i64> = storage.get(LAST_ACTIVITY).await.ok().flatten();
        let after = container::sleep_after_ms(var(&self.env, "CONTAINER_SLEEP_AFTER_MS").as_deref());
        match container::on_alarm(now_millis(), last, after) {
            AlarmAction::RearmAt(at) => {
                let wait = (at - now_millis()).max(1000) as u64;
                storage.set_alarm(Duration::from_millis(wait)).await?;
            }
            AlarmAction::Sleep => {
                if let Some(c) = self.state.container().filter(|c| c.running()) {
                    // SIGTERM: the control server drains its agents (commit, push) before exiting.
                    c.signal(15)?;
                    self.record("sleeping", None).await;
                }
            }
        }
        Response::ok("ok")
    }
}
