//! A town finishes its work, everything real but the LLM (`wrangler dev` with the built Worker,
//! the native control server, the real Kilo CLI, real git and a local origin per rig): polecats
//! are recycled, the refinery merges reviewed branches into `main`, beads close, convoys land,
//! conflicts and failed gates go back to the polecat, and the rework limit escalates.
//!
//! One town serves three rigs, each a scenario, run at once:
//! - `app`: a convoy of three beads, then two more slung to the polecats that are idle again;
//!   all five merged on the origin's `main`, no commit lost, every bead closed, the convoy
//!   landed, no Kilo process left, merged branches and their worktrees removed;
//! - `clash`: two beads write the same file; one merges, the other is sent back with the
//!   conflict in its prompt, merges `origin/main`, resolves, resubmits, and merges;
//! - `gated`: a quality gate fails; the bead is sent back with the gate's output, fails again,
//!   and escalates once the rework limit (1) is reached.

use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done as commit_and_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::procs;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until as wait_for;
use gastown_e2e::wrangler::WranglerDev;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(300);

/// Waits until no worktree is left in the rig's folder of the container's workspace.
async fn worktrees_gone(local: &LocalTown, rig: &str, what: &str, within: Duration) {
    let worktrees = local.control.workspace.join(format!("rigs/{rig}/worktrees"));
    wait_for(what, within, async || {
        std::fs::read_dir(&worktrees).map(|d| d.count() == 0).unwrap_or(true).then_some(())
    })
    .await;
}

async fn reviews(dev: &WranglerDev, rig: &str) -> Vec<Value> {
    dev.get(&format!("/api/rigs/{rig}/review-queue?limit=100"))
        .await
        .data()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out =
        std::process::Command::new("git").arg("-C").arg(dir).args(args).output().expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_merges_its_work_reworks_conflicts_and_escalates_failing_gates() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local =
        LocalTown::start(&model, &[("STOP_GRACE_MS", "3000")], &[("SCHEDULER_TICK_MS", "1000")])
            .await;
    let dev = &local.worker;
    let town = dev.post("/api/towns", json!({ "name": "finishing" })).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();

    let (app, clash, gated) = tokio::join!(
        app_scenario(&local, &model, &town),
        clash_scenario(&local, &model, &town),
        gated_scenario(&local, &model, &town),
    );

    // Nothing finished holds a Kilo process: every run ended, no child of the control server
    // is left.
    let (_, list) = local.control.get("/agents").await;
    wait_for("every run to end", Duration::from_secs(60), async || {
        let (_, list) = local.control.get("/agents").await;
        list["agents"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["status"] == "exited" || x["status"] == "failed"))
            .then_some(())
    })
    .await;
    assert!(list["agents"].as_array().is_some_and(|a| a.len() >= 5), "{list}");
    // The warm pool's process is the only one left.
    wait_for("the Kilo processes to go", Duration::from_secs(30), async || {
        let pooled = local.control.pooled_pids().await;
        procs::processes()
            .into_iter()
            .all(|p| p.ppid != local.control.pid() as i32 || pooled.contains(&p.pid))
            .then_some(())
    })
    .await;
    drop((app, clash, gated));
}

