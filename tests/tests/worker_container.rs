//! The TownContainer Durable Object without Docker: with `CONTAINER_URL` set, the Worker's
//! container routes reach a control server on loopback (here a recording stand-in), with the
//! container token added and the caller's credentials not forwarded.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use gastown_e2e::wrangler::{Auth, WranglerDev, CONTAINER_TOKEN, INTERNAL_KEY};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    internal_key: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(
    State(log): State<Log>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        token: h("x-container-token"),
        internal_key: h("x-internal-api-key"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    log.lock().expect("log").push(seen.clone());
    match seen.path.as_str() {
        "/agents/start" => (
            StatusCode::CREATED,
            axum::Json(json!({"agentId": seen.body["agentId"], "status": "starting"})),
        ),
        "/health" => {
            (StatusCode::OK, axum::Json(json!({"status": "ok", "agents": 0, "uptime": 1})))
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(json!({"error": "no such agent"}))),
    }
}

#[tokio::test]
async fn container_routes_reach_the_control_server_at_container_url() {
    let log: Log = Arc::default();
    let app = Router::new().fallback(record).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}");
    let dev = WranglerDev::start_with_env(&[("CONTAINER_URL", &url)]).await;

    let r = dev.get("/api/towns/t1/container/health").await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!({"status": "ok", "agents": 0, "uptime": 1}))
    );
    let start = json!({"agentId": "a1", "rigId": "r1", "prompt": "go"});
    let r = dev.post("/api/towns/t1/container/agents/start", start.clone()).await;
    assert_eq!((r.status, r.body["agentId"].clone()), (201, json!("a1")), "{r:?}");
    let r = dev.post("/api/towns/t1/container/agents/a9/stop", json!({"signal": "SIGKILL"})).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (404, json!({"error": "no such agent"})),
        "statuses pass through"
    );
    // Agents and anonymous callers never reach the container.
    let r = dev
        .call(Method::POST, "/api/towns/t1/container/agents/start", &Auth::None, start.clone())
        .await;
    assert_eq!(r.status, 401);

    let seen = log.lock().expect("log").clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/health"));
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str(), &seen[1].body),
        ("POST", "/agents/start", &start)
    );
    assert_eq!(
        (seen[2].path.as_str(), &seen[2].body),
        ("/agents/a9/stop", &json!({"signal": "SIGKILL"}))
    );
    for s in &seen {
        assert_eq!(s.token.as_deref(), Some(CONTAINER_TOKEN), "{s:?}");
        assert_ne!(
            s.internal_key.as_deref(),
            Some(INTERNAL_KEY),
            "the internal key is not forwarded"
        );
    }

    // A control server that stops answering is a clear 503, not a hang or a 500.
    server.abort();
    let _ = server.await;
    let r = dev.get("/api/towns/t1/container/health").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.error().contains("did not answer"), "{r:?}");
}
