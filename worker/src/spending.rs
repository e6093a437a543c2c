//! The town's spending guard: caps on running agents, on dispatches per hour, and daily
//! budgets of tokens and money.
//!
//! The caps are the town's (`PUT /api/towns/:town/limits`, kept in the TownDO's config). Every
//! start passes through the town's TownContainer, which enforces them on the way:
//! - dispatches per hour against its ledger of the starts it let through ([`admit`]);
//! - the day's budgets (the town's day: UTC or its `time_zone`) against the usage it keeps ([`within_budget`], `crate::usage`);
//! - running agents by handing the cap to the control server (`maxConcurrentAgents`), which
//!   counts its active runs under the lock that claims new ones, so a burst cannot overshoot.
//!
//! Over a cap the start is a 429 whose message names the cap; the RigDO's scheduler keeps the
//! bead queued with that reason (a `queued` event) and spends no dispatch attempt. The mayor's
//! starts take the same path.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{self, Incoming, Plan};
use crate::db::Db;
use crate::effects::Effects;
use crate::error::ApiResult;
use crate::requests::{Issues, Shape, Validate};
use crate::rig::op::to_json;
use crate::routes::{Endpoint, Rule};
use crate::town::object::TownObject;
use crate::town::op::{town_ops, TownOp};

/// The town's caps (internal).
pub const ROUTES: &[Endpoint] = &[
    Endpoint::get("/api/towns/:townId/limits", Rule::Internal, get),
    Endpoint::put("/api/towns/:townId/limits", Rule::Internal, set),
];

fn get(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &GetLimits, 200)
}

fn set(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &SetLimits(req.body()?), 200)
}

/// The largest value a cap takes (a typo guard, not a policy).
pub const MAX_CAP: u32 = 10_000;
const HOUR_MS: i64 = 3_600_000;

/// A town's caps; `None` is no cap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TownLimits {
    #[serde(default)]
    pub max_concurrent_agents: Option<u32>,
    #[serde(default)]
    pub max_dispatches_per_hour: Option<u32>,
    /// How many containers (shards) the town may run, from 1 (the default) to
    /// [`crate::shards::MAX_SHARDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shards: Option<u32>,
    /// Tokens of every kind the town's agents may use in a day (the town's day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_day: Option<u64>,
    /// USD the town's agents may spend in a day (the town's day), counting the costs known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd_per_day: Option<f64>,
    /// Tokens of every kind one bead's runs may use, all days together: past it the bead's
    /// agent is wound down and the bead fails with an escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_bead: Option<u64>,
    /// Where the town's days begin and end, for its daily budgets and its usage by day: `UTC`
    /// (the default) or a fixed offset from UTC, `+HH:MM` or `-HH:MM` (daylight saving is not
    /// followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl TownLimits {
    /// The town's offset from UTC, in minutes (0 without a time zone or with a bad one).
    pub fn offset_minutes(&self) -> i32 {
        self.time_zone.as_deref().and_then(offset_minutes).unwrap_or(0)
    }

    /// The town's time zone as its messages name it: `UTC` or `UTC+02:00`.
    pub fn zone_label(&self) -> String {
        match self.time_zone.as_deref().filter(|z| offset_minutes(z).is_some_and(|m| m != 0)) {
            Some(z) => format!("UTC{z}"),
            None => "UTC".into(),
        }
    }

    /// The town's day (`YYYY-MM-DD`) at `now_ms`.
    pub fn day_at(&self, now_ms: i64) -> String {
        let local =
            crate::time::iso_from_millis(now_ms + i64::from(self.offset_minutes()) * 60_000);
        local.get(..10).unwrap_or_default().to_string()
    }
}

/// `UTC`, or `+HH:MM` / `-HH:MM` from -14:00 to +14:00, as minutes from UTC.
pub fn offset_minutes(zone: &str) -> Option<i32> {
    if zone == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 14 * 60).then_some(sign * minutes)
}

/// The largest daily token budget taken (a typo guard).
pub const MAX_TOKENS_PER_DAY: u64 = 1_000_000_000_000;
/// The largest daily money budget taken, in USD (a typo guard).
pub const MAX_COST_USD_PER_DAY: f64 = 1_000_000.0;

impl Shape for TownLimits {}

