//! From an authorized request to what must be done: which Durable Object, which op, which
//! success status, and what follows. Pure: bodies are parsed and validated here, and agent ids
//! in bodies are checked against the caller, all before any object is called, so a refused
//! request changes nothing.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use shared_types::{validate, AgentEventBatch, ContainerHeartbeat};

use crate::auth::{check_body_agent, Caller};
use crate::error::{ApiError, ApiResult};
use crate::mayor::{self, MayorOp};
use crate::query;
use crate::requests::{
    parse_body, parse_value, CheckpointRequest, DoneRequest, HookRequest, NewAgent, NewBead,
    NewConvoy, NewEscalation, NewMail, NewReview, NewRig, NewTown, RigConfigInput, SlingRequest,
    StatusUpdate,
};
use crate::routes::{Method, Route};
use crate::rpc::{IdentityOp, RigOp, TownOp};
use crate::spending::TownLimits;

/// An authorized request.
pub struct Incoming<'a> {
    pub route: Route,
    pub caller: Caller,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub body: &'a [u8],
    /// The Worker's `ALLOW_LOCAL_REPOS` var: accept `file://` git URLs (local development).
    pub allow_local_repos: bool,
    pub new_id: &'a dyn Fn() -> String,
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
    Respond {
        status: u16,
        data: Value,
    },
    /// A body sent as is, without the envelope (`GET /health`, as the reference).
    Bare {
        status: u16,
        body: Value,
    },
    Rig {
        rig_id: String,
        op: RigOp,
        status: u16,
        follow_up: FollowUp,
        reply: Reply,
    },
    Town {
        town_id: String,
        op: TownOp,
        status: u16,
    },
    Identity {
        identity: String,
        op: IdentityOp,
    },
    /// Forward the request unchanged to the town's container (TownContainer DO).
    Container {
        town_id: String,
        path: String,
    },
    /// Call one of the TownContainer object's own paths with `body`; its data is the answer.
    TownContainer {
        town_id: String,
        path: &'static str,
        body: Value,
    },
    /// The container's heartbeat, split per rig: `(rig id, [(agent id, last activity)])`. Every
    /// rig must be one of `town_id`'s (checked against the TownDO before anything is updated).
    /// `running_agents` (the active ones) goes to the TownContainer: it keeps the container awake.
    Heartbeat {
        town_id: String,
        rig_updates: Vec<(String, Vec<(String, String)>)>,
        running_agents: u32,
        boot_id: Option<String>,
    },
}

fn rig(rig_id: String, op: RigOp) -> Plan {
    Plan::Rig { rig_id, op, status: 200, follow_up: FollowUp::None, reply: Reply::Data }
}

fn ack(rig_id: String, op: RigOp, status: u16, key: &'static str) -> Plan {
    Plan::Rig { rig_id, op, status, follow_up: FollowUp::None, reply: Reply::Ack(key) }
}

fn created(rig_id: String, op: RigOp, follow_up: FollowUp) -> Plan {
    Plan::Rig { rig_id, op, status: 201, follow_up, reply: Reply::Data }
}

