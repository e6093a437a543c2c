//! The records the Worker's public API answers with, as the Worker writes them and `gt` and
//! the tests read them: the reference implementation's field names (snake_case on this API; ids
//! are UUIDs, times ISO-8601 strings).

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

            /// The variant named `value`; the error names `field` and lists the choices.
            pub fn parse(field: &str, value: &str) -> Result<Self, String> {
                match value {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err(format!(
                        "{field}: unknown value, expected one of {}", Self::ALL.join(", ")
                    )),
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
pub use crate::control::AgentRole;

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
    s.serialize_str(&crate::validate::redact_url(url))
}

/// A rig as its town lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RigRecord {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "redacted_url")]
    pub git_url: String,
    pub default_branch: String,
    pub created_at: String,
}

/// A town: `GET /api/towns/:townId` (and the answer to its creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TownView {
    pub id: String,
    pub name: String,
    pub config: Value,
    pub created_at: String,
    pub rigs: Vec<RigRecord>,
}

/// One shard of a town: `GET /api/towns/:townId/shards` (the rigs it holds, and its load at
/// its last heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardView {
    pub shard: u32,
    pub rigs: Vec<String>,
    pub capacity: Option<u32>,
    pub running: u32,
    /// What its Kilo processes held, in bytes, and its warm pool's ready processes, at its last
    /// heartbeat.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub pool_ready: Option<u32>,
    pub boot_id: Option<String>,
    pub reported_at: Option<String>,
    pub unreachable: bool,
}

/// What a sling made: the bead, the polecat it is hooked to, and whether that polecat is new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slung {
    pub bead: Bead,
    pub agent: Agent,
    pub agent_created: bool,
}

/// `GET /api/rigs/:rigId/agents/:agentId/prime`: what an agent starts a turn with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimeContext {
    pub agent: Agent,
    pub hooked_bead: Option<Bead>,
    pub undelivered_mail: Vec<Mail>,
    pub open_beads: Vec<Bead>,
}

/// One event of an agent the Worker kept (`GET /api/towns/:townId/agents/:agentId/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptEvent {
    pub seq: i64,
    pub agent_id: String,
    pub rig_id: String,
    pub at: String,
    pub kind: String,
    pub data: Value,
}

/// A page of an agent's kept events. `next_after`: the `after` of the next page (the query's
/// own when the page is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub events: Vec<KeptEvent>,
    pub next_after: i64,
}

/// The town's usage over some days: `GET /api/towns/:townId/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageAnswer {
    /// The query's first and last day (`YYYY-MM-DD`, the town's days), `null` when open.
    pub from: Option<String>,
    pub to: Option<String>,
    pub total: UsageSums,
    /// What `groups` is grouped by, when the query asked for groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<UsageSums>>,
}

/// The sums of some model calls.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UsageSums {
    /// A group's key (a rig, an agent, a day, ...): absent from the total, `null` for the calls
    /// that have none (a mayor's calls have no bead). Read back, both are `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Option<String>>,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// What the calls cost in USD; `null` when one of them has no known price.
    pub cost_usd: Option<f64>,
    /// What the calls with a known price cost.
    pub cost_usd_known: f64,
}

/// An escalation raised to the town itself (not to one of its rigs, whose escalations are
/// beads of type `escalation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TownEscalation {
    pub id: String,
    pub title: String,
    pub body: Option<String>,
    pub priority: Priority,
    pub metadata: Value,
    pub created_at: String,
}

/// A message of the mayor's conversation (`GET /api/towns/:townId/mayor/messages`): `role`
/// is `person`, `mayor` or `town`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayorMessage {
    pub id: i64,
    pub role: String,
    pub text: String,
    pub created_at: String,
    /// On the mayor's replies: the newest message it had been given when it replied (a
    /// person who sent message N waits for a reply with `inReplyTo >= N`).
    #[serde(rename = "inReplyTo")]
    pub in_reply_to: Option<i64>,
}

/// What sending the mayor a message answers (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MayorSent {
    pub message_id: i64,
    pub agent_id: String,
    /// `active` (given to the running mayor), `starting` (a run was started with it) or
    /// `queued` (kept and tried again; `detail` says why).
    pub session_status: String,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_wire_names_and_list_choices() {
        assert_eq!(serde_json::to_value(BeadType::MergeRequest).expect("ser"), "merge_request");
        assert_eq!(BeadStatus::parse("status", "in_progress"), Ok(BeadStatus::InProgress));
        let err = BeadStatus::parse("status", "done").expect_err("unknown");
        assert!(err.contains("open, in_progress, closed, failed"), "{err}");
    }
}
