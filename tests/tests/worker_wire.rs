//! Wire compatibility with the reference Worker (Kilo-Org/cloud `cloudflare-gastown` at
//! e449a663), route by route: status codes, bodies and error strings as the reference answers
//! them (measured; /work/notes/wire-compat.md). One `wrangler dev` for every case. Where we
//! deliberately differ, README "Wire compatibility with the reference" lists it.

use gastown_e2e::wrangler::{
    agent_token, now_secs, sign_jwt, Auth, Reply, WranglerDev, JWT_SECRET,
};
use reqwest::Method;
use serde_json::{json, Value};

fn err(msg: &str) -> Value {
    json!({"success": false, "error": msg})
}

fn ok(data: Value) -> Value {
    json!({"success": true, "data": data})
}

fn invalid(issues: Value) -> Value {
    json!({"success": false, "error": "Invalid request body", "issues": issues})
}

fn sr(r: &Reply) -> (u16, Value) {
    (r.status, r.body.clone())
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(id).collect()
}

const NULL_BODY: &str = r#"[{"expected":"object","code":"invalid_type","path":[],"message":"Invalid input: expected object, received null"}]"#;

#[tokio::test]
async fn every_reference_route_answers_as_the_reference() {
    let dev = WranglerDev::start().await;
    let rig = dev.configured_rig().await;
    let internal = Auth::Internal;
    let call = |m: Method, path: String, auth: Auth, body: Value| {
        let dev = &dev;
        async move { dev.call(m, &path, &auth, body).await }
    };

    // --- 2.2 /health, 404s, no 405 ---
    assert_eq!(
        sr(&call(Method::GET, "/health".into(), Auth::None, Value::Null).await),
        (200, json!({"status": "ok"}))
    );
    for (m, p) in [
        (Method::POST, "/health"),
        (Method::GET, "/health/"),
        (Method::GET, "/nope"),
        (Method::GET, "/api/unknown"),
    ] {
        assert_eq!(
            sr(&call(m.clone(), p.into(), Auth::None, Value::Null).await),
            (404, err("Not found")),
            "{m} {p}"
        );
    }
    assert_eq!(
        sr(&call(Method::PUT, format!("/api/rigs/{rig}/beads"), internal.clone(), json!({})).await),
        (404, err("Not found"))
    );

    // --- 1.3 auth before 404 and before id checks ---
    for p in [
        format!("/api/rigs/{rig}"),
        format!("/api/rigs/{rig}/nope"),
        "/api/towns/t1/whatever".into(),
        "/api/rigs/a.b/beads".into(),
    ] {
        assert_eq!(
            sr(&call(Method::GET, p.clone(), Auth::None, Value::Null).await),
            (401, err("Authentication required")),
            "{p}"
        );
    }
    assert_eq!(
        sr(&call(Method::GET, format!("/api/rigs/{rig}/nope"), internal.clone(), Value::Null)
            .await),
        (404, err("Not found"))
    );
    assert_eq!(
        call(Method::GET, "/api/rigs/a.b/beads".into(), internal.clone(), Value::Null).await.status,
        400,
        "our id alphabet, after auth"
    );

    // --- 2.8 register: the reference's record ---
    let reg =
        |name: &str| json!({"role": "polecat", "name": name, "identity": format!("{name}@{rig}")});
    let r =
        call(Method::POST, format!("/api/rigs/{rig}/agents"), internal.clone(), reg("toast")).await;
    assert_eq!(r.status, 201, "{r:?}");
    let toast = r.data().clone();
    let mut keys: Vec<&String> = toast.as_object().expect("agent").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "checkpoint",
            "cloud_agent_session_id",
            "created_at",
            "current_hook_bead_id",
            "id",
            "identity",
            "last_activity_at",
            "name",
            "role",
            "status"
        ]
    );
    assert_eq!(toast["cloud_agent_session_id"], Value::Null);
    assert_eq!(toast["last_activity_at"], toast["created_at"]);
    assert_eq!(
        (toast["status"].clone(), toast["checkpoint"].clone()),
        (json!("idle"), Value::Null)
    );
    let a1 = id(&toast);
    let a2 =
        id(call(Method::POST, format!("/api/rigs/{rig}/agents"), internal.clone(), reg("nux"))
            .await
            .data());
    let me = Auth::Bearer(agent_token(&a1, &rig));
    let r = call(
        Method::POST,
        format!("/api/rigs/{rig}/agents"),
        internal.clone(),
        json!({"role": "king", "name": "", "identity": 5}),
    )
    .await;
    assert_eq!(
        sr(&r),
        (
            400,
            invalid(json!([
                {"code": "invalid_value", "values": ["polecat", "refinery", "mayor", "witness"], "path": ["role"], "message": "Invalid option: expected one of \"polecat\"|\"refinery\"|\"mayor\"|\"witness\""},
                {"origin": "string", "code": "too_small", "minimum": 1, "inclusive": true, "path": ["name"], "message": "Too small: expected string to have >=1 characters"},
                {"expected": "string", "code": "invalid_type", "path": ["identity"], "message": "Invalid input: expected string, received number"}
            ]))
        )
    );

    // --- 1.3/1.5 agent checks before 404; internal-only prefixes ---
    assert_eq!(
        sr(&call(Method::GET, format!("/api/rigs/{rig}/agents/{a2}/zzz"), me.clone(), Value::Null)
            .await),
        (403, err("Token agentId does not match route"))
    );
    assert_eq!(
        sr(&call(Method::GET, format!("/api/rigs/{rig}/agents/{a1}/zzz"), me.clone(), Value::Null)
            .await),
        (404, err("Not found"))
    );
    assert_eq!(
        sr(&call(Method::GET, "/api/towns/t1/whatever".into(), me.clone(), Value::Null).await),
        (403, err("Forbidden: internal auth required"))
    );

    // --- 1.5 authentication strings ---
    let beads = format!("/api/rigs/{rig}/beads");
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let now = now_secs();
    let claims = |extra: Value| {
        let mut c = json!({"agentId": a1, "rigId": rig, "townId": "t", "userId": "u", "iat": now, "exp": now + 600});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign_jwt(&hs, &c, JWT_SECRET)
    };
    for (name, auth, status, msg) in [
        ("no credentials", Auth::None, 401, "Authentication required"),
        ("wrong key", Auth::Key("wrong".into()), 401, "Unauthorized"),
        ("garbage", Auth::Bearer("not.a.jwt".into()), 401, "Invalid token signature"),
        (
            "wrong secret",
            Auth::Bearer(sign_jwt(
                &hs,
                &json!({"agentId": a1, "rigId": rig, "townId": "t", "userId": "u", "iat": now, "exp": now + 60}),
                "other",
            )),
            401,
            "Invalid token signature",
        ),
        (
            "HS512",
            Auth::Bearer(sign_jwt(
                &json!({"alg": "HS512"}),
                &json!({"agentId": a1, "rigId": rig, "townId": "t", "userId": "u", "iat": now, "exp": now + 60}),
                JWT_SECRET,
            )),
            401,
            "Invalid token signature",
        ),
        ("expired", Auth::Bearer(claims(json!({"exp": now - 5}))), 401, "Token expired"),
        (
            "older than 24 h",
            Auth::Bearer(claims(json!({"iat": now - 86_401}))),
            401,
            "Token expired",
        ),
        ("no iat", Auth::Bearer(claims(json!({"iat": null}))), 401, "Invalid token signature"),
        (
            "nbf ahead",
            Auth::Bearer(claims(json!({"nbf": now + 600}))),
            401,
            "Invalid token signature",
        ),
        ("claims", Auth::Bearer(claims(json!({"userId": null}))), 401, "Invalid token payload"),
        (
            "other rig",
            Auth::Bearer(agent_token(&a1, "other-rig")),
            403,
            "Token rigId does not match route",
        ),
        ("good", me.clone(), 200, ""),
    ] {
        let r = call(Method::GET, beads.clone(), auth, Value::Null).await;
        if status == 200 {
            assert_eq!(r.status, 200, "{name}: {r:?}");
        } else {
            assert_eq!(sr(&r), (status, err(msg)), "{name}");
        }
    }
    let basic =
        dev.call_headers(Method::GET, &beads, &[("Authorization", "Basic abc")], Value::Null).await;
    assert_eq!(sr(&basic), (401, err("Authentication required")));

    // --- 2.3 create bead ---
    let r = dev.call_raw(Method::POST, &beads, &internal, Vec::new()).await;
    assert_eq!(sr(&r), (400, invalid(serde_json::from_str(NULL_BODY).expect("json"))));
    let r = dev.call_raw(Method::POST, &beads, &internal, b"{oops".to_vec()).await;
    assert_eq!(sr(&r), (400, invalid(serde_json::from_str(NULL_BODY).expect("json"))));
    let r = call(
        Method::POST,
        beads.clone(),
        internal.clone(),
        json!({"title": "", "labels": "x", "metadata": [1]}),
    )
    .await;
    assert_eq!(
        sr(&r),
        (
            400,
            invalid(json!([
                {"code": "invalid_value", "values": ["issue", "message", "escalation", "merge_request"], "path": ["type"], "message": "Invalid option: expected one of \"issue\"|\"message\"|\"escalation\"|\"merge_request\""},
                {"origin": "string", "code": "too_small", "minimum": 1, "inclusive": true, "path": ["title"], "message": "Too small: expected string to have >=1 characters"},
                {"expected": "array", "code": "invalid_type", "path": ["labels"], "message": "Invalid input: expected array, received string"},
                {"expected": "record", "code": "invalid_type", "path": ["metadata"], "message": "Invalid input: expected record, received array"}
            ]))
        )
    );
    // Our own stricter rules are issues of the same error.
    let r = call(
        Method::POST,
        beads.clone(),
        internal.clone(),
        json!({"type": "issue", "title": "   "}),
    )
    .await;
    assert_eq!(
        (
            r.status,
            r.error().to_string(),
            r.body["issues"][0]["path"].clone(),
            r.body["issues"][0]["code"].clone()
        ),
        (400, "Invalid request body".into(), json!(["title"]), json!("custom"))
    );
    let r = call(Method::POST, beads.clone(), me.clone(), json!({"type": "issue", "title": "one"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let b1 = r.data().clone();
    let mut keys: Vec<&String> = b1.as_object().expect("bead").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "assignee_agent_id",
            "body",
            "closed_at",
            "convoy_id",
            "created_at",
            "id",
            "labels",
            "metadata",
            "molecule_id",
            "priority",
            "status",
            "title",
            "type",
            "updated_at"
        ]
    );
    assert_eq!(
        (
            b1["status"].clone(),
            b1["priority"].clone(),
            b1["labels"].clone(),
            b1["metadata"].clone()
        ),
        (json!("open"), json!("medium"), json!([]), json!({}))
    );
    let b2 = call(
        Method::POST,
        beads.clone(),
        internal.clone(),
        json!({"type": "issue", "title": "two", "assignee_agent_id": a1}),
    )
    .await
    .data()
    .clone();
    let b3 = call(
        Method::POST,
        beads.clone(),
        internal.clone(),
        json!({"type": "message", "title": "three"}),
    )
    .await
    .data()
    .clone();
    let (b1, b2, b3) = (id(&b1), id(&b2), id(&b3));

    // --- 2.4 list beads: newest first, default limit 100, limit=0, the two messages ---
    assert_eq!(
        ids(call(Method::GET, beads.clone(), internal.clone(), Value::Null).await.data()),
        [b3.clone(), b2.clone(), b1.clone()]
    );
    assert_eq!(
        ids(call(Method::GET, format!("{beads}?limit=1&offset=1"), internal.clone(), Value::Null)
            .await
            .data()),
        vec![b2.clone()]
    );
    assert_eq!(
        sr(&call(Method::GET, format!("{beads}?limit=0"), internal.clone(), Value::Null).await),
        (200, ok(json!([])))
    );
    for q in ["limit=-1", "offset=x", "limit=1.5&status=bogus"] {
        assert_eq!(
            sr(&call(Method::GET, format!("{beads}?{q}"), internal.clone(), Value::Null).await),
            (400, err("limit and offset must be non-negative integers")),
            "{q}"
        );
    }
    for q in ["status=bogus", "type=epic", "status="] {
        assert_eq!(
            sr(&call(Method::GET, format!("{beads}?{q}"), internal.clone(), Value::Null).await),
            (400, err("Invalid status or type filter")),
            "{q}"
        );
    }

    // --- 2.5 get bead ---
    let r = call(Method::GET, format!("{beads}/{b1}"), me.clone(), Value::Null).await;
    assert_eq!(id(r.data()), b1);
    assert_eq!(
        sr(&call(Method::GET, format!("{beads}/missing"), internal.clone(), Value::Null).await),
        (404, err("Bead not found"))
    );

    // --- 2.6 status, 2.7 close ---
    let status = format!("{beads}/{b3}/status");
    let r = call(
        Method::PATCH,
        status.clone(),
        me.clone(),
        json!({"status": "in_progress", "agent_id": a2}),
    )
    .await;
    assert_eq!(sr(&r), (403, err("agent_id does not match authenticated agent")));
    let r = call(Method::PATCH, status.clone(), me.clone(), json!({"status": "in_progress"})).await;
    assert_eq!(
        sr(&r),
        (
            400,
            invalid(
                json!([{"expected": "string", "code": "invalid_type", "path": ["agent_id"], "message": "Invalid input: expected string, received undefined"}])
            )
        ),
        "validation comes before the identity check"
    );
    let r =
        call(Method::PATCH, status, me.clone(), json!({"status": "in_progress", "agent_id": a1}))
            .await;
    assert_eq!((r.status, r.data()["status"].clone()), (200, json!("in_progress")));
    let r = call(Method::POST, format!("{beads}/{b3}/close"), me.clone(), json!({"agent_id": a1}))
        .await;
    assert_eq!(
        (r.status, r.data()["status"].clone(), r.data()["closed_at"].is_string()),
        (200, json!("closed"), true)
    );
    assert_eq!(
        sr(&call(Method::POST, format!("{beads}/{b3}/close"), me.clone(), json!({"agent_id": a2}))
            .await),
        (403, err("agent_id does not match authenticated agent"))
    );

    // --- 2.9 list agents, 2.10 get agent (any agent of the rig may read any agent) ---
    let agents = format!("/api/rigs/{rig}/agents");
    assert_eq!(
        ids(call(Method::GET, format!("{agents}?role=polecat"), me.clone(), Value::Null)
            .await
            .data()),
        [a1.clone(), a2.clone()]
    );
    for q in ["role=king", "status=sleeping", "role="] {
        assert_eq!(
            sr(&call(Method::GET, format!("{agents}?{q}"), internal.clone(), Value::Null).await),
            (400, err("Invalid role or status filter")),
            "{q}"
        );
    }
    assert_eq!(
        id(call(Method::GET, format!("{agents}/{a2}"), me.clone(), Value::Null).await.data()),
        a2
    );
    assert_eq!(
        sr(&call(Method::GET, format!("{agents}/missing"), internal.clone(), Value::Null).await),
        (404, err("Agent not found"))
    );

    // --- 2.11 hook ---
    let hook = format!("{agents}/{a1}/hook");
    assert_eq!(
        sr(&call(Method::POST, format!("{agents}/{a2}/hook"), me.clone(), json!({})).await),
        (403, err("Token agentId does not match route")),
        "agent check before the body"
    );
    assert_eq!(
        sr(&call(Method::POST, hook.clone(), me.clone(), json!({"bead_id": b1})).await),
        (200, ok(json!({"hooked": true})))
    );
    assert_eq!(
        sr(&call(Method::POST, hook.clone(), me.clone(), json!({"bead_id": b1})).await),
        (200, ok(json!({"hooked": true}))),
        "again"
    );

    // --- 2.18 send mail ---
    let mail = format!("/api/rigs/{rig}/mail");
    let r = call(
        Method::POST,
        mail.clone(),
        me.clone(),
        json!({"from_agent_id": a2, "to_agent_id": a1, "subject": "s", "body": "b"}),
    )
    .await;
    assert_eq!(sr(&r), (403, err("from_agent_id does not match authenticated agent")));
    let r = call(
        Method::POST,
        mail.clone(),
        internal.clone(),
        json!({"from_agent_id": a2, "to_agent_id": a1, "subject": "s", "body": ""}),
    )
    .await;
    assert_eq!(
        sr(&r),
        (
            400,
            invalid(
                json!([{"origin": "string", "code": "too_small", "minimum": 1, "inclusive": true, "path": ["body"], "message": "Too small: expected string to have >=1 characters"}])
            )
        )
    );
    let r = call(
        Method::POST,
        mail.clone(),
        internal.clone(),
        json!({"from_agent_id": a2, "to_agent_id": a1, "subject": "hi", "body": "hurry"}),
    )
    .await;
    assert_eq!(sr(&r), (201, ok(json!({"sent": true}))));

    // --- 2.13 prime: open_beads are the agent's own unfinished beads, newest first ---
    let prime = call(Method::GET, format!("{agents}/{a1}/prime"), me.clone(), Value::Null).await;
    let p = prime.data();
    let mut keys: Vec<&String> = p.as_object().expect("prime").keys().collect();
    keys.sort();
    assert_eq!(keys, ["agent", "hooked_bead", "open_beads", "undelivered_mail"]);
    assert_eq!((id(&p["agent"]), id(&p["hooked_bead"])), (a1.clone(), b1.clone()));
    assert_eq!(
        ids(&p["open_beads"]),
        [b2.clone(), b1.clone()],
        "b1 hooked (in_progress) and b2 assigned; b3 closed"
    );
    assert_eq!(p["undelivered_mail"].as_array().map(Vec::len), Some(1));

    // --- 2.16 check mail: the rows as read ---
    let check = format!("{agents}/{a1}/mail");
    let r = call(Method::GET, check.clone(), me.clone(), Value::Null).await;
    let m = r.data()[0].clone();
    assert_eq!(
        (m["subject"].clone(), m["delivered"].clone(), m["delivered_at"].clone()),
        (json!("hi"), json!(false), Value::Null)
    );
    assert_eq!(sr(&call(Method::GET, check, me.clone(), Value::Null).await), (200, ok(json!([]))));

    // --- 2.15 checkpoint ---
    let checkpoint = format!("{agents}/{a1}/checkpoint");
    assert_eq!(
        sr(&call(Method::POST, checkpoint.clone(), me.clone(), json!({"data": {"step": 2}})).await),
        (200, ok(json!({"written": true})))
    );
    assert_eq!(
        call(Method::GET, format!("{agents}/{a1}"), internal.clone(), Value::Null).await.data()
            ["checkpoint"],
        json!({"step": 2})
    );
    assert_eq!(
        sr(&call(Method::POST, checkpoint.clone(), me.clone(), json!({})).await),
        (200, ok(json!({"written": true})))
    );
    assert_eq!(
        call(Method::GET, format!("{agents}/{a1}"), internal.clone(), Value::Null).await.data()
            ["checkpoint"],
        Value::Null
    );
    let r = dev.call_raw(Method::POST, &checkpoint, &me, b"null".to_vec()).await;
    assert_eq!(sr(&r), (400, invalid(serde_json::from_str(NULL_BODY).expect("json"))));

    // --- 2.17 heartbeat: also for an unknown agent ---
    assert_eq!(
        sr(&call(Method::POST, format!("{agents}/{a1}/heartbeat"), me.clone(), Value::Null).await),
        (200, ok(json!({"heartbeat": true})))
    );
    assert_eq!(
        sr(&call(
            Method::POST,
            format!("{agents}/ghost/heartbeat"),
            internal.clone(),
            json!({"status": "running"})
        )
        .await),
        (200, ok(json!({"heartbeat": true})))
    );

    // --- 2.14 done: also with nothing hooked ---
    let done = format!("{agents}/{a1}/done");
    let r = call(Method::POST, done.clone(), me.clone(), json!({"branch": ""})).await;
    assert_eq!(r.body["issues"][0]["code"], json!("too_small"), "{r:?}");
    assert_eq!(
        sr(&call(Method::POST, done.clone(), me.clone(), json!({"branch": "polecat/toast/b1"}))
            .await),
        (200, ok(json!({"done": true})))
    );
    let agent = call(Method::GET, format!("{agents}/{a1}"), internal.clone(), Value::Null).await;
    assert_eq!(
        (agent.data()["status"].clone(), agent.data()["current_hook_bead_id"].clone()),
        (json!("idle"), Value::Null)
    );
    assert_eq!(
        sr(&call(Method::POST, done, me.clone(), json!({"branch": "polecat/toast/b1"})).await),
        (200, ok(json!({"done": true})))
    );

    // --- 2.12 unhook ---
    call(Method::POST, hook.clone(), me.clone(), json!({"bead_id": b2})).await.data();
    assert_eq!(
        sr(&call(Method::DELETE, hook.clone(), me.clone(), Value::Null).await),
        (200, ok(json!({"unhooked": true})))
    );
    assert_eq!(
        call(Method::GET, format!("{agents}/{a1}"), internal.clone(), Value::Null).await.data()
            ["current_hook_bead_id"],
        Value::Null
    );

    // --- 2.19 review queue ---
    let review = format!("/api/rigs/{rig}/review-queue");
    let r = call(
        Method::POST,
        review.clone(),
        me.clone(),
        json!({"agent_id": a2, "bead_id": b2, "branch": "x"}),
    )
    .await;
    assert_eq!(sr(&r), (403, err("agent_id does not match authenticated agent")));
    let r = call(
        Method::POST,
        review.clone(),
        me.clone(),
        json!({"agent_id": a1, "bead_id": b2, "branch": "polecat/toast/b2"}),
    )
    .await;
    assert_eq!(sr(&r), (201, ok(json!({"submitted": true}))));
    let queued: Vec<Value> = call(Method::GET, review, internal.clone(), Value::Null)
        .await
        .data()
        .as_array()
        .expect("queue")
        .iter()
        .map(|e| e["bead_id"].clone())
        .collect();
    assert_eq!(queued, [json!(b1), json!(b2)], "done and the submission each queued one entry");

    // --- 2.20 escalations ---
    let r = call(
        Method::POST,
        format!("/api/rigs/{rig}/escalations"),
        me.clone(),
        json!({"title": "stuck"}),
    )
    .await;
    assert_eq!(
        (r.status, r.data()["type"].clone(), r.data()["priority"].clone()),
        (201, json!("escalation"), json!("medium"))
    );
    let r = call(
        Method::POST,
        format!("/api/rigs/{rig}/escalations"),
        me.clone(),
        json!({"title": "x", "priority": "meh"}),
    )
    .await;
    assert_eq!(r.body["issues"][0]["code"], json!("invalid_value"), "{r:?}");

    // --- 2.21 container routes: the Worker's own body check, internal only ---
    for (path, body) in [
        ("agents/start", Vec::new()),
        ("agents/start", b"null".to_vec()),
        ("agents/a1/message", b"{x".to_vec()),
        ("agents/a1/message", b"0".to_vec()),
    ] {
        let r = dev
            .call_raw(
                Method::POST,
                &format!("/api/towns/t1/container/{path}"),
                &internal,
                body.clone(),
            )
            .await;
        assert_eq!(
            sr(&r),
            (400, err("Invalid JSON body")),
            "{path} {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let r = dev
        .call_raw(Method::POST, "/api/towns/t1/container/agents/start", &me, b"null".to_vec())
        .await;
    assert_eq!(sr(&r), (403, err("Forbidden: internal auth required")));
    let r =
        call(Method::GET, "/api/towns/t1/container/health".into(), Auth::None, Value::Null).await;
    assert_eq!(sr(&r), (401, err("Authentication required")));

    // --- bad input changed nothing ---
    assert_eq!(
        call(Method::GET, beads.clone(), internal.clone(), Value::Null)
            .await
            .data()
            .as_array()
            .map(Vec::len),
        Some(4),
        "three beads and the escalation"
    );
    assert_eq!(
        call(Method::GET, agents, internal.clone(), Value::Null)
            .await
            .data()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
