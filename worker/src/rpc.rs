//! The typed request/response layer for calls into Durable Objects (from the Worker and from
//! other Durable Objects).
//!
//! Rust Durable Objects cannot expose JS RPC methods, so every call is an HTTP `POST` on the
//! stub. Instead of each object routing on ad-hoc paths, each object has one op enum (its whole
//! interface, checked by the compiler on both sides), sent as `{"op": "...", "args": {...}}` to
//! `https://do/rpc`. The reply is the public envelope with the error's status code, so an error
//! raised inside an object reaches the client unchanged ([`ApiError::from_status`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::escalations::NewEscalation;
use crate::rig::agents::{AgentFilter, DoneRequest, NewAgent};
use crate::rig::beads::{BeadFilter, NewBead, StatusUpdate};
use crate::rig::config::RigConfigInput;
use crate::rig::convoys::NewConvoy;
use crate::rig::events::EventFilter;
use crate::rig::mail::NewMail;
use crate::rig::review::{NewReview, ReviewFilter};
use crate::rig::sling::SlingRequest;
use crate::spending::TownLimits;
use crate::town::{NewRig, NewTown};

/// The URL calls are sent to; the host is ignored by the stub.
pub const RPC_URL: &str = "https://do/rpc";

/// The interface of a RigDO (one per rig, named by rig id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum RigOp {
    Configure {
        rig_id: String,
        config: RigConfigInput,
    },
    GetConfig,
    CreateBead(NewBead),
    ListBeads(BeadFilter),
    GetBead {
        bead_id: String,
    },
    UpdateBeadStatus {
        bead_id: String,
        update: StatusUpdate,
    },
    CloseBead {
        bead_id: String,
        agent_id: String,
    },
    RegisterAgent(NewAgent),
    ListAgents(AgentFilter),
    GetAgent {
        agent_id: String,
    },
    Hook {
        agent_id: String,
        bead_id: String,
    },
    Unhook {
        agent_id: String,
    },
    Prime {
        agent_id: String,
    },
    Done {
        agent_id: String,
        done: DoneRequest,
    },
    Checkpoint {
        agent_id: String,
        data: Value,
    },
    CheckMail {
        agent_id: String,
    },
    Heartbeat {
        agent_id: String,
    },
    /// From the container's batched heartbeat: `(agent id, last activity)`. Unknown agents
    /// are skipped; returns how many were updated.
    ContainerHeartbeat {
        agents: Vec<(String, String)>,
    },
    SendMail(NewMail),
    SubmitReview(NewReview),
    ListReviews(ReviewFilter),
    CreateEscalation(NewEscalation),
    Sling {
        rig_id: String,
        sling: SlingRequest,
    },
    ListEvents(EventFilter),
    CreateConvoy {
        rig_id: String,
        convoy: NewConvoy,
    },
    ListConvoys,
    GetConvoy {
        convoy_id: String,
    },
    /// The mayor answers an escalation: it is closed, and `answer` is mailed (from the mayor)
    /// to the agent that raised it, when an agent did.
    ResolveEscalation {
        escalation_id: String,
        answer: String,
    },
}

impl RigOp {
    /// Ops after which hooked work may wait for a dispatch, or a review entry for the refinery:
    /// they arm the scheduler's alarm.
    pub fn arms_scheduler(&self) -> bool {
        matches!(
            self,
            Self::Hook { .. }
                | Self::Sling { .. }
                | Self::Configure { .. }
                | Self::CreateConvoy { .. }
                | Self::SubmitReview(_)
                | Self::Done { .. }
        )
    }

    /// Ops that create work or agents: refused with 404 `Rig not found`, creating nothing, on a
    /// rig no town has configured (a mistyped rig id must not leave a bead nobody can run).
    pub fn needs_configured_rig(&self) -> bool {
        matches!(
            self,
            Self::CreateBead(_)
                | Self::RegisterAgent(_)
                | Self::SendMail(_)
                | Self::Sling { .. }
                | Self::CreateConvoy { .. }
                | Self::CreateEscalation(_)
        )
    }

