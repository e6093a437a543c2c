//! The container's heartbeat: one request per container per interval, carrying every active
//! agent (the reference sent one request per agent; a town with many agents would then make
//! many Worker requests per interval for no benefit).
//!
//! `POST /api/towns/:townId/container/heartbeat` with [`ContainerHeartbeat`].

use serde::{Deserialize, Serialize};

use crate::control::ProcessStatus;

/// One agent's entry: the reference's per-agent heartbeat body plus the last activity time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentHeartbeat {
    pub agent_id: String,
    pub rig_id: String,
    pub town_id: String,
    pub status: ProcessStatus,
    /// When this entry was taken (ISO-8601).
    pub timestamp: String,
    /// The last time the agent did something observable (ISO-8601).
    pub last_activity_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerHeartbeat {
    pub town_id: String,
    pub timestamp: String,
    /// Milliseconds since the control server started.
    pub uptime: u64,
    /// Names this run of the control server (as `/health`'s `bootId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The town's shard this container is (our addition; 0, the town's first, when absent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shard: u32,
    /// How many agents may run here at once now (our addition, as `/health`'s `capacity`):
    /// the town places rigs on the shard with the most room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// The memory its Kilo processes hold, in bytes (our addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Its warm pool's ready processes (our addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_ready: Option<u32>,
    pub agents: Vec<AgentHeartbeat>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `POST /api/towns/:town/container/events` (container token): agents' events for the Worker to
/// keep, so their history survives a container restart. Sent every few seconds with
/// the events since the last accepted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEventBatch {
    /// Names this run of the control server: event ids start again at 1 after a restart, so
    /// (agent, boot, id) is what makes a resent event a duplicate.
    pub boot_id: String,
    pub events: Vec<AgentEventRecord>,
}

/// One agent event as the Worker keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEventRecord {
    pub agent_id: String,
    pub rig_id: String,
    #[serde(flatten)]
    pub event: crate::control::AgentEvent,
}
