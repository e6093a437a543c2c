//! The control server with everything real: its binary, the Kilo CLI 7.7.7, git, a local
//! origin, and signals. Only the LLM is scripted (tests/src/model_server.rs), and the Worker is
//! a recording stand-in (the Worker itself is tested under wrangler dev elsewhere).

use std::time::Duration;

use gastown_e2e::control_server::{start_request, ControlServer, Options};
use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::procs;
use gastown_e2e::worker_stub::WorkerStub;
use serde_json::{json, Value};

const TURN: Duration = Duration::from_secs(120);

fn server(model: &ModelServer, worker: &WorkerStub, extra: &[(&str, &str)]) -> ControlServer {
    let mut o = Options::default()
        .env("GASTOWN_MODEL_BASE_URL", model.base_url())
        .env("GASTOWN_API_URL", worker.url())
        .env("STOP_GRACE_MS", "3000");
    for (k, v) in extra {
        o = o.env(k, *v);
    }
    ControlServer::start(o)
}

fn event_matches(events: &[Value], kind: &str, pred: impl Fn(&Value) -> bool) -> bool {
    events.iter().any(|e| e["kind"] == kind && pred(&e["data"]))
}

/// The whole life of one agent's run: start in its own worktree and branch, a shell command
/// that commits and pushes, events, heartbeat, a follow-up message in the same session with a
/// refreshed credential, a repeated dispatch answered with the same run, gt_done forwarded as
/// that agent, and then the run's end: its Kilo process goes without being asked, the worktree
/// stays, and the same agent id takes new work as a new run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_works_in_its_worktree_pushes_and_calls_gt_done() {
    let origin = Origin::new();
    let branch = "polecat/toast/abcd1234";
    let script = vec![
        Step::bash(format!(
            "pwd; git rev-parse --abbrev-ref HEAD; echo \"id=${{GASTOWN_AGENT_ID:-none}} var=$MY_VAR\"; \
             echo work > agent.txt && git add agent.txt && git commit -qm 'agent work' && git push -q origin {branch} && echo pushed"
        )),
        Step::text("worked"),
        // The follow-up message continues the same conversation, with a refreshed credential.
        Step::bash("echo followup-ran"),
        Step::tool("gt_mail_check", json!({})),
        Step::tool("gt_done", json!({ "branch": branch, "pr_url": "", "summary": "added agent.txt" })),
        Step::text("done"),
    ];
    let model = ModelServer::start([("life", script)]).await.expect("model server");
    let worker = WorkerStub::start().await;
    let cs = server(&model, &worker, &[]);

    let mut req = start_request(
        "agent-1",
        "rig-1",
        "toast",
        branch,
        &origin.url(),
        &format!("Do the bead. {}", marker("life")),
    );
    req["envVars"] =
        json!({ "MY_VAR": "visible-value", "GASTOWN_SESSION_TOKEN": "jwt-of-agent-1" });
    req["dispatchId"] = json!("bead-1-attempt-1");
    let (status, started) = cs.post("/agents/start?wait=true", req.clone()).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["status"], "running");
    let pid = started["pid"].as_u64().expect("pid") as i32;
    let workdir = started["workdir"].as_str().expect("workdir").to_string();
    assert!(workdir.ends_with("rigs/rig-1/worktrees/polecat~toast~abcd1234"), "{workdir}");
    assert!(workdir.starts_with(cs.workspace.canonicalize().expect("ws").to_str().expect("utf8")));

    // The same dispatch again is the same run; another start while it works is a conflict.
    let (status, same) = cs.post("/agents/start?wait=true", req.clone()).await;
    assert_eq!((status, &same["pid"]), (200, &started["pid"]), "{same}");
    let (status, body) = cs
        .post(
            "/agents/start?wait=true",
            start_request("agent-1", "rig-1", "toast", branch, &origin.url(), "again"),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // The shell command ran in the worktree, on the branch, with the request's envVars and no
    // identity in its environment (identity is by session; the git author is in the checkout).
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| r.tool_results().iter().any(|t| t.contains("pushed")))
        })
        .await
        .expect("bash result");
    let bash_output = model
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .find(|t| t.contains("pushed"))
        .expect("bash output");
    assert!(bash_output.contains(&workdir), "{bash_output}");
    assert!(bash_output.contains(branch), "{bash_output}");
    assert!(bash_output.contains("id=none var=visible-value"), "{bash_output}");

    // The commit is in the origin, by the agent's git identity.
    let log = origin.log(branch).expect("branch pushed to origin");
    assert_eq!(
        log.first().map(String::as_str),
        Some("toast (gastown)|toast@gastown.local|agent work"),
        "{log:?}"
    );

    // Events: status, the tool call, the text that ended the turn.
    let deadline = std::time::Instant::now() + TURN;
    let events = loop {
        let events = cs.events("agent-1").await;
        if event_matches(&events, "text", |d| d["text"] == "worked")
            || std::time::Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(event_matches(&events, "status", |d| d["status"] == "running"), "{events:?}");
    assert!(
        event_matches(&events, "tool_call", |d| d["tool"] == "bash"
            && d["state"] == "completed"
            && d["exit"] == 0),
        "{events:?}"
    );
    assert!(event_matches(&events, "text", |d| d["text"] == "worked"), "{events:?}");
    let ids: Vec<u64> = events.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids increase by one: {ids:?}");

    // The heartbeat carries the agent, in one request for the container.
    let beat = worker
        .wait_for(Duration::from_secs(10), |r| {
            r.path == "/api/towns/town1/container/heartbeat"
                && r.body["agents"][0]["status"] == "running"
        })
        .await
        .expect("heartbeat");
    assert_eq!(beat.container_token.as_deref(), Some("test-container-token"));
    assert_eq!(beat.body["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(beat.body["agents"][0]["agentId"], "agent-1");
    assert!(beat.body["agents"][0]["lastActivityAt"].is_string());

    // One boot id names this run of the server everywhere: /health, the heartbeat, the agent's
    // record, and a 404 (so the Worker can tell a run lost with an earlier boot).
    let boot = cs.get("/health").await.1["bootId"].as_str().expect("bootId in /health").to_string();
    assert_eq!(beat.body["bootId"].as_str(), Some(boot.as_str()));
    assert_eq!(cs.get("/agents/agent-1/status").await.0, 200);
    assert_eq!(cs.get("/agents").await.1["agents"][0]["bootId"].as_str(), Some(boot.as_str()));
    let (status, unknown) = cs.get("/agents/nobody/status").await;
    assert_eq!((status, unknown["bootId"].as_str()), (404, Some(boot.as_str())), "{unknown}");

    // Kilo keeps no snapshot store of the checkout (config `snapshot: false`): its process's
    // data folder (`xdg/data/kilo/snapshot` when on), after a turn that changed files, holds none.
    let snapshots = snapshot_dirs(&cs.workspace.join("run"));
    assert!(snapshots.is_empty(), "Kilo snapshot stores: {snapshots:?}");

    // The Kilo process's own output is captured (its readiness line names its port).
    let (status, output) = cs.get("/agents/agent-1/output?lines=50").await;
    assert_eq!(status, 200, "{output}");
    assert!(
        output["lines"].as_array().is_some_and(|l| l
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.contains("listening on http://127.0.0.1:")))),
        "{output}"
    );
    assert_eq!(cs.get("/agents/agent-1/output?lines=x").await.0, 400);

    // Status and listing.
    let (_, st) = cs.get("/agents/agent-1/status").await;
    assert_eq!((st["status"].as_str(), st["pid"].as_u64()), (Some("running"), Some(pid as u64)));
    let (_, list) = cs.get("/agents").await;
    assert_eq!(list["agents"].as_array().map(Vec::len), Some(1));

    // A follow-up message reaches the same session, and its tool calls use the new credential.
    let first_session = model
        .requests_for("life")
        .first()
        .and_then(|r| r.session_header.clone())
        .expect("session header");
    let (status, updated) =
        cs.post("/agents/agent-1/credentials", json!({ "token": "jwt-rotated" })).await;
    assert_eq!((status, &updated), (200, &json!({ "updated": true })));
    let (status, _) = cs.post("/agents/agent-1/credentials", json!({ "token": "has space" })).await;
    assert_eq!(status, 400);
    let (status, _) = cs.post("/agents/nobody/credentials", json!({ "token": "t" })).await;
    assert_eq!(status, 404);
    let (status, sent) =
        cs.post("/agents/agent-1/message", json!({ "prompt": "One more thing." })).await;
    assert_eq!((status, &sent), (200, &json!({ "sent": true })));
    model
        .wait_until(TURN, |reqs| {
            reqs.iter().any(|r| r.tool_results().iter().any(|t| t.contains("followup-ran")))
        })
        .await
        .expect("follow-up ran");
    let follow = model
        .requests()
        .into_iter()
        .find(|r| r.tool_results().iter().any(|t| t.contains("followup-ran")))
        .expect("follow-up request");
    assert_eq!(follow.session_header.as_deref(), Some(first_session.as_str()));
    assert!(follow.user_texts().iter().any(|t| t.contains("One more thing.")));
    let mail = worker
        .wait_for(TURN, |r| r.path == "/api/rigs/rig-1/agents/agent-1/mail")
        .await
        .expect("gt_mail_check forwarded");
    assert_eq!(
        mail.authorization.as_deref(),
        Some("Bearer jwt-rotated"),
        "the refreshed credential is used"
    );

    // gt_done reaches the Worker as exactly this agent.
    let done = worker
        .wait_for(TURN, |r| r.path.ends_with("/done"))
        .await
        .expect("gt_done forwarded to the Worker");
    assert_eq!(done.method, "POST");
    assert_eq!(done.path, "/api/rigs/rig-1/agents/agent-1/done");
    assert_eq!(done.authorization.as_deref(), Some("Bearer jwt-rotated"));
    assert_eq!(done.body, json!({ "branch": branch, "summary": "added agent.txt" }));

    // The run ends by itself: no process of its group is left, the worktree stays.
    let st = cs.wait_status("agent-1", TURN, |v| v["status"] == "exited").await;
    assert_eq!(st["status"], "exited", "{st}");
    assert!(procs::group_members(pid).is_empty(), "left: {:?}", procs::group_members(pid));
    assert!(
        std::path::Path::new(&workdir).join("agent.txt").exists(),
        "the worktree stays until the branch is merged"
    );
    let events = cs.events("agent-1").await;
    assert!(
        event_matches(&events, "tool_call", |d| d["tool"] == "gt_done"
            && d["state"] == "completed"),
        "{events:?}"
    );
    assert!(event_matches(&events, "supervisor", |d| d["action"] == "work_done"), "{events:?}");
    let (status, stopped) = cs.post("/agents/agent-1/stop", json!({})).await;
    assert_eq!(
        (status, &stopped),
        (200, &json!({ "stopped": true })),
        "stopping an ended run is a no-op"
    );

    // A stream ticket opens the agent's event stream once; the stream of an ended agent sends
    // its buffered events and ends.
    let (status, ticket) = cs.post("/agents/agent-1/stream-ticket", json!({})).await;
    assert_eq!(status, 200, "{ticket}");
    let t = ticket["ticket"].as_str().expect("ticket").to_string();
    assert!(ticket["expiresAt"].is_string());
    let url = format!("{}/agents/agent-1/stream?ticket={t}", cs.base);
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        reqwest::get(&url).await.expect("stream").text().await.expect("body")
    })
    .await
    .expect("stream ended");
    assert!(
        body.contains("event: events")
            && body.contains("\"kind\":\"tool_call\"")
            && body.contains("event: end"),
        "{body}"
    );
    let again = reqwest::get(&url).await.expect("second use").status().as_u16();
    assert_eq!(again, 401, "a ticket works once");

    // The same agent id takes new work: a new run, a new process.
    let (status, next) = cs
        .post(
            "/agents/start?wait=true",
            start_request(
                "agent-1",
                "rig-1",
                "toast",
                "polecat/toast/next",
                &origin.url(),
                "next bead",
            ),
        )
        .await;
    assert_eq!(status, 201, "{next}");
    assert_ne!(next["pid"], started["pid"]);
    let (status, _) = cs.post("/agents/agent-1/stop", json!({})).await;
    assert_eq!(status, 200);
}

