//! Time from sling to the agent's first model request, split into the scheduler's delay, the
//! container's start-agent work and Kilo's start-up. Everything real but the LLM (as in
//! tests/tests/worker_e2e.rs): wrangler dev, the control server natively, the Kilo CLI, a
//! scripted model, a local origin. Run by bench/worker-sling.sh; prints a table.
//!
//! Clocks: sling and the first model request are taken by this process; the scheduler's delay
//! is the Worker's `agent_dispatched` event minus its `hooked` event (the control server answers
//! a start at once, before the slow steps); the start-agent work and Kilo's start-up are the
//! control server's own timings (`ready_ms` is 0 when the agent takes a warm pooled process).
//! Each sling waits for the warm pool to be ready first: this measures a warm town.

use std::time::{Duration, Instant};

use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wrangler::iso_ms_of_day;
use serde_json::{json, Value};

const RUNS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let origin = Origin::new();
    let model =
        ModelServer::start([("bench", vec![Step::text("ok")])]).await.expect("model server");
    let local = LocalTown::start(&model, &[], &[]).await;
    let (dev, cs) = (&local.worker, &local.control);
    let town = dev.post("/api/towns", json!({"name": "bench"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();

    println!("| run | sling -> 1st model request (ms) | scheduler delay (ms) | start-agent work (ms) | Kilo start-up (ms) | rest (ms) |");
    println!("|-----|------------------------------|----------------------|-----------------------|--------------------|-----------|");
    let mut totals = Vec::new();
    for run in 1..=RUNS {
        let rig = local.rig(&town, &format!("r{run}"), &origin.url()).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while cs.get("/health").await.1["pool"]["ready"].as_u64().unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "the warm pool did not fill");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = model.requests().len();
        let t0 = Instant::now();
        let sling = dev
            .post(
                &format!("/api/rigs/{rig}/sling"),
                json!({"title": "bench", "body": marker("bench")}),
            )
            .await;
        let agent = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
        let bead = sling.data()["bead"]["id"].as_str().expect("bead").to_string();
        model
            .wait_until(Duration::from_secs(120), |reqs| {
                reqs.iter().skip(seen).any(|r| r.script() == Some("bench"))
            })
            .await
            .expect("first model request");
        let first = model
            .requests()
            .into_iter()
            .skip(seen)
            .find(|r| r.script() == Some("bench"))
            .expect("request");
        let total = first.received_at.duration_since(t0).as_millis() as i64;

        let events = dev.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
        let at = |kind: &str| {
            events
                .data()
                .as_array()
                .and_then(|a| a.iter().find(|e| e["kind"] == kind))
                .map(|e| iso_ms_of_day(&e["created_at"]))
        };
        let dispatch_span = match (at("hooked"), at("agent_dispatched")) {
            (Some(h), Some(d)) => d - h,
            _ => -1,
        };
        let line = cs
            .logs()
            .into_iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .find(|v| {
                v["fields"]["message"] == "agent running" && v["fields"]["agent"] == json!(agent)
            })
            .unwrap_or(Value::Null);
        let f = |k: &str| line["fields"][k].as_i64().unwrap_or(0);
        let kilo = f("ready_ms");
        let work = f("total_ms") - kilo;
        let scheduler = dispatch_span;
        println!(
            "| {run:>3} | {total:>28} | {scheduler:>20} | {work:>21} | {kilo:>18} | {:>9} |",
            total - scheduler.max(0) - work - kilo
        );
        totals.push(total);
        let _ = dev
            .post(
                &format!("/api/towns/{town}/container/agents/{agent}/stop"),
                json!({"signal": "SIGKILL"}),
            )
            .await;
    }
    totals.sort();
    println!("\nmedian sling -> first model request: {} ms over {RUNS} runs (2 cores, wrangler dev, local origin)", totals[RUNS / 2]);
    println!("start-agent work = fetch + checkout + session + prompt (control server's own timings); Kilo start-up 0 = a pooled process; rest = HTTP hops, Kilo's first turn");
}
