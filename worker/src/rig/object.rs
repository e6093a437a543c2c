//! The RigDO's handler over its storage and [`Effects`]: each op (with its idempotency key),
//! then the scheduler's alarm if hooked work may wait, then the mayor's notices; and the
//! scheduler's pass from the alarm: dispatch hooked work to the town's container, witness the
//! dispatched agents, refresh their credentials, remind idle ones, run the refinery's merges.
//! The alarm is armed only while there is hooked work.

use serde_json::Value;
use shared_types::{MergeState, MergeStatus};

use super::op::RigCall;
use super::Rig;
use crate::container::NO_RUNTIME;
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};
use crate::mayor::routes::MayorCall;
use crate::mayor::MayorOp;
use crate::model::{Agent, ReviewEntry, RigConfig};
use crate::refinery;
use crate::routes::Method;
use crate::scheduler::{self, DispatchContext, Settings, Witness};
use crate::shards::{self, PlaceRig, ShardRef};
use crate::town::op::TownCall;

mod pr_review;

/// Delay of the first scheduler pass after work is hooked: at once, but after the op's own
/// answer, so slings sent together (a script slinging in a loop) still tend to share a pass.
/// Each millisecond here is a millisecond of every dispatch.
pub(crate) const FIRST_PASS_MS: u64 = 10;
/// Starts sent to the container at once in one pass.
const DISPATCH_CONCURRENCY: usize = 8;
/// The rig's last placement (shard + 1; 0: never placed), kept for a pass whose ask fails.
const SHARD: &str = "shard";
/// A shard the last start could not reach (shard + 1; 0: none), told to the town on the next ask.
const UNREACHABLE_SHARD: &str = "shard_unreachable";

pub struct RigObject<'a, D: Db, E: Effects> {
    pub db: &'a D,
    pub fx: &'a E,
}

