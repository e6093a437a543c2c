//! A town's shards: one TownContainer object, and so one container, per (town, shard). A
//! container tops out at 4 vCPU and 12 GiB, about 18 Kilo agents; a town grows past that by
//! running more of them, each on its own.
//!
//! The TownDO keeps the map: which shard each rig lives on (a rig is never split: its agents
//! share one clone) and what each shard last reported of its load (its heartbeats). A rig is
//! placed when it first has work to dispatch and may move only while none of its agents runs
//! (its clone is then made anew on the new shard). [`place`] is the decision, pure; the
//! `max_shards` town limit (default 1) bounds it, so a town that never raises it keeps one
//! container. Shard 0 is the town's first container: the mayor lives there, and its object
//! keeps the town's ledgers (agents' events and usage, the hourly dispatch ledger) for every
//! shard.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use shared_types::records::ShardView;

use crate::api;
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::rig::op::to_json;
use crate::routes::{Endpoint, Rule};
use crate::town::object::TownObject;
use crate::town::op::{town_ops, TownCall, TownOp};

/// The most shards a town may have: the TownContainer class's `max_instances` in wrangler.toml
/// (the account's limit on containers of the class; a test keeps the two equal).
pub const MAX_SHARDS: u32 = 50;

/// A shard that reported no capacity yet is taken to hold this many agents: a container that
/// never ran an agent sends no heartbeat, and one that must be started to learn its capacity
/// would be started for nothing.
pub const ASSUMED_CAPACITY: u32 = 4;

/// How long a shard that could not be reached is passed over by placement, unless it reports
/// again sooner.
pub const UNREACHABLE_MS: i64 = 120_000;

pub const ROUTES: &[Endpoint] =
    &[Endpoint::get("/api/towns/:townId/shards", Rule::Internal, |r| {
        api::town(r.param("townId")?, &ListShards, 200)
    })];

/// Names one TownContainer: a town's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    pub town: String,
    pub shard: u32,
}

impl ShardRef {
    pub fn new(town: &str, shard: u32) -> Self {
        Self { town: town.to_string(), shard }
    }

    /// The town's first shard: the mayor's, and the keeper of the town's ledgers.
    pub fn first(town: &str) -> Self {
        Self::new(town, 0)
    }

    /// The TownContainer object's name: the town id for shard 0 (the name a town's one
    /// container always had, so its kept history stays), `<town>:<n>` for the others. Town
    /// ids never hold a `:`.
    pub fn object_name(&self) -> String {
        match self.shard {
            0 => self.town.clone(),
            n => format!("{}:{n}", self.town),
        }
    }

    /// The inverse of [`ShardRef::object_name`].
    pub fn from_object_name(name: &str) -> Option<Self> {
        match name.rsplit_once(':') {
            None => Some(Self::first(name)),
            Some((town, n)) => Some(Self::new(town, n.parse().ok().filter(|n| *n > 0)?)),
        }
    }
}

/// Which shard a person's call to the town's container goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardChoice {
    /// The one named (`?shard=`), or the first for a call about no agent.
    Named(ShardRef),
    /// The shard that runs this agent, found by asking each shard the town uses (the first
    /// when none knows it).
    OfAgent { town: String, agent: String },
}

/// `CONTAINER_URL` for shard `shard`: the variable is one URL (shard 0 only) or a
/// comma-separated list, one control server per shard in order.
pub fn container_url(var: Option<&str>, shard: u32) -> Option<String> {
    var?.split(',').map(str::trim).filter(|u| !u.is_empty()).nth(shard as usize).map(str::to_string)
}

/// What placement knows of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoad {
    pub shard: u32,
    /// Rigs placed on it.
    pub rigs: u32,
    /// Agents its rigs want at once, as each last told (at least one per rig: a placed rig
    /// keeps its clone there and comes back to it).
    pub demand: u32,
    /// Agents that fit, from its last heartbeat (`None`: it has not reported).
    pub capacity: Option<u32>,
    /// Agents running at its last heartbeat.
    pub running: u32,
    /// It could not be reached lately ([`UNREACHABLE_MS`]) and has not reported since.
    pub unreachable: bool,
}

impl ShardLoad {
    /// Room for more agents: its capacity less what runs or what its rigs want, whichever is
    /// more.
    fn free(&self) -> i64 {
        i64::from(self.capacity.unwrap_or(ASSUMED_CAPACITY))
            - i64::from(self.running.max(self.demand))
    }
}

