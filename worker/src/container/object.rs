//! The TownContainer's logic over its own SQLite ([`Db`]) and [`Effects`]: its lifecycle
//! record, the spending guard on a start, forwarding with retries, the agents' kept events and
//! the town's usage, history tickets, and the alarm's decision.
//!
//! `runtime/container_do.rs` carries it out on workers-rs: it starts the container, fetches
//! from its port (or `CONTAINER_URL`) as the [`ControlServer`], opens WebSockets and times the
//! probe out. The native tests (`object_tests.rs`) run the same logic over SQLite and a
//! scripted control server.
//!
//! Every record is read and written in the object's SQLite with no `await` in between, so each
//! change is one step of the object: two starts at once cannot both take the hour's last
//! dispatch.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use shared_types::control::{StartAgentRequest, StreamFrame};
use shared_types::AgentEventBatch;

use super::lifecycle::{AlarmAction, Lifecycle, Probe, Settings};
use super::{budgets, retry_delay_ms};
use crate::agent_events::{self, EventQuery};
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};
use crate::rig::op::to_json;
use crate::routes::Method;
use crate::shards::{self, ShardRef};
use crate::spending::{self, Ledger};
use crate::{dashboard, params, usage};

/// The object's schema, in order: the agents' events, the town's usage (per call, then per
/// hour), and the records kept whole.
pub const MIGRATIONS: &[&[&str]] =
    &[agent_events::EVENTS, usage::MIGRATION, usage::HOURLY, KEPT_TABLE];

/// Small records kept whole as JSON, by name: the lifecycle, the dispatch ledger, the history
/// tickets.
const KEPT_TABLE: &[&str] = &["CREATE TABLE kept (name TEXT PRIMARY KEY, value TEXT NOT NULL)"];

const LIFECYCLE: &str = "lifecycle";
/// The starts let through in the last hour (the spending guard's ledger).
const LEDGER: &str = "dispatch_ledger";
/// Outstanding tickets for kept histories (`dashboard::HistoryTicket`).
const HISTORY_TICKETS: &str = "history_tickets";

/// A request for the control server, kept whole so it can be sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub method: Method,
    pub path: String,
    pub body: Vec<u8>,
}

/// How the object reaches its control server: the container's port, or `CONTAINER_URL`.
#[allow(async_fn_in_trait)]
pub trait ControlServer {
    /// The control server's answer, handed back to the caller as it is.
    type Answer;

    fn status(answer: &Self::Answer) -> u16;

    /// Starts the container if it is not running; `true` when it was started now.
    async fn wake(&self) -> ApiResult<bool>;

    /// One try; `Err`: no answer (refused, reset, not listening past the start deadline).
    async fn send(&self, out: &Outgoing) -> Result<Self::Answer, String>;

    async fn sleep(&self, ms: u64);

    /// What the caller is told did not answer.
    fn place(&self) -> &'static str;
}

/// What a forward answers: the control server's answer, or one of the object's own.
#[derive(Debug)]
pub enum Forwarded<A> {
    Answer(A),
    Json(u16, Value),
}

/// The stream of a history ticket, for the runtime to send and close.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// The ticket was spent but is not good for this agent now: one error frame, then a close
    /// with code 4401 and this reason.
    Refused { frame: StreamFrame, reason: &'static str },
    /// The agent's kept events and an `agent.exited` frame, then a close (1000).
    History(Vec<StreamFrame>),
}

/// The lifecycle kept in `db` (`none` when nothing is kept yet).
pub fn lifecycle<D: Db>(db: &D) -> ApiResult<Lifecycle> {
    Ok(kept(db, LIFECYCLE)?
        .unwrap_or_else(|| Lifecycle { status: "none".into(), ..Lifecycle::default() }))
}

/// Changes the kept lifecycle; `.1`: its status changed.
pub fn change_lifecycle<D: Db>(
    db: &D,
    change: impl FnOnce(&mut Lifecycle),
) -> ApiResult<(Lifecycle, bool)> {
    let mut l = lifecycle(db)?;
    let before = l.clone();
    change(&mut l);
    if l != before {
        keep(db, LIFECYCLE, &l)?;
    }
    let moved = l.status != before.status;
    Ok((l, moved))
}

fn kept<D: Db, T: DeserializeOwned>(db: &D, name: &str) -> ApiResult<Option<T>> {
    #[derive(serde::Deserialize)]
    struct Row {
        value: String,
    }
    let row: Option<Row> = db.first("SELECT value FROM kept WHERE name = ?", params![name])?;
    row.map(|r| crate::json::from_text(&r.value).map_err(ApiError::internal)).transpose()
}

