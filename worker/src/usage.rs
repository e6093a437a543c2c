//! What the town spends: every finished model call's usage (an agent event of kind `usage`,
//! see [`shared_types::UsageReport`]) is summed as it arrives into one row per UTC hour, rig,
//! agent, bead, model and run (a town's days begin at its own offset from UTC), so the volume
//! stays bounded (no row per call or per token) and the totals survive container restarts.
//! Costs are summed in whole micro-dollars, so no sum drifts. A call counts once: its message id
//! is remembered ([`KEEP_SEEN_DAYS`]), so a resent batch, or one sent again after a restart,
//! adds nothing.
//!
//! They live in the TownContainer's SQLite beside the agents' events, which bring them.
//! `GET /api/towns/:townId/usage?from=&to=&group_by=` answers the total and one group per bead,
//! agent, rig, model, day, convoy or run. A cost the provider did not report comes from the
//! town's price table (`PUT /api/towns/:townId/usage/prices`, USD per million tokens, per model)
//! when the model has a price there, as the call is counted; otherwise it is unknown, never 0: a
//! total with any unknown part has `cost_usd: null` (and `cost_usd_known`, the part that is
//! known).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::records::{UsageAnswer, UsageSums};
use shared_types::UsageReport;

use crate::api::{Incoming, Plan};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::routes::{Endpoint, Rule};

pub const ROUTES: &[Endpoint] = &[
    Endpoint::get("/api/towns/:townId/usage", Rule::Internal, get),
    Endpoint::get("/api/towns/:townId/usage/prices", Rule::Internal, get_prices),
    Endpoint::put("/api/towns/:townId/usage/prices", Rule::Internal, put_prices),
];

pub const MIGRATION: &[&str] = &[
    "CREATE TABLE usage_seen (message_id TEXT PRIMARY KEY, day TEXT NOT NULL)",
    "CREATE INDEX usage_seen_day ON usage_seen (day)",
    "CREATE TABLE usage_daily (day TEXT NOT NULL, rig_id TEXT NOT NULL, agent_id TEXT NOT NULL,
        bead_id TEXT NOT NULL, model TEXT NOT NULL, calls INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL, unpriced INTEGER NOT NULL,
        PRIMARY KEY (day, rig_id, agent_id, bead_id, model))",
    "CREATE TABLE usage_prices (model TEXT PRIMARY KEY, prices TEXT NOT NULL)",
];

/// Usage is kept per UTC hour and run: `hour` (`YYYY-MM-DDTHH`), so a town's days can begin
/// at its own offset from UTC, and the run (`dispatch_id`) in the key, so a run's own usage can
/// be read (`group_by=run`; a run seldom spans more than an hour). The rows kept per day before
/// count from that day's first hour, as runs without a name. A bead's own total is read as its
/// usage arrives (its token cap): an index on the bead.
pub const HOURLY: &[&str] = &[
    "CREATE TABLE usage_hourly (hour TEXT NOT NULL, rig_id TEXT NOT NULL, agent_id TEXT NOT NULL,
        bead_id TEXT NOT NULL, model TEXT NOT NULL, dispatch_id TEXT NOT NULL,
        convoy_id TEXT NOT NULL, calls INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL, unpriced INTEGER NOT NULL,
        PRIMARY KEY (hour, rig_id, agent_id, bead_id, model, dispatch_id))",
    "INSERT INTO usage_hourly SELECT day || 'T00', rig_id, agent_id, bead_id, model, '', '', calls,
        input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
        cost_micros, unpriced FROM usage_daily",
    "DROP TABLE usage_daily",
    "CREATE INDEX usage_hourly_bead ON usage_hourly (bead_id)",
];

/// Message ids are remembered this long (a resend comes within minutes or hours).
const KEEP_SEEN_DAYS: i64 = 7;

/// The TownContainer's own paths: a usage query, the price table read and replaced.
pub const USAGE_PATH: &str = "/_do/usage";
pub const PRICES_GET_PATH: &str = "/_do/usage/prices/get";
pub const PRICES_PUT_PATH: &str = "/_do/usage/prices/put";