pub fn plan(req: &Incoming) -> ApiResult<Plan> {
    use Route::*;
    let body = req.body;
    let caller = &req.caller;
    Ok(match req.route.clone() {
        Health => Plan::Bare { status: 200, body: json!({ "status": "ok" }) },
        CreateBead { rig: r } => {
            let b: NewBead = parse_body(body)?;
            created(r, RigOp::CreateBead(b), FollowUp::None)
        }
        ListBeads { rig: r } => rig(r, RigOp::ListBeads(query::bead_filter(req.query)?)),
        GetBead { rig: r, bead } => rig(r, RigOp::GetBead { bead_id: bead }),
        UpdateBeadStatus { rig: r, bead } => {
            let u: StatusUpdate = parse_body(body)?;
            check_body_agent(caller, "agent_id", &u.agent_id)?;
            rig(r, RigOp::UpdateBeadStatus { bead_id: bead, update: u })
        }
        CloseBead { rig: r, bead } => {
            let c: crate::requests::CloseBead = parse_body(body)?;
            check_body_agent(caller, "agent_id", &c.agent_id)?;
            rig(r, RigOp::CloseBead { bead_id: bead, agent_id: c.agent_id })
        }
        RegisterAgent { rig: r } => {
            let a: NewAgent = parse_body(body)?;
            created(r, RigOp::RegisterAgent(a), FollowUp::IdentityFromAgent)
        }
        ListAgents { rig: r } => rig(r, RigOp::ListAgents(query::agent_filter(req.query)?)),
        GetAgent { rig: r, agent } => rig(r, RigOp::GetAgent { agent_id: agent }),
        Hook { rig: r, agent } => {
            let h: HookRequest = parse_body(body)?;
            ack(r, RigOp::Hook { agent_id: agent, bead_id: h.bead_id }, 200, "hooked")
        }
        Unhook { rig: r, agent } => ack(r, RigOp::Unhook { agent_id: agent }, 200, "unhooked"),
        Prime { rig: r, agent } => rig(r, RigOp::Prime { agent_id: agent }),
        Done { rig: r, agent } => {
            let d: DoneRequest = parse_body(body)?;
            let op = RigOp::Done { agent_id: agent, done: d };
            Plan::Rig {
                rig_id: r,
                op,
                status: 200,
                follow_up: FollowUp::Completion,
                reply: Reply::Ack("done"),
            }
        }
        Checkpoint { rig: r, agent } => {
            let c: CheckpointRequest = parse_body(body)?;
            ack(r, RigOp::Checkpoint { agent_id: agent, data: c.data }, 200, "written")
        }
        CheckMail { rig: r, agent } => rig(r, RigOp::CheckMail { agent_id: agent }),
        AgentHeartbeat { rig: r, agent } => {
            ack(r, RigOp::Heartbeat { agent_id: agent }, 200, "heartbeat")
        }
        SendMail { rig: r } => {
            let m: NewMail = parse_body(body)?;
            check_body_agent(caller, "from_agent_id", &m.from_agent_id)?;
            ack(r, RigOp::SendMail(m), 201, "sent")
        }
        SubmitReview { rig: r } => {
            let v: NewReview = parse_body(body)?;
            check_body_agent(caller, "agent_id", &v.agent_id)?;
            ack(r, RigOp::SubmitReview(v), 201, "submitted")
        }
        CreateEscalation { rig: r } => {
            let mut e: NewEscalation = parse_body(body)?;
            if let Caller::Agent(claims) = caller {
                // Who raised it, set here (never taken from the body): the mayor's answer goes
                // to this agent's mail.
                let mut metadata =
                    e.metadata.take().filter(Value::is_object).unwrap_or_else(|| json!({}));
                metadata["from_agent_id"] = json!(claims.agent_id);
                e.metadata = Some(metadata);
            }
            created(r, RigOp::CreateEscalation(e), FollowUp::None)
        }
        GetRigConfig { rig: r } => rig(r, RigOp::GetConfig),
        PutRigConfig { rig: r } => {
            let mut c: RigConfigInput = parse_value(body, &[])?;
            c.allow_local_repos = req.allow_local_repos;
            crate::requests::Validate::validate(&c)?;
            rig(r.clone(), RigOp::Configure { rig_id: r, config: c })
        }
        Sling { rig: r } => {
            let s: SlingRequest = parse_body(body)?;
            created(r.clone(), RigOp::Sling { rig_id: r, sling: s }, FollowUp::IdentityFromSling)
        }
        ListReviews { rig: r } => rig(r, RigOp::ListReviews(query::review_filter(req.query)?)),
        ListEvents { rig: r } => rig(r, RigOp::ListEvents(query::event_filter(req.query, None)?)),
        CreateConvoy { rig: r } => {
            let c: NewConvoy = parse_body(body)?;
            created(
                r.clone(),
                RigOp::CreateConvoy { rig_id: r, convoy: c },
                FollowUp::IdentityFromConvoy,
            )
        }
        ListConvoys { rig: r } => rig(r, RigOp::ListConvoys),
        GetConvoy { rig: r, convoy } => rig(r, RigOp::GetConvoy { convoy_id: convoy }),
        BeadEvents { rig: r, bead } => {
            rig(r, RigOp::ListEvents(query::event_filter(req.query, Some(bead))?))
        }
        CreateTown => {
            let t: NewTown = parse_body(body)?;
            let town_id = (req.new_id)();
            Plan::Town {
                town_id: town_id.clone(),
                op: TownOp::Create { town_id, town: t },
                status: 201,
            }
        }
        GetTown { town } => Plan::Town { town_id: town, op: TownOp::Get, status: 200 },
        ListTowns => {
            Plan::Town { town_id: crate::town::INDEX.into(), op: TownOp::ListTowns, status: 200 }
        }
        CreateRig { town } => {
            let mut r: NewRig = parse_value(body, &[])?;
            r.allow_local_repos = req.allow_local_repos;
            crate::requests::Validate::validate(&r)?;
            Plan::Town { town_id: town, op: TownOp::CreateRig { rig: r }, status: 201 }
        }
        ListRigs { town } => Plan::Town { town_id: town, op: TownOp::ListRigs, status: 200 },
        GetTownLimits { town } => Plan::Town { town_id: town, op: TownOp::GetLimits, status: 200 },
        SetTownLimits { town } => {
            let limits: TownLimits = parse_body(body)?;
            Plan::Town { town_id: town, op: TownOp::SetLimits(limits), status: 200 }
        }
        CreateTownEscalation { town } => {
            let e: NewEscalation = parse_body(body)?;
            Plan::Town { town_id: town, op: TownOp::CreateEscalation(e), status: 201 }
        }
        ListTownEscalations { town } => {
            Plan::Town { town_id: town, op: TownOp::ListEscalations, status: 200 }
        }
        MayorSend { town } => Plan::Town {
            town_id: town,
            op: TownOp::Mayor(mayor::requests::person_message(body)?),
            status: 202,
        },
        MayorMessages { town } => {
            let (after, limit) = query::transcript_page(req.query)?;
            Plan::Town {
                town_id: town,
                op: TownOp::Mayor(MayorOp::Messages { after, limit }),
                status: 200,
            }
        }
        MayorStatus { town } => {
            Plan::Town { town_id: town, op: TownOp::Mayor(MayorOp::Status), status: 200 }
        }
        MayorTool { town, tool } => {
            let (op, status) = mayor::requests::tool_op(tool, body)?;
            Plan::Town { town_id: town, op: TownOp::Mayor(op), status }
        }
        ContainerProxy { town, path } => Plan::Container { town_id: town, path },
        Dashboard | AgentStream { .. } => {
            return Err(ApiError::Internal(
                "the page and the live stream are served before planning".into(),
            ))
        }
        ContainerHeartbeat { town } => heartbeat(&town, body)?,
        ContainerEvents { town } => {
            let batch: AgentEventBatch = parse_value(body, &[])?;
            crate::agent_events::validate_batch(&batch)?;
            let body = serde_json::to_value(&batch).map_err(ApiError::internal)?;
            Plan::TownContainer { town_id: town, path: crate::container::EVENTS_APPEND_PATH, body }
        }
        AgentEvents { town, agent } => {
            let q = query::agent_event_query(req.query, agent)?;
            let body = serde_json::to_value(&q).map_err(ApiError::internal)?;
            Plan::TownContainer { town_id: town, path: crate::container::EVENTS_LIST_PATH, body }
        }
        GetIdentity { identity } => Plan::Identity { identity, op: IdentityOp::Get },
    })
}