fn keep<D: Db, T: Serialize>(db: &D, name: &str, value: &T) -> ApiResult<()> {
    let value = serde_json::to_string(value).map_err(ApiError::internal)?;
    db.exec(
        "INSERT INTO kept (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

/// A body of the object's own paths or a start, read the Worker's one way (`crate::json`).
fn body_of<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    crate::json::from_bytes(bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

pub struct TownContainerObject<'a, D: Db, E: Effects> {
    pub db: &'a D,
    pub fx: &'a E,
    /// Which shard of its town this object is: shard 0's keeps the town's ledgers (usage,
    /// events, the hourly dispatch ledger) and guards every shard's starts.
    pub shard: u32,
}

/// Another shard's start, sent to the town's guard.
#[derive(Debug, Serialize, serde::Deserialize)]
struct GuardRequest {
    shard: u32,
    start: Value,
}

/// What the town's guard answers a shard for a start: the body to send (with the town's
/// running-agents cap) and the ledger entry to take back if the start is not accepted.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Guarded {
    pub body: Value,
    #[serde(default)]
    pub key: Option<String>,
}

impl<D: Db, E: Effects> TownContainerObject<'_, D, E> {
    pub fn settings(&self) -> Settings {
        Settings::from_lookup(|k| self.fx.var(k))
    }

    /// Changes the lifecycle, logging a new status. A lifecycle that cannot be kept is logged
    /// and the change carried on from: the object still answers.
    fn update(&self, change: impl FnOnce(&mut Lifecycle)) -> Lifecycle {
        match change_lifecycle(self.db, change) {
            Ok((l, moved)) => {
                if moved {
                    let detail = l.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                    self.fx.log_info(&format!("town container: {}{detail}", l.status));
                }
                l
            }
            Err(e) => {
                self.fx.log_error(&format!("town container: could not keep its state: {e}"));
                Lifecycle::default()
            }
        }
    }

    /// Makes sure the alarm fires by `at_ms` (an earlier alarm stays).
    async fn alarm_by(&self, at_ms: i64) {
        if self.fx.alarm_at().await.is_none_or(|current| current > at_ms) {
            self.fx.set_alarm((at_ms - self.fx.now_ms()).max(1) as u64).await;
        }
    }

    /// Real activity: renews sleepAfter and makes sure the probes run.
    async fn touch(&self) {
        let now = self.fx.now_ms();
        self.update(|l| l.activity(now, None));
        self.alarm_by(now + self.settings().probe_every_ms).await;
    }

    /// The town's spending guard on a start (`crate::spending`): the day's budgets are checked
    /// against the usage kept here, the hourly cap against the ledger (the start is entered in
    /// it before it is sent, in the same step as the check, so concurrent starts cannot
    /// overshoot), and the running-agents cap goes to the control server of shard `shard` in
    /// the body, less the agents the town's other shards run.
    /// `Err(reason)`: refused; `Ok(Some(key))`: entered in the ledger as `key`. A body that is
    /// not a start request goes on unguarded: the control server refuses it.
    async fn guard_start(
        &self,
        town: &str,
        shard: u32,
        out: &mut Outgoing,
    ) -> Result<Option<String>, String> {
        // Closed, not open: the bead waits for the next pass rather than spend unguarded.
        let limits = budgets::limits(self.fx, town)
            .await
            .map_err(|e| format!("spending caps could not be read: {e}"))?;
        let Ok(mut start) = body_of::<StartAgentRequest>(&out.body) else {
            return Ok(None);
        };
        if let Some(cap) = limits.max_concurrent_agents {
            start.max_concurrent_agents = Some(self.cap_on_shard(town, shard, cap).await?);
            out.body = serde_json::to_vec(&start).map_err(|e| e.to_string())?;
        }
        if limits.max_tokens_per_day.is_some() || limits.max_cost_usd_per_day.is_some() {
            let today = limits.day_at(self.fx.now_ms());
            let (tokens, cost) = usage::day_total(self.db, &today, limits.offset_minutes())
                .map_err(|e| format!("the day's usage could not be read: {e}"))?;
            budgets::tell_mayor(self.fx, town, &today, &limits, tokens, cost).await;
            spending::within_budget(&limits, tokens, cost)?;
        }
        let Some(cap) = limits.max_dispatches_per_hour else { return Ok(None) };
        let key = start.dispatch_id.unwrap_or(start.agent_id);
        let unreadable = |e: ApiError| format!("the dispatch ledger could not be read: {e}");
        let mut ledger: Ledger = kept(self.db, LEDGER).map_err(unreadable)?.unwrap_or_default();
        let now = self.fx.now_ms();
        spending::admit(&ledger, &key, now, Some(cap))?;
        spending::record(&mut ledger, &key, now);
        if let Err(e) = keep(self.db, LEDGER, &ledger) {
            self.fx.log_error(&format!("town container: could not keep the dispatch ledger: {e}"));
        }
        Ok(Some(key))
    }

    /// The town's running-agents cap as shard `shard`'s control server applies it: the cap less
    /// the agents the other shards ran at their last heartbeats (a town of one shard: the cap).
    /// Nothing left is a refusal.
    async fn cap_on_shard(&self, town: &str, shard: u32, cap: u32) -> Result<u32, String> {
        let views = match shards::views(self.fx, town).await {
            Ok(views) => views,
            // A town without a record has no other shard.
            Err(ApiError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(format!("the town's shards could not be read: {e}")),
        };
        let elsewhere: u32 = views.iter().filter(|v| v.shard != shard).map(|v| v.running).sum();
        match cap.checked_sub(elsewhere).filter(|left| *left > 0) {
            Some(left) => Ok(left),
            None => Err(format!(
                "max_concurrent_agents is {cap} for the town, and its other shards run {elsewhere}"
            )),
        }
    }

    /// Another shard's start, guarded by the town's first shard, which keeps the town's
    /// ledgers: the caps count the whole town. Closed, not open: unreachable, the start waits.
    async fn guard_at_first_shard(
        &self,
        town: &str,
        out: &mut Outgoing,
    ) -> Result<Option<String>, String> {
        let Ok(start) = body_of::<Value>(&out.body) else { return Ok(None) };
        let body = json!({ "shard": self.shard, "start": start });
        let first = ShardRef::first(town);
        match self.fx.container(&first, Method::Post, super::GUARD_PATH, Some(&body)).await {
            Ok((200, reply)) => {
                let guarded: Guarded = crate::json::decode(reply["data"].clone())
                    .map_err(|e| format!("the town's spending guard answered oddly: {e}"))?;
                out.body = serde_json::to_vec(&guarded.body).map_err(|e| e.to_string())?;
                Ok(guarded.key)
            }
            Ok((_, reply)) => Err(reply["error"]
                .as_str()
                .unwrap_or("the town's spending guard refused the start")
                .to_string()),
            Err(e) => Err(format!("the town's spending guard could not be reached: {e}")),
        }
    }

    /// Takes a start that did not happen back out of the town's ledger (at the first shard).
    async fn unrecord_in_town(&self, town: &str, key: &str) {
        if self.shard == 0 {
            return self.unrecord(key);
        }
        let first = ShardRef::first(town);
        let body = json!({ "key": key });
        if let Err(e) =
            self.fx.container(&first, Method::Post, super::UNGUARD_PATH, Some(&body)).await
        {
            self.fx.log_error(&format!(
                "town container: a start not taken back out of the ledger: {e}"
            ));
        }
    }

    /// Takes a start that did not happen back out of the ledger.
    fn unrecord(&self, key: &str) {
        let taken_out = kept::<D, Ledger>(self.db, LEDGER).and_then(|ledger| {
            let mut ledger = ledger.unwrap_or_default();
            ledger.retain(|(k, _)| k != key);
            keep(self.db, LEDGER, &ledger)
        });
        if let Err(e) = taken_out {
            self.fx.log_error(&format!("town container: could not keep the dispatch ledger: {e}"));
        }
    }

    /// Forwards a request to the control server. A start passes the town's spending guard
    /// first (refused: a 429 with the reason, nothing sent) and leaves the ledger again if it
    /// was not accepted. A stream ticket for an agent the control server does not know (its
    /// container was replaced) is a ticket for the agent's kept history, when there is one.
    pub async fn forward<C: ControlServer>(
        &self,
        server: &C,
        town: Option<&str>,
        mut out: Outgoing,
    ) -> ApiResult<Forwarded<C::Answer>> {
        let mut entered = None;
        if let (Method::Post, "/agents/start", Some(town)) = (out.method, out.path.as_str(), town) {
            let guarded = match self.shard {
                0 => self.guard_start(town, 0, &mut out).await,
                _ => self.guard_at_first_shard(town, &mut out).await,
            };
            match guarded {
                Ok(key) => entered = key,
                Err(reason) => {
                    return Ok(Forwarded::Json(429, json!({ "success": false, "error": reason })))
                }
            }
        }
        let answer = self.send(server, &out).await;
        if let (Some(key), Some(town)) = (entered, town) {
            if !answer.as_ref().is_ok_and(|a| (200..300).contains(&C::status(a))) {
                self.unrecord_in_town(town, &key).await;
            }
        }
        if out.method == Method::Post {
            if let Some(agent) = dashboard::ticket_request_agent(&out.path) {
                let unknown = match &answer {
                    Ok(a) => C::status(a) == 404,
                    Err(e) => e.status() == 503,
                };
                if unknown && self.has_history(agent)? {
                    return self.history_ticket(agent).map(|t| Forwarded::Json(200, t));
                }
            }
        }
        answer.map(Forwarded::Answer)
    }

    /// Sends with retries (`super::retry_delay_ms`). A failure after them destroys nothing: it
    /// brings the next health probe forward, and the probes decide.
    async fn send<C: ControlServer>(&self, server: &C, out: &Outgoing) -> ApiResult<C::Answer> {
        if super::is_activity(out.method, &out.path) {
            self.touch().await;
        }
        if server.wake().await? {
            let now = self.fx.now_ms();
            self.update(|l| l.started(now));
        }
        let mut retry = 0;
        let error = loop {
            match server.send(out).await {
                Ok(answer) => {
                    let now = self.fx.now_ms();
                    self.update(|l| l.answered(now));
                    return Ok(answer);
                }
                Err(e) => match retry_delay_ms(retry) {
                    Some(ms) => {
                        server.sleep(ms).await;
                        retry += 1;
                    }
                    None => break e,
                },
            }
        };
        let now = self.fx.now_ms();
        self.alarm_by(lifecycle(self.db)?.forward_failed_probe_at(now, &self.settings())).await;
        Err(ApiError::Unavailable(format!(
            "{} did not answer (after {retry} retries): {error}",
            server.place()
        )))
    }

    fn has_history(&self, agent: &str) -> ApiResult<bool> {
        let q = EventQuery { agent_id: agent.to_string(), after: 0, limit: 1 };
        Ok(!agent_events::list(self.db, &q)?.events.is_empty())
    }

    /// Issues a ticket of this object's own for an agent's kept history (the shape and
    /// lifetime of the control server's).
    fn history_ticket(&self, agent: &str) -> ApiResult<Value> {
        let now = self.fx.now_ms();
        let ticket = format!("{}{}", self.fx.new_id(), self.fx.new_id()).replace('-', "");
        let mut list: Vec<dashboard::HistoryTicket> =
            kept(self.db, HISTORY_TICKETS)?.unwrap_or_default();
        let expires_ms = now + dashboard::TICKET_TTL_MS;
        let entry = dashboard::HistoryTicket {
            ticket: ticket.clone(),
            agent: agent.to_string(),
            expires_ms,
        };
        dashboard::add_history_ticket(&mut list, entry, now);
        keep(self.db, HISTORY_TICKETS, &list)?;
        Ok(json!({ "ticket": ticket, "expiresAt": crate::time::iso_from_millis(expires_ms) }))
    }

    /// Redeems `ticket` if it is one of this object's own (`None`: it is not; the control
    /// server redeems it). The replay is bounded: an agent keeps at most
    /// `agent_events::KEEP_PER_AGENT` events.
    pub fn replay(&self, ticket: &str, agent: &str) -> ApiResult<Option<Replay>> {
        let mut list: Vec<dashboard::HistoryTicket> =
            kept(self.db, HISTORY_TICKETS)?.unwrap_or_default();
        let now = self.fx.now_ms();
        let Some(verdict) = dashboard::redeem_history_ticket(&mut list, ticket, agent, now) else {
            return Ok(None);
        };
        keep(self.db, HISTORY_TICKETS, &list)?;
        let now = self.fx.now_iso();
        if let Err(reason) = verdict {
            let error = json!({ "error": reason, "code": 4401 });
            let frame = StreamFrame::new(agent, 0, "error", &error, &now);
            return Ok(Some(Replay::Refused { frame, reason }));
        }
        let mut frames = Vec::new();
        let mut after = 0;
        loop {
            let q =
                EventQuery { agent_id: agent.to_string(), after, limit: agent_events::MAX_LIMIT };
            let page = agent_events::list(self.db, &q)?;
            if page.events.is_empty() {
                break;
            }
            for e in &page.events {
                frames.push(StreamFrame::new(agent, e.seq, &e.kind, &e.data, &e.at));
            }
            after = page.next_after;
        }
        let exited = json!({ "type": "agent.exited", "properties": { "reason": "history" } });
        frames.push(StreamFrame::new(agent, after, "agent.exited", &exited, &now));
        Ok(Some(Replay::History(frames)))
    }

    /// The object's own paths (`super::OWN_PATH_PREFIX`), which only the Worker's routes reach:
    /// its state, activity reports (heartbeats with their running-agent count, agents' API
    /// calls), the agents' events and the town's usage.
    pub async fn own(
        &self,
        method: Method,
        path: &str,
        town: Option<&str>,
        body: &[u8],
    ) -> ApiResult<Value> {
        match (method, path) {
            (Method::Get, super::STATE_PATH) => to_json(&lifecycle(self.db)?),
            (Method::Post, super::ACTIVITY_PATH) => {
                let report: ActivityReport = body_of(body)?;
                let now = self.fx.now_ms();
                let l = match report.heartbeat_running_agents {
                    Some(n) => self.update(|l| l.heartbeat(now, n, report.boot_id.as_deref())),
                    None => self.update(|l| l.activity(now, None)),
                };
                if l.last_activity_ms == Some(now) {
                    self.alarm_by(now + self.settings().probe_every_ms).await;
                }
                to_json(&l)
            }
            (Method::Post, super::EVENTS_APPEND_PATH) => {
                let batch: AgentEventBatch = body_of(body)?;
                let added = agent_events::append(self.db, &batch)?;
                if let Some(town) = town {
                    budgets::after_usage(self.db, self.fx, town, &batch).await;
                }
                Ok(json!({ "added": added }))
            }
            (Method::Post, super::GUARD_PATH) => {
                let town = town.ok_or_else(|| ApiError::bad_request("no town named"))?;
                let asked: GuardRequest = body_of(body)?;
                let start = serde_json::to_vec(&asked.start).map_err(ApiError::internal)?;
                let mut out =
                    Outgoing { method: Method::Post, path: "/agents/start".into(), body: start };
                let key = self
                    .guard_start(town, asked.shard, &mut out)
                    .await
                    .map_err(ApiError::TooManyRequests)?;
                to_json(Guarded { body: body_of(&out.body)?, key })
            }
            (Method::Post, super::UNGUARD_PATH) => {
                #[derive(serde::Deserialize)]
                struct Key {
                    key: String,
                }
                self.unrecord(&body_of::<Key>(body)?.key);
                Ok(Value::Null)
            }
            (Method::Post, super::EVENTS_LIST_PATH) => {
                let q: EventQuery = body_of(body)?;
                to_json(&agent_events::list(self.db, &q)?)
            }
            (Method::Post, usage::USAGE_PATH) => {
                let mut q: usage::UsageQuery = body_of(body)?;
                q.offset_minutes = match town {
                    Some(town) => budgets::limits(self.fx, town).await?.offset_minutes(),
                    None => 0,
                };
                to_json(usage::report(self.db, &q)?)
            }
            (Method::Post, usage::PRICES_GET_PATH) => usage::prices(self.db),
            (Method::Post, usage::PRICES_PUT_PATH) => {
                let t: usage::PriceTable = body_of(body)?;
                usage::set_prices(self.db, &t)
            }
            _ => Err(ApiError::NotFound("no such container path".into())),
        }
    }

    /// The alarm: the lifecycle's decision on `probe`, its next probe armed. Sleep and destroy
    /// are the runtime's to carry out. `url_mode`: the control server is run by hand
    /// (`CONTAINER_URL`) and is never stopped.
    pub async fn alarm(&self, probe: Probe, url_mode: bool) -> AlarmAction {
        let (settings, now) = (self.settings(), self.fx.now_ms());
        let mut action = AlarmAction::Idle;
        self.update(|l| action = l.on_alarm(now, probe, &settings, url_mode));
        if let AlarmAction::RearmAt(at) = action {
            self.fx.set_alarm((at - now).max(1) as u64).await;
        }
        action
    }
}

/// `POST /_do/activity`: a heartbeat's count of running agents and boot id, or (neither) an
/// agent's call to the Worker.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_running_agents: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