    /// The agent whose run this op proves started for real: its own calls from inside a run
    /// (prime, checkpoint, mail check, heartbeat). The scheduler's attempt count then resets.
    pub fn run_proof(&self) -> Option<&str> {
        match self {
            Self::Prime { agent_id }
            | Self::Checkpoint { agent_id, .. }
            | Self::CheckMail { agent_id }
            | Self::Heartbeat { agent_id } => Some(agent_id),
            _ => None,
        }
    }
}

/// The interface of a TownDO (one per town, named by town id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum TownOp {
    Create {
        town_id: String,
        town: NewTown,
    },
    Get,
    CreateRig {
        rig: NewRig,
    },
    ListRigs,
    CreateEscalation(NewEscalation),
    ListEscalations,
    GetLimits,
    SetLimits(TownLimits),
    /// To the index instance (`town::INDEX`): a town was created.
    Index {
        town_id: String,
        name: String,
        created_at: String,
    },
    /// To the index instance: the towns.
    ListTowns,
    /// The town's mayor (`crate::mayor`).
    Mayor(crate::mayor::MayorOp),
}

/// The interface of an AgentIdentityDO (one per agent identity string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum IdentityOp {
    /// Records that the identity is (again) active as `agent_id` in `rig_id`.
    Upsert {
        identity: String,
        agent_id: String,
        name: String,
        role: String,
        rig_id: String,
        town_id: Option<String>,
    },
    /// Counts one more completed bead.
    RecordCompletion {
        identity: String,
        bead_id: String,
    },
    Get,
}

/// The reply body of a call, with the status carried by the HTTP response.
pub fn reply_body(result: &ApiResult<Value>) -> (u16, Value) {
    match result {
        Ok(data) => (200, crate::error::success(data.clone())),
        Err(e) => (e.status(), e.envelope()),
    }
}

/// Decodes a reply received from an object.
pub fn decode_reply(status: u16, body: &[u8]) -> ApiResult<Value> {
    #[derive(Deserialize)]
    struct Envelope {
        success: bool,
        #[serde(default)]
        data: Value,
        #[serde(default)]
        error: Option<String>,
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        ApiError::Internal(format!(
            "undecodable reply from a Durable Object (status {status}): {e}"
        ))
    })?;
    if env.success && (200..300).contains(&status) {
        Ok(env.data)
    } else {
        Err(ApiError::from_status(status, env.error.unwrap_or_else(|| "unknown error".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_tagged_and_round_trip() {
        let op = RigOp::Hook { agent_id: "a".into(), bead_id: "b".into() };
        let v = serde_json::to_value(&op).expect("ser");
        assert_eq!(v, serde_json::json!({"op": "hook", "args": {"agent_id": "a", "bead_id": "b"}}));
        assert_eq!(serde_json::from_value::<RigOp>(v).expect("de"), op);
        let get = serde_json::to_value(RigOp::GetConfig).expect("ser");
        assert_eq!(serde_json::from_value::<RigOp>(get).expect("de"), RigOp::GetConfig);
    }

    #[test]
    fn replies_carry_errors_with_their_status() {
        let (status, body) = reply_body(&Err(ApiError::Conflict("hooked".into())));
        let bytes = serde_json::to_vec(&body).expect("ser");
        assert_eq!(decode_reply(status, &bytes), Err(ApiError::Conflict("hooked".into())));
        let (status, body) = reply_body(&Ok(serde_json::json!({"x": 1})));
        assert_eq!(
            decode_reply(status, &serde_json::to_vec(&body).expect("ser")),
            Ok(serde_json::json!({"x": 1}))
        );
        assert!(matches!(decode_reply(500, b"oops"), Err(ApiError::Internal(_))));
    }
}
