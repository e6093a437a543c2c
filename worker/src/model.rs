//! The records the API returns (`shared_types::records`, shared with `gt` and the tests) and
//! the Worker's own: a rig's configuration, written without credentials.

use serde::{Deserialize, Serialize};
pub use shared_types::records::*;

/// A rig's configuration, set by its town (or an internal caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RigConfig {
    pub rig_id: String,
    pub town_id: String,
    pub name: Option<String>,
    /// Serialized without credentials (see [`redacted_url`]); the full URL stays in storage.
    #[serde(serialize_with = "redacted_url")]
    pub git_url: String,
    pub default_branch: String,
    pub updated_at: String,
    /// How reviewed branches are merged (`merge_gates`, `max_rework_rounds`, ...).
    #[serde(flatten)]
    pub merge: crate::refinery::MergeSettings,
}
