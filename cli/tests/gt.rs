//! `gt` against a whole local town (the built Worker under `wrangler dev`, the native control
//! server, the Kilo CLI, git, a local origin; only the LLM is scripted): a person creates a
//! town and a rig, slings a bead, reads the status table, watches the agent work to the end of
//! its run, reads what it cost (and a daily budget holds the next bead back until raised),
//! reads and sends mail, lists escalations, talks with the town's mayor; and bad
//! settings or input get a message on stderr and the documented exit code.

use std::process::Output;
use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until;
use gastown_e2e::wrangler::INTERNAL_KEY;
use serde_json::Value;

fn gt(url: &str, key: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gt"))
        .args(args)
        .env("GASTOWN_URL", url)
        .env("GASTOWN_KEY", key)
        .output()
        .expect("run gt")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "gt failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_runs_a_town_with_gt() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let local = LocalTown::start(&model, &[], &[("SCHEDULER_TICK_MS", "1000")]).await;
    let url = local.worker.base_url.clone();
    let run = |args: &[&str]| gt(&url, INTERNAL_KEY, args);

    let town = ok(run(&["town", "create", "demo"]));
    let origin = Origin::new();
    let rig = ok(run(&["rig", "add", &town, "app", &origin.url()]));
    let shown = ok(run(&["town", "show", &town]));
    assert!(
        shown.contains("town demo") && shown.contains(&rig) && shown.contains("RIG"),
        "{shown}"
    );

    model.set_script("gt", commit_then_done("gt.txt", "from-gt"));
    let slung = ok(run(&["sling", &rig, "Write gt.txt", "--body", &marker("gt")]));
    assert!(slung.starts_with("bead ") && slung.contains("hooked to"), "{slung}");
    let bead = slung.split_whitespace().nth(1).expect("bead id").to_string();

    // The status table: the bead under its status, the polecat that has it.
    let status: Value =
        serde_json::from_str(&ok(run(&["--json", "status", &rig]))).expect("--json is JSON");
    let agent = status["agents"][0]["id"].as_str().expect("agent id").to_string();
    let table = ok(run(&["status", &rig]));
    assert!(
        table.lines().next().is_some_and(|h| h.starts_with("STATUS"))
            && table.contains(&bead)
            && table.contains(&agent),
        "{table}"
    );

    // Watching the agent follows its live stream to the end of the run: its tool calls, then
    // its exit.
    let watched = ok(run(&["watch", &town, &agent, "--for", "240"]));
    assert!(watched.contains("tool_call") && watched.contains("bash"), "{watched}");
    assert!(
        watched.lines().last().is_some_and(|l| l.contains("status") && l.contains("exited")),
        "{watched}"
    );
    // The events the Worker kept tell the same story (they arrive every 2 s).
    let kept = until("the kept events of the run", Duration::from_secs(60), async || {
        let k = ok(run(&["watch", &town, &agent, "--once"]));
        k.lines().any(|l| l.contains("status") && l.contains("exited")).then_some(k)
    })
    .await;
    assert!(kept.contains("tool_call") && kept.contains("bash"), "{kept}");
    let closed = until("the bead to close", Duration::from_secs(240), async || {
        let t = ok(run(&["status", &rig]));
        t.lines().any(|l| l.starts_with("closed") && l.contains(&bead)).then_some(t)
    })
    .await;
    // Its review entry: merged, on the polecat's branch.
    assert!(
        closed
            .lines()
            .any(|l| l.starts_with("merged") && l.contains(&bead) && l.contains("polecat/")),
        "{closed}"
    );

    // Where the rig runs: the town's first shard.
    let status = ok(run(&["status", &rig]));
    assert!(
        status
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("rig {rig} on shard 0 of town {town}"))),
        "{status}"
    );
    // The town's shards: its one rig on shard 0, which reported its load.
    let shown = ok(run(&["town", "show", &town]));
    assert!(
        shown.lines().any(|l| l.starts_with(&rig) && l.trim_end().ends_with('0'))
            && shown.lines().any(|l| l.starts_with("SHARD"))
            && shown.lines().any(|l| l.starts_with("0 ") && l.trim_end().ends_with("ok")),
        "{shown}"
    );

    // What the run cost: every model call the agent made, counted once, to its bead. The
    // scripted model reports 10 prompt and 5 completion tokens per answer, and no price.
    let calls = model.requests_for("gt").len() as u64;
    let usage = until("the run's usage", Duration::from_secs(60), async || {
        let u: Value = serde_json::from_str(&ok(run(&["--json", "costs", &town, "--by", "bead"])))
            .expect("--json is JSON");
        (u["total"]["calls"] == calls).then_some(u)
    })
    .await;
    assert_eq!(usage["total"]["input_tokens"], 10 * calls, "{usage}");
    assert_eq!(usage["total"]["output_tokens"], 5 * calls, "{usage}");
    assert_eq!(usage["total"]["cost_usd"], Value::Null, "no price: unknown, not 0: {usage}");
    assert_eq!(usage["groups"][0]["key"], bead.as_str(), "{usage}");
    let costs = ok(run(&["costs", &town, "--by", "model"]));
    assert!(
        costs.lines().next().is_some_and(|h| h.starts_with("MODEL"))
            && costs.lines().any(|l| l.starts_with("TOTAL") && l.contains("unknown")),
        "{costs}"
    );
    let bad = gt(&url, INTERNAL_KEY, &["costs", &town, "--by", "week"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("group_by: unknown value"), "{bad:?}");

    // The town prices the scripted model from now on: $0.05 per input and $0.10 per output
    // token, so each of its calls costs $1.
    let by_model: Value =
        serde_json::from_str(&ok(run(&["--json", "costs", &town, "--by", "model"]))).expect("JSON");
    let model_name = by_model["groups"][0]["key"].as_str().expect("the model's name").to_string();
    let prices = format!("/api/towns/{town}/usage/prices");
    let priced = local
        .worker
        .put(
            &prices,
            serde_json::json!({"prices": {&model_name: {"input": 50000.0, "output": 100000.0}}}),
        )
        .await;
    assert_eq!(priced.status, 200, "{priced:?}");
    let refused = local
        .worker
        .put(&prices, serde_json::json!({"prices": {&model_name: {"input": -1.0, "output": 1.0}}}))
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(local.worker.get(&prices).await.data()["prices"][&model_name]["input"], 50000.0);

    // A daily token budget the day's use already reached holds the next bead back, queued with
    // the budget named; a bad budget changes nothing; raising it lets the bead go on.
    let limits = format!("/api/towns/{town}/limits");
    let dev = &local.worker;
    assert_eq!(dev.put(&limits, serde_json::json!({"max_tokens_per_day": 10})).await.status, 200);
    for bad in [
        serde_json::json!({"max_tokens_per_day": -5}),
        serde_json::json!({"max_cost_usd_per_day": "lots"}),
    ] {
        let refused = dev.put(&limits, bad).await;
        assert_eq!(refused.status, 400, "{refused:?}");
    }
    assert_eq!(dev.get(&limits).await.data()["max_tokens_per_day"], 10, "nothing changed");
    model.set_script("gt-budget", commit_then_done("budget.txt", "later"));
    let held = ok(run(&["sling", &rig, "Write budget.txt", "--body", &marker("gt-budget")]));
    let held = held.split_whitespace().nth(1).expect("bead id").to_string();
    until("the bead to wait for the budget", Duration::from_secs(60), async || {
        let events = dev.get(&format!("/api/rigs/{rig}/beads/{held}/events?limit=100")).await;
        let reasons: Vec<String> = events
            .data()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|e| e["kind"] == "queued")
            .filter_map(|e| e["data"]["reason"].as_str().map(str::to_string))
            .collect();
        reasons.iter().any(|r| r.contains("max_tokens_per_day")).then_some(())
    })
    .await;
    assert!(model.requests_for("gt-budget").is_empty(), "no model call while held");
    assert_eq!(
        dev.put(&limits, serde_json::json!({"max_tokens_per_day": 1_000_000})).await.status,
        200
    );
    until("the held bead to close", Duration::from_secs(240), async || {
        (dev.bead(&rig, &held).await["status"] == "closed").then_some(())
    })
    .await;
    let held_calls = model.requests_for("gt-budget").len() as u64;
    let priced = until("the held bead's priced usage", Duration::from_secs(60), async || {
        let u: Value = serde_json::from_str(&ok(run(&["--json", "costs", &town, "--by", "bead"])))
            .expect("--json is JSON");
        let group = u["groups"].as_array()?.iter().find(|g| g["key"] == held.as_str())?.clone();
        (group["calls"] == held_calls).then_some((group, u["total"].clone()))
    })
    .await;
    assert_eq!(priced.0["cost_usd"], serde_json::json!(held_calls as f64), "{priced:?}");
    assert_eq!(
        priced.1["cost_usd"],
        Value::Null,
        "the first bead's cost stays unknown: {priced:?}"
    );
    assert_eq!(priced.1["cost_usd_known"], serde_json::json!(held_calls as f64), "{priced:?}");

    // Mail: sent as the polecat to itself, listed without being delivered.
    ok(run(&[
        "mail",
        "send",
        &rig,
        "--from",
        &agent,
        "--to",
        &agent,
        "--subject",
        "hello from gt",
        "--body",
        "b",
    ]));
    let mail = ok(run(&["mail", "list", &rig, &agent]));
    assert!(mail.contains("hello from gt"), "{mail}");
    assert!(
        ok(run(&["mail", "list", &rig, &agent])).contains("hello from gt"),
        "listing does not deliver it"
    );
    let escalations = ok(run(&["escalations", &town]));
    assert!(escalations.starts_with("RIG"), "{escalations}");

    // The mayor, in a town of its own on the same Worker and control server (its conversation
    // then starts with the marker): a message and the reply, printed exactly; a message sent
    // without waiting; a wait that ends before the reply; the conversation.
    let mayor_town = ok(run(&["town", "create", "mayor-town"]));
    model.set_script(
        "gt-mayor",
        vec![
            Step::text("Hello from the mayor"),
            Step::text("The plan: one bead at a time."),
            Step::text("Sorry, I was slow.").delayed(Duration::from_secs(20)),
        ],
    );
    let hello = format!("{} hello", marker("gt-mayor"));
    assert_eq!(ok(run(&["mayor", &mayor_town, &hello])), "Hello from the mayor");
    let sent: Value = serde_json::from_str(&ok(run(&[
        "--json",
        "mayor",
        &mayor_town,
        "What is the plan?",
        "--wait",
        "0",
    ])))
    .expect("--json is JSON");
    assert!(sent["messageId"].as_i64().is_some_and(|id| id > 1), "{sent}");
    assert!(
        matches!(sent["sessionStatus"].as_str(), Some("active" | "starting" | "queued")),
        "{sent}"
    );
    let roles = async |n: usize| {
        until("the mayor's reply in the conversation", Duration::from_secs(120), async || {
            let h: Value =
                serde_json::from_str(&ok(run(&["--json", "mayor", &mayor_town, "--history"])))
                    .expect("--json is JSON");
            let h = h.as_array().cloned().unwrap_or_default();
            (h.len() >= n).then_some(h)
        })
        .await
    };
    let h = roles(4).await;
    assert_eq!(h[3]["role"], "mayor", "{h:?}");
    assert_eq!(h[3]["text"], "The plan: one bead at a time.", "{h:?}");
    // Nothing blank is sent.
    let blank = run(&["mayor", &mayor_town, "  \n "]);
    assert_eq!(blank.status.code(), Some(2), "{}", String::from_utf8_lossy(&blank.stderr));
    assert!(String::from_utf8_lossy(&blank.stderr).contains("empty") && blank.stdout.is_empty());
    // The third turn takes 20 s: a 3 s wait ends without it (exit 1, what to do next on stderr).
    let started = std::time::Instant::now();
    let slow = run(&["mayor", &mayor_town, "Are you still there?", "--wait", "3"]);
    let err = String::from_utf8_lossy(&slow.stderr);
    assert_eq!(slow.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no reply from the mayor within 3 s")
            && err.contains("--history")
            && slow.stdout.is_empty(),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the wait is bounded by --wait: {:?}",
        started.elapsed()
    );
    let h = roles(6).await;
    let got: Vec<(&str, &str)> = h
        .iter()
        .map(|m| (m["role"].as_str().unwrap_or(""), m["text"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        [
            ("person", hello.as_str()),
            ("mayor", "Hello from the mayor"),
            ("person", "What is the plan?"),
            ("mayor", "The plan: one bead at a time."),
            ("person", "Are you still there?"),
            ("mayor", "Sorry, I was slow.")
        ],
        "oldest first, the blank message never sent"
    );
    assert!(h.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()), "{h:?}");
    let transcript = ok(run(&["mayor", &mayor_town, "--history"]));
    assert!(
        transcript.starts_with("#")
            && transcript.contains("  person\nWhat is the plan?")
            && transcript.ends_with("mayor\nSorry, I was slow."),
        "{transcript}"
    );

    // Bad settings and input: a message on stderr, the documented exit code, stdout empty.
    for (args, key, url, code, says) in [
        (vec!["status", &rig], "wrong-key", url.as_str(), 1, "401"),
        (vec!["status", "no-such-rig"], INTERNAL_KEY, url.as_str(), 1, "404"),
        (vec!["status", "a/b"], INTERNAL_KEY, url.as_str(), 2, "rig must be an id"),
        (vec!["sling", &rig], INTERNAL_KEY, url.as_str(), 2, "TITLE"),
        (vec!["sling", "no-such-rig", "x"], INTERNAL_KEY, url.as_str(), 1, "404: Rig not found"),
        (
            vec!["sling", &rig, "x", "--priority", "bogus"],
            INTERNAL_KEY,
            url.as_str(),
            1,
            "priority: ",
        ),
        (vec!["status", &rig], "", url.as_str(), 2, "GASTOWN_KEY"),
        (vec!["status", &rig], INTERNAL_KEY, "http://127.0.0.1:9", 3, "cannot reach"),
        (vec!["watch", &town, "nobody-here", "--wait", "2"], INTERNAL_KEY, url.as_str(), 1, "404"),
        (vec!["mayor", "no-such-town", "hello"], INTERNAL_KEY, url.as_str(), 1, "404"),
        (vec!["mayor", "a/b", "hello"], INTERNAL_KEY, url.as_str(), 2, "town must be an id"),
        (vec!["mayor", &town, ""], INTERNAL_KEY, url.as_str(), 2, "empty"),
        (vec!["mayor", &town], INTERNAL_KEY, url.as_str(), 2, "MESSAGE"),
    ] {
        let o = gt(url, key, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&o.stdout));
    }
}
