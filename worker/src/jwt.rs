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
    /// Expiry, seconds since the epoch. Required: a token that never expires is refused.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Why a token was refused. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(&'static str),
    UnsupportedAlgorithm,
    BadSignature,
    Expired,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed token: {why}"),
            Self::UnsupportedAlgorithm => f.write_str("token algorithm must be HS256"),
            Self::BadSignature => f.write_str("token signature is invalid"),
            Self::Expired => f.write_str("token has expired"),
        }
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

/// Verifies an HS256 token and its expiry against `now_secs`.
pub fn verify(token: &str, secret: &[u8], now_secs: u64) -> Result<AgentClaims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let header_bytes = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| JwtError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "HS256" {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed("payload is not base64url"))?;
    let claims: AgentClaims = serde_json::from_slice(&payload)
        .map_err(|_| JwtError::Malformed("claims must hold agentId, rigId, townId, userId and exp"))?;
    if claims.exp <= now_secs {
        return Err(JwtError::Expired);
    }
    Ok(claims)
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
            iat: None,
        }
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
            assert_eq!(verify(&format!("{header}.{payload}."), SECRET, 1), Err(JwtError::UnsupportedAlgorithm));
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
        let payload = URL_SAFE_NO_PAD.encode(br#"{"agentId":"a","rigId":"r","townId":"t","userId":"u"}"#);
        let input = format!("{header}.{payload}");
        let mut m = mac(SECRET);
        m.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        assert!(matches!(verify(&format!("{input}.{sig}"), SECRET, 1), Err(JwtError::Malformed(_))));
    }
}
