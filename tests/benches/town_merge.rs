//! Sling -> merged on main: one bead alone, then five slung at once as a convoy. Everything real
//! but the LLM (wrangler dev, the control server natively, the Kilo CLI, real git, a local
//! origin per case); the scripted agent writes a file, commits, pushes and calls gt_done at
//! once, so the times are the town's own overhead. Run by bench/town-merge.sh; prints a table.
//!
//! The scheduler ticks every second here (`SCHEDULER_TICK_MS=1000`; the default is 15 s, which
//! adds up to a tick to each hand-over). Times come from the bead's event log in the RigDO
//! (created, review_submitted, merged) and from this process (sling sent, everything merged).

use std::time::{Duration, Instant};

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use serde_json::{json, Value};

fn median(mut v: Vec<i64>) -> i64 {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(-1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local = LocalTown::start(&model, &[], &[("SCHEDULER_TICK_MS", "1000")]).await;
    let dev = &local.worker;
    let town = dev.post("/api/towns", json!({"name": "bench"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();

    println!("| case | sling -> all merged on main (s) | median sling -> gt_done (s) | median gt_done -> merged (s) | Kilo processes left (besides the pool) |");
    println!("|------|-------------------------------|-----------------------------|------------------------------|---------------------|");
    for (case, n) in [("1 bead", 1usize), ("5 beads at once", 5)] {
        let origin = Origin::new();
        let rig = local.rig(&town, &format!("r{n}"), &origin.url()).await;
        let specs: Vec<Value> = (0..n)
            .map(|i| {
                let name = format!("m{n}-{i}");
                model.set_script(&name, commit_then_done(&format!("{name}.txt"), "x"));
                json!({"title": name, "body": marker(&name)})
            })
            .collect();
        let t0 = Instant::now();
        let created = dev
            .post(&format!("/api/rigs/{rig}/convoys"), json!({"title": case, "beads": specs}))
            .await;
        let convoy = created.data()["id"].as_str().expect("convoy").to_string();
        let c = dev.landed_convoy(&rig, &convoy, Duration::from_secs(600)).await;
        let total = t0.elapsed().as_secs_f64();
        let (mut to_done, mut to_merged) = (Vec::new(), Vec::new());
        for b in c["beads"].as_array().expect("beads") {
            let at = dev.bead_event_times(&rig, b["id"].as_str().expect("id")).await;
            let ms = |kind: &str| at.get(kind).copied().unwrap_or(-1);
            to_done.push(ms("review_submitted") - ms("created"));
            to_merged.push(ms("merged") - ms("review_submitted"));
        }
        // Give the finished runs their end (the last turn, then the stop), then count.
        tokio::time::sleep(Duration::from_secs(15)).await;
        // The warm pool's ready processes are not left over: they wait for the next agent.
        let pooled = local.control.pooled_pids().await;
        let left = gastown_e2e::procs::processes()
            .into_iter()
            .filter(|p| p.ppid == local.control.pid() as i32 && !pooled.contains(&p.pid))
            .count();
        println!(
            "| {case} | {total:.1} | {:.1} | {:.1} | {left} |",
            median(to_done) as f64 / 1000.0,
            median(to_merged) as f64 / 1000.0
        );
    }
    println!("\n2 cores, wrangler dev, local origins, scheduler tick 1 s; sling -> gt_done includes the dispatch and Kilo's start-up.");
}
