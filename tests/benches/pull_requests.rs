//! Sling -> pull request opened, and sling -> pull request merged with green checks: one bead
//! alone, then five slung at once as a convoy, on a rig with `merge_strategy: "pr"` (no
//! approval required, `auto_merge` on). Everything real but the LLM and the forge: wrangler
//! dev, the control server natively, the Kilo CLI, real git; the forge is the loopback
//! stand-in (`tests/src/forge_stub.rs`: git over `git http-backend` with a token the Worker
//! minted as a GitHub App, the pull request REST subset, one check run that passes). Run by
//! bench/pull-requests.sh; prints a table.
//!
//! The scheduler ticks every second and pull requests are read every second here
//! (`SCHEDULER_TICK_MS`, `PR_POLL_MS`; the defaults are 15 s and 30 s). Times come from the
//! bead's event log in the RigDO (created, pr_opened, merged) and from this process.

use std::time::{Duration, Instant};

use gastown_e2e::forge_stub::{App, ForgeStub};
use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wrangler::Auth;
use reqwest::Method;
use serde_json::{json, Value};

fn median(mut v: Vec<i64>) -> i64 {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(-1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("the app's key");
    let pem = key.to_pkcs1_pem(LineEnding::LF).expect("pem").to_string();
    let app = App { app_id: 7, installation_id: 8, public_key: key.to_public_key() };
    let forge = ForgeStub::start_with_git(Some(app)).await;
    forge.require_check("ci", "README.md");
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local =
        LocalTown::start(&model, &[], &[("SCHEDULER_TICK_MS", "1000"), ("PR_POLL_MS", "1000")])
            .await;
    let dev = &local.worker;
    let town = dev.post("/api/towns", json!({"name": "bench"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let put = dev
        .call(
            Method::PUT,
            &format!("/api/towns/{town}/forge"),
            &Auth::Internal,
            json!({"kind": "github_app", "api_url": forge.url(), "app_id": 7, "installation_id": 8, "private_key": pem}),
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");

    println!("| case | sling -> all merged (s) | median sling -> gt_done (s) | median gt_done -> pull request opened (s) | median opened -> merged (s) |");
    println!("|------|-------------------------|-----------------------------|--------------------------------------------|------------------------------|");
    for (case, n) in [("1 bead", 1usize), ("5 beads at once", 5)] {
        let seed = Origin::new();
        let (git_url, _) = forge.add_repo(&format!("r{n}"), &seed.path);
        let created = dev
            .post(
                &format!("/api/towns/{town}/rigs"),
                json!({"name": format!("r{n}"), "git_url": git_url, "merge_strategy": "pr"}),
            )
            .await;
        let rig = created.data()["id"].as_str().expect("rig").to_string();
        let specs: Vec<Value> = (0..n)
            .map(|i| {
                let name = format!("p{n}-{i}");
                model.set_script(&name, commit_then_done(&format!("{name}.txt"), "x"));
                json!({"title": name, "body": marker(&name)})
            })
            .collect();
        let t0 = Instant::now();
        let created = dev
            .post(&format!("/api/rigs/{rig}/convoys"), json!({"title": case, "beads": specs}))
            .await;
        let convoy = created.data()["id"].as_str().expect("convoy").to_string();
        let c = dev.landed_convoy(&rig, &convoy, Duration::from_secs(900)).await;
        let total = t0.elapsed().as_secs_f64();
        let (mut to_done, mut to_opened, mut to_merged) = (Vec::new(), Vec::new(), Vec::new());
        for b in c["beads"].as_array().expect("beads") {
            let at = dev.bead_event_times(&rig, b["id"].as_str().expect("id")).await;
            let ms = |kind: &str| at.get(kind).copied().unwrap_or(-1);
            to_done.push(ms("review_submitted") - ms("created"));
            to_opened.push(ms("pr_opened") - ms("review_submitted"));
            to_merged.push(ms("merged") - ms("pr_opened"));
        }
        println!(
            "| {case} | {total:.1} | {:.1} | {:.1} | {:.1} |",
            median(to_done) as f64 / 1000.0,
            median(to_opened) as f64 / 1000.0,
            median(to_merged) as f64 / 1000.0
        );
    }
    println!("\n2 cores, wrangler dev, the loopback forge stand-in, scheduler tick and pull request reads every 1 s; sling -> gt_done includes the dispatch, Kilo's start-up and the push gt_done makes; a rig takes one review entry at a time, so gt_done -> opened includes waiting for the entries before it.");
}
