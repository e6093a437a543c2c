//! Bad input to the real control server: every case is a 4xx with a JSON message, and none of
//! them leaves a process, a clone or a folder behind.

use gastown_e2e::control_server::{start_request, ControlServer, Options};
use reqwest::Method;
use serde_json::{json, Value};

fn valid() -> Value {
    start_request("a1", "rig-1", "toast", "polecat/toast/1", "https://github.com/o/r.git", "do it")
}

fn with(field: &str, value: Value) -> Value {
    let mut v = valid();
    v[field] = value;
    v
}

async fn raw(
    cs: &ControlServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let mut r = cs.raw(method, path);
    if let Some(t) = token {
        r = r.header("x-container-token", t);
    }
    if let Some((ct, b)) = body {
        r = r.header("content-type", ct).body(b);
    }
    let res = r.send().await.expect("request");
    let status = res.status().as_u16();
    (status, serde_json::from_str(&res.text().await.unwrap_or_default()).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_with_a_message_and_change_nothing() {
    // Local repositories are NOT allowed on this server.
    let cs = ControlServer::start(Options::default().env("ALLOW_LOCAL_REPOS", "false"));
    let token = Some("test-container-token");

    // /health needs no token; everything else does.
    let (status, health) = raw(&cs, Method::GET, "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!((health["status"].as_str(), health["agents"].as_u64()), (Some("ok"), Some(0)));
    assert!(health["uptime"].is_u64());
    for (method, path) in [
        (Method::GET, "/agents"),
        (Method::POST, "/agents/start"),
        (Method::GET, "/agents/a1/status"),
        (Method::POST, "/agents/a1/stop"),
    ] {
        for t in [None, Some("wrong-token"), Some("")] {
            let (status, body) = raw(&cs, method.clone(), path, t, None).await;
            assert_eq!(status, 401, "{method} {path} with {t:?}");
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
        }
    }

    let secret_url = "https://user:supersecret@github.com/o/r.git";
    let cases: Vec<(&str, Value, u16)> = vec![
        ("traversal in rigId", with("rigId", json!("../../etc")), 400),
        ("slash in agentId", with("agentId", json!("a/b")), 400),
        ("traversal in branch", with("branch", json!("polecat/../../x")), 400),
        ("option-looking branch", with("branch", json!("-x")), 400),
        ("control char in branch", with("branch", json!("a\u{1b}b")), 400),
        ("ext:: url", with("gitUrl", json!("ext::sh -c touch% /tmp/pwned")), 400),
        ("option url", with("gitUrl", json!("--upload-pack=touch /tmp/pwned")), 400),
        ("file url not allowed here", with("gitUrl", json!("file:///etc")), 400),
        ("plain http url", with("gitUrl", json!("http://github.com/o/r")), 400),
        ("bad url with secret", with("gitUrl", json!(format!("{secret_url} extra"))), 400),
        ("LD_PRELOAD", with("envVars", json!({ "LD_PRELOAD": "/tmp/evil-value.so" })), 400),
        ("LD_LIBRARY_PATH", with("envVars", json!({ "LD_LIBRARY_PATH": "/tmp/evil-value" })), 400),
        ("bad env name", with("envVars", json!({ "A-B": "x" })), 400),
        ("unknown role", with("role", json!("king")), 400),
        ("wrong type", with("prompt", json!(42)), 400),
        ("empty prompt", with("prompt", json!("  ")), 400),
    ];
    for (name, body, expected) in cases {
        let (status, reply) = raw(
            &cs,
            Method::POST,
            "/agents/start",
            token,
            Some(("application/json", serde_json::to_vec(&body).expect("json"))),
        )
        .await;
        assert_eq!(status, expected, "{name}: {reply}");
        let text = reply.to_string();
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {reply}");
        assert!(
            !text.contains("supersecret") && !text.contains("evil-value"),
            "{name} echoed a secret: {text}"
        );
    }
    // Missing fields and malformed JSON.
    let mut missing = valid();
    missing.as_object_mut().expect("object").remove("gitUrl");
    for (name, ct, bytes) in [
        ("missing field", "application/json", serde_json::to_vec(&missing).expect("json")),
        ("malformed", "application/json", b"{\"agentId\": ".to_vec()),
        ("not json", "text/plain", b"hello".to_vec()),
        ("empty", "application/json", Vec::new()),
    ] {
        let (status, reply) =
            raw(&cs, Method::POST, "/agents/start", token, Some((ct, bytes))).await;
        assert!((400..500).contains(&status), "{name}: {status}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {reply}");
    }
    // The reference's words and issue shape: every problem, each with its path.
    let mut two = valid();
    two["branch"] = json!("a..b");
    two["prompt"] = json!(" ");
    let (status, reply) = raw(
        &cs,
        Method::POST,
        "/agents/start",
        token,
        Some(("application/json", serde_json::to_vec(&two).expect("json"))),
    )
    .await;
    assert_eq!((status, reply["error"].as_str()), (400, Some("Invalid request body")), "{reply}");
    let paths: Vec<&Value> =
        reply["issues"].as_array().expect("issues").iter().map(|i| &i["path"]).collect();
    assert!(paths.contains(&&json!(["branch"])) && paths.contains(&&json!(["prompt"])), "{reply}");
    assert!(
        reply["issues"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["code"] == "custom" && i["message"].is_string())),
        "{reply}"
    );
    let (status, reply) = raw(
        &cs,
        Method::POST,
        "/agents/nobody/stop",
        token,
        Some(("application/json", b"{}".to_vec())),
    )
    .await;
    assert_eq!((status, &reply["error"]), (404, &json!("Agent nobody not found")), "{reply}");
    assert!(
        reply["bootId"].as_str().is_some_and(|b| b.len() == 16),
        "a 404 names the server's boot: {reply}"
    );
    // A huge body.
    let mut huge = valid();
    huge["prompt"] = json!("x".repeat(3 * 1024 * 1024));
    let (status, reply) = raw(
        &cs,
        Method::POST,
        "/agents/start",
        token,
        Some(("application/json", serde_json::to_vec(&huge).expect("json"))),
    )
    .await;
    assert_eq!(status, 413, "{reply}");
    assert!(reply["error"].is_string());
    // Answered before the body was read, so the server closes the connection: it must say so,
    // or the client's pool reuses the closed connection for the next request (which then fails
    // with "connection closed before message completed"). Repeated, as the race is timing-bound.
    // Same for a refused token with a body under the limit (never read either).
    let huge_bytes = serde_json::to_vec(&huge).expect("json");
    let mut big = valid();
    big["prompt"] = json!("y".repeat(512 * 1024));
    let big_bytes = serde_json::to_vec(&big).expect("json");
    for round in 0..20 {
        let (early, body, expected) = if round % 2 == 0 {
            (token, &huge_bytes, 413)
        } else {
            (Some("wrong-token"), &big_bytes, 401)
        };
        let (status, _) = raw(
            &cs,
            Method::POST,
            "/agents/start",
            early,
            Some(("application/json", body.clone())),
        )
        .await;
        assert_eq!(status, expected, "round {round}");
        let (status, _) = raw(&cs, Method::GET, "/agents/nobody/status", token, None).await;
        assert_eq!(status, 404, "round {round}: the next request on the client's pool");
    }

    // Unknown agents and bad ids in paths.
    for (method, path) in [
        (Method::GET, "/agents/nobody/status"),
        (Method::GET, "/agents/nobody/events"),
        (Method::GET, "/agents/nobody/output"),
        (Method::POST, "/agents/nobody/stop"),
        (Method::POST, "/agents/nobody/stream-ticket"),
    ] {
        let (status, reply) = raw(&cs, method, path, token, None).await;
        assert_eq!(status, 404, "{path}: {reply}");
        assert!(reply["error"].is_string());
    }
    let (status, _) = raw(
        &cs,
        Method::POST,
        "/agents/nobody/message",
        token,
        Some(("application/json", br#"{"prompt":"hi"}"#.to_vec())),
    )
    .await;
    assert_eq!(status, 404);
    // A wind-down names its reason and a grace of at most an hour; an unknown agent is a 404.
    for (body, want) in [
        (r#"{"reason":"budget used up"}"#, 404),
        (r#"{"reason":""}"#, 400),
        (r#"{"reason":"budget","graceMs":3600001}"#, 400),
        (r#"{"reason":"budget","graceMs":-1}"#, 400),
        (r#"{"graceMs":1000}"#, 400),
    ] {
        let json = Some(("application/json", body.as_bytes().to_vec()));
        let (status, reply) = raw(&cs, Method::POST, "/agents/nobody/wind-down", token, json).await;
        assert_eq!(status, want, "{body}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}: {reply}");
    }
    let (status, _) = raw(&cs, Method::GET, "/agents/..%2F..%2Fetc/status", token, None).await;
    assert_eq!(status, 400);
    let (status, _) = raw(&cs, Method::GET, "/agents/a1/events?after=-1", token, None).await;
    assert_eq!(status, 400);
    let (status, _) = raw(
        &cs,
        Method::POST,
        "/agents/nobody/stop",
        token,
        Some(("application/json", br#"{"signal":"SIGHUP"}"#.to_vec())),
    )
    .await;
    assert_eq!(status, 400);
    // Tool calls need a Kilo process's key.
    let (status, _) = raw(
        &cs,
        Method::POST,
        "/internal/tools/gt_done",
        None,
        Some(("application/json", br#"{"sessionID":"x","args":{}}"#.to_vec())),
    )
    .await;
    assert_eq!(status, 401);

    // Nothing was created: no agent, no rig folder, no Kilo process.
    let (_, list) = cs.get("/agents").await;
    assert_eq!(list["agents"], json!([]));
    assert!(!cs.workspace.join("rigs").exists(), "a rig folder was created");
    let kilos: Vec<_> =
        gastown_e2e::procs::processes().into_iter().filter(|p| p.ppid == cs.pid() as i32).collect();
    assert!(kilos.is_empty(), "children of the control server: {kilos:?}");

    // Merge jobs: a bad request is a 400 and starts nothing; a job is only found under its own
    // rig and review id.
    let merge = |review: &str, branch: &str| {
        json!({"reviewId": review, "beadId": "b1", "gitUrl": "https://github.com/o/r.git", "defaultBranch": "main",
               "branch": branch, "message": "Merge b1", "gates": [{"command": "true", "timeoutSecs": 10}], "deleteBranch": true})
    };
    for (name, body) in [
        ("default branch as source", merge("rev-1", "main")),
        ("traversal in review id", merge("../x", "polecat/a/1")),
        ("gate without timeout", {
            let mut b = merge("rev-1", "polecat/a/1");
            b["gates"] = json!([{"command": "true", "timeoutSecs": 0}]);
            b
        }),
        ("gates not a list", {
            let mut b = merge("rev-1", "polecat/a/1");
            b["gates"] = json!("cargo test");
            b
        }),
    ] {
        let (status, reply) = raw(
            &cs,
            Method::POST,
            "/rigs/rig-a/merges",
            token,
            Some(("application/json", serde_json::to_vec(&body).expect("json"))),
        )
        .await;
        assert_eq!(status, 400, "{name}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {reply}");
    }
    assert_eq!(
        raw(&cs, Method::GET, "/rigs/rig-a/merges/rev-1", token, None).await.0,
        404,
        "refused requests start no job"
    );
    let (status, started) = raw(
        &cs,
        Method::POST,
        "/rigs/rig-a/merges",
        token,
        Some((
            "application/json",
            serde_json::to_vec(&merge("rev-1", "polecat/a/1")).expect("json"),
        )),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(raw(&cs, Method::GET, "/rigs/rig-a/merges/rev-1", token, None).await.0, 200);
    assert_eq!(
        raw(&cs, Method::GET, "/rigs/rig-b/merges/rev-1", token, None).await.0,
        404,
        "another rig's job is not found"
    );
    assert_eq!(raw(&cs, Method::GET, "/rigs/rig-a/merges/unknown", token, None).await.0, 404);
    assert_eq!(raw(&cs, Method::GET, "/rigs/rig-a/merges/rev-1", None, None).await.0, 401);
}
