//! Agent tokens: JWT with HS256 only.
//!
//! A dedicated JWT crate was not needed: the format is three base64url parts, and the only
//! algorithm we accept is HMAC-SHA256, which the RustCrypto `hmac` and `sha2` crates provide in
//! pure Rust (they build for wasm32 without `ring` or C code, and add little to the wasm).
//! Accepting exactly one algorithm also closes the `alg: none` and algorithm-confusion holes by
//! construction: the header's `alg` must be `HS256` before the signature is even checked.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The claims of an agent token, as the reference implementation signs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentClaims {
    pub agent_id: String,
    pub rig_id: String,
    pub town_id: String,
    pub user_id: String,
    /// Expiry, seconds since the epoch. Required (stricter than the reference, which accepts a
    /// token without `exp` for 24 h after `iat`): a token that never expires is refused.
    pub exp: u64,
    /// Issued at. Required by verification, as the reference's `maxAge: '24h'` requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Our addition: `mayor` on the mayor's token (the only role with the mayor's routes);
    /// absent on rig agents' tokens, as the reference signs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The `role` claim of the mayor's token.
pub const MAYOR_ROLE: &str = "mayor";

impl AgentClaims {
    pub fn is_mayor(&self) -> bool {
        self.role.as_deref() == Some(MAYOR_ROLE)
    }
}

/// The reference's `maxAge`: a token issued longer ago than this is expired, whatever its `exp`.
pub const MAX_AGE_SECS: f64 = 24.0 * 3600.0;

/// Why a token was refused. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    UnsupportedAlgorithm,
    BadSignature,
    /// `nbf` in the future, or `nbf`/`exp`/`iat` not numbers.
    InvalidTimes(&'static str),
    /// No `iat` (the 24 h maximum age needs it).
    MissingIat,
    Expired,
    /// The claims are not `agentId`, `rigId`, `townId`, `userId` (strings) and `exp`.
    BadClaims,
}

impl std::fmt::Display for JwtError {
    /// The reference's messages: every verification failure is `Invalid token signature`
    /// (jsonwebtoken's errors), except expiry and bad claims.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed(_)
            | Self::UnsupportedAlgorithm
            | Self::BadSignature
            | Self::InvalidTimes(_)
            | Self::MissingIat => "Invalid token signature",
            Self::Expired => "Token expired",
            Self::BadClaims => "Invalid token payload",
        })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// Signs `claims` as a compact HS256 JWT.
pub fn sign(claims: &AgentClaims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies an HS256 token against `now_secs`, in jsonwebtoken's order: signature, `nbf`, `exp`,
/// `iat` (required; at most 24 h old), then the claims.
pub fn verify(token: &str, secret: &[u8], now_secs: u64) -> Result<AgentClaims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let header_bytes =
        URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed("header is not base64url"))?;
    // Straight from the text, not through `crate::json`: a header with `alg` twice is refused.
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwtError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "HS256" {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let sig =
        URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let payload =
        URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed("payload is not base64url"))?;
    let payload: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed("payload is not JSON"))?;
    if !payload.is_object() {
        return Err(JwtError::Malformed("payload is not a JSON object"));
    }
    let now = now_secs as f64;
    let time = |name: &'static str| match payload.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(JwtError::InvalidTimes(name)),
    };
    if time("nbf")?.is_some_and(|nbf| nbf > now) {
        return Err(JwtError::InvalidTimes("nbf"));
    }
    if time("exp")?.is_some_and(|exp| now >= exp) {
        return Err(JwtError::Expired);
    }
    let iat = time("iat")?.ok_or(JwtError::MissingIat)?;
    if now >= iat + MAX_AGE_SECS {
        return Err(JwtError::Expired);
    }
    crate::json::decode(payload).map_err(|_| JwtError::BadClaims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn claims(exp: u64) -> AgentClaims {
        AgentClaims {
            agent_id: "a1".into(),
            rig_id: "r1".into(),
            town_id: "t1".into(),
            user_id: "u1".into(),
            exp,
            iat: Some(500),
            role: None,
        }
    }

    fn signed(payload: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload.to_string()));
        let mut m = mac(SECRET);
        m.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
    }

    #[test]
    fn iat_nbf_and_max_age() {
        use serde_json::json;
        let base = json!({"agentId": "a", "rigId": "r", "townId": "t", "userId": "u", "exp": 100_000, "iat": 1000});
        assert!(verify(&signed(&base), SECRET, 1000).is_ok());
        let mut no_iat = base.clone();
        no_iat.as_object_mut().expect("object").remove("iat");
        assert_eq!(verify(&signed(&no_iat), SECRET, 1000), Err(JwtError::MissingIat));
        assert_eq!(
            verify(&signed(&base), SECRET, 1000 + 86_400),
            Err(JwtError::Expired),
            "older than 24 h"
        );
        let mut nbf = base.clone();
        nbf["nbf"] = json!(2000);
        assert_eq!(verify(&signed(&nbf), SECRET, 1000), Err(JwtError::InvalidTimes("nbf")));
        assert!(verify(&signed(&nbf), SECRET, 2000).is_ok());
        let mut bad = base.clone();
        bad["rigId"] = json!(5);
        assert_eq!(verify(&signed(&bad), SECRET, 1000), Err(JwtError::BadClaims));
        assert_eq!(JwtError::BadClaims.to_string(), "Invalid token payload");
        assert_eq!(JwtError::Expired.to_string(), "Token expired");
        assert_eq!(JwtError::MissingIat.to_string(), "Invalid token signature");
    }

    #[test]
    fn round_trip() {
        let t = sign(&claims(2000), SECRET);
        assert_eq!(verify(&t, SECRET, 1000), Ok(claims(2000)));
    }

    #[test]
    fn expired_and_wrong_key() {
        let t = sign(&claims(1000), SECRET);
        assert_eq!(verify(&t, SECRET, 1000), Err(JwtError::Expired));
        assert_eq!(verify(&t, b"other", 10), Err(JwtError::BadSignature));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(2000)).expect("json"));
        for alg in ["none", "None", "HS512", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            assert_eq!(
                verify(&format!("{header}.{payload}."), SECRET, 1),
                Err(JwtError::UnsupportedAlgorithm)
            );
        }
    }

    #[test]
    fn tampered_payload_is_refused() {
        let t = sign(&claims(2000), SECRET);
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut other = claims(2000);
        other.rig_id = "r2".into();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).expect("json"));
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), SECRET, 1), Err(JwtError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        for t in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(matches!(verify(t, SECRET, 1), Err(JwtError::Malformed(_))), "{t}");
        }
    }

    #[test]
    fn missing_exp_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"agentId":"a","rigId":"r","townId":"t","userId":"u"}"#);
        let input = format!("{header}.{payload}");
        let mut m = mac(SECRET);
        m.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        assert_eq!(verify(&format!("{input}.{sig}"), SECRET, 1), Err(JwtError::MissingIat));
        let with_iat = serde_json::json!({"agentId": "a", "rigId": "r", "townId": "t", "userId": "u", "iat": 1});
        assert_eq!(
            verify(&signed(&with_iat), SECRET, 1),
            Err(JwtError::BadClaims),
            "exp is required (stricter)"
        );
    }
}
