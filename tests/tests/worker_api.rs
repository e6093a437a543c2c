//! The Worker's HTTP API under `wrangler dev`: routing, envelope, auth matrix, beads, agents,
//! hooks, done, mail, review queue, sling, towns, rigs, identities and bad input.
//! Each test starts its own `wrangler dev` on a fresh state folder.

use gastown_e2e::wrangler::{
    agent_token, now_secs, sign_jwt, unique_id, Auth, Reply, WranglerDev, CONTAINER_TOKEN,
    JWT_SECRET,
};
use reqwest::Method;
use serde_json::{json, Value};

async fn register(dev: &WranglerDev, rig: &str, name: &str, role: &str) -> String {
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/agents"),
            json!({"role": role, "name": name, "identity": format!("{name}@{rig}")}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.data()["id"].as_str().expect("agent id").to_string()
}

async fn bead(dev: &WranglerDev, rig: &str, body: Value) -> Value {
    let r = dev.post(&format!("/api/rigs/{rig}/beads"), body).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.data().clone()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|x| x["id"].as_str().expect("id").to_string()).collect()
}

fn status_and_error(r: &Reply) -> (u16, bool) {
    (r.status, r.body["success"] == json!(false) && r.body["error"].is_string())
}

#[tokio::test]
async fn health_routing_and_envelope() {
    let dev = WranglerDev::start().await;
    let r = dev.call(Method::GET, "/health", &Auth::None, Value::Null).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!({"status": "ok"})),
        "bare, as the reference"
    );

    let r = dev.get("/nope").await;
    assert_eq!(status_and_error(&r), (404, true));
    let r = dev.call(Method::DELETE, "/api/rigs/r1/beads", &Auth::Internal, Value::Null).await;
    assert_eq!(
        (r.status, r.body.clone()),
        (404, json!({"success": false, "error": "Not found"})),
        "no 405"
    );
    let r = dev.get("/api/rigs/bad.id/beads").await;
    assert_eq!(status_and_error(&r), (400, true));
    assert!(r.error().contains("rigId"), "{r:?}");
    let r = dev.get("/api/rigs/r1/beads/missing").await;
    assert_eq!(status_and_error(&r), (404, true));
    let r = dev.get("/api/rigs/r1/agents/missing").await;
    assert_eq!(status_and_error(&r), (404, true));
    let r = dev.get("/api/rigs/r1/config").await;
    assert_eq!(status_and_error(&r), (404, true));
}

#[tokio::test]
async fn auth_matrix() {
    let dev = WranglerDev::start().await;
    let rig = &dev.configured_rig().await;
    let a1 = register(&dev, rig, "toast", "polecat").await;
    let a2 = register(&dev, rig, "nux", "polecat").await;
    let b = bead(&dev, rig, json!({"type": "issue", "title": "t"})).await;
    let bead_id = b["id"].as_str().expect("id");
    let good = agent_token(&a1, rig);
    let beads = format!("/api/rigs/{rig}/beads");

    let get = |auth: Auth| {
        let dev = &dev;
        let path = beads.clone();
        async move { dev.call(Method::GET, &path, &auth, Value::Null).await.status }
    };
    assert_eq!(get(Auth::None).await, 401);
    assert_eq!(get(Auth::Internal).await, 200);
    assert_eq!(get(Auth::Key("wrong".into())).await, 401);
    assert_eq!(get(Auth::Bearer(good.clone())).await, 200);
    assert_eq!(get(Auth::Bearer("not.a.jwt".into())).await, 401);
    assert_eq!(get(Auth::Bearer(agent_token(&a1, "other-rig"))).await, 403);

    let claims = json!({"agentId": a1, "rigId": rig, "townId": "t", "userId": "u", "iat": now_secs(), "exp": now_secs() + 600});
    let expired = json!({"agentId": a1, "rigId": rig, "townId": "t", "userId": "u", "iat": now_secs() - 20, "exp": now_secs() - 10});
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    assert_eq!(get(Auth::Bearer(sign_jwt(&hs, &expired, JWT_SECRET))).await, 401, "expired");
    assert_eq!(
        get(Auth::Bearer(sign_jwt(&hs, &claims, "wrong-secret"))).await,
        401,
        "bad signature"
    );
    let none = sign_jwt(&json!({"alg": "none", "typ": "JWT"}), &claims, JWT_SECRET);
    let unsigned = format!("{}.", none.rsplit_once('.').expect("dots").0);
    assert_eq!(get(Auth::Bearer(unsigned)).await, 401, "alg none");
    assert_eq!(get(Auth::Bearer(none)).await, 401, "alg none with a signature");
    assert_eq!(
        get(Auth::Bearer(sign_jwt(&json!({"alg": "HS512"}), &claims, JWT_SECRET))).await,
        401,
        "HS512"
    );
    let no_exp =
        json!({"agentId": a1, "rigId": rig, "townId": "t", "userId": "u", "iat": now_secs()});
    assert_eq!(get(Auth::Bearer(sign_jwt(&hs, &no_exp, JWT_SECRET))).await, 401, "no exp");
    // A wrong internal key is refused even next to a valid token.
    let bearer = format!("Bearer {good}");
    let both = [("X-Internal-API-Key", "wrong"), ("Authorization", bearer.as_str())];
    assert_eq!(dev.call_headers(Method::GET, &beads, &both, Value::Null).await.status, 401);

    // Agent routes: only the token's own agent.
    let me = Auth::Bearer(good.clone());
    let r = dev
        .call(Method::GET, &format!("/api/rigs/{rig}/agents/{a1}/prime"), &me, Value::Null)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = dev
        .call(Method::GET, &format!("/api/rigs/{rig}/agents/{a2}/prime"), &me, Value::Null)
        .await;
    assert_eq!(status_and_error(&r), (403, true));
    let r = dev
        .call(Method::POST, &format!("/api/rigs/{rig}/agents/{a2}/heartbeat"), &me, Value::Null)
        .await;
    assert_eq!(r.status, 403);
    // Reading another agent's record in the same rig is allowed (not an /agents/:id/* route).
    let r = dev.call(Method::GET, &format!("/api/rigs/{rig}/agents/{a2}"), &me, Value::Null).await;
    assert_eq!(r.status, 200);

    // Agent ids in bodies must be the caller's.
    let close = format!("/api/rigs/{rig}/beads/{bead_id}/close");
    let r = dev.call(Method::POST, &close, &me, json!({"agent_id": a2})).await;
    assert_eq!(status_and_error(&r), (403, true));
    let status = format!("/api/rigs/{rig}/beads/{bead_id}/status");
    let r = dev
        .call(Method::PATCH, &status, &me, json!({"status": "in_progress", "agent_id": a2}))
        .await;
    assert_eq!(r.status, 403);
    let mail = json!({"from_agent_id": a2, "to_agent_id": a1, "subject": "s", "body": "b"});
    let r = dev.call(Method::POST, &format!("/api/rigs/{rig}/mail"), &me, mail).await;
    assert_eq!(r.status, 403);
    let review = json!({"agent_id": a2, "bead_id": bead_id, "branch": "polecat/nux/x"});
    let r = dev.call(Method::POST, &format!("/api/rigs/{rig}/review-queue"), &me, review).await;
    assert_eq!(r.status, 403);
    // Nothing above changed the bead.
    let r = dev.get(&format!("/api/rigs/{rig}/beads/{bead_id}")).await;
    assert_eq!(r.data()["status"], "open");
    // The same calls as itself succeed.
    let r = dev
        .call(Method::PATCH, &status, &me, json!({"status": "in_progress", "agent_id": a1}))
        .await;
    assert_eq!((r.status, r.data()["status"].clone()), (200, json!("in_progress")));

    // Internal-only routes refuse agents (403) and anonymous callers (401).
    let sling = format!("/api/rigs/{rig}/sling");
    assert_eq!(dev.call(Method::POST, &sling, &me, json!({"title": "x"})).await.status, 403);
    assert_eq!(
        dev.call(Method::POST, &sling, &Auth::None, json!({"title": "x"})).await.status,
        401
    );
    assert_eq!(dev.call(Method::POST, "/api/towns", &me, json!({"name": "x"})).await.status, 403);
    let health = "/api/towns/t1/container/health";
    assert_eq!(dev.call(Method::GET, health, &me, Value::Null).await.status, 403);
    assert_eq!(
        dev.call(Method::GET, health, &Auth::Container(CONTAINER_TOKEN.into()), Value::Null)
            .await
            .status,
        401
    );

    // The container heartbeat takes the container token, not agent tokens.
    let hb = json!({"townId": "t1", "timestamp": "x", "uptime": 1, "agents": []});
    let path = "/api/towns/t1/container/heartbeat";
    assert_eq!(
        dev.call(Method::POST, path, &Auth::Container(CONTAINER_TOKEN.into()), hb.clone())
            .await
            .status,
        200
    );
    assert_eq!(
        dev.call(Method::POST, path, &Auth::Container("wrong".into()), hb.clone()).await.status,
        401
    );
    assert_eq!(dev.call(Method::POST, path, &me, hb.clone()).await.status, 401);
    assert_eq!(dev.call(Method::POST, path, &Auth::None, hb).await.status, 401);
}