/// A convoy of three, then two more to the same (idle again) polecats: five merges on `main`.
async fn app_scenario(local: &LocalTown, model: &ModelServer, town: &str) -> Origin {
    let dev = &local.worker;
    let origin = Origin::new();
    let rig = local.rig(town, "app", &origin.url()).await;
    for i in 1..=5 {
        model.set_script(
            format!("app{i}"),
            commit_and_done(&format!("f{i}.txt"), &format!("bead-{i}")),
        );
    }
    let spec = |i: usize| json!({ "title": format!("Write f{i}.txt"), "body": format!("Create f{i}.txt. {}", marker(&format!("app{i}"))) });
    let created = dev
        .post(
            &format!("/api/rigs/{rig}/convoys"),
            json!({ "title": "first three", "beads": [spec(1), spec(2), spec(3)] }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let convoy = created.data()["id"].as_str().expect("convoy id").to_string();
    assert_eq!(created.data()["status"], "open");
    let first: Vec<String> = created.data()["beads"]
        .as_array()
        .expect("beads")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(first.len(), 3);
    let polecats: Vec<String> = created.data()["slung"]
        .as_array()
        .expect("slung")
        .iter()
        .map(|s| s["agent"]["id"].as_str().expect("agent").to_string())
        .collect();

    // The three submit their branches; their polecats are idle again.
    wait_for("three review entries", WORK, async || {
        (reviews(dev, &rig).await.len() >= 3).then_some(())
    })
    .await;
    let mut later = Vec::new();
    for i in 4..=5 {
        let slung = wait_for("an idle polecat for the next sling", WORK, async || {
            let idle = dev.get(&format!("/api/rigs/{rig}/agents?status=idle")).await;
            if idle.data().as_array().is_none_or(|a| a.is_empty()) {
                return None;
            }
            let s = dev.post(&format!("/api/rigs/{rig}/sling"), spec(i)).await;
            Some(s)
        })
        .await;
        assert_eq!(slung.status, 201, "{slung:?}");
        assert_eq!(
            slung.data()["agent_created"],
            false,
            "a polecat that worked before takes the bead"
        );
        assert!(
            polecats.contains(&slung.data()["agent"]["id"].as_str().expect("agent").to_string())
        );
        later.push(slung.data()["bead"]["id"].as_str().expect("bead").to_string());
    }

    let all: Vec<String> = first.iter().chain(later.iter()).cloned().collect();
    for id in &all {
        let b = dev.settled_bead(&rig, id, WORK).await;
        assert_eq!(b["status"], "closed", "{b}");
        let events = dev.get(&format!("/api/rigs/{rig}/beads/{id}/events?limit=100")).await;
        let kinds: Vec<&str> = events
            .data()
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        for k in ["review_submitted", "merge_started", "merged", "closed"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
    }
    let entries = reviews(dev, &rig).await;
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert!(
        entries.iter().all(|e| e["status"] == "merged" && e["result"]["commit"].is_string()),
        "{entries:?}"
    );

    // On the origin: all five files on main, each through its own merge commit; no polecat
    // branch left.
    let files = git(&origin.path, &["ls-tree", "--name-only", "main"]);
    for i in 1..=5 {
        assert!(
            files.lines().any(|f| f == format!("f{i}.txt")),
            "f{i}.txt missing from main: {files}"
        );
    }
    let merges = git(&origin.path, &["log", "--merges", "--format=%an|%s", "main"]);
    assert_eq!(merges.lines().count(), 5, "{merges}");
    assert!(merges.lines().all(|l| l.starts_with("Gastown Refinery|Merge polecat/")), "{merges}");
    let branches = git(&origin.path, &["branch", "--list", "polecat/*"]);
    assert!(branches.is_empty(), "merged branches are deleted: {branches}");

    let c = dev.get(&format!("/api/rigs/{rig}/convoys/{convoy}")).await;
    assert_eq!(c.data()["status"], "landed", "{c:?}");
    assert!(c.data()["landed_at"].is_string());
    // What the convoy's three beads spent is summed under it (each made at least two calls).
    let usage = format!("/api/towns/{town}/usage?group_by=convoy");
    wait_for("the convoy's usage", Duration::from_secs(60), async || {
        let r = dev.get(&usage).await;
        let groups = r.data()["groups"].as_array().cloned().unwrap_or_default();
        groups
            .into_iter()
            .find(|g| g["key"] == convoy.as_str() && g["calls"].as_u64().is_some_and(|n| n >= 6))
    })
    .await;

    // The merged branches' worktrees are gone from the container's workspace.
    worktrees_gone(local, &rig, "the merged worktrees to go", Duration::from_secs(30)).await;
    origin
}

/// Two beads create the same file: the second to merge conflicts and is reworked.
async fn clash_scenario(local: &LocalTown, model: &ModelServer, town: &str) -> Origin {
    let dev = &local.worker;
    let origin = Origin::new();
    let rig = local.rig(town, "clash", &origin.url()).await;
    let rework = |content: &str| {
        vec![
            Step::bash(format!(
                "git fetch -q origin && (git merge -q origin/main >/dev/null 2>&1 || true); echo {content} > shared.txt && \
                 git add shared.txt && git commit -qm 'resolve shared.txt' && echo resolved"
            )),
            Step::tool("gt_done", json!({ "branch": "{{branch}}", "summary": "resolved the conflict" })),
            Step::text("resolved"),
        ]
    };
    model.set_runs("clash1", vec![commit_and_done("shared.txt", "one"), rework("one-and-two")]);
    model.set_runs("clash2", vec![commit_and_done("shared.txt", "two"), rework("one-and-two")]);
    let mut ids = Vec::new();
    for i in 1..=2 {
        let s = dev.post(&format!("/api/rigs/{rig}/sling"), json!({ "title": format!("Write shared.txt ({i})"), "body": marker(&format!("clash{i}")) })).await;
        assert_eq!(s.status, 201, "{s:?}");
        ids.push(s.data()["bead"]["id"].as_str().expect("bead").to_string());
    }
    for id in &ids {
        let b = dev.settled_bead(&rig, id, WORK).await;
        assert_eq!(b["status"], "closed", "{b}");
    }
    let entries = reviews(dev, &rig).await;
    let statuses: Vec<&str> = entries.iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "merged").count(), 2, "{entries:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "rework").count(), 1, "{entries:?}");
    let sent_back =
        entries.iter().find(|e| e["status"] == "rework").expect("the conflicting entry");
    assert_eq!(sent_back["result"]["state"], "conflict");

    // The reworked polecat's new run began with the conflict report.
    let reworked: Vec<_> = model
        .requests()
        .into_iter()
        .filter(|r| r.user_texts().iter().any(|t| t.contains("<merge-report>")))
        .collect();
    assert!(!reworked.is_empty(), "no rework prompt reached the model");
    assert!(reworked.iter().any(|r| r
        .user_texts()
        .iter()
        .any(|t| t.contains("conflicts") && t.contains("shared.txt"))));
    assert_eq!(git(&origin.path, &["show", "main:shared.txt"]), "one-and-two");
    origin
}

/// A failing gate sends the bead back with the gate's output; at the rework limit it escalates.
async fn gated_scenario(local: &LocalTown, model: &ModelServer, town: &str) -> Origin {
    let dev = &local.worker;
    let origin = Origin::new();
    let gate = "if [ -e broken.txt ]; then echo 'gate says: broken.txt must not exist'; exit 3; fi";
    let rig = dev
        .post(
            &format!("/api/towns/{town}/rigs"),
            json!({ "name": "gated", "git_url": origin.url(), "merge_gates": [gate], "gate_timeout_secs": 60, "max_rework_rounds": 1 }),
        )
        .await;
    assert_eq!(rig.status, 201, "{rig:?}");
    let rig = rig.data()["id"].as_str().expect("rig").to_string();
    let config = dev.get(&format!("/api/rigs/{rig}/config")).await;
    assert_eq!(config.data()["merge_gates"], json!([gate]));
    model.set_runs(
        "gated",
        vec![commit_and_done("broken.txt", "first"), commit_and_done("broken.txt", "second")],
    );
    let s = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({ "title": "Break things", "body": marker("gated") }),
        )
        .await;
    let id = s.data()["bead"]["id"].as_str().expect("bead").to_string();

    let failed = dev.settled_bead(&rig, &id, WORK).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let entries = reviews(dev, &rig).await;
    assert_eq!(entries.len(), 2, "one first try and one rework round: {entries:?}");
    assert!(
        entries.iter().all(|e| e["status"] == "rework" && e["result"]["state"] == "gate_failed"),
        "{entries:?}"
    );

    // The rework prompt carried the gate's output.
    let reworked = model
        .requests_for("gated")
        .into_iter()
        .find(|r| r.user_texts().iter().any(|t| t.contains("<merge-report>")))
        .expect("a rework run");
    assert!(
        reworked.user_texts().iter().any(|t| t.contains("gate says: broken.txt must not exist")),
        "{:?}",
        reworked.user_texts()
    );

    // The escalation names the bead; nothing reached main.
    let escalations = dev.get(&format!("/api/rigs/{rig}/beads?type=escalation")).await;
    let esc =
        escalations.data().as_array().and_then(|a| a.first().cloned()).expect("an escalation bead");
    assert_eq!(esc["metadata"]["bead_id"], json!(id));
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{id}/events?limit=100")).await;
    let kinds: Vec<&str> = events
        .data()
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "rework").count(), 1, "{kinds:?}");
    assert!(kinds.contains(&"escalated"), "{kinds:?}");
    assert!(git(&origin.path, &["ls-tree", "--name-only", "main"])
        .lines()
        .all(|f| f != "broken.txt"));
    // The abandoned branch's worktree goes too.
    worktrees_gone(local, &rig, "the abandoned worktree to go", Duration::from_secs(90)).await;
    origin
}
