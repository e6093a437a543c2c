//! The rig's configuration (town, git URL, default branch, merge settings), set by its town.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_types::validate;

use super::op::{rig_ops, to_json, RigOp};
use super::Rig;
use crate::api::{self, Incoming, Plan};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::model::RigConfig;
use crate::params;
use crate::requests::{opt_text, parse_value, Issues, Shape, Validate, MAX_TITLE};
use crate::routes::{Endpoint, Rule};

/// The rig's configuration (internal; the TownDO sets it when it creates a rig).
pub const ROUTES: &[Endpoint] = &[
    Endpoint::get("/api/rigs/:rigId/config", Rule::Internal, get),
    Endpoint::put("/api/rigs/:rigId/config", Rule::Internal, put),
];

fn get(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, GetConfig)
}

fn put(req: &Incoming) -> ApiResult<Plan> {
    let mut config: RigConfigInput = parse_value(req.body, &[])?;
    config.allow_local_repos = req.allow_local_repos;
    config.validate()?;
    let rig_id = req.param("rigId")?;
    api::rig(rig_id.clone(), Configure { rig_id, config })
}

/// `PUT /api/rigs/:rigId/config` (internal), also sent by the TownDO when it creates a rig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RigConfigInput {
    pub town_id: String,
    pub git_url: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Merge settings (`merge_gates`, `gate_timeout_secs`, `max_rework_rounds`,
    /// `delete_merged_branches`, `merge_strategy`), each optional.
    #[serde(flatten)]
    pub merge: crate::refinery::MergeSettings,
    /// Set by the Worker from its `ALLOW_LOCAL_REPOS` var, never read from the client.
    #[serde(skip_deserializing, default)]
    pub allow_local_repos: bool,
}

pub(crate) fn default_branch() -> String {
    "main".into()
}

impl Shape for RigConfigInput {}

impl Validate for RigConfigInput {
    fn check(&self, i: &mut Issues) {
        let policy = validate::ValidationPolicy { allow_local_repos: self.allow_local_repos };
        i.add("town_id", validate::id(&self.town_id));
        i.add("git_url", validate::git_url(&self.git_url, policy).map(|_| ()));
        i.add("git_url", crate::forge::no_credentials_in(&self.git_url));
        i.add("default_branch", validate::branch(&self.default_branch));
        i.add("name", opt_text(&self.name, MAX_TITLE));
        self.merge.check(i);
    }
}

#[derive(Deserialize)]
struct Row {
    rig_id: String,
    town_id: String,
    name: Option<String>,
    git_url: String,
    default_branch: String,
    updated_at: String,
    merge_settings: String,
}

/// Sent by the TownDO when it creates the rig, and by `PUT /api/rigs/:rigId/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Configure {
    pub rig_id: String,
    pub config: RigConfigInput,
}

impl RigOp for Configure {
    const NAME: &'static str = "configure";
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.configure(&self.rig_id, &self.config)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetConfig;

impl RigOp for GetConfig {
    const NAME: &'static str = "get_config";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        let config = rig.config()?;
        let mut shown = to_json(&config)?;
        // Stored before such URLs were refused: it still works, and says why it should not.
        if crate::forge::no_credentials_in(&config.git_url).is_err() {
            shown["warning"] = Value::String(format!(
                "git_url holds a credential, which the rig's shared clone keeps where every agent of the rig can read it; \
                 configure the forge (PUT /api/towns/{}/forge), which takes its place, then set git_url without it",
                config.town_id
            ));
        }
        Ok(shown)
    }
}

rig_ops!(Configure, GetConfig);

impl<D: Db> Rig<'_, D> {
    pub(super) fn configure(&self, rig_id: &str, c: &RigConfigInput) -> ApiResult<RigConfig> {
        let merge = serde_json::to_string(&c.merge).map_err(ApiError::internal)?;
        self.db.exec(
            "INSERT OR REPLACE INTO rig_config (id, rig_id, town_id, name, git_url, default_branch, updated_at, merge_settings)
             VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            params![rig_id, &c.town_id, c.name.clone(), &c.git_url, &c.default_branch, &self.now, merge],
        )?;
        self.config()
    }

    /// Whether a town has configured this rig.
    pub fn is_configured(&self) -> ApiResult<bool> {
        Ok(self
            .db
            .first::<serde_json::Value>("SELECT id FROM rig_config WHERE id = 1", vec![])?
            .is_some())
    }

    pub fn config(&self) -> ApiResult<RigConfig> {
        let row: Row = self
            .db
            .first("SELECT * FROM rig_config WHERE id = 1", vec![])?
            .ok_or_else(|| ApiError::NotFound("rig is not configured".into()))?;
        Ok(RigConfig {
            rig_id: row.rig_id,
            town_id: row.town_id,
            name: row.name,
            git_url: row.git_url,
            default_branch: row.default_branch,
            updated_at: row.updated_at,
            // Stored by `configure` from validated settings; unreadable text falls back to defaults.
            merge: crate::json::from_text(&row.merge_settings).unwrap_or_default(),
        })
    }
}