/// Models a price table holds at most, and the highest price taken (USD per million tokens).
const MAX_MODELS: usize = 200;
const MAX_PRICE: f64 = 100_000.0;

/// A model's prices, USD per million tokens. Reasoning tokens are billed as output; cache
/// prices default to the input price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

impl Price {
    /// What `t` costs at these prices, in USD.
    pub fn cost(&self, t: &shared_types::Tokens) -> f64 {
        let per = |n: u64, usd: f64| n as f64 * usd / 1e6;
        per(t.input_tokens, self.input)
            + per(t.output_tokens.saturating_add(t.reasoning_tokens), self.output)
            + per(t.cache_read_tokens, self.cache_read.unwrap_or(self.input))
            + per(t.cache_write_tokens, self.cache_write.unwrap_or(self.input))
    }
}

/// `PUT …/usage/prices`: `{"prices": {"<provider/model>": {"input", "output", "cache_read"?,
/// "cache_write"?}}}`, the whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub prices: std::collections::BTreeMap<String, Price>,
}

impl PriceTable {
    fn check(&self) -> ApiResult<()> {
        let bad = |m: String| Err(ApiError::bad_request(m));
        if self.prices.len() > MAX_MODELS {
            return bad(format!("prices: at most {MAX_MODELS} models"));
        }
        for (model, p) in &self.prices {
            if model.trim().is_empty() || model.len() > 200 {
                return bad("prices: a model is named in 1 to 200 characters".into());
            }
            let each = [("input", Some(p.input)), ("output", Some(p.output))]
                .into_iter()
                .chain([("cache_read", p.cache_read), ("cache_write", p.cache_write)]);
            for (field, v) in each {
                if v.is_some_and(|v| !v.is_finite() || !(0.0..=MAX_PRICE).contains(&v)) {
                    return bad(format!(
                        "prices.{model}.{field}: USD per million tokens, from 0 to {MAX_PRICE}"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn get_prices(req: &Incoming) -> ApiResult<Plan> {
    Ok(Plan::TownContainer {
        town_id: req.param("townId")?,
        path: PRICES_GET_PATH,
        body: Value::Null,
    })
}

fn put_prices(req: &Incoming) -> ApiResult<Plan> {
    // Straight from the text, not through `crate::json`: serde's message, with its line and
    // column, is the client's answer.
    let table: PriceTable = serde_json::from_slice(req.body)
        .map_err(|e| ApiError::bad_request(format!("prices: {e}")))?;
    table.check()?;
    let body = serde_json::to_value(&table).map_err(ApiError::internal)?;
    Ok(Plan::TownContainer { town_id: req.param("townId")?, path: PRICES_PUT_PATH, body })
}

/// The town's price table.
pub fn prices(db: &impl Db) -> ApiResult<Value> {
    #[derive(Deserialize)]
    struct Row {
        model: String,
        prices: String,
    }
    let rows: Vec<Row> =
        db.query("SELECT model, prices FROM usage_prices ORDER BY model", vec![])?;
    let prices: serde_json::Map<String, Value> = rows
        .into_iter()
        .filter_map(|r| Some((r.model, crate::json::from_text(&r.prices).ok()?)))
        .collect();
    Ok(json!({ "prices": prices }))
}

/// Replaces the town's price table (checked by the route). Calls counted from now on use it.
pub fn set_prices(db: &impl Db, table: &PriceTable) -> ApiResult<Value> {
    db.exec("DELETE FROM usage_prices", vec![])?;
    for (model, p) in &table.prices {
        let p = serde_json::to_string(p).map_err(ApiError::internal)?;
        db.exec("INSERT INTO usage_prices (model, prices) VALUES (?, ?)", params![model, p])?;
    }
    prices(db)
}

/// `model`'s price in the town's table.
fn price_of(db: &impl Db, model: &str) -> ApiResult<Option<Price>> {
    #[derive(Deserialize)]
    struct Row {
        prices: String,
    }
    let row: Option<Row> =
        db.first("SELECT prices FROM usage_prices WHERE model = ?", params![model])?;
    Ok(row.and_then(|r| crate::json::from_text(&r.prices).ok()))
}

/// What the usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Bead,
    Agent,
    Rig,
    Model,
    Day,
    Convoy,
    Run,
}

impl GroupBy {
    const NAMES: &'static str = "bead, agent, rig, model, day, convoy, run";

    const ALL: [Self; 7] =
        [Self::Bead, Self::Agent, Self::Rig, Self::Model, Self::Day, Self::Convoy, Self::Run];

    fn as_str(self) -> &'static str {
        match self {
            Self::Bead => "bead",
            Self::Agent => "agent",
            Self::Rig => "rig",
            Self::Model => "model",
            Self::Day => "day",
            Self::Convoy => "convoy",
            Self::Run => "run",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// The SQL that names a row's group; a day is the town's (`offset` minutes from UTC).
    fn column(self, offset: i32) -> String {
        match self {
            Self::Bead => "bead_id".into(),
            Self::Agent => "agent_id".into(),
            Self::Rig => "rig_id".into(),
            Self::Model => "model".into(),
            Self::Convoy => "convoy_id".into(),
            Self::Run => "dispatch_id".into(),
            Self::Day if offset == 0 => "substr(hour, 1, 10)".into(),
            Self::Day => format!("substr(datetime(hour || ':00:00', '{offset} minutes'), 1, 10)"),
        }
    }
}

/// `?from=&to=&group_by=&limit=`: the town's days (`YYYY-MM-DD`), both included; at most
/// `limit` groups (the costliest, or for days the latest). `offset_minutes` is the town's
/// offset from UTC (its `time_zone`), set by the TownContainer, never by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<GroupBy>,
    #[serde(default = "default_limit")]
    pub limit: u32,
    #[serde(default)]
    pub offset_minutes: i32,
}

const DEFAULT_GROUPS: u32 = 100;
const MAX_GROUPS: u32 = 1_000;

fn default_limit() -> u32 {
    DEFAULT_GROUPS
}

impl UsageQuery {
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let mut q =
            Self { from: None, to: None, group_by: None, limit: DEFAULT_GROUPS, offset_minutes: 0 };
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(raw.trim_start_matches('?').as_bytes()).into_owned().collect();
        let first = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        for (key, slot) in [("from", &mut q.from), ("to", &mut q.to)] {
            if let Some(v) = first(key).filter(|v| !v.is_empty()) {
                *slot = Some(day(v).ok_or_else(|| {
                    ApiError::bad_request(format!("{key}: must be a day, YYYY-MM-DD"))
                })?);
            }
        }
        if let (Some(from), Some(to)) = (&q.from, &q.to) {
            if from > to {
                return Err(ApiError::bad_request("from: must not be after to"));
            }
        }
        if let Some(v) = first("limit").filter(|v| !v.is_empty()) {
            q.limit = v.parse().ok().filter(|n| (1..=MAX_GROUPS).contains(n)).ok_or_else(|| {
                ApiError::bad_request(format!("limit: must be from 1 to {MAX_GROUPS}"))
            })?;
        }
        if let Some(g) = first("group_by").filter(|v| !v.is_empty()) {
            q.group_by = Some(GroupBy::parse(g).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "group_by: unknown value, expected one of {}",
                    GroupBy::NAMES
                ))
            })?);
        }
        Ok(q)
    }
}

/// `YYYY-MM-DD` (or the day of a full ISO time), checked to be a calendar day.
fn day(v: &str) -> Option<String> {
    let d = v.get(..10)?;
    let rest = &v[10..];
    if !(rest.is_empty() || rest.starts_with('T')) {
        return None;
    }
    crate::time::millis_from_iso(&format!("{d}T00:00:00.000Z"))?;
    Some(d.to_string())
}

fn get(req: &Incoming) -> ApiResult<Plan> {
    let q = UsageQuery::parse(req.query)?;
    let body = serde_json::to_value(&q).map_err(ApiError::internal)?;
    Ok(Plan::TownContainer { town_id: req.param("townId")?, path: USAGE_PATH, body })
}

/// Adds one call's usage, reported by agent `agent_id` of `rig_id` at `at`; false when that
/// call was counted already.
pub fn record(
    db: &impl Db,
    rig_id: &str,
    agent_id: &str,
    at: &str,
    u: &UsageReport,
) -> ApiResult<bool> {
    let (Some(day), Some(hour)) = (day(at), at.get(..13)) else { return Ok(false) };
    if !hour[11..].bytes().all(|b| b.is_ascii_digit()) {
        return Ok(false);
    }
    let new = db.exec(
        "INSERT OR IGNORE INTO usage_seen (message_id, day) VALUES (?, ?)",
        params![&u.message_id, &day],
    )?;
    if new == 0 {
        return Ok(false);
    }
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let t = &u.tokens;
    let cost_usd = match u.cost_usd {
        Some(c) => Some(c),
        None => price_of(db, &u.model)?.map(|p| p.cost(t)),
    };
    // Bound as JavaScript numbers in the Worker: cast, or SQLite keeps them as reals.
    db.exec(
        "INSERT INTO usage_hourly (hour, rig_id, agent_id, bead_id, model, dispatch_id, convoy_id, calls,
            input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
            cost_micros, unpriced)
         VALUES (?, ?, ?, ?, ?, ?, ?, 1, CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS INTEGER),
            CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS INTEGER))
         ON CONFLICT (hour, rig_id, agent_id, bead_id, model, dispatch_id) DO UPDATE SET
            calls = calls + 1, input_tokens = input_tokens + excluded.input_tokens,
            output_tokens = output_tokens + excluded.output_tokens,
            reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
            cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
            cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
            cost_micros = cost_micros + excluded.cost_micros, unpriced = unpriced + excluded.unpriced",
        params![
            hour,
            rig_id,
            agent_id,
            u.bead_id.as_deref().unwrap_or(""),
            &u.model,
            u.dispatch_id.as_deref().unwrap_or(""),
            u.convoy_id.as_deref().unwrap_or(""),
            n(t.input_tokens),
            n(t.output_tokens),
            n(t.reasoning_tokens),
            n(t.cache_read_tokens),
            n(t.cache_write_tokens),
            cost_usd.map_or(0, |c| (c * 1e6).round() as i64),
            i64::from(cost_usd.is_none())
        ],
    )?;
    let oldest = crate::time::millis_from_iso(&format!("{day}T00:00:00.000Z"))
        .map(|ms| crate::time::iso_from_millis(ms - KEEP_SEEN_DAYS * 86_400_000));
    if let Some(oldest) = oldest.as_deref().and_then(|o| o.get(..10)) {
        db.exec("DELETE FROM usage_seen WHERE day < ?", params![oldest])?;
    }
    Ok(true)
}

