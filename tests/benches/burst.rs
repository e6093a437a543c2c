//! Bursts of work: 1, 6 and 12 beads slung at once (one convoy each, on a fresh rig), and then
//! a single sling on the warm town, each once the warm pool is full. For each: seconds from the sling until every agent has sent
//! its first model request, until every bead is merged, and the memory the Kilo processes hold
//! 15 s after everything is done (the warm pool's processes). Everything real but the LLM; run
//! by bench/burst.sh with `WARM_POOL_SIZE` 1 (the default) and 6.

use std::time::{Duration, Instant};

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use serde_json::{json, Value};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    // The warm pool's size: the product default (1) unless the run says otherwise.
    let pool = std::env::var("WARM_POOL_SIZE").unwrap_or_else(|_| "1".into());
    let local = LocalTown::start(
        &model,
        &[("WARM_POOL_SIZE", pool.as_str())],
        &[("SCHEDULER_TICK_MS", "1000")],
    )
    .await;
    let dev = &local.worker;
    let town = dev.post("/api/towns", json!({"name": "burst"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let parent = local.control.pid() as i32;

    println!("| slung at once | sling -> every agent's 1st model request (s) | sling -> all merged (s) | Kilo RSS 15 s after (MiB) |");
    println!("|---------------|----------------------------------------------|-------------------------|---------------------------|");
    // With the scripted model answering at once, the first agents at the model go on with
    // their work (commit, push, gt_done, merge) while the last are still on their way, and take
    // the same cores; a model that answers in seconds, as a real one does, leaves a burst's
    // starts to themselves.
    let slow = Some(Duration::from_secs(5));
    for (label, n, answer_after) in [
        ("1", 1usize, None),
        ("6", 6, None),
        ("6 (model answering in 5 s)", 6, slow),
        ("12", 12, None),
        ("1 (warm town)", 1, None),
    ] {
        // Each burst meets a full pool (a town that has been idle for a moment).
        let deadline = Instant::now() + Duration::from_secs(300);
        while local.control.get("/health").await.1["pool"]["ready"].as_u64().unwrap_or(0)
            < pool.parse::<u64>().unwrap_or(1)
        {
            assert!(Instant::now() < deadline, "the warm pool did not fill");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let origin = Origin::new();
        let rig = local.rig(&town, &format!("b{n}-{}", label.len()), &origin.url()).await;
        let names: Vec<String> = (0..n).map(|i| format!("burst-{}-{n}-{i}", label.len())).collect();
        let specs: Vec<Value> = names
            .iter()
            .map(|name| {
                let mut steps = commit_then_done(&format!("{name}.txt"), "x");
                if let Some(after) = answer_after {
                    steps[0] = steps[0].clone().delayed(after);
                }
                model.set_script(name.as_str(), steps);
                json!({"title": name, "body": marker(name)})
            })
            .collect();
        let seen = model.requests().len();
        let t0 = Instant::now();
        let created = dev
            .post(&format!("/api/rigs/{rig}/convoys"), json!({"title": label, "beads": specs}))
            .await;
        let convoy = created.data()["id"].as_str().expect("convoy").to_string();
        model
            .wait_until(Duration::from_secs(600), |reqs| {
                names
                    .iter()
                    .all(|name| reqs.iter().skip(seen).any(|r| r.script() == Some(name.as_str())))
            })
            .await
            .expect("every agent's first model request");
        // The latest of the agents' first requests.
        let firsts = names
            .iter()
            .filter_map(|name| {
                model
                    .requests()
                    .into_iter()
                    .skip(seen)
                    .find(|r| r.script() == Some(name.as_str()))
                    .map(|r| r.received_at.duration_since(t0))
            })
            .fold(Duration::ZERO, |a, b| a.max(b));
        let deadline = Instant::now() + Duration::from_secs(900);
        while dev.get(&format!("/api/rigs/{rig}/convoys/{convoy}")).await.data()["status"]
            != "landed"
        {
            assert!(Instant::now() < deadline, "the convoy did not land");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let merged = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(15)).await;
        println!(
            "| {label} | {:.1} | {:.1} | {} |",
            firsts.as_secs_f64(),
            merged.as_secs_f64(),
            gastown_e2e::procs::children_rss_mib(parent)
        );
    }
    let (_, health) = local.control.get("/health").await;
    println!(
        "\n2 cores, wrangler dev, local origins, scheduler tick 1 s, AGENTS_PER_SERVER=1, WARM_POOL_SIZE={pool}, isolation: {}. The memory after is the warm pool's.",
        health["isolation"].as_str().unwrap_or("?")
    );
}
