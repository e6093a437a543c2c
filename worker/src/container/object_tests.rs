//! The TownContainer's logic, natively: its SQLite on rusqlite, the town's limits as the test
//! sets them (`crate::native_world`), and a control server that answers from a script.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use serde_json::{json, Value};
use shared_types::control::{AgentRole, StartAgentRequest, StreamFrame};

use super::*;
use crate::native_db::NativeDb;
use crate::native_world::{block_on, World};

/// A control server answering each try from `answers` (a status, or no answer at all), and
/// 200 once they run out.
#[derive(Default)]
struct Scripted {
    answers: RefCell<VecDeque<Result<u16, String>>>,
    sent: RefCell<Vec<Outgoing>>,
    slept: RefCell<Vec<u64>>,
    /// Whether the container is down, so a forward starts it.
    asleep: Cell<bool>,
}

impl Scripted {
    fn answering(answers: impl IntoIterator<Item = Result<u16, String>>) -> Self {
        Self { answers: RefCell::new(answers.into_iter().collect()), ..Self::default() }
    }
}

impl ControlServer for Scripted {
    type Answer = u16;

    fn status(answer: &u16) -> u16 {
        *answer
    }

    async fn wake(&self) -> ApiResult<bool> {
        Ok(self.asleep.replace(false))
    }

    async fn send(&self, out: &Outgoing) -> Result<u16, String> {
        self.sent.borrow_mut().push(out.clone());
        self.answers.borrow_mut().pop_front().unwrap_or(Ok(200))
    }

    async fn sleep(&self, ms: u64) {
        self.slept.borrow_mut().push(ms);
    }

    fn place(&self) -> &'static str {
        "the scripted control server"
    }
}

struct Town {
    world: World,
    db: NativeDb,
}

impl Town {
    fn with_limits(limits: Value) -> Self {
        let world = World::new(&[("CONTAINER_PROBE_INTERVAL_MS", "30000")]);
        *world.town_limits.borrow_mut() = limits;
        Self { world, db: NativeDb::with(MIGRATIONS) }
    }

    fn object(&self) -> TownContainerObject<'_, NativeDb, World> {
        TownContainerObject { db: &self.db, fx: &self.world, shard: 0 }
    }

    fn forward(&self, server: &Scripted, out: Outgoing) -> ApiResult<Forwarded<u16>> {
        block_on(self.object().forward(server, Some("t1"), out))
    }

    fn lifecycle(&self) -> Lifecycle {
        lifecycle(&self.db).expect("kept")
    }
}

fn start(agent: &str, dispatch: &str) -> Outgoing {
    let body = StartAgentRequest {
        agent_id: agent.into(),
        rig_id: "r1".into(),
        town_id: "t1".into(),
        role: AgentRole::Polecat,
        name: agent.into(),
        identity: agent.into(),
        prompt: "work".into(),
        model: "p/m".into(),
        system_prompt: "you".into(),
        git_url: "https://git.example/r.git".into(),
        branch: format!("polecat/{agent}"),
        default_branch: "main".into(),
        env_vars: Default::default(),
        dispatch_id: Some(dispatch.into()),
        bead_id: Some("b1".into()),
        convoy_id: None,
        max_concurrent_agents: None,
        merges_seen: None,
    };
    let body = serde_json::to_vec(&body).expect("json");
    Outgoing { method: Method::Post, path: "/agents/start".into(), body }
}

fn get(path: &str) -> Outgoing {
    Outgoing { method: Method::Get, path: path.into(), body: Vec::new() }
}

fn refusal(f: ApiResult<Forwarded<u16>>) -> Option<String> {
    match f.expect("answered") {
        Forwarded::Json(429, body) => body["error"].as_str().map(str::to_string),
        _ => None,
    }
}

#[test]
fn the_hourly_cap_lets_a_retried_dispatch_through_and_refuses_a_new_one_without_sending_it() {
    let town = Town::with_limits(json!({ "max_dispatches_per_hour": 1 }));
    let server = Scripted::default();
    assert!(matches!(town.forward(&server, start("a1", "d1")), Ok(Forwarded::Answer(200))));
    assert!(
        matches!(town.forward(&server, start("a1", "d1")), Ok(Forwarded::Answer(200))),
        "the same dispatch again (a retry) is not a second start"
    );
    let reason = refusal(town.forward(&server, start("a2", "d2"))).expect("a 429");
    assert!(reason.contains("max_dispatches_per_hour"), "{reason}");
    assert_eq!(server.sent.borrow().len(), 2, "the refused start was never sent");

    town.world.now_ms.set(town.world.now_ms.get() + 60 * 60 * 1000 + 1);
    assert!(
        matches!(town.forward(&server, start("a2", "d2")), Ok(Forwarded::Answer(200))),
        "an hour later the cap has room again"
    );
}

