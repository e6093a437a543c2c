//! The dashboard in a real browser (Debian's headless Chromium driven by playwright-core,
//! `tests/browser/dashboard.mjs`), against a whole local town where only the LLM is scripted:
//! `wrangler dev` with the built Worker, the native control server, the real Kilo CLI, real git.
//! The town and rig are made through the API; the page refuses a wrong key with a clear error,
//! shows them with the right one, slings a bead through its form and shows it move to
//! in_progress and then closed (merged) while the scripted agent works, and the agent's live
//! stream shows its tool call (held open by a gate this test releases), the call's output and
//! the end of the run, and the usage panel and the bead's card show what its calls spent (cost
//! unknown: the scripted model has no price). Then the mayor panel: a person's message (with markup in it, shown as
//! text) goes to the town's mayor, the session's status shows, the scripted mayor's reply
//! appears in the transcript, and the mayor's live stream opens from the panel. The screenshot
//! is kept under the target directory (`browser/`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step, BRANCH_PLACEHOLDER};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wrangler::{Auth, INTERNAL_KEY};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const BROWSER_RUN: Duration = Duration::from_secs(600);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_town_at_work_and_an_agents_live_stream() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is missing: run scripts/setup (apt-get install chromium)"
    );
    let root = repo_root();
    assert!(
        root.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/setup (npm install)"
    );

    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local = LocalTown::start(&model, &[], &[("SCHEDULER_TICK_MS", "1000")]).await;
    let dev = &local.worker;

    // The page: public, static, no secret in it; the reference's markers are there.
    let resp = reqwest::get(format!("{}/", dev.base_url)).await.expect("GET /");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap_or("").starts_with("text/html"));
    assert!(resp.headers().contains_key("content-security-policy"));
    let html = resp.text().await.expect("page");
    assert!(html.contains("Gastown Dashboard") && html.contains("API_KEY"));
    assert!(!html.contains(INTERNAL_KEY), "the internal key is never in the page");
    let not_found =
        dev.call(reqwest::Method::GET, "/api/towns/nope", &Auth::None, Value::Null).await;
    assert_eq!(not_found.status, 401, "the API behind the page still needs the key");

    let origin = Origin::new();
    let (town, rig) = local.town_and_rig("dashboard-town", &origin.url()).await;
    // The towns' list the page starts from (internal key).
    let towns = dev.get("/api/towns").await;
    assert_eq!(towns.status, 200, "{towns:?}");
    assert!(
        towns.data().as_array().is_some_and(|a| a
            .iter()
            .any(|t| t["id"] == town.as_str() && t["name"] == "dashboard-town")),
        "{towns:?}"
    );
    assert_eq!(
        dev.call(reqwest::Method::GET, "/api/towns", &Auth::None, Value::Null).await.status,
        401
    );

    // The agent's first tool call waits for a gate this test opens once the page shows the call.
    let gate_dir = tempfile::tempdir().expect("gate dir");
    // Readable by the agents, which may run under their own uid.
    std::fs::set_permissions(gate_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let gate = gate_dir.path().join("dashboard-gate");
    let wait = format!(
        "for i in $(seq 1500); do [ -e {g} ] && break; sleep 0.2; done; [ -e {g} ] && echo released-$((6*7))",
        g = gate.display()
    );
    let mut steps = vec![Step::bash(wait)];
    let mut done = commit_then_done("dashboard.txt", "from-the-dashboard");
    // The review queue links the pull request the agent names (the page's script checks it).
    done[1] = Step::tool(
        "gt_done",
        json!({ "branch": BRANCH_PLACEHOLDER, "summary": "wrote it", "pr_url": "https://forge.test/org/app/pull/5" }),
    );
    steps.extend(done);
    model.set_script("dash", steps);
    // The mayor's conversation starts with the person's first message, marker included.
    let mayor_message = format!("{} Hello mayor, is <i>this</i> markup?", marker("dash-mayor"));
    let mayor_reply = "Hello from the mayor: <b>no</b> markup & no surprises.";
    model.set_script("dash-mayor", vec![Step::text(mayor_reply)]);

    let shots =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("browser");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let shot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut child = tokio::process::Command::new("node")
        .current_dir(&root)
        .arg("tests/browser/dashboard.mjs")
        .args([dev.base_url.as_str(), &town, "dashboard-town", &rig, &marker("dash")])
        .arg(&shot)
        .args([mayor_message.as_str(), mayor_reply])
        .env("GASTOWN_KEY", INTERNAL_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let run = tokio::time::timeout(BROWSER_RUN, async {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("browser: {line}");
            if line == "SAW tool_call" {
                std::fs::write(&gate, "go").expect("open the gate");
            }
            seen.push(line);
        }
        child.wait().await.expect("node exit")
    })
    .await;
    let mut err = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
    let status = run.unwrap_or_else(|_| {
        panic!("the browser test did not finish within {BROWSER_RUN:?}; it saw {seen:?}")
    });
    assert!(
        status.success(),
        "the browser test failed: {err}\nit saw: {seen:?}\n(screenshot: {})",
        shot.display()
    );
    for want in [
        "SAW bad key refused",
        "SAW town and rig",
        "SAW in_progress",
        "SAW tool_call",
        "SAW tool output",
        "SAW stream ended",
        "SAW run usage",
        "SAW closed",
        "SAW merged",
        "SAW pull request linked",
        "SAW usage",
        "SAW bead usage",
        "SAW mayor blank refused",
        "SAW mayor sent",
        "SAW mayor person message",
        "SAW mayor reply",
        "SAW mayor stream",
        "OK",
    ] {
        assert!(seen.iter().any(|l| l.starts_with(want)), "{want} missing from {seen:?}");
    }
    assert!(
        seen.iter().any(|l| l.starts_with("SAW bad key refused") && l.contains("key was refused")),
        "{seen:?}"
    );
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    drop(origin);
}
