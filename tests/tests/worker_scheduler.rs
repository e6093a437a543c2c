//! The RigDO scheduler against a recording stand-in control server at CONTAINER_URL:
//! sling -> the alarm dispatches `POST /agents/start` with a complete request and a valid agent
//! credential; the witness pass notices exited agents and re-dispatches up to the attempt
//! limit, then fails the bead; agents idle on hooked work get a GUPP reminder mail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gastown_e2e::wrangler::{Auth, WranglerDev, CONTAINER_TOKEN, JWT_SECRET};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Default)]
struct Stub {
    starts: Vec<(Value, Option<String>)>,
    /// agent id -> rig id, from the start requests.
    rigs: HashMap<String, String>,
    /// Rigs whose agents report `exited` (the others report `running`).
    dying_rig: Option<String>,
    /// Agents whose current run the test has ended (they report `exited` until started again).
    ended: std::collections::HashSet<String>,
    /// `POST /agents/:id/credentials` calls: agent id and body.
    credentials: Vec<(String, Value)>,
    /// Starts on this rig are refused as "at capacity" (429) while set.
    full_rig: Option<String>,
    /// Agents of this rig take messages into their session (the others answer 404).
    chatty_rig: Option<String>,
    /// `POST /agents/:id/message` calls that were taken: agent id and prompt.
    messages: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Stub>>;

async fn control(
    State(stub): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().to_string();
    let mut s = stub.lock().expect("stub");
    if path == "/agents/start" {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token =
            headers.get("x-container-token").and_then(|t| t.to_str().ok()).map(str::to_string);
        let (agent, rig) = (
            v["agentId"].as_str().unwrap_or("").to_string(),
            v["rigId"].as_str().unwrap_or("").to_string(),
        );
        if s.full_rig.as_ref() == Some(&rig) {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(
                    json!({"error": "at capacity: 1 of 1 agents are running; try again when one finishes"}),
                ),
            );
        }
        s.ended.remove(&agent);
        s.rigs.insert(agent.clone(), rig);
        s.starts.push((v, token));
        return (StatusCode::CREATED, axum::Json(json!({"agentId": agent, "status": "starting"})));
    }
    if let Some(agent) = path.strip_prefix("/agents/").and_then(|p| p.strip_suffix("/credentials"))
    {
        s.credentials
            .push((agent.to_string(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
        return (StatusCode::OK, axum::Json(json!({"updated": true})));
    }
    if let Some(agent) = path.strip_prefix("/agents/").and_then(|p| p.strip_suffix("/message")) {
        let chatty = s.rigs.get(agent).is_some_and(|r| Some(r) == s.chatty_rig.as_ref());
        if chatty {
            let prompt = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["prompt"].as_str().map(str::to_string))
                .unwrap_or_default();
            s.messages.push((agent.to_string(), prompt));
            return (StatusCode::OK, axum::Json(json!({"sent": true})));
        }
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": "agent not found"})));
    }
    if let Some(agent) = path.strip_prefix("/agents/").and_then(|p| p.strip_suffix("/status")) {
        let dying = s.rigs.get(agent).is_some_and(|r| Some(r) == s.dying_rig.as_ref())
            || s.ended.contains(agent);
        let status = if dying {
            json!({"agentId": agent, "status": "exited", "exitCode": 137})
        } else {
            json!({"agentId": agent, "status": "running"})
        };
        return (StatusCode::OK, axum::Json(status));
    }
    (StatusCode::NOT_FOUND, axum::Json(json!({"error": "not found"})))
}

/// The stand-in control server on a loopback port of its own, and `wrangler dev` forwarding
/// the town's container calls to it, with the given scheduler settings.
async fn stub_and_worker(settings: &[(&str, &str)]) -> (Shared, WranglerDev) {
    let stub: Shared = Arc::default();
    let app = Router::new().fallback(control).with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut env = vec![("CONTAINER_URL", url.as_str()), ("GASTOWN_MODEL", "scripted/m-1")];
    env.extend_from_slice(settings);
    (stub, WranglerDev::start_with_env(&env).await)
}

/// Polls `check` until it returns `Some`, failing after `secs` seconds.
async fn wait_for<T>(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks the HS256 signature by hand and returns the claims.
fn verify_token(token: &str) -> Value {
    use hmac::{Hmac, Mac};
    let (input, sig) = token.rsplit_once('.').expect("three parts");
    let (header, payload) = input.split_once('.').expect("header and payload");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    assert_eq!(header["alg"], "HS256");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("key");
    mac.update(input.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(sig).expect("b64"))
        .expect("token signed with the Worker's JWT secret");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

#[tokio::test]
async fn scheduler_dispatches_witnesses_retries_then_fails_and_reminds() {
    let (stub, dev) = stub_and_worker(&[
        ("SCHEDULER_TICK_MS", "300"),
        ("SCHEDULER_COLD_START_GRACE_MS", "1000"),
        ("SCHEDULER_MAX_DISPATCH_ATTEMPTS", "2"),
        ("SCHEDULER_MAX_LOST_RUNS", "3"),
        ("SCHEDULER_GUPP_AFTER_MS", "1500"),
        ("AGENT_TOKEN_TTL_SECS", "4"),
    ])
    .await;

    let town = dev.post("/api/towns", json!({"name": "sched"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let mut rigs = Vec::new();
    // The container gets each rig's own URL to clone.
    let private_url = "https://github.com/o/private.git";
    for (name, url) in [
        ("dying", "https://github.com/o/app.git"),
        ("steady", private_url),
        ("lossy", "https://github.com/o/lossy.git"),
    ] {
        let r = dev
            .post(
                &format!("/api/towns/{town}/rigs"),
                json!({"name": name, "git_url": url, "default_branch": "trunk"}),
            )
            .await;
        rigs.push(r.data()["id"].as_str().expect("rig").to_string());
    }
    let (dying, steady, lossy) = (rigs[0].clone(), rigs[1].clone(), rigs[2].clone());
    stub.lock().expect("stub").dying_rig = Some(dying.clone());

    // Dispatch: sling on the dying rig reaches the container with a complete start request.
    let sling = dev
        .post(
            &format!("/api/rigs/{dying}/sling"),
            json!({"title": "Fix the flux capacitor", "body": "details"}),
        )
        .await;
    let agent = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
    let bead = sling.data()["bead"]["id"].as_str().expect("bead").to_string();
    let (start, token) = wait_for("the first dispatch", 30, async || {
        stub.lock().expect("stub").starts.first().cloned()
    })
    .await;
    assert_eq!(token.as_deref(), Some(CONTAINER_TOKEN));
    let prefix: String = bead.chars().filter(|c| *c != '-').take(8).collect();
    assert_eq!(
        (&start["agentId"], &start["rigId"], &start["townId"], &start["role"], &start["name"]),
        (&json!(agent), &json!(dying), &json!(town), &json!("polecat"), &json!("toast"))
    );
    assert_eq!(start["branch"], json!(format!("polecat/toast/{prefix}")));
    assert_eq!(
        (&start["gitUrl"], &start["defaultBranch"], &start["model"]),
        (&json!("https://github.com/o/app.git"), &json!("trunk"), &json!("scripted/m-1"))
    );
    assert!(start["prompt"].as_str().is_some_and(|p| p.contains("Fix the flux capacitor")));
    assert!(start["systemPrompt"]
        .as_str()
        .is_some_and(|p| p.contains("GUPP") && p.contains("gt_done")));
    let claims =
        verify_token(start["envVars"]["GASTOWN_SESSION_TOKEN"].as_str().expect("agent credential"));
    assert_eq!(
        (&claims["agentId"], &claims["rigId"], &claims["townId"]),
        (&json!(agent), &json!(dying), &json!(town))
    );
    // The credential works on the agent's rig. (Not through one of the agent's own routes such
    // as prime: those prove the run started and reset its attempt count, racing the witness
    // below, whose attempt limit this test counts.)
    let me = Auth::Bearer(
        start["envVars"]["GASTOWN_SESSION_TOKEN"].as_str().expect("token").to_string(),
    );
    let hooked =
        dev.call(Method::GET, &format!("/api/rigs/{dying}/beads/{bead}"), &me, Value::Null).await;
    assert_eq!(hooked.data()["assignee_agent_id"], json!(agent));

    // The agent "dies" (exited, 137): re-dispatched once, then the bead fails.
    let failed = wait_for("the bead to fail", 60, async || {
        let b = dev.get(&format!("/api/rigs/{dying}/beads/{bead}")).await;
        (b.data()["status"] == "failed").then(|| b.data().clone())
    })
    .await;
    assert_eq!(failed["status"], "failed");
    let a = dev.get(&format!("/api/rigs/{dying}/agents/{agent}")).await;
    assert_eq!(
        (a.data()["status"].clone(), a.data()["current_hook_bead_id"].clone()),
        (json!("idle"), Value::Null)
    );
    let starts_for_bead = stub
        .lock()
        .expect("stub")
        .starts
        .iter()
        .filter(|(s, _)| s["agentId"] == json!(agent))
        .count();
    assert_eq!(starts_for_bead, 2, "dispatched exactly up to the attempt limit");
    let events = dev.get(&format!("/api/rigs/{dying}/beads/{bead}/events?limit=100")).await;
    let kinds: Vec<String> = events
        .data()
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "agent_dispatched").count(), 2, "{kinds:?}");
    assert!(kinds.iter().filter(|k| *k == "agent_exited").count() >= 2, "{kinds:?}");
    assert!(
        kinds.contains(&"status_changed".to_string())
            && kinds.last().map(String::as_str) == Some("unhooked"),
        "{kinds:?}"
    );

    // Runs that start for real (the agent calls the API) and are then lost do not spend
    // dispatch attempts: the bead is dispatched past the attempt limit (2), until its lost runs
    // reach their own limit (3).
    let sling =
        dev.post(&format!("/api/rigs/{lossy}/sling"), json!({"title": "Lose it thrice"})).await;
    let (agent, bead) = (
        sling.data()["agent"]["id"].as_str().expect("agent").to_string(),
        sling.data()["bead"]["id"].as_str().expect("bead").to_string(),
    );
    for run in 1..=3 {
        let token = wait_for("the next run", 60, async || {
            let s = stub.lock().expect("stub");
            let starts: Vec<&Value> =
                s.starts.iter().map(|(v, _)| v).filter(|v| v["agentId"] == json!(agent)).collect();
            (starts.len() == run).then(|| {
                starts[run - 1]["envVars"]["GASTOWN_SESSION_TOKEN"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
        })
        .await;
        let prime = dev
            .call(
                Method::GET,
                &format!("/api/rigs/{lossy}/agents/{agent}/prime"),
                &Auth::Bearer(token),
                Value::Null,
            )
            .await;
        assert_eq!(prime.status, 200, "{prime:?}");
        stub.lock().expect("stub").ended.insert(agent.clone());
    }
    let failed = wait_for("the lossy bead to fail", 60, async || {
        let b = dev.get(&format!("/api/rigs/{lossy}/beads/{bead}")).await;
        (b.data()["status"] == "failed").then(|| b.data().clone())
    })
    .await;
    assert_eq!(failed["status"], "failed");
    let starts = stub
        .lock()
        .expect("stub")
        .starts
        .iter()
        .filter(|(s, _)| s["agentId"] == json!(agent))
        .count();
    assert_eq!(starts, 3, "three real runs, past the limit of two failed starts");
    let events = dev.get(&format!("/api/rigs/{lossy}/beads/{bead}/events?limit=100")).await;
    let reason = events
        .data()
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| (e["data"]["to"] == "failed").then(|| e["data"]["reason"].clone()));
    assert_eq!(reason, Some(json!("3 runs lost after they started")));

    // A running agent idle on its hook gets a GUPP reminder, and stays dispatched once.
    let sling =
        dev.post(&format!("/api/rigs/{steady}/sling"), json!({"title": "Keep going"})).await;
    let worker = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
    let mail = wait_for("a GUPP reminder", 60, async || {
        let p = dev.get(&format!("/api/rigs/{steady}/agents/{worker}/prime")).await;
        let mail = p.data()["undelivered_mail"].as_array().cloned().unwrap_or_default();
        mail.into_iter().find(|m| m["from_agent_id"] == "gastown-scheduler")
    })
    .await;
    assert!(mail["subject"].as_str().is_some_and(|s| s.contains("GUPP")));
    let steady_starts = stub
        .lock()
        .expect("stub")
        .starts
        .iter()
        .filter(|(s, _)| s["agentId"] == json!(worker))
        .count();
    assert_eq!(steady_starts, 1, "a running agent is not dispatched again");
    let steady_start = stub
        .lock()
        .expect("stub")
        .starts
        .iter()
        .find(|(s, _)| s["agentId"] == json!(worker))
        .map(|(s, _)| s.clone())
        .expect("start");
    assert_eq!(steady_start["gitUrl"], private_url, "the container gets the full URL");

    // Its credential is replaced before it expires (at half its 4 s lifetime), with a fresh
    // token for the same agent.
    let (_, first) = stub
        .lock()
        .expect("stub")
        .starts
        .iter()
        .find(|(s, _)| s["agentId"] == json!(worker))
        .cloned()
        .map(|(s, t)| (t, s))
        .expect("start");
    let first_claims =
        verify_token(first["envVars"]["GASTOWN_SESSION_TOKEN"].as_str().expect("token"));
    let refreshed = wait_for("a credential refresh", 30, async || {
        stub.lock()
            .expect("stub")
            .credentials
            .iter()
            .find(|(a, _)| *a == worker)
            .map(|(_, b)| b.clone())
    })
    .await;
    let claims = verify_token(refreshed["token"].as_str().expect("new token"));
    assert_eq!((&claims["agentId"], &claims["rigId"]), (&json!(worker), &json!(steady)));
    assert!(claims["exp"].as_u64() > first_claims["exp"].as_u64(), "{claims} vs {first_claims}");
    assert!(
        stub.lock().expect("stub").credentials.iter().all(|(a, _)| *a == worker),
        "only running agents are refreshed"
    );
}

/// The same scheduler, for the town's limits and its reminders: a container at capacity keeps
/// the bead queued (no attempt spent, the reason shown once) until it has room; reminders and
/// "you have mail" reach a running agent's session as messages, rate limited.
#[tokio::test]
async fn a_full_container_queues_work_and_reminders_reach_the_session() {
    let (stub, dev) = stub_and_worker(&[
        ("SCHEDULER_TICK_MS", "300"),
        ("SCHEDULER_MAX_DISPATCH_ATTEMPTS", "2"),
        ("SCHEDULER_MAX_LOST_RUNS", "3"),
        ("SCHEDULER_GUPP_AFTER_MS", "1500"),
        ("SCHEDULER_NUDGE_EVERY_MS", "500"),
    ])
    .await;
    let town = dev.post("/api/towns", json!({"name": "limits"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let rig = |name: &'static str| {
        let dev = &dev;
        let town = town.clone();
        async move {
            dev.post(
                &format!("/api/towns/{town}/rigs"),
                json!({"name": name, "git_url": format!("https://github.com/o/{name}.git")}),
            )
            .await
            .data()["id"]
                .as_str()
                .expect("rig")
                .to_string()
        }
    };
    let (full, chatty) = (rig("full").await, rig("chatty").await);
    {
        let mut s = stub.lock().expect("stub");
        s.full_rig = Some(full.clone());
        s.chatty_rig = Some(chatty.clone());
    }

    // At capacity: many passes later (well past the 2-attempt limit) the bead still waits.
    let sling =
        dev.post(&format!("/api/rigs/{full}/sling"), json!({"title": "Wait your turn"})).await;
    let (agent, bead) = (
        sling.data()["agent"]["id"].as_str().expect("agent").to_string(),
        sling.data()["bead"]["id"].as_str().expect("bead").to_string(),
    );
    async fn events(dev: &WranglerDev, rig: String, bead: String) -> Vec<Value> {
        let e = dev.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
        e.data().as_array().cloned().unwrap_or_default()
    }
    wait_for("the queued reason", 30, async || {
        events(&dev, full.clone(), bead.clone()).await.into_iter().find(|e| e["kind"] == "queued")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = dev.get(&format!("/api/rigs/{full}/beads/{bead}")).await;
    assert_eq!(b.data()["status"], "in_progress", "{b:?}");
    let a = dev.get(&format!("/api/rigs/{full}/agents/{agent}")).await;
    assert_eq!(a.data()["current_hook_bead_id"], json!(bead));
    let kinds: Vec<String> = events(&dev, full.clone(), bead.clone())
        .await
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "queued").count(),
        1,
        "the reason is shown once: {kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "agent_dispatched" || k == "agent_exited"), "{kinds:?}");
    let queued = events(&dev, full.clone(), bead.clone())
        .await
        .into_iter()
        .find(|e| e["kind"] == "queued")
        .expect("queued");
    assert!(queued["data"]["reason"].as_str().is_some_and(|r| r.contains("capacity")), "{queued}");
    // Room again: the bead is dispatched.
    stub.lock().expect("stub").full_rig = None;
    wait_for("the dispatch once there is room", 30, async || {
        events(&dev, full.clone(), bead.clone())
            .await
            .into_iter()
            .find(|e| e["kind"] == "agent_dispatched")
    })
    .await;

    // A running agent idle on its hook gets GUPP in its session, and a note about new mail.
    let sling =
        dev.post(&format!("/api/rigs/{chatty}/sling"), json!({"title": "Talk to me"})).await;
    let talker = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
    let gupp = wait_for("GUPP in the session", 30, async || {
        stub.lock()
            .expect("stub")
            .messages
            .iter()
            .find(|(a, p)| *a == talker && p.contains("Work is on your hook"))
            .cloned()
    })
    .await;
    assert!(gupp.1.contains("gt_done"));
    let p = dev.get(&format!("/api/rigs/{chatty}/agents/{talker}/prime")).await;
    assert!(
        p.data()["undelivered_mail"]
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x["from_agent_id"] != "gastown-scheduler")),
        "a delivered reminder is not left as unread mail: {p:?}"
    );
    let sender = dev
        .post(
            &format!("/api/rigs/{chatty}/agents"),
            json!({"role": "polecat", "name": "sender", "identity": "sender@chatty"}),
        )
        .await;
    let sender = sender.data()["id"].as_str().expect("sender").to_string();
    let m = dev.post(&format!("/api/rigs/{chatty}/mail"), json!({"from_agent_id": sender, "to_agent_id": talker, "subject": "hi", "body": "please hurry"})).await;
    assert_eq!(m.status, 201, "{m:?}");
    let nudge = wait_for("the mail note", 30, async || {
        stub.lock()
            .expect("stub")
            .messages
            .iter()
            .find(|(a, p)| *a == talker && p.contains("unread mail"))
            .cloned()
    })
    .await;
    assert!(
        nudge.1.contains("1 unread") && !nudge.1.contains("please hurry"),
        "the note points at the tool, the mail is read through it: {}",
        nudge.1
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let notes = stub
        .lock()
        .expect("stub")
        .messages
        .iter()
        .filter(|(a, p)| *a == talker && p.contains("unread mail"))
        .count();
    assert!(notes <= 4, "rate limited to one every 500 ms: {notes}");
}

/// New work never waits for a pass armed for something else: with a ten-minute tick, a second
/// sling into a rig whose alarm is already armed for the next tick is dispatched at once.
#[tokio::test]
async fn a_sling_brings_an_armed_alarm_forward() {
    let (stub, dev) = stub_and_worker(&[("SCHEDULER_TICK_MS", "600000")]).await;
    let (_, rig) = dev.town_and_rig("busy", "https://github.com/o/app.git").await;
    let starts = |n: usize| {
        let stub = stub.clone();
        async move || (stub.lock().expect("stub").starts.len() >= n).then_some(())
    };
    assert_eq!(
        dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": "first"})).await.status,
        201
    );
    wait_for("the first sling's dispatch", 60, starts(1)).await;
    // That pass armed the alarm for the next tick, ten minutes away.
    assert_eq!(
        dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": "second"})).await.status,
        201
    );
    wait_for("the second sling's dispatch, long before the next tick", 60, starts(2)).await;
}
