//! The mayor, everything real but the LLM (`wrangler dev` with the built Worker, the native
//! control server, the real Kilo CLI, real git, a local origin): one town, in order:
//! 1. A person asks the mayor for three files: it lists the rigs, gets a clear tool error for an
//!    unknown rig and for a sling past its per-turn limit (nothing created), creates a convoy of
//!    three, and says so. The polecats work the beads, the refinery merges them, the convoy
//!    lands, the mayor is told and reports to the person.
//! 2. A polecat escalates; the mayor hears of it and answers with `gt_escalation_resolve`; the
//!    answer reaches the polecat as mail, which it reads, then finishes its bead.
//! 3. A polecat's token on the mayor's tools is a 403 and changes nothing; a bad message is a
//!    400 and changes nothing.
//! 4. The control server is killed and started again; the next message waits while the town's
//!    spending cap holds the mayor's start, then (cap lifted, from the TownDO's alarm) resumes
//!    the mayor in a new Kilo session with its thread, and it answers.

use std::time::Duration;

use gastown_e2e::model_server::{
    commit_then_done, marker, ModelServer, Step, ESCALATION_PLACEHOLDER,
};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until;
use gastown_e2e::wrangler::{now_secs, sign_jwt, Auth, WranglerDev, JWT_SECRET};
use reqwest::Method;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(300);

async fn transcript(dev: &WranglerDev, town: &str) -> Vec<Value> {
    let r = dev.get(&format!("/api/towns/{town}/mayor/messages?limit=500")).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.data().as_array().cloned().unwrap_or_default()
}

/// Waits for a reply of the mayor that contains `text`.
async fn reply(dev: &WranglerDev, town: &str, text: &str) -> Value {
    until(&format!("the mayor's reply \"{text}\""), WORK, async || {
        transcript(dev, town)
            .await
            .into_iter()
            .find(|m| m["role"] == "mayor" && m["text"].as_str().is_some_and(|t| t.contains(text)))
    })
    .await
}