#[tokio::test]
async fn beads_crud_filters_pagination_and_bad_input() {
    let dev = WranglerDev::start().await;
    let rig = dev.configured_rig().await;
    let agent = register(&dev, &rig, "toast", "polecat").await;

    let b = bead(&dev, &rig, json!({"type": "issue", "title": "first"})).await;
    assert_eq!((b["status"].clone(), b["priority"].clone()), (json!("open"), json!("medium")));
    assert_eq!((b["labels"].clone(), b["metadata"].clone()), (json!([]), json!({})));
    assert!(b["closed_at"].is_null() && b["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let full = bead(
        &dev,
        &rig,
        json!({"type": "merge_request", "title": "mr", "body": "b", "priority": "critical", "labels": ["x", "y"],
               "metadata": {"k": [1, 2]}, "assignee_agent_id": agent, "convoy_id": "convoy-1"}),
    )
    .await;
    assert_eq!(full["labels"], json!(["x", "y"]));
    assert_eq!(full["metadata"], json!({"k": [1, 2]}));
    assert_eq!(full["assignee_agent_id"], json!(agent));
    let sql = "x'); DROP TABLE beads; --";
    let tricky =
        bead(&dev, &rig, json!({"type": "message", "title": sql, "labels": ["' OR 1=1 --"]})).await;
    assert_eq!(tricky["title"], sql);
    let mut created = vec![b["id"].clone(), full["id"].clone(), tricky["id"].clone()];
    for i in 0..7 {
        created.push(
            bead(&dev, &rig, json!({"type": "issue", "title": format!("n{i}")})).await["id"]
                .clone(),
        );
    }

    let get = dev.get(&format!("/api/rigs/{rig}/beads/{}", full["id"].as_str().expect("id"))).await;
    assert_eq!(get.data(), &full);

    // Pagination: newest first (as the reference), limit/offset windows.
    let all = dev.get(&format!("/api/rigs/{rig}/beads?limit=100")).await;
    assert_eq!(all.data().as_array().expect("list").len(), 10);
    let expected: Vec<String> =
        created.iter().rev().map(|v| v.as_str().expect("id").to_string()).collect();
    assert_eq!(ids(all.data()), expected);
    let page = dev.get(&format!("/api/rigs/{rig}/beads?limit=3&offset=4")).await;
    assert_eq!(ids(page.data()), expected[4..7].to_vec());
    let tail = dev.get(&format!("/api/rigs/{rig}/beads?limit=3&offset=9")).await;
    assert_eq!(ids(tail.data()), expected[9..].to_vec());

    // Filters.
    let full_id = full["id"].as_str().expect("id").to_string();
    let by_type = dev.get(&format!("/api/rigs/{rig}/beads?type=merge_request")).await;
    assert_eq!(ids(by_type.data()), vec![full_id.clone()]);
    let by_assignee = dev.get(&format!("/api/rigs/{rig}/beads?assignee_agent_id={agent}")).await;
    assert_eq!(ids(by_assignee.data()), vec![full_id.clone()]);
    let by_convoy = dev.get(&format!("/api/rigs/{rig}/beads?convoy_id=convoy-1&status=open")).await;
    assert_eq!(ids(by_convoy.data()), vec![full_id.clone()]);

    // Status and close.
    let first = b["id"].as_str().expect("id").to_string();
    let r = dev
        .call(
            Method::PATCH,
            &format!("/api/rigs/{rig}/beads/{first}/status"),
            &Auth::Internal,
            json!({"status": "in_progress", "agent_id": agent}),
        )
        .await;
    assert_eq!(r.data()["status"], "in_progress");
    let r =
        dev.post(&format!("/api/rigs/{rig}/beads/{first}/close"), json!({"agent_id": agent})).await;
    assert_eq!(r.data()["status"], "closed");
    assert!(r.data()["closed_at"].is_string());
    let again =
        dev.post(&format!("/api/rigs/{rig}/beads/{first}/close"), json!({"agent_id": agent})).await;
    assert_eq!(again.data(), r.data(), "closing twice is a no-op");
    let closed = dev.get(&format!("/api/rigs/{rig}/beads?status=closed")).await;
    assert_eq!(ids(closed.data()), vec![first.clone()]);
    let open = dev.get(&format!("/api/rigs/{rig}/beads?status=open&limit=100")).await;
    assert_eq!(open.data().as_array().expect("list").len(), 9);
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{first}/events")).await;
    let kinds: Vec<&str> = events
        .data()
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["created", "status_changed", "closed"]);
    // 404s on a missing bead or agent.
    let r =
        dev.post(&format!("/api/rigs/{rig}/beads/missing/close"), json!({"agent_id": agent})).await;
    assert_eq!(status_and_error(&r), (404, true));
    let r = dev
        .post(&format!("/api/rigs/{rig}/beads/{first}/close"), json!({"agent_id": "nobody"}))
        .await;
    assert_eq!(status_and_error(&r), (404, true));
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/beads"),
            json!({"type": "issue", "title": "x", "assignee_agent_id": "nobody"}),
        )
        .await;
    assert_eq!(status_and_error(&r), (404, true));

    // Bad input: 400 with a message, nothing changed.
    let path = format!("/api/rigs/{rig}/beads");
    let bad_bodies: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"".to_vec(),
        b"[1,2]".to_vec(),
        br#"{"type":"issue"}"#.to_vec(),
        br#"{"type":"issue","title":42}"#.to_vec(),
        br#"{"type":"epic","title":"x"}"#.to_vec(),
        br#"{"type":"issue","title":"x","priority":"urgent"}"#.to_vec(),
        br#"{"type":"issue","title":"x","labels":"a"}"#.to_vec(),
        br#"{"type":"issue","title":"x","metadata":[1]}"#.to_vec(),
        br#"{"type":"issue","title":"x","convoy_id":"'; DROP TABLE beads; --"}"#.to_vec(),
        br#"{"type":"issue","title":"   "}"#.to_vec(),
        json!({"type": "issue", "title": "x".repeat(501)}).to_string().into_bytes(),
        json!({"type": "issue", "title": "x", "body": "y".repeat(600 * 1024)})
            .to_string()
            .into_bytes(),
    ];
    for body in bad_bodies {
        let r = dev.call_raw(Method::POST, &path, &Auth::Internal, body.clone()).await;
        assert_eq!(
            status_and_error(&r),
            (400, true),
            "{} -> {r:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    for q in [
        "status=done",
        "type=epic",
        "limit=abc",
        "limit=100000",
        "offset=-1",
        "assignee_agent_id=a.b",
    ] {
        let r = dev.get(&format!("{path}?{q}")).await;
        assert_eq!(status_and_error(&r), (400, true), "{q}");
    }
    let r = dev
        .call(
            Method::PATCH,
            &format!("/api/rigs/{rig}/beads/{first}/status"),
            &Auth::Internal,
            json!({"status": "done", "agent_id": agent}),
        )
        .await;
    assert_eq!(status_and_error(&r), (400, true));
    let after = dev.get(&format!("{path}?limit=100")).await;
    assert_eq!(after.data().as_array().expect("list").len(), 10, "bad input created nothing");
    assert_eq!(dev.get(&format!("/api/rigs/{rig}/beads/{first}")).await.data()["status"], "closed");
}