/// Two agents on one rig share one clone; a Kilo process that dies is noticed; the server's own
/// SIGTERM stops every agent before it exits; an exited agent can be started afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_a_clone_crashes_are_noticed_and_shutdown_stops_everyone() {
    let origin = Origin::new();
    let model =
        ModelServer::start([("idle", vec![Step::text("ready")])]).await.expect("model server");
    let worker = WorkerStub::start().await;
    let mut cs = server(&model, &worker, &[]);
    let prompt = format!("Wait. {}", marker("idle"));
    // Without ?wait the answer comes once the run is claimed; the rest happens in the background.
    let (sa, sb) = tokio::join!(
        cs.post(
            "/agents/start",
            start_request("a", "rig-1", "nux", "polecat/nux/1", &origin.url(), &prompt)
        ),
        cs.post(
            "/agents/start",
            start_request("b", "rig-1", "rex", "polecat/rex/2", &origin.url(), &prompt)
        ),
    );
    assert_eq!((sa.0, sb.0), (201, 201), "{} {}", sa.1, sb.1);
    assert_eq!((&sa.1["status"], &sa.1["pid"]), (&json!("starting"), &Value::Null), "{}", sa.1);
    let (sa, sb) = (
        cs.wait_status("a", TURN, |v| v["status"] == "running").await,
        cs.wait_status("b", TURN, |v| v["status"] == "running").await,
    );
    assert_eq!((&sa["status"], &sb["status"]), (&json!("running"), &json!("running")), "{sa} {sb}");
    let repo = cs.workspace.join("rigs/rig-1/repo");
    // Each agent's checkout borrows the one clone's objects.
    for checkout in ["polecat~nux~1", "polecat~rex~2"] {
        let alternates = std::fs::read_to_string(
            cs.workspace
                .join("rigs/rig-1/worktrees")
                .join(checkout)
                .join(".git/objects/info/alternates"),
        )
        .expect("alternates");
        assert!(
            alternates.trim().ends_with("rigs/rig-1/repo/.git/objects"),
            "{checkout}: {alternates}"
        );
    }
    assert!(repo.join(".git").is_dir(), "the rig's clone");
    let rigs: Vec<_> = std::fs::read_dir(cs.workspace.join("rigs/rig-1"))
        .expect("rig dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(rigs.len(), 2, "one repo and one worktrees folder: {rigs:?}");
    let (pa, pb) =
        (sa["pid"].as_i64().expect("pid a") as i32, sb["pid"].as_i64().expect("pid b") as i32);
    assert_ne!(pa, pb, "one Kilo process per agent by default");

    // A Kilo process killed behind our back: the agent fails, with a reason.
    procs::signal(pa, procs::SIGKILL);
    let st = cs.wait_status("a", Duration::from_secs(15), |v| v["status"] == "failed").await;
    assert_eq!(st["status"], "failed", "{st}");
    assert_eq!(st["exitCode"], 137);
    let (_, list) = cs.get("/agents").await;
    let a = list["agents"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["agentId"] == "a").cloned())
        .expect("a listed");
    assert!(a["error"].as_str().is_some_and(|e| e.contains("unexpectedly")), "{a}");
    // The heartbeat reports the failure once.
    worker
        .wait_for(Duration::from_secs(10), |r| {
            r.body["agents"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["agentId"] == "a" && x["status"] == "failed"))
        })
        .await
        .expect("failure reported");

    // A failed agent starts afresh.
    let (status, again) = cs
        .post(
            "/agents/start?wait=true",
            start_request("a", "rig-1", "nux", "polecat/nux/1", &origin.url(), &prompt),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    let pa2 = again["pid"].as_i64().expect("new pid") as i32;
    assert_ne!(pa2, pa);

    // SIGTERM to the control server: every agent is stopped, then it exits 0.
    let status = cs.terminate(Duration::from_secs(60)).expect("control server exited");
    assert!(status.success(), "{status:?}");
    for pid in [pa2, pb] {
        assert!(
            procs::group_members(pid).is_empty(),
            "kilo group {pid} left: {:?}",
            procs::group_members(pid)
        );
    }
}

