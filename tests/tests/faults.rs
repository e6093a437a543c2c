//! The fault suite: faults a town meets in production, each made for real on real
//! parts (`wrangler dev` with the built Worker, the native control server, the Kilo CLI, git, a
//! local origin; only the LLM is scripted), and each ending with nothing lost and nothing done
//! twice. Every case prints one `FAULT | case | outcome | data lost` row; `bench/faults.sh`
//! collects them (with the rows of the fault cases that live beside their subject: the SIGTERM
//! drain in `control_server.rs`, denied reads in `isolation.rs`) into one table.
//!
//! One town serves the town cases, one after the other (each needs the town to itself: one
//! watches the container's sleep, one kills the control server, one cuts the network):
//! - a turn that makes no call for longer than sleepAfter: the container is never put to sleep
//!   while the agent runs, and is once it is idle;
//! - an agent's Kilo process SIGKILLed mid-command: the bead is dispatched again, merged once;
//! - the control server (and every process under it) SIGKILLed mid-turn and restarted: the
//!   TownContainer marks it unresponsive only after consecutive failed probes, the RigDO
//!   re-dispatches the lost run, the bead is worked once more and merged once;
//! - the Worker unreachable for 60 s while the agent sends mail, then its answer lost on the way
//!   back, and again (shorter) for `gt_done`: each retried with one idempotency key, recorded once;
//! - the town's spending caps: work over them waits, queued with the cap as its reason.
//!
//! The full workspace disk is a case of its own (a control server in its own mount namespace).

use std::time::{Duration, Instant};

use gastown_e2e::control_server::{start_request, ControlServer, Options};
use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step, BRANCH_PLACEHOLDER};
use gastown_e2e::origin::Origin;
use gastown_e2e::procs;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until;
use gastown_e2e::wrangler::WranglerDev;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(240);

fn row(case: &str, outcome: &str, lost: &str) {
    println!("FAULT | {case} | {outcome} | {lost}");
}

async fn container_state(dev: &WranglerDev, town: &str) -> Value {
    dev.get(&format!("/api/towns/{town}/container/state")).await.data().clone()
}

/// The bead's event log (the newest 100).
async fn bead_events(dev: &WranglerDev, rig: &str, id: &str) -> Vec<Value> {
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{id}/events?limit=100")).await;
    events.data().as_array().cloned().unwrap_or_default()
}

async fn event_kinds(dev: &WranglerDev, rig: &str, id: &str) -> Vec<String> {
    let events = bead_events(dev, rig, id).await;
    events.iter().filter_map(|e| e["kind"].as_str().map(str::to_string)).collect()
}

async fn reviews_of(dev: &WranglerDev, rig: &str, bead: &str) -> Vec<Value> {
    let all = dev.get(&format!("/api/rigs/{rig}/review-queue?limit=100")).await;
    all.data().as_array().into_iter().flatten().filter(|r| r["bead_id"] == bead).cloned().collect()
}

/// Slings a bead whose body names `script`; returns its id.
async fn sling(dev: &WranglerDev, rig: &str, title: &str, script: &str) -> String {
    let s = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({ "title": title, "body": format!("{title}. {}", marker(script)) }),
        )
        .await;
    assert_eq!(s.status, 201, "{s:?}");
    s.data()["bead"]["id"].as_str().expect("bead id").to_string()
}

