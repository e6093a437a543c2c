//! The TownDO's logic: the town's configuration, its rigs and town-level escalations.
//!
//! Creating a rig has an asynchronous middle (configuring the rig's RigDO), so it is split:
//! [`Town::prepare_rig`] checks and picks the id, the runtime configures the RigDO, then
//! [`Town::insert_rig`] records it. A rig is listed only once its RigDO is configured.

pub mod object;
pub mod op;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::validate;

use self::object::TownObject;
use self::op::{town_ops, TownCall, TownOp};
use crate::api::{self, Incoming, Plan};
use crate::db::Db;
use crate::effects::{rig_op, Effects};
use crate::error::{ApiError, ApiResult};
use crate::escalations::NewEscalation;
use crate::model::{Priority, RigRecord, TownEscalation, TownView};
use crate::params;
use crate::requests::{metadata, parse_value, text, Issues, Shape, Validate, MAX_TITLE};
use crate::rig::config::{default_branch, Configure, RigConfigInput};
use crate::rig::op::to_json;
use crate::routes::{Endpoint, Rule};
use crate::spending::TownLimits;

/// Towns and their rigs (internal).
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/towns", Rule::Internal, create),
    Endpoint::get("/api/towns", Rule::Internal, list),
    Endpoint::get("/api/towns/:townId", Rule::Internal, get),
    Endpoint::post("/api/towns/:townId/rigs", Rule::Internal, create_rig),
    Endpoint::get("/api/towns/:townId/rigs", Rule::Internal, list_rigs),
];

fn create(req: &Incoming) -> ApiResult<Plan> {
    let town: NewTown = req.body()?;
    let town_id = (req.new_id)();
    api::town(town_id.clone(), &CreateTown { town_id, town }, 201)
}

fn list(_: &Incoming) -> ApiResult<Plan> {
    api::town(INDEX.into(), &ListTowns, 200)
}

fn get(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &GetTown, 200)
}

fn create_rig(req: &Incoming) -> ApiResult<Plan> {
    let mut rig: NewRig = parse_value(req.body, &[])?;
    rig.allow_local_repos = req.allow_local_repos;
    rig.validate()?;
    api::town(req.param("townId")?, &CreateRig { rig }, 201)
}

fn list_rigs(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &ListRigs, 200)
}

/// `POST /api/towns`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTown {
    pub name: String,
    /// Free-form town settings (default model, ...), a JSON object.
    #[serde(default)]
    pub config: Option<Value>,
}

impl Shape for NewTown {}

impl Validate for NewTown {
    fn check(&self, i: &mut Issues) {
        i.add("name", text(&self.name, MAX_TITLE));
        i.add("config", metadata(&self.config));
    }
}

/// `POST /api/towns/:townId/rigs`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRig {
    pub name: String,
    pub git_url: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Merge settings, as in [`RigConfigInput`].
    #[serde(flatten)]
    pub merge: crate::refinery::MergeSettings,
    #[serde(skip_deserializing, default)]
    pub allow_local_repos: bool,
}

impl Shape for NewRig {}

impl Validate for NewRig {
    fn check(&self, i: &mut Issues) {
        let policy = validate::ValidationPolicy { allow_local_repos: self.allow_local_repos };
        i.add("name", text(&self.name, MAX_TITLE));
        i.add("git_url", validate::git_url(&self.git_url, policy).map(|_| ()));
        i.add("git_url", crate::forge::no_credentials_in(&self.git_url));
        i.add("default_branch", validate::branch(&self.default_branch));
        self.merge.check(i);
    }
}

/// Creates the town, then lists it in the town index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTown {
    pub town_id: String,
    pub town: NewTown,
}

impl TownOp for CreateTown {
    const NAME: &'static str = "create";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let (created, now) = o.with_town(|t| {
            Ok::<_, ApiError>((t.create(&self.town_id, &self.town)?, t.now.clone()))
        })?;
        let index = IndexTown { town_id: self.town_id, name: self.town.name, created_at: now };
        // The town exists either way; unlisted, it is still reachable by its id.
        if let Err(e) = o.fx.town(INDEX, &TownCall::of(&index)?).await {
            o.fx.log_error(&format!("could not add the town to the town index: {e}"));
        }
        crate::rig::op::to_json(created)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetTown;

impl TownOp for GetTown {
    const NAME: &'static str = "get";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        crate::rig::op::to_json(o.with_town(|t| t.get())?)
    }
}

/// Configures the rig's RigDO, then records the rig: a rig is listed only once it is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRig {
    pub rig: NewRig,
}

impl TownOp for CreateRig {
    const NAME: &'static str = "create_rig";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let (rig_id, config) = o.with_town(|t| t.prepare_rig(&self.rig))?;
        rig_op(o.fx, &rig_id, &Configure { rig_id: rig_id.clone(), config }).await?;
        to_json(o.with_town(|t| t.insert_rig(&rig_id, &self.rig))?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListRigs;

impl TownOp for ListRigs {
    const NAME: &'static str = "list_rigs";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        o.with_town(|t| {
            t.get()?;
            to_json(t.rigs()?)
        })
    }
}

