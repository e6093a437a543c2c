//! TownContainer: one per town (`idFromName(townId)`), the town's container, running
//! [`crate::container::object`] on the object's SQLite storage.
//!
//! With a container runtime (`state.container()` is `Some`: production, or `wrangler dev` with
//! Docker) it starts the container with its env vars when needed, waits for the control
//! server's port with a deadline, and proxies requests to it. Without one (local development
//! with containers disabled), requests go to `CONTAINER_URL`, a control server run natively;
//! the rest of the path is the same. Either way the container secret is added as
//! `X-Container-Token`. What is decided (the spending guard, retries, the lifecycle, kept
//! events, history tickets) is the object's logic; this file does the platform's part: the
//! container's start and exit, the fetches, WebSockets and the probe's timeout.

use std::cell::Cell;
use std::time::Duration;

use futures_util::future::{select, Either};
use js_sys::{Function, Object, Reflect};
use serde_json::Value;
use shared_types::control::{HealthResponse, StreamFrame};
use wasm_bindgen::{JsCast, JsValue};
use worker::{
    Container, Delay, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response,
    State, WebSocketPair,
};

use super::call::json_response;
use super::effects::{method, WorkerEffects};
use super::platform::{now_millis, var};
use super::sql;
use crate::container::lifecycle::{AlarmAction, Probe};
use crate::container::object::{
    self, ControlServer, Forwarded, Outgoing, Replay, TownContainerObject, MIGRATIONS,
};
use crate::container::{self, Target};
use crate::error::{success, ApiError, ApiResult};
use crate::shards::{self, ShardRef};

/// A probe that takes longer than this counts as failed (a stopped or wedged server).
const PROBE_TIMEOUT_MS: u64 = 5_000;

#[worker::durable_object]
pub struct TownContainer {
    state: State,
    env: Env,
    /// Whether the schema is up to date in this instance.
    ready: Cell<bool>,
}

/// `out` as a request to `url`, with the container secret.
fn request(out: &Outgoing, url: &str, token: Option<&str>) -> worker::Result<Request> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(t) = token {
        headers.set("x-container-token", t)?;
    }
    let mut init = RequestInit::new();
    init.with_method(method(out.method)).with_headers(headers);
    if !out.body.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(out.body.as_slice()).into()));
    }
    Request::new_with_init(url, &init)
}

/// Starts the container with a plain JS options object. (The crate's `ContainerStartupOptions`
/// conversion drops the fields it is given, so the object is built here.)
fn start(c: &Container, env: &Env, shard: u32) -> worker::Result<()> {
    let vars = Object::new();
    for (k, v) in container::container_env(|k| var(env, k), shard) {
        Reflect::set(&vars, &JsValue::from_str(&k), &JsValue::from_str(&v))?;
    }
    let options = Object::new();
    Reflect::set(&options, &JsValue::from_str("env"), &vars)?;
    Reflect::set(&options, &JsValue::from_str("enableInternet"), &JsValue::TRUE)?;
    let start: Function = Reflect::get(c.as_ref(), &JsValue::from_str("start"))?.dyn_into()?;
    start.call1(c.as_ref(), &options)?;
    Ok(())
}

/// The control server as this object reaches it: the container's port or `CONTAINER_URL`.
struct Port<'a> {
    this: &'a TownContainer,
    target: Target,
}

impl ControlServer for Port<'_> {
    type Answer = Response;

    fn status(answer: &Response) -> u16 {
        answer.status_code()
    }

    /// onStart / onStop / onError: starts the container and watches for its exit.
    async fn wake(&self) -> ApiResult<bool> {
        let Some(c) = self.this.state.container().filter(|_| self.target == Target::Container)
        else {
            return Ok(false);
        };
        if c.running() {
            return Ok(false);
        }
        start(&c, &self.this.env, self.this.shard().shard)
            .map_err(|e| ApiError::Unavailable(format!("container failed to start: {e}")))?;
        let storage = self.this.state.storage();
        self.this.state.wait_until(async move {
            let error = c.wait_for_exit().await.err().map(|e| e.to_string());
            let db = sql::open(&storage, &Cell::new(false), MIGRATIONS);
            let exited =
                db.and_then(|db| object::change_lifecycle(&db, |l| l.exited(now_millis(), error)));
            match exited {
                Ok((l, _)) => worker::console_log!("town container: {}", l.status),
                Err(e) => worker::console_error!("town container: could not keep its exit: {e}"),
            }
        });
        Ok(true)
    }

    async fn send(&self, out: &Outgoing) -> Result<Response, String> {
        let token = var(&self.this.env, "CONTAINER_TOKEN");
        match (&self.target, self.this.state.container()) {
            (Target::Container, Some(c)) => container_fetch(&c, out, token.as_deref()).await,
            (Target::Url(base), _) => {
                let url = container::forward_url(base, &out.path).map_err(|e| e.to_string())?;
                let req = request(out, &url, token.as_deref()).map_err(|e| e.to_string())?;
                Fetch::Request(req).send().await.map_err(|e| e.to_string())
            }
            _ => Err(container::unavailable().to_string()),
        }
    }

    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }

    fn place(&self) -> &'static str {
        match self.target {
            Target::Container => "the container",
            _ => "the control server at CONTAINER_URL",
        }
    }
}