impl Validate for TownLimits {
    /// Each cap null (no cap) or a whole number from 1 to [`MAX_CAP`].
    fn check(&self, issues: &mut Issues) {
        for (name, cap) in [
            ("max_concurrent_agents", self.max_concurrent_agents),
            ("max_dispatches_per_hour", self.max_dispatches_per_hour),
        ] {
            let ok = !cap.is_some_and(|c| c == 0 || c > MAX_CAP);
            issues.add(
                name,
                if ok {
                    Ok(())
                } else {
                    Err(format!("must be null (no cap) or from 1 to {MAX_CAP}"))
                },
            );
        }
        for (name, budget) in [
            ("max_tokens_per_day", self.max_tokens_per_day),
            ("max_tokens_per_bead", self.max_tokens_per_bead),
        ] {
            if budget.is_some_and(|t| t == 0 || t > MAX_TOKENS_PER_DAY) {
                issues.add(
                    name,
                    Err(format!("must be null (no budget) or from 1 to {MAX_TOKENS_PER_DAY}")),
                );
            }
        }
        if self.max_shards.is_some_and(|n| n == 0 || n > crate::shards::MAX_SHARDS) {
            issues.add(
                "max_shards",
                Err(format!(
                    "must be null (one shard) or from 1 to {}, the town container's max_instances",
                    crate::shards::MAX_SHARDS
                )),
            );
        }
        if self.time_zone.as_deref().is_some_and(|z| offset_minutes(z).is_none()) {
            issues.add(
                "time_zone",
                Err("must be \"UTC\" or a fixed offset from UTC from \"-14:00\" to \"+14:00\", such as \"+02:00\" (named zones are not taken)".into()),
            );
        }
        if self
            .max_cost_usd_per_day
            .is_some_and(|c| !c.is_finite() || c <= 0.0 || c > MAX_COST_USD_PER_DAY)
        {
            issues.add(
                "max_cost_usd_per_day",
                Err(format!(
                    "must be null (no budget) or a number of USD above 0, at most {MAX_COST_USD_PER_DAY}"
                )),
            );
        }
    }
}

/// The daily budgets the day's use has reached 80% of: each budget's name and what to tell
/// the mayor (once a day per budget, `runtime/container_do.rs`).
pub fn budget_warnings(
    limits: &TownLimits,
    tokens: u64,
    cost_usd: f64,
) -> Vec<(&'static str, String)> {
    let zone = limits.zone_label();
    let mut warnings = Vec::new();
    if let Some(max) =
        limits.max_tokens_per_day.filter(|max| tokens.saturating_mul(5) >= max.saturating_mul(4))
    {
        warnings.push((
            "max_tokens_per_day",
            format!(
                "the town has used {}% of its daily token budget ({tokens} of {max} tokens today, {zone}; max_tokens_per_day). At 100% new work waits until the budget is raised or the day ends.",
                tokens.saturating_mul(100) / max
            ),
        ));
    }
    if let Some(max) = limits.max_cost_usd_per_day.filter(|max| cost_usd >= max * 0.8) {
        warnings.push((
            "max_cost_usd_per_day",
            format!(
                "the town has spent {:.0}% of its daily money budget (${cost_usd:.4} of ${max:.4} today, {zone}; max_cost_usd_per_day). At 100% new work waits until the budget is raised or the day ends.",
                cost_usd * 100.0 / max
            ),
        ));
    }
    warnings
}

/// Whether the day's use (`tokens`, and `cost_usd` known so far) leaves room under the town's
/// daily budgets; the error is the reason new work stays queued (no attempt is spent), until
/// the budget is raised or the town's day ends.
pub fn within_budget(limits: &TownLimits, tokens: u64, cost_usd: f64) -> Result<(), String> {
    let zone = limits.zone_label();
    if let Some(max) = limits.max_tokens_per_day.filter(|max| tokens >= *max) {
        return Err(format!(
            "budget: {tokens} tokens used today and the town allows {max} (max_tokens_per_day); new work waits until the budget is raised or the day ends ({zone})"
        ));
    }
    if let Some(max) = limits.max_cost_usd_per_day.filter(|max| cost_usd >= *max) {
        return Err(format!(
            "budget: ${cost_usd:.4} spent today and the town allows ${max:.4} (max_cost_usd_per_day); new work waits until the budget is raised or the day ends ({zone})"
        ));
    }
    Ok(())
}

/// What the town does once usage has arrived (decided here, done by the TownContainer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverBudget {
    /// A daily budget is used up: every running polecat is wound down (one wrap-up message,
    /// its work saved, stopped), for this reason; its bead waits queued.
    pub day: Option<String>,
    /// Beads past `max_tokens_per_bead`, each with its reason: its agent is wound down and the
    /// bead fails with an escalation.
    pub beads: Vec<(String, String)>,
}

