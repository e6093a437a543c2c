//! An agent's live stream through the Worker, everything real but the LLM: `wrangler dev` with
//! the built Worker, the native control server, the real Kilo CLI. The WebSocket route
//! `GET /api/towns/:town/container/agents/:agent/stream?ticket=` is opened with a one-shot
//! ticket, replays and streams the agent's events as `{agentId, event, data, timestamp}`
//! frames, and closes (1000) after an `agent.exited` frame once the run has ended. Reused and
//! foreign tickets, unknown agents and missing tickets are refused with a clear reason. Once a
//! new control server no longer knows the agent, the stream replays the events the Worker kept.

use std::time::Duration;

use futures_util::StreamExt;
use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until as wait_for;
use gastown_e2e::wrangler::{Auth, WranglerDev};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const WORK: Duration = Duration::from_secs(300);

/// What a stream gave: its frames and its close (code, reason).
struct Streamed {
    frames: Vec<Value>,
    close: Option<(u16, String)>,
}

fn ws_url(dev: &WranglerDev, path: &str) -> String {
    format!("{}{path}", dev.base_url.replacen("http://", "ws://", 1))
}

fn stream_path(town: &str, agent: &str) -> String {
    format!("/api/towns/{town}/container/agents/{agent}/stream")
}

/// Opens a stream and reads it to its end (bounded).
async fn read_stream(dev: &WranglerDev, town: &str, agent: &str, ticket: &str) -> Streamed {
    let url = ws_url(dev, &format!("{}?ticket={ticket}", stream_path(town, agent)));
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(url.as_str()).await.expect("the WebSocket handshake");
    assert_eq!(resp.status().as_u16(), 101);
    let mut out = Streamed { frames: Vec::new(), close: None };
    tokio::time::timeout(WORK, async {
        while let Some(msg) = ws.next().await {
            match msg.expect("a frame") {
                Message::Text(t) => {
                    out.frames.push(serde_json::from_str(t.as_str()).expect("a JSON frame"))
                }
                Message::Close(c) => {
                    out.close = c.map(|c| (u16::from(c.code), c.reason.to_string()));
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the stream to end within its deadline");
    out
}

async fn ticket(dev: &WranglerDev, town: &str, agent: &str) -> String {
    let r = dev
        .post(&format!("/api/towns/{town}/container/agents/{agent}/stream-ticket"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["expiresAt"].is_string(), "{:?}", r.body);
    r.body["ticket"].as_str().expect("ticket").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_live_stream_goes_through_the_worker_and_refuses_bad_tickets() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let mut local = LocalTown::start(&model, &[], &[("SCHEDULER_TICK_MS", "1000")]).await;
    let dev = &local.worker;
    let origin = Origin::new();
    let (town, rig) = local.town_and_rig("streaming", &origin.url()).await;
    let mut steps = vec![Step::bash("echo streamed-$((6*7))")];
    steps.extend(commit_then_done("streamed.txt", "hello"));
    model.set_script("live", steps);
    let slung = dev
        .post(
            &format!("/api/rigs/{rig}/sling"),
            json!({ "title": "Stream me", "body": marker("live") }),
        )
        .await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let agent = slung.data()["agent"]["id"].as_str().expect("agent").to_string();

    // A ticket can be had once the control server knows the agent (it is dispatched).
    let first = wait_for("the agent to reach the control server", WORK, async || {
        let r = dev
            .post(&format!("/api/towns/{town}/container/agents/{agent}/stream-ticket"), json!({}))
            .await;
        (r.status == 200).then(|| r.body["ticket"].as_str().expect("ticket").to_string())
    })
    .await;

    let s = read_stream(dev, &town, &agent, &first).await;
    for f in &s.frames {
        assert_eq!(f["agentId"], json!(agent), "{f}");
        assert!(
            f["event"].is_string() && f["timestamp"].is_string() && !f["data"].is_null(),
            "{f}"
        );
    }
    let events: Vec<&str> = s.frames.iter().filter_map(|f| f["event"].as_str()).collect();
    let bash = s
        .frames
        .iter()
        .find(|f| f["event"] == "tool_call" && f["data"].to_string().contains("bash"));
    assert!(bash.is_some(), "no bash tool call in the stream: {events:?}");
    assert!(
        s.frames.iter().any(|f| f["data"].to_string().contains("streamed-42")),
        "the tool's output is streamed: {:?}",
        s.frames
    );
    assert_eq!(events.last(), Some(&"agent.exited"), "{events:?}");
    assert_eq!(s.close.as_ref().map(|c| c.0), Some(1000), "{:?}", s.close);
    // The run really ended: the bead moved on.
    let bead = slung.data()["bead"]["id"].as_str().expect("bead");
    let b = dev.get(&format!("/api/rigs/{rig}/beads/{bead}")).await;
    assert_ne!(b.data()["status"], "open", "{b:?}");

    // The same ticket again: refused, with the reason in the close frame and an error frame.
    let reused = read_stream(dev, &town, &agent, &first).await;
    assert_eq!(reused.close.as_ref().map(|c| c.0), Some(4401), "{:?}", reused.close);
    assert!(
        reused.close.as_ref().is_some_and(|c| c.1.contains("already used")),
        "{:?}",
        reused.close
    );
    assert_eq!(reused.frames.len(), 1);
    assert_eq!(reused.frames[0]["event"], "error");

    // A ticket for this agent on another agent's stream: refused.
    let t = ticket(dev, &town, &agent).await;
    let foreign = read_stream(dev, &town, "somebody-else", &t).await;
    assert_eq!(foreign.close.as_ref().map(|c| c.0), Some(4401), "{:?}", foreign.close);
    assert!(
        foreign.close.as_ref().is_some_and(|c| c.1.contains("another agent")),
        "{:?}",
        foreign.close
    );
    // ... and it is used up: not even its own agent's stream opens with it now.
    let after = read_stream(dev, &town, &agent, &t).await;
    assert_eq!(after.close.as_ref().map(|c| c.0), Some(4401));

    // An unknown agent gets no ticket.
    let r = dev
        .post(&format!("/api/towns/{town}/container/agents/nobody/stream-ticket"), json!({}))
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(r.body.to_string().contains("nobody"), "{:?}", r.body);

    // No ticket, a malformed one, or no WebSocket upgrade: refused before the container.
    let url = ws_url(dev, &stream_path(&town, &agent));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status().as_u16(), 400),
        other => panic!("a stream without a ticket opened: {:?}", other.map(|(_, r)| r.status())),
    }
    let plain = dev
        .call(
            reqwest::Method::GET,
            &format!("{}?ticket={first}", stream_path(&town, &agent)),
            &Auth::None,
            Value::Null,
        )
        .await;
    assert_eq!(plain.status, 400, "{:?}", plain.body);
    assert!(
        plain.body["error"].as_str().is_some_and(|e| e.contains("WebSocket")),
        "{:?}",
        plain.body
    );

    // A new control server knows nothing of the agent; the Worker kept its events, so its
    // stream replays that history (with its own one-shot ticket) and closes.
    wait_for("the bead to close", WORK, async || {
        (dev.get(&format!("/api/rigs/{rig}/beads/{bead}")).await.data()["status"] == "closed")
            .then_some(())
    })
    .await;
    wait_for("the Worker to keep the tool call's output", Duration::from_secs(60), async || {
        let page = dev.get(&format!("/api/towns/{town}/agents/{agent}/events?limit=1000")).await;
        page.data()["events"].to_string().contains("streamed-42").then_some(())
    })
    .await;
    local.control.kill_all();
    local.control.restart();
    let dev = &local.worker;
    let (status, _) = local.control.get(&format!("/agents/{agent}/status")).await;
    assert_eq!(status, 404, "the new control server does not know the agent");
    let kept_ticket = ticket(dev, &town, &agent).await;
    let h = read_stream(dev, &town, &agent, &kept_ticket).await;
    assert!(
        h.frames
            .iter()
            .any(|f| f["event"] == "tool_call" && f["data"].to_string().contains("streamed-42")),
        "{:?}",
        h.frames
    );
    assert!(
        h.frames.iter().all(|f| f["agentId"] == json!(agent) && f["timestamp"].is_string()),
        "{:?}",
        h.frames
    );
    let last = h.frames.last().expect("frames");
    assert_eq!(
        (last["event"].as_str(), last["data"]["properties"]["reason"].as_str()),
        (Some("agent.exited"), Some("history")),
        "{last}"
    );
    assert_eq!(h.close.as_ref().map(|c| c.0), Some(1000), "{:?}", h.close);
    assert!(h.close.as_ref().is_some_and(|c| c.1.contains("history")), "{:?}", h.close);
    let again = read_stream(dev, &town, &agent, &kept_ticket).await;
    assert_eq!(
        again.close.as_ref().map(|c| c.0),
        Some(4401),
        "a kept history's ticket is one-shot too: {:?}",
        again.close
    );
    let t = ticket(dev, &town, &agent).await;
    let foreign = read_stream(dev, &town, "somebody-else", &t).await;
    assert!(
        foreign.close.as_ref().is_some_and(|c| c.0 == 4401 && c.1.contains("another agent")),
        "{:?}",
        foreign.close
    );
    // Still no ticket for an agent with neither a run nor a history.
    assert_eq!(
        dev.post(&format!("/api/towns/{town}/container/agents/nobody/stream-ticket"), json!({}))
            .await
            .status,
        404
    );
    drop(origin);
}