#[derive(Deserialize)]
struct Sum {
    key: Option<String>,
    calls: Option<f64>,
    input_tokens: Option<f64>,
    output_tokens: Option<f64>,
    reasoning_tokens: Option<f64>,
    cache_read_tokens: Option<f64>,
    cache_write_tokens: Option<f64>,
    cost_micros: Option<f64>,
    unpriced: Option<f64>,
}

impl Sum {
    /// The sums as the API answers them; `key`: whether this is a group's (a total has none).
    fn answer(&self, key: bool) -> UsageSums {
        let n = |v: Option<f64>| v.unwrap_or(0.0).round() as u64;
        let known = self.cost_micros.unwrap_or(0.0).round() / 1e6;
        UsageSums {
            key: key.then(|| self.key.clone().filter(|k| !k.is_empty())),
            calls: n(self.calls),
            input_tokens: n(self.input_tokens),
            output_tokens: n(self.output_tokens),
            reasoning_tokens: n(self.reasoning_tokens),
            cache_read_tokens: n(self.cache_read_tokens),
            cache_write_tokens: n(self.cache_write_tokens),
            cost_usd: (n(self.unpriced) == 0).then_some(known),
            cost_usd_known: known,
        }
    }
}

const SUMS: &str = "SUM(calls) AS calls, SUM(input_tokens) AS input_tokens,
    SUM(output_tokens) AS output_tokens, SUM(reasoning_tokens) AS reasoning_tokens,
    SUM(cache_read_tokens) AS cache_read_tokens, SUM(cache_write_tokens) AS cache_write_tokens,
    SUM(cost_micros) AS cost_micros, SUM(unpriced) AS unpriced";

