//! A town larger than one container: two shards, each a real control server on loopback with
//! its own workspace and uids, both behind one `wrangler dev` (`CONTAINER_URL` lists them), the
//! real Kilo CLI and git, a scripted LLM. Each shard holds two agents (`MAX_AGENTS`).
//!
//! - Three rigs with `max_shards: 2`: the first starts on shard 0, and once shard 0 is full
//!   the next starts shard 1; six beads (two per rig, more than a shard runs at once) all end
//!   merged on their origins, no rig is split, and every agent ran on its rig's shard.
//! - A second town, `max_shards: 2` too, whose one rig fits on shard 0: its shard 1 is never
//!   started (no agent of it on shard 1's server, no shard 1 in its map).
//! - Shard 1's control server is SIGKILLed mid-turn: only its rig's bead is dispatched again,
//!   on shard 0 (the rig moves), and merges; shard 0's run meanwhile is dispatched once.
//! - A `max_shards` below 1 or over the town container's `max_instances` is a 400 and changes
//!   nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until as wait_for;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(300);

async fn town_with_shards(local: &LocalTown, name: &str, max_shards: u32) -> String {
    let dev = &local.worker;
    let town = dev.post("/api/towns", json!({ "name": name })).await.data()["id"]
        .as_str()
        .expect("town id")
        .to_string();
    let set =
        dev.put(&format!("/api/towns/{town}/limits"), json!({ "max_shards": max_shards })).await;
    assert_eq!(set.status, 200, "{set:?}");
    town
}

/// A rig with two beads slung, each committing its own file.
async fn busy_rig(
    local: &LocalTown,
    model: &ModelServer,
    town: &str,
    name: &str,
) -> (String, Origin) {
    let origin = Origin::new();
    let rig = local.rig(town, name, &origin.url()).await;
    for i in 1..=2 {
        let script = format!("{name}{i}");
        model.set_script(&script, commit_then_done(&format!("{name}-{i}.txt"), &script));
        let slung = local
            .worker
            .post(
                &format!("/api/rigs/{rig}/sling"),
                json!({ "title": format!("Write {name}-{i}.txt"), "body": marker(&script) }),
            )
            .await;
        assert_eq!(slung.status, 201, "{slung:?}");
    }
    (rig, origin)
}

async fn shard_map(local: &LocalTown, town: &str) -> Vec<Value> {
    let shards = local.worker.get(&format!("/api/towns/{town}/shards")).await;
    assert_eq!(shards.status, 200, "{shards:?}");
    shards.data().as_array().cloned().unwrap_or_default()
}

/// `rig id -> shard` from the town's map; each rig listed once.
async fn rigs_by_shard(local: &LocalTown, town: &str) -> BTreeMap<String, u64> {
    let mut placed = BTreeMap::new();
    for s in shard_map(local, town).await {
        for rig in s["rigs"].as_array().into_iter().flatten() {
            let rig = rig.as_str().expect("rig id").to_string();
            let shard = s["shard"].as_u64().expect("shard");
            assert!(placed.insert(rig.clone(), shard).is_none(), "rig {rig} on two shards");
        }
    }
    placed
}