/// An agent whose command ignores SIGTERM is SIGKILLed once the grace period is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let origin = Origin::new();
    let tag = format!("gastown-stubborn-{}", std::process::id());
    let model = ModelServer::start([(
        "stubborn",
        vec![Step::bash(format!("trap '' TERM; exec -a {tag} sleep 300")), Step::text("never")],
    )])
    .await
    .expect("model");
    let worker = WorkerStub::start().await;
    let cs = server(&model, &worker, &[("STOP_GRACE_MS", "4000")]);
    let (status, started) = cs
        .post(
            "/agents/start?wait=true",
            start_request(
                "s",
                "rig-1",
                "mule",
                "polecat/mule/1",
                &origin.url(),
                &marker("stubborn"),
            ),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let deadline = std::time::Instant::now() + TURN;
    while procs::with_cmdline(&tag).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stubborn = procs::with_cmdline(&tag);
    assert_eq!(stubborn.len(), 1, "the agent's command is running");

    let stop = tokio::spawn({
        let base = cs.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/agents/s/stop"))
                .header("x-container-token", "test-container-token")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // Well inside the 4 s grace period, the command is still there: SIGTERM did not end it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(procs::alive(stubborn[0].pid), "killed before the grace period was over");
    let status = stop.await.expect("join").expect("stop request");
    assert_eq!(status, 200);
    assert!(procs::with_cmdline(&tag).is_empty(), "the SIGTERM-ignoring command survived the stop");
    let st = cs.wait_status("s", Duration::from_secs(10), |v| v["status"] == "exited").await;
    assert_eq!(st["status"], "exited", "{st}");
}

/// With AGENTS_PER_SERVER = 2, two agents of one rig share one Kilo process; each tool call
/// still reaches the Worker with its own agent's identity and credential. An agent whose work
/// is done leaves the process (its session is released); the process goes with its last agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sharing_a_kilo_process_keep_their_own_identity() {
    let origin = Origin::new();
    let one = vec![
        Step::tool("gt_done", json!({ "branch": "polecat/one/1", "pr_url": "", "summary": "" })),
        Step::text("done"),
    ];
    let two = vec![
        Step::tool("gt_checkpoint", json!({ "data": "{\"step\":1}" })),
        Step::text("still working"),
    ];
    let model = ModelServer::start([("one", one), ("two", two)]).await.expect("model");
    let worker = WorkerStub::start().await;
    let cs = server(&model, &worker, &[("AGENTS_PER_SERVER", "2")]);
    let mut r1 =
        start_request("p1", "rig-1", "one", "polecat/one/1", &origin.url(), &marker("one"));
    r1["envVars"] = json!({ "GASTOWN_SESSION_TOKEN": "jwt-p1" });
    let (s1, b1) = cs.post("/agents/start?wait=true", r1).await;
    assert_eq!(s1, 201, "{b1}");
    let mut r2 =
        start_request("p2", "rig-1", "two", "polecat/two/2", &origin.url(), &marker("two"));
    r2["envVars"] = json!({ "GASTOWN_SESSION_TOKEN": "jwt-p2" });
    let (s2, b2) = cs.post("/agents/start?wait=true", r2).await;
    assert_eq!(s2, 201, "{b2}");
    assert_eq!(b1["pid"], b2["pid"], "one shared Kilo process");

    for (path, token) in [
        ("/api/rigs/rig-1/agents/p1/done", "jwt-p1"),
        ("/api/rigs/rig-1/agents/p2/checkpoint", "jwt-p2"),
    ] {
        let rec =
            worker.wait_for(TURN, |r| r.path == path).await.unwrap_or_else(|| panic!("{path}"));
        assert_eq!(rec.authorization.as_deref(), Some(format!("Bearer {token}").as_str()));
    }
    // Each agent's own system prompt reached the model with its turns.
    let sys_one = model.requests_for("one").first().map(|r| r.system_text()).unwrap_or_default();
    assert!(sys_one.contains("You are one,"), "{sys_one}");
    assert!(!sys_one.contains("You are two,"));

    // p1's work is done: its run ends, and the shared process keeps serving p2.
    let st1 = cs.wait_status("p1", TURN, |v| v["status"] == "exited").await;
    assert_eq!(st1["status"], "exited", "{st1}");
    let (_, st2) = cs.get("/agents/p2/status").await;
    assert_eq!(st2["status"], "running");
    let pid = b2["pid"].as_i64().expect("pid") as i32;
    assert!(procs::alive(pid));
    let (status, _) = cs.post("/agents/p2/stop", json!({ "signal": "SIGTERM" })).await;
    assert_eq!(status, 200);
    assert!(
        procs::group_members(pid).is_empty(),
        "the shared process is stopped with its last agent"
    );
}

/// The server's own SIGTERM saves what an agent has not pushed: the agent is asked to push, and
/// whatever is still uncommitted is committed as a WIP commit and pushed to its branch. The
/// request arrives between two turns here (the agent's turn has ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_saves_unpushed_work_as_a_wip_commit() {
    drain_case(Moment::BetweenTurns).await;
}

