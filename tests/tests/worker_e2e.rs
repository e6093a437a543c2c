//! The seed's acceptance loop, everything real but the LLM: `wrangler dev` running the built
//! Worker, the control server run natively (the TownContainer forwards to it via CONTAINER_URL),
//! the real Kilo CLI, a scripted OpenAI-compatible model and a local origin repository.
//!
//! town -> rig -> sling a bead (hooked to a polecat) -> the RigDO alarm dispatches it -> the agent starts
//! in its worktree on `polecat/<name>/<prefix>` -> the scripted model commits, pushes and calls
//! gt_done -> the RigDO shows the review entry, the agent idle and unhooked, the bead's events,
//! and a heartbeat-updated last_activity_at; message and stop through the Worker's proxy routes;
//! the run ends by itself after gt_done.
//!
//! The script names the agent's branch with the model server's `{{branch}}` placeholder (read
//! from the polecat prompt), since sling picks the polecat and the bead id.

use std::time::Duration;

use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until as wait_for;
use serde_json::{json, Value};

const TURN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slung_bead_is_dispatched_worked_pushed_and_done() {
    let origin = Origin::new();
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local =
        LocalTown::start(&model, &[("STOP_GRACE_MS", "3000")], &[("SCHEDULER_TICK_MS", "1000")])
            .await;
    let dev = &local.worker;
    let (town, rig) = local.town_and_rig("e2e", &origin.url()).await;

    // The script names the branch through the placeholder: it is only known once sling has
    // picked the polecat and made the bead.
    model.set_script(
        "e2e",
        vec![
            Step::tool("gt_prime", json!({})),
            Step::bash(
                "test \"$(git rev-parse --abbrev-ref HEAD)\" = {{branch}} && echo work > work.txt && git add work.txt && \
                 git commit -qm 'agent work' && echo committed",
            ),
            Step::text("committed my work"),
            // The follow-up message sent through the Worker's proxy route starts this turn.
            Step::tool("gt_done", json!({"branch": "{{branch}}", "summary": "added work.txt"})),
            Step::text("done"),
        ],
    );
    let slung = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({"title": "Add work.txt", "body": format!("Create work.txt. {}", marker("e2e"))}),
        )
        .await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let bead = slung.data()["bead"]["id"].as_str().expect("bead").to_string();
    let agent = slung.data()["agent"]["id"].as_str().expect("agent").to_string();
    let name = slung.data()["agent"]["name"].as_str().expect("name").to_string();
    let prefix: String = bead.chars().filter(|c| *c != '-').take(8).collect();
    let branch = format!("polecat/{name}/{prefix}");

    // The scheduler dispatches; the agent works and commits. A message through the Worker's
    // container proxy route reaches it, and it calls gt_done through the control server,
    // which pushes its branch.
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| r.tool_results().iter().any(|t| t.contains("committed")))
        })
        .await
        .expect("the agent committed");
    let m = wait_for("the message to be taken", TURN, async || {
        let m = dev
            .post(
                &format!("/api/towns/{town}/container/agents/{agent}/message"),
                json!({"prompt": "one more thing"}),
            )
            .await;
        (m.status == 200).then_some(m)
    })
    .await;
    assert_eq!(m.body, json!({"sent": true}), "{m:?}");
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| r.user_texts().iter().any(|t| t.contains("one more thing")))
        })
        .await
        .expect("the follow-up reached the model");
    let review = wait_for("the review entry", TURN, async || {
        let q = dev.get(&format!("/api/rigs/{rig}/review-queue")).await;
        q.data().as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(
        (&review["branch"], &review["bead_id"], &review["agent_id"]),
        (&json!(branch), &json!(bead), &json!(agent))
    );
    assert_eq!(review["summary"], "added work.txt");
    // The refinery takes it from there: merged into main, the bead closed.
    let merged = wait_for("the merge", TURN, async || {
        let q = dev.get(&format!("/api/rigs/{rig}/review-queue")).await;
        q.data()
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|e| e["status"] != "pending" && e["status"] != "running")
    })
    .await;
    assert_eq!(merged["status"], "merged", "{merged}");
    assert_eq!(dev.get(&format!("/api/rigs/{rig}/beads/{bead}")).await.data()["status"], "closed");
    let main = origin.log("main").expect("main");
    assert!(
        main.first().is_some_and(
            |c| c.starts_with("Gastown Refinery|refinery@gastown.local|Merge polecat/")
        ),
        "{main:?}"
    );
    let a = dev.get(&format!("/api/rigs/{rig}/agents/{agent}")).await;
    assert_eq!(
        (a.data()["status"].clone(), a.data()["current_hook_bead_id"].clone()),
        (json!("idle"), Value::Null)
    );

    // The agent's commit is on main, by the agent's git identity (its branch was deleted
    // after the merge).
    assert!(
        main.iter().any(|c| c == &format!("{name} (gastown)|{name}@gastown.local|agent work")),
        "{main:?}"
    );
    assert!(origin.log(&branch).is_none(), "the merged branch is deleted");

    // The model got the Worker's prompts: the bead as the first message, the polecat system prompt.
    let reqs = model.requests_for("e2e");
    assert!(
        reqs.iter()
            .any(|r| r.tool_results().iter().any(|t| t.contains(&format!("pushed {branch} at ")))),
        "gt_done pushed the branch the agent only committed"
    );
    assert!(reqs.iter().any(|r| r.system_text().contains("GUPP")), "polecat system prompt");
    assert!(
        reqs.iter().any(|r| r.user_texts().iter().any(|t| t.contains("Add work.txt"))),
        "bead prompt"
    );
    assert!(
        reqs.iter().any(|r| r.tool_results().iter().any(|t| t.contains(&bead))),
        "gt_prime returned the hooked bead"
    );

    // The bead's event log tells the story.
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
    let kinds: Vec<&str> = events
        .data()
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "created",
        "hooked",
        "agent_dispatched",
        "review_submitted",
        "unhooked",
        "merge_started",
        "merged",
        "closed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent_dispatched").count(),
        1,
        "dispatched once: {kinds:?}"
    );

    // The container's batched heartbeat reaches the Worker and is accepted.
    wait_for("a container heartbeat", Duration::from_secs(60), async || {
        dev.output()
            .lines()
            .any(|l| l.contains(&format!("POST /api/towns/{town}/container/heartbeat 200")))
            .then_some(())
    })
    .await;

    // Its work done, the run ends by itself: the container reports it exited (through the
    // Worker's proxy route), and a stop through the proxy is a no-op.
    let st = wait_for("the run to end", Duration::from_secs(60), async || {
        let r = dev.get(&format!("/api/towns/{town}/container/agents/{agent}/status")).await;
        (r.body["status"] == "exited").then_some(r.body)
    })
    .await;
    let s = dev.post(&format!("/api/towns/{town}/container/agents/{agent}/stop"), json!({})).await;
    assert_eq!((s.status, s.body.clone()), (200, json!({"stopped": true})), "{s:?}");

    // The batched heartbeat carries the container's last activity time of the agent into the
    // RigDO: once the agent has ended, its time stops changing and the RigDO's copy equals it.
    let container_time = st["lastActivityAt"].as_str().expect("lastActivityAt").to_string();
    wait_for("the heartbeat to update last_activity_at", Duration::from_secs(30), async || {
        let a = dev.get(&format!("/api/rigs/{rig}/agents/{agent}")).await;
        (a.data()["last_activity_at"].as_str() == Some(container_time.as_str())).then_some(())
    })
    .await;
}

