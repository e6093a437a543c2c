//! The container routes: a person's calls to the town's control server (forwarded through the
//! town's TownContainer object), the container's own reports (its batched heartbeat, its
//! agents' events), the agents' kept events, and an agent's live stream.

use std::collections::BTreeMap;

use serde_json::Value;
use shared_types::{validate, AgentEventBatch, ContainerHeartbeat};

use crate::api::{Incoming, Plan};
use crate::error::{ApiError, ApiResult};
use crate::requests::parse_value;
use crate::routes::{Endpoint, Rule};
use crate::shards::{ShardChoice, ShardRef, ShardReport, MAX_SHARDS};

pub const ROUTES: &[Endpoint] = &[
    Endpoint::get("/api/towns/:townId/container/health", Rule::Internal, |r| {
        forward(r, "/health".into())
    }),
    // The TownContainer's own view: lifecycle status, last activity, running agents, failed
    // probes (answered by the object, not the control server).
    Endpoint::get("/api/towns/:townId/container/state", Rule::Internal, |r| {
        forward(r, super::STATE_PATH.into())
    }),
    Endpoint::post("/api/towns/:townId/container/agents/start", Rule::Internal, |r| {
        forward(r, "/agents/start".into())
    }),
    Endpoint::post("/api/towns/:townId/container/agents/:agentId/stop", Rule::Internal, |r| {
        forward(r, format!("/agents/{}/stop", r.param("agentId")?))
    }),
    Endpoint::post("/api/towns/:townId/container/agents/:agentId/message", Rule::Internal, |r| {
        forward(r, format!("/agents/{}/message", r.param("agentId")?))
    }),
    Endpoint::post(
        "/api/towns/:townId/container/agents/:agentId/stream-ticket",
        Rule::Internal,
        |r| forward(r, format!("/agents/{}/stream-ticket", r.param("agentId")?)),
    ),
    Endpoint::get("/api/towns/:townId/container/agents/:agentId/status", Rule::Internal, |r| {
        forward(r, format!("/agents/{}/status", r.param("agentId")?))
    }),
    // The ticket is the credential: browsers cannot set headers on a WebSocket.
    Endpoint::get("/api/towns/:townId/container/agents/:agentId/stream", Rule::Public, stream),
    Endpoint::post("/api/towns/:townId/container/heartbeat", Rule::Container, heartbeat),
    Endpoint::post("/api/towns/:townId/container/events", Rule::Container, append_events),
    Endpoint::get("/api/towns/:townId/agents/:agentId/events", Rule::Internal, list_events),
];

/// A call forwarded to the control server's `path`, method and body unchanged: of the shard
/// `?shard=` names, the town's first when none is named.
fn forward(req: &Incoming, path: String) -> ApiResult<Plan> {
    check_container_body(&path, req.body)?;
    Ok(Plan::Container { at: shard_of(req)?, path, body: req.body.to_vec() })
}

/// The shard a person's container call goes to: the one `?shard=<n>` names; else, for a call
/// about an agent, the shard that runs it; else the town's first.
fn shard_of(req: &Incoming) -> ApiResult<ShardChoice> {
    let town = req.param("townId")?;
    let named = form_urlencoded::parse(req.query.as_bytes()).find(|(k, _)| k == "shard");
    Ok(match (named, req.param("agentId")) {
        (Some((_, n)), _) => {
            let shard = n.parse::<u32>().ok().filter(|n| *n < MAX_SHARDS).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "shard: must be a whole number from 0 to {}",
                    MAX_SHARDS - 1
                ))
            })?;
            ShardChoice::Named(ShardRef::new(&town, shard))
        }
        (None, Ok(agent)) => ShardChoice::OfAgent { town, agent },
        (None, Err(_)) => ShardChoice::Named(ShardRef::first(&town)),
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

fn stream(req: &Incoming) -> ApiResult<Plan> {
    let ticket = form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    crate::dashboard::ticket(&ticket).map_err(ApiError::bad_request)?;
    Ok(Plan::Stream { at: shard_of(req)?, agent_id: req.param("agentId")?, ticket })
}

