//! Twelve agents on one shard against twelve on three: three rigs of four beads each, slung at
//! once, in a town whose `max_shards` is 1 and then in one whose `max_shards` is 3. Each shard
//! is a real control server on loopback holding four agents (`MAX_AGENTS=4`), so one shard must
//! queue eight of the twelve. For each: seconds from the slings until every agent has sent its
//! first model request, until every bead is merged, and the memory the Kilo processes of each
//! shard hold while all twelve have started (sampled every second, the largest seen).
//! Everything real but the LLM, which answers after 5 s (as a real one takes seconds, so the
//! first agents do not run to their end while the last are starting). Run by bench/shards.sh.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use serde_json::json;

const SHARDS: usize = 3;
const RIGS: usize = 3;
const BEADS_PER_RIG: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local = LocalTown::start_sharded(
        &model,
        SHARDS,
        &[("MAX_AGENTS", "4"), ("HEARTBEAT_INTERVAL_MS", "1000")],
        &[("SCHEDULER_TICK_MS", "1000")],
    )
    .await;
    let dev = &local.worker;
    let parents: Vec<i32> = (0..SHARDS).map(|n| local.shard(n).pid() as i32).collect();

    println!("| max_shards | shards used | slings -> every agent's 1st model request (s) | slings -> all merged (s) | Kilo RSS per shard at peak (MiB) |");
    println!("|---|---|---|---|---|");
    for max_shards in [1u32, 3] {
        let town = dev.post("/api/towns", json!({ "name": format!("bench-{max_shards}") })).await;
        let town = town.data()["id"].as_str().expect("town").to_string();
        let set = dev
            .put(&format!("/api/towns/{town}/limits"), json!({ "max_shards": max_shards }))
            .await;
        assert_eq!(set.status, 200, "{set:?}");
        let mut rigs = Vec::new();
        let mut names = Vec::new();
        let mut origins = Vec::new();
        for r in 0..RIGS {
            let origin = Origin::new();
            rigs.push(local.rig(&town, &format!("r{r}"), &origin.url()).await);
            origins.push(origin);
        }
        let seen = model.requests().len();
        let t0 = Instant::now();
        for (r, rig) in rigs.iter().enumerate() {
            for b in 0..BEADS_PER_RIG {
                let name = format!("shards-{max_shards}-{r}-{b}");
                let mut steps = commit_then_done(&format!("{name}.txt"), "x");
                steps[0] = steps[0].clone().delayed(Duration::from_secs(5));
                model.set_script(name.as_str(), steps);
                let slung = dev
                    .post(
                        &format!("/api/rigs/{rig}/sling"),
                        json!({ "title": name, "body": marker(&name) }),
                    )
                    .await;
                assert_eq!(slung.status, 201, "{slung:?}");
                names.push(name);
            }
        }
        // Every agent's first model request, sampling each shard's Kilo memory meanwhile.
        let mut peak = [0u64; SHARDS];
        let all_started = loop {
            for (n, parent) in parents.iter().enumerate() {
                peak[n] = peak[n].max(gastown_e2e::procs::children_rss_mib(*parent));
            }
            let reqs = model.requests();
            let firsts: Vec<Duration> = names
                .iter()
                .filter_map(|name| {
                    reqs.iter()
                        .skip(seen)
                        .find(|r| r.script() == Some(name.as_str()))
                        .map(|r| r.received_at.duration_since(t0))
                })
                .collect();
            if firsts.len() == names.len() {
                break firsts.into_iter().fold(Duration::ZERO, Duration::max);
            }
            assert!(t0.elapsed() < Duration::from_secs(1200), "every agent's first request");
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        for rig in &rigs {
            let beads = dev.get(&format!("/api/rigs/{rig}/beads?limit=20")).await;
            for b in beads.data().as_array().expect("beads") {
                let id = b["id"].as_str().expect("bead");
                let settled = dev.settled_bead(rig, id, Duration::from_secs(1200)).await;
                assert_eq!(settled["status"], "closed", "{settled}");
            }
        }
        let merged = t0.elapsed();
        let map = dev.get(&format!("/api/towns/{town}/shards")).await;
        let used: BTreeMap<u64, usize> = map
            .data()
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["shard"].as_u64()?, s["rigs"].as_array()?.len())))
            .filter(|(_, rigs)| *rigs > 0)
            .collect();
        let memory: Vec<String> = peak.iter().map(u64::to_string).collect();
        println!(
            "| {max_shards} | {} | {:.1} | {:.1} | {} |",
            used.len(),
            all_started.as_secs_f64(),
            merged.as_secs_f64(),
            memory.join(" / ")
        );
        drop(origins);
    }
    let (_, health) = local.control.get("/health").await;
    println!(
        "\n2 cores, wrangler dev, {SHARDS} control servers on loopback (MAX_AGENTS=4 each, WARM_POOL_SIZE=1 each), {RIGS} rigs x {BEADS_PER_RIG} beads, model answering in 5 s, scheduler tick 1 s, isolation: {}. The memory of a shard includes its warm pool's process.",
        health["isolation"].as_str().unwrap_or("?")
    );
}