/// Where a rig goes.
///
/// - A placed rig that may not move (an agent of it runs) stays, even on a shard now over the
///   limit or unreachable: its runs are there.
/// - A placed rig that may move stays while its shard is within `max_shards` and reachable:
///   moving costs a new clone, and a full shard only queues its work.
/// - Otherwise the rig goes to the reachable shard in use with the most room when it has room
///   for all the rig wants (`demand` agents, at least one); when none has and `max_shards`
///   allows, to the lowest shard not in use (a new container); when neither, to the reachable
///   shard with the most room anyway, to queue there. With no reachable shard at all, shard 0.
pub fn place(
    current: Option<u32>,
    movable: bool,
    demand: u32,
    loads: &[ShardLoad],
    max_shards: u32,
) -> u32 {
    let max_shards = max_shards.clamp(1, MAX_SHARDS);
    let load = |s: u32| loads.iter().find(|l| l.shard == s);
    if let Some(s) = current {
        let usable = s < max_shards && !load(s).is_some_and(|l| l.unreachable);
        if !movable || usable {
            return s;
        }
    }
    let in_use: Vec<&ShardLoad> = loads
        .iter()
        .filter(|l| l.shard < max_shards && !l.unreachable && (l.rigs > 0 || l.capacity.is_some()))
        .collect();
    // The most room; the lowest shard among equals.
    let roomiest = in_use.iter().max_by_key(|l| (l.free(), std::cmp::Reverse(l.shard)));
    match roomiest {
        Some(l) if l.free() >= i64::from(demand.max(1)) => l.shard,
        roomiest => {
            let taken = |s: u32| load(s).is_some_and(|l| l.rigs > 0 || l.unreachable);
            match (0..max_shards).find(|s| !taken(*s) && !in_use.iter().any(|l| l.shard == *s)) {
                Some(new) => new,
                None => roomiest.map_or(0, |l| l.shard),
            }
        }
    }
}

/// The TownDO's storage of the map.
pub const MIGRATION: &[&str] = &[
    "CREATE TABLE rig_shards (rig_id TEXT PRIMARY KEY, shard INTEGER NOT NULL, placed_at TEXT NOT NULL,
        demand INTEGER NOT NULL DEFAULT 1)",
    "CREATE TABLE shard_reports (shard INTEGER PRIMARY KEY, capacity INTEGER, running INTEGER NOT NULL DEFAULT 0,
        memory_bytes INTEGER, pool_ready INTEGER, boot_id TEXT, reported_at TEXT, unreachable_at_ms INTEGER)",
];

#[derive(Debug, Deserialize)]
struct RigShardRow {
    rig_id: String,
    shard: u32,
    demand: u32,
}

#[derive(Debug, Deserialize)]
struct ReportRow {
    shard: u32,
    capacity: Option<u32>,
    running: u32,
    memory_bytes: Option<u64>,
    pool_ready: Option<u32>,
    boot_id: Option<String>,
    reported_at: Option<String>,
    unreachable_at_ms: Option<i64>,
}

/// The map over the TownDO's storage.
pub struct Shards<'a, D: Db> {
    pub db: &'a D,
    pub now_ms: i64,
    pub now: String,
}