/// As above, with the shutdown arriving mid-turn, while the agent's shell command still runs:
/// Kilo queues the request behind the running turn, and the drain waits for its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_turn_still_asks_the_agent_and_saves_its_work() {
    drain_case(Moment::MidTurn).await;
}

#[derive(Debug)]
enum Moment {
    BetweenTurns,
    MidTurn,
}

async fn drain_case(moment: Moment) {
    let origin = Origin::new();
    let command = match moment {
        Moment::BetweenTurns => "echo draft > draft.txt && echo wrote-draft",
        Moment::MidTurn => "echo draft > draft.txt && sleep 4 && echo wrote-draft",
    };
    let script = vec![Step::bash(command), Step::text("paused"), Step::text("acknowledged")];
    let model = ModelServer::start([("draft", script)]).await.expect("model");
    let worker = WorkerStub::start().await;
    let mut cs = server(&model, &worker, &[("SHUTDOWN_DRAIN_MS", "20000")]);
    let (status, started) = cs
        .post(
            "/agents/start?wait=true",
            start_request("d", "rig-1", "ink", "polecat/ink/1", &origin.url(), &marker("draft")),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    match moment {
        Moment::BetweenTurns => {
            // The turn has ended once its closing text is an event.
            let deadline = std::time::Instant::now() + TURN;
            while !event_matches(&cs.events("d").await, "text", |d| d["text"] == "paused") {
                assert!(std::time::Instant::now() < deadline, "the agent's turn did not end");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Moment::MidTurn => {
            // The command has written its file and sleeps: the turn is in the middle of a tool call.
            let draft = std::path::Path::new(started["workdir"].as_str().expect("workdir"))
                .join("draft.txt");
            let deadline = std::time::Instant::now() + TURN;
            while !draft.exists() {
                assert!(std::time::Instant::now() < deadline, "the agent's command did not run");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                !model
                    .requests_for("draft")
                    .iter()
                    .any(|r| r.tool_results().iter().any(|t| t.contains("wrote-draft"))),
                "the command is still running"
            );
        }
    }
    assert!(origin.log("polecat/ink/1").is_none(), "nothing pushed yet");

    let status = cs.terminate(Duration::from_secs(90)).expect("control server exited");
    assert!(status.success(), "{status:?}");
    let asked = model
        .requests_for("draft")
        .iter()
        .any(|r| r.user_texts().iter().any(|t| t.contains("shutting down")));
    assert!(asked, "the agent was asked to commit and push");
    let log = origin.log("polecat/ink/1").expect("the branch was pushed at shutdown");
    assert_eq!(
        log.first().map(String::as_str),
        Some("ink (gastown)|ink@gastown.local|WIP: saved by gastown when the container shut down"),
        "{log:?}"
    );
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&origin.path)
        .args(["show", "polecat/ink/1:draft.txt"])
        .output()
        .expect("git show");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "draft");
    println!("FAULT | control server SIGTERMed with unpushed work ({moment:?}) | agent asked to commit; WIP commit pushed; exit 0 | none");
}

/// The same dispatch sent twice at once is one run; a stop racing the end of a run whose work
/// is done (gt_done accepted, its last turn still going) leaves a consistent state: the run is
/// exited, no process is left, and the agent takes its next dispatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_dispatch_is_one_run_and_a_stop_racing_gt_done_is_consistent() {
    let origin = Origin::new();
    let script = vec![
        Step::tool("gt_done", json!({ "branch": "polecat/ash/1", "pr_url": "", "summary": "" })),
        Step::text("done").delayed(Duration::from_secs(3)),
    ];
    let model = ModelServer::start([("race", script)]).await.expect("model");
    let worker = WorkerStub::start().await;
    let cs = server(&model, &worker, &[]);
    let mut req =
        start_request("r1", "rig-1", "ash", "polecat/ash/1", &origin.url(), &marker("race"));
    req["dispatchId"] = json!("bead-9-g0");
    req["envVars"] = json!({ "GASTOWN_SESSION_TOKEN": "jwt-r1" });
    let (a, b) = tokio::join!(
        cs.post("/agents/start?wait=true", req.clone()),
        cs.post("/agents/start?wait=true", req.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{} {}", a.1, b.1);
    let started = if a.0 == 201 { a.1 } else { b.1 };
    let pid = started["pid"].as_i64().expect("pid") as i32;
    let kilos = procs::processes().into_iter().filter(|p| p.ppid == cs.pid() as i32).count();
    assert_eq!(kilos, 1, "one Kilo process for the repeated dispatch");

    // gt_done is accepted; the turn's last answer is still on its way when the stop arrives.
    worker
        .wait_for(TURN, |r| r.path == "/api/rigs/rig-1/agents/r1/done")
        .await
        .expect("gt_done forwarded");
    let (status, stopped) = cs.post("/agents/r1/stop", json!({})).await;
    assert_eq!((status, &stopped), (200, &json!({ "stopped": true })));
    let st = cs.wait_status("r1", Duration::from_secs(30), |v| v["status"] == "exited").await;
    assert_eq!(st["status"], "exited", "{st}");
    assert!(procs::group_members(pid).is_empty());
    let events = cs.events("r1").await;
    let ends = events
        .iter()
        .filter(|e| {
            e["kind"] == "status"
                && (e["data"]["status"] == "exited" || e["data"]["status"] == "failed")
        })
        .count();
    assert_eq!(ends, 1, "the run ended once: {events:?}");

    // Only a run that is still active answers for its dispatch id: once it has ended, the same
    // start is a fresh run (the Worker sends it only while the bead is still hooked).
    let (status, again) = cs.post("/agents/start?wait=true", req).await;
    assert_eq!(status, 201, "{again}");
    let (status, _) = cs.post("/agents/r1/stop", json!({})).await;
    assert_eq!(status, 200);
}

/// A start answers before its slow steps; when one of them fails, the agent's status says so
/// (failed, with the reason), and a start that waits gets the error itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_in_the_background_is_reported() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model");
    let worker = WorkerStub::start().await;
    let cs = server(&model, &worker, &[]);
    let missing = "file:///nonexistent/gastown-origin.git";
    let (status, started) = cs
        .post(
            "/agents/start",
            start_request("f1", "rig-9", "fay", "polecat/fay/1", missing, "work"),
        )
        .await;
    assert_eq!((status, &started["status"]), (201, &json!("starting")), "{started}");
    let st = cs.wait_status("f1", Duration::from_secs(60), |v| v["status"] == "failed").await;
    assert_eq!(st["status"], "failed", "{st}");
    let (_, list) = cs.get("/agents").await;
    let f1 = list["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agentId"] == "f1").cloned())
        .expect("listed");
    assert!(f1["error"].as_str().is_some_and(|e| e.contains("git")), "{f1}");
    let events = cs.events("f1").await;
    assert!(event_matches(&events, "status", |d| d["status"] == "failed"), "{events:?}");

    let (status, body) = cs
        .post(
            "/agents/start?wait=true",
            start_request("f2", "rig-9", "gus", "polecat/gus/1", missing, "work"),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.starts_with("git")), "{body}");
    assert_eq!(cs.get("/agents/f2/status").await.1["status"], "failed");
}