/// `(agent id, rig id)` of the town's agents that shard `n`'s control server ran.
async fn agents_on(local: &LocalTown, n: usize, town: &str) -> Vec<(String, String)> {
    let (status, list) = local.shard(n).get("/agents").await;
    assert_eq!(status, 200, "{list}");
    list["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["townId"] == town)
        .map(|a| {
            let field = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (field("agentId"), field("rigId"))
        })
        .collect()
}

fn main_files(origin: &Origin) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&origin.path)
        .args(["ls-tree", "--name-only", "main"])
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_grows_onto_a_second_shard_and_every_rig_stays_whole_on_one() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let mut local = LocalTown::start_sharded(
        &model,
        2,
        &[("MAX_AGENTS", "2"), ("STOP_GRACE_MS", "3000"), ("HEARTBEAT_INTERVAL_MS", "500")],
        // A shard that stops answering loses its runs after 15 s (the cold-start grace).
        &[("SCHEDULER_TICK_MS", "1000"), ("SCHEDULER_COLD_START_GRACE_MS", "15000")],
    )
    .await;
    let dev = &local.worker;
    let town = town_with_shards(&local, "sharded", 2).await;

    // Bad input changes nothing.
    for bad in [json!({ "max_shards": 0 }), json!({ "max_shards": 51 })] {
        let r = dev.put(&format!("/api/towns/{town}/limits"), bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(r.body["issues"][0]["path"], json!(["max_shards"]), "{r:?}");
    }
    let limits = dev.get(&format!("/api/towns/{town}/limits")).await;
    assert_eq!(limits.data()["max_shards"], 2, "{limits:?}");

    // Two rigs with two beads each: more than shard 0 runs at once.
    let (first, first_origin) = busy_rig(&local, &model, &town, "alpha").await;
    let (second, second_origin) = busy_rig(&local, &model, &town, "beta").await;
    wait_for("shard 0 to report what it holds", WORK, async || {
        let map = shard_map(&local, &town).await;
        // Its capacity, and the memory its Kilo processes hold (the pool's at least).
        map.iter()
            .any(|s| {
                s["shard"] == 0
                    && s["capacity"] == 2
                    && s["memory_bytes"].as_u64().is_some_and(|m| m > 0)
            })
            .then_some(())
    })
    .await;
    // Placed now, a third rig finds shard 0 full (two rigs or two agents there).
    let (third, third_origin) = busy_rig(&local, &model, &town, "gamma").await;

    for (rig, origin, name) in [
        (&first, &first_origin, "alpha"),
        (&second, &second_origin, "beta"),
        (&third, &third_origin, "gamma"),
    ] {
        let beads = dev.get(&format!("/api/rigs/{rig}/beads?limit=10")).await;
        for b in beads.data().as_array().expect("beads") {
            let id = b["id"].as_str().expect("bead id");
            let settled = dev.settled_bead(rig, id, WORK).await;
            assert_eq!(settled["status"], "closed", "{settled}");
        }
        let files = main_files(origin);
        for i in 1..=2 {
            assert!(files.lines().any(|f| f == format!("{name}-{i}.txt")), "{name}: {files}");
        }
    }

    // The first rig starts on shard 0. The second joins it or, when shard 0 already runs its
    // two agents, starts shard 1; the third, placed once shard 0 has reported it holds two,
    // finds shard 0 full either way.
    let placed = rigs_by_shard(&local, &town).await;
    assert_eq!(placed.get(&first), Some(&0), "{placed:?}");
    assert_eq!(placed.len(), 3, "{placed:?}");
    assert_eq!(placed.values().collect::<BTreeSet<_>>(), BTreeSet::from([&0, &1]), "{placed:?}");
    let mut ran_on: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for n in 0..2 {
        for (agent, rig) in agents_on(&local, n, &town).await {
            assert_eq!(placed.get(&rig), Some(&(n as u64)), "agent {agent} of {rig} ran on {n}");
            ran_on.entry(rig).or_default().insert(n as u64);
        }
    }
    assert_eq!(ran_on.len(), 3, "every rig's agents ran: {ran_on:?}");
    assert!(ran_on.values().all(|s| s.len() == 1), "no rig split: {ran_on:?}");

    // A person's call about an agent finds the agent's shard itself; `?shard=` names one.
    let (agent, _) = agents_on(&local, 1, &town).await.into_iter().next().expect("an agent");
    let status = format!("/api/towns/{town}/container/agents/{agent}/status");
    let found = dev.get(&status).await;
    assert_eq!((found.status, &found.body["agentId"]), (200, &json!(agent)), "{found:?}");
    assert_eq!(dev.get(&format!("{status}?shard=0")).await.status, 404, "not on shard 0");
    assert_eq!(dev.get(&format!("{status}?shard=1")).await.status, 200);

    // A town whose work fits on its first shard never starts a second.
    let small = town_with_shards(&local, "small", 2).await;
    let (rig, origin) = busy_rig(&local, &model, &small, "delta").await;
    let beads = dev.get(&format!("/api/rigs/{rig}/beads?limit=10")).await;
    for b in beads.data().as_array().expect("beads") {
        let settled = dev.settled_bead(&rig, b["id"].as_str().expect("id"), WORK).await;
        assert_eq!(settled["status"], "closed", "{settled}");
    }
    assert!(main_files(&origin).contains("delta-2.txt"));
    assert!(agents_on(&local, 1, &small).await.is_empty(), "shard 1 never ran the small town");
    let map = shard_map(&local, &small).await;
    assert!(map.iter().all(|s| s["shard"] == 0), "{map:?}");

    // Shard 1's control server dies mid-turn: only its rig's bead is dispatched again (on
    // shard 0, where the rig moves with nothing of it left running), and it merges; shard 0's
    // run in the meantime never notices.
    let on_one = placed.iter().find(|(_, s)| **s == 1).map(|(r, _)| r.clone()).expect("a rig");
    let on_zero = placed.iter().find(|(_, s)| **s == 0).map(|(r, _)| r.clone()).expect("a rig");
    model.set_runs(
        "orphan",
        vec![
            vec![Step::text("thinking").delayed(Duration::from_secs(120))],
            commit_then_done("orphan.txt", "orphan"),
        ],
    );
    let mut steady = commit_then_done("steady.txt", "steady");
    let first_step = steady.remove(0).delayed(Duration::from_secs(20));
    steady.insert(0, first_step);
    model.set_script("steady", steady);
    let mut slung = Vec::new();
    for (rig, script) in [(&on_one, "orphan"), (&on_zero, "steady")] {
        let s = dev
            .post(
                &format!("/api/rigs/{rig}/sling"),
                json!({ "title": format!("Write {script}.txt"), "body": marker(script) }),
            )
            .await;
        assert_eq!(s.status, 201, "{s:?}");
        slung.push(s.data()["bead"]["id"].as_str().expect("bead").to_string());
    }
    for script in ["orphan", "steady"] {
        model.wait_for_script_requests(script, 1, WORK).await.expect("the two runs at work");
    }
    local.shards[0].kill_all();
    for (rig, bead) in [(&on_one, &slung[0]), (&on_zero, &slung[1])] {
        let settled = dev.settled_bead(rig, bead, WORK).await;
        assert_eq!(settled["status"], "closed", "{settled}");
    }
    let sessions = |script: &str| {
        model
            .requests_for(script)
            .iter()
            .filter_map(|r| r.session_header.clone())
            .filter(|s| !s.starts_with("title-"))
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(sessions("steady"), 1, "shard 0's run went on undisturbed");
    assert_eq!(sessions("orphan"), 2, "the lost run was dispatched again");
    let moved = rigs_by_shard(&local, &town).await;
    assert_eq!(moved.get(&on_one), Some(&0), "{moved:?}");
    let origin = [(&first, &first_origin), (&second, &second_origin), (&third, &third_origin)]
        .into_iter()
        .find(|(r, _)| **r == on_one)
        .map(|(_, o)| o)
        .expect("its origin");
    assert!(main_files(origin).contains("orphan.txt"));
}
