//! The TownDO's side of the mayor: its ops, the delivery of pending messages
//! to the mayor in the town's container, and the retries from the TownDO's alarm.
//!
//! Delivery: every pending message (people's, the town's notices) reaches the mayor as one new
//! turn. A running mayor gets them as a message; a mayor that is not running (never started,
//! its container slept or restarted) is started with its thread and the pending messages as its
//! first prompt. One delivery runs at a time per town (a delivery asked for meanwhile runs
//! right after), so nothing is sent twice. What cannot be delivered now (the mayor is starting,
//! the container is unreachable, a spending cap) stays pending and the alarm tries again.

use serde_json::{json, Value};

use crate::api::{self, FollowUp};
use crate::db::Db;
use crate::effects::{rig_op, Effects};
use crate::error::{ApiError, ApiResult};
use crate::escalations::ResolveEscalation;
use crate::idempotency::Claim;
use crate::mayor::routes::NoticeKind;
use crate::mayor::store::{Message, Role, Store};
use crate::mayor::{
    prompt, town_status, AgentSummary, BeadSummary, MayorOp, TurnLimits, MAYOR_AGENT_ID,
};
use crate::model::{MayorSent, RigRecord};
use crate::requests::DEFAULT_BEAD_LIMIT;
use crate::rig::agents::{AgentFilter, ListAgents};
use crate::rig::beads::{BeadFilter, ListBeads};
use crate::rig::convoys::CreateConvoy;
use crate::rig::mail::SendMail;
use crate::rig::op::{to_json, RigCall};
use crate::rig::sling::Sling;
use crate::routes::Method;
use crate::scheduler::Settings;
use crate::shards::ShardRef;
use crate::town::object::TownObject;
use crate::town::Town;

/// How long after a failed delivery the alarm tries again, and how many times in a row.
pub const RETRY_MS: u64 = 3_000;
pub const MAX_TRIES: i64 = 100;
/// The counter of failed deliveries in a row.
const TRIES: &str = "mayor_tries";
/// Most text of pending messages sent in one turn (older ones first; the rest next turn).
const MAX_DELIVERY_BYTES: usize = 128 * 1024;

/// What became of the pending messages.
pub struct Delivery {
    /// `active` (sent to the running mayor), `starting` (a run was started with them), or
    /// `queued` (kept; the alarm tries again).
    pub status: &'static str,
    pub detail: Option<String>,
}

impl Delivery {
    fn queued(detail: impl Into<String>) -> Self {
        Self { status: "queued", detail: Some(detail.into()) }
    }
}