/// Past its capacity (here `MAX_AGENTS=1`) the control server refuses new runs with 429 and a
/// message, and takes them again once an agent has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_past_capacity_are_refused_until_an_agent_finishes() {
    let origin = Origin::new();
    let model = ModelServer::start([("idle", vec![Step::text("ready")])]).await.expect("model");
    let worker = WorkerStub::start().await;
    let cs = server(&model, &worker, &[("MAX_AGENTS", "1")]);
    let (_, health) = cs.get("/health").await;
    assert_eq!(health["capacity"], 1, "{health}");
    let (status, a) = cs
        .post(
            "/agents/start?wait=true",
            start_request("c1", "rig-1", "cap", "polecat/cap/1", &origin.url(), &marker("idle")),
        )
        .await;
    assert_eq!(status, 201, "{a}");
    let (status, refused) = cs
        .post(
            "/agents/start",
            start_request("c2", "rig-1", "cop", "polecat/cop/1", &origin.url(), &marker("idle")),
        )
        .await;
    assert_eq!(status, 429, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("capacity")), "{refused}");
    assert_eq!(cs.get("/agents/c2/status").await.0, 404, "a refused start registers nothing");
    let (status, _) = cs.post("/agents/c1/stop", json!({})).await;
    assert_eq!(status, 200);
    let (status, b) = cs
        .post(
            "/agents/start?wait=true",
            start_request("c2", "rig-1", "cop", "polecat/cop/1", &origin.url(), &marker("idle")),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let (status, _) = cs.post("/agents/c2/stop", json!({})).await;
    assert_eq!(status, 200);
}

/// Folders named `snapshot` under `dir` that hold anything (Kilo's per-project snapshot git
/// stores live in `<HOME>/.local/share/kilo/snapshot/`).
fn snapshot_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let holds = std::fs::read_dir(&path).is_ok_and(|mut r| r.next().is_some());
                if path.file_name().is_some_and(|n| n == "snapshot") && holds {
                    found.push(path.clone());
                }
                todo.push(path);
            }
        }
    }
    found
}