#[test]
fn a_start_the_control_server_refuses_leaves_the_ledger() {
    let town = Town::with_limits(json!({ "max_dispatches_per_hour": 1 }));
    let server = Scripted::answering([Ok(429)]);
    assert!(matches!(town.forward(&server, start("a1", "d1")), Ok(Forwarded::Answer(429))));
    assert!(
        matches!(town.forward(&server, start("a2", "d2")), Ok(Forwarded::Answer(200))),
        "the refused start did not use the hour's dispatch"
    );
}

#[test]
fn the_running_agents_cap_travels_in_the_start_and_nothing_else_changes() {
    let town = Town::with_limits(json!({ "max_concurrent_agents": 3 }));
    let server = Scripted::default();
    let out = start("a1", "d1");
    town.forward(&server, out.clone()).expect("forwarded");
    let sent: StartAgentRequest =
        serde_json::from_slice(&server.sent.borrow()[0].body).expect("a start");
    let mut expected: StartAgentRequest = serde_json::from_slice(&out.body).expect("a start");
    expected.max_concurrent_agents = Some(3);
    assert_eq!(sent, expected);

    let plain = Town::with_limits(Value::Null);
    let server = Scripted::default();
    plain.forward(&server, out.clone()).expect("forwarded");
    assert_eq!(server.sent.borrow()[0].body, out.body, "a town without caps: the body as sent");
}

#[test]
fn the_running_agents_cap_counts_the_agents_of_the_towns_other_shards() {
    let town = Town::with_limits(json!({ "max_concurrent_agents": 4 }));
    let view = |shard: u32, running: u32| {
        json!({"shard": shard, "rigs": ["r"], "capacity": 8, "running": running,
               "boot_id": null, "reported_at": null, "unreachable": false})
    };
    *town.world.shard_views.borrow_mut() = json!([view(0, 2), view(1, 3)]);
    let server = Scripted::default();
    town.forward(&server, start("a1", "d1")).expect("forwarded");
    let sent: StartAgentRequest =
        serde_json::from_slice(&server.sent.borrow()[0].body).expect("a start");
    assert_eq!(sent.max_concurrent_agents, Some(1), "4 for the town, 3 run on shard 1");

    *town.world.shard_views.borrow_mut() = json!([view(0, 0), view(1, 4)]);
    let full = Scripted::default();
    let reason = refusal(town.forward(&full, start("a2", "d2"))).expect("refused");
    assert!(reason.contains("max_concurrent_agents is 4"), "{reason}");
    assert!(full.sent.borrow().is_empty(), "a refused start is never sent");
}

#[test]
fn a_used_up_daily_budget_refuses_starts() {
    let town = Town::with_limits(json!({ "max_tokens_per_day": 10 }));
    let batch = json!({ "bootId": "b00t", "events": [{ "agentId": "a1", "rigId": "r1", "id": 1,
        "at": town.world.now_iso(), "kind": "usage", "data": { "messageId": "m1", "model": "p/m",
        "beadId": "b1", "inputTokens": 10, "outputTokens": 0, "reasoningTokens": 0,
        "cacheReadTokens": 0, "cacheWriteTokens": 0, "costUsd": null }}]});
    let body = serde_json::to_vec(&batch).expect("json");
    block_on(town.object().own(Method::Post, crate::container::EVENTS_APPEND_PATH, None, &body))
        .expect("kept");
    let server = Scripted::default();
    let reason = refusal(town.forward(&server, start("a1", "d1"))).expect("a 429");
    assert!(reason.contains("max_tokens_per_day"), "{reason}");
    assert!(server.sent.borrow().is_empty());
}

