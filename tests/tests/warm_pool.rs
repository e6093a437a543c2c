//! The warm pool, with everything real: the control server's binary, the Kilo CLI 7.7.7, git, a
//! local origin. Only the LLM is scripted, and the Worker is a recording stand-in.

use std::time::Duration;

use gastown_e2e::control_server::{start_request, ControlServer, Options};
use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::procs;
use gastown_e2e::wait::until;
use gastown_e2e::worker_stub::WorkerStub;
use serde_json::json;

const TURN: Duration = Duration::from_secs(120);

/// A control server whose pool keeps `size` processes for the scripted model.
fn pooled_server(model: &ModelServer, worker: &WorkerStub, size: usize) -> ControlServer {
    ControlServer::start(
        Options::default()
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("GASTOWN_API_URL", worker.url())
            .env("WARM_POOL_SIZE", size.to_string())
            .env("WARM_POOL_MODEL", "scripted/scripted-model")
            .env("STOP_GRACE_MS", "3000")
            .env("MAX_AGENTS", "8"),
    )
}

/// The pids of the pool's ready processes, once it holds `n` of them.
async fn pool_ready(cs: &ControlServer, n: usize) -> Vec<u32> {
    until(&format!("{n} ready pooled process(es)"), TURN, async || {
        let pids: Vec<u32> = cs.pooled_pids().await.into_iter().map(|p| p as u32).collect();
        (pids.len() == n).then_some(pids)
    })
    .await
}

fn done_script(branch: &str) -> Vec<Step> {
    vec![
        Step::tool(
            "gt_done",
            json!({ "branch": branch, "pr_url": "", "summary": "nothing to do" }),
        ),
        Step::text("done"),
    ]
}

/// A dispatch takes a ready pooled process; the pool refills in the background; a process that
/// served one agent is stopped when its run ends and never handed to another; an agent with
/// envVars gets a process started for it. The pooled agent is still itself: its own system
/// prompt reaches the model, and its gt_done is forwarded as that agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_process_serves_one_agent_and_the_pool_refills() {
    let model = ModelServer::start([
        ("first", done_script("polecat/first/1")),
        ("second", done_script("polecat/second/2")),
        ("own", vec![Step::text("waiting")]),
    ])
    .await
    .expect("model server");
    let worker = WorkerStub::start().await;
    let cs = pooled_server(&model, &worker, 1);
    let origin = Origin::new();
    let (_, health) = cs.get("/health").await;
    assert_eq!(health["pool"]["size"], 1, "{health}");

    let pooled = pool_ready(&cs, 1).await[0];
    // Before it was ready, the pooled process ran its warm-up turn against the control
    // server's own stand-in model: nothing of it reached the real (here scripted) model.
    let (_, health) = cs.get("/health").await;
    assert!(health["pool"]["warmupTurns"].as_u64() >= Some(1), "{health}");
    assert_eq!(model.requests().len(), 0, "the warm-up never calls the model");
    let mut first = start_request(
        "first",
        "rig-1",
        "first",
        "polecat/first/1",
        &origin.url(),
        &format!("Finish. {}", marker("first")),
    );
    // The Worker's credential for the agent travels in envVars; the control server keeps it
    // and it does not count as an envVar of the process.
    first["envVars"] = json!({ "GASTOWN_SESSION_TOKEN": "jwt-of-first" });
    let (status, started) = cs.post("/agents/start?wait=true", first).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(
        started["pid"].as_u64(),
        Some(u64::from(pooled)),
        "the agent runs on the pooled process"
    );

    // The pool refills with another process while the first agent works.
    let refilled = pool_ready(&cs, 1).await[0];
    assert_ne!(refilled, pooled);

    // The agent is itself on a process started before it was known.
    let done = worker
        .wait_for(TURN, |r| r.path == "/api/rigs/rig-1/agents/first/done")
        .await
        .expect("gt_done forwarded as the first agent");
    assert_eq!(done.authorization.as_deref(), Some("Bearer jwt-of-first"));
    let system = model
        .requests()
        .iter()
        .find(|r| r.script() == Some("first"))
        .map(|r| r.system_text())
        .expect("a model request");
    assert!(system.contains("You are first, a Gastown polecat."), "{system}");

    // Its run ends, and its process with it: it is not given back to the pool.
    cs.wait_status("first", TURN, |s| s["status"] == "exited").await;
    until("the first agent's process to exit", Duration::from_secs(30), async || {
        (!procs::alive(pooled as i32)).then_some(())
    })
    .await;
    let mut second = start_request(
        "second",
        "rig-1",
        "second",
        "polecat/second/2",
        &origin.url(),
        &format!("Finish. {}", marker("second")),
    );
    second["envVars"] = json!({ "GASTOWN_SESSION_TOKEN": "jwt-of-second" });
    let (status, started) = cs.post("/agents/start?wait=true", second).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(
        started["pid"].as_u64(),
        Some(u64::from(refilled)),
        "the next agent takes the refilled process"
    );
    worker
        .wait_for(TURN, |r| r.path == "/api/rigs/rig-1/agents/second/done")
        .await
        .expect("gt_done forwarded as the second agent");

    // envVars cannot be given to a process that is already running: a process of its own.
    let ready = pool_ready(&cs, 1).await;
    let mut own = start_request(
        "own",
        "rig-1",
        "own",
        "polecat/own/3",
        &origin.url(),
        &format!("Wait. {}", marker("own")),
    );
    own["envVars"] = json!({ "OWN_VAR": "1" });
    let (status, started) = cs.post("/agents/start?wait=true", own).await;
    assert_eq!(status, 201, "{started}");
    let pid = started["pid"].as_u64().expect("pid") as u32;
    assert!(!ready.contains(&pid) && pid != pooled && pid != refilled, "a new process: {pid}");
    assert_eq!(pool_ready(&cs, 1).await, ready, "the pool kept its process");
}

