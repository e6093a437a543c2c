//! What an authorized request asks for ([`Plan`]): which Durable Object, which op, which
//! success status, and what follows. Each endpoint's `plan` (in its resource module, listed in
//! [`crate::routes`]) builds one; it is pure: bodies are parsed and validated, and agent ids in
//! bodies are checked against the caller, all before any object is called, so a refused
//! request changes nothing. The runtime carries the plan out.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::requests::{parse_body, Shape, Validate};
use crate::rig::op::{RigCall, RigOp};
use crate::routes::{Method, Params};
use crate::rpc::IdentityOp;
use crate::shards::{ShardChoice, ShardRef, ShardReport};
use crate::town::op::{TownCall, TownOp};

/// An authorized request.
pub struct Incoming<'a> {
    /// The path's validated parameters.
    pub params: Params,
    pub caller: Caller,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub body: &'a [u8],
    /// The Worker's `ALLOW_LOCAL_REPOS` var: accept `file://` git URLs (local development).
    pub allow_local_repos: bool,
    pub new_id: &'a dyn Fn() -> String,
    /// A request header by (lowercase) name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

impl Incoming<'_> {
    /// The path parameter `name` (`rigId`, `beadId`, ...).
    pub fn param(&self, name: &str) -> ApiResult<String> {
        self.params.get(name)
    }

    /// The body as `T`, checked (its schema, then its own rules).
    pub fn body<T: serde::de::DeserializeOwned + Shape + Validate>(&self) -> ApiResult<T> {
        parse_body(self.body)
    }
}

/// What to do after a rig op succeeded: keep the agent's identity record up to date. These are
/// best effort: the rig's state is the source of truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    None,
    /// `data` is an agent: record its identity's new session.
    IdentityFromAgent,
    /// `data` is a sling result: as above when it registered a new polecat.
    IdentityFromSling,
    /// `data` is a done result: count a completed bead for the agent's identity.
    Completion,
    /// `data` is a convoy: as [`FollowUp::IdentityFromSling`] for each new polecat.
    IdentityFromConvoy,
}

/// What a rig route answers: the op's data, or (as the reference's routes that only acknowledge)
/// `{"<key>": true}`. The follow-up still sees the op's full data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Data,
    Ack(&'static str),
}