#[test]
fn a_forward_is_tried_four_times_then_brings_the_probe_forward_and_frees_the_dispatch() {
    let town = Town::with_limits(json!({ "max_dispatches_per_hour": 1 }));
    let down = || Err("connection refused".to_string());
    let server = Scripted::answering([down(), down(), down(), down()]);
    let e = town.forward(&server, start("a1", "d1")).expect_err("no answer");
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("after 3 retries"), "{e}");
    assert_eq!(*server.slept.borrow(), [250, 500, 1000]);
    let now = town.world.now_ms.get();
    assert_eq!(town.world.alarm.get(), Some(now + 2_000), "the next probe comes in 2 s");
    let server = Scripted::default();
    assert!(
        matches!(town.forward(&server, start("a2", "d2")), Ok(Forwarded::Answer(200))),
        "the start that was never answered did not use the hour's dispatch"
    );
}

#[test]
fn a_start_wakes_the_container_and_its_answer_marks_it_running() {
    let town = Town::with_limits(Value::Null);
    assert_eq!(town.lifecycle().status, "none");
    let server = Scripted { asleep: Cell::new(true), ..Scripted::default() };
    town.forward(&server, start("a1", "d1")).expect("forwarded");
    let l = town.lifecycle();
    assert_eq!(l.status, "running");
    assert_eq!(l.last_activity_ms, Some(town.world.now_ms.get()), "a start is activity");
    assert_eq!(*town.world.logs.borrow(), ["town container: starting", "town container: running"]);

    let before = town.lifecycle();
    town.world.now_ms.set(town.world.now_ms.get() + 1_000);
    town.forward(&Scripted::default(), get("/health")).expect("forwarded");
    assert_eq!(town.lifecycle().last_activity_ms, before.last_activity_ms, "a poll is not");
}

#[test]
fn a_ticket_for_an_agent_the_server_lost_replays_its_kept_history_once() {
    let town = Town::with_limits(Value::Null);
    let event = |id: u64, kind: &str| {
        json!({ "agentId": "a1", "rigId": "r1", "id": id,
        "at": "2026-12-07T10:00:00.000Z", "kind": kind, "data": { "n": id } })
    };
    let batch = json!({ "bootId": "b00t", "events": [event(1, "text"), event(2, "tool_call")] });
    let body = serde_json::to_vec(&batch).expect("json");
    let o = town.object();
    block_on(o.own(Method::Post, crate::container::EVENTS_APPEND_PATH, None, &body)).expect("kept");

    let ticket_for = |agent: &str| Outgoing {
        method: Method::Post,
        path: format!("/agents/{agent}/stream-ticket"),
        body: Vec::new(),
    };
    let server = Scripted::answering([Ok(404), Ok(404), Ok(404)]);
    let Ok(Forwarded::Json(200, answer)) = town.forward(&server, ticket_for("a1")) else {
        panic!("a history ticket");
    };
    let ticket = answer["ticket"].as_str().expect("a ticket").to_string();
    assert!(
        matches!(town.forward(&server, ticket_for("nobody")), Ok(Forwarded::Answer(404))),
        "no kept events: the control server's 404 stands"
    );

    assert_eq!(
        o.replay(&ticket, "a2").expect("read"),
        Some(Replay::Refused {
            frame: StreamFrame::new(
                "a2",
                0,
                "error",
                &json!({ "error": "this stream ticket was issued for another agent", "code": 4401 }),
                &town.world.now_iso()
            ),
            reason: "this stream ticket was issued for another agent",
        })
    );
    assert_eq!(o.replay(&ticket, "a1").expect("read"), None, "spent by the refused try");

    let Ok(Forwarded::Json(200, answer)) = town.forward(&server, ticket_for("a1")) else {
        panic!("a history ticket");
    };
    let ticket = answer["ticket"].as_str().expect("a ticket");
    let Some(Replay::History(frames)) = o.replay(ticket, "a1").expect("read") else {
        panic!("the history");
    };
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, ["text", "tool_call", "agent.exited"]);
    assert_eq!(frames[1].data, json!({ "n": 2 }));
    assert_eq!(o.replay(ticket, "a1").expect("read"), None, "one shot");
}

