//! Records the API returns and the enums they use, with the reference implementation's field
//! names (snake_case on this API; ids are UUIDs, times ISO-8601 strings).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Declares a string enum with its wire names, `as_str`, and a parser whose error lists the
/// allowed values (used for query parameters; bodies get serde's equivalent message).
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $wire)] $variant),+ }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($wire),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }

            pub fn parse(field: &str, value: &str) -> Result<Self, crate::error::ApiError> {
                match value {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err(crate::error::ApiError::bad_request(format!(
                        "{field}: unknown value, expected one of {}", Self::ALL.join(", ")
                    ))),
                }
            }
        }
    };
}

wire_enum!(BeadType { Issue = "issue", Message = "message", Escalation = "escalation", MergeRequest = "merge_request" });
wire_enum!(BeadStatus { Open = "open", InProgress = "in_progress", Closed = "closed", Failed = "failed" });
wire_enum!(Priority { Low = "low", Medium = "medium", High = "high", Critical = "critical" });

/// Beads are `medium` unless the request says otherwise.
impl Default for Priority {
    fn default() -> Self {
        Self::Medium
    }
}
wire_enum!(AgentStatus { Idle = "idle", Working = "working", Blocked = "blocked", Dead = "dead" });
wire_enum!(ReviewStatus { Pending = "pending", Running = "running", Merged = "merged", Rework = "rework", Failed = "failed" });
wire_enum!(
    /// What happened to a bead (or, for mail, to the rig): the bead event log.
    EventKind {
        Created = "created",
        Hooked = "hooked",
        Unhooked = "unhooked",
        StatusChanged = "status_changed",
        Closed = "closed",
        MailSent = "mail_sent",
        ReviewSubmitted = "review_submitted",
        AgentDispatched = "agent_dispatched",
        AgentExited = "agent_exited",
        MergeStarted = "merge_started",
        Merged = "merged",
        Rework = "rework",
        Escalated = "escalated",
        Nudged = "nudged",
        Queued = "queued",
        PrOpened = "pr_opened",
    }
);
pub use shared_types::AgentRole;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bead {
    pub id: String,
    #[serde(rename = "type")]
    pub bead_type: BeadType,
    pub status: BeadStatus,
    pub title: String,
    pub body: Option<String>,
    pub assignee_agent_id: Option<String>,
    pub convoy_id: Option<String>,
    pub molecule_id: Option<String>,
    pub priority: Priority,
    pub labels: Vec<String>,
    pub metadata: Value,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub role: AgentRole,
    pub name: String,
    pub identity: String,
    /// The reference's field for a cloud agent session; always `null` here (runs are tracked by
    /// the scheduler instead).
    #[serde(default)]
    pub cloud_agent_session_id: Option<String>,
    pub status: AgentStatus,
    pub current_hook_bead_id: Option<String>,
    pub last_activity_at: Option<String>,
    pub checkpoint: Option<Value>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    pub id: String,
    pub from_agent_id: String,
    pub to_agent_id: String,
    pub subject: String,
    pub body: String,
    pub delivered: bool,
    pub created_at: String,
    pub delivered_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewEntry {
    pub id: String,
    pub agent_id: String,
    pub bead_id: String,
    pub branch: String,
    pub pr_url: Option<String>,
    pub status: ReviewStatus,
    pub summary: Option<String>,
    pub created_at: String,
    pub processed_at: Option<String>,
    /// The refinery's outcome once processed: `{state, commit?, detail?, output?}` (our
    /// addition to the reference's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The pull request that carries the entry (the `pr` strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_number: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeadEvent {
    pub id: String,
    pub bead_id: Option<String>,
    pub agent_id: Option<String>,
    pub kind: EventKind,
    pub data: Value,
    pub created_at: String,
}

/// Serializes a git URL with any `user:token@` replaced by `***@`: a private repository's URL
/// may carry a token, and responses never show secrets. Only the dispatch to the container
/// (which needs it to clone) uses the stored URL.
pub fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&shared_types::validate::redact_url(url))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_wire_names_and_list_choices() {
        assert_eq!(serde_json::to_value(BeadType::MergeRequest).expect("ser"), "merge_request");
        assert_eq!(BeadStatus::parse("status", "in_progress"), Ok(BeadStatus::InProgress));
        let err = BeadStatus::parse("status", "done").expect_err("unknown");
        assert!(err.public_message().contains("open, in_progress, closed, failed"));
    }
}
