//! A recording stand-in for the Worker's HTTP API, for the control server's tests (the real
//! Worker is exercised under `wrangler dev` by the Worker's and the end-to-end tests).
//! It answers every route with the Worker's success envelope and records what it got.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub container_token: Option<String>,
    pub body: Value,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<Recorded>>>);

pub struct WorkerStub {
    pub addr: SocketAddr,
    records: Shared,
    _task: tokio::task::JoinHandle<()>,
}

async fn record(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: header("authorization"),
        container_token: header("x-container-token"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let reply =
        json!({ "success": true, "data": { "echo": rec.path, "agent": { "id": "from-stub" } } });
    shared.0.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    Json(reply)
}

impl WorkerStub {
    pub async fn start() -> Self {
        let records = Shared::default();
        let app = axum::Router::new().fallback(record).with_state(records.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, records, _task: task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn records(&self) -> Vec<Recorded> {
        self.records.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits until a record satisfies `pred` (or `timeout` passes) and returns it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Option<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