/// The reference Worker's own check on container start and message bodies (before forwarding):
/// a body that is missing, not JSON, or JSON `null`/`false`/`0`/`""` is a 400 `Invalid JSON body`.
pub fn check_container_body(path: &str, body: &[u8]) -> ApiResult<()> {
    if path != "/agents/start" && !path.ends_with("/message") {
        return Ok(());
    }
    let falsy = match serde_json::from_slice::<Value>(body) {
        Err(_) | Ok(Value::Null) | Ok(Value::Bool(false)) => true,
        Ok(Value::Number(n)) => n.as_f64() == Some(0.0),
        Ok(Value::String(s)) => s.is_empty(),
        Ok(_) => false,
    };
    if falsy {
        return Err(ApiError::bad_request("Invalid JSON body"));
    }
    Ok(())
}

fn heartbeat(town: &str, body: &[u8]) -> ApiResult<Plan> {
    let hb: ContainerHeartbeat = parse_value(body, &[])?;
    if hb.town_id != town {
        return Err(ApiError::bad_request("townId: does not match the route"));
    }
    if let Some(boot) = &hb.boot_id {
        validate::id(boot).map_err(|m| ApiError::bad_request(format!("bootId: {m}")))?;
    }
    let mut per_rig: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let running_agents = hb.agents.iter().filter(|a| a.status.is_active()).count() as u32;
    for a in hb.agents {
        validate::id(&a.rig_id).map_err(|m| ApiError::bad_request(format!("agents.rigId: {m}")))?;
        validate::id(&a.agent_id)
            .map_err(|m| ApiError::bad_request(format!("agents.agentId: {m}")))?;
        if a.town_id != town {
            return Err(ApiError::bad_request("agents.townId: does not match the route"));
        }
        if crate::time::millis_from_iso(&a.last_activity_at).is_none() {
            return Err(ApiError::bad_request(
                "agents.lastActivityAt: must be an ISO-8601 UTC time (YYYY-MM-DDTHH:MM:SS.sssZ)",
            ));
        }
        per_rig.entry(a.rig_id).or_default().push((a.agent_id, a.last_activity_at));
    }
    Ok(Plan::Heartbeat {
        town_id: town.to_string(),
        rig_updates: per_rig.into_iter().collect(),
        running_agents,
        boot_id: hb.boot_id,
    })
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

/// The identity ops a rig op's result calls for (none, one, or one per new polecat).
pub fn follow_up(kind: FollowUp, rig_id: &str, data: &Value) -> Vec<(String, IdentityOp)> {
    let upsert = |agent: &Value| {
        let s = |k: &str| agent[k].as_str().map(str::to_string);
        Some((
            s("identity")?,
            IdentityOp::Upsert {
                identity: s("identity")?,
                agent_id: s("id")?,
                name: s("name")?,
                role: s("role")?,
                rig_id: rig_id.to_string(),
                town_id: None,
            },
        ))
    };
    let from_sling = |slung: &Value| {
        if slung["agent_created"] == json!(true) {
            upsert(&slung["agent"])
        } else {
            None
        }
    };
    match kind {
        FollowUp::None => Vec::new(),
        FollowUp::IdentityFromAgent => upsert(data).into_iter().collect(),
        FollowUp::IdentityFromSling => from_sling(data).into_iter().collect(),
        FollowUp::IdentityFromConvoy => data["slung"]
            .as_array()
            .map(|all| all.iter().filter_map(from_sling).collect())
            .unwrap_or_default(),
        FollowUp::Completion => {
            let (Some(identity), Some(bead_id)) =
                (data["agent"]["identity"].as_str(), data["review_entry"]["bead_id"].as_str())
            else {
                return Vec::new();
            };
            vec![(
                identity.to_string(),
                IdentityOp::RecordCompletion {
                    identity: identity.to_string(),
                    bead_id: bead_id.to_string(),
                },
            )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::AgentClaims;
    use crate::routes::{parse, Method};

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

    fn plan_for(method: Method, path: &str, caller: Caller, body: &str) -> ApiResult<Plan> {
        let ids = || "new-id".to_string();
        plan(&Incoming {
            route: parse(method, path)?,
            caller,
            query: "",
            body: body.as_bytes(),
            allow_local_repos: false,
            new_id: &ids,
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
        assert_eq!(
            plan_for(Method::Get, "/health", Caller::Public, ""),
            Ok(Plan::Bare { status: 200, body: json!({"status": "ok"}) })
        );
    }

    #[test]
    fn container_start_and_message_need_a_truthy_json_body() {
        for bad in ["", "{x", "null", "false", "0", "\"\""] {
            for path in ["/agents/start", "/agents/a1/message"] {
                let e = check_container_body(path, bad.as_bytes()).expect_err(bad);
                assert_eq!(
                    (e.status(), e.envelope()),
                    (400, json!({"success": false, "error": "Invalid JSON body"}))
                );
            }
        }
        for ok in ["{}", "[]", "1", "\"x\"", "true"] {
            assert_eq!(check_container_body("/agents/start", ok.as_bytes()), Ok(()), "{ok}");
        }
        assert_eq!(check_container_body("/agents/a1/stop", b""), Ok(()), "stop takes anything");
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

    #[test]
    fn heartbeats_are_split_per_rig_and_checked() {
        let body = json!({"townId": "t1", "timestamp": "x", "uptime": 1, "agents": [
            {"agentId": "a1", "rigId": "r1", "townId": "t1", "status": "running", "timestamp": "x", "lastActivityAt": "2026-01-01T00:00:00.000Z"},
            {"agentId": "a2", "rigId": "r2", "townId": "t1", "status": "running", "timestamp": "x", "lastActivityAt": "2026-01-01T00:00:01.000Z"}
        ]});
        let p = plan_for(
            Method::Post,
            "/api/towns/t1/container/heartbeat",
            Caller::Container,
            &body.to_string(),
        );
        let Ok(Plan::Heartbeat { rig_updates, running_agents, .. }) = p else { panic!("{p:?}") };
        assert_eq!((rig_updates.len(), running_agents), (2, 2));
        let mut booted = body.clone();
        booted["bootId"] = json!("0123456789abcdef");
        let p = plan_for(
            Method::Post,
            "/api/towns/t1/container/heartbeat",
            Caller::Container,
            &booted.to_string(),
        );
        assert!(
            matches!(p, Ok(Plan::Heartbeat { boot_id: Some(ref b), .. }) if b == "0123456789abcdef"),
            "{p:?}"
        );
        booted["bootId"] = json!("../x");
        let p = plan_for(
            Method::Post,
            "/api/towns/t1/container/heartbeat",
            Caller::Container,
            &booted.to_string(),
        );
        assert_eq!(p.map_err(|e| e.status()), Err(400), "a malformed boot id");
        let mut ended = body.clone();
        ended["agents"][0]["status"] = json!("exited");
        let p = plan_for(
            Method::Post,
            "/api/towns/t1/container/heartbeat",
            Caller::Container,
            &ended.to_string(),
        );
        assert!(
            matches!(p, Ok(Plan::Heartbeat { running_agents: 1, .. })),
            "an ended agent does not keep the container awake"
        );
        let p = plan_for(
            Method::Post,
            "/api/towns/t2/container/heartbeat",
            Caller::Container,
            &body.to_string(),
        );
        assert_eq!(p.map_err(|e| e.status()), Err(400));
        for (field, bad) in [
            ("lastActivityAt", json!("yesterday")),
            ("lastActivityAt", json!("2026-01-01 00:00:00")),
            ("townId", json!("t9")),
        ] {
            let mut b = body.clone();
            b["agents"][1][field] = bad;
            let p = plan_for(
                Method::Post,
                "/api/towns/t1/container/heartbeat",
                Caller::Container,
                &b.to_string(),
            );
            assert_eq!(p.map_err(|e| e.status()), Err(400), "{field}");
        }
    }
}
