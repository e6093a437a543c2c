use base64::Engine;
use serde_json::json;

use super::*;
use crate::api::plan_for;
use crate::auth::Caller;
use crate::native_db::NativeDb;
use crate::native_world::{block_on, World};
use crate::routes::Method;
use crate::town::object::Memory;
use crate::town::op::TownCall;
use crate::town::{CreateRig, CreateTown};

/// A PEM block around bytes shaped like a DER key (the check is structural).
fn pem_key() -> String {
    let mut der = vec![0x30, 0x82, 0x04, 0xa4];
    der.extend((0..600u32).map(|i| (i * 7 % 251) as u8));
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn put(body: Value) -> ApiResult<Plan> {
    plan_for(Method::Put, "/api/towns/t1/forge", Caller::Internal, &body.to_string())
}

#[test]
fn bad_credentials_are_refused_before_anything_is_stored() {
    let app =
        json!({"kind": "github_app", "app_id": 1, "installation_id": 2, "private_key": pem_key()});
    assert!(
        matches!(put(app.clone()), Ok(Plan::Town { status: 200, .. })),
        "{:?}",
        put(app.clone())
    );
    let mut bad_cases = vec![
        (
            "a malformed PEM",
            json!({"kind": "github_app", "app_id": 1, "installation_id": 2, "private_key": "-----BEGIN RSA PRIVATE KEY-----\nnot base64!\n-----END RSA PRIVATE KEY-----"}),
        ),
        (
            "a PEM that is not a key",
            json!({"kind": "github_app", "app_id": 1, "installation_id": 2, "private_key": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}),
        ),
        ("an unknown kind", json!({"kind": "bitbucket", "token": "tok_SECRET_1"})),
        (
            "an http api_url",
            json!({"kind": "token", "token": "tok_SECRET_1", "api_url": "http://api.example.com"}),
        ),
        (
            "credentials in the api_url",
            json!({"kind": "token", "token": "tok_SECRET_1", "api_url": "https://u:p@api.example.com"}),
        ),
        ("a token with a space", json!({"kind": "gitlab", "token": "tok SECRET_2"})),
        ("a token kind without a token", json!({"kind": "token"})),
        ("an app without its ids", json!({"kind": "github_app", "private_key": pem_key()})),
    ];
    let mut with_key = app.clone();
    with_key["kind"] = json!("token");
    with_key["token"] = json!("tok_SECRET_1");
    bad_cases.push(("app fields on a token", with_key));
    for (what, body) in bad_cases {
        let e = put(body.clone()).expect_err(what);
        assert_eq!(e.status(), 400, "{what}");
        let answer = e.envelope().to_string();
        for secret in ["private_key", "token"].iter().filter_map(|k| body[k].as_str()) {
            let inner = secret.lines().nth(1).unwrap_or(secret);
            assert!(!answer.contains(inner), "{what}: the secret is echoed: {answer}");
        }
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let input = token_forge();
    let shown = format!("{input:?} {:?}", PutForge { rig_id: None, forge: input.clone() });
    assert!(!shown.contains("very_secret") && !shown.contains("whsec_value"), "{shown}");
}

#[test]
fn credential_urls_are_refused_and_plain_ones_pass() {
    for bad in [
        "https://x-access-token:ghs_abc@github.com/o/r.git",
        "https://ghp_abc@github.com/o/r.git",
        "ssh://git:pw@example.com/o/r.git",
    ] {
        assert!(no_credentials_in(bad).is_err(), "{bad}");
    }
    for good in [
        "https://github.com/o/r.git",
        "git@github.com:o/r.git",
        "ssh://git@example.com/o/r.git",
        "file:///tmp/o.git",
    ] {
        assert_eq!(no_credentials_in(good), Ok(()), "{good}");
    }
    let rig = json!({"name": "r", "git_url": "https://x-access-token:ghs_abc@github.com/o/r.git"});
    let e = plan_for(Method::Post, "/api/towns/t1/rigs", Caller::Internal, &rig.to_string())
        .expect_err("refused");
    assert!(e.envelope().to_string().contains("forge"), "{}", e.envelope());
    let config = json!({"town_id": "t1", "git_url": "https://u:p@github.com/o/r.git"});
    let e = plan_for(Method::Put, "/api/rigs/r1/config", Caller::Internal, &config.to_string());
    assert_eq!(e.map_err(|e| e.status()).map(|_| ()), Err(400));
}

fn run<O: TownOp>(town: &TownObject<'_, NativeDb, World>, op: O) -> ApiResult<Value> {
    block_on(town.handle(&TownCall::of(&op).expect("a town op"), None))
}

fn token_forge() -> ForgeInput {
    ForgeInput {
        kind: ForgeKind::Token,
        api_url: None,
        app_id: None,
        installation_id: None,
        private_key: None,
        token: Some(Secret("ghp_very_secret".into())),
        webhook_secret: Some(Secret("whsec_value_123".into())),
        allow_local: false,
    }
}

#[test]
fn the_town_keeps_credentials_write_only() {
    let world = World::new(&[]);
    let db = NativeDb::with(crate::town::MIGRATIONS);
    let memory = Memory::default();
    let town = TownObject { db: &db, fx: &world, memory: &memory };
    let new_town: crate::town::NewTown =
        serde_json::from_value(json!({"name": "t"})).expect("town");
    run(&town, CreateTown { town_id: "t1".into(), town: new_town }).expect("town");
    let rig: crate::town::NewRig =
        serde_json::from_value(json!({"name": "r", "git_url": "https://example.com/o/r.git"}))
            .expect("rig");
    let rig = run(&town, CreateRig { rig }).expect("rig");
    let rig_id = rig["id"].as_str().expect("id").to_string();

    let put = run(&town, PutForge { rig_id: None, forge: token_forge() }).expect("put");
    let got = run(&town, GetForge { rig_id: None }).expect("get");
    for shown in [&put, &got] {
        assert_eq!(shown["configured"], true, "{shown}");
        assert_eq!(
            (shown["kind"].as_str(), shown["api_url"].as_str()),
            (Some("token"), Some("https://api.github.com"))
        );
        let text = shown.to_string();
        assert!(!text.contains("very_secret") && !text.contains("whsec_value"), "{text}");
    }
    // A rig's override: only for a rig of this town; the town's own stays.
    let other = run(&town, PutForge { rig_id: Some("elsewhere".into()), forge: token_forge() });
    assert_eq!(other.map_err(|e| e.status()), Err(404));
    let over = run(&town, PutForge { rig_id: Some(rig_id.clone()), forge: token_forge() });
    assert_eq!(over.expect("override")["scope"], format!("rig:{rig_id}"));
    run(&town, DeleteForge { rig_id: Some(rig_id.clone()) }).expect("delete");
    let gone = run(&town, GetForge { rig_id: Some(rig_id) }).expect("get");
    assert_eq!(gone["configured"], false);
    assert_eq!(run(&town, GetForge { rig_id: None }).expect("get")["configured"], true);
    assert!(world.errors.borrow().iter().all(|e| !e.contains("very_secret")));
}