/// One fetch to the container's port, waiting (to the start deadline) while it is not ready.
async fn container_fetch(
    c: &Container,
    out: &Outgoing,
    token: Option<&str>,
) -> Result<Response, String> {
    let url = format!("http://container{}", out.path);
    let deadline = now_millis() + container::START_DEADLINE_MS;
    loop {
        let port = c.get_tcp_port(container::DEFAULT_PORT).map_err(|e| e.to_string())?;
        let req = request(out, &url, token).map_err(|e| e.to_string())?;
        match port.fetch_request(req).await {
            Ok(resp) => return Ok(resp),
            // A container that exits while starting (a failed start) is not waited for.
            Err(e) if container::port_not_ready(&e.to_string()) && !c.running() => {
                return Err(format!("the container stopped while starting: {e}"));
            }
            Err(e) if container::port_not_ready(&e.to_string()) && now_millis() < deadline => {
                Delay::from(Duration::from_millis(container::PORT_POLL_MS)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A WebSocket this object answers itself: `frames`, then a close.
fn own_socket(frames: Vec<StreamFrame>, code: u16, reason: &str) -> ApiResult<Response> {
    let pair = WebSocketPair::new().map_err(ApiError::internal)?;
    pair.server.accept().map_err(ApiError::internal)?;
    for f in frames {
        pair.server.send_with_str(f.text()).map_err(ApiError::internal)?;
    }
    pair.server.close(Some(code), Some(reason)).map_err(ApiError::internal)?;
    Response::from_websocket(pair.client).map_err(ApiError::internal)
}

impl TownContainer {
    /// Runs `f` on the object's logic over its storage and effects.
    async fn with_object<T>(
        &self,
        f: impl AsyncFnOnce(&TownContainerObject<'_, sql::SqlDb, WorkerEffects<'_>>) -> ApiResult<T>,
    ) -> ApiResult<T> {
        let db = sql::open(&self.state.storage(), &self.ready, MIGRATIONS)?;
        let fx = WorkerEffects { env: &self.env, storage: self.state.storage() };
        f(&TownContainerObject { db: &db, fx: &fx, shard: self.shard().shard }).await
    }

    /// Which town shard this object is, from its name (workerd passes a named object its name,
    /// in its alarm too). An object reached otherwise (none is) would be taken for shard 0.
    fn shard(&self) -> ShardRef {
        let name = self.state.id().name().unwrap_or_default();
        ShardRef::from_object_name(&name).unwrap_or_else(|| ShardRef::first(&name))
    }

    fn target(&self) -> Target {
        let url = var(&self.env, "CONTAINER_URL");
        container::target(
            self.state.container().is_some(),
            shards::container_url(url.as_deref(), self.shard().shard).as_deref(),
        )
    }

    /// Forwards a request to the control server (a start passes the spending guard first).
    async fn forward(&self, mut req: Request) -> ApiResult<Response> {
        let town = req.headers().get(container::TOWN_HEADER).ok().flatten();
        let out = Outgoing {
            method: crate::routes::Method::parse(req.method().as_ref()),
            path: req.path(),
            body: req.bytes().await.map_err(ApiError::internal)?,
        };
        let target = self.target();
        if target == Target::Unavailable {
            return Err(container::unavailable());
        }
        let port = Port { this: self, target };
        match self.with_object(async |o| o.forward(&port, town.as_deref(), out).await).await? {
            Forwarded::Answer(resp) => Ok(resp),
            Forwarded::Json(status, body) => {
                json_response(status, &body).map_err(ApiError::internal)
            }
        }
    }

    /// An agent's live stream (the Worker checked the route and the ticket's form): the
    /// WebSocket upgrade is passed to the control server, which redeems the ticket, and the
    /// socket it answers with is handed back as is. No relay here: frames go from the control
    /// server to the client, and a slow client slows the control server's sends. A ticket of
    /// this object's own replays the agent's kept history instead.
    async fn stream(&self, req: Request) -> ApiResult<Response> {
        let url = req.url().map_err(ApiError::internal)?;
        let agent = url.path().trim_start_matches("/agents/").trim_end_matches("/ws").to_string();
        let ticket = url
            .query_pairs()
            .find(|(k, _)| k == "ticket")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        match self.with_object(async |o| o.replay(&ticket, &agent)).await? {
            Some(Replay::Refused { frame, reason }) => {
                return own_socket(vec![frame], 4401, reason)
            }
            Some(Replay::History(frames)) => {
                return own_socket(frames, 1000, "history replayed: the agent's run is over")
            }
            None => {}
        }
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let token = var(&self.env, "CONTAINER_TOKEN");
        let upgrade = |base: &str| -> worker::Result<Request> {
            let headers = Headers::new();
            headers.set("upgrade", "websocket")?;
            if let Some(t) = &token {
                headers.set("x-container-token", t)?;
            }
            let mut init = RequestInit::new();
            init.with_method(Method::Get).with_headers(headers);
            Request::new_with_init(&format!("{base}{path}"), &init)
        };
        let answer = match (self.target(), self.state.container()) {
            (Target::Url(base), _) => {
                let req =
                    upgrade(&container::forward_url(&base, "")?).map_err(ApiError::internal)?;
                Fetch::Request(req).send().await
            }
            (Target::Container, Some(c)) if c.running() => {
                let req = upgrade("http://container").map_err(ApiError::internal)?;
                match c.get_tcp_port(container::DEFAULT_PORT) {
                    Ok(port) => port.fetch_request(req).await,
                    Err(e) => Err(e),
                }
            }
            (Target::Container, _) => {
                return Err(ApiError::NotFound(
                    "the town's container is not running: no agent to stream".into(),
                ))
            }
            (Target::Unavailable, _) => return Err(container::unavailable()),
        };
        let resp = answer.map_err(|e| {
            ApiError::Unavailable(format!("the control server did not answer the stream: {e}"))
        })?;
        if resp.status_code() != 101 {
            return Err(ApiError::Unavailable(format!(
                "the control server refused the stream upgrade (HTTP {})",
                resp.status_code()
            )));
        }
        Ok(resp)
    }

    /// `GET /health` with a timeout: the alarm's probe.
    async fn probe(&self, target: &Target) -> Probe {
        let nothing_to_probe = match target {
            Target::Container => !self.state.container().is_some_and(|c| c.running()),
            Target::Url(_) => false,
            Target::Unavailable => true,
        };
        if nothing_to_probe {
            return Probe::NotRunning;
        }
        let port = Port { this: self, target: target.clone() };
        let out = Outgoing {
            method: crate::routes::Method::Get,
            path: "/health".into(),
            body: Vec::new(),
        };
        let fetch = Box::pin(async {
            let mut resp = port.send(&out).await?;
            if resp.status_code() != 200 {
                return Err(format!("/health answered HTTP {}", resp.status_code()));
            }
            // Parsed from the text, not with `Response::json`: the Worker parses JSON text one way.
            let text = resp.text().await.map_err(|e| format!("/health body: {e}"))?;
            let health: HealthResponse =
                crate::json::from_text(&text).map_err(|e| format!("/health body: {e}"))?;
            Ok(Probe::healthy(&health))
        });
        let timeout = Box::pin(Delay::from(Duration::from_millis(PROBE_TIMEOUT_MS)));
        let probe = match select(fetch, timeout).await {
            Either::Left((Ok(probe), _)) => probe,
            Either::Left((Err(e), _)) => Probe::Failed(e),
            Either::Right(_) => {
                Probe::Failed(format!("/health did not answer within {PROBE_TIMEOUT_MS} ms"))
            }
        };
        probe
    }

    /// The object's own paths (`/_do/…`), answered here and never forwarded.
    async fn own(&self, mut req: Request) -> ApiResult<Value> {
        let town = req.headers().get(container::TOWN_HEADER).ok().flatten();
        let m = crate::routes::Method::parse(req.method().as_ref());
        let path = req.path();
        let body = req.bytes().await.map_err(ApiError::internal)?;
        self.with_object(async |o| o.own(m, &path, town.as_deref(), &body).await).await
    }
}

impl DurableObject for TownContainer {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, ready: Cell::new(false) }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let result = if req.path().starts_with(container::OWN_PATH_PREFIX) {
            self.own(req).await.map(|data| json_response(200, &success(data)))
        } else if req.path().starts_with("/agents/") && req.path().ends_with("/ws") {
            self.stream(req).await.map(Ok)
        } else {
            self.forward(req).await.map(Ok)
        };
        match result {
            Ok(resp) => resp,
            Err(e) => {
                if let ApiError::Internal(detail) = &e {
                    worker::console_error!("town container: {detail}");
                }
                json_response(e.status(), &e.envelope())
            }
        }
    }

    /// Probes the container while it is in use and carries out the lifecycle's decision.
    async fn alarm(&self) -> worker::Result<Response> {
        let target = self.target();
        let probe = self.probe(&target).await;
        let url_mode = target != Target::Container;
        let action = match self.with_object(async |o| Ok(o.alarm(probe, url_mode).await)).await {
            Ok(action) => action,
            Err(e) => {
                worker::console_error!("town container: alarm without storage: {e}");
                AlarmAction::Idle
            }
        };
        let running = self.state.container().filter(|c| c.running());
        match action {
            // SIGTERM: the control server drains its agents (commit, push) before exiting.
            AlarmAction::Sleep => {
                if let Some(c) = running {
                    c.signal(15)?;
                }
            }
            // The next request starts a fresh container; the scheduler's witness re-dispatches
            // the agents this one lost.
            AlarmAction::Destroy => {
                if let Some(c) = running {
                    if let Err(e) = c.destroy(Some("control server unresponsive")).await {
                        worker::console_error!(
                            "town container: could not destroy the unresponsive container: {e}"
                        );
                    }
                }
            }
            AlarmAction::RearmAt(_) | AlarmAction::Idle => {}
        }
        Response::ok("ok")
    }
}
