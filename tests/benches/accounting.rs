//! What usage accounting costs the control server (run by bench/accounting.sh, which builds the
//! release binary first): 8 agents, each in its own Kilo process, make 30 model calls apiece
//! against the scripted model (10 prompt and 5 completion tokens per answer), and the control
//! server reads each call's usage from Kilo's events, spools it on disk and sends it with the
//! agents' events. A loopback stand-in for the Worker takes the batches (and counts the usage
//! in them), so nothing waits on `wrangler dev`. Prints one table; no assertions about speed.
//!
//! Kilo's CPU and memory are not counted: only the control server's own process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use gastown_e2e::control_server::{start_request, ControlServer, Options};
use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::procs;
use serde_json::{json, Value};

const AGENTS: usize = 8;
const CALLS: usize = 30;

/// What the Worker stand-in has taken: event batches, events, and usage events among them.
#[derive(Default)]
struct Taken {
    batches: AtomicU64,
    events: AtomicU64,
    usage: AtomicU64,
}

async fn take(State(taken): State<Arc<Taken>>, Json(batch): Json<Value>) -> Json<Value> {
    let events = batch["events"].as_array().cloned().unwrap_or_default();
    taken.batches.fetch_add(1, Ordering::Relaxed);
    taken.events.fetch_add(events.len() as u64, Ordering::Relaxed);
    let usage = events.iter().filter(|e| e["kind"] == "usage").count() as u64;
    taken.usage.fetch_add(usage, Ordering::Relaxed);
    Json(json!({ "success": true, "data": { "added": events.len() } }))
}

/// A loopback stand-in for the Worker's container routes: event batches are counted, every
/// other call (heartbeats) is answered with success. Its base URL.
async fn worker_stand_in(taken: Arc<Taken>) -> String {
    let app = axum::Router::new()
        .route("/api/towns/{town}/container/events", axum::routing::post(take))
        .fallback(|| async { Json(json!({ "success": true, "data": {} })) })
        .with_state(taken);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The process's CPU time in clock ticks, and its RSS in KiB.
fn cpu_ticks_and_rss_kib(pid: u32) -> (u64, u64) {
    (procs::cpu_ticks(pid as i32), procs::rss_kib(pid as i32))
}

fn ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output();
    out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100)
}

fn row(name: &str, value: String) {
    println!("| {name:<52} | {value:>16} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut steps: Vec<Step> = (0..CALLS - 1).map(|_| Step::bash("true")).collect();
    steps.push(Step::text("done"));
    let model = ModelServer::start([("acct", steps)]).await.expect("model server");
    let taken = Arc::new(Taken::default());
    let api = worker_stand_in(taken.clone()).await;
    let origin = Origin::new();
    let cs = ControlServer::start(
        Options::default()
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("GASTOWN_API_URL", api),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = cs.pid();
    let hz = ticks_per_second() as f64;
    let (idle_cpu, idle_rss) = cpu_ticks_and_rss_kib(pid);

    let begun = Instant::now();
    for i in 0..AGENTS {
        let id = format!("u{i}");
        let req = start_request(
            &id,
            "rig-u",
            &format!("u{i}"),
            &format!("polecat/u{i}/x"),
            &origin.url(),
            &format!("go {}", marker("acct")),
        );
        let (status, body) = cs.post("/agents/start", req).await;
        assert!(status == 201 || status == 200, "{body}");
    }
    let want = (AGENTS * CALLS) as u64;
    let mut peak_rss = idle_rss;
    let deadline = Instant::now() + Duration::from_secs(600);
    while taken.usage.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak_rss = peak_rss.max(cpu_ticks_and_rss_kib(pid).1);
    }
    let elapsed = begun.elapsed();
    let (busy_cpu, end_rss) = cpu_ticks_and_rss_kib(pid);
    let calls = model.requests_for("acct").len() as u64;
    let usage = taken.usage.load(Ordering::Relaxed);
    let cpu_s = (busy_cpu - idle_cpu) as f64 / hz;

    println!("| {:<52} | {:>16} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(54), "-".repeat(18));
    row("agents (one Kilo process each) x model calls", format!("{AGENTS} x {CALLS}"));
    row("model calls answered", calls.to_string());
    row("usage reports taken by the Worker stand-in", format!("{usage} of {want}"));
    row(
        "event batches / events taken",
        format!(
            "{} / {}",
            taken.batches.load(Ordering::Relaxed),
            taken.events.load(Ordering::Relaxed)
        ),
    );
    row("wall time, first start to last usage taken", format!("{:.1} s", elapsed.as_secs_f64()));
    row("control server CPU over the run", format!("{cpu_s:.2} s"));
    row(
        "control server CPU per model call",
        format!("{:.2} ms", cpu_s * 1000.0 / calls.max(1) as f64),
    );
    row("control server RSS idle", format!("{:.1} MiB", idle_rss as f64 / 1024.0));
    row("control server RSS peak during the run", format!("{:.1} MiB", peak_rss as f64 / 1024.0));
    row("control server RSS after the run", format!("{:.1} MiB", end_rss as f64 / 1024.0));
    drop(cs);
}