async fn beads(dev: &WranglerDev, rig: &str, query: &str) -> Vec<Value> {
    dev.get(&format!("/api/rigs/{rig}/beads?{query}"))
        .await
        .data()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn on_main(origin: &Origin, file: &str) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(&origin.path)
        .args(["cat-file", "-e", &format!("main:{file}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mayor_plans_and_slings_answers_escalations_and_resumes_its_thread() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let worker_env = [
        ("SCHEDULER_TICK_MS", "1000"),
        ("MAYOR_MAX_BEADS_PER_TURN", "3"),
        ("SCHEDULER_NUDGE_EVERY_MS", "2000"),
    ];
    let mut local = LocalTown::start(&model, &[("STOP_GRACE_MS", "3000")], &worker_env).await;
    let origin = Origin::new();
    let (town, rig) = local.town_and_rig("mayoral", &origin.url()).await;
    let dev = &local.worker;

    // The polecats' runs, and the mayor's: its first session (three turns), then the session
    // it is resumed in after the restart.
    for (script, file) in [("mayor-a", "a.txt"), ("mayor-b", "b.txt"), ("mayor-c", "c.txt")] {
        model.set_script(script, commit_then_done(file, script));
    }
    let spec = |file: &str, script: &str| json!({ "title": format!("add {file}"), "body": format!("Create {file}. {}", marker(script)) });
    let convoy_beads =
        json!([spec("a.txt", "mayor-a"), spec("b.txt", "mayor-b"), spec("c.txt", "mayor-c")])
            .to_string();
    let first_session = vec![
        Step::tool("gt_list_rigs", json!({})),
        Step::tool(
            "gt_sling",
            json!({ "rig_id": "no-such-rig", "title": "lost", "body": "", "priority": "" }),
        ),
        Step::tool(
            "gt_convoy_create",
            json!({ "rig_id": rig, "title": "three files", "beads": convoy_beads }),
        ),
        Step::tool(
            "gt_sling",
            json!({ "rig_id": rig, "title": "one too many", "body": "", "priority": "" }),
        ),
        Step::text("Slung a convoy of three beads on app."),
        Step::tool("gt_town_status", json!({})),
        Step::text("Report: the convoy landed; a.txt, b.txt and c.txt are on main."),
        Step::tool(
            "gt_escalation_resolve",
            json!({ "rig_id": rig, "escalation_id": ESCALATION_PLACEHOLDER, "answer": "Use the word hello." }),
        ),
        Step::text("Answered the escalation: hello."),
    ];
    let resumed = vec![
        Step::text("Resumed with my thread: three files landed, one escalation answered."),
        Step::text("Answer to A.").delayed(Duration::from_secs(4)),
        Step::text("Answer to B."),
    ];
    model.set_runs("mayor-main", vec![first_session, resumed]);

    // 1. A request becomes a convoy; its landing is reported.
    let sent = dev
        .post(
            &format!("/api/towns/{town}/mayor/messages"),
            json!({ "message": format!("{} Add three files to rig app.", marker("mayor-main")) }),
        )
        .await;
    assert_eq!(sent.status, 202, "{sent:?}");
    assert_eq!(
        (sent.data()["agentId"].as_str(), sent.data()["sessionStatus"].as_str()),
        (Some("mayor"), Some("starting")),
        "{sent:?}"
    );
    let answer = reply(dev, &town, "Slung a convoy of three").await;
    assert_eq!(
        answer["inReplyTo"],
        sent.data()["messageId"],
        "the reply names the message it answers: {answer}"
    );
    let slung = beads(dev, &rig, "type=issue").await;
    assert_eq!(slung.len(), 3, "the convoy's three beads and nothing else: {slung:?}");
    let mayor_turns = model.requests_for("mayor-main");
    let results = mayor_turns.iter().flat_map(|r| r.tool_results()).collect::<Vec<_>>().join("\n");
    assert!(
        results.contains("Rig not found in this town"),
        "an unknown rig is a clear tool error: {results}"
    );
    assert!(
        results.contains("at most 3 beads per turn"),
        "the turn's limit is a clear tool error: {results}"
    );
    let tools = mayor_turns[0].tool_names();
    assert!(
        tools.iter().any(|t| t == "gt_convoy_create") && !tools.iter().any(|t| t == "gt_done"),
        "the mayor's own tools: {tools:?}"
    );

    let convoy = until("the convoy to land", WORK, async || {
        let all = dev
            .get(&format!("/api/rigs/{rig}/convoys"))
            .await
            .data()
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.into_iter().find(|c| c["status"] == "landed")
    })
    .await;
    assert_eq!(convoy["title"], "three files");
    assert!(
        ["a.txt", "b.txt", "c.txt"].iter().all(|f| on_main(&origin, f)),
        "the three files are merged on main"
    );
    reply(dev, &town, "Report: the convoy landed").await;
    let status = model
        .requests_for("mayor-main")
        .iter()
        .flat_map(|r| r.tool_results())
        .find(|t| t.contains("beads_by_status"))
        .expect("gt_town_status answered");
    assert!(
        status.contains("\"closed\": 3") && status.contains("\"app\""),
        "the town's status, per rig: {status}"
    );
    let told = transcript(dev, &town).await;
    assert!(
        told.iter().any(
            |m| m["role"] == "town" && m["text"].as_str().is_some_and(|t| t.contains("landed"))
        ),
        "{told:?}"
    );
    let polecat_tools = model.requests_for("mayor-a")[0].tool_names();
    assert!(
        polecat_tools.iter().any(|t| t == "gt_done")
            && !polecat_tools.iter().any(|t| t == "gt_sling"),
        "no polecat gets the mayor's tools: {polecat_tools:?}"
    );

    // 2. An escalation's round trip: polecat -> mayor -> the polecat's mail.
    let mut asking = vec![
        Step::tool(
            "gt_escalate",
            json!({ "title": "Which greeting?", "body": "hello or hi?", "priority": "", "metadata": "" }),
        ),
        Step::text("Waiting for an answer."),
        Step::tool("gt_mail_check", json!({})),
    ];
    asking.extend(commit_then_done("greeting.txt", "hello"));
    model.set_script("mayor-esc", asking);
    // From here one dispatch an hour (the ledger counts starts made under a cap): this polecat's.
    let capped = dev
        .call(
            Method::PUT,
            &format!("/api/towns/{town}/limits"),
            &Auth::Internal,
            json!({ "max_concurrent_agents": null, "max_dispatches_per_hour": 1 }),
        )
        .await;
    assert_eq!(capped.status, 200, "{capped:?}");
    let s = dev.post(&format!("/api/rigs/{rig}/sling"), json!({ "title": "write a greeting", "body": format!("Write greeting.txt. {}", marker("mayor-esc")) })).await;
    assert_eq!(s.status, 201, "{s:?}");
    let (bead, polecat) = (
        s.data()["bead"]["id"].as_str().expect("bead").to_string(),
        s.data()["agent"]["id"].as_str().expect("agent").to_string(),
    );
    reply(dev, &town, "Answered the escalation").await;
    until("the polecat to read the mayor's answer in its mail", WORK, async || {
        model
            .requests_for("mayor-esc")
            .iter()
            .any(|r| r.tool_results().iter().any(|t| t.contains("Use the word hello.")))
            .then_some(())
    })
    .await;
    let escalation = beads(dev, &rig, "type=escalation").await;
    assert_eq!(escalation.len(), 1, "{escalation:?}");
    assert_eq!(
        (escalation[0]["status"].as_str(), escalation[0]["metadata"]["from_agent_id"].as_str()),
        (Some("closed"), Some(polecat.as_str()))
    );
    assert_eq!(
        dev.settled_bead(&rig, &bead, WORK).await["status"],
        "closed",
        "the polecat went on and finished"
    );

    // 3. A polecat's token opens none of the mayor's tools; bad input changes nothing.
    let now = now_secs();
    let token = sign_jwt(
        &json!({ "alg": "HS256", "typ": "JWT" }),
        &json!({ "agentId": polecat, "rigId": rig, "townId": town, "userId": "u", "iat": now, "exp": now + 600 }),
        JWT_SECRET,
    );
    let before = beads(dev, &rig, "").await.len();
    for (method, tool, body) in [
        (Method::POST, "sling", json!({ "rig_id": rig, "title": "sneaky" })),
        (Method::GET, "rigs", Value::Null),
    ] {
        let r = dev
            .call(
                method,
                &format!("/api/mayor/{town}/tools/{tool}"),
                &Auth::Bearer(token.clone()),
                body,
            )
            .await;
        assert_eq!(
            (r.status, r.error()),
            (403, "Forbidden: the mayor's tools need the mayor's token"),
            "{tool}: {r:?}"
        );
    }
    assert_eq!(beads(dev, &rig, "").await.len(), before, "a refused call creates nothing");
    // The mayor's own token (as the scheduler signs it) mails a polecat; another town's is refused.
    let mayor_token = |town: &str| {
        sign_jwt(
            &json!({ "alg": "HS256", "typ": "JWT" }),
            &json!({ "agentId": "mayor", "rigId": "", "townId": town, "userId": "u", "iat": now, "exp": now + 600, "role": "mayor" }),
            JWT_SECRET,
        )
    };
    let mail = json!({ "rig_id": rig, "to_agent_id": polecat, "subject": "thanks", "body": "Nice greeting." });
    let r = dev
        .call(
            Method::POST,
            &format!("/api/mayor/{town}/tools/mail"),
            &Auth::Bearer(mayor_token(&town)),
            mail.clone(),
        )
        .await;
    assert_eq!((r.status, r.data()), (200, &json!({ "sent": true })), "{r:?}");
    let inbox = dev.get(&format!("/api/rigs/{rig}/agents/{polecat}/mail")).await;
    assert!(
        inbox.data().as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["from_agent_id"] == "mayor" && m["subject"] == "thanks")),
        "{inbox:?}"
    );
    let r = dev
        .call(
            Method::POST,
            &format!("/api/mayor/{town}/tools/mail"),
            &Auth::Bearer(mayor_token("another-town")),
            mail,
        )
        .await;
    assert_eq!((r.status, r.error()), (403, "Token townId does not match route"), "{r:?}");
    // A retried sling (same Idempotency-Key, its first answer lost) is done once.
    let bearer = format!("Bearer {}", mayor_token(&town));
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "mayor-retry-0001")];
    let once = dev
        .call_headers(
            Method::POST,
            &format!("/api/mayor/{town}/tools/sling"),
            &headers,
            json!({ "rig_id": rig, "title": "slung once" }),
        )
        .await;
    let again = dev
        .call_headers(
            Method::POST,
            &format!("/api/mayor/{town}/tools/sling"),
            &headers,
            json!({ "rig_id": rig, "title": "slung once" }),
        )
        .await;
    assert_eq!((once.status, again.status), (201, 201), "{once:?} {again:?}");
    assert_eq!(
        once.data()["bead"]["id"],
        again.data()["bead"]["id"],
        "the retry gets the first answer"
    );
    assert_eq!(
        beads(dev, &rig, "type=issue").await.iter().filter(|b| b["title"] == "slung once").count(),
        1,
        "one bead"
    );

    let count = transcript(dev, &town).await.len();
    for bad in [json!({ "message": "" }), json!({ "message": 7 }), json!({})] {
        let r = dev.post(&format!("/api/towns/{town}/mayor/messages"), bad.clone()).await;
        assert_eq!((r.status, r.error()), (400, "Invalid request body"), "{bad}: {r:?}");
    }
    assert_eq!(transcript(dev, &town).await.len(), count, "bad messages are not kept");

    // 4. After a restart of the control server the mayor resumes with its thread.
    local.control.kill_all();
    local.control.restart();
    let dev = &local.worker;
    // The town's spending cap (one dispatch an hour, taken by the escalating polecat) holds
    // the mayor's start like any other: the message waits.
    let limits = format!("/api/towns/{town}/limits");
    let sent = dev
        .post(
            &format!("/api/towns/{town}/mayor/messages"),
            json!({ "message": "Where do things stand?" }),
        )
        .await;
    assert_eq!(sent.status, 202, "{sent:?}");
    assert_eq!(sent.data()["sessionStatus"], "queued", "{sent:?}");
    assert!(
        sent.data()["detail"].as_str().is_some_and(|d| d.contains("max_dispatches_per_hour")),
        "the cap is named: {sent:?}"
    );
    let lifted = dev
        .call(
            Method::PUT,
            &limits,
            &Auth::Internal,
            json!({ "max_concurrent_agents": null, "max_dispatches_per_hour": null }),
        )
        .await;
    assert_eq!(lifted.status, 200, "{lifted:?}");
    // The TownDO's alarm delivers it once the cap is lifted.
    reply(dev, &town, "Resumed with my thread").await;
    let resumed_turn = model
        .requests_for("mayor-main")
        .into_iter()
        .find(|r| r.user_texts().join("\n").contains("Where do things stand?"))
        .expect("the resumed mayor's turn");
    let seen = resumed_turn.user_texts().join("\n");
    for earlier in [
        "resuming",
        "Add three files to rig app.",
        "Report: the convoy landed",
        "Answered the escalation: hello.",
    ] {
        assert!(seen.contains(earlier), "the resumed mayor is given \"{earlier}\": {seen}");
    }
    let status = dev.get(&format!("/api/towns/{town}/mayor")).await;
    assert_eq!(status.data()["runs"], 2, "{status:?}");

    // A message sent while the mayor is in the middle of a turn is not lost: it reaches the
    // model and is answered.
    let a = dev
        .post(&format!("/api/towns/{town}/mayor/messages"), json!({ "message": "Question A?" }))
        .await;
    assert_eq!((a.status, a.data()["sessionStatus"].as_str()), (202, Some("active")), "{a:?}");
    model
        .wait_until(Duration::from_secs(60), |reqs| {
            reqs.iter().any(|r| r.user_texts().join("\n").contains("Question A?"))
        })
        .await
        .expect("A reached the model");
    let b = dev
        .post(&format!("/api/towns/{town}/mayor/messages"), json!({ "message": "Question B?" }))
        .await;
    assert_eq!(b.status, 202, "{b:?}");
    let answer = reply(dev, &town, "Answer to B.").await;
    assert!(answer["inReplyTo"].as_i64() >= b.data()["messageId"].as_i64(), "{answer}");
    assert!(
        model
            .requests_for("mayor-main")
            .iter()
            .any(|r| r.user_texts().join("\n").contains("Question B?")),
        "B reached the model"
    );
    let after_b = transcript(dev, &town).await;
    assert!(
        after_b.iter().any(|m| m["role"] == "mayor"
            && m["text"].as_str().is_some_and(|t| t.contains("Answer to A."))),
        "{after_b:?}"
    );
}