impl Reply {
    /// The `data` of the response for the op's `data`.
    pub fn body(self, data: Value) -> Value {
        match self {
            Self::Data => data,
            Self::Ack(key) => json!({ key: true }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// `{"status":"ok"}`, without the envelope (`GET /health`, as the reference).
    Health,
    /// The dashboard page.
    Page,
    /// The live stream of an agent: the WebSocket upgrade goes, with its ticket, to the
    /// TownContainer of the agent's shard.
    Stream {
        at: ShardChoice,
        agent_id: String,
        ticket: String,
    },
    Rig {
        rig_id: String,
        op: RigCall,
        status: u16,
        follow_up: FollowUp,
        reply: Reply,
    },
    Town {
        town_id: String,
        op: TownCall,
        status: u16,
    },
    Identity {
        identity: String,
        op: IdentityOp,
    },
    /// Forward the request, method and body unchanged, to a town shard's container (its
    /// TownContainer object); `path` is the control server's.
    Container {
        at: ShardChoice,
        path: String,
        body: Vec<u8>,
    },
    /// Call one of the town's first TownContainer object's own paths with `body` (it keeps the
    /// town's ledgers for every shard); its data is the answer.
    TownContainer {
        town_id: String,
        path: &'static str,
        body: Value,
    },
    /// The container's heartbeat, split per rig: `(rig id, [(agent id, last activity)])`. Every
    /// rig must be one of `town_id`'s (checked against the TownDO before anything is updated).
    /// The shard's load (`report`: its running agents, the active ones, keep its container
    /// awake) goes to its TownContainer and to the TownDO's map. Only rigs placed on the
    /// shard are updated (the TownDO names them).
    Heartbeat {
        at: ShardRef,
        report: ShardReport,
        rig_updates: Vec<(String, Vec<(String, String)>)>,
    },
}

/// A rig op answered with its data (200).
pub fn rig<O: RigOp>(rig_id: String, op: O) -> ApiResult<Plan> {
    rig_plan(rig_id, RigCall::of(&op)?, 200, FollowUp::None, Reply::Data)
}

/// A rig op and how its result is answered.
pub fn rig_plan(
    rig_id: String,
    op: RigCall,
    status: u16,
    follow_up: FollowUp,
    reply: Reply,
) -> ApiResult<Plan> {
    Ok(Plan::Rig { rig_id, op, status, follow_up, reply })
}

/// A rig op answered with `{"<key>": true}`.
pub fn ack<O: RigOp>(rig_id: String, op: O, status: u16, key: &'static str) -> ApiResult<Plan> {
    rig_plan(rig_id, RigCall::of(&op)?, status, FollowUp::None, Reply::Ack(key))
}

/// A rig op that creates something (201), and what follows it.
pub fn created<O: RigOp>(rig_id: String, op: O, follow_up: FollowUp) -> ApiResult<Plan> {
    rig_plan(rig_id, RigCall::of(&op)?, 201, follow_up, Reply::Data)
}

/// A town op (`status` on success).
pub fn town<O: TownOp>(town_id: String, op: &O, status: u16) -> ApiResult<Plan> {
    Ok(Plan::Town { town_id, op: TownCall::of(op)?, status })
}

/// The `Idempotency-Key` of a call that changes something, scoped to its caller so two callers
/// never share a key: `None` for reads and calls without one. A malformed key is a 400 (and the
/// call is not made): a retry must be able to send the same key again.
pub fn idempotency_key(
    caller: &Caller,
    method: Method,
    header: Option<&str>,
) -> ApiResult<Option<String>> {
    let Some(key) = header.filter(|_| !matches!(method, Method::Get)) else { return Ok(None) };
    let well_formed = (8..=128).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(ApiError::bad_request(
            "Idempotency-Key: must be 8 to 128 letters, digits, '-' or '_'",
        ));
    }
    let scope = match caller {
        Caller::Agent(claims) => format!("agent/{}", claims.agent_id),
        Caller::Internal => "internal".to_string(),
        Caller::Container => "container".to_string(),
        Caller::Public => "public".to_string(),
    };
    Ok(Some(format!("{scope}:{key}")))
}

/// The part of a reply the follow-ups read: an agent...
#[derive(Deserialize)]
struct AgentRef {
    id: String,
    name: String,
    role: String,
    identity: String,
}

/// ...a sling's result...
#[derive(Deserialize)]
struct Slung {
    agent: AgentRef,
    agent_created: bool,
}

/// ...a convoy's...
#[derive(Deserialize)]
struct Convoy {
    slung: Vec<Slung>,
}

/// ...and what `done` answers.
#[derive(Deserialize)]
struct Done {
    agent: AgentRef,
    review_entry: DoneEntry,
}

#[derive(Deserialize)]
struct DoneEntry {
    bead_id: String,
}

/// The identity ops a rig op's result calls for (none, one, or one per new polecat). A reply
/// without the fields a follow-up reads has none: the rig's state is the source of truth.
pub fn follow_up(kind: FollowUp, rig_id: &str, data: &Value) -> Vec<(String, IdentityOp)> {
    fn read<T: serde::de::DeserializeOwned>(data: &Value) -> Option<T> {
        // From a copy: a type's one decoder reads owned values (crate::json).
        crate::json::decode(data.clone()).ok()
    }
    let upsert = |a: AgentRef| {
        let op = IdentityOp::Upsert {
            identity: a.identity.clone(),
            agent_id: a.id,
            name: a.name,
            role: a.role,
            rig_id: rig_id.to_string(),
            town_id: None,
        };
        (a.identity, op)
    };
    let created = |s: Slung| s.agent_created.then(|| upsert(s.agent));
    match kind {
        FollowUp::None => Vec::new(),
        FollowUp::IdentityFromAgent => read::<AgentRef>(data).map(upsert).into_iter().collect(),
        FollowUp::IdentityFromSling => read::<Slung>(data).and_then(created).into_iter().collect(),
        FollowUp::IdentityFromConvoy => read::<Convoy>(data)
            .map(|c| c.slung.into_iter().filter_map(created).collect())
            .unwrap_or_default(),
        FollowUp::Completion => read::<Done>(data)
            .map(|d| {
                let identity = d.agent.identity;
                let op = IdentityOp::RecordCompletion {
                    identity: identity.clone(),
                    bead_id: d.review_entry.bead_id,
                };
                vec![(identity, op)]
            })
            .unwrap_or_default(),
    }
}

/// Plans a request as the Worker does, for the resource modules' tests.
#[cfg(test)]
pub fn plan_for(method: Method, path: &str, caller: Caller, body: &str) -> ApiResult<Plan> {
    plan_with_headers(method, path, caller, body, &[])
}

/// [`plan_for`] with request headers (lowercase names).
#[cfg(test)]
pub fn plan_with_headers(
    method: Method,
    path: &str,
    caller: Caller,
    body: &str,
    headers: &[(&str, &str)],
) -> ApiResult<Plan> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let matched = crate::routes::find(method, path)?;
    let ids = || "new-id".to_string();
    let header = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
    (matched.endpoint.plan)(&Incoming {
        params: matched.params,
        caller,
        query,
        body: body.as_bytes(),
        allow_local_repos: false,
        new_id: &ids,
        header: &header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::AgentClaims;

    fn agent(id: &str) -> Caller {
        Caller::Agent(AgentClaims {
            agent_id: id.into(),
            rig_id: "r1".into(),
            town_id: "t".into(),
            user_id: "u".into(),
            exp: 1,
            iat: None,
            role: None,
        })
    }

    #[test]
    fn agents_act_only_as_themselves() {
        let p = plan_for(
            Method::Post,
            "/api/rigs/r1/beads/b1/close",
            agent("a1"),
            r#"{"agent_id":"a2"}"#,
        );
        assert_eq!(p.map_err(|e| e.status()), Err(403));
        let p = plan_for(
            Method::Post,
            "/api/rigs/r1/beads/b1/close",
            agent("a1"),
            r#"{"agent_id":"a1"}"#,
        );
        assert!(p.is_ok());
        let mail = r#"{"from_agent_id":"a2","to_agent_id":"a1","subject":"s","body":"b"}"#;
        assert_eq!(
            plan_for(Method::Post, "/api/rigs/r1/mail", agent("a1"), mail).map_err(|e| e.status()),
            Err(403)
        );
        assert!(plan_for(Method::Post, "/api/rigs/r1/mail", Caller::Internal, mail).is_ok());
    }

    #[test]
    fn creations_are_201_and_done_counts_a_completion() {
        let p = plan_for(
            Method::Post,
            "/api/rigs/r1/beads",
            Caller::Internal,
            r#"{"type":"issue","title":"t"}"#,
        );
        assert!(matches!(p, Ok(Plan::Rig { status: 201, .. })));
        let p =
            plan_for(Method::Post, "/api/rigs/r1/agents/a1/done", agent("a1"), r#"{"branch":"b"}"#);
        assert!(matches!(
            p,
            Ok(Plan::Rig {
                status: 200,
                follow_up: FollowUp::Completion,
                reply: Reply::Ack("done"),
                ..
            })
        ));
    }

    #[test]
    fn acknowledgements_and_bare_health() {
        let hb = plan_for(Method::Post, "/api/rigs/r1/agents/a1/heartbeat", agent("a1"), "");
        let Ok(Plan::Rig { reply, .. }) = hb else { panic!("{hb:?}") };
        assert_eq!(reply.body(json!({"id": "a1"})), json!({"heartbeat": true}));
        let mail = r#"{"from_agent_id":"a1","to_agent_id":"a2","subject":"s","body":"b"}"#;
        assert!(matches!(
            plan_for(Method::Post, "/api/rigs/r1/mail", agent("a1"), mail),
            Ok(Plan::Rig { status: 201, reply: Reply::Ack("sent"), .. })
        ));
        assert!(matches!(
            plan_for(Method::Get, "/api/rigs/r1/agents/a1/mail", agent("a1"), ""),
            Ok(Plan::Rig { reply: Reply::Data, .. })
        ));
        assert_eq!(plan_for(Method::Get, "/health", Caller::Public, ""), Ok(Plan::Health));
    }

    #[test]
    fn follow_ups() {
        let agent = json!({"id": "a1", "identity": "i", "name": "n", "role": "polecat"});
        assert!(
            matches!(follow_up(FollowUp::IdentityFromAgent, "r", &agent).as_slice(), [(i, IdentityOp::Upsert { .. })] if i == "i")
        );
        let convoy = json!({"slung": [{"agent": agent, "agent_created": true}, {"agent": agent, "agent_created": false}]});
        assert_eq!(follow_up(FollowUp::IdentityFromConvoy, "r", &convoy).len(), 1);
        assert!(follow_up(
            FollowUp::IdentityFromSling,
            "r",
            &json!({"agent": agent, "agent_created": false})
        )
        .is_empty());
        let done = json!({"agent": agent, "review_entry": {"bead_id": "b"}});
        assert!(matches!(
            follow_up(FollowUp::Completion, "r", &done).as_slice(),
            [(_, IdentityOp::RecordCompletion { .. })]
        ));
    }

    #[test]
    fn idempotency_keys_are_scoped_to_the_caller_and_checked() {
        let key = "0123456789abcdef";
        assert_eq!(
            idempotency_key(&agent("a1"), Method::Post, Some(key)),
            Ok(Some(format!("agent/a1:{key}")))
        );
        assert_eq!(
            idempotency_key(&Caller::Internal, Method::Post, Some(key)),
            Ok(Some(format!("internal:{key}")))
        );
        assert_eq!(
            idempotency_key(&agent("a1"), Method::Get, Some(key)),
            Ok(None),
            "reads need none"
        );
        assert_eq!(idempotency_key(&agent("a1"), Method::Post, None), Ok(None));
        for bad in ["short", "has space in it", "a/b/c/d/e/f", &"x".repeat(129)] {
            assert_eq!(
                idempotency_key(&agent("a1"), Method::Post, Some(bad)).map_err(|e| e.status()),
                Err(400),
                "{bad}"
            );
        }
    }
}