#[test]
fn heartbeats_and_calls_are_kept_and_bad_bodies_change_nothing() {
    let town = Town::with_limits(Value::Null);
    let o = town.object();
    let own =
        |path: &str, body: &str| block_on(o.own(Method::Post, path, Some("t1"), body.as_bytes()));
    let l = own(crate::container::ACTIVITY_PATH, r#"{"heartbeatRunningAgents":2,"bootId":"b1"}"#)
        .expect("kept");
    assert_eq!((l["runningAgents"].clone(), l["bootId"].clone()), (json!(2), json!("b1")));
    assert_eq!(
        town.world.alarm.get(),
        Some(town.world.now_ms.get() + 30_000),
        "a container in use is probed"
    );

    let before = town.lifecycle();
    let e = own(crate::container::ACTIVITY_PATH, r#"{"heartbeatRunningAgents":-1}"#)
        .expect_err("refused");
    assert_eq!(e.status(), 400);
    let e = own(crate::container::EVENTS_APPEND_PATH, "not json").expect_err("refused");
    assert_eq!(e.status(), 400);
    assert_eq!(town.lifecycle(), before);
    let e = own("/_do/nothing", "{}").expect_err("no such path");
    assert_eq!(e.status(), 404);
}

#[test]
fn the_alarm_destroys_only_after_failed_probes_in_a_row_and_rearms_between() {
    let town = Town::with_limits(Value::Null);
    let o = town.object();
    let failed = || Probe::Failed("refused".into());
    assert_eq!(
        block_on(o.alarm(failed(), false)),
        AlarmAction::RearmAt(town.world.now_ms.get() + 2_000)
    );
    assert_eq!(*town.world.alarms.borrow(), [2_000]);
    let healthy = Probe::Healthy { running_agents: 1, boot_id: Some("b1".into()) };
    assert!(matches!(block_on(o.alarm(healthy, false)), AlarmAction::RearmAt(_)));
    assert_eq!(town.lifecycle().failed_probes, 0, "a healthy probe resets the count");
    assert!(matches!(block_on(o.alarm(failed(), false)), AlarmAction::RearmAt(_)));
    assert!(matches!(block_on(o.alarm(failed(), false)), AlarmAction::RearmAt(_)));
    assert_eq!(block_on(o.alarm(failed(), false)), AlarmAction::Destroy);
    assert_eq!(town.lifecycle().status, "unresponsive");
}

#[test]
fn a_lifecycle_change_survives_a_new_instance() {
    let town = Town::with_limits(Value::Null);
    let (l, moved) = change_lifecycle(&town.db, |l| l.exited(5, Some("oom".into()))).expect("kept");
    assert!(moved);
    assert_eq!((l.status.as_str(), l.detail.as_deref()), ("failed", Some("oom")));
    assert_eq!(lifecycle(&town.db).expect("read"), l);
    let (_, moved) = change_lifecycle(&town.db, |_| {}).expect("kept");
    assert!(!moved);
}

#[test]
fn another_shards_starts_are_guarded_by_the_towns_one_ledger_at_the_first_shard() {
    let first = std::rc::Rc::new(Town::with_limits(json!({ "max_dispatches_per_hour": 1 })));
    let other = Town::with_limits(json!({ "max_dispatches_per_hour": 1 }));
    let keeper = first.clone();
    other.world.container_answers(move |c| {
        assert_eq!(c.shard, 0, "the guard is the first shard's");
        let body = serde_json::to_vec(&c.body).unwrap_or_default();
        match block_on(keeper.object().own(c.method, &c.path, Some("t1"), &body)) {
            Ok(data) => (200, json!({ "success": true, "data": data })),
            Err(e) => (e.status(), e.envelope()),
        }
    });
    let shard_one = TownContainerObject { db: &other.db, fx: &other.world, shard: 1 };
    let refused = Scripted::answering([Ok(500)]);
    let f = block_on(shard_one.forward(&refused, Some("t1"), start("a1", "d1")));
    assert!(matches!(f, Ok(Forwarded::Answer(500))));
    let paths: Vec<String> =
        other.world.container_calls.borrow().iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, [super::super::GUARD_PATH, super::super::UNGUARD_PATH], "taken back out");

    let server = Scripted::default();
    let f = block_on(shard_one.forward(&server, Some("t1"), start("a2", "d2")));
    assert!(matches!(f, Ok(Forwarded::Answer(200))), "the hour's one dispatch, on shard 1");
    let blocked = Scripted::default();
    assert!(refusal(first.forward(&blocked, start("a3", "d3"))).is_some(), "counted town-wide");
    assert!(blocked.sent.borrow().is_empty(), "a refused start is never sent");
    let again = Scripted::default();
    let f = block_on(shard_one.forward(&again, Some("t1"), start("a4", "d4")));
    assert!(refusal(f).is_some() && again.sent.borrow().is_empty());
}