/// An agent killed with SIGKILL is noticed by the witness pass and re-dispatched, up to the
/// attempt limit; then its bead is failed and the agent unhooked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_redispatched_up_to_the_limit_then_its_bead_fails() {
    let origin = Origin::new();
    let model =
        ModelServer::start([("die", vec![Step::bash("sleep 600")])]).await.expect("model server");
    let local = LocalTown::start(
        &model,
        &[],
        &[("SCHEDULER_TICK_MS", "1000"), ("SCHEDULER_MAX_DISPATCH_ATTEMPTS", "2")],
    )
    .await;
    let dev = &local.worker;
    let (town, rig) = local.town_and_rig("e2e-kill", &origin.url()).await;
    let sling = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({"title": "Long job", "body": marker("die")}),
        )
        .await;
    let agent = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
    let bead = sling.data()["bead"]["id"].as_str().expect("bead").to_string();

    let mut killed = Vec::new();
    for attempt in 1..=2 {
        // Wait until this attempt's process runs and the model has asked for the long command.
        let pid = wait_for("a running agent process", TURN, async || {
            let r = dev.get(&format!("/api/towns/{town}/container/agents/{agent}/status")).await;
            let pid = r.body["pid"].as_u64()?;
            (r.body["status"] == "running" && !killed.contains(&pid)).then_some(pid)
        })
        .await;
        model
            .wait_until(TURN, |reqs| {
                reqs.iter().filter(|r| r.script() == Some("die")).count() >= attempt
            })
            .await
            .expect("the agent reached the model");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        killed.push(pid);
    }

    let failed = wait_for("the bead to fail", TURN, async || {
        let b = dev.get(&format!("/api/rigs/{rig}/beads/{bead}")).await;
        (b.data()["status"] == "failed").then(|| b.data().clone())
    })
    .await;
    assert_eq!(failed["status"], "failed");
    let a = dev.get(&format!("/api/rigs/{rig}/agents/{agent}")).await;
    assert_eq!(
        (a.data()["status"].clone(), a.data()["current_hook_bead_id"].clone()),
        (json!("idle"), Value::Null)
    );
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
    let kinds: Vec<&str> = events
        .data()
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "agent_dispatched").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "agent_exited").count(), 2, "{kinds:?}");
}
