//! The TownContainer's side of the town's budgets (`crate::spending` decides): reading the
//! town's limits, telling the mayor at 80% of a daily budget, and carrying out what usage past
//! a budget calls for as each batch of usage arrives. Written against [`Effects`] and the
//! object's events [`Db`], so it runs natively too (`budgets_tests.rs`).
//!
//! What it does, each at most so often, so a stream of usage never repeats an action:
//! - a mayor notice per day and budget, kept once the TownDO kept it;
//! - a bead past `max_tokens_per_bead`: the RigDO's `stop_over_budget` once per bead, then
//!   `POST /agents/:id/wind-down` (for that bead only) to the agent that held it;
//! - a daily budget used up: every starting or running polecat wound down, at most every
//!   [`WIND_DOWN_EVERY_MS`] (its usage keeps arriving while the agents wrap up).

use serde_json::Value;
use shared_types::WindDownRequest;
use shared_types::{AgentEventBatch, AgentEventKind, AgentList, AgentRole, ProcessStatus};

use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};
use crate::mayor::routes::{MayorCall, MayorOp, Notice, NoticeKind};
use crate::rig::budget::StopOverBudget;
use crate::rig::op::RigCall;
use crate::routes::Method;
use crate::shards::{self, ShardRef};
use crate::spending::{self, GetLimits, TownLimits};
use crate::town::op::TownCall;

/// Least time between two wind-downs of the whole town for a used-up daily budget.
pub const WIND_DOWN_EVERY_MS: i64 = 10_000;

/// The town's caps, budgets and time zone, from its TownDO. A town the TownDO does not know
/// (the container API used directly, as the reference allows) has none.
pub async fn limits<E: Effects>(fx: &E, town: &str) -> ApiResult<TownLimits> {
    match fx.town(town, &TownCall::of(&GetLimits)?).await {
        Ok(v) => Ok(crate::json::decode(v).unwrap_or_default()),
        Err(ApiError::NotFound(_)) => Ok(TownLimits::default()),
        Err(e) => Err(e),
    }
}

/// Tells the town's mayor, once a day per budget, that the town's `day` reached 80% of a daily
/// budget. A notice that could not be sent or kept (a town whose mayor nobody has talked to) is
/// tried again at the next check.
pub async fn tell_mayor<E: Effects>(
    fx: &E,
    town: &str,
    day: &str,
    limits: &TownLimits,
    tokens: u64,
    cost: f64,
) {
    for (budget, text) in spending::budget_warnings(limits, tokens, cost) {
        let key = format!("budget-notice:{day}:{budget}");
        if fx.counter(&key).await != 0 {
            continue;
        }
        let notice = Notice {
            rig_id: String::new(),
            kind: NoticeKind::Budget,
            ref_id: format!("{day}:{budget}"),
            title: text,
            detail: Value::Null,
        };
        let Ok(op) = TownCall::of(&MayorCall(MayorOp::Notice(notice))) else { continue };
        match fx.town(town, &op).await {
            Ok(kept) if kept["kept"] == true => fx.set_counter(&key, 1).await,
            Ok(_) => {}
            Err(e) => fx.log_error(&format!("town container: budget notice not sent: {e}")),
        }
    }
}

