//! Time from sling to the agent's first model request, split into the scheduler's delay, the
//! container's start-agent steps and Kilo's start-up. Everything real but the LLM (as in
//! tests/tests/worker_e2e.rs): wrangler dev, the control server natively, the Kilo CLI, a
//! scripted model, a local origin. Run by bench/worker-sling.sh; prints a table.
//!
//! One rig. The first sling meets a rig the container has never seen (its clone is made); each
//! later one comes once the previous bead has merged (the agent committed, called `gt_done`,
//! the refinery merged and closed the bead) and the warm pool is full again: a warm town whose
//! rig has just merged work, the busiest moment of its scheduler.
//!
//! Clocks: sling and the first model request are taken by this process; the scheduler's delay
//! is the Worker's `agent_dispatched` event minus its `hooked` event (the control server answers
//! a start at once, before the slow steps); the start-agent steps and Kilo's start-up are the
//! control server's own timings (`ready_ms` is 0 when the agent takes a warm pooled process).

use std::time::{Duration, Instant};

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wrangler::iso_ms_of_day;
use serde_json::{json, Value};

/// Slings on the rig once its clone exists.
const WARM_RUNS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let origin = Origin::new();
    let scripts: Vec<(String, _)> = (0..=WARM_RUNS)
        .map(|i| (format!("bench{i}"), commit_then_done(&format!("f{i}.txt"), "x")))
        .collect();
    let model = ModelServer::start(scripts).await.expect("model server");
    let local = LocalTown::start(&model, &[], &[]).await;
    let (dev, cs) = (&local.worker, &local.control);
    let town = dev.post("/api/towns", json!({"name": "bench"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let rig = local.rig(&town, "r", &origin.url()).await;

    println!("| run     | sling -> 1st model request (ms) | scheduler delay (ms) | fetch (ms) | checkout (ms) | session + prompt (ms) | Kilo start-up (ms) | rest (ms) |");
    println!("|---------|------------------------------|----------------------|------------|---------------|-----------------------|--------------------|-----------|");
    let mut warm = Vec::new();
    for run in 0..=WARM_RUNS {
        let deadline = Instant::now() + Duration::from_secs(120);
        while cs.get("/health").await.1["pool"]["ready"].as_u64().unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "the warm pool did not fill");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let script = format!("bench{run}");
        let seen = model.requests().len();
        let t0 = Instant::now();
        let sling = dev
            .post(
                &format!("/api/rigs/{rig}/sling"),
                json!({"title": "bench", "body": marker(&script)}),
            )
            .await;
        let agent = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
        let bead = sling.data()["bead"]["id"].as_str().expect("bead").to_string();
        let first = model
            .wait_until(Duration::from_secs(120), |reqs| {
                reqs.iter().skip(seen).any(|r| r.script() == Some(script.as_str()))
            })
            .await
            .expect("first model request")
            .into_iter()
            .skip(seen)
            .find(|r| r.script() == Some(script.as_str()))
            .expect("request");
        let total = first.received_at.duration_since(t0).as_millis() as i64;

        let settled = dev.settled_bead(&rig, &bead, Duration::from_secs(120)).await;
        assert_eq!(settled["status"], "closed", "the bench's bead merged: {settled}");
        let events = dev.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
        let at = |kind: &str| {
            events
                .data()
                .as_array()
                .and_then(|a| a.iter().find(|e| e["kind"] == kind))
                .map(|e| iso_ms_of_day(&e["created_at"]))
        };
        let scheduler = match (at("hooked"), at("agent_dispatched")) {
            (Some(h), Some(d)) => d - h,
            _ => -1,
        };
        let line = cs
            .logs()
            .into_iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .rfind(|v| {
                v["fields"]["message"] == "agent running" && v["fields"]["agent"] == json!(agent)
            })
            .unwrap_or(Value::Null);
        let f = |k: &str| line["fields"][k].as_i64().unwrap_or(0);
        let (fetch, checkout, session, kilo) =
            (f("clone_ms"), f("worktree_ms"), f("session_ms"), f("ready_ms"));
        let work = f("total_ms") - kilo;
        let label = if run == 0 { "new rig".to_string() } else { run.to_string() };
        println!(
            "| {label:>7} | {total:>28} | {scheduler:>20} | {fetch:>10} | {checkout:>13} | {session:>21} | {kilo:>18} | {:>9} |",
            total - scheduler.max(0) - work - kilo
        );
        if run > 0 {
            warm.push(total);
        }
    }
    warm.sort();
    println!("\nmedian of the {WARM_RUNS} warm slings, sling -> first model request: {} ms (2 cores, wrangler dev, local origin)", warm[WARM_RUNS / 2]);
    println!("fetch, checkout, session + prompt: the control server's own timings of the start; Kilo start-up 0 = a pooled process; rest = HTTP hops, the control server's other work, Kilo's first turn up to its model request");
}
