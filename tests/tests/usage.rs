//! What a run spent reaches the Worker once, even when the control server is killed before it
//! sent it: everything real (`wrangler dev` with the built Worker, the native control server,
//! the Kilo CLI, git) but the LLM, a scripted model that reports 10 prompt and 5 completion
//! tokens per answer. The control server sends agents' events only every hour here, so the
//! run's usage is still only on its side (in its spool on disk) when it is SIGKILLed with every
//! process under it; started again on the same workspace, it sends what was left, and the
//! Worker's totals are exactly the model's calls. Started again with calls the Worker already
//! has still in its spool (as after a kill between the two), nothing counts twice. Past 80% of
//! a daily token budget, the mayor's transcript gets the town's notice.

use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_usage_reaches_the_worker_once_across_a_killed_control_server() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model");
    let mut local = LocalTown::start(
        &model,
        &[("EVENT_BATCH_MS", "3600000")],
        &[("SCHEDULER_TICK_MS", "1000")],
    )
    .await;
    let origin = Origin::new();
    let (town, rig) = local.town_and_rig("spender", &origin.url()).await;
    let dev = &local.worker;
    model.set_script("spend", commit_then_done("spend.txt", "spent"));
    let slung = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({ "title": "Write spend.txt", "body": marker("spend") }),
        )
        .await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let bead = slung.data()["bead"]["id"].as_str().expect("bead").to_string();
    let agent = slung.data()["agent"]["id"].as_str().expect("agent").to_string();
    let settled = dev.settled_bead(&rig, &bead, WORK).await;
    assert_eq!(settled["status"], "closed", "{settled}");
    // The run is over (no call in flight): everything it spent was read from Kilo.
    let ended = local
        .control
        .wait_status(&agent, WORK, |s| s["status"] == "exited" || s["status"] == "failed")
        .await;
    assert_eq!(ended["status"], "exited", "{ended}");
    let calls = model.requests_for("spend").len() as u64;
    assert!(calls >= 2, "the scripted run made its calls: {calls}");

    let usage = format!("/api/towns/{town}/usage");
    let total = async || -> Value { local.worker.get(&usage).await.data()["total"].clone() };
    assert_eq!(
        total().await["calls"],
        0,
        "nothing sent yet: the usage is only in the control server"
    );

    // What the run spent is in the control server's spool, one line per call.
    let spool_path = local.control.workspace.join(".usage-spool.jsonl");
    let spooled = std::fs::read_to_string(&spool_path).expect("the usage spool");
    assert_eq!(spooled.lines().count() as u64, calls, "{spooled}");

    local.control.kill_all();
    local.control.restart();
    let kept = until("the left-over usage to reach the Worker", WORK, async || {
        let t = total().await;
        (t["calls"] == calls).then_some(t)
    })
    .await;
    assert_eq!(
        (kept["input_tokens"].clone(), kept["output_tokens"].clone()),
        (json!(10 * calls), json!(5 * calls)),
        "{kept}"
    );
    let by_bead = local.worker.get(&format!("{usage}?group_by=bead")).await;
    assert_eq!(by_bead.data()["groups"][0]["key"], bead.as_str(), "{by_bead:?}");
    // The run's own usage: its dispatch, named after the bead.
    let by_run = local.worker.get(&format!("{usage}?group_by=run")).await;
    let runs = by_run.data()["groups"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs.len(), 1, "{by_run:?}");
    assert!(runs[0]["key"].as_str().is_some_and(|k| k.starts_with(&format!("{bead}-g"))));
    assert_eq!(runs[0]["calls"], json!(calls), "{by_run:?}");

    // Once kept, the calls leave the spool.
    until("the spool to be settled", WORK, async || {
        std::fs::read_to_string(&spool_path).is_ok_and(|t| t.trim().is_empty()).then_some(())
    })
    .await;

    // As if the server had been killed after the Worker took the calls but before it took them
    // out: started again with them all in its spool, it sends them again, and they count once.
    local.control.kill_all();
    std::fs::write(&spool_path, &spooled).expect("the spool put back");
    local.control.restart();
    until("the resent calls to be settled", WORK, async || {
        std::fs::read_to_string(&spool_path).is_ok_and(|t| t.trim().is_empty()).then_some(())
    })
    .await;
    assert_eq!(total().await, kept, "counted once");

    // A daily token budget the day's use is past 80% of: the mayor is told once, when the
    // next start (its own) passes the town's guard.
    let used =
        kept["input_tokens"].as_u64().unwrap_or(0) + kept["output_tokens"].as_u64().unwrap_or(0);
    let budget = used * 100 / 85 + 1;
    let limits = local
        .worker
        .put(&format!("/api/towns/{town}/limits"), json!({ "max_tokens_per_day": budget }))
        .await;
    assert_eq!(limits.status, 200, "{limits:?}");
    model.set_script("spend-mayor", vec![Step::text("noted")]);
    let sent = local
        .worker
        .post(
            &format!("/api/towns/{town}/mayor/messages"),
            json!({ "message": format!("{} How are we doing?", marker("spend-mayor")) }),
        )
        .await;
    assert_eq!(sent.status, 202, "{sent:?}");
    let notice = until("the budget notice in the mayor's transcript", WORK, async || {
        let r = local.worker.get(&format!("/api/towns/{town}/mayor/messages?limit=500")).await;
        let messages = r.data().as_array().cloned().unwrap_or_default();
        messages.into_iter().find(|m| {
            m["role"] == "town"
                && m["text"].as_str().is_some_and(|t| t.contains("of its daily token budget"))
        })
    })
    .await;
    assert!(
        notice["text"].as_str().is_some_and(|t| t.contains(&format!("{used} of {budget} tokens"))),
        "{notice}"
    );
}