/// A burst of six starts at once, some on pooled processes and some on processes started for
/// them: six distinct runs, each on its own Kilo process, in its own checkout, under its own
/// uid (when the server runs as root, as in the image).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_six_gives_six_distinct_isolated_runs() {
    let names: Vec<String> = (1..=6).map(|i| format!("burst{i}")).collect();
    let model = ModelServer::start(
        names.iter().map(|n| (n.clone(), vec![Step::text("here")])).collect::<Vec<_>>(),
    )
    .await
    .expect("model server");
    let worker = WorkerStub::start().await;
    let cs = pooled_server(&model, &worker, 2);
    let origin = Origin::new();
    let pooled = pool_ready(&cs, 2).await;
    let starts = names.iter().map(|n| {
        let mut req = start_request(
            n,
            "rig-1",
            n,
            &format!("polecat/{n}/1"),
            &origin.url(),
            &format!("Say hi. {}", marker(n)),
        );
        req["envVars"] = json!({ "GASTOWN_SESSION_TOKEN": format!("jwt-{n}") });
        cs.post("/agents/start", req)
    });
    for (status, body) in futures_util::future::join_all(starts).await {
        assert_eq!(status, 201, "{body}");
    }
    let mut runs = Vec::new();
    for n in &names {
        runs.push(cs.wait_status(n, TURN, |s| s["status"] == "running").await);
    }
    // A run that did not get going says why (its events carry the start's error).
    if let Some(r) = runs.iter().find(|r| r["status"] != "running") {
        let id = r["agentId"].as_str().unwrap_or_default();
        panic!("{id} is {}: {:?}\nall: {runs:?}", r["status"], cs.events(id).await);
    }
    let pids: std::collections::BTreeSet<u64> =
        runs.iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 6, "{runs:?}");
    // Each in its own checkout, on its own branch.
    let checkout = |n: &str| cs.workspace.join(format!("rigs/rig-1/worktrees/polecat~{n}~1"));
    assert!(names.iter().all(|n| checkout(n).join(".git").is_dir()), "six checkouts");
    assert!(
        pooled.iter().all(|p| pids.contains(&u64::from(*p))),
        "both pooled processes were taken: {pooled:?} {pids:?}"
    );
    let (_, health) = cs.get("/health").await;
    if health["isolation"] == "uid" {
        use std::os::unix::fs::MetadataExt;
        let uids: std::collections::BTreeSet<u32> = runs
            .iter()
            .zip(&names)
            .map(|(r, n)| {
                let meta = std::fs::metadata(checkout(n)).expect("checkout");
                assert_eq!(meta.mode() & 0o777, 0o700, "{r}");
                let uid = r["pid"]
                    .as_u64()
                    .and_then(|pid| procs::uid(pid as u32))
                    .expect("a live process's uid");
                assert_eq!(meta.uid(), uid, "the checkout belongs to its process's uid: {r}");
                uid
            })
            .collect();
        assert_eq!(uids.len(), 6, "six uids: {uids:?}");
    }
    // Every agent got its first model request.
    model
        .wait_until(TURN, |reqs| {
            names.iter().all(|n| reqs.iter().any(|r| r.script() == Some(n.as_str())))
        })
        .await
        .expect("six first requests");
}

/// A start stopped while its Kilo process is still starting ends, and leaves nothing behind: no
/// Kilo process, no private folder, no checkout, no process of its uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_stopped_midway_leaves_nothing_behind() {
    let model = ModelServer::start([("never", vec![Step::text("unreachable")])])
        .await
        .expect("model server");
    let worker = WorkerStub::start().await;
    let cs = pooled_server(&model, &worker, 0);
    let origin = Origin::new();
    let req = start_request(
        "brief",
        "rig-1",
        "brief",
        "polecat/brief/1",
        &origin.url(),
        &format!("Wait. {}", marker("never")),
    );
    let (status, body) = cs.post("/agents/start", req).await;
    assert_eq!((status, &body["status"]), (201, &json!("starting")), "{body}");
    let (status, body) = cs.post("/agents/brief/stop", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let end =
        cs.wait_status("brief", TURN, |s| s["status"] == "exited" || s["status"] == "failed").await;
    assert!(end["status"] == "exited" || end["status"] == "failed", "{end}");

    until(
        "the stopped start's Kilo process and folders to go",
        Duration::from_secs(60),
        async || {
            let kilos =
                procs::processes().into_iter().filter(|p| p.ppid == cs.pid() as i32).count();
            let run_dirs = std::fs::read_dir(cs.workspace.join("run"))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("kilo-"))
                        .count()
                })
                .unwrap_or(0);
            (kilos == 0 && run_dirs == 0).then_some(())
        },
    )
    .await;
    assert!(
        !cs.workspace.join("rigs/rig-1/worktrees/polecat~brief~1").exists(),
        "no checkout was made"
    );
    assert!(model.requests().is_empty(), "the agent never reached the model");
}