/// What the day's use (`tokens`, `cost_usd`) and the totals of the beads that just used tokens
/// (`beads`: bead, its tokens over all days) call for under the town's limits.
pub fn over_budget(
    limits: &TownLimits,
    tokens: u64,
    cost_usd: f64,
    beads: &[(String, u64)],
) -> OverBudget {
    let day = within_budget(limits, tokens, cost_usd).err();
    let beads = match limits.max_tokens_per_bead {
        Some(max) => beads
            .iter()
            .filter(|(_, used)| *used >= max)
            .map(|(bead, used)| {
                (bead.clone(), format!(
                    "budget: bead {bead} has used {used} tokens and the town allows {max} per bead (max_tokens_per_bead)"
                ))
            })
            .collect(),
        None => Vec::new(),
    };
    OverBudget { day, beads }
}

/// The starts a TownContainer let through in the last hour: `(dispatch key, ms)`. A repeated
/// dispatch (same key) is the same start and is not counted twice.
pub type Ledger = Vec<(String, i64)>;

/// Whether a start keyed `key` may go now under `cap` dispatches per hour; the error is the
/// reason the bead stays queued.
pub fn admit(ledger: &Ledger, key: &str, now_ms: i64, cap: Option<u32>) -> Result<(), String> {
    let Some(cap) = cap else { return Ok(()) };
    let recent: Vec<i64> =
        ledger.iter().filter(|(_, at)| *at > now_ms - HOUR_MS).map(|(_, at)| *at).collect();
    if ledger.iter().any(|(k, at)| k == key && *at > now_ms - HOUR_MS)
        || (recent.len() as u32) < cap
    {
        return Ok(());
    }
    let oldest = recent.iter().min().copied().unwrap_or(now_ms);
    let wait_min = ((oldest + HOUR_MS - now_ms) as f64 / 60_000.0).ceil() as i64;
    Err(format!(
        "spending cap: {} dispatches in the last hour and the town allows {cap} (max_dispatches_per_hour); the next can start in {wait_min} min",
        recent.len()
    ))
}