/// The UTC hour (`YYYY-MM-DDTHH`) at which the town's day `day` begins, `days_after` later.
fn first_hour(day: &str, days_after: i64, offset: i32) -> Option<String> {
    let midnight = crate::time::millis_from_iso(&format!("{day}T00:00:00.000Z"))?;
    let utc = midnight + days_after * 86_400_000 - i64::from(offset) * 60_000;
    Some(crate::time::iso_from_millis(utc).get(..13)?.to_string())
}

/// The total over the query's days, and its groups (largest cost first, then most tokens; for
/// days, the latest `limit` in order).
pub fn report(db: &impl Db, q: &UsageQuery) -> ApiResult<UsageAnswer> {
    let offset = q.offset_minutes;
    let from = q.from.as_deref().and_then(|d| first_hour(d, 0, offset));
    let until = q.to.as_deref().and_then(|d| first_hour(d, 1, offset));
    let filter = "WHERE (? IS NULL OR hour >= ?) AND (? IS NULL OR hour < ?)";
    let bounds = || params![from.clone(), from.clone(), until.clone(), until.clone()];
    let total: Option<Sum> =
        db.first(&format!("SELECT NULL AS key, {SUMS} FROM usage_hourly {filter}"), bounds())?;
    let total = total.map(|s| s.answer(false)).unwrap_or_default();
    let mut answer =
        UsageAnswer { from: q.from.clone(), to: q.to.clone(), total, group_by: None, groups: None };
    if let Some(g) = q.group_by {
        let col = g.column(offset);
        let order = if g == GroupBy::Day {
            "key DESC"
        } else {
            "cost_micros DESC, input_tokens + output_tokens DESC, key"
        };
        let mut params = bounds();
        params.push(i64::from(q.limit).into());
        let mut groups: Vec<Sum> = db.query(
            &format!("SELECT {col} AS key, {SUMS} FROM usage_hourly {filter} GROUP BY key ORDER BY {order} LIMIT ?"),
            params,
        )?;
        if g == GroupBy::Day {
            groups.reverse();
        }
        answer.group_by = Some(g.as_str().to_string());
        answer.groups = Some(groups.iter().map(|s| s.answer(true)).collect());
    }
    Ok(answer)
}

