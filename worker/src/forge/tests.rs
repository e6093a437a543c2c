use base64::Engine;
use serde_json::json;

use super::*;
use crate::api::plan_for;
use crate::auth::Caller;
use crate::effects::Inbound;
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

pub(super) fn run<O: TownOp>(town: &TownObject<'_, NativeDb, World>, op: O) -> ApiResult<Value> {
    block_on(town.handle(&TownCall::of(&op).expect("a town op"), None))
}

pub(super) fn token_forge() -> ForgeInput {
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
    let (db, memory, rig_id) = town_with_rig(&world);
    let town = TownObject { db: &db, fx: &world, memory: &memory };

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

/// A 2048-bit RSA key made for these tests only (PKCS#1, as GitHub hands out app keys).
const APP_KEY: &str = include_str!("test-app-key.pem");

fn app_forge(api_url: &str) -> ForgeInput {
    ForgeInput {
        kind: ForgeKind::GithubApp,
        api_url: Some(api_url.into()),
        app_id: Some(4242),
        installation_id: Some(77),
        private_key: Some(Secret(APP_KEY.into())),
        token: None,
        webhook_secret: None,
        allow_local: true,
    }
}

/// Checks an app JWT as GitHub does: RS256 under the app's public key, issued by the app,
/// not yet expired. `Err` says why not.
fn verify_app_jwt(authorization: &str, now_secs: i64) -> Result<(), String> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::Verifier;
    let jwt = authorization.strip_prefix("Bearer ").ok_or("not a bearer token")?;
    let (input, sig) = jwt.rsplit_once('.').ok_or("no signature")?;
    let sig =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    let key =
        rsa::RsaPrivateKey::from_pkcs8_der(&app::pkcs8_der(APP_KEY)?).map_err(|e| e.to_string())?;
    let verifying = VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
    let sig = Signature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
    verifying.verify(input.as_bytes(), &sig).map_err(|e| e.to_string())?;
    let claims = input.split('.').nth(1).ok_or("no claims")?;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if claims["iss"] != "4242" || iat > now_secs || exp <= now_secs || exp - iat > 600 {
        return Err(format!("bad claims: {claims}"));
    }
    Ok(())
}

/// Town `t1` with one rig, in the world: its storage, its memory and the rig's id.
pub(super) fn town_with_rig(world: &World) -> (NativeDb, Memory, String) {
    let db = NativeDb::with(crate::town::MIGRATIONS);
    let memory = Memory::default();
    let town = TownObject { db: &db, fx: world, memory: &memory };
    let new_town: crate::town::NewTown =
        serde_json::from_value(json!({"name": "t"})).expect("town");
    run(&town, CreateTown { town_id: "t1".into(), town: new_town }).expect("town");
    let rig: crate::town::NewRig =
        serde_json::from_value(json!({"name": "r", "git_url": "https://example.com/o/r.git"}))
            .expect("rig");
    let rig_id =
        run(&town, CreateRig { rig }).expect("rig")["id"].as_str().expect("id").to_string();
    (db, memory, rig_id)
}

fn minting(world: &World) {
    let now_ms = world.now_ms.clone();
    let minted = std::rc::Rc::new(std::cell::Cell::new(0));
    world.forge_answers(move |req| {
        let auth = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone());
        let now = now_ms.get() / 1000;
        match verify_app_jwt(&auth.unwrap_or_default(), now) {
            Ok(()) if req.url == "http://127.0.0.1:9/api/app/installations/77/access_tokens" => {
                minted.set(minted.get() + 1);
                let expires = crate::time::iso_from_millis((now + 3600) * 1000);
                Inbound::new(
                    201,
                    json!({"token": format!("ghs_minted{}", minted.get()), "expires_at": expires})
                        .to_string(),
                )
            }
            Ok(()) => Inbound::new(404, json!({"message": "Not Found"}).to_string()),
            Err(e) => Inbound::new(401, json!({"message": e}).to_string()),
        }
    });
}

