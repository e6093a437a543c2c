//! Agents are kept apart, with everything real: the control server's binary, the Kilo CLI
//! 7.7.7, git, a local origin. Only the LLM is scripted, and the Worker is a recording stand-in.
//! Each probe is a command in a scripted agent's own `bash` tool, so it runs exactly as an agent
//! would run it.

use std::time::Duration;

use gastown_e2e::control_server::{start_request, ControlServer, Options};
use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::worker_stub::WorkerStub;
use serde_json::Value;

const TURN: Duration = Duration::from_secs(120);

/// The port of the agent's `kilo serve`, from its readiness line in the agent's output.
async fn kilo_port(cs: &ControlServer, agent: &str) -> u16 {
    let (status, out) = cs.get(&format!("/agents/{agent}/output?lines=200")).await;
    assert_eq!(status, 200, "{out}");
    out["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|l| {
            l.split("listening on http://127.0.0.1:")
                .nth(1)
                .and_then(|p| p.trim().trim_end_matches('/').parse().ok())
        })
        .unwrap_or_else(|| panic!("no readiness line in {out}"))
}

/// Starts the agent `victim` (script `victim`) on `origin` and waits until it runs; its record.
async fn start_victim(cs: &ControlServer, origin: &Origin) -> Value {
    let victim = start_request(
        "victim",
        "rig-1",
        "victim",
        "polecat/victim/aaaa1111",
        &origin.url(),
        &format!("Wait. {}", marker("victim")),
    );
    let (status, body) = cs.post("/agents/start?wait=true", victim).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// The output of the first bash call of `script` the model has seen.
async fn bash_output(model: &ModelServer, script: &str, needle: &str) -> String {
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| {
                r.script() == Some(script) && r.tool_results().iter().any(|t| t.contains(needle))
            })
        })
        .await
        .unwrap_or_else(|_| panic!("the {script} agent's command did not report {needle}"));
    model
        .requests()
        .iter()
        .filter(|r| r.script() == Some(script))
        .flat_map(|r| r.tool_results())
        .find(|t| t.contains(needle))
        .expect("output")
}

/// Another agent's Kilo server refuses an agent that has no password, while the control
/// server's own calls to it (session, prompt, follow-up message, events) still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_drive_another_agents_kilo_server() {
    let model =
        ModelServer::start([("victim", vec![Step::text("waiting"), Step::text("still here")])])
            .await
            .expect("model server");
    let worker = WorkerStub::start().await;
    let cs = ControlServer::start(
        Options::default()
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("GASTOWN_API_URL", worker.url()),
    );
    let origin = Origin::new();

    start_victim(&cs, &origin).await;
    let port = kilo_port(&cs, "victim").await;

    model.set_script(
        "probe",
        vec![
            Step::bash(format!(
                "for p in /global/health /session /global/event; do \
                   echo \"$p=$(curl -s -o /dev/null -m 5 -w '%{{http_code}}' http://127.0.0.1:{port}$p)\"; done; \
                 echo \"guess=$(curl -s -o /dev/null -m 5 -w '%{{http_code}}' -u kilo:kilo http://127.0.0.1:{port}/global/health)\"; echo probed"
            )),
            Step::text("probed"),
        ],
    );
    let probe = start_request(
        "probe",
        "rig-1",
        "probe",
        "polecat/probe/bbbb2222",
        &origin.url(),
        &format!("Probe. {}", marker("probe")),
    );
    let (status, body) = cs.post("/agents/start?wait=true", probe).await;
    assert_eq!(status, 201, "{body}");
    let out = bash_output(&model, "probe", "probed").await;
    for expected in ["/global/health=401", "/session=401", "/global/event=401", "guess=401"] {
        assert!(out.contains(expected), "{expected} missing from the probe's output: {out}");
    }

    // The control server still drives the victim: a follow-up message reaches the model.
    let (status, body) =
        cs.post("/agents/victim/message", serde_json::json!({ "prompt": "Are you there?" })).await;
    assert!(status == 200 || status == 202, "{status} {body}");
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| {
                r.script() == Some("victim")
                    && r.user_texts().iter().any(|t| t.contains("Are you there?"))
            })
        })
        .await
        .expect("the follow-up message reached the victim's session");
    let events = cs.events("victim").await;
    assert!(
        events.iter().any(|e| e["kind"] == "text" && e["data"]["text"] == "waiting"),
        "events still stream: {events:?}"
    );

    // The password (read here, as root, from the victim's process) is in no answer, event or
    // log line of the control server.
    let (_, status) = cs.get("/agents/victim/status").await;
    let pid = status["pid"].as_u64().expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .expect("the test runs as the Kilo process's owner or root");
    let password = environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"KILO_SERVER_PASSWORD="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the Kilo process has a password");
    assert!(password.len() >= 32, "a long random password");
    for path in [
        "/agents/victim/status",
        "/agents/victim/output?lines=200",
        "/agents/victim/events",
        "/agents",
        "/health",
    ] {
        let (_, body) = cs.get(path).await;
        assert!(!body.to_string().contains(&password), "{path} shows the password");
    }
    assert!(!cs.logs().join("\n").contains(&password), "the logs show the password");
}

