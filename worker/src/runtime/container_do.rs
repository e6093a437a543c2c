//! TownContainer: one per town (`idFromName(townId)`), the town's container.
//!
//! With a container runtime (`state.container()` is `Some`: production, or `wrangler dev` with
//! Docker) it starts the container with its env vars when needed, waits for the control
//! server's port with a deadline, and proxies requests to it. Without one (local development
//! with containers disabled), requests go to `CONTAINER_URL`, a control server run natively;
//! the rest of the path is the same. Either way the container secret is added as
//! `X-Container-Token`.
//!
//! Its lifecycle (`container::lifecycle`: sleepAfter renewed by real activity, never asleep
//! with a running agent, destroyed only after consecutive failed probes) is kept in one
//! storage entry; the alarm probes `/health` while the container is in use. Its own paths
//! (`/_do/state`, `/_do/activity`) are answered here, never forwarded.

use std::cell::Cell;
use std::time::Duration;

use futures_util::future::{select, Either};
use js_sys::{Function, Object, Reflect};
use serde_json::Value;
use shared_types::AgentEventBatch;
use wasm_bindgen::{JsCast, JsValue};
use worker::{
    Container, Delay, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response,
    State, WebSocketPair,
};

use super::call::json_response;
use super::effects::WorkerEffects;
use super::platform::{now_millis, var};
use super::{platform, sql};
use crate::container::lifecycle::{AlarmAction, Lifecycle, Probe, Settings};
use crate::container::{self, budgets, Target};
use crate::error::{success, ApiError, ApiResult};
use crate::spending::{self, Ledger};
use crate::{agent_events, dashboard};

const LIFECYCLE: &str = "lifecycle";
/// The starts let through in the last hour (the spending guard's ledger).
const LEDGER: &str = "dispatch_ledger";
/// Outstanding tickets for kept histories (`dashboard::HistoryTicket`).
const HISTORY_TICKETS: &str = "history_tickets";
/// A probe that takes longer than this counts as failed (a stopped or wedged server).
const PROBE_TIMEOUT_MS: u64 = 5_000;

#[worker::durable_object]
pub struct TownContainer {
    state: State,
    env: Env,
    /// Whether the events schema is up to date in this instance.
    ready: Cell<bool>,
}