/// How often `file` was added on the origin's `main` (a bead worked twice would add it twice).
fn commits_touching(origin: &Origin, file: &str) -> usize {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&origin.path)
        .args(["log", "--no-merges", "--format=%H", "main", "--", file])
        .output()
        .expect("git log");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_rides_out_faults_and_keeps_to_its_spending_caps() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let mut local = LocalTown::start_via_proxy(
        &model,
        &[("STOP_GRACE_MS", "3000")],
        &[
            ("SCHEDULER_TICK_MS", "1000"),
            // Longer than any case waits: a run lost with its control server can only be
            // re-dispatched in time by the restarted server's new boot id.
            ("SCHEDULER_COLD_START_GRACE_MS", "600000"),
            ("CONTAINER_SLEEP_AFTER_MS", "3000"),
            ("CONTAINER_PROBE_INTERVAL_MS", "500"),
            ("CONTAINER_MAX_FAILED_PROBES", "3"),
        ],
    )
    .await;
    let town = local.worker.post("/api/towns", json!({ "name": "faulty" })).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();

    long_silent_turn(&local, &model, &town).await;
    agent_killed_mid_turn(&local, &model, &town).await;
    control_server_killed(&mut local, &model, &town).await;
    control_server_restarted_at_once(&mut local, &model, &town).await;
    worker_unreachable(&local, &model, &town).await;
    spending_caps(&local, &model, &town).await;
}