/// Run as root (as in the container image), the server gives each Kilo process its own uid.
/// From its own shell an agent then cannot read another agent's checkout, HOME, tool key or
/// `/proc/<pid>/environ`, nor the environment of the control server (which no longer holds the
/// server's secrets anyway) or of a local Worker (`wrangler dev` run as root, as `scripts/dev`
/// does, with its secrets), nor of any process of another uid. When a run ends, whatever its
/// uid left running is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_under_their_own_uids_and_cannot_read_each_other() {
    if !gastown_e2e::skip::needs_root(
        "isolation::agents_run_under_their_own_uids_and_cannot_read_each_other",
        "agents get uids of their own only from a root server",
    ) {
        return;
    }
    let tag = format!("gastown-leftover-{}", std::process::id());
    let model = ModelServer::start([(
        "victim",
        vec![
            Step::bash(format!("echo victim-file-secret > secret.txt; (setsid sh -c 'sleep 300; echo {tag}' > /dev/null 2>&1 &); echo planted")),
            Step::text("waiting"),
        ],
    )])
    .await
    .expect("model server");
    let worker = WorkerStub::start().await;
    let cs = ControlServer::start(
        Options::default()
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("GASTOWN_API_URL", worker.url())
            .env("STOP_GRACE_MS", "3000"),
    );
    let (_, health) = cs.get("/health").await;
    assert_eq!(health["isolation"], "uid", "{health}");
    // A local Worker on this machine: root processes like those of `scripts/dev`, whose
    // environment there holds the Worker's secrets.
    let local_worker = gastown_e2e::wrangler::WranglerDev::start_with_env(&[]).await;
    let worker_group = local_worker.process_group().expect("wrangler dev runs");
    let worker_pids: Vec<i32> = gastown_e2e::procs::processes()
        .into_iter()
        .filter(|p| p.pgrp == worker_group)
        .map(|p| p.pid)
        .collect();
    assert!(worker_pids.len() >= 2, "node and workerd: {worker_pids:?}");

    // The server's secrets are gone from what /proc shows of its environment.
    let environ = String::from_utf8_lossy(
        &std::fs::read(format!("/proc/{}/environ", cs.pid())).expect("environ"),
    )
    .into_owned();
    assert!(
        !environ.contains("test-container-token"),
        "the container token is still in /proc/<server>/environ"
    );

    let origin = Origin::new();
    let mut victim = start_request(
        "victim",
        "rig-1",
        "victim",
        "polecat/victim/aaaa1111",
        &origin.url(),
        &format!("Plant. {}", marker("victim")),
    );
    victim["envVars"] = serde_json::json!({ "VICTIM_SECRET": "victim-env-secret" });
    let (status, body) = cs.post("/agents/start?wait=true", victim).await;
    assert_eq!(status, 201, "{body}");
    bash_output(&model, "victim", "planted").await;
    let victim_pid = body["pid"].as_u64().expect("pid");
    let victim_dir = body["workdir"].as_str().expect("workdir").to_string();
    let victim_run =
        std::fs::read_link(format!("/proc/{victim_pid}/cwd")).expect("the victim's private folder");

    model.set_script(
        "probe",
        vec![
            Step::bash(format!(
                "echo uid=$(id -u); echo mine=$(stat -c '%a:%u' \"$PWD\"); \
                 for f in {victim_dir}/secret.txt /proc/{victim_pid}/environ /proc/{cs_pid}/environ {run}/tool-key; do \
                   if cat \"$f\" > /dev/null 2>&1; then echo \"READ $f\"; else echo \"denied $f\"; fi; done; \
                 for d in {victim_dir} {run}/home; do \
                   if ls \"$d\" > /dev/null 2>&1; then echo \"READ $d\"; else echo \"denied $d\"; fi; done; \
                 for p in {worker_pids}; do if cat /proc/$p/environ > /dev/null 2>&1; then echo \"READ worker $p\"; else echo \"denied worker $p\"; fi; done; \
                 me=$(id -u); others=0; readable=0; for p in /proc/[0-9]*; do \
                   [ \"$(stat -c %u $p 2>/dev/null)\" = \"$me\" ] && continue; others=$((others+1)); \
                   cat $p/environ > /dev/null 2>&1 && readable=$((readable+1)); done; \
                 echo \"other-uid processes=$others environ readable=$readable\"; echo probed",
                cs_pid = cs.pid(),
                run = victim_run.display(),
                worker_pids = worker_pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ")
            )),
            Step::text("probed"),
        ],
    );
    let probe = start_request(
        "probe",
        "rig-1",
        "probe",
        "polecat/probe/bbbb2222",
        &origin.url(),
        &format!("Probe. {}", marker("probe")),
    );
    let (status, body) = cs.post("/agents/start?wait=true", probe).await;
    assert_eq!(status, 201, "{body}");
    let out = bash_output(&model, "probe", "probed").await;
    assert!(!out.contains("READ "), "the probe read what is not its own: {out}");
    assert_eq!(out.matches("denied ").count(), 6 + worker_pids.len(), "{out}");
    assert!(out.contains(" environ readable=0"), "{out}");
    assert!(!out.contains("other-uid processes=0 "), "the sweep saw other processes: {out}");
    println!("FAULT | an agent reads another's checkout, tool key, HOME and environ, and the servers' | every read denied | none");

    // Distinct unprivileged uids, each owning its own checkout (0700).
    let uid_of = |pid: u64| gastown_e2e::procs::uid(pid as u32).expect("a live process");
    let (victim_uid, probe_uid) = (uid_of(victim_pid), uid_of(body["pid"].as_u64().expect("pid")));
    assert!(
        victim_uid >= 20_000 && probe_uid >= 20_000 && victim_uid != probe_uid,
        "{victim_uid} {probe_uid}"
    );
    assert!(out.contains(&format!("uid={probe_uid}")), "{out}");
    assert!(out.contains(&format!("mine=700:{probe_uid}")), "{out}");

    // The victim's run ends: its process goes, and so does what it left in the background.
    assert!(
        !gastown_e2e::procs::with_cmdline(&tag).is_empty(),
        "the background process was planted"
    );
    let (status, _) = cs.post("/agents/victim/stop", serde_json::json!({})).await;
    assert_eq!(status, 200);
    gastown_e2e::wait::until(
        "the victim's leftovers to be killed",
        Duration::from_secs(30),
        async || gastown_e2e::procs::with_cmdline(&tag).is_empty().then_some(()),
    )
    .await;
}