/// After a batch of events is kept: when it brought usage and the town has budgets, the
/// mayor's notices and the stops the budgets call for (see the module). Failures are logged and
/// tried again with the next usage; they never refuse the batch, which is already kept.
pub async fn after_usage<D: Db, E: Effects>(db: &D, fx: &E, town: &str, batch: &AgentEventBatch) {
    let usage: Vec<_> =
        batch.events.iter().filter(|r| r.event.kind == AgentEventKind::Usage).collect();
    if usage.is_empty() {
        return;
    }
    let limits = match limits(fx, town).await {
        Ok(limits) => limits,
        Err(e) => return fx.log_error(&format!("town container: budgets not checked: {e}")),
    };
    if limits.max_tokens_per_day.is_none()
        && limits.max_cost_usd_per_day.is_none()
        && limits.max_tokens_per_bead.is_none()
    {
        return;
    }
    let day = limits.day_at(fx.now_ms());
    let (tokens, cost) = match crate::usage::day_total(db, &day, limits.offset_minutes()) {
        Ok(used) => used,
        Err(e) => return fx.log_error(&format!("town container: the day's usage: {e}")),
    };
    tell_mayor(fx, town, &day, &limits, tokens, cost).await;
    // Each bead the batch's usage was for, with its rig and its tokens over all days.
    let mut beads: Vec<(String, String, u64)> = Vec::new();
    for r in &usage {
        let Some(bead) = r.event.data["beadId"].as_str() else { continue };
        if !beads.iter().any(|(b, _, _)| b == bead) {
            let used = crate::usage::bead_tokens(db, bead).unwrap_or(0);
            beads.push((bead.to_string(), r.rig_id.clone(), used));
        }
    }
    let totals: Vec<(String, u64)> = beads.iter().map(|(b, _, n)| (b.clone(), *n)).collect();
    let over = spending::over_budget(&limits, tokens, cost, &totals);
    let grace_ms = fx.var("BUDGET_WIND_DOWN_MS").and_then(|v| v.parse::<u64>().ok());
    for (bead, reason) in over.beads {
        let key = format!("bead-over-budget:{bead}");
        let Some((_, rig, _)) = beads.iter().find(|(b, _, _)| *b == bead) else { continue };
        if fx.counter(&key).await != 0 {
            continue;
        }
        let stop = StopOverBudget { bead_id: bead.clone(), reason: reason.clone() };
        let Ok(op) = RigCall::of(&stop) else { continue };
        match fx.rig(rig, &op, None).await {
            Ok((stopped, _)) => {
                fx.set_counter(&key, 1).await;
                // The agent that held the bead; none when the bead had already ended.
                if let Some(agent) = stopped["agent_id"].as_str() {
                    let at = rig_shard(fx, town, rig).await;
                    wind_down(fx, &at, agent, &reason, grace_ms, Some(&bead)).await;
                }
            }
            Err(e) => fx.log_error(&format!("town container: bead {bead} not stopped: {e}")),
        }
    }
    let Some(reason) = over.day else { return };
    let key = format!("budget-wind-down:{day}");
    let now = fx.now_ms();
    if now - fx.counter(&key).await < WIND_DOWN_EVERY_MS {
        return;
    }
    fx.set_counter(&key, now).await;
    // The budget is the town's: every shard's agents are wound down.
    for at in shards::in_use(fx, town).await {
        let agents = match fx.container(&at, Method::Get, "/agents", None).await {
            Ok((200, list)) => crate::json::decode::<AgentList>(list).map(|l| l.agents),
            Ok((status, _)) => {
                fx.log_error(&format!("town container: agents not listed ({status})"));
                continue;
            }
            Err(e) => {
                fx.log_error(&format!("town container: agents not listed: {e}"));
                continue;
            }
        };
        let Ok(agents) = agents else {
            fx.log_error("town container: the control server's agent list is malformed");
            continue;
        };
        for a in agents {
            let working = matches!(a.status, ProcessStatus::Starting | ProcessStatus::Running);
            if working && a.role != AgentRole::Mayor {
                wind_down(fx, &at, &a.agent_id, &reason, grace_ms, None).await;
            }
        }
    }
}

/// The shard the rig's agents run on (the first when it cannot be told).
async fn rig_shard<E: Effects>(fx: &E, town: &str, rig: &str) -> ShardRef {
    let op = shards::ShardOfRig { rig_id: rig.to_string() };
    let answer = match TownCall::of(&op) {
        Ok(call) => fx.town(town, &call).await,
        Err(e) => Err(e),
    };
    answer.and_then(|a| shards::shard_answer(town, a)).unwrap_or_else(|e| {
        fx.log_error(&format!("town container: rig {rig}'s shard unknown: {e}"));
        ShardRef::first(town)
    })
}

/// Asks the control server to wind the agent's run down, only while it works `bead` when one
/// is named.
async fn wind_down<E: Effects>(
    fx: &E,
    at: &ShardRef,
    agent: &str,
    reason: &str,
    grace_ms: Option<u64>,
    bead: Option<&str>,
) {
    let request =
        WindDownRequest { reason: reason.to_string(), grace_ms, bead_id: bead.map(str::to_string) };
    let Ok(body) = serde_json::to_value(&request) else { return };
    let path = format!("/agents/{agent}/wind-down");
    match fx.container(at, Method::Post, &path, Some(&body)).await {
        Ok((status, _)) if status < 300 => {}
        Ok((status, reply)) => fx.log_error(&format!(
            "town container: {agent} not wound down ({status}): {}",
            reply["error"].as_str().unwrap_or("no message")
        )),
        Err(e) => fx.log_error(&format!("town container: {agent} not wound down: {e}")),
    }
}

#[cfg(test)]
#[path = "budgets_tests.rs"]
mod tests;
