//! Benchmarks of the control server with the real Kilo CLI (run by bench/container.sh, which
//! builds the release binary first). Prints one table; makes no assertions about speed.
//!
//! - control server RSS idle, and per supervised agent (the Kilo processes are not counted);
//! - start latency split into clone / worktree / spawn / ready / session, cold and warm clone;
//! - worktree creation on a repository of 20,000 files;
//! - agent memory (PSS of the Kilo processes) with AGENTS_PER_SERVER = 1 and = 8;
//! - on the 20,000-file repository, the per-step overhead of an agent (one model answer that
//!   calls a bash tool running `true`, to Kilo's next model request; median of 20 steps) and
//!   the disk its Kilo process wrote outside the checkout.
//!
//! Only loopback is used; every wait is bounded.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gastown_e2e::control_server::{start_request, ControlServer, Options};
use gastown_e2e::model_server::{marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::procs;
use serde_json::Value;

const AGENTS: usize = 8;
/// Steps of the per-step overhead run.
const STEPS: usize = 20;

/// Total PSS of every process in the given process groups.
fn groups_pss_kib(pgids: &[i32]) -> u64 {
    procs::processes()
        .iter()
        .filter(|p| pgids.contains(&p.pgrp))
        .map(|p| procs::pss_kib(p.pid))
        .sum()
}

/// The start timings the control server logged for `agent` (waits up to 5 s for the log line).
fn timings(cs: &ControlServer, agent: &str) -> Option<Value> {
    for _ in 0..50 {
        let found =
            cs.logs().iter().rev().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(
                |v| v["fields"]["message"] == "agent running" && v["fields"]["agent"] == agent,
            );
        if let Some(v) = found {
            return Some(v["fields"].clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn row(name: &str, value: String) {
    println!("| {name:<58} | {value:>22} |");
}

fn ms(v: &Value, key: &str) -> String {
    format!("{} ms", v[key].as_u64().unwrap_or(0))
}

/// An origin with `files` files in folders of 40, one commit.
fn big_origin(dir: &Path, files: usize) -> String {
    let seed = dir.join("seed");
    for i in 0..files {
        let folder = seed.join(format!("d{:03}", i / 40));
        if i % 40 == 0 {
            std::fs::create_dir_all(&folder).expect("folder");
        }
        std::fs::write(
            folder.join(format!("f{i:05}.txt")),
            format!("file {i}\n{}\n", "x".repeat(200)),
        )
        .expect("file");
    }
    let run = |args: &[&str], cwd: &Path| {
        let out = Command::new("git").args(args).current_dir(cwd).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["init", "-q", "-b", "main"], &seed);
    run(&["add", "-A"], &seed);
    run(&["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "big"], &seed);
    let bare = dir.join("big.git");
    run(
        &["clone", "-q", "--bare", seed.to_str().expect("utf8"), bare.to_str().expect("utf8")],
        dir,
    );
    format!("file://{}", bare.display())
}

async fn start_agents(cs: &ControlServer, origin: &str, n: usize, prefix: &str) -> Vec<Value> {
    let mut started = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i}");
        let req = start_request(
            &id,
            "rig-b",
            &format!("n{i}"),
            &format!("polecat/{prefix}{i}/x"),
            origin,
            &format!("go {}", marker("bench")),
        );
        let (status, body) = cs.post("/agents/start?wait=true", req).await;
        assert_eq!(status, 201, "{body}");
        started.push(body);
    }
    started
}

/// Waits until `n` first turns of the bench script reached the model (bounded); returns how
/// many did, so a row never claims agents that never got there.
async fn wait_turns(model: &ModelServer, n: usize) -> usize {
    let turns = |reqs: &[gastown_e2e::model_server::RecordedRequest]| {
        reqs.iter().filter(|r| r.script() == Some("bench")).count()
    };
    let reached = match model.wait_until(Duration::from_secs(300), |reqs| turns(reqs) >= n).await {
        Ok(reqs) => turns(&reqs),
        Err(_) => turns(&model.requests()),
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    reached
}

/// The row for a figure that could not be measured, instead of no row at all.
fn missing(name: &str, why: &str) {
    row(name, format!("not measured: {why}"));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut steps: Vec<Step> = (0..STEPS).map(|_| Step::bash("true")).collect();
    steps.push(Step::text("done"));
    let model = ModelServer::start([("bench", vec![Step::text("ok")]), ("steps", steps)])
        .await
        .expect("model server");
    let origin = Origin::new();
    println!("| {:<58} | {:>22} |", "measure", "value");
    println!("|{}|{}|", "-".repeat(60), "-".repeat(24));

    // 1 + 2 + 4a: dedicated Kilo processes.
    let cs =
        ControlServer::start(Options::default().env("GASTOWN_MODEL_BASE_URL", model.base_url()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = procs::rss_kib(cs.pid() as i32);
    row("control server RSS, idle", format!("{:.1} MiB", idle as f64 / 1024.0));
    let started = start_agents(&cs, &origin.url(), AGENTS, "a").await;
    let reached = wait_turns(&model, AGENTS).await;
    if reached < AGENTS {
        row(
            "agents that never reached the model (of the RSS rows below)",
            format!("{} of {AGENTS}", AGENTS - reached),
        );
    }
    let busy = procs::rss_kib(cs.pid() as i32);
    row(
        &format!("control server RSS with {reached} agents at the model"),
        format!("{:.1} MiB", busy as f64 / 1024.0),
    );
    row(
        "control server RSS per supervised agent",
        format!("{:.0} KiB", busy.saturating_sub(idle) as f64 / AGENTS as f64),
    );
    match timings(&cs, "a0") {
        Some(t) => row("start, cold clone: clone", ms(&t, "clone_ms")),
        None => missing("start, cold clone: clone", "no 'agent running' log line for a0"),
    }
    let mut warm: Vec<Value> = (1..AGENTS).filter_map(|i| timings(&cs, &format!("a{i}"))).collect();
    warm.sort_by_key(|t| t["total_ms"].as_u64().unwrap_or(0));
    match warm.get(warm.len() / 2) {
        Some(t) => {
            for (k, label) in [
                ("clone_ms", "fetch"),
                ("worktree_ms", "worktree"),
                ("spawn_ms", "spawn"),
                ("ready_ms", "ready (kilo healthy)"),
                ("session_ms", "session + first prompt"),
                ("total_ms", "total"),
            ] {
                row(&format!("start, warm clone (median of {}): {label}", warm.len()), ms(t, k));
            }
        }
        None => missing("start, warm clone", "no agent but the first logged its start"),
    }
    let pgids: Vec<i32> =
        started.iter().filter_map(|s| s["pid"].as_i64()).map(|p| p as i32).collect();
    let pss = groups_pss_kib(&pgids);
    row(
        &format!("Kilo PSS, AGENTS_PER_SERVER=1, {AGENTS} agents, total"),
        format!("{:.0} MiB", pss as f64 / 1024.0),
    );
    row(
        "Kilo PSS, AGENTS_PER_SERVER=1, per agent",
        format!("{:.0} MiB", pss as f64 / 1024.0 / AGENTS as f64),
    );
    drop(cs);

    // 4b: one shared Kilo process for all agents.
    let cs = ControlServer::start(
        Options::default()
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("AGENTS_PER_SERVER", AGENTS.to_string()),
    );
    let before = model.requests().iter().filter(|r| r.script() == Some("bench")).count();
    let started = start_agents(&cs, &origin.url(), AGENTS, "s").await;
    let reached = wait_turns(&model, before + AGENTS).await - before;
    if reached < AGENTS {
        row(
            "shared process: agents that never reached the model",
            format!("{} of {AGENTS}", AGENTS - reached),
        );
    }
    let mut pgids: Vec<i32> =
        started.iter().filter_map(|s| s["pid"].as_i64()).map(|p| p as i32).collect();
    pgids.dedup();
    let pss = groups_pss_kib(&pgids);
    row(
        &format!("Kilo PSS, AGENTS_PER_SERVER={AGENTS}, {AGENTS} agents, total"),
        format!("{:.0} MiB ({} process)", pss as f64 / 1024.0, pgids.len()),
    );
    row(
        &format!("Kilo PSS, AGENTS_PER_SERVER={AGENTS}, per agent"),
        format!("{:.0} MiB", pss as f64 / 1024.0 / AGENTS as f64),
    );
    drop(cs);

    // 3: worktree creation on 20,000 files (clone first, then a second agent on a warm clone).
    let dir = tempfile::tempdir().expect("tempdir");
    let url = big_origin(dir.path(), 20_000);
    let cs =
        ControlServer::start(Options::default().env("GASTOWN_MODEL_BASE_URL", model.base_url()));
    start_agents(&cs, &url, 2, "w").await;
    for (id, label) in [("w0", "cold clone"), ("w1", "warm clone")] {
        match timings(&cs, id) {
            Some(t) => {
                row(&format!("20,000 files, {label}: clone or fetch"), ms(&t, "clone_ms"));
                row(&format!("20,000 files, {label}: worktree"), ms(&t, "worktree_ms"));
            }
            None => missing(
                &format!("20,000 files, {label}"),
                &format!("no 'agent running' log line for {id}"),
            ),
        }
    }

    // 5: steps of an agent at work in the 20,000-file checkout, and what it wrote elsewhere.
    let req = start_request(
        "p0",
        "rig-b",
        "steps",
        "polecat/p0/x",
        &url,
        &format!("go {}", marker("steps")),
    );
    let (status, body) = cs.post("/agents/start?wait=true", req).await;
    assert_eq!(status, 201, "{body}");
    let turns = |reqs: &[gastown_e2e::model_server::RecordedRequest]| {
        reqs.iter()
            .filter(|r| r.script() == Some("steps"))
            .map(|r| r.received_at)
            .collect::<Vec<_>>()
    };
    let at: Vec<std::time::Instant> =
        match model.wait_until(Duration::from_secs(300), |r| turns(r).len() > STEPS).await {
            Ok(reqs) => turns(&reqs),
            Err(_) => turns(&model.requests()),
        };
    let mut gaps: Vec<u64> =
        at.windows(2).map(|w| w[1].duration_since(w[0]).as_millis() as u64).collect();
    gaps.sort();
    match gaps.get(gaps.len() / 2) {
        Some(median) => row(
            &format!("20,000 files, per step (median of {}): answer -> next request", gaps.len()),
            format!("{median} ms"),
        ),
        None => missing("20,000 files, per step", "the agent made fewer than 2 model requests"),
    }
    match body["pid"].as_i64().and_then(|pid| private_folders(pid as i32)) {
        Some((data, all, largest)) => {
            row("20,000 files, Kilo's data (sessions) after the steps", kib(data));
            row("20,000 files, the Kilo process's private folder in all", kib(all));
            for (name, size) in largest {
                row(&format!("20,000 files, of Kilo's data: {name}"), kib(size));
            }
        }
        None => {
            missing("20,000 files, disk outside the checkout", "no XDG_DATA_HOME in the process")
        }
    }
    drop(cs);
}

fn kib(k: u64) -> String {
    if k >= 1024 {
        format!("{:.1} MiB", k as f64 / 1024.0)
    } else {
        format!("{k} KiB")
    }
}

/// Disk used (KiB) by the Kilo process's data folder and by its whole private folder (the
/// parent of its XDG folders: HOME, TMPDIR, config, data, state, cache), read from its
/// environment, and the data folder's three largest files.
fn private_folders(pid: i32) -> Option<(u64, u64, Vec<FileSize>)> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let data = environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("XDG_DATA_HOME="))
        .map(std::path::PathBuf::from)?;
    let private = data.parent()?.parent()?.to_path_buf();
    let mut files = Vec::new();
    list_files(&data, &data, &mut files);
    files.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    files.truncate(3);
    Some((du_kib(&data)?, du_kib(&private)?, files))
}

/// A file's path and its size in KiB.
type FileSize = (String, u64);

/// Every file under `dir` (bounded depth), as its path under `root` and its size.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<FileSize>) {
    let depth = dir.strip_prefix(root).map(|p| p.components().count()).unwrap_or(0);
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && depth < 6 {
            list_files(root, &entry.path(), out);
        } else if meta.is_file() {
            let name = entry.path().strip_prefix(root).map(|p| p.display().to_string());
            out.push((name.unwrap_or_default(), meta.len() / 1024));
        }
    }
}

fn du_kib(path: &Path) -> Option<u64> {
    let out = Command::new("du").arg("-sk").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next()?.parse().ok()
}
