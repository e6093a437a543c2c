//! Budgets stop a town in time, without losing work: everything real (`wrangler dev` with the
//! built Worker, the native control server, the Kilo CLI, git) but the LLM, a scripted model
//! that reports 10 prompt and 5 completion tokens per answer.
//!
//! - A daily token budget used up mid-run: the running polecat is sent one wrap-up message
//!   (the model sees it), its uncommitted work is saved as a WIP commit on its branch, and it is
//!   stopped; its bead waits queued with the budget named, not failed and with no lost run.
//!   Raising the budget lets the bead go on from the saved work, and it merges with it.
//! - A bead past the town's per-bead cap: its agent is wound down the same way, the bead fails
//!   and an escalation names the budget.
//! - The town's time zone moves its days.

use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until;
use gastown_e2e::wrangler::WranglerDev;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(300);

/// A run that leaves work uncommitted, keeps working for a few calls, then ends its turn
/// without finishing, and answers the wrap-up message when it comes (each call: 15 tokens).
fn unfinished_run(file: &str) -> Vec<Step> {
    let mut steps = vec![Step::bash(format!("echo partial > {file} && echo written"))];
    steps.extend((0..5).map(|_| Step::bash("sleep 1 && echo working")));
    steps.push(Step::text("still working on it"));
    steps.push(Step::text("wrapped up"));
    steps
}

/// Whether the bead's events hold one of `kind` whose data mentions `text`.
fn has_event(events: &Value, kind: &str, text: &str) -> bool {
    events
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["kind"] == kind && e["data"].to_string().contains(text))
}

/// Slings a bead whose body names `script`: its id, its polecat's id and name.
async fn sling(dev: &WranglerDev, rig: &str, script: &str) -> (String, String, String) {
    let body = json!({ "title": format!("Run {script}"), "body": marker(script) });
    let slung = dev.post(&format!("/api/rigs/{rig}/sling"), body).await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let field = |v: &Value| v.as_str().expect("a sling's ids").to_string();
    let d = slung.data();
    (field(&d["bead"]["id"]), field(&d["agent"]["id"]), field(&d["agent"]["name"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_wind_running_agents_down_with_their_work_saved() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model");
    let local = LocalTown::start(
        &model,
        &[("EVENT_BATCH_MS", "200")],
        &[("SCHEDULER_TICK_MS", "1000"), ("BUDGET_WIND_DOWN_MS", "30000")],
    )
    .await;
    let origin = Origin::new();
    let (town, rig) = local.town_and_rig("budgeted", &origin.url()).await;
    let dev = &local.worker;
    let limits = format!("/api/towns/{town}/limits");
    let set = dev.put(&limits, json!({ "max_tokens_per_day": 60 })).await;
    assert_eq!(set.status, 200, "{set:?}");

    // The day's budget runs out mid-run.
    model.set_runs(
        "daily",
        vec![unfinished_run("partial.txt"), commit_then_done("rest.txt", "rest")],
    );
    let (bead, agent, name) = sling(dev, &rig, "daily").await;
    let stopped = local
        .control
        .wait_status(&agent, WORK, |s| s["status"] == "exited" || s["status"] == "failed")
        .await;
    assert!(
        stopped["stopReason"].as_str().is_some_and(|r| r.contains("max_tokens_per_day")),
        "{stopped}"
    );
    let wrap_ups: Vec<_> = model
        .requests_for("daily")
        .into_iter()
        .filter(|r| r.user_texts().iter().any(|t| t.starts_with("Stop now: budget:")))
        .collect();
    assert!(!wrap_ups.is_empty(), "the agent was asked to wrap up");
    let branch = format!("polecat/{name}/");
    let saved = "|WIP: saved by gastown when the agent was wound down";
    until("the saved work on the agent's branch", WORK, async || {
        let name = origin.branches().into_iter().find(|b| b.starts_with(&branch))?;
        origin.log(&name).filter(|log| log.iter().any(|l| l.ends_with(saved)))
    })
    .await;
    let events_path = format!("/api/rigs/{rig}/beads/{bead}/events?limit=100");
    let queued = until("the bead to wait for the budget", WORK, async || {
        let events = dev.get(&events_path).await.data().clone();
        has_event(&events, "queued", "max_tokens_per_day").then_some(events)
    })
    .await;
    assert!(has_event(&queued, "agent_exited", "wound down"), "{queued}");
    assert_eq!(dev.bead(&rig, &bead).await["status"], "in_progress", "waiting, not failed");

    // More budget: the bead goes on from its saved work and merges with it.
    let raised = dev.put(&limits, json!({ "max_tokens_per_day": 1_000_000 })).await;
    assert_eq!(raised.status, 200, "{raised:?}");
    let settled = dev.settled_bead(&rig, &bead, WORK).await;
    assert_eq!(settled["status"], "closed", "{settled}");
    let main = origin.log("main").expect("main");
    assert!(main.iter().any(|l| l.ends_with(saved)), "the saved work was merged: {main:?}");

    // A bead past its own cap: wound down, failed, escalated.
    let capped = dev.put(&limits, json!({ "max_tokens_per_bead": 60 })).await;
    assert_eq!(capped.status, 200, "{capped:?}");
    model.set_script("per-bead", unfinished_run("capped.txt"));
    let (bead, agent, _) = sling(dev, &rig, "per-bead").await;
    let settled = dev.settled_bead(&rig, &bead, WORK).await;
    assert_eq!(settled["status"], "failed", "{settled}");
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
    assert!(has_event(events.data(), "escalated", "max_tokens_per_bead"), "{events:?}");
    let escalations = dev.get(&format!("/api/rigs/{rig}/beads?type=escalation&limit=10")).await;
    let escalation = escalations
        .data()
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["metadata"]["bead_id"] == bead.as_str());
    assert!(
        escalation.is_some_and(|e| e["title"].as_str().is_some_and(|t| t.contains("token budget"))),
        "{escalations:?}"
    );
    let stopped = local
        .control
        .wait_status(&agent, WORK, |s| s["status"] == "exited" || s["status"] == "failed")
        .await;
    assert!(
        stopped["stopReason"].as_str().is_some_and(|r| r.contains("max_tokens_per_bead")),
        "{stopped}"
    );
    let events = local.control.events(&agent).await;
    assert!(
        events.iter().any(|e| e["kind"] == "supervisor" && e["data"]["action"] == "save_work"),
        "its work was saved"
    );

    // The town's days: 26 hours apart, UTC+14:00 puts the same usage on a later day than
    // UTC-12:00. A named zone is refused and changes nothing.
    let mut first_days = Vec::new();
    for zone in ["+14:00", "-12:00"] {
        let set = dev.put(&limits, json!({ "time_zone": zone })).await;
        assert_eq!(set.status, 200, "{set:?}");
        let days = dev.get(&format!("/api/towns/{town}/usage?group_by=day")).await;
        let first = days.data()["groups"][0]["key"].as_str().map(str::to_string);
        first_days.push(first.unwrap_or_else(|| panic!("no days: {days:?}")));
    }
    assert!(first_days[0] > first_days[1], "{first_days:?}");
    let named = dev.put(&limits, json!({ "time_zone": "Europe/Berlin" })).await;
    assert_eq!(named.status, 400, "{named:?}");
    assert_eq!(named.body["issues"][0]["path"][0], "time_zone", "{named:?}");
    assert_eq!(dev.get(&limits).await.data()["time_zone"], "-12:00", "unchanged");
}