/// The tokens of every kind used on the town's `day` (`YYYY-MM-DD`, `offset` minutes from
/// UTC), and the cost known so far, for the daily budgets (`crate::spending::within_budget`).
pub fn day_total(db: &impl Db, day: &str, offset: i32) -> ApiResult<(u64, f64)> {
    let q = UsageQuery {
        from: Some(day.into()),
        to: Some(day.into()),
        group_by: None,
        limit: 1,
        offset_minutes: offset,
    };
    let t = report(db, &q)?.total;
    let tokens = shared_types::Tokens {
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        reasoning_tokens: t.reasoning_tokens,
        cache_read_tokens: t.cache_read_tokens,
        cache_write_tokens: t.cache_write_tokens,
    };
    Ok((tokens.total(), t.cost_usd_known))
}

/// Tokens of every kind the bead's runs have used, over all days.
pub fn bead_tokens(db: &impl Db, bead_id: &str) -> ApiResult<u64> {
    #[derive(Deserialize)]
    struct Row {
        n: Option<i64>,
    }
    let sql = "SELECT SUM(input_tokens + output_tokens + reasoning_tokens + cache_read_tokens
        + cache_write_tokens) AS n FROM usage_hourly WHERE bead_id = ?";
    Ok(db.first::<Row>(sql, params![bead_id])?.and_then(|r| r.n).map_or(0, |n| n.max(0) as u64))
}

#[cfg(test)]
mod tests;
