//! A loopback stand-in for a forge's REST API, for the Worker's forge tests: it serves what a
//! GitHub App's token exchange needs (`POST /app/installations/:id/access_tokens`), checks the
//! app JWT as GitHub does (RS256 under the app's public key, issued by the app, at most ten
//! minutes long, not expired) and mints installation tokens. It records each exchange.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde_json::{json, Value};

/// One app installation the stand-in knows.
#[derive(Clone)]
pub struct App {
    pub app_id: u64,
    pub installation_id: u64,
    pub public_key: RsaPublicKey,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub installation_id: u64,
    /// Whether the app JWT passed GitHub's checks; why not otherwise.
    pub verdict: Result<(), String>,
    pub token: Option<String>,
}

#[derive(Clone)]
struct Shared {
    app: App,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

pub struct ForgeStub {
    pub addr: SocketAddr,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    _task: tokio::task::JoinHandle<()>,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// GitHub's checks of an app JWT.
fn check(app: &App, authorization: Option<&str>) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = authorization.and_then(|a| a.strip_prefix("Bearer ")).ok_or("no bearer JWT")?;
    let (input, sig) = jwt.rsplit_once('.').ok_or("no signature")?;
    let sig = Signature::try_from(b64.decode(sig).map_err(|e| e.to_string())?.as_slice())
        .map_err(|e| e.to_string())?;
    VerifyingKey::<sha2::Sha256>::new(app.public_key.clone())
        .verify(input.as_bytes(), &sig)
        .map_err(|_| "A JSON web token could not be decoded".to_string())?;
    let (header, claims) = input.split_once('.').ok_or("no claims")?;
    let decode = |part: &str| -> Result<Value, String> {
        serde_json::from_slice(&b64.decode(part).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    let now = now_secs();
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if header["alg"] != "RS256" {
        return Err("'alg' must be RS256".into());
    }
    if claims["iss"] != json!(app.app_id.to_string()) {
        return Err("'iss' is not this app".into());
    }
    if iat > now + 30 || exp <= now || exp - iat > 600 {
        return Err("'iat' and 'exp' must span at most ten minutes around now".into());
    }
    Ok(())
}

async fn access_tokens(
    State(shared): State<Shared>,
    Path(installation_id): Path<u64>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let verdict = check(&shared.app, auth);
    let known = installation_id == shared.app.installation_id;
    let mut exchanges = shared.exchanges.lock().unwrap_or_else(|p| p.into_inner());
    let (status, body, token) = match (&verdict, known) {
        (Err(why), _) => (StatusCode::UNAUTHORIZED, json!({"message": why}), None),
        (Ok(()), false) => (StatusCode::NOT_FOUND, json!({"message": "Not Found"}), None),
        (Ok(()), true) => {
            let token = format!("ghs_stub{}x{}", installation_id, exchanges.len() + 1);
            let body = json!({"token": token, "expires_at": iso(now_secs() + 3600)});
            (StatusCode::CREATED, body, Some(token))
        }
    };
    exchanges.push(Exchange { installation_id, verdict, token });
    (status, Json(body))
}

/// Seconds since the epoch as GitHub writes times (`2026-12-07T01:00:00Z`).
fn iso(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl ForgeStub {
    pub async fn start(app: App) -> Self {
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { app, exchanges: exchanges.clone() };
        let router = axum::Router::new()
            .route("/app/installations/{id}/access_tokens", axum::routing::post(access_tokens))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, exchanges, _task: task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().map(|e| e.clone()).unwrap_or_default()
    }
}