/// To the index instance ([`INDEX`]): a town was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexTown {
    pub town_id: String,
    pub name: String,
    pub created_at: String,
}

impl TownOp for IndexTown {
    const NAME: &'static str = "index";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        o.with_town(|t| t.index_add(&self.town_id, &self.name, &self.created_at))
            .map(|()| Value::Null)
    }
}

/// To the index instance: the towns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListTowns;

impl TownOp for ListTowns {
    const NAME: &'static str = "list_towns";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        to_json(o.with_town(|t| t.index_list())?)
    }
}

town_ops!(CreateTown, GetTown, CreateRig, ListRigs, IndexTown, ListTowns);

pub const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE town (id INTEGER PRIMARY KEY CHECK (id = 1), town_id TEXT NOT NULL, name TEXT NOT NULL,
        config TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE rigs (id TEXT PRIMARY KEY, name TEXT NOT NULL, git_url TEXT NOT NULL,
        default_branch TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE escalations (id TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT, priority TEXT NOT NULL,
        metadata TEXT NOT NULL, created_at TEXT NOT NULL)",
], &[
    // Only in the index instance ([`INDEX`]): every town, for `GET /api/towns`.
    "CREATE TABLE town_index (town_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL)",
], crate::mayor::store::MIGRATION, crate::forge::MIGRATION, crate::forge::webhooks::MIGRATION, crate::shards::MIGRATION];

/// The name of the TownDO instance that lists the towns (no town gets this id: town ids are
/// generated UUIDs).
pub const INDEX: &str = "town-index";
/// Most towns `GET /api/towns` lists (the newest first).
pub const MAX_LISTED: i64 = 500;

pub struct Town<'a, D: Db> {
    pub db: &'a D,
    pub now: String,
    pub new_id: &'a dyn Fn() -> String,
}

#[derive(Deserialize)]
struct TownRow {
    town_id: String,
    name: String,
    config: String,
    created_at: String,
}

#[derive(Deserialize)]
struct EscalationRow {
    id: String,
    title: String,
    body: Option<String>,
    priority: Priority,
    metadata: String,
    created_at: String,
}