fn append_events(req: &Incoming) -> ApiResult<Plan> {
    let batch: AgentEventBatch = parse_value(req.body, &[])?;
    crate::agent_events::validate_batch(&batch)?;
    let body = serde_json::to_value(&batch).map_err(ApiError::internal)?;
    Ok(Plan::TownContainer { town_id: req.param("townId")?, path: super::EVENTS_APPEND_PATH, body })
}

fn list_events(req: &Incoming) -> ApiResult<Plan> {
    let q = crate::query::agent_event_query(req.query, req.param("agentId")?)?;
    let body = serde_json::to_value(&q).map_err(ApiError::internal)?;
    Ok(Plan::TownContainer { town_id: req.param("townId")?, path: super::EVENTS_LIST_PATH, body })
}

/// The container's heartbeat, split per rig; every id and time checked before anything is
/// updated.
fn heartbeat(req: &Incoming) -> ApiResult<Plan> {
    let town = req.param("townId")?;
    let hb: ContainerHeartbeat = parse_value(req.body, &[])?;
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
    if hb.shard >= MAX_SHARDS
        || hb.capacity.is_some_and(|c| c > 100_000)
        || hb.pool_ready.is_some_and(|p| p > 100_000)
        || hb.memory_bytes.is_some_and(|m| m > 1 << 50)
    {
        return Err(ApiError::bad_request(format!(
            "shard: must be below {MAX_SHARDS}; capacity and poolReady: at most 100000; memoryBytes: at most 2^50"
        )));
    }
    let report = ShardReport {
        shard: hb.shard,
        capacity: hb.capacity,
        running: running_agents,
        memory_bytes: hb.memory_bytes,
        pool_ready: hb.pool_ready,
        boot_id: hb.boot_id,
    };
    Ok(Plan::Heartbeat {
        at: ShardRef::new(&town, hb.shard),
        report,
        rig_updates: per_rig.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::plan_for;
    use crate::auth::Caller;
    use crate::routes::Method;

    #[test]
    fn forwarded_calls_keep_their_path_and_body() {
        let p = plan_for(
            Method::Post,
            "/api/towns/t1/container/agents/a1/stream-ticket",
            Caller::Internal,
            "{}",
        );
        assert_eq!(
            p,
            Ok(Plan::Container {
                at: ShardChoice::OfAgent { town: "t1".into(), agent: "a1".into() },
                path: "/agents/a1/stream-ticket".into(),
                body: b"{}".to_vec()
            })
        );
        let p = plan_for(
            Method::Get,
            "/api/towns/t1/container/agents/a1/status?shard=2",
            Caller::Internal,
            "",
        );
        assert!(
            matches!(p, Ok(Plan::Container { at: ShardChoice::Named(ref at), .. }) if at.shard == 2),
            "{p:?}"
        );
        let p = plan_for(
            Method::Get,
            "/api/towns/t1/container/agents/a1/status?shard=50",
            Caller::Internal,
            "",
        );
        assert_eq!(p.map_err(|e| e.status()), Err(400), "past the most shards a town has");
        let p = plan_for(Method::Get, "/api/towns/t1/container/state", Caller::Internal, "");
        assert!(
            matches!(p, Ok(Plan::Container { ref path, .. }) if path == super::super::STATE_PATH)
        );
        let p =
            plan_for(Method::Post, "/api/towns/t1/container/agents/start", Caller::Internal, "");
        assert_eq!(p.map_err(|e| e.status()), Err(400), "an empty start body");
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
        let Ok(Plan::Heartbeat { rig_updates, report, .. }) = p else { panic!("{p:?}") };
        assert_eq!((rig_updates.len(), report.running), (2, 2));
        let mut booted = body.clone();
        booted["bootId"] = json!("0123456789abcdef");
        let p = plan_for(
            Method::Post,
            "/api/towns/t1/container/heartbeat",
            Caller::Container,
            &booted.to_string(),
        );
        assert!(
            matches!(p, Ok(Plan::Heartbeat { ref report, .. }) if report.boot_id.as_deref() == Some("0123456789abcdef")),
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
            matches!(p, Ok(Plan::Heartbeat { ref report, .. }) if report.running == 1),
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