#[test]
fn a_github_app_mints_installation_tokens_and_refreshes_them_before_they_expire() {
    let world = World::new(&[]);
    minting(&world);
    let (db, memory, rig_id) = town_with_rig(&world);
    let town = TownObject { db: &db, fx: &world, memory: &memory };
    let put = run(&town, PutForge { rig_id: None, forge: app_forge("http://127.0.0.1:9/api") })
        .expect("put");
    assert_eq!(put["last_error"], Value::Null, "{put}");
    assert!(put["token_expires_at"].is_string(), "minted when stored: {put}");
    assert!(!put.to_string().contains("ghs_minted"), "the token is never shown: {put}");

    let first = run(&town, ForgeToken { rig_id: rig_id.clone() }).expect("a token");
    assert_eq!(first["token"], "ghs_minted1", "the one minted when stored, still fresh");
    world.now_ms.set(world.now_ms.get() + 50 * 60 * 1000);
    assert_eq!(
        run(&town, ForgeToken { rig_id: rig_id.clone() }).expect("token")["token"],
        "ghs_minted1"
    );
    // Less than five minutes left: a new one.
    world.now_ms.set(world.now_ms.get() + 6 * 60 * 1000);
    assert_eq!(run(&town, ForgeToken { rig_id }).expect("token")["token"], "ghs_minted2");
    assert_eq!(world.forge_calls.borrow().len(), 2);
}

#[test]
fn a_wrong_app_key_or_installation_shows_as_the_forge_error() {
    let world = World::new(&[]);
    minting(&world);
    let (db, memory, rig_id) = town_with_rig(&world);
    let town = TownObject { db: &db, fx: &world, memory: &memory };
    let mut wrong = app_forge("http://127.0.0.1:9/api");
    wrong.installation_id = Some(78);
    let put = run(&town, PutForge { rig_id: None, forge: wrong }).expect("stored");
    let error = put["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("404") && error.contains("Not Found"), "{put}");
    assert_eq!(put["token_expires_at"], Value::Null);
    let token = run(&town, ForgeToken { rig_id: rig_id.clone() });
    assert_eq!(token.map_err(|e| e.status()).map(|_| ()), Err(503));

    // Another key than the app's: the forge's signature check refuses the app JWT.
    let mut other = app_forge("http://127.0.0.1:9/api");
    other.private_key = Some(Secret(include_str!("other-app-key.pem").into()));
    let put = run(&town, PutForge { rig_id: None, forge: other }).expect("stored");
    assert!(put["last_error"].as_str().is_some_and(|e| e.contains("401")), "{put}");
    let no_forge =
        run(&town, DeleteForge { rig_id: None }).and_then(|_| run(&town, ForgeToken { rig_id }));
    assert_eq!(no_forge.map_err(|e| e.status()).map(|_| ()), Err(404));
}

#[test]
fn pkcs1_keys_are_wrapped_as_pkcs8() {
    use rsa::pkcs8::DecodePrivateKey;
    let der = app::pkcs8_der(APP_KEY).expect("wrapped");
    assert!(rsa::RsaPrivateKey::from_pkcs8_der(&der).is_ok(), "a PKCS#8 key WebCrypto imports");
    assert!(app::pkcs8_der("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err());
    assert!(app::needs_refresh(None, 0));
    assert!(app::needs_refresh(
        Some("2026-01-01T00:04:00.000Z"),
        crate::time::millis_from_iso("2026-01-01T00:00:00.000Z").unwrap_or(0)
    ));
    assert!(!app::needs_refresh(
        Some("2026-01-01T00:06:00.000Z"),
        crate::time::millis_from_iso("2026-01-01T00:00:00.000Z").unwrap_or(0)
    ));
}

#[test]
fn only_the_container_asks_for_a_rigs_token() {
    let path = "/api/towns/t1/container/rigs/r1/forge-token";
    let matched = crate::routes::find(Method::Post, path).expect("a route");
    assert_eq!(matched.access(), crate::routes::Access::Container);
    let plan = plan_for(Method::Post, path, Caller::Container, "");
    let Ok(Plan::Town { town_id, op, status: 200 }) = plan else { panic!("{plan:?}") };
    assert_eq!(town_id, "t1");
    assert_eq!(op, TownCall::of(&ForgeToken { rig_id: "r1".into() }).expect("op"));
}