/// A request to forward, kept as bytes so it can be sent again (port not ready, retries).
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
    fn events_db(&self) -> ApiResult<sql::SqlDb> {
        sql::open(&self.state.storage(), &self.ready, agent_events::MIGRATIONS)
    }

    /// The object's effects for the logic written against them (`container::budgets`); its
    /// container calls come back to this object, which forwards them.
    fn effects(&self) -> WorkerEffects<'_> {
        WorkerEffects { env: &self.env, storage: self.state.storage() }
    }

    fn settings(&self) -> Settings {
        Settings::from_lookup(|k| var(&self.env, k))
    }

    fn target(&self) -> Target {
        container::target(
            self.state.container().is_some(),
            var(&self.env, "CONTAINER_URL").as_deref(),
        )
    }

    async fn load(&self) -> Lifecycle {
        let stored: Option<Lifecycle> = self.state.storage().get(LIFECYCLE).await.ok().flatten();
        stored.unwrap_or_else(|| Lifecycle { status: "none".into(), ..Lifecycle::default() })
    }

    /// Loads, changes and stores the lifecycle. No network call happens in between, so the
    /// object's input gate keeps concurrent requests from interleaving here.
    async fn update(&self, change: impl FnOnce(&mut Lifecycle)) -> Lifecycle {
        let mut l = self.load().await;
        let before = l.clone();
        change(&mut l);
        if l != before {
            if l.status != before.status {
                worker::console_log!(
                    "town container: {}{}",
                    l.status,
                    l.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                );
            }
            if let Err(e) = self.state.storage().put(LIFECYCLE, &l).await {
                worker::console_error!("town container: could not store its state: {e}");
            }
        }
        l
    }

    /// Makes sure the alarm fires by `at_ms` (an earlier alarm stays).
    async fn alarm_by(&self, at_ms: i64) -> ApiResult<()> {
        let storage = self.state.storage();
        let current = storage.get_alarm().await.map_err(ApiError::internal)?;
        if current.is_none_or(|c| c > at_ms) {
            storage.set_alarm((at_ms - now_millis()).max(1)).await.map_err(ApiError::internal)?;
        }
        Ok(())
    }

    /// Real activity: renews sleepAfter and makes sure the probes run.
    async fn touch(&self) -> ApiResult<()> {
        let now = now_millis();
        self.update(|l| l.activity(now, None)).await;
        self.alarm_by(now + self.settings().probe_every_ms).await
    }

    /// onStart / onStop / onError: start the container and watch for its exit.
    async fn ensure_started(&self, c: &Container) -> ApiResult<()> {
        if c.running() {
            return Ok(());
        }
        start(c, &self.env)
            .map_err(|e| ApiError::Unavailable(format!("container failed to start: {e}")))?;
        let now = now_millis();
        self.update(|l| l.started(now)).await;
        if let Some(watched) = self.state.container() {
            let storage = self.state.storage();
            self.state.wait_until(async move {
                let error = watched.wait_for_exit().await.err().map(|e| e.to_string());
                let mut l: Lifecycle =
                    storage.get(LIFECYCLE).await.ok().flatten().unwrap_or_default();
                l.exited(now_millis(), error);
                worker::console_log!("town container: {}", l.status);
                let _ = storage.put(LIFECYCLE, &l).await;
            });
        }
        Ok(())
    }

    /// One fetch to the container's port, waiting (to the start deadline) while it is not ready.
    async fn container_fetch(&self, c: &Container, out: &Outgoing) -> Result<Response, String> {
        let token = var(&self.env, "CONTAINER_TOKEN");
        let url = format!("http://container{}", out.path);
        let deadline = now_millis() + container::START_DEADLINE_MS;
        loop {
            let port = c.get_tcp_port(container::DEFAULT_PORT).map_err(|e| e.to_string())?;
            let req = out.request(&url, token.as_deref()).map_err(|e| e.to_string())?;
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

    async fn url_fetch(&self, base: &str, out: &Outgoing) -> Result<Response, String> {
        let url = container::forward_url(base, &out.path).map_err(|e| e.to_string())?;
        let req = out
            .request(&url, var(&self.env, "CONTAINER_TOKEN").as_deref())
            .map_err(|e| e.to_string())?;
        Fetch::Request(req).send().await.map_err(|e| e.to_string())
    }

    async fn fetch_once(&self, target: &Target, out: &Outgoing) -> Result<Response, String> {
        match (target, self.state.container()) {
            (Target::Container, Some(c)) => self.container_fetch(&c, out).await,
            (Target::Url(base), _) => self.url_fetch(base, out).await,
            _ => Err(container::unavailable().to_string()),
        }
    }

    /// The town's spending guard on a start (`crate::spending`): the day's budgets are checked
    /// against the usage kept here, the hourly cap is checked
    /// against the ledger (and the start entered in it before it is sent, so concurrent starts
    /// cannot overshoot), the running-agents cap goes to the control server in the body.
    /// `Err(reason)`: refused; `Ok(Some(key))`: entered in the ledger as `key`.
    async fn guard_start(
        &self,
        town: Option<&str>,
        out: &mut Outgoing,
    ) -> Result<Option<String>, String> {
        let Some(town) = town else { return Ok(None) };
        // Closed, not open: the bead waits for the next pass rather than spend unguarded.
        let fx = self.effects();
        let limits = budgets::limits(&fx, town)
            .await
            .map_err(|e| format!("spending caps could not be read: {e}"))?;
        let Ok(mut body) = serde_json::from_slice::<Value>(&out.body) else { return Ok(None) };
        if let Some(cap) = limits.max_concurrent_agents {
            body["maxConcurrentAgents"] = cap.into();
            out.body = body.to_string().into_bytes();
        }
        if limits.max_tokens_per_day.is_some() || limits.max_cost_usd_per_day.is_some() {
            let today = limits.day_at(now_millis());
            let used = self
                .events_db()
                .and_then(|db| crate::usage::day_total(&db, &today, limits.offset_minutes()));
            let (tokens, cost) =
                used.map_err(|e| format!("the day's usage could not be read: {e}"))?;
            budgets::tell_mayor(&fx, town, &today, &limits, tokens, cost).await;
            spending::within_budget(&limits, tokens, cost)?;
        }
        let Some(cap) = limits.max_dispatches_per_hour else { return Ok(None) };
        let key = body["dispatchId"]
            .as_str()
            .or(body["agentId"].as_str())
            .unwrap_or("unnamed")
            .to_string();
        let storage = self.state.storage();
        let mut ledger: Ledger = storage.get(LEDGER).await.ok().flatten().unwrap_or_default();
        let now = now_millis();
        spending::admit(&ledger, &key, now, Some(cap))?;
        spending::record(&mut ledger, &key, now);
        if let Err(e) = storage.put(LEDGER, &ledger).await {
            worker::console_error!("town container: could not store the dispatch ledger: {e}");
        }
        Ok(Some(key))
    }

    /// Takes a start that did not happen back out of the ledger.
    async fn unrecord(&self, key: &str) {
        let storage = self.state.storage();
        let mut ledger: Ledger = storage.get(LEDGER).await.ok().flatten().unwrap_or_default();
        ledger.retain(|(k, _)| k != key);
        let _ = storage.put(LEDGER, &ledger).await;
    }

    /// Forwards a request to the control server: a start passes the spending guard first.
    async fn forward(&self, mut req: Request) -> ApiResult<Response> {
        let town = req.headers().get(container::TOWN_HEADER).ok().flatten();
        let mut out = Outgoing {
            method: req.method(),
            path: req.path(),
            body: req.bytes().await.map_err(ApiError::internal)?,
        };
        let target = self.target();
        if target == Target::Unavailable {
            return Err(container::unavailable());
        }
        let mut entered = None;
        if out.method == Method::Post && out.path == "/agents/start" {
            match self.guard_start(town.as_deref(), &mut out).await {
                Ok(key) => entered = key,
                Err(reason) => {
                    return json_response(
                        429,
                        &serde_json::json!({ "success": false, "error": reason }),
                    )
                    .map_err(ApiError::internal)
                }
            }
        }
        let answer = self.send(target, &out).await;
        if out.method == Method::Post {
            if let Some(agent) = dashboard::ticket_request_agent(&out.path) {
                // The control server does not know the agent (its container was replaced or is
                // gone): if its events were kept, a stream of that history can be had.
                let unknown = match &answer {
                    Ok(r) => r.status_code() == 404,
                    Err(e) => e.status() == 503,
                };
                if unknown && self.has_history(agent)? {
                    return self.history_ticket(agent).await;
                }
            }
        }
        if let Some(key) = entered {
            if !answer.as_ref().is_ok_and(|r| (200..300).contains(&r.status_code())) {
                self.unrecord(&key).await;
            }
        }
        answer
    }

    /// Sends with retries (`container::retry_delay_ms`). A failure after them does not destroy
    /// anything: it brings the next health probe forward, and the probes decide.
    async fn send(&self, target: Target, out: &Outgoing) -> ApiResult<Response> {
        if container::is_activity(out.method.as_ref(), &out.path) {
            self.touch().await?;
        }
        if let (Target::Container, Some(c)) = (&target, self.state.container()) {
            self.ensure_started(&c).await?;
        }
        let mut retry = 0;
        let error = loop {
            match self.fetch_once(&target, out).await {
                Ok(resp) => {
                    self.update(|l| l.answered(now_millis())).await;
                    return Ok(resp);
                }
                Err(e) => match container::retry_delay_ms(retry) {
                    Some(ms) => {
                        Delay::from(Duration::from_millis(ms)).await;
                        retry += 1;
                    }
                    None => break e,
                },
            }
        };
        let at = self.load().await.forward_failed_probe_at(now_millis(), &self.settings());
        self.alarm_by(at).await?;
        let place = if target == Target::Container {
            "the container"
        } else {
            "the control server at CONTAINER_URL"
        };
        Err(ApiError::Unavailable(format!(
            "{place} did not answer (after {retry} retries): {error}"
        )))
    }

    fn has_history(&self, agent: &str) -> ApiResult<bool> {
        let q = agent_events::EventQuery { agent_id: agent.to_string(), after: 0, limit: 1 };
        Ok(agent_events::list(&self.events_db()?, &q)?["events"]
            .as_array()
            .is_some_and(|a| !a.is_empty()))
    }

    async fn history_tickets(&self) -> Vec<dashboard::HistoryTicket> {
        self.state.storage().get(HISTORY_TICKETS).await.ok().flatten().unwrap_or_default()
    }

    /// Issues a ticket of this object's own for an agent's kept history (same shape and
    /// lifetime as the control server's).
    async fn history_ticket(&self, agent: &str) -> ApiResult<Response> {
        let now = now_millis();
        let ticket = format!("{}{}", platform::new_id(), platform::new_id()).replace('-', "");
        let mut list = self.history_tickets().await;
        let expires_ms = now + dashboard::TICKET_TTL_MS;
        dashboard::add_history_ticket(
            &mut list,
            dashboard::HistoryTicket {
                ticket: ticket.clone(),
                agent: agent.to_string(),
                expires_ms,
            },
            now,
        );
        self.state.storage().put(HISTORY_TICKETS, &list).await.map_err(ApiError::internal)?;
        json_response(200, &serde_json::json!({ "ticket": ticket, "expiresAt": crate::time::iso_from_millis(expires_ms) })).map_err(ApiError::internal)
    }

    /// A WebSocket this object answers itself: `frames`, then a close.
    fn own_socket(
        frames: impl IntoIterator<Item = String>,
        code: u16,
        reason: &str,
    ) -> ApiResult<Response> {
        let pair = WebSocketPair::new().map_err(ApiError::internal)?;
        pair.server.accept().map_err(ApiError::internal)?;
        for f in frames {
            pair.server.send_with_str(f).map_err(ApiError::internal)?;
        }
        pair.server.close(Some(code), Some(reason)).map_err(ApiError::internal)?;
        Response::from_websocket(pair.client).map_err(ApiError::internal)
    }

    /// The stream of a history ticket: the agent's kept events (at most
    /// `agent_events::KEEP_PER_AGENT`, so bounded), an `agent.exited` frame, and a close (1000).
    async fn history_stream(&self, ticket: &str, agent: &str) -> ApiResult<Option<Response>> {
        let mut list = self.history_tickets().await;
        let Some(verdict) =
            dashboard::redeem_history_ticket(&mut list, ticket, agent, now_millis())
        else {
            return Ok(None);
        };
        self.state.storage().put(HISTORY_TICKETS, &list).await.map_err(ApiError::internal)?;
        let now = platform::now_iso();
        if let Err(reason) = verdict {
            let error = dashboard::frame(
                agent,
                0,
                "error",
                &serde_json::json!({ "error": reason, "code": 4401 }),
                &now,
            );
            return Self::own_socket([error], 4401, reason).map(Some);
        }
        let db = self.events_db()?;
        let mut frames = Vec::new();
        let mut after = 0;
        loop {
            let q = agent_events::EventQuery {
                agent_id: agent.to_string(),
                after,
                limit: agent_events::MAX_LIMIT,
            };
            let page = agent_events::list(&db, &q)?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            for e in &events {
                let at = e["at"].as_str().unwrap_or_default();
                frames.push(dashboard::frame(
                    agent,
                    e["seq"].as_i64().unwrap_or(0),
                    e["kind"].as_str().unwrap_or_default(),
                    &e["data"],
                    at,
                ));
            }
            after = page["nextAfter"].as_i64().unwrap_or(i64::MAX);
        }
        let exited =
            serde_json::json!({ "type": "agent.exited", "properties": { "reason": "history" } });
        frames.push(dashboard::frame(agent, after, "agent.exited", &exited, &now));
        Self::own_socket(frames, 1000, "history replayed: the agent's run is over").map(Some)
    }

    /// An agent's live stream (the Worker checked the route and the ticket's form): the
    /// WebSocket upgrade is passed to the control server, which redeems the ticket, and the
    /// socket it answers with is handed back as is. No relay here: frames go from the control
    /// server to the client, and a slow client slows the control server's sends.
    async fn stream(&self, req: Request) -> ApiResult<Response> {
        let url = req.url().map_err(ApiError::internal)?;
        let agent = url.path().trim_start_matches("/agents/").trim_end_matches("/ws").to_string();
        let ticket = url
            .query_pairs()
            .find(|(k, _)| k == "ticket")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if let Some(resp) = self.history_stream(&ticket, &agent).await? {
            return Ok(resp);
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
    async fn probe(&self) -> Probe {
        let target = self.target();
        let nothing_to_probe = match target {
            Target::Container => !self.state.container().is_some_and(|c| c.running()),
            Target::Url(_) => false,
            Target::Unavailable => true,
        };
        if nothing_to_probe {
            return Probe::NotRunning;
        }
        let out = Outgoing { method: Method::Get, path: "/health".into(), body: Vec::new() };
        let fetch = Box::pin(async {
            let mut resp = self.fetch_once(&target, &out).await?;
            if resp.status_code() != 200 {
                return Err(format!("/health answered HTTP {}", resp.status_code()));
            }
            let body: Value = resp.json().await.map_err(|e| format!("/health body: {e}"))?;
            // Agents at work (a mayor waiting between messages is not); a server without the
            // field counts its active agents.
            let running =
                body["atWork"].as_u64().or_else(|| body["agents"].as_u64()).unwrap_or(0) as u32;
            Ok((running, body["bootId"].as_str().map(str::to_string)))
        });
        let timeout = Box::pin(Delay::from(Duration::from_millis(PROBE_TIMEOUT_MS)));
        let probe = match select(fetch, timeout).await {
            Either::Left((Ok((running_agents, boot_id)), _)) => {
                Probe::Healthy { running_agents, boot_id }
            }
            Either::Left((Err(e), _)) => Probe::Failed(e),
            Either::Right(_) => {
                Probe::Failed(format!("/health did not answer within {PROBE_TIMEOUT_MS} ms"))
            }
        };
        probe
    }

    /// The object's own paths: its state (`GET`) and activity reports (`POST`, from the Worker:
    /// heartbeats with their running-agent count, agents' API calls).
    async fn own(&self, mut req: Request) -> ApiResult<Value> {
        match (req.method(), req.path().as_str()) {
            (Method::Get, container::STATE_PATH) => {
                serde_json::to_value(self.load().await).map_err(ApiError::internal)
            }
            (Method::Post, container::ACTIVITY_PATH) => {
                let body: Value = req.json().await.map_err(ApiError::internal)?;
                let now = now_millis();
                let l = match body["heartbeatRunningAgents"].as_u64() {
                    Some(n) => {
                        self.update(|l| l.heartbeat(now, n as u32, body["bootId"].as_str())).await
                    }
                    None => self.update(|l| l.activity(now, None)).await,
                };
                if l.last_activity_ms == Some(now) {
                    self.alarm_by(now + self.settings().probe_every_ms).await?;
                }
                serde_json::to_value(l).map_err(ApiError::internal)
            }
            (Method::Post, container::EVENTS_APPEND_PATH) => {
                let town = req.headers().get(container::TOWN_HEADER).ok().flatten();
                let batch: AgentEventBatch = req.json().await.map_err(ApiError::internal)?;
                let added = agent_events::append(&self.events_db()?, &batch)?;
                if let Some(town) = town {
                    budgets::after_usage(&self.events_db()?, &self.effects(), &town, &batch).await;
                }
                Ok(serde_json::json!({ "added": added }))
            }
            (Method::Post, container::EVENTS_LIST_PATH) => {
                let q: agent_events::EventQuery = req.json().await.map_err(ApiError::internal)?;
                agent_events::list(&self.events_db()?, &q)
            }
            (Method::Post, crate::usage::USAGE_PATH) => {
                let town = req.headers().get(container::TOWN_HEADER).ok().flatten();
                let mut q: crate::usage::UsageQuery =
                    req.json().await.map_err(ApiError::internal)?;
                q.offset_minutes = match town {
                    Some(town) => budgets::limits(&self.effects(), &town).await?.offset_minutes(),
                    None => 0,
                };
                crate::usage::report(&self.events_db()?, &q)
            }
            (Method::Post, crate::usage::PRICES_GET_PATH) => {
                crate::usage::prices(&self.events_db()?)
            }
            (Method::Post, crate::usage::PRICES_PUT_PATH) => {
                let t: crate::usage::PriceTable = req.json().await.map_err(ApiError::internal)?;
                crate::usage::set_prices(&self.events_db()?, &t)
            }
            _ => Err(ApiError::NotFound("no such container path".into())),
        }
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
        let probe = self.probe().await;
        let (settings, target) = (self.settings(), self.target());
        let mut action = AlarmAction::Idle;
        self.update(|l| {
            action = l.on_alarm(now_millis(), probe, &settings, target != Target::Container)
        })
        .await;
        let running = self.state.container().filter(|c| c.running());
        match action {
            AlarmAction::RearmAt(at) => {
                self.state.storage().set_alarm((at - now_millis()).max(1)).await?
            }
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
            AlarmAction::Idle => {}
        }
        Response::ok("ok")
    }
}
