//! The typed request/response layer for calls into Durable Objects (from the Worker and from
//! other Durable Objects).
//!
//! Rust Durable Objects cannot expose JS RPC methods, so every call is an HTTP `POST` on the
//! stub to `https://do/rpc`. Instead of each object routing on ad-hoc paths, each call is a
//! typed op: the RigDO's and the TownDO's ops are types in their resource modules, sent as
//! `{"op": "...", "args": {...}}` ([`crate::rig::op`], [`crate::town::op`]); an identity's are
//! the enum below, sent externally tagged (`{"upsert": {...}}`, `"get"`). Enums here and
//! [`crate::mayor::MayorOp`] are externally tagged because serde decodes that form without
//! buffering, which an adjacently tagged enum needs (about 20 KB of the gzipped wasm). The reply is the public envelope with the error's status code, so an error
//! raised inside an object reaches the client unchanged ([`ApiError::from_status`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The URL calls are sent to; the host is ignored by the stub.
pub const RPC_URL: &str = "https://do/rpc";

/// The interface of an AgentIdentityDO (one per agent identity string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    let env: Envelope = crate::json::from_bytes(body).map_err(|e| {
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
        use crate::rig::agents::Hook;
        use crate::rig::op::RigCall;
        let op = Hook { agent_id: "a".into(), bead_id: "b".into() };
        let v = serde_json::to_value(RigCall::of(&op).expect("call")).expect("ser");
        assert_eq!(v, serde_json::json!({"op": "hook", "args": {"agent_id": "a", "bead_id": "b"}}));
        let call: RigCall = serde_json::from_value(v).expect("de");
        assert_eq!(serde_json::from_value::<Hook>(call.args).expect("args"), op);
        let op = IdentityOp::Get;
        let v = serde_json::to_value(&op).expect("ser");
        assert_eq!(serde_json::from_value::<IdentityOp>(v).expect("de"), op);
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