impl<D: Db> Town<'_, D> {
    fn row(&self) -> ApiResult<TownRow> {
        self.db
            .first("SELECT * FROM town WHERE id = 1", vec![])?
            .ok_or_else(|| ApiError::not_found("town"))
    }

    pub fn create(&self, town_id: &str, t: &NewTown) -> ApiResult<TownView> {
        if self.db.first::<TownRow>("SELECT * FROM town WHERE id = 1", vec![])?.is_some() {
            return Err(ApiError::Conflict("town already exists".into()));
        }
        let config = t.config.clone().filter(|c| !c.is_null()).unwrap_or_else(|| json!({}));
        self.db.exec(
            "INSERT INTO town (id, town_id, name, config, created_at) VALUES (1, ?, ?, ?, ?)",
            params![town_id, &t.name, config.to_string(), &self.now],
        )?;
        self.get()
    }

    pub fn get(&self) -> ApiResult<TownView> {
        let t = self.row()?;
        let config: Value = crate::json::parse(&t.config).unwrap_or(Value::Null);
        Ok(TownView {
            id: t.town_id,
            name: t.name,
            config,
            created_at: t.created_at,
            rigs: self.rigs()?,
        })
    }

    /// Checks the town exists and returns the new rig's id and the RigDO configuration.
    pub fn prepare_rig(&self, r: &NewRig) -> ApiResult<(String, RigConfigInput)> {
        let town = self.row()?;
        let rig_id = (self.new_id)();
        let config = RigConfigInput {
            town_id: town.town_id,
            git_url: r.git_url.clone(),
            default_branch: r.default_branch.clone(),
            name: Some(r.name.clone()),
            merge: r.merge.clone(),
            allow_local_repos: r.allow_local_repos,
        };
        Ok((rig_id, config))
    }

    pub fn insert_rig(&self, rig_id: &str, r: &NewRig) -> ApiResult<RigRecord> {
        self.db.exec(
            "INSERT INTO rigs (id, name, git_url, default_branch, created_at) VALUES (?, ?, ?, ?, ?)",
            params![rig_id, &r.name, &r.git_url, &r.default_branch, &self.now],
        )?;
        self.db
            .first("SELECT * FROM rigs WHERE id = ?", params![rig_id])?
            .ok_or_else(|| ApiError::not_found("rig"))
    }

    pub fn rigs(&self) -> ApiResult<Vec<RigRecord>> {
        self.db.query("SELECT * FROM rigs ORDER BY rowid", vec![])
    }

    /// The town's spending caps (`limits` in its config; none when never set).
    pub fn limits(&self) -> ApiResult<TownLimits> {
        let config: Value = crate::json::parse(&self.row()?.config).unwrap_or(Value::Null);
        Ok(crate::json::decode(config["limits"].clone()).unwrap_or_default())
    }

    /// Replaces the town's spending caps (validated by the caller).
    pub fn set_limits(&self, limits: &TownLimits) -> ApiResult<TownLimits> {
        let mut config: Value =
            crate::json::parse(&self.row()?.config).unwrap_or_else(|_| json!({}));
        if !config.is_object() {
            config = json!({});
        }
        config["limits"] = serde_json::to_value(limits).map_err(ApiError::internal)?;
        self.db.exec("UPDATE town SET config = ? WHERE id = 1", params![config.to_string()])?;
        self.limits()
    }

    pub fn create_escalation(&self, e: &NewEscalation) -> ApiResult<TownEscalation> {
        self.row()?;
        let id = (self.new_id)();
        let metadata = e.metadata.clone().filter(|m| !m.is_null()).unwrap_or_else(|| json!({}));
        let priority = e.priority.unwrap_or(crate::model::Priority::High);
        self.db.exec(
            "INSERT INTO escalations (id, title, body, priority, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            params![&id, &e.title, e.body.clone(), priority.as_str(), metadata.to_string(), &self.now],
        )?;
        self.escalations()?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| ApiError::Internal("the escalation just written is not there".into()))
    }

    /// In the index instance: records a town (again: no change).
    pub fn index_add(&self, town_id: &str, name: &str, created_at: &str) -> ApiResult<()> {
        self.db.exec(
            "INSERT OR IGNORE INTO town_index (town_id, name, created_at) VALUES (?, ?, ?)",
            params![town_id, name, created_at],
        )?;
        Ok(())
    }

    /// In the index instance: the towns, newest first.
    pub fn index_list(&self) -> ApiResult<Vec<Value>> {
        #[derive(Deserialize)]
        struct Row {
            town_id: String,
            name: String,
            created_at: String,
        }
        let rows: Vec<Row> = self
            .db
            .query("SELECT * FROM town_index ORDER BY rowid DESC LIMIT ?", params![MAX_LISTED])?;
        Ok(rows
            .into_iter()
            .map(|r| json!({ "id": r.town_id, "name": r.name, "created_at": r.created_at }))
            .collect())
    }

    pub fn escalations(&self) -> ApiResult<Vec<TownEscalation>> {
        self.row()?;
        let rows: Vec<EscalationRow> =
            self.db.query("SELECT * FROM escalations ORDER BY rowid", vec![])?;
        Ok(rows
            .into_iter()
            .map(|r| TownEscalation {
                id: r.id,
                title: r.title,
                body: r.body,
                priority: r.priority,
                metadata: crate::json::parse(&r.metadata).unwrap_or(Value::Null),
                created_at: r.created_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod native_tests {
    use super::*;
    use crate::native_db::NativeDb;
    use serde_json::json;

    fn town(db: &NativeDb) -> Town<'_, NativeDb> {
        Town { db, now: "2026-12-06T12:00:00.000Z".into(), new_id: &|| "rig-1".to_string() }
    }

    #[test]
    fn a_town_keeps_its_rigs_limits_and_escalations() {
        let db = NativeDb::with(MIGRATIONS);
        let t = town(&db);
        assert_eq!(t.get().map_err(|e| e.status()), Err(404), "no town before it is created");
        let new: NewTown = serde_json::from_value(json!({"name": "alpha"})).expect("new town");
        assert_eq!(t.create("t1", &new).expect("create").name, "alpha");
        let rig: NewRig = serde_json::from_value(
            json!({"name": "app", "git_url": "https://example.com/o/app.git"}),
        )
        .expect("rig");
        let (rig_id, config) = t.prepare_rig(&rig).expect("prepare");
        assert_eq!((config.town_id.as_str(), config.default_branch.as_str()), ("t1", "main"));
        t.insert_rig(&rig_id, &rig).expect("insert");
        assert_eq!(
            t.rigs().expect("rigs").iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            [rig_id]
        );

        let limits: TownLimits =
            serde_json::from_value(json!({"max_concurrent_agents": 2})).expect("limits");
        t.set_limits(&limits).expect("set limits");
        assert_eq!(t.limits().expect("limits"), limits);

        let esc: NewEscalation =
            serde_json::from_value(json!({"title": "on fire", "priority": "critical"}))
                .expect("escalation");
        t.create_escalation(&esc).expect("escalate");
        assert_eq!(t.escalations().expect("list")[0].title, "on fire");
    }

    #[test]
    fn the_index_lists_each_town_once_newest_first() {
        let db = NativeDb::with(MIGRATIONS);
        let t = town(&db);
        t.index_add("t1", "one", "2026-12-06T10:00:00.000Z").expect("add");
        t.index_add("t2", "two", "2026-12-06T11:00:00.000Z").expect("add");
        t.index_add("t1", "one", "2026-12-06T10:00:00.000Z")
            .expect("added again: a retried notice");
        let listed = t.index_list().expect("list");
        let ids: Vec<&str> =
            listed.iter().filter_map(|t| t["id"].as_str().or(t["town_id"].as_str())).collect();
        assert_eq!(ids, ["t2", "t1"], "{listed:?}");
    }
}
