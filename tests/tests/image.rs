//! The town image, run for real: the image scripts/build-image built from ./Dockerfile, started
//! with podman (host network), its entrypoint (the control server) as PID 1, with the image's own
//! Kilo binary and tool files. It reports to the real Worker under `wrangler dev` on loopback
//! (whose TownContainer forwards to it through CONTAINER_URL), its agents talk to the scripted
//! model on loopback and push to a local origin mounted into the container at the same path.
//! Only the LLM is replaced.
//!
//! One test, in order: /health; a slung bead is dispatched, worked, pushed, gt_done'd and merged
//! by the container; the agent's shell runs under its own uid with a private 0700 checkout and
//! HOME and cannot read PID 1's environment; SIGTERM with an agent in the middle of a turn
//! drains (its uncommitted work pushed as a WIP commit) and the server exits 0 before podman's
//! stop grace runs out (a SIGKILL would make the exit status 137).

use std::time::Duration;

use gastown_e2e::model_server::{marker, ModelServer, Step, MODEL_ID};
use gastown_e2e::origin::Origin;
use gastown_e2e::podman::TownImage;
use gastown_e2e::wait::until as wait_for;
use gastown_e2e::wrangler::{WranglerDev, CONTAINER_TOKEN};
use serde_json::json;

const TURN: Duration = Duration::from_secs(180);
/// The image's Kilo binary (the Dockerfile's KILO_BIN).
const IMAGE_KILO: &str = "/opt/kilo/node_modules/@kilocode/cli-linux-x64/bin/kilo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_a_town_agent_as_pid_1_and_drains_on_sigterm() {
    assert!(gastown_e2e::procs::is_root(), "the image test runs rootful podman: run it as root");
    let origin = Origin::new();
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let socket =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind the control server's socket");
    let control_url = format!("http://127.0.0.1:{}", socket.local_addr().expect("address").port());
    let model_ref = format!("scripted/{MODEL_ID}");
    let dev = WranglerDev::start_with_env(&[
        ("CONTAINER_URL", &control_url),
        ("GASTOWN_MODEL", &model_ref),
        ("SCHEDULER_TICK_MS", "1000"),
    ])
    .await;
    // What the TownContainer passes in production (container.rs's PASSED_ENV), plus a short
    // drain window so the SIGTERM part stays short.
    let mut container = TownImage::run(
        &socket,
        &[
            ("CONTAINER_TOKEN", CONTAINER_TOKEN),
            ("GASTOWN_API_URL", &dev.base_url),
            ("GASTOWN_MODEL_BASE_URL", &model.base_url()),
            ("ALLOW_LOCAL_REPOS", "true"),
            ("SHUTDOWN_DRAIN_MS", "5000"),
        ],
        &[&origin.path],
    );

    // The control server answers, directly and through the Worker, and is PID 1, as root, of
    // the image's entrypoint.
    let http = gastown_e2e::http_client(Duration::from_secs(30));
    let health: serde_json::Value = http
        .get(format!("{control_url}/health"))
        .send()
        .await
        .expect("/health")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        (&health["status"], &health["isolation"]),
        (&json!("ok"), &json!("uid")),
        "{health}"
    );
    let town = dev.post("/api/towns", json!({"name": "image"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let via_worker = dev.get(&format!("/api/towns/{town}/container/health")).await;
    assert_eq!(
        (via_worker.status, &via_worker.body["status"]),
        (200, &json!("ok")),
        "{via_worker:?}"
    );
    let (_, pid1) =
        container.exec(&["sh", "-c", "tr '\\0' ' ' </proc/1/cmdline; echo; stat -c %u /proc/1"]);
    assert_eq!(
        pid1.lines().collect::<Vec<_>>(),
        ["/usr/local/bin/gastown-container ", "0"],
        "PID 1 of the container"
    );
    // The build's network settings stayed in the build: the host's CA store was mounted at /mnt
    // for RUN steps only, and the stand-in bases' variables pointing there are not in this stage.
    let (_, leftovers) = container.exec(&[
        "sh",
        "-c",
        "ls -A /mnt; env | grep -i -e /mnt -e CA_CERT -e CAINFO || true",
    ]);
    assert_eq!(leftovers.trim(), "", "build-time CA settings reached the image");
    let rig = dev
        .post(&format!("/api/towns/{town}/rigs"), json!({"name": "app", "git_url": origin.url()}))
        .await
        .data()["id"]
        .as_str()
        .expect("rig")
        .to_string();

    // An agent works a bead in the container: probes its uid and folders, commits, pushes and
    // calls gt_done; the refinery in the same container merges it.
    model.set_script(
        "image",
        vec![
            Step::tool("gt_prime", json!({})),
            Step::bash(
                "me=$(id -u); echo \"uid=$me checkout=$(stat -c '%a:%u' \"$PWD\") private=$(stat -c '%a:%u' \"$(dirname \"$HOME\")\") \
                 home=$(stat -c %u \"$HOME\") kilo=$(readlink /proc/$PPID/exe)\"; \
                 if cat /proc/1/environ > /dev/null 2>&1; then echo 'READ pid1 environ'; else echo 'denied pid1 environ'; fi; echo probed",
            ),
            Step::bash(
                "test \"$(git rev-parse --abbrev-ref HEAD)\" = {{branch}} && echo work > work.txt && git add work.txt && \
                 git commit -qm 'agent work' && git push -q origin {{branch}} && echo pushed",
            ),
            Step::tool("gt_done", json!({"branch": "{{branch}}", "summary": "added work.txt"})),
            Step::text("done"),
        ],
    );
    let slung = dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": "Add work.txt", "body": format!("Create work.txt. {}", marker("image"))})).await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let bead = slung.data()["bead"]["id"].as_str().expect("bead").to_string();
    let agent = slung.data()["agent"]["id"].as_str().expect("agent").to_string();
    let review = wait_for("the review entry", TURN, async || {
        let q = dev.get(&format!("/api/rigs/{rig}/review-queue")).await;
        q.data().as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(
        (&review["bead_id"], &review["agent_id"], &review["summary"]),
        (&json!(bead), &json!(agent), &json!("added work.txt")),
        "{review}"
    );
    let merged = wait_for("the merge", TURN, async || {
        let q = dev.get(&format!("/api/rigs/{rig}/review-queue")).await;
        q.data()
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|e| e["status"] != "pending" && e["status"] != "running")
    })
    .await;
    assert_eq!(merged["status"], "merged", "{merged}");
    assert!(
        origin.log("main").is_some_and(|l| l.iter().any(|c| c.ends_with("|agent work"))),
        "main has the agent's commit"
    );

    // The agent's shell: its own uid from AGENT_UID_BASE (20000), its checkout and private
    // folder 0700 and its own, the image's Kilo as its parent, PID 1's environment closed.
    let probe = model
        .requests_for("image")
        .iter()
        .flat_map(|r| r.tool_results())
        .find(|t| t.contains("probed"))
        .expect("the probe's output");
    let uid: u32 = probe
        .split("uid=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {probe}"));
    eprintln!("probe: {probe}");
    assert!((20_000..21_000).contains(&uid), "the agent runs under an agent uid: {probe}");
    for expected in [
        format!("checkout=700:{uid}"),
        format!("private=700:{uid}"),
        format!("home={uid}"),
        format!("kilo={IMAGE_KILO}"),
        "denied pid1 environ".into(),
    ] {
        assert!(probe.contains(&expected), "{expected} missing from the probe's output: {probe}");
    }
    // The tools the agent's Kilo offered the model came from the image's tool files.
    let tools = model.requests_for("image").first().map(|r| r.tool_names()).unwrap_or_default();
    assert!(
        tools.iter().any(|t| t == "gt_done") && tools.iter().any(|t| t == "gt_prime"),
        "{tools:?}"
    );

    // SIGTERM while an agent is in the middle of a turn, with uncommitted work: the server
    // drains (saves that work as a WIP commit on the agent's branch) and exits 0 within the
    // stop grace period.
    model.set_script(
        "draft",
        vec![
            Step::bash("echo draft > draft.txt && echo drafted"),
            Step::bash("sleep 600"),
            Step::text("slept"),
        ],
    );
    let slung = dev
        .post(&format!("/api/rigs/{rig}/sling"), json!({"title": "Draft", "body": marker("draft")}))
        .await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let bead = slung.data()["bead"]["id"].as_str().expect("bead").to_string();
    let name = slung.data()["agent"]["name"].as_str().expect("name").to_string();
    let draft_branch = format!(
        "polecat/{name}/{}",
        bead.chars().filter(|c| *c != '-').take(8).collect::<String>()
    );
    // The model has answered "sleep 600" once it got the request that carries "drafted".
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| {
                r.script() == Some("draft")
                    && r.tool_results().iter().any(|t| t.contains("drafted"))
            })
        })
        .await
        .expect("the draft agent wrote its file");
    let status = container.stop(Duration::from_secs(60));
    let logs = container.logs().join("\n");
    assert_eq!(
        status.code(),
        Some(0),
        "the control server's exit after SIGTERM: {status}; logs:\n{logs}"
    );
    let wip = origin
        .log(&draft_branch)
        .unwrap_or_else(|| panic!("the drain pushed no {draft_branch}; logs:\n{logs}"));
    eprintln!("{draft_branch}: {wip:?}");
    assert!(
        wip.first()
            .is_some_and(|c| c.ends_with("|WIP: saved by gastown when the container shut down")),
        "{wip:?}"
    );
}