impl<D: Db, E: Effects> RigObject<'_, D, E> {
    fn with_rig<T>(&self, f: impl FnOnce(&Rig<'_, D>) -> ApiResult<T>) -> ApiResult<T> {
        let new_id = || self.fx.new_id();
        f(&Rig { db: self.db, now: self.fx.now_iso(), new_id: &new_id })
    }

    /// Makes the alarm fire within `after_ms`: set when none is pending or the pending one fires
    /// later (`scheduler::alarm_needed`). `fired_at`: called at the end of the pass that alarm
    /// started; an alarm set for then or before is that one, not a pending one (one set by an
    /// op during the pass is later, and is kept when it is sooner).
    async fn arm(&self, after_ms: u64, fired_at: Option<i64>) {
        let want = self.fx.now_ms() + after_ms as i64;
        let pending = self.fx.alarm_at().await.filter(|at| fired_at.is_none_or(|f| *at > f));
        if scheduler::alarm_needed(pending, want) {
            self.fx.set_alarm(after_ms).await;
        }
    }

    /// Remembers when the agent's current credential was issued (DO storage, next to the rig).
    async fn token_issued(&self, agent_id: &str, ms: i64) {
        self.fx.set_counter(&format!("token_issued:{agent_id}"), ms).await;
    }

    /// Replaces a running agent's credential once half of its lifetime has passed (the reference's
    /// 8 h tokens expired under long-running agents). Failures wait for the next pass.
    #[allow(clippy::too_many_arguments)]
    async fn refresh_token(
        &self,
        agent: &Agent,
        dispatched_ms: i64,
        at: &ShardRef,
        config: &RigConfig,
        model: &str,
        secret: &str,
        settings: &Settings,
    ) {
        let key = format!("token_issued:{}", agent.id);
        let issued = match self.fx.counter(&key).await {
            0 => dispatched_ms,
            ms => ms,
        };
        let now_ms = self.fx.now_ms();
        if !scheduler::token_due(issued, now_ms, settings.token_ttl_secs) {
            return;
        }
        let ctx = DispatchContext {
            config,
            model,
            jwt_secret: secret,
            now_secs: (now_ms / 1000) as u64,
            settings,
        };
        let body = serde_json::json!({ "token": scheduler::agent_token(agent, &ctx) });
        let path = format!("/agents/{}/credentials", agent.id);
        match self.fx.container(at, Method::Post, &path, Some(&body)).await {
            Ok((200, _)) => self.token_issued(&agent.id, now_ms).await,
            Ok((status, _)) => self.fx.log_error(&format!(
                "scheduler: credential refresh for {} refused ({status})",
                agent.id
            )),
            Err(e) => self
                .fx
                .log_error(&format!("scheduler: credential refresh for {} failed: {e}", agent.id)),
        }
    }

    /// Where the rig's agents run. The town places the rig when it first has work and may
    /// move it while nothing of it runs there (no agent, no merge); a shard the last start
    /// could not reach is reported with the ask. Unanswered, the last placement holds. `due`:
    /// the pass's due dispatches, which with the running runs are what the rig wants at once.
    async fn shard(&self, config: &RigConfig, due: usize) -> ShardRef {
        let town = &config.town_id;
        let wants = self.with_rig(|r| {
            let running = r.dispatched()?.len();
            let idle = running == 0 && r.running_review()?.is_none();
            Ok::<_, ApiError>((idle, running + due))
        });
        let (idle, demand) = wants.unwrap_or((false, 1));
        let unreachable = self.fx.counter(UNREACHABLE_SHARD).await;
        let op = PlaceRig {
            rig_id: config.rig_id.clone(),
            movable: idle,
            demand: u32::try_from(demand).unwrap_or(u32::MAX),
            unreachable: u32::try_from(unreachable - 1).ok(),
        };
        match shards::place_rig(self.fx, town, &op).await {
            Ok(at) => {
                self.fx.set_counter(SHARD, i64::from(at.shard) + 1).await;
                if unreachable > 0 {
                    self.fx.set_counter(UNREACHABLE_SHARD, 0).await;
                }
                at
            }
            Err(e) => {
                self.fx.log_error(&format!("scheduler: the rig's shard could not be asked: {e}"));
                let last = u32::try_from(self.fx.counter(SHARD).await - 1).unwrap_or(0);
                ShardRef::new(town, last)
            }
        }
    }

    /// One scheduler pass. Returns whether to keep the alarm armed.
    pub(crate) async fn schedule(&self) -> ApiResult<bool> {
        let Ok(config) = self.with_rig(|r| r.config()) else { return Ok(false) };
        let settings = Settings::from_lookup(|k| self.fx.var(k));
        let (Some(model), Some(secret)) =
            (self.fx.var("GASTOWN_MODEL"), self.fx.var("GASTOWN_JWT_SECRET"))
        else {
            self.fx.log_error(
                "scheduler: GASTOWN_MODEL and GASTOWN_JWT_SECRET must be set to dispatch agents",
            );
            return Ok(false);
        };
        // Beads back from the refinery go to their polecat once it is free.
        self.with_rig(|r| r.hook_rework())?;
        let dues = self.with_rig(|r| r.due_dispatches())?;
        let shard = self.shard(&config, dues.len()).await;
        let at = &shard;

        // Every due bead of the pass is dispatched at once (bounded): the container answers a
        // start as soon as the run is claimed, so a burst is not served one at a time.
        let mut startable = Vec::new();
        for due in dues {
            if let Some(reason) = scheduler::exhausted(&due, &settings) {
                self.with_rig(|r| r.give_up(&due.agent, &due.bead, &reason))?;
            } else {
                startable.push(due);
            }
        }
        for batch in startable.chunks(DISPATCH_CONCURRENCY) {
            let calls = batch.iter().map(|due| async {
                let now_ms = self.fx.now_ms();
                let ctx = DispatchContext {
                    config: &config,
                    model: &model,
                    jwt_secret: &secret,
                    now_secs: (now_ms / 1000) as u64,
                    settings: &settings,
                };
                let body = serde_json::to_value(scheduler::start_request(due, &ctx))
                    .map_err(ApiError::internal)?;
                Ok::<_, ApiError>((
                    now_ms,
                    self.fx.container(at, Method::Post, "/agents/start", Some(&body)).await,
                ))
            });
            for (due, outcome) in batch.iter().zip(futures_util::future::join_all(calls).await) {
                let agent = &due.agent;
                let (now_ms, answer) = outcome?;
                match answer {
                    Ok((status @ 200..=299, reply)) => {
                        let boot = reply["bootId"].as_str();
                        self.with_rig(|r| r.mark_dispatched(agent, now_ms, status != 200, boot))?;
                        self.token_issued(&agent.id, now_ms).await;
                    }
                    Ok((503, reply))
                        if reply["error"].as_str().is_some_and(|e| e.starts_with(NO_RUNTIME)) =>
                    {
                        // Nowhere to run agents: stop until new work is hooked.
                        return Ok(false);
                    }
                    Ok((503, _)) => {
                        // The shard did not answer: the town is told on the next ask, and
                        // the rig may move while nothing of it runs there.
                        self.fx.set_counter(UNREACHABLE_SHARD, i64::from(at.shard) + 1).await;
                        let reason = format!("shard {} of the town did not answer", at.shard);
                        self.with_rig(|r| r.mark_dispatch_failed(agent, &reason))?;
                    }
                    Ok((429, reply)) => {
                        // The container is full: the bead waits, no attempt is spent.
                        let reason = reply["error"]
                            .as_str()
                            .unwrap_or("the town's container is at capacity");
                        self.with_rig(|r| r.mark_queued(agent, reason))?;
                    }
                    Ok((status, reply)) => {
                        let reason = format!(
                            "start refused ({status}): {}",
                            reply["error"].as_str().unwrap_or("no message")
                        );
                        self.with_rig(|r| r.mark_dispatch_failed(agent, &reason))?;
                    }
                    Err(e) => self.with_rig(|r| r.mark_dispatch_failed(agent, &e.to_string()))?,
                }
            }
        }

        for (agent, run) in self.with_rig(|r| r.dispatched())? {
            let path = format!("/agents/{}/status", agent.id);
            let (status, body) = match self.fx.container(at, Method::Get, &path, None).await {
                Ok((s, b)) => (Some(s), b),
                Err(_) => (None, Value::Null),
            };
            let witnessed =
                scheduler::witness(status, &body, &run, self.fx.now_ms(), settings.grace_ms);
            let unanswered = format!("unanswered_since:{}", agent.id);
            if witnessed != Witness::Unanswered && self.fx.counter(&unanswered).await != 0 {
                self.fx.set_counter(&unanswered, 0).await;
            }
            match witnessed {
                Witness::Unanswered => {
                    if let Some(secs) = self.shard_gone(at, &unanswered, &settings).await {
                        // The bead is dispatched again, wherever the rig runs by then.
                        let reason = format!(
                            "shard {} of the town did not answer for {secs} s: the run was lost with it",
                            at.shard
                        );
                        self.with_rig(|r| r.mark_exited(&agent, run.dispatched_ms, &reason, true))?;
                    }
                }
                Witness::Exited(reason) => {
                    self.with_rig(|r| r.mark_exited(&agent, run.dispatched_ms, &reason, true))?
                }
                Witness::WoundDown(reason) => {
                    self.with_rig(|r| r.mark_exited(&agent, run.dispatched_ms, &reason, false))?
                }
                Witness::Fine if body["status"] == "running" => {
                    self.refresh_token(
                        &agent,
                        run.dispatched_ms,
                        at,
                        &config,
                        &model,
                        &secret,
                        &settings,
                    )
                    .await
                }
                _ => {}
            }
        }

        self.remind(at, &settings).await?;
        self.refine(at, &config, &settings).await?;
        self.flush_notices().await;
        self.with_rig(|r| r.has_work())
    }

    /// Sends the rig's pending notices to its town's mayor (`rig/notices.rs`), oldest first,
    /// forgetting each the TownDO took (or refused for good, a 4xx); stops at the first that
    /// could not be sent, which waits for the next op or pass.
    pub(crate) async fn flush_notices(&self) {
        let Ok(pending) = self.with_rig(|r| r.pending_notices()) else { return };
        for (id, town, notice) in pending {
            let sent = match TownCall::of(&MayorCall(MayorOp::Notice(notice))) {
                Ok(call) => self.fx.town(&town, &call).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(_) => {}
                Err(e) if (400..500).contains(&e.status()) => {
                    self.fx.log_error(&format!("mayor notice {id} refused, dropped: {e}"))
                }
                Err(e) => {
                    self.fx.log_error(&format!("mayor notice {id} not sent yet: {e}"));
                    return;
                }
            }
            if let Err(e) = self.with_rig(|r| r.forget_notice(id)) {
                self.fx.log_error(&format!("mayor notice {id} sent but not forgotten: {e}"));
                return;
            }
        }
    }

    /// Reminders reach the agents' sessions as messages (mail nobody reads helps no one): GUPP
    /// for agents idle on hooked work, and a "you have mail" note for unread mail, each rate
    /// limited. A reminder the container cannot deliver is kept as mail.
    async fn remind(&self, at: &ShardRef, settings: &Settings) -> ApiResult<()> {
        let now_ms = self.fx.now_ms();
        for agent in self.with_rig(|r| r.gupp_due(now_ms, settings.gupp_after_ms))? {
            let delivered = self.deliver(at, &agent.id, scheduler::GUPP_BODY).await;
            self.with_rig(|r| r.send_gupp(&agent, now_ms, delivered))?;
        }
        for (agent, unread) in
            self.with_rig(|r| r.mail_nudges_due(now_ms, settings.nudge_every_ms))?
        {
            if self.deliver(at, &agent.id, &scheduler::mail_nudge(unread)).await {
                self.with_rig(|r| r.mark_nudged(&agent, now_ms, unread))?;
            }
        }
        Ok(())
    }

    /// Sends `text` into the agent's session; whether the container took it.
    async fn deliver(&self, at: &ShardRef, agent_id: &str, text: &str) -> bool {
        let path = format!("/agents/{agent_id}/message");
        matches!(
            self.fx
                .container(at, Method::Post, &path, Some(&serde_json::json!({ "prompt": text })))
                .await,
            Ok((200, _))
        )
    }

    /// The refinery's step in a pass: one merge at a time per rig. A running merge is polled and
    /// its outcome applied; a merge the container does not know (it restarted, or the request
    /// was lost) is requested again; then the next pending entry is started.
    async fn refine(
        &self,
        at: &ShardRef,
        config: &RigConfig,
        settings: &Settings,
    ) -> ApiResult<()> {
        if config.merge.merge_strategy == refinery::MergeStrategy::Pr {
            return self.review_by_pull_request(at, config).await;
        }
        if let Some(entry) = self.with_rig(|r| r.running_review())? {
            let path = format!("/rigs/{}/merges/{}", config.rig_id, entry.id);
            let polled = self.fx.container(at, Method::Get, &path, None).await;
            let unanswered = format!("merge_unanswered_since:{}", entry.id);
            if matches!(polled, Ok((503, _)) | Err(_)) {
                if self.merge_lost(at, &entry, &unanswered, settings).await? {
                    // Nothing of the rig runs now: the next pass may move it, and starts the
                    // merge again there.
                    return Ok(());
                }
            } else if self.fx.counter(&unanswered).await != 0 {
                self.fx.set_counter(&unanswered, 0).await;
            }
            match polled {
                Ok((200, body)) => match crate::json::decode::<MergeStatus>(body) {
                    Ok(status) if status.state.is_final() => {
                        self.apply_merge(at, config, &entry, &status).await?
                    }
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        self.fx.log_error(&format!(
                            "refinery: undecodable merge status for {}: {e}",
                            entry.id
                        ));
                        return Ok(());
                    }
                },
                Ok((404, _)) => return self.request_merge(at, config, &entry).await,
                Ok((status, _)) => {
                    self.fx.log_error(&format!(
                        "refinery: merge status for {} answered {status}",
                        entry.id
                    ));
                    return Ok(());
                }
                Err(e) => {
                    self.fx
                        .log_error(&format!("refinery: merge status for {} failed: {e}", entry.id));
                    return Ok(());
                }
            }
        }
        if let Some(entry) = self.with_rig(|r| r.next_review())? {
            if self.with_rig(|r| r.start_review(&entry))? {
                self.request_merge(at, config, &entry).await?;
            }
        }
        Ok(())
    }

    /// One more poll the shard did not answer, for what `key` names (a run or a merge): `None`
    /// while the first unanswered one (kept under `key`) is within the grace period; past it,
    /// the seconds it lasted, and the shard is taken for gone: the town hears of it on the next
    /// ask, so the rig may move off it.
    async fn shard_gone(&self, at: &ShardRef, key: &str, settings: &Settings) -> Option<i64> {
        let now = self.fx.now_ms();
        let since = match self.fx.counter(key).await {
            0 => {
                self.fx.set_counter(key, now).await;
                now
            }
            since => since,
        };
        if !scheduler::unanswered_too_long(since, now, settings.grace_ms) {
            return None;
        }
        self.fx.set_counter(key, 0).await;
        self.fx.set_counter(UNREACHABLE_SHARD, i64::from(at.shard) + 1).await;
        Some((now - since) / 1000)
    }

    /// A merge lost with its shard ([`Self::shard_gone`]) goes back to pending, to be started
    /// again wherever the rig runs next. Returns whether it was lost now.
    async fn merge_lost(
        &self,
        at: &ShardRef,
        entry: &ReviewEntry,
        key: &str,
        settings: &Settings,
    ) -> ApiResult<bool> {
        if self.shard_gone(at, key, settings).await.is_none() {
            return Ok(false);
        }
        let requeued = self.with_rig(|r| r.requeue_review(&entry.id))?;
        if requeued {
            self.fx.log_info(&format!(
                "refinery: the merge of {} was lost with shard {}: started again",
                entry.id, at.shard
            ));
        }
        Ok(requeued)
    }

    /// Applies a finished merge to its entry (`rig/refinery.rs`). When the bead escalates, its
    /// branch will not be merged: the worktree in the container goes (best effort).
    async fn apply_merge(
        &self,
        at: &ShardRef,
        config: &RigConfig,
        entry: &ReviewEntry,
        status: &MergeStatus,
    ) -> ApiResult<()> {
        let verdict = self.with_rig(|r| r.finish_review(&entry.id, status))?;
        // The container removes what it merged itself; a pull request is merged elsewhere.
        let pr = config.merge.merge_strategy == refinery::MergeStrategy::Pr;
        let done_with_branch = match verdict {
            Some(refinery::Verdict::Escalate { .. } | refinery::Verdict::Returned { .. }) => true,
            Some(refinery::Verdict::Merged { .. }) => pr,
            _ => false,
        };
        if done_with_branch {
            self.remove_worktree(at, config, &entry.branch).await;
        }
        Ok(())
    }

    /// Removes a branch's checkout in the container (best effort: logged when it fails).
    async fn remove_worktree(&self, at: &ShardRef, config: &RigConfig, branch: &str) {
        let path = format!("/rigs/{}/worktrees/remove", config.rig_id);
        let body = serde_json::json!({ "branch": branch });
        if let Err(e) = self.fx.container(at, Method::Post, &path, Some(&body)).await {
            self.fx.log_error(&format!("refinery: could not remove the worktree of {branch}: {e}"));
        }
    }

    /// Asks the container to merge a running entry. A request the container refuses as invalid
    /// fails the entry (it would fail every time); other failures are retried next pass.
    async fn request_merge(
        &self,
        at: &ShardRef,
        config: &RigConfig,
        entry: &ReviewEntry,
    ) -> ApiResult<()> {
        let bead = self.with_rig(|r| r.bead(&entry.bead_id))?;
        let request = refinery::merge_request(&entry.id, &entry.branch, &bead, config);
        let body = serde_json::to_value(&request).map_err(ApiError::internal)?;
        let path = format!("/rigs/{}/merges", config.rig_id);
        match self.fx.container(at, Method::Post, &path, Some(&body)).await {
            Ok((200 | 202, _)) => {}
            Ok((400, reply)) => {
                let detail = format!(
                    "the container refused the merge: {}",
                    reply["error"].as_str().unwrap_or("invalid request")
                );
                let failed = MergeStatus {
                    review_id: entry.id.clone(),
                    state: MergeState::Failed,
                    commit: None,
                    detail: Some(detail),
                    output: None,
                };
                self.apply_merge(at, config, entry, &failed).await?;
            }
            Ok((status, reply)) => self.fx.log_error(&format!(
                "refinery: merge of {} not started ({status}): {}",
                entry.id, reply["error"]
            )),
            Err(e) => {
                self.fx.log_error(&format!("refinery: merge of {} not started: {e}", entry.id))
            }
        }
        Ok(())
    }
}

impl<D: Db, E: Effects> RigObject<'_, D, E> {
    /// Runs `call` once per `key`; `.1`: the reply is a replay of the one kept for `key`.
    pub async fn handle(&self, call: &RigCall, key: Option<&str>) -> ApiResult<(Value, bool)> {
        let (result, replayed) = self.with_rig(|r| Ok(r.handle_once(key, call)))?;
        let ran = result?;
        if ran.arms_scheduler && self.with_rig(|r| Ok(r.has_work()? && r.config().is_ok()))? {
            self.arm(FIRST_PASS_MS, None).await;
        }
        if ran.notifies {
            self.flush_notices().await;
        }
        Ok((ran.data, replayed))
    }

    /// The alarm: one scheduler pass, then the next while there is work; never faster than a
    /// tick after a failed pass.
    pub async fn alarm(&self) {
        let fired_at = self.fx.now_ms();
        let again = match self.schedule().await {
            Ok(again) => again,
            Err(e) => {
                self.fx.log_error(&format!("scheduler pass failed: {e}"));
                true
            }
        };
        if again {
            let tick = Settings::from_lookup(|k| self.fx.var(k)).tick_ms;
            self.arm(tick as u64, Some(fired_at)).await;
        }
    }
}
