//! A GitHub App's installation token: the app JWT (RS256, signed by the platform through
//! [`Effects::sign_rs256`]) exchanged at `POST /app/installations/:id/access_tokens`. Tokens
//! live an hour; one is used until it has less than [`REFRESH_BEFORE_SECS`] left.

use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::effects::{Effects, Outbound};
use crate::routes::Method;

/// A token is replaced once it has less than this left.
pub const REFRESH_BEFORE_SECS: i64 = 5 * 60;

/// The DER of a PEM private key as PKCS#8, which WebCrypto imports. GitHub hands out PKCS#1
/// keys (`BEGIN RSA PRIVATE KEY`): those are wrapped in a PKCS#8 `PrivateKeyInfo`.
pub fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    let pem = pem.trim();
    let (label, rest) = pem
        .strip_prefix("-----BEGIN ")
        .and_then(|r| r.split_once("-----"))
        .ok_or("not a PEM block")?;
    let body = rest.strip_suffix(&format!("-----END {label}-----")).ok_or("no PEM end line")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the PEM body is not base64")?;
    match label {
        "PRIVATE KEY" => Ok(der),
        "RSA PRIVATE KEY" => Ok(pkcs1_to_pkcs8(&der)),
        _ => Err(format!("a {label} is not a private key")),
    }
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, AlgorithmIdentifier { rsaEncryption, NULL },
/// OCTET STRING { RSAPrivateKey } }`.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_AND_ALGORITHM: &[u8] = &[
        0x02, 0x01, 0x00, // INTEGER 0
        0x30, 0x0d, // SEQUENCE (13 bytes)
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
        0x01, // 1.2.840.113549.1.1.1
        0x05, 0x00, // NULL
    ];
    let mut inner = VERSION_AND_ALGORITHM.to_vec();
    inner.push(0x04);
    der_length(&mut inner, pkcs1.len());
    inner.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(&mut out, inner.len());
    out.extend(inner);
    out
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    out.push(0x80 | bytes.len() as u8);
    out.extend(bytes);
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The app JWT's signed part: issued a minute ago (clock skew, as GitHub advises), valid nine
/// minutes (GitHub's limit is ten), issued by the app.
pub fn jwt_signing_input(app_id: u64, now_secs: i64) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({"iat": now_secs - 60, "exp": now_secs + 540, "iss": app_id.to_string()});
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// An installation token and when it expires (ISO-8601, as GitHub gives it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InstallationToken {
    pub token: String,
    pub expires_at: String,
}

/// Whether a token expiring at `expires_at` must be replaced now.
pub fn needs_refresh(expires_at: Option<&str>, now_ms: i64) -> bool {
    let left = expires_at.and_then(crate::time::millis_from_iso).map(|at| at - now_ms);
    left.is_none_or(|ms| ms < REFRESH_BEFORE_SECS * 1000)
}

/// Mints an installation token. `Err`: why not, in one line for the forge's `last_error`
/// (never with a secret in it).
pub async fn installation_token<E: Effects>(
    fx: &E,
    api_url: &str,
    app_id: u64,
    installation_id: u64,
    pem: &str,
) -> Result<InstallationToken, String> {
    let key = pkcs8_der(pem)?;
    let input = jwt_signing_input(app_id, fx.now_ms() / 1000);
    let signature = fx
        .sign_rs256(&key, input.as_bytes())
        .await
        .map_err(|e| format!("the app key could not sign: {}", e.public_message()))?;
    let jwt = format!("{input}.{}", b64url(&signature));
    let req = Outbound {
        method: Method::Post,
        url: format!(
            "{}/app/installations/{installation_id}/access_tokens",
            api_url.trim_end_matches('/')
        ),
        headers: vec![
            ("authorization".into(), format!("Bearer {jwt}")),
            ("accept".into(), "application/vnd.github+json".into()),
            ("x-github-api-version".into(), "2022-11-28".into()),
            ("user-agent".into(), "gastown".into()),
        ],
        body: None,
    };
    let answer = fx
        .http(&req)
        .await
        .map_err(|e| format!("the forge could not be reached: {}", e.public_message()))?;
    if answer.status != 201 {
        let message = crate::json::parse(&answer.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        let mut line = format!("the forge refused the app's token ({}): {message}", answer.status);
        shared_types::text::cut_with_ellipsis(&mut line, 300);
        return Err(line);
    }
    // serde's message could quote the answer, which holds the token.
    crate::json::from_text(&answer.body)
        .map_err(|_| "the forge's token answer is not understood".to_string())
}