#[tokio::test]
async fn hook_prime_mail_done_and_review_queue() {
    let dev = WranglerDev::start().await;
    let rig = dev.configured_rig().await;
    let toast = register(&dev, &rig, "toast", "polecat").await;
    let nux = register(&dev, &rig, "nux", "polecat").await;
    let mayor = register(&dev, &rig, "mayor", "mayor").await;
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/agents"),
            json!({"role": "polecat", "name": "dup", "identity": format!("toast@{rig}")}),
        )
        .await;
    assert_eq!(status_and_error(&r), (409, true), "identity is unique");
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/agents"),
            json!({"role": "king", "name": "k", "identity": "k"}),
        )
        .await;
    assert_eq!(status_and_error(&r), (400, true));
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/agents"),
            json!({"role": "polecat", "name": "../x", "identity": "k"}),
        )
        .await;
    assert_eq!(status_and_error(&r), (400, true));

    let list = dev.get(&format!("/api/rigs/{rig}/agents?role=polecat")).await;
    assert_eq!(ids(list.data()), vec![toast.clone(), nux.clone()]);
    let list = dev.get(&format!("/api/rigs/{rig}/agents?role=mayor&status=idle")).await;
    assert_eq!(ids(list.data()), vec![mayor.clone()]);
    assert_eq!(dev.get(&format!("/api/rigs/{rig}/agents?status=sleeping")).await.status, 400);

    let b1 = bead(&dev, &rig, json!({"type": "issue", "title": "one"})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let b2 = bead(&dev, &rig, json!({"type": "issue", "title": "two"})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let me = Auth::Bearer(agent_token(&toast, &rig));
    let hook = format!("/api/rigs/{rig}/agents/{toast}/hook");

    let r = dev.call(Method::POST, &hook, &me, json!({"bead_id": b1})).await;
    assert_eq!((r.status, r.data()), (200, &json!({"hooked": true})));
    let r = dev.get(&format!("/api/rigs/{rig}/agents/{toast}")).await;
    assert_eq!(
        (r.data()["status"].clone(), r.data()["current_hook_bead_id"].clone()),
        (json!("working"), json!(b1))
    );
    let bead1 = dev.get(&format!("/api/rigs/{rig}/beads/{b1}")).await;
    assert_eq!(
        (bead1.data()["status"].clone(), bead1.data()["assignee_agent_id"].clone()),
        (json!("in_progress"), json!(toast))
    );
    let again = dev.call(Method::POST, &hook, &me, json!({"bead_id": b1})).await;
    assert_eq!(again.status, 200, "re-hooking the same bead is a no-op");
    let r = dev.call(Method::POST, &hook, &me, json!({"bead_id": b2})).await;
    assert_eq!(status_and_error(&r), (409, true), "a different bead while hooked");
    let r = dev.post(&format!("/api/rigs/{rig}/agents/{nux}/hook"), json!({"bead_id": b1})).await;
    assert_eq!(status_and_error(&r), (409, true), "bead hooked by another agent");
    let r = dev.call(Method::POST, &hook, &me, json!({"bead_id": "missing"})).await;
    assert_eq!(r.status, 404);
    let r = dev.call(Method::POST, &hook, &me, json!({})).await;
    assert_eq!(r.status, 400);

    // Mail to toast; prime shows it without delivering it.
    let mail = json!({"from_agent_id": mayor, "to_agent_id": toast, "subject": "hi", "body": "please hurry"});
    let sent = dev.post(&format!("/api/rigs/{rig}/mail"), mail).await;
    assert_eq!((sent.status, sent.data()), (201, &json!({"sent": true})));
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/mail"),
            json!({"from_agent_id": mayor, "to_agent_id": "ghost", "subject": "s", "body": "b"}),
        )
        .await;
    assert_eq!(r.status, 404);
    let prime = format!("/api/rigs/{rig}/agents/{toast}/prime");
    for _ in 0..2 {
        let p = dev.call(Method::GET, &prime, &me, Value::Null).await;
        let d = p.data();
        assert_eq!(d["agent"]["id"], json!(toast));
        assert_eq!(d["hooked_bead"]["id"], json!(b1));
        assert_eq!(d["undelivered_mail"].as_array().expect("mail").len(), 1);
        assert_eq!(ids(&d["open_beads"]), vec![b1.clone()], "the agent's own unfinished beads");
    }
    let check = format!("/api/rigs/{rig}/agents/{toast}/mail");
    let m = dev.call(Method::GET, &check, &me, Value::Null).await;
    let got = m.data().as_array().expect("mail").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0]["subject"].clone(), got[0]["delivered"].clone()),
        (json!("hi"), json!(false)),
        "as read"
    );
    assert!(got[0]["delivered_at"].is_null());
    let m = dev.call(Method::GET, &check, &me, Value::Null).await;
    assert_eq!(m.data(), &json!([]), "mail is delivered once");
    let p = dev.call(Method::GET, &prime, &me, Value::Null).await;
    assert_eq!(p.data()["undelivered_mail"], json!([]));

    // Checkpoint and heartbeat.
    let r = dev
        .call(
            Method::POST,
            &format!("/api/rigs/{rig}/agents/{toast}/checkpoint"),
            &me,
            json!({"data": {"step": 3}}),
        )
        .await;
    assert_eq!((r.status, r.data()), (200, &json!({"written": true})));
    assert_eq!(
        dev.get(&format!("/api/rigs/{rig}/agents/{toast}")).await.data()["checkpoint"],
        json!({"step": 3})
    );
    let r = dev
        .call(Method::POST, &format!("/api/rigs/{rig}/agents/{toast}/checkpoint"), &me, json!([]))
        .await;
    assert_eq!(r.status, 400);
    let r = dev
        .call(Method::POST, &format!("/api/rigs/{rig}/agents/{toast}/heartbeat"), &me, Value::Null)
        .await;
    assert_eq!((r.status, r.data()), (200, &json!({"heartbeat": true})));

    // Done: review entry with the hooked bead's branch, unhooked, idle.
    let done = format!("/api/rigs/{rig}/agents/{toast}/done");
    let r = dev.call(Method::POST, &done, &me, json!({"branch": "bad..branch"})).await;
    assert_eq!(r.status, 400);
    let r = dev.call(Method::POST, &done, &me, json!({"branch": "polecat/toast/abcd1234", "summary": "did it", "pr_url": "https://example.com/pr/1"})).await;
    assert_eq!((r.status, r.data()), (200, &json!({"done": true})), "{r:?}");
    let entry = dev.get(&format!("/api/rigs/{rig}/review-queue")).await.data()[0].clone();
    assert_eq!(
        (
            entry["bead_id"].clone(),
            entry["branch"].clone(),
            entry["status"].clone(),
            entry["agent_id"].clone()
        ),
        (json!(b1), json!("polecat/toast/abcd1234"), json!("pending"), json!(toast))
    );
    let id = entry["id"].as_str().expect("entry id");
    let one = dev.get(&format!("/api/rigs/{rig}/review-queue/{id}")).await;
    assert_eq!((one.status, one.data()), (200, &entry), "one entry by its id");
    let missing = dev.get(&format!("/api/rigs/{rig}/review-queue/nope")).await;
    assert_eq!(
        (missing.status, missing.body["error"].as_str()),
        (404, Some("Review entry not found"))
    );
    let agent = dev.get(&format!("/api/rigs/{rig}/agents/{toast}")).await;
    assert_eq!(
        (agent.data()["status"].clone(), agent.data()["current_hook_bead_id"].clone()),
        (json!("idle"), Value::Null)
    );
    let r = dev.call(Method::POST, &done, &me, json!({"branch": "polecat/toast/abcd1234"})).await;
    assert_eq!(
        (r.status, r.data()),
        (200, &json!({"done": true})),
        "nothing hooked any more: done all the same"
    );

    // Explicit review submission and the queue listing.
    let r = dev
        .call(
            Method::POST,
            &format!("/api/rigs/{rig}/review-queue"),
            &me,
            json!({"agent_id": toast, "bead_id": b2, "branch": "polecat/toast/b2"}),
        )
        .await;
    assert_eq!((r.status, r.data()), (201, &json!({"submitted": true})));
    let r = dev
        .post(
            &format!("/api/rigs/{rig}/review-queue"),
            json!({"agent_id": toast, "bead_id": "missing", "branch": "x"}),
        )
        .await;
    assert_eq!(r.status, 404);
    let q = dev.get(&format!("/api/rigs/{rig}/review-queue?status=pending")).await;
    let branches: Vec<&str> =
        q.data().as_array().expect("queue").iter().filter_map(|e| e["branch"].as_str()).collect();
    assert_eq!(branches, ["polecat/toast/abcd1234", "polecat/toast/b2"]);
    assert_eq!(
        dev.get(&format!("/api/rigs/{rig}/review-queue?status=merged")).await.data(),
        &json!([])
    );

    // Unhook: idempotent.
    dev.call(Method::POST, &hook, &me, json!({"bead_id": b2})).await.data();
    let r = dev.call(Method::DELETE, &hook, &me, Value::Null).await;
    assert_eq!((r.status, r.data()), (200, &json!({"unhooked": true})));
    let r = dev.get(&format!("/api/rigs/{rig}/agents/{toast}")).await;
    assert_eq!(
        (r.data()["status"].clone(), r.data()["current_hook_bead_id"].clone()),
        (json!("idle"), Value::Null)
    );
    let r = dev.call(Method::DELETE, &hook, &me, Value::Null).await;
    assert_eq!((r.status, r.data()), (200, &json!({"unhooked": true})));

    // The bead's event log.
    let events = dev.get(&format!("/api/rigs/{rig}/beads/{b1}/events")).await;
    let kinds: Vec<&str> = events
        .data()
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["created", "hooked", "review_submitted", "unhooked"]);
    let all = dev.get(&format!("/api/rigs/{rig}/events?limit=500")).await;
    assert!(all.data().as_array().expect("events").iter().any(|e| e["kind"] == "mail_sent"));

    // Escalations are beads.
    let r = dev
        .call(
            Method::POST,
            &format!("/api/rigs/{rig}/escalations"),
            &me,
            json!({"title": "stuck", "body": "help"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        (r.data()["type"].clone(), r.data()["priority"].clone()),
        (json!("escalation"), json!("medium"))
    );
    let r = dev
        .call(
            Method::POST,
            &format!("/api/rigs/{rig}/escalations"),
            &me,
            json!({"title": "x", "priority": "meh"}),
        )
        .await;
    assert_eq!(r.status, 400);

    // The identity record counted the completed bead.
    let ident = urlencode(&format!("toast@{rig}"));
    let r = dev.get(&format!("/api/identities/{ident}")).await;
    assert_eq!(
        (r.data()["beads_completed"].clone(), r.data()["agent_id"].clone()),
        (json!(1), json!(toast)),
        "{r:?}"
    );
    assert_eq!(dev.get("/api/identities/nobody").await.status, 404);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn sling_concurrency_and_consistency() {
    let dev = WranglerDev::start().await;
    let rig = dev.configured_rig().await;

    // Five concurrent slings on an empty rig: five distinct polecats named from the pool.
    let slings =
        (0..5).map(|i| {
            let dev = &dev;
            let path = format!("/api/rigs/{rig}/sling");
            async move {
                dev.post(&path, json!({"title": format!("task {i}"), "labels": ["sling"]})).await
            }
        });
    let results = futures_util::future::join_all(slings).await;
    let mut agents = Vec::new();
    let mut beads = Vec::new();
    for r in &results {
        assert_eq!(r.status, 201, "{r:?}");
        let d = r.data();
        assert_eq!(d["agent_created"], true);
        assert_eq!(d["bead"]["status"], "in_progress");
        assert_eq!(d["agent"]["current_hook_bead_id"], d["bead"]["id"]);
        assert_eq!(d["bead"]["assignee_agent_id"], d["agent"]["id"]);
        agents.push(d["agent"]["id"].as_str().expect("id").to_string());
        beads.push(d["bead"]["id"].as_str().expect("id").to_string());
    }
    let names: std::collections::BTreeSet<String> = results
        .iter()
        .map(|r| r.data()["agent"]["name"].as_str().expect("name").to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> =
        ["toast", "nux", "slit", "rictus", "capable"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected);
    agents.sort();
    agents.dedup();
    assert_eq!(agents.len(), 5, "no polecat picked twice");

    // A done polecat is reused by the next sling instead of registering a new one.
    let first = results[0].data()["agent"].clone();
    let id = first["id"].as_str().expect("id");
    let r = dev
        .call(
            Method::POST,
            &format!("/api/rigs/{rig}/agents/{id}/done"),
            &Auth::Bearer(agent_token(id, &rig)),
            json!({"branch": "polecat/x/y"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": "again"})).await;
    assert_eq!(
        (r.data()["agent_created"].clone(), r.data()["agent"]["id"].clone()),
        (json!(false), first["id"].clone())
    );
    let r = dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": "six"})).await;
    assert_eq!(r.data()["agent"]["name"], "cheedo");
    let r = dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": ""})).await;
    assert_eq!(r.status, 400);
    let polecats = dev.get(&format!("/api/rigs/{rig}/agents?role=polecat")).await;
    assert_eq!(polecats.data().as_array().expect("agents").len(), 6);
    let ident = urlencode(&format!("polecat/toast@{rig}"));
    assert_eq!(dev.get(&format!("/api/identities/{ident}")).await.data()["name"], "toast");

    // A rig no town configured (a mistyped id): everything that would create work or agents
    // there is a 404 that creates nothing.
    let typo = unique_id("no-such-rig");
    let creates = [
        ("sling", json!({"title": "lost"})),
        ("beads", json!({"type": "issue", "title": "lost"})),
        (
            "agents",
            json!({"role": "polecat", "name": "ghost", "identity": format!("ghost@{typo}")}),
        ),
        ("mail", json!({"from_agent_id": "a", "to_agent_id": "b", "subject": "s", "body": "b"})),
        ("convoys", json!({"title": "c", "beads": [{"title": "t"}]})),
        ("escalations", json!({"title": "stuck"})),
    ];
    for (what, body) in creates {
        let r = dev.post(&format!("/api/rigs/{typo}/{what}"), body).await;
        assert_eq!((r.status, r.error()), (404, "Rig not found"), "{what}: {r:?}");
    }
    for what in ["beads", "agents", "convoys"] {
        let r = dev.get(&format!("/api/rigs/{typo}/{what}")).await;
        assert_eq!(r.data(), &json!([]), "{what} on the unknown rig: {r:?}");
    }

    // Concurrent writes to one rig: all land, each exactly once.
    let creates = (0..20).map(|i| {
        let dev = &dev;
        let path = format!("/api/rigs/{rig}/beads");
        async move {
            dev.post(
                &path,
                json!({"type": "message", "title": format!("c{i}"), "convoy_id": "burst"}),
            )
            .await
        }
    });
    let created = futures_util::future::join_all(creates).await;
    assert!(created.iter().all(|r| r.status == 201), "{created:?}");
    let list = dev.get(&format!("/api/rigs/{rig}/beads?convoy_id=burst&limit=100")).await;
    let mut titles: Vec<String> = list
        .data()
        .as_array()
        .expect("list")
        .iter()
        .map(|b| b["title"].as_str().expect("t").to_string())
        .collect();
    titles.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    want.sort();
    assert_eq!(titles, want);

    // Concurrent hooks of one bead by different agents: exactly one wins.
    let target = bead(&dev, &rig, json!({"type": "issue", "title": "contested"})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut contenders = Vec::new();
    for i in 0..4 {
        contenders.push(register(&dev, &rig, &format!("c{i}"), "polecat").await);
    }
    let hooks = contenders.iter().map(|a| {
        let dev = &dev;
        let path = format!("/api/rigs/{rig}/agents/{a}/hook");
        let body = json!({"bead_id": target});
        async move { dev.post(&path, body).await.status }
    });
    let statuses = futures_util::future::join_all(hooks).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 3, "{statuses:?}");
}

#[tokio::test]
async fn towns_rigs_escalations_and_container_routes() {
    let dev = WranglerDev::start().await;
    let r = dev.post("/api/towns", json!({"name": "Bartertown", "config": {"model": "p/m"}})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let town = r.data()["id"].as_str().expect("town id").to_string();
    assert_eq!(r.data()["rigs"], json!([]));
    assert_eq!(dev.post("/api/towns", json!({"name": ""})).await.status, 400);
    assert_eq!(dev.get("/api/towns/missing").await.status, 404);

    // Bad git URLs are refused and create nothing.
    for url in ["ext::sh -c evil", "http://insecure/repo", "--upload-pack=x", "file:///tmp/../etc"]
    {
        let r = dev
            .post(&format!("/api/towns/{town}/rigs"), json!({"name": "r", "git_url": url}))
            .await;
        assert_eq!(status_and_error(&r), (400, true), "{url}");
    }
    let r = dev
        .post(
            &format!("/api/towns/{town}/rigs"),
            json!({"name": "r", "git_url": "https://x/y.git", "default_branch": "a..b"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(dev.get(&format!("/api/towns/{town}/rigs")).await.data(), &json!([]));
    assert_eq!(
        dev.post("/api/towns/missing/rigs", json!({"name": "r", "git_url": "https://x/y.git"}))
            .await
            .status,
        404
    );

    let r = dev
        .post(
            &format!("/api/towns/{town}/rigs"),
            json!({"name": "app", "git_url": "https://github.com/o/app.git"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let rig = r.data()["id"].as_str().expect("rig id").to_string();
    assert_eq!(r.data()["default_branch"], "main");
    // ALLOW_LOCAL_REPOS=true in the test env: file:// origins are accepted.
    let r = dev.post(&format!("/api/towns/{town}/rigs"), json!({"name": "local", "git_url": "file:///tmp/origin.git", "default_branch": "trunk"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let rigs = dev.get(&format!("/api/towns/{town}/rigs")).await;
    assert_eq!(rigs.data().as_array().expect("rigs").len(), 2);
    assert_eq!(
        dev.get(&format!("/api/towns/{town}")).await.data()["rigs"].as_array().expect("rigs").len(),
        2
    );

    // The TownDO configured the rig's RigDO.
    let cfg = dev.get(&format!("/api/rigs/{rig}/config")).await;
    assert_eq!(
        (
            cfg.data()["town_id"].clone(),
            cfg.data()["git_url"].clone(),
            cfg.data()["default_branch"].clone()
        ),
        (json!(town), json!("https://github.com/o/app.git"), json!("main"))
    );
    let r = dev
        .call(Method::PUT, &format!("/api/rigs/{rig}/config"), &Auth::Internal, json!({"town_id": town, "git_url": "git@github.com:o/app.git", "default_branch": "dev"}))
        .await;
    assert_eq!(r.data()["default_branch"], "dev");
    // A URL with credentials is refused, naming the way to do it, and creates nothing: the
    // credentials go to the town's forge, where no agent can read them.
    let secret_url = "https://x-access-token:ghs_secret123@github.com/o/private.git";
    let before = dev.get(&format!("/api/towns/{town}/rigs")).await.body;
    let r = dev
        .post(&format!("/api/towns/{town}/rigs"), json!({"name": "private", "git_url": secret_url}))
        .await;
    assert_eq!(status_and_error(&r), (400, true), "{r:?}");
    let answer = r.body.to_string();
    assert!(answer.contains("/forge") && !answer.contains("ghs_secret123"), "{answer}");
    assert_eq!(dev.get(&format!("/api/towns/{town}/rigs")).await.body, before);
    let r = dev
        .call(
            Method::PUT,
            &format!("/api/rigs/{rig}/config"),
            &Auth::Internal,
            json!({"town_id": town, "git_url": "ext::x"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(dev.get(&format!("/api/rigs/{rig}/config")).await.data()["default_branch"], "dev");

    // Town escalations.
    let r = dev
        .post(
            &format!("/api/towns/{town}/escalations"),
            json!({"title": "rig on fire", "priority": "critical", "metadata": {"rig": rig}}),
        )
        .await;
    assert_eq!((r.status, r.data()["priority"].clone()), (201, json!("critical")));
    let list = dev.get(&format!("/api/towns/{town}/escalations")).await;
    assert_eq!(list.data().as_array().expect("list").len(), 1);

    // Container routes: internal only; without a container runtime or CONTAINER_URL, a clear 503.
    for (m, p) in [
        (Method::GET, "health"),
        (Method::POST, "agents/start"),
        (Method::POST, "agents/a1/stop"),
        (Method::POST, "agents/a1/message"),
        (Method::POST, "agents/a1/stream-ticket"),
        (Method::GET, "agents/a1/status"),
    ] {
        let path = format!("/api/towns/{town}/container/{p}");
        let body = if m == Method::POST { json!({}) } else { Value::Null };
        let r = dev.call(m.clone(), &path, &Auth::Internal, body.clone()).await;
        assert_eq!(r.status, 503, "{p}: {r:?}");
        assert!(r.error().contains("container not available"), "{r:?}");
        assert_eq!(dev.call(m, &path, &Auth::None, body).await.status, 401);
    }

    // The container's heartbeat updates last_activity_at per agent (agents listed with rigId).
    let a = register(&dev, &rig, "toast", "polecat").await;
    let at = "2030-01-02T03:04:05.000Z";
    let hb = json!({"townId": town, "timestamp": at, "uptime": 5, "agents": [
        {"agentId": a, "rigId": rig, "townId": town, "status": "running", "timestamp": at, "lastActivityAt": at},
        {"agentId": "ghost", "rigId": rig, "townId": town, "status": "running", "timestamp": at, "lastActivityAt": at}
    ]});
    let r = dev
        .call(
            Method::POST,
            &format!("/api/towns/{town}/container/heartbeat"),
            &Auth::Container(CONTAINER_TOKEN.into()),
            hb.clone(),
        )
        .await;
    assert_eq!(r.data()["updated"], 1, "{r:?}");
    assert_eq!(
        dev.get(&format!("/api/rigs/{rig}/agents/{a}")).await.data()["last_activity_at"],
        at
    );

    // Only the town's own rigs, and real times: anything else is a 400 that changes nothing.
    let other_town = dev.post("/api/towns", json!({"name": "elsewhere"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let foreign = dev
        .post(
            &format!("/api/towns/{other_town}/rigs"),
            json!({"name": "theirs", "git_url": "https://x/y.git"}),
        )
        .await
        .data()["id"]
        .as_str()
        .expect("rig")
        .to_string();
    let later = "2031-01-01T00:00:00.000Z";
    let mut bad_rig = hb.clone();
    bad_rig["agents"][0]["lastActivityAt"] = json!(later);
    bad_rig["agents"][1]["rigId"] = json!(foreign);
    let mut bad_time = hb.clone();
    bad_time["agents"][0]["lastActivityAt"] = json!("yesterday");
    for (name, body) in [("a foreign rig", bad_rig), ("an unparsable time", bad_time)] {
        let r = dev
            .call(
                Method::POST,
                &format!("/api/towns/{town}/container/heartbeat"),
                &Auth::Container(CONTAINER_TOKEN.into()),
                body,
            )
            .await;
        assert_eq!(status_and_error(&r), (400, true), "{name}: {r:?}");
    }
    assert_eq!(
        dev.get(&format!("/api/rigs/{rig}/agents/{a}")).await.data()["last_activity_at"],
        at,
        "nothing was updated"
    );
}

/// Merge settings and convoys: stored and shown when valid; bad input is a 400 (or 404) with a
/// message and changes nothing.
#[tokio::test]
async fn merge_settings_and_convoys_refuse_bad_input() {
    let dev = WranglerDev::start().await;
    let town = dev.post("/api/towns", json!({"name": "refinery town"})).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let rigs = format!("/api/towns/{town}/rigs");
    for (name, extra, says) in [
        ("gates as a string", json!({"merge_gates": "cargo test"}), "expected a sequence"),
        ("gates as numbers", json!({"merge_gates": [1, 2]}), "expected a string"),
        ("empty gate", json!({"merge_gates": [" "]}), "merge_gates"),
        ("zero timeout", json!({"merge_gates": ["true"], "gate_timeout_secs": 0}), "timeoutSecs"),
        (
            "too many approvals",
            json!({"merge_strategy": "pr", "require_review": 11}),
            "require_review",
        ),
        ("unknown merge method", json!({"merge_method": "octopus"}), "unknown variant"),
        ("unknown strategy", json!({"merge_strategy": "squash"}), "unknown variant"),
        ("too many rounds", json!({"max_rework_rounds": 1000}), "max_rework_rounds"),
    ] {
        let mut body = json!({"name": "r", "git_url": "https://x/y.git"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = dev.post(&rigs, body).await;
        assert_eq!(status_and_error(&r), (400, true), "{name}: {r:?}");
        assert_eq!(r.error(), "Invalid request body");
        assert!(r.body["issues"].to_string().contains(says), "{name}: {}", r.body);
    }
    assert_eq!(dev.get(&rigs).await.data(), &json!([]), "nothing was created");

    let r = dev.post(&rigs, json!({"name": "app", "git_url": "https://x/y.git", "merge_gates": ["cargo test"], "max_rework_rounds": 2})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let rig = r.data()["id"].as_str().expect("rig").to_string();
    let cfg = dev.get(&format!("/api/rigs/{rig}/config")).await;
    assert_eq!(
        (
            &cfg.data()["merge_gates"],
            &cfg.data()["max_rework_rounds"],
            &cfg.data()["delete_merged_branches"]
        ),
        (&json!(["cargo test"]), &json!(2), &json!(true))
    );
    let bad = dev
        .call(
            Method::PUT,
            &format!("/api/rigs/{rig}/config"),
            &Auth::Internal,
            json!({"town_id": town, "git_url": "https://x/y.git", "merge_strategy": "pr", "merge_method": "octopus"}),
        )
        .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(
        dev.get(&format!("/api/rigs/{rig}/config")).await.data()["merge_gates"],
        json!(["cargo test"]),
        "unchanged"
    );

    // Convoys: empty, malformed, unknown.
    let convoys = format!("/api/rigs/{rig}/convoys");
    for body in [
        json!({"title": "c", "beads": []}),
        json!({"title": "c", "beads": [{"title": ""}]}),
        json!({"title": "", "beads": [{"title": "t"}]}),
        json!({"beads": "x"}),
    ] {
        let r = dev.post(&convoys, body.clone()).await;
        assert_eq!(status_and_error(&r), (400, true), "{body}: {r:?}");
    }
    assert_eq!(dev.get(&format!("{convoys}/nope")).await.status, 404);
    let r = dev
        .post(&format!("/api/rigs/{rig}/sling"), json!({"title": "t", "convoy_id": "nope"}))
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        dev.get(&format!("/api/rigs/{rig}/beads")).await.data(),
        &json!([]),
        "a refused sling creates no bead"
    );
    assert_eq!(dev.get(&convoys).await.data(), &json!([]));
    // Agents cannot make convoys.
    let token = agent_token("a1", &rig);
    assert_eq!(
        dev.call(
            Method::POST,
            &convoys,
            &Auth::Bearer(token),
            json!({"title": "c", "beads": [{"title": "t"}]})
        )
        .await
        .status,
        403
    );

    // A valid convoy slings each bead to its own polecat; it is open until they merge.
    let r = dev
        .post(&convoys, json!({"title": "two", "beads": [{"title": "one"}, {"title": "two"}]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        (r.data()["status"].as_str(), r.data()["beads"].as_array().map(Vec::len)),
        (Some("open"), Some(2))
    );
    let convoy = r.data()["id"].as_str().expect("convoy").to_string();
    assert!(r.data()["beads"]
        .as_array()
        .expect("beads")
        .iter()
        .all(|b| b["convoy_id"] == json!(convoy) && b["status"] == "in_progress"));
    let listed = dev.get(&format!("/api/rigs/{rig}/beads?convoy_id={convoy}")).await;
    assert_eq!(listed.data().as_array().map(Vec::len), Some(2));
}

/// Forge credentials are write-only: stored for the town (or one of its rigs), shown without
/// any secret, never in a log line; bad credentials are a 400 that stores nothing; a git URL
/// with credentials in it is refused with a message that names the forge.
#[tokio::test]
async fn forge_credentials_are_write_only() {
    let dev = WranglerDev::start().await;
    let (town, rig) = dev.town_and_rig("forged", "https://example.com/o/r.git").await;
    let forge = format!("/api/towns/{town}/forge");
    let secret = "ghp_e2eSecretValue0123456789";
    let hook = "whsec_e2eHookValue";
    assert_eq!(dev.get(&forge).await.data()["configured"], false);
    let r = dev
        .call(
            Method::PUT,
            &forge,
            &Auth::Internal,
            json!({"kind": "token", "token": secret, "webhook_secret": hook}),
        )
        .await;
    assert_eq!((r.status, r.data()["configured"].clone()), (200, json!(true)), "{r:?}");
    for bad in [
        json!({"kind": "bitbucket", "token": secret}),
        json!({"kind": "github_app", "app_id": 1, "installation_id": 2, "private_key": "-----BEGIN RSA PRIVATE KEY-----\nxx\n-----END RSA PRIVATE KEY-----"}),
        json!({"kind": "gitlab", "token": secret, "api_url": "http://gitlab.example.com"}),
    ] {
        let r = dev.call(Method::PUT, &forge, &Auth::Internal, bad.clone()).await;
        assert_eq!(status_and_error(&r), (400, true), "{bad}: {r:?}");
    }
    let shown = dev.get(&forge).await;
    assert_eq!(
        (shown.data()["kind"].as_str(), shown.data()["api_url"].as_str()),
        (Some("token"), Some("https://api.github.com")),
        "the bad ones stored nothing: {shown:?}"
    );
    // A rig's own credentials override the town's; a rig of another town is not found.
    let rig_forge = format!("/api/towns/{town}/rigs/{rig}/forge");
    let r = dev
        .call(Method::PUT, &rig_forge, &Auth::Internal, json!({"kind": "gitlab", "token": secret}))
        .await;
    assert_eq!((r.status, r.data()["kind"].as_str()), (200, Some("gitlab")), "{r:?}");
    let r = dev.call(Method::DELETE, &rig_forge, &Auth::Internal, Value::Null).await;
    assert_eq!((r.status, r.data()["configured"].clone()), (200, json!(false)), "{r:?}");
    let elsewhere = format!("/api/towns/{town}/rigs/not-a-rig/forge");
    assert_eq!(dev.get(&elsewhere).await.status, 404);
    // Credentials in a git URL: refused, with the way to do it.
    let r = dev
        .post(
            &format!("/api/towns/{town}/rigs"),
            json!({"name": "leaky", "git_url": format!("https://x-access-token:{secret}@github.com/o/r.git")}),
        )
        .await;
    assert_eq!(status_and_error(&r), (400, true), "{r:?}");
    assert!(r.body.to_string().contains("/forge"), "{r:?}");
    // Write-only: no answer above held a secret, and neither does any log line.
    let log = dev.output();
    assert!(!log.contains(secret) && !log.contains(hook), "a secret reached the log");
    assert!(!dev.get(&forge).await.body.to_string().contains(secret));
}

/// A GitHub App's credentials are tried when stored: the Worker signs the app JWT with the
/// platform's crypto (WebCrypto in workerd) and exchanges it at the forge; the forge stand-in
/// checks it with the app's public key. A key that is not the app's shows as the forge's
/// error. Neither the key nor the minted token is ever answered or logged.
#[tokio::test]
async fn a_github_app_mints_its_token_with_the_platforms_crypto() {
    use gastown_e2e::forge_stub::{App, ForgeStub};
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("the app's key");
    let stranger = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("another key");
    let pem = |k: &rsa::RsaPrivateKey| k.to_pkcs1_pem(LineEnding::LF).expect("pem").to_string();
    let forge = ForgeStub::start(App {
        app_id: 4242,
        installation_id: 77,
        public_key: key.to_public_key(),
    })
    .await;
    let dev = WranglerDev::start().await;
    let (town, _) = dev.town_and_rig("apps", "https://example.com/o/r.git").await;
    let path = format!("/api/towns/{town}/forge");
    let app = |k: &rsa::RsaPrivateKey| json!({"kind": "github_app", "api_url": forge.url(), "app_id": 4242, "installation_id": 77, "private_key": pem(k)});
    let r = dev.call(Method::PUT, &path, &Auth::Internal, app(&key)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.data()["last_error"], Value::Null, "{r:?}");
    assert!(r.data()["token_expires_at"].is_string(), "{r:?}");
    let exchanges = forge.exchanges();
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(exchanges[0].verdict, Ok(()), "the app JWT passes GitHub's checks");
    let token = exchanges[0].token.clone().expect("minted");

    let r = dev.call(Method::PUT, &path, &Auth::Internal, app(&stranger)).await;
    let error = r.data()["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("401"), "a key that is not the app's: {r:?}");
    assert!(forge.exchanges()[1].verdict.is_err());

    let log = dev.output();
    let body_line = pem(&key).lines().nth(1).unwrap_or_default().to_string();
    assert!(!log.contains(&token) && !log.contains(&body_line), "a secret reached the log");
    assert!(!dev.get(&path).await.body.to_string().contains(&token));
}
