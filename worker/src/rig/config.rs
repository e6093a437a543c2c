//! The rig's configuration (town, git URL, default branch, merge settings), set by its town.

use serde::Deserialize;

use super::Rig;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::model::RigConfig;
use crate::params;
use crate::requests::RigConfigInput;

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
            merge: serde_json::from_str(&row.merge_settings).unwrap_or_default(),
        })
    }
}