impl<D: Db> Shards<'_, D> {
    pub fn shard_of(&self, rig_id: &str) -> ApiResult<Option<u32>> {
        Ok(self.row(rig_id)?.map(|r| r.shard))
    }

    fn row(&self, rig_id: &str) -> ApiResult<Option<RigShardRow>> {
        self.db.first("SELECT * FROM rig_shards WHERE rig_id = ?", params![rig_id])
    }

    /// Every shard in use or reported, with its rigs.
    pub fn loads(&self) -> ApiResult<Vec<ShardLoad>> {
        let rigs: Vec<RigShardRow> = self.db.query("SELECT * FROM rig_shards", vec![])?;
        let reports: Vec<ReportRow> =
            self.db.query("SELECT * FROM shard_reports ORDER BY shard", vec![])?;
        let mut shards: Vec<u32> =
            rigs.iter().map(|r| r.shard).chain(reports.iter().map(|r| r.shard)).collect();
        shards.sort_unstable();
        shards.dedup();
        Ok(shards
            .into_iter()
            .map(|shard| {
                let report = reports.iter().find(|r| r.shard == shard);
                ShardLoad {
                    shard,
                    rigs: rigs.iter().filter(|r| r.shard == shard).count() as u32,
                    demand: rigs.iter().filter(|r| r.shard == shard).map(|r| r.demand.max(1)).sum(),
                    capacity: report.and_then(|r| r.capacity),
                    running: report.map_or(0, |r| r.running),
                    unreachable: report
                        .and_then(|r| r.unreachable_at_ms)
                        .is_some_and(|at| self.now_ms - at < UNREACHABLE_MS),
                }
            })
            .collect())
    }

    /// Places the rig ([`place`]) and records where and what it wants now; a move is
    /// returned as `(from, to)`.
    pub fn place_rig(
        &self,
        rig_id: &str,
        movable: bool,
        demand: u32,
        max_shards: u32,
    ) -> ApiResult<(u32, Option<u32>)> {
        let row = self.row(rig_id)?;
        let current = row.as_ref().map(|r| r.shard);
        let shard = place(current, movable, demand, &self.loads()?, max_shards);
        if current != Some(shard) {
            self.db.exec(
                "INSERT INTO rig_shards (rig_id, shard, placed_at, demand) VALUES (?, ?, ?, ?)
                 ON CONFLICT (rig_id) DO UPDATE SET shard = excluded.shard, placed_at = excluded.placed_at,
                   demand = excluded.demand",
                params![rig_id, shard, &self.now, demand],
            )?;
        } else if row.is_some_and(|r| r.demand != demand) {
            self.db.exec(
                "UPDATE rig_shards SET demand = ? WHERE rig_id = ?",
                params![demand, rig_id],
            )?;
        }
        Ok((shard, current.filter(|c| *c != shard)))
    }

    /// A shard's heartbeat: its load, and that it is reachable again.
    pub fn report(&self, r: &ShardReport) -> ApiResult<()> {
        self.db.exec(
            "INSERT INTO shard_reports (shard, capacity, running, memory_bytes, pool_ready, boot_id, reported_at,
               unreachable_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
             ON CONFLICT (shard) DO UPDATE SET capacity = excluded.capacity, running = excluded.running,
               memory_bytes = excluded.memory_bytes, pool_ready = excluded.pool_ready,
               boot_id = excluded.boot_id, reported_at = excluded.reported_at, unreachable_at_ms = NULL",
            params![
                r.shard,
                r.capacity,
                r.running,
                r.memory_bytes.and_then(|m| i64::try_from(m).ok()),
                r.pool_ready,
                r.boot_id.clone(),
                &self.now
            ],
        )?;
        Ok(())
    }

    /// A caller could not reach the shard's control server.
    pub fn unreachable(&self, shard: u32) -> ApiResult<()> {
        self.db.exec(
            "INSERT INTO shard_reports (shard, unreachable_at_ms) VALUES (?, ?)
             ON CONFLICT (shard) DO UPDATE SET unreachable_at_ms = excluded.unreachable_at_ms",
            params![shard, self.now_ms],
        )?;
        Ok(())
    }

    /// Rigs placed on `shard`.
    pub fn rigs_on(&self, shard: u32) -> ApiResult<Vec<String>> {
        let rows: Vec<RigShardRow> = self
            .db
            .query("SELECT * FROM rig_shards WHERE shard = ? ORDER BY rig_id", params![shard])?;
        Ok(rows.into_iter().map(|r| r.rig_id).collect())
    }

    /// The town's shards as `GET /api/towns/:town/shards` shows them.
    pub fn view(&self) -> ApiResult<Vec<ShardView>> {
        let reports: Vec<ReportRow> =
            self.db.query("SELECT * FROM shard_reports ORDER BY shard", vec![])?;
        self.loads()?
            .into_iter()
            .map(|l| {
                let report = reports.iter().find(|r| r.shard == l.shard);
                Ok(ShardView {
                    shard: l.shard,
                    rigs: self.rigs_on(l.shard)?,
                    capacity: l.capacity,
                    running: l.running,
                    memory_bytes: report.and_then(|r| r.memory_bytes),
                    pool_ready: report.and_then(|r| r.pool_ready),
                    boot_id: report.and_then(|r| r.boot_id.clone()),
                    reported_at: report.and_then(|r| r.reported_at.clone()),
                    unreachable: l.unreachable,
                })
            })
            .collect()
    }
}

impl<D: Db, E: Effects> TownObject<'_, D, E> {
    fn with_shards<T>(&self, f: impl FnOnce(&Shards<'_, D>) -> T) -> T {
        f(&Shards { db: self.db, now_ms: self.fx.now_ms(), now: self.fx.now_iso() })
    }
}

/// Where the rig's agents run: placed now when it never was (or may move and should).
/// `unreachable`: the shard the rig used could not be reached by its last call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceRig {
    pub rig_id: String,
    /// No agent of the rig runs: it may move.
    pub movable: bool,
    /// Agents the rig wants at once now: its due dispatches and running runs.
    #[serde(default)]
    pub demand: u32,
    #[serde(default)]
    pub unreachable: Option<u32>,
}

