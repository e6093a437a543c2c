//! The TownContainer's budget actions, natively: its events storage on SQLite, the town's
//! limits and mayor as the test sets them, a real RigDO, and the control server answering as
//! each test says (`crate::native_world`).

use serde_json::{json, Value};
use shared_types::AgentEventBatch;

use super::*;
use crate::native_db::NativeDb;
use crate::native_world::{block_on, World};

struct Town {
    world: World,
    events: NativeDb,
    seq: std::cell::Cell<u64>,
}

impl Town {
    fn with_limits(limits: Value) -> Self {
        let world = World::new(&[("BUDGET_WIND_DOWN_MS", "5000")]);
        *world.town_limits.borrow_mut() = limits;
        Self {
            world,
            events: NativeDb::with(crate::container::object::MIGRATIONS),
            seq: std::cell::Cell::new(0),
        }
    }

    /// One model call of `tokens` input tokens by `agent` on `bead`, kept and acted on as the
    /// TownContainer does with a batch.
    fn usage(&self, agent: &str, bead: &str, tokens: u64) {
        self.seq.set(self.seq.get() + 1);
        let n = self.seq.get();
        let batch: AgentEventBatch = serde_json::from_value(json!({ "bootId": "boot-1",
            "events": [{ "agentId": agent, "rigId": "r1", "id": n, "at": self.world.now_iso(),
                "kind": "usage", "data": { "messageId": format!("msg-{n}"), "model": "p/m",
                "beadId": bead, "inputTokens": tokens, "outputTokens": 0, "reasoningTokens": 0,
                "cacheReadTokens": 0, "cacheWriteTokens": 0, "costUsd": null }}]}))
        .expect("a batch");
        crate::agent_events::append(&self.events, &batch).expect("kept");
        block_on(after_usage(&self.events, &self.world, "t1", &batch));
    }

    fn calls(&self, method: Method, path: &str) -> Vec<Value> {
        let calls = self.world.container_calls.borrow();
        calls
            .iter()
            .filter(|c| c.method == method && c.path == path)
            .map(|c| c.body.clone().unwrap_or_default())
            .collect()
    }
}

fn agents() -> Value {
    let agent = |id: &str, role: &str, status: &str| {
        json!({ "agentId": id, "rigId": "r1",
        "townId": "t1", "role": role, "name": id, "pid": 1, "status": status, "exitCode": null,
        "workdir": "/w", "startedAt": "x", "lastActivityAt": "x" })
    };
    json!({ "agents": [agent("a1", "polecat", "running"), agent("a2", "polecat", "starting"),
        agent("done", "polecat", "exited"), agent("mayor", "mayor", "running")] })
}

#[test]
fn a_used_up_daily_budget_winds_the_working_polecats_down_and_no_more_often_than_it_must() {
    let town = Town::with_limits(json!({ "max_tokens_per_day": 100 }));
    town.world.container_answers(|c| match c.path.as_str() {
        "/agents" => (200, agents()),
        _ => (202, json!({ "windingDown": true })),
    });
    town.usage("a1", "b1", 79);
    assert!(town.world.mayor_notices.borrow().is_empty(), "under 80%");
    town.usage("a1", "b1", 1);
    town.usage("a1", "b1", 1);
    let notices = town.world.mayor_notices.borrow().clone();
    assert_eq!(notices.len(), 1, "told once a day: {notices:?}");
    assert!(notices[0].title.contains("80% of its daily token budget"), "{}", notices[0].title);
    assert!(town.calls(Method::Get, "/agents").is_empty(), "no wind-down under the budget");

    town.usage("a1", "b1", 19);
    assert_eq!(town.calls(Method::Get, "/agents").len(), 1);
    let a1 = town.calls(Method::Post, "/agents/a1/wind-down");
    let a2 = town.calls(Method::Post, "/agents/a2/wind-down");
    assert_eq!((a1.len(), a2.len()), (1, 1), "the running and the starting polecat");
    assert!(a1[0]["reason"].as_str().is_some_and(|r| r.contains("max_tokens_per_day")));
    assert_eq!((a1[0]["graceMs"].clone(), a1[0]["beadId"].clone()), (json!(5000), Value::Null));
    assert!(town.calls(Method::Post, "/agents/mayor/wind-down").is_empty(), "not the mayor");
    assert!(town.calls(Method::Post, "/agents/done/wind-down").is_empty(), "not an ended run");

    // Usage keeps arriving while they wrap up: not again within the interval, again after it.
    town.usage("a1", "b1", 5);
    assert_eq!(town.calls(Method::Get, "/agents").len(), 1);
    town.world.now_ms.set(town.world.now_ms.get() + WIND_DOWN_EVERY_MS);
    town.usage("a1", "b1", 5);
    assert_eq!(town.calls(Method::Get, "/agents").len(), 2);
}

#[test]
fn a_bead_past_its_cap_is_failed_once_and_only_its_own_run_is_wound_down() {
    let town = Town::with_limits(json!({ "max_tokens_per_bead": 50 }));
    let rig = |op: Value| {
        let call: RigCall = serde_json::from_value(op).expect("a rig op");
        block_on(town.world.rig("r1", &call, None)).expect("rig op").0
    };
    rig(json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1",
        "git_url": "https://example.com/o/r.git"}}}));
    let slung = rig(json!({"op": "sling", "args": {"rig_id": "r1", "sling": {"title": "work"}}}));
    let (bead, agent) = (
        slung["bead"]["id"].as_str().expect("bead"),
        slung["agent"]["id"].as_str().expect("agent"),
    );
    town.world.container_answers(|_| (202, json!({ "windingDown": true })));

    town.usage(agent, bead, 49);
    assert!(town.world.container_calls.borrow().is_empty(), "under the cap");
    town.usage(agent, bead, 1);
    let wound = town.calls(Method::Post, &format!("/agents/{agent}/wind-down"));
    assert_eq!(wound.len(), 1);
    assert_eq!(wound[0]["beadId"], bead, "only while it works that bead");
    assert!(wound[0]["reason"].as_str().is_some_and(|r| r.contains("max_tokens_per_bead")));
    let got = rig(json!({"op": "get_bead", "args": {"bead_id": bead}}));
    assert_eq!(got["status"], "failed", "{got}");
    assert!(town.calls(Method::Get, "/agents").is_empty(), "the town's day has no budget");

    // Its last calls arrive after: nothing more.
    town.usage(agent, bead, 10);
    assert_eq!(town.calls(Method::Post, &format!("/agents/{agent}/wind-down")).len(), 1);
    let escalations = rig(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}}));
    let count =
        escalations.as_array().expect("beads").iter().filter(|b| b["type"] == "escalation").count();
    assert_eq!(count, 1, "escalated once");
}

#[test]
fn a_notice_the_mayor_did_not_keep_is_sent_again_and_a_town_without_budgets_costs_nothing() {
    let town = Town::with_limits(json!({ "max_tokens_per_day": 100 }));
    town.world.mayor_keeps.set(false);
    town.usage("a1", "b1", 85);
    town.usage("a1", "b1", 1);
    assert_eq!(town.world.mayor_notices.borrow().len(), 2, "not kept: tried again");
    town.world.mayor_keeps.set(true);
    town.usage("a1", "b1", 1);
    town.usage("a1", "b1", 1);
    assert_eq!(town.world.mayor_notices.borrow().len(), 3, "kept: once");

    let free = Town::with_limits(Value::Null);
    free.usage("a1", "b1", 1_000_000);
    assert!(free.world.container_calls.borrow().is_empty());
    assert!(free.world.mayor_notices.borrow().is_empty());
}