impl<D: Db, E: Effects> TownObject<'_, D, E> {
    /// A mayor op, once per idempotency `key` (`crate::idempotency`): a retried tool call whose
    /// first answer was lost gets that answer again.
    pub(crate) async fn mayor_once(&self, op: MayorOp, key: Option<&str>) -> ApiResult<Value> {
        let Some(key) = key else { return self.mayor(op, None).await };
        match crate::idempotency::claim(self.db, key, &self.fx.now_iso())? {
            Claim::Kept(kept) => return kept,
            Claim::Busy => {
                return Err(ApiError::Unavailable(
                    "a call with this Idempotency-Key is still running: retry".into(),
                ))
            }
            Claim::Run => {}
        }
        let result = self.mayor(op, Some(key)).await;
        crate::idempotency::record(self.db, key, &self.fx.now_iso(), &result)?;
        result
    }

    /// A mayor op. `key`: the call's idempotency key, passed on to the rig ops it makes.
    async fn mayor(&self, op: MayorOp, key: Option<&str>) -> ApiResult<Value> {
        let new_id = || self.fx.new_id();
        let town = Town { db: self.db, now: self.fx.now_iso(), new_id: &new_id };
        let store = Store { db: self.db, now: town.now.clone() };
        let town_id = town.get()?.id;
        let limits = TurnLimits::from_lookup(|k| self.fx.var(k));
        match op {
            MayorOp::Send { text } => {
                store.ensure()?;
                let id = store.post(Role::Person, &text)?;
                let d = self.deliver(&town_id).await;
                to_json(MayorSent {
                    message_id: id,
                    agent_id: MAYOR_AGENT_ID.into(),
                    session_status: d.status.into(),
                    detail: d.detail,
                })
            }
            MayorOp::Messages { after, limit } => to_json(
                store.messages(after, limit)?.iter().map(Message::record).collect::<Vec<_>>(),
            ),
            MayorOp::Status => {
                let row = store.row()?;
                let threads: Vec<Value> =
                    store.open_threads()?.iter().map(|t| t.to_json()).collect();
                Ok(json!({
                    "agentId": MAYOR_AGENT_ID, "started": row.is_some_and(|r| r.generation > 0), "runs": row.map_or(0, |r| r.generation),
                    "turn": row.map_or(0, |r| r.turn), "lastMessageId": store.last_id()?, "openThreads": threads,
                }))
            }
            MayorOp::Reply { text } => {
                store.ensure()?;
                Ok(json!({ "kept": true, "id": store.post(Role::Mayor, &text)? }))
            }
            MayorOp::ListRigs => serde_json::to_value(town.rigs()?).map_err(ApiError::internal),
            MayorOp::TownStatus => {
                let mut rigs = Vec::new();
                for rig in town.rigs()? {
                    let filter = BeadFilter { limit: DEFAULT_BEAD_LIMIT, ..Default::default() };
                    let beads: Vec<BeadSummary> =
                        crate::json::decode(rig_op(self.fx, &rig.id, &ListBeads(filter)).await?)
                            .map_err(ApiError::internal)?;
                    let agents: Vec<AgentSummary> = crate::json::decode(
                        rig_op(self.fx, &rig.id, &ListAgents(AgentFilter::default())).await?,
                    )
                    .map_err(ApiError::internal)?;
                    rigs.push((rig, beads, agents));
                }
                Ok(town_status(&rigs))
            }
            MayorOp::Sling { rig_id, sling } => {
                rig_of(&town, &rig_id)?;
                store.count(1, 1, &limits)?;
                let slung = self
                    .on_rig(
                        &store,
                        &rig_id,
                        RigCall::of(&Sling { rig_id: rig_id.clone(), sling })?,
                        key,
                        1,
                        FollowUp::IdentityFromSling,
                    )
                    .await?;
                Ok(slung)
            }
            MayorOp::Convoy { rig_id, convoy } => {
                rig_of(&town, &rig_id)?;
                let n = convoy.beads.len() as i64;
                store.count(n, n, &limits)?;
                let title = convoy.title.clone();
                let created = self
                    .on_rig(
                        &store,
                        &rig_id,
                        RigCall::of(&CreateConvoy { rig_id: rig_id.clone(), convoy })?,
                        key,
                        n,
                        FollowUp::IdentityFromConvoy,
                    )
                    .await?;
                if let Some(id) = created["id"].as_str() {
                    store.open_thread("convoy", &rig_id, id, &title)?;
                }
                Ok(created)
            }
            MayorOp::MailSend { rig_id, mail } => {
                rig_of(&town, &rig_id)?;
                self.fx.rig(&rig_id, &RigCall::of(&SendMail(mail))?, key).await?;
                Ok(json!({ "sent": true }))
            }
            MayorOp::MailCheck => {
                to_json(store.read_inbox()?.iter().map(Message::record).collect::<Vec<_>>())
            }
            MayorOp::Resolve { rig_id, escalation_id, answer } => {
                rig_of(&town, &rig_id)?;
                let (resolved, _) = self
                    .fx
                    .rig(
                        &rig_id,
                        &RigCall::of(&ResolveEscalation {
                            escalation_id: escalation_id.clone(),
                            answer,
                        })?,
                        key,
                    )
                    .await?;
                store.close_thread("escalation", &rig_id, &escalation_id)?;
                Ok(resolved)
            }
            MayorOp::Notice(n) => {
                // A town whose mayor nobody has talked to starts none for its notices.
                if store.row()?.is_none() {
                    return Ok(json!({ "kept": false }));
                }
                let rig_name = match n.kind {
                    NoticeKind::Budget => String::new(),
                    _ => rig_of(&town, &n.rig_id)?.name,
                };
                store.post(Role::Town, &prompt::notice_text(&n, &rig_name))?;
                match n.kind {
                    NoticeKind::Escalation => {
                        store.open_thread("escalation", &n.rig_id, &n.ref_id, &n.title)?
                    }
                    NoticeKind::ConvoyLanded => {
                        store.close_thread("convoy", &n.rig_id, &n.ref_id)?
                    }
                    NoticeKind::Budget => {}
                }
                // Delivered from the alarm: the rig that sent it does not wait for the mayor.
                self.fx.arm_alarm(100).await;
                Ok(json!({ "kept": true }))
            }
        }
    }

    /// A rig op made for the mayor, with its call's key: on failure, or when the RigDO replays
    /// a reply (the work was done by an earlier try), the turn's count is given back; on a new
    /// success the new polecats' identities are recorded (as the Worker does for a person's
    /// sling).
    async fn on_rig(
        &self,
        store: &Store<'_, D>,
        rig_id: &str,
        op: RigCall,
        key: Option<&str>,
        counted: i64,
        follow_up: FollowUp,
    ) -> ApiResult<Value> {
        match self.fx.rig(rig_id, &op, key).await {
            Ok((data, true)) => {
                store.uncount(counted, counted)?;
                Ok(data)
            }
            Ok((data, false)) => {
                for (identity, op) in api::follow_up(follow_up, rig_id, &data) {
                    if let Err(e) = self.fx.identity(&identity, &op).await {
                        self.fx.log_error(&format!("identity update failed: {e}"));
                    }
                }
                Ok(data)
            }
            Err(e) => {
                store.uncount(counted, counted)?;
                Err(e)
            }
        }
    }

    /// The alarm: delivers what is pending; tries again later while something is, at most
    /// [`MAX_TRIES`] times in a row (what is left waits for the next message).
    pub(crate) async fn mayor_alarm(&self) -> ApiResult<()> {
        let new_id = || self.fx.new_id();
        let town = Town { db: self.db, now: self.fx.now_iso(), new_id: &new_id };
        let Ok(t) = town.get() else { return Ok(()) };
        let d = self.deliver(&t.id).await;
        if d.status == "queued" {
            let tries = self.fx.counter(TRIES).await + 1;
            if tries < MAX_TRIES {
                self.fx.set_counter(TRIES, tries).await;
                self.fx.arm_alarm(RETRY_MS).await;
            } else {
                self.fx.log_error(&format!(
                    "mayor: giving up delivering after {tries} tries: {}",
                    d.detail.unwrap_or_default()
                ));
                self.fx.set_counter(TRIES, 0).await;
            }
        } else {
            self.fx.set_counter(TRIES, 0).await;
        }
        Ok(())
    }

    /// Delivers the pending messages (see the module's doc). One at a time per town.
    pub(crate) async fn deliver(&self, town_id: &str) -> Delivery {
        if self.memory.delivering.get() {
            self.memory.again.set(true);
            return Delivery::queued(
                "a delivery to the mayor is under way; this message goes right after it",
            );
        }
        self.memory.delivering.set(true);
        let mut rounds = 0;
        let outcome = loop {
            self.memory.again.set(false);
            rounds += 1;
            let outcome = match self.deliver_once(town_id).await {
                Ok(d) => d,
                Err(e) => Delivery::queued(e.public_message().to_string()),
            };
            if !self.memory.again.get() || outcome.status == "queued" || rounds >= 5 {
                break outcome;
            }
        };
        self.memory.delivering.set(false);
        if outcome.status == "queued" || self.memory.again.get() {
            self.fx.arm_alarm(RETRY_MS).await;
        }
        outcome
    }

    async fn deliver_once(&self, town_id: &str) -> ApiResult<Delivery> {
        let store = Store { db: self.db, now: self.fx.now_iso() };
        let mut bytes = 0;
        let pending: Vec<Message> = store
            .pending()?
            .into_iter()
            .enumerate()
            .take_while(|(i, m)| {
                bytes += m.text.len();
                *i == 0 || bytes <= MAX_DELIVERY_BYTES
            })
            .map(|(_, m)| m)
            .collect();
        let Some(first) = pending.first().map(|m| m.id) else {
            return Ok(Delivery { status: "active", detail: None });
        };
        let ids: Vec<i64> = pending.iter().map(|m| m.id).collect();
        let settings = Settings::from_lookup(|k| self.fx.var(k));
        let (Some(model), Some(secret)) =
            (self.fx.var("GASTOWN_MODEL"), self.fx.var("GASTOWN_JWT_SECRET"))
        else {
            return Ok(Delivery::queued(
                "GASTOWN_MODEL and GASTOWN_JWT_SECRET must be set to run the mayor",
            ));
        };
        let now_ms = self.fx.now_ms();
        let status_path = format!("/agents/{MAYOR_AGENT_ID}/status");
        let (status, body) =
            self.fx.container(&ShardRef::first(town_id), Method::Get, &status_path, None).await?;
        match (status, body["status"].as_str()) {
            (200, Some("running")) => {
                let row = store.ensure()?;
                if crate::scheduler::token_due(
                    row.token_issued_ms.unwrap_or(0),
                    now_ms,
                    settings.token_ttl_secs,
                ) {
                    let token = prompt::token(
                        town_id,
                        &secret,
                        (now_ms / 1000) as u64,
                        settings.token_ttl_secs,
                    );
                    let path = format!("/agents/{MAYOR_AGENT_ID}/credentials");
                    if let Ok((200, _)) = self
                        .fx
                        .container(
                            &ShardRef::first(town_id),
                            Method::Post,
                            &path,
                            Some(&json!({ "token": token })),
                        )
                        .await
                    {
                        store.token_issued(now_ms)?;
                    }
                }
                let path = format!("/agents/{MAYOR_AGENT_ID}/message");
                let (sent, reply) = self
                    .fx
                    .container(
                        &ShardRef::first(town_id),
                        Method::Post,
                        &path,
                        Some(&json!({ "prompt": prompt::delivery(&pending) })),
                    )
                    .await?;
                match sent {
                    200..=299 => {
                        store.delivered(&ids)?;
                        return Ok(Delivery { status: "active", detail: None });
                    }
                    // It stopped in between: start it.
                    404 | 409 => {}
                    _ => {
                        return Ok(Delivery::queued(format!(
                            "the mayor did not take the message ({sent}): {}",
                            reply["error"].as_str().unwrap_or("no message")
                        )))
                    }
                }
            }
            (200, Some("starting")) => {
                return Ok(Delivery::queued(
                    "the mayor is starting; the message follows once it runs",
                ))
            }
            (200, Some("stopping")) => {
                return Ok(Delivery::queued(
                    "the mayor's last run is stopping; a new one starts next",
                ))
            }
            (200 | 404, _) => {}
            (other, _) => {
                return Ok(Delivery::queued(format!(
                    "the town's container answered {other}: {}",
                    body["error"].as_str().unwrap_or("no message")
                )))
            }
        }
        // Not running: a new run, with the thread so far and what is pending.
        let history = store.thread_before(first)?;
        let open = store.open_threads()?;
        let generation = store.ensure()?.generation + 1;
        let token =
            prompt::token(town_id, &secret, (now_ms / 1000) as u64, settings.token_ttl_secs);
        let request = prompt::start_request(
            town_id,
            &model,
            prompt::resume(&history, &open, &pending),
            token,
            generation,
        );
        let body = serde_json::to_value(&request).map_err(ApiError::internal)?;
        let (started, reply) = self
            .fx
            .container(&ShardRef::first(town_id), Method::Post, "/agents/start", Some(&body))
            .await?;
        match started {
            200..=299 => {
                store.started(generation, now_ms)?;
                store.delivered(&ids)?;
                Ok(Delivery { status: "starting", detail: None })
            }
            _ => Ok(Delivery::queued(format!(
                "the mayor could not be started ({started}): {}",
                reply["error"].as_str().unwrap_or("no message")
            ))),
        }
    }
}

/// The rig, if it is one of this town's: a 403 as the reference's mayor routes answer.
fn rig_of<D: crate::db::Db>(town: &Town<'_, D>, rig_id: &str) -> ApiResult<RigRecord> {
    town.rigs()?
        .into_iter()
        .find(|r| r.id == rig_id)
        .ok_or_else(|| ApiError::Forbidden("Rig not found in this town".into()))
}