impl TownOp for PlaceRig {
    const NAME: &'static str = "place_rig";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let max_shards = o.with_town(|t| t.limits())?.max_shards.unwrap_or(1);
        let (shard, moved) = o.with_shards(|s| {
            if let Some(gone) = self.unreachable {
                s.unreachable(gone)?;
            }
            s.place_rig(&self.rig_id, self.movable, self.demand, max_shards)
        })?;
        if let Some(from) = moved {
            o.fx.log_info(&format!(
                "shards: rig {} moved from shard {from} to shard {shard} (no agent of it ran)",
                self.rig_id
            ));
        }
        Ok(serde_json::json!({ "shard": shard }))
    }
}

/// A shard's heartbeat: its load is kept, and the answer names the rigs whose agents it may
/// report (the town's rigs placed on it; shard 0 also those never placed, which ran there
/// before the town had shards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard: u32,
    pub capacity: Option<u32>,
    pub running: u32,
    pub memory_bytes: Option<u64>,
    pub pool_ready: Option<u32>,
    pub boot_id: Option<String>,
}

/// [`ShardReport`]'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAnswer {
    /// Every rig of the town.
    pub town_rigs: Vec<String>,
    /// The rigs whose agents this shard runs.
    pub here: Vec<String>,
}

impl TownOp for ShardReport {
    const NAME: &'static str = "shard_report";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        // A town that does not exist keeps no report (and has no rigs to update).
        match o.with_town(|t| t.limits()) {
            Err(ApiError::NotFound(_)) => {
                return to_json(ReportAnswer { town_rigs: Vec::new(), here: Vec::new() })
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let town_rigs: Vec<String> = o.with_town(|t| t.rigs())?.into_iter().map(|r| r.id).collect();
        let here = o.with_shards(|s| {
            s.report(&self)?;
            let mut here = Vec::new();
            for rig in &town_rigs {
                let shard = s.shard_of(rig)?.unwrap_or(0);
                if shard == self.shard {
                    here.push(rig.clone());
                }
            }
            Ok::<_, ApiError>(here)
        })?;
        to_json(ReportAnswer { town_rigs, here })
    }
}

/// The shard a rig's agents run on (0 when it was never placed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardOfRig {
    pub rig_id: String,
}

impl TownOp for ShardOfRig {
    const NAME: &'static str = "shard_of_rig";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        Ok(
            serde_json::json!({ "shard": o.with_shards(|s| s.shard_of(&self.rig_id))?.unwrap_or(0) }),
        )
    }
}

/// The town's shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListShards;

impl TownOp for ListShards {
    const NAME: &'static str = "list_shards";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        // A town that does not exist has no shards: a 404, as its other routes.
        o.with_town(|t| t.limits())?;
        to_json(o.with_shards(|s| s.view())?)
    }
}

town_ops!(PlaceRig, ShardReport, ShardOfRig, ListShards);

/// The rig's shard, as its TownDO places it.
pub async fn place_rig<E: Effects>(fx: &E, town: &str, op: &PlaceRig) -> ApiResult<ShardRef> {
    shard_answer(town, fx.town(town, &TownCall::of(op)?).await?)
}

/// `{"shard": n}` read.
pub fn shard_answer(town: &str, answer: Value) -> ApiResult<ShardRef> {
    let shard = answer["shard"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .ok_or_else(|| ApiError::Internal("the town's placement answered no shard".into()))?;
    Ok(ShardRef::new(town, shard))
}

/// The town's shards as its TownDO lists them.
pub async fn views<E: Effects>(fx: &E, town: &str) -> ApiResult<Vec<ShardView>> {
    let listed = fx.town(town, &TownCall::of(&ListShards)?).await?;
    crate::json::decode(listed).map_err(ApiError::internal)
}

/// The shards the town uses (shard 0 always among them).
pub async fn in_use<E: Effects>(fx: &E, town: &str) -> Vec<ShardRef> {
    let mut shards = vec![ShardRef::first(town)];
    match views(fx, town).await {
        Ok(views) => shards.extend(
            views.into_iter().filter(|v| v.shard > 0).map(|v| ShardRef::new(town, v.shard)),
        ),
        Err(e) => fx.log_error(&format!("shards: the town's shards could not be listed: {e}")),
    }
    shards
}

#[cfg(test)]
#[path = "shards_tests.rs"]
mod tests;