/// The refinery's gates run code the polecats wrote. Run as root, the server runs them under a
/// uid of the merge's own: a gate can read neither another agent's tool key nor a root-only
/// file, nor the server's `/proc/<pid>/environ`, cannot write outside its worktree or signal
/// the server, and what it leaves running is killed when the gates end. A normal gate still
/// reads the merged tree, runs git and writes build output, and the merge is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_run_under_their_own_uid() {
    if !gastown_e2e::skip::needs_root(
        "isolation::gates_run_under_their_own_uid",
        "gates get a uid of their own only from a root server",
    ) {
        return;
    }
    let model =
        ModelServer::start([("victim", vec![Step::text("waiting")])]).await.expect("model server");
    let worker = WorkerStub::start().await;
    let cs = ControlServer::start(
        Options::default()
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("GASTOWN_API_URL", worker.url()),
    );
    let origin = Origin::new();

    // Another agent's Kilo process, with its tool key in its private folder.
    let victim_pid = start_victim(&cs, &origin).await["pid"].as_u64().expect("pid");
    let tool_key = std::fs::read_link(format!("/proc/{victim_pid}/cwd"))
        .expect("the victim's private folder")
        .join("tool-key");
    assert!(tool_key.exists(), "{}", tool_key.display());
    let secret = cs.workspace.join("root-secret");
    std::fs::write(&secret, "root-only-secret").expect("secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let outside = cs.workspace.join("rigs/rig-1/written-by-a-gate");

    // A polecat's branch on the origin, pushed here as root.
    let scratch = tempfile::tempdir().expect("scratch");
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(scratch.path())
            .output()
            .expect("sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh(&format!(
        "git clone -q '{}' c && cd c && git checkout -q -b polecat/toast/b1 && echo feature > feature.txt && git add feature.txt && \
         git -c user.name=toast -c user.email=toast@test commit -qm feature && git push -q origin polecat/toast/b1",
        origin.url()
    ));

    let merge = |review: &str, gate: String| {
        serde_json::json!({"reviewId": review, "beadId": "b1", "gitUrl": origin.url(), "defaultBranch": "main", "branch": "polecat/toast/b1",
                           "message": "Merge b1", "gates": [{"command": gate, "timeoutSecs": 60}], "deleteBranch": false})
    };
    let outcome = async |review: &str| {
        gastown_e2e::wait::until(
            &format!("merge {review} to end"),
            Duration::from_secs(120),
            async || {
                let (status, job) = cs.get(&format!("/rigs/rig-1/merges/{review}")).await;
                assert_eq!(status, 200, "{job}");
                (job["state"] != "running").then_some(job)
            },
        )
        .await
    };

    let tag = format!("gastown-gate-leftover-{}", std::process::id());
    let probe = format!(
        "echo uid=$(id -u) groups=$(id -G); \
         for f in {key} {secret} /proc/{cs_pid}/environ; do if cat \"$f\" > /dev/null 2>&1; then echo \"READ $f\"; else echo \"denied $f\"; fi; done; \
         if touch '{outside}' 2>/dev/null; then echo WROTE; else echo denied-write; fi; \
         if kill -0 {cs_pid} 2>/dev/null; then echo SIGNALLED; else echo denied-signal; fi; \
         (setsid sh -c 'sleep 300; echo {tag}' > /dev/null 2>&1 &); exit 3",
        key = tool_key.display(),
        secret = secret.display(),
        outside = outside.display(),
        cs_pid = cs.pid()
    );
    let (status, body) = cs.post("/rigs/rig-1/merges", merge("rev-1", probe)).await;
    assert_eq!(status, 202, "{body}");
    let job = outcome("rev-1").await;
    assert_eq!(job["state"], "gate_failed", "{job}");
    let output = job["output"].as_str().unwrap_or_default();
    let uid: u32 = output
        .split("uid=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("{output}"));
    assert!(uid >= 20_000, "the gate ran as uid {uid}: {output}");
    assert!(
        output.contains(&format!("uid={uid} groups={uid}\n")),
        "gid = uid, no other group: {output}"
    );
    assert_ne!(Some(uid), gastown_e2e::procs::uid(victim_pid as u32), "not the victim's uid");
    assert!(
        !output.contains("READ ") && !output.contains("WROTE") && !output.contains("SIGNALLED"),
        "{output}"
    );
    assert_eq!(output.matches("denied").count(), 5, "{output}");
    assert!(!outside.exists());
    assert!(
        gastown_e2e::procs::with_cmdline(&tag).is_empty(),
        "what the gate left running is killed with the gates"
    );
    println!("FAULT | a merge's gate reads an agent's tool key, a root-only file and the server's environ, writes outside its tree, signals the server | ran under a uid of its own; every attempt denied; what it left running killed | none");

    let normal = "test -f feature.txt && git diff --stat HEAD~1 | grep -q feature.txt && mkdir -p target && echo built > target/out".to_string();
    let (status, body) = cs.post("/rigs/rig-1/merges", merge("rev-2", normal)).await;
    assert_eq!(status, 202, "{body}");
    let job = outcome("rev-2").await;
    assert_eq!(job["state"], "merged", "{job}");
    let log = origin.log("main").expect("main");
    assert!(
        log.first().is_some_and(|l| l.starts_with("Gastown Refinery|") && l.ends_with("|Merge b1")),
        "{log:?}"
    );
}