/// Records a start that went through, dropping what is older than an hour.
pub fn record(ledger: &mut Ledger, key: &str, now_ms: i64) {
    ledger.retain(|(k, at)| *at > now_ms - HOUR_MS && k != key);
    ledger.push((key.to_string(), now_ms));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetLimits;

impl TownOp for GetLimits {
    const NAME: &'static str = "get_limits";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        to_json(o.with_town(|t| t.limits())?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetLimits(pub TownLimits);

impl TownOp for SetLimits {
    const NAME: &'static str = "set_limits";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        to_json(o.with_town(|t| t.set_limits(&self.0))?)
    }
}

town_ops!(GetLimits, SetLimits);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_checked() {
        assert!(TownLimits { max_concurrent_agents: Some(3), ..Default::default() }
            .validate()
            .is_ok());
        assert!(TownLimits::default().validate().is_ok());
        for bad in [
            TownLimits { max_concurrent_agents: Some(0), ..Default::default() },
            TownLimits { max_dispatches_per_hour: Some(MAX_CAP + 1), ..Default::default() },
            TownLimits { max_tokens_per_day: Some(0), ..Default::default() },
            TownLimits { max_cost_usd_per_day: Some(-1.0), ..Default::default() },
            TownLimits { max_cost_usd_per_day: Some(0.0), ..Default::default() },
            TownLimits { max_tokens_per_bead: Some(0), ..Default::default() },
            TownLimits { max_shards: Some(0), ..Default::default() },
            TownLimits { max_shards: Some(crate::shards::MAX_SHARDS + 1), ..Default::default() },
        ] {
            assert_eq!(bad.validate().map_err(|e| e.status()), Err(400));
        }
        assert!(
            serde_json::from_str::<TownLimits>(r#"{"max_agents": 3}"#).is_err(),
            "a misspelt cap is refused, not ignored"
        );
    }

    #[test]
    fn the_days_budgets_hold_new_work_back_once_used_up() {
        let limits = TownLimits {
            max_tokens_per_day: Some(1_000),
            max_cost_usd_per_day: Some(2.0),
            ..Default::default()
        };
        assert_eq!(within_budget(&limits, 999, 1.99), Ok(()));
        let tokens = within_budget(&limits, 1_000, 0.0).expect_err("tokens used up");
        assert!(
            tokens.starts_with("budget: 1000 tokens used today")
                && tokens.contains("max_tokens_per_day"),
            "{tokens}"
        );
        let money = within_budget(&limits, 10, 2.5).expect_err("money used up");
        assert!(
            money.contains("$2.5000 spent today") && money.contains("max_cost_usd_per_day"),
            "{money}"
        );
        assert_eq!(within_budget(&TownLimits::default(), u64::MAX, 1e9), Ok(()), "no budget");
        assert!(budget_warnings(&limits, 799, 1.59).is_empty(), "under 80%");
        let warned = budget_warnings(&limits, 800, 1.6);
        assert_eq!(
            warned.iter().map(|w| w.0).collect::<Vec<_>>(),
            ["max_tokens_per_day", "max_cost_usd_per_day"]
        );
        assert!(
            warned[0].1.starts_with("the town has used 80% of its daily token budget (800 of 1000"),
            "{}",
            warned[0].1
        );
        for bad in [
            r#"{"max_tokens_per_day": -5}"#,
            r#"{"max_tokens_per_day": "lots"}"#,
            r#"{"max_cost_usd_per_day": "1"}"#,
        ] {
            assert!(serde_json::from_str::<TownLimits>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_towns_day_is_utc_or_a_fixed_offset() {
        for (zone, minutes) in [("UTC", 0), ("+02:00", 120), ("-05:30", -330), ("+14:00", 840)] {
            assert_eq!(offset_minutes(zone), Some(minutes), "{zone}");
        }
        for bad in ["", "utc", "Europe/Berlin", "+2:00", "+02:60", "+14:30", "02:00", "+02:00x"] {
            assert_eq!(offset_minutes(bad), None, "{bad}");
            let limits = TownLimits { time_zone: Some(bad.into()), ..Default::default() };
            assert_eq!(limits.validate().map_err(|e| e.status()), Err(400), "{bad}");
        }
        let berlin = TownLimits {
            time_zone: Some("+01:00".into()),
            max_tokens_per_day: Some(10),
            ..Default::default()
        };
        let late = crate::time::millis_from_iso("2026-12-07T23:30:00.000Z").expect("time");
        assert_eq!(berlin.day_at(late), "2026-12-08", "past midnight in the town");
        assert_eq!(TownLimits::default().day_at(late), "2026-12-07");
        let held = within_budget(&berlin, 10, 0.0).expect_err("used up");
        assert!(held.ends_with("the day ends (UTC+01:00)"), "{held}");
    }

    #[test]
    fn usage_past_a_budget_winds_the_town_or_the_bead_down() {
        let limits = TownLimits {
            max_tokens_per_day: Some(1_000),
            max_tokens_per_bead: Some(300),
            ..Default::default()
        };
        let beads = [("b1".to_string(), 299), ("b2".to_string(), 300)];
        let o = over_budget(&limits, 999, 0.0, &beads);
        assert_eq!(o.day, None, "the day has room");
        assert_eq!(o.beads.len(), 1);
        assert_eq!(o.beads[0].0, "b2");
        assert!(
            o.beads[0].1.contains("300 tokens") && o.beads[0].1.contains("max_tokens_per_bead")
        );
        let o = over_budget(&limits, 1_000, 0.0, &beads[..1]);
        assert!(o.day.is_some_and(|r| r.contains("max_tokens_per_day")));
        assert!(o.beads.is_empty());
        assert_eq!(
            over_budget(&TownLimits::default(), u64::MAX, 1e9, &beads),
            OverBudget::default(),
            "no budgets, nothing to do"
        );
        assert!(serde_json::from_str::<TownLimits>(r#"{"max_tokens_per_bead": -1}"#).is_err());
    }

    #[test]
    fn dispatches_per_hour() {
        let mut ledger = Ledger::new();
        assert_eq!(admit(&ledger, "b1-g1", 0, None), Ok(()));
        record(&mut ledger, "b1-g1", 1_000);
        record(&mut ledger, "b2-g1", 2_000);
        let refused = admit(&ledger, "b3-g1", 3_000, Some(2)).expect_err("over the cap");
        assert!(
            refused.starts_with("spending cap: 2 dispatches in the last hour")
                && refused.ends_with("in 60 min"),
            "{refused}"
        );
        assert_eq!(
            admit(&ledger, "b2-g1", 3_000, Some(2)),
            Ok(()),
            "a repeated dispatch is the same start"
        );
        assert_eq!(
            admit(&ledger, "b3-g1", HOUR_MS + 1_000, Some(2)),
            Ok(()),
            "an hour later the first no longer counts"
        );
        record(&mut ledger, "b2-g1", 4_000);
        assert_eq!(ledger.len(), 2, "a repeat replaces its entry");
        record(&mut ledger, "b4-g1", HOUR_MS + 5_000);
        assert_eq!(
            ledger.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["b4-g1"],
            "old entries go"
        );
    }
}