/// The town's spending caps: one agent at a time, two dispatches an hour. Work over a cap
/// waits, queued with the cap as its reason, and is never failed; lifting the caps lets it go.
async fn spending_caps(local: &LocalTown, model: &ModelServer, town: &str) {
    let dev = &local.worker;
    let limits = format!("/api/towns/{town}/limits");
    let put = |body: Value| {
        dev.call(reqwest::Method::PUT, &limits, &gastown_e2e::wrangler::Auth::Internal, body)
    };
    assert_eq!(
        dev.get(&limits).await.data(),
        &json!({ "max_concurrent_agents": null, "max_dispatches_per_hour": null })
    );
    for bad in [
        json!({ "max_concurrent_agents": 0 }),
        json!({ "max_dispatches_per_hour": -1 }),
        json!({ "max_agents": 2 }),
    ] {
        let r = put(bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    let set = put(json!({ "max_concurrent_agents": 1, "max_dispatches_per_hour": 2 })).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(
        dev.get(&limits).await.data(),
        &json!({ "max_concurrent_agents": 1, "max_dispatches_per_hour": 2 }),
        "bad input changed nothing"
    );

    let origin = Origin::new();
    let rig = local.rig(town, "capped", &origin.url()).await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        let mut steps = vec![Step::bash("sleep 3 && echo thought")];
        steps.extend(commit_then_done(&format!("cap{i}.txt"), "capped"));
        model.set_script(format!("cap{i}"), steps);
        ids.push(sling(dev, &rig, &format!("Capped work {i}"), &format!("cap{i}")).await);
    }
    // Two beads are worked, one at a time; the third waits for the hourly cap.
    let mut most_running = 0;
    until("two capped beads to close", WORK, async || {
        let (_, list) = local.control.get("/agents").await;
        let running = list["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| matches!(a["status"].as_str(), Some("starting" | "running")))
            .count();
        most_running = most_running.max(running);
        let mut closed = 0;
        for id in &ids {
            closed += usize::from(dev.bead(&rig, id).await["status"] == "closed");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        (closed >= 2).then_some(())
    })
    .await;
    assert_eq!(most_running, 1, "never more than one agent at once");
    let waiting: Vec<&String> = {
        let mut open = Vec::new();
        for id in &ids {
            if dev.bead(&rig, id).await["status"] != "closed" {
                open.push(id);
            }
        }
        open
    };
    assert_eq!(waiting.len(), 1, "the third bead waits");
    let third = waiting[0].clone();
    let queued_reasons = |kinds: Vec<Value>| -> Vec<String> {
        kinds
            .into_iter()
            .filter(|e| e["kind"] == "queued")
            .filter_map(|e| e["data"]["reason"].as_str().map(str::to_string))
            .collect()
    };
    let events_of = async |id: &str| -> Vec<Value> {
        dev.get(&format!("/api/rigs/{rig}/beads/{id}/events?limit=100"))
            .await
            .data()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let reasons = until("the third bead's reason", Duration::from_secs(30), async || {
        let r = queued_reasons(events_of(&third).await);
        r.iter().any(|x| x.contains("max_dispatches_per_hour")).then_some(r)
    })
    .await;
    assert!(
        reasons.iter().any(|r| r.starts_with("spending cap: 2 dispatches in the last hour")),
        "{reasons:?}"
    );
    let mut all_reasons = Vec::new();
    for id in &ids {
        all_reasons.extend(queued_reasons(events_of(id).await));
    }
    assert!(
        all_reasons.iter().any(|r| r.contains("max_concurrent_agents")),
        "a bead waited for the running-agents cap: {all_reasons:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = dev.bead(&rig, &third).await["status"].clone();
    assert!(status != "failed" && status != "closed", "still waiting, not failed: {status}");

    // The caps lifted, the third goes.
    assert_eq!(
        put(json!({ "max_concurrent_agents": null, "max_dispatches_per_hour": null })).await.status,
        200
    );
    assert_eq!(dev.settled_bead(&rig, &third, WORK).await["status"], "closed");
    row("work over the town's spending caps (1 agent, 2 dispatches/h)", "one agent at a time; third bead queued with the cap as reason, never failed; ran once lifted", "none");
}

/// A turn silent for three times sleepAfter keeps the container awake; idle, it sleeps.
async fn long_silent_turn(local: &LocalTown, model: &ModelServer, town: &str) {
    let dev = &local.worker;
    let origin = Origin::new();
    let rig = local.rig(town, "quiet", &origin.url()).await;
    let mut steps = vec![Step::bash("sleep 9 && echo slept")];
    steps.extend(commit_then_done("quiet.txt", "quiet"));
    model.set_script("quiet", steps);
    let id = sling(dev, &rig, "Think quietly", "quiet").await;

    // From the moment its session is working until its work is submitted, the container is
    // never asleep, though nothing but heartbeats and probes happen for 9 s.
    model.wait_for_script_requests("quiet", 1, WORK).await.expect("the quiet session");
    let mut seen_running = false;
    let watched_from = Instant::now();
    until("the quiet bead's review entry", WORK, async || {
        let state = container_state(dev, town).await;
        assert_ne!(
            state["status"], "sleeping",
            "the container was put to sleep with an agent running: {state}"
        );
        seen_running |= state["runningAgents"].as_u64().unwrap_or(0) > 0;
        tokio::time::sleep(Duration::from_millis(250)).await;
        (!reviews_of(dev, &rig, &id).await.is_empty()).then_some(())
    })
    .await;
    // The review entry cannot come before the 9 s command ends: the watch spanned the silence.
    assert!(watched_from.elapsed() >= Duration::from_secs(9), "the watch covered the silent turn");
    assert!(seen_running, "the probes saw the running agent over the silent turn");
    assert_eq!(dev.settled_bead(&rig, &id, WORK).await["status"], "closed");
    // Idle now: sleepAfter passes and it sleeps (a control server at CONTAINER_URL is only
    // marked: it is not the Worker's to stop).
    let state = until("the idle container to sleep", Duration::from_secs(60), async || {
        let s = container_state(dev, town).await;
        (s["status"] == "sleeping").then_some(s)
    })
    .await;
    assert_eq!(state["runningAgents"], 0, "{state}");
    row(
        "a turn silent for 3x sleepAfter",
        "kept awake while running (probes saw the agent); asleep once idle",
        "none",
    );
}

/// An agent's Kilo process SIGKILLed in the middle of a command: the control server reports the
/// run failed, the RigDO dispatches the bead again, and it is worked and merged once.
async fn agent_killed_mid_turn(local: &LocalTown, model: &ModelServer, town: &str) {
    let dev = &local.worker;
    let origin = Origin::new();
    let rig = local.rig(town, "killed", &origin.url()).await;
    model.set_runs(
        "killed",
        vec![
            vec![Step::bash("sleep 120"), Step::text("never")],
            commit_then_done("killed.txt", "killed"),
        ],
    );
    let s = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({ "title": "Survive a kill", "body": marker("killed") }),
        )
        .await;
    assert_eq!(s.status, 201, "{s:?}");
    let (id, agent) = (
        s.data()["bead"]["id"].as_str().expect("bead").to_string(),
        s.data()["agent"]["id"].as_str().expect("agent").to_string(),
    );
    model.wait_for_script_requests("killed", 1, WORK).await.expect("the first run");
    let running = local.control.wait_status(&agent, WORK, |v| v["status"] == "running").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = running["pid"].as_i64().expect("pid") as i32;
    procs::signal(pid, procs::SIGKILL);
    let b = dev.settled_bead(&rig, &id, WORK).await;
    assert_eq!(b["status"], "closed", "{b}");
    assert_eq!(reviews_of(dev, &rig, &id).await.len(), 1, "submitted once");
    assert_eq!(commits_touching(&origin, "killed.txt"), 1, "worked once on main");
    let kinds = event_kinds(dev, &rig, &id).await;
    assert!(kinds.iter().any(|k| k == "agent_exited"), "the lost run is on record: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "agent_dispatched").count(), 2, "{kinds:?}");
    row(
        "an agent's Kilo process SIGKILLed mid-command",
        "run reported failed (137); bead re-dispatched; merged once",
        "none",
    );
}

/// A rig `name` whose bead's first run hangs in a long command (the fault strikes there) and
/// whose second run writes `<name>.txt` and is done; returns once the first run has reached the
/// model: `(origin, rig, bead)`.
async fn first_run_hangs(
    local: &LocalTown,
    model: &ModelServer,
    town: &str,
    name: &str,
) -> (Origin, String, String) {
    let origin = Origin::new();
    let rig = local.rig(town, name, &origin.url()).await;
    let file = format!("{name}.txt");
    model.set_runs(
        name,
        vec![vec![Step::bash("sleep 120"), Step::text("never")], commit_then_done(&file, name)],
    );
    let id = sling(&local.worker, &rig, &format!("Survive: {name}"), name).await;
    model.wait_for_script_requests(name, 1, WORK).await.expect("the first run");
    (origin, rig, id)
}

/// The agent the bead is assigned to.
async fn bead_agent(dev: &WranglerDev, rig: &str, bead: &str) -> String {
    let b = dev.bead(rig, bead).await;
    b["assignee_agent_id"].as_str().unwrap_or_else(|| panic!("no assignee: {b}")).to_string()
}

/// The control server and everything under it SIGKILLed mid-turn, then restarted.
async fn control_server_killed(local: &mut LocalTown, model: &ModelServer, town: &str) {
    let (origin, rig, id) = first_run_hangs(local, model, town, "crash").await;
    // Agents' events reach the Worker in batches (every EVENT_BATCH_MS): the kill comes once the
    // first run's start is there, since the test finds it kept after the server is gone (a
    // first turn can reach the model sooner than one batch).
    let agent = bead_agent(&local.worker, &rig, &id).await;
    until("the Worker to keep the first run's start", Duration::from_secs(30), async || {
        let page =
            local.worker.get(&format!("/api/towns/{town}/agents/{agent}/events?limit=1000")).await;
        let events = page.data()["events"].as_array().cloned().unwrap_or_default();
        events
            .iter()
            .any(|e| e["kind"] == "status" && e["data"]["status"] == "running")
            .then_some(())
    })
    .await;

    local.control.kill_all();
    let killed_at = Instant::now();
    let dev = &local.worker;
    // Not on the first failed fetch: after three failed probes in a row.
    let state = until(
        "the TownContainer to mark the dead server unresponsive",
        Duration::from_secs(60),
        async || {
            let s = container_state(dev, town).await;
            (s["status"] == "unresponsive").then_some(s)
        },
    )
    .await;
    assert!(
        state["detail"].as_str().is_some_and(|d| d.starts_with("3 failed health probes")),
        "{state}"
    );
    assert!(
        killed_at.elapsed() >= Duration::from_millis(1000),
        "three probes 500 ms apart take at least a second"
    );

    local.control.restart();
    until("the restarted server to be seen", Duration::from_secs(60), async || {
        (container_state(dev, town).await["status"] == "running").then_some(())
    })
    .await;
    // The RigDO finds the run gone (a 404 from the new boot) and dispatches it again.
    let b = dev.settled_bead(&rig, &id, WORK).await;
    assert_eq!(b["status"], "closed", "{b}");
    let reviews = reviews_of(dev, &rig, &id).await;
    assert_eq!(reviews.len(), 1, "submitted once: {reviews:?}");
    assert_eq!(commits_touching(&origin, "crash.txt"), 1, "worked once on main");
    let kinds = event_kinds(dev, &rig, &id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "review_submitted").count(), 1, "{kinds:?}");
    let runs = model
        .requests_for("crash")
        .iter()
        .filter_map(|r| r.session_header.clone())
        .filter(|s| !s.starts_with("title-"))
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(runs.len(), 2, "one lost run, one re-dispatch: {runs:?}");

    // The agent's history survived its container: the Worker kept the lost run's events, which
    // the restarted server no longer has.
    let agent = reviews[0]["agent_id"].as_str().expect("agent id").to_string();
    let running = |events: &[Value]| {
        events.iter().filter(|e| e["kind"] == "status" && e["data"]["status"] == "running").count()
    };
    let kept =
        until("the Worker to keep the second run's events", Duration::from_secs(30), async || {
            let page =
                dev.get(&format!("/api/towns/{town}/agents/{agent}/events?limit=1000")).await;
            let events = page.data()["events"].as_array().cloned().unwrap_or_default();
            (running(&events) >= 2).then_some(events)
        })
        .await;
    assert_eq!(
        running(&local.control.events(&agent).await),
        1,
        "the restarted server knows only the second run"
    );
    assert!(kept.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()), "kept in order");
    assert_eq!(
        dev.get(&format!("/api/towns/{town}/agents/{agent}/events?limit=0")).await.status,
        400
    );
    row("control server SIGKILLed mid-turn, restarted", "unresponsive after 3 failed probes; run re-dispatched; merged once; the lost run's events kept by the Worker", "none");
}

/// Why each lost run of the bead ended, as its `agent_exited` events say.
async fn exit_reasons(dev: &WranglerDev, rig: &str, id: &str) -> Vec<String> {
    let events = bead_events(dev, rig, id).await;
    events
        .iter()
        .filter(|e| e["kind"] == "agent_exited")
        .map(|e| e["data"]["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The control server SIGKILLed mid-turn and back at once, as a container restart does: its
/// new boot knows none of the old runs, so the run is lost at the next scheduler pass, not
/// after the cold-start grace (which this town sets longer than the case may take).
async fn control_server_restarted_at_once(local: &mut LocalTown, model: &ModelServer, town: &str) {
    let (origin, rig, id) = first_run_hangs(local, model, town, "reboot").await;
    let booted = local.control.get("/health").await.1["bootId"]
        .as_str()
        .expect("a boot id in /health")
        .to_string();

    local.control.kill_all();
    local.control.restart();
    let restarted_at = Instant::now();
    let rebooted = until("the restarted server to answer", Duration::from_secs(60), async || {
        local.control.get("/health").await.1["bootId"].as_str().map(str::to_string)
    })
    .await;
    assert_ne!(booted, rebooted, "a new boot, a new id");
    let dev = &local.worker;
    until("the lost run to be dispatched again", WORK, async || {
        (event_kinds(dev, &rig, &id).await.iter().filter(|k| *k == "agent_dispatched").count() >= 2)
            .then_some(())
    })
    .await;
    let redispatched = restarted_at.elapsed();
    let b = dev.settled_bead(&rig, &id, WORK).await;
    assert_eq!(b["status"], "closed", "{b}");
    assert_eq!(commits_touching(&origin, "reboot.txt"), 1, "worked once on main");
    let reasons = exit_reasons(dev, &rig, &id).await;
    assert_eq!(reasons.len(), 1, "one lost run: {reasons:?}");
    assert!(reasons[0].contains("restarted"), "lost by the boot id, not by the grace: {reasons:?}");
    let state = container_state(dev, town).await;
    assert_eq!(
        state["bootId"].as_str(),
        Some(rebooted.as_str()),
        "the TownContainer saw the new boot: {state}"
    );
    row(
        "control server SIGKILLed mid-turn, back at once",
        &format!("run lost at the next pass (new boot id), re-dispatched {:.1} s after the restart (tick 1 s); merged once", redispatched.as_secs_f64()),
        "none",
    );
}

/// The Worker unreachable for 60 s while the agent sends mail, its answer then lost on the way
/// back; then a shorter outage during `gt_done`, again with its answer lost. Each write is
/// recorded once: the retries carry one idempotency key, and the Worker answers a repeated key
/// from its record (without it the mail would be sent twice).
async fn worker_unreachable(local: &LocalTown, model: &ModelServer, town: &str) {
    let dev = &local.worker;
    let proxy = local.proxy.as_ref().expect("a town with a proxy");
    let origin = Origin::new();
    let rig = local.rig(town, "outage", &origin.url()).await;
    // The mail goes to an agent of the rig that is not a polecat (a sling never picks it).
    let listener = dev
        .post(
            &format!("/api/rigs/{rig}/agents"),
            json!({ "role": "witness", "name": "listener", "identity": "witness/listener@outage" }),
        )
        .await;
    assert_eq!(listener.status, 201, "{listener:?}");
    let listener = listener.data()["id"].as_str().expect("listener id").to_string();
    model.set_script(
        "outage",
        vec![
            Step::bash(format!("echo outage > outage.txt && git add outage.txt && git commit -qm 'write outage.txt' && git push -q origin {BRANCH_PLACEHOLDER} && echo pushed")),
            // Each tool call waits 3 s: time for the test to cut the network first.
            Step::tool("gt_mail_send", json!({ "to_agent_id": listener, "subject": "outage-mail", "body": "sent through an outage" })).delayed(Duration::from_secs(3)),
            Step::tool("gt_done", json!({ "branch": BRANCH_PLACEHOLDER, "summary": "wrote outage.txt" })).delayed(Duration::from_secs(3)),
            Step::text("done"),
        ],
    );
    let id = sling(dev, &rig, "Finish through an outage", "outage").await;
    let agent =
        dev.bead(&rig, &id).await["assignee_agent_id"].as_str().expect("assignee").to_string();
    let branch = until("the agent's push", WORK, async || {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&origin.path)
            .args(["branch", "--list", "polecat/*"])
            .output()
            .ok()?;
        let b = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("* ").to_string();
        (!b.is_empty()).then_some(b)
    })
    .await;
    let outage_mail = async || -> usize {
        let prime = dev.get(&format!("/api/rigs/{rig}/agents/{listener}/prime")).await;
        prime.data()["undelivered_mail"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["subject"] == "outage-mail")
            .count()
    };

    // 60 s without the Worker while the mail is being sent.
    proxy.cut();
    let cut_at = Instant::now();
    model.wait_for_script_requests("outage", 2, WORK).await.expect("the session to send the mail");
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(cut_at.elapsed())).await;
    assert!(proxy.refused() > 0, "the control server kept trying");
    assert_eq!(outage_mail().await, 0, "nothing reached the Worker during the outage");
    proxy.drop_next_reply_to("/mail");
    proxy.restore();
    // The mail's result reaches the model (the next request), which calls gt_done 3 s later:
    // cut again, then lose gt_done's first answer too.
    model.wait_for_script_requests("outage", 3, WORK).await.expect("the mail's result");
    proxy.cut();
    assert_eq!(proxy.dropped(), 1, "the mail's first answer was lost after the Worker recorded it");
    assert_eq!(outage_mail().await, 1, "the mail was sent once");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(reviews_of(dev, &rig, &id).await.is_empty(), "gt_done waits for the Worker");
    proxy.drop_next_reply_to("/done");
    proxy.restore();

    let b = dev.settled_bead(&rig, &id, WORK).await;
    assert_eq!(b["status"], "closed", "{b}");
    assert_eq!(proxy.dropped(), 2, "gt_done's first answer was lost too");
    let reviews = reviews_of(dev, &rig, &id).await;
    assert_eq!(reviews.len(), 1, "gt_done recorded once: {reviews:?}");
    assert_eq!(reviews[0]["branch"], branch.as_str());
    let kinds = event_kinds(dev, &rig, &id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "review_submitted").count(), 1, "{kinds:?}");
    assert_eq!(outage_mail().await, 1, "still one mail");
    // Both retried calls ended as successes for the agent: no tool error, and the run ended as
    // an accepted gt_done ends it.
    let events = local.control.events(&agent).await;
    let tool_errors: Vec<&Value> =
        events.iter().filter(|e| e["data"]["source"] == "tool").collect();
    assert!(tool_errors.is_empty(), "{tool_errors:?}");
    local.control.wait_status(&agent, WORK, |s| s["status"] == "exited").await;
    row(
        "Worker unreachable 60 s during a tool call, then answers lost (mail, gt_done)",
        "retried with one idempotency key each; each recorded once; merged",
        "none",
    );
}

/// The workspace disk fills up during a start: a clear error, nothing half-made that breaks the
/// next start once there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_workspace_disk_fails_a_start_cleanly() {
    if !gastown_e2e::skip::needs_root(
        "faults::a_full_workspace_disk_fails_a_start_cleanly",
        "mounting a small tmpfs in a mount namespace",
    ) {
        return;
    }
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let origin = Origin::new();
    // An incompressible 6 MB file: the rig's clone cannot fit in 4 MB.
    let seed = tempfile::tempdir().expect("tempdir");
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(seed.path())
            .output()
            .expect("sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh(&format!(
        "git clone -q {url} w && cd w && head -c 6000000 /dev/urandom > big.bin && git add big.bin && \
         git -c user.name=t -c user.email=t@t commit -qm big && git push -q origin main",
        url = origin.url()
    ));
    // The server gets a mount namespace of its own with a 4 MB tmpfs as its workspace.
    let cs = ControlServer::start(
        Options::default()
            .wrapper(&["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "mkdir -p \"$WORKSPACE_ROOT\" && mount -t tmpfs -o size=4m,mode=0711 tmpfs \"$WORKSPACE_ROOT\" && exec \"$0\""])
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("STOP_GRACE_MS", "3000"),
    );
    model.set_script("roomy", vec![Step::bash("echo ok > ok.txt && git add ok.txt && git commit -qm ok && git push -q origin HEAD:refs/heads/roomy && echo pushed"), Step::text("done")]);
    let start = |id: &str| {
        start_request(
            id,
            "big",
            "toast",
            &format!("polecat/toast/{id}"),
            &origin.url(),
            &format!("Add ok.txt. {}", marker("roomy")),
        )
    };
    let (status, body) = cs.post("/agents/start", start("full1")).await;
    let failed = if status >= 400 {
        body
    } else {
        cs.wait_status("full1", WORK, |s| s["status"] == "failed" || s["status"] == "exited").await
    };
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = serde_json::to_string(&cs.events("full1").await).unwrap_or_default();
    assert!(error.contains("No space left on device"), "the error names the cause: {error}");
    let (_, health) = cs.get("/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    // Room again (the same tmpfs, grown in the server's namespace): the next start works and
    // pushes, so nothing half-written was left to trip it.
    let grown = std::process::Command::new("nsenter")
        .args(["-t", &cs.pid().to_string(), "-m", "--", "mount", "-o", "remount,size=256m"])
        .arg(&cs.workspace)
        .output()
        .expect("nsenter");
    assert!(grown.status.success(), "{}", String::from_utf8_lossy(&grown.stderr));
    let (status, body) = cs.post("/agents/start", start("full2")).await;
    assert!(status < 300, "{status} {body}");
    until("the second agent's push", WORK, async || origin.log("roomy").map(|_| ())).await;
    row(
        "workspace disk full during a start",
        "start failed with ENOSPC named; next start after more room worked",
        "none",
    );
}
