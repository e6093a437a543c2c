//! Who is calling, and may they call this route.
//!
//! Rules of the reference implementation: on rig routes either the internal key or an agent
//! JWT; an agent token must be for the route's rig (403), for the route's agent on
//! `/agents/:agentId/*` (403), and agent ids in bodies must be the token's own (403). Missing or
//! invalid credentials are 401. A wrong internal key is a 401 even when a valid token is also
//! present: presenting a bad secret is never silently ignored.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::jwt::{self, AgentClaims};
use crate::routes::Access;

/// Secrets from the Worker's environment. An unset or empty secret disables that way in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Secrets<'a> {
    pub internal_key: Option<&'a str>,
    pub jwt_secret: Option<&'a str>,
    pub container_token: Option<&'a str>,
}

/// What the request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `X-Internal-API-Key`
    pub internal_key: Option<&'a str>,
    /// `Authorization`
    pub authorization: Option<&'a str>,
    /// `X-Container-Token`
    pub container_token: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Public,
    Internal,
    Agent(AgentClaims),
    Container,
}

/// Compares secrets in constant time. Both sides are hashed first so that not even the length
/// of the configured secret leaks through timing.
pub fn secret_matches(presented: &str, configured: Option<&str>) -> bool {
    match configured {
        Some(c) if !c.is_empty() => {
            let a = Sha256::digest(presented.as_bytes());
            let b = Sha256::digest(c.as_bytes());
            bool::from(a.as_slice().ct_eq(b.as_slice()))
        }
        _ => false,
    }
}

fn unauthorized(m: &str) -> ApiError {
    ApiError::Unauthorized(m.into())
}

/// No usable credentials (none, a non-Bearer `Authorization`, an empty key).
const AUTHENTICATION_REQUIRED: &str = "Authentication required";

/// The token of an `Authorization: Bearer <token>` header (scheme in any case), as the reference
/// reads it; `None` for any other header, which counts as no credentials.
fn bearer(authorization: &str) -> Option<&str> {
    let head = authorization.get(..7)?;
    head.eq_ignore_ascii_case("bearer ").then(|| authorization[7..].trim())
}

fn agent(creds: &Credentials, secrets: &Secrets, now_secs: u64) -> ApiResult<Option<AgentClaims>> {
    let Some(token) = creds.authorization.and_then(bearer) else { return Ok(None) };
    if token.is_empty() {
        return Err(unauthorized("Missing token"));
    }
    // An unset secret turns agent tokens off (the reference answers 500 here).
    let secret = secrets
        .jwt_secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unauthorized("Invalid token signature"))?;
    jwt::verify(token, secret.as_bytes(), now_secs)
        .map(Some)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))
}

/// Authenticates the request and checks it against the route's [`Access`].
pub fn authorize(
    access: &Access,
    creds: &Credentials,
    secrets: &Secrets,
    now_secs: u64,
) -> ApiResult<Caller> {
    if *access == Access::Public {
        return Ok(Caller::Public);
    }
    if let Some(key) = creds.internal_key.filter(|k| !k.is_empty()) {
        return if secret_matches(key, secrets.internal_key) {
            Ok(Caller::Internal)
        } else {
            Err(unauthorized("Unauthorized"))
        };
    }
    if *access == Access::Container {
        return match creds.container_token {
            Some(t) if secret_matches(t, secrets.container_token) => Ok(Caller::Container),
            Some(_) => Err(unauthorized("invalid container token")),
            None => Err(unauthorized("X-Container-Token or X-Internal-API-Key required")),
        };
    }
    let Some(claims) = agent(creds, secrets, now_secs)? else {
        return Err(unauthorized(AUTHENTICATION_REQUIRED));
    };
    match access {
        Access::Rig { rig, agent } => {
            if claims.rig_id != *rig {
                return Err(ApiError::Forbidden("Token rigId does not match route".into()));
            }
            if agent.as_ref().is_some_and(|a| *a != claims.agent_id) {
                return Err(ApiError::Forbidden("Token agentId does not match route".into()));
            }
            Ok(Caller::Agent(claims))
        }
        // The reference's mayor middleware checks the town; the role is ours: a rig agent's
        // token never reaches the mayor's tools.
        Access::Mayor { town } => {
            if claims.town_id != *town {
                return Err(ApiError::Forbidden("Token townId does not match route".into()));
            }
            if !claims.is_mayor() {
                return Err(ApiError::Forbidden(
                    "Forbidden: the mayor's tools need the mayor's token".into(),
                ));
            }
            Ok(Caller::Agent(claims))
        }
        _ => Err(ApiError::Forbidden("Forbidden: internal auth required".into())),
    }
}

/// An agent may act only as itself: `agent_id` / `from_agent_id` in a body must be the token's.
pub fn check_body_agent(caller: &Caller, field: &str, agent_id: &str) -> ApiResult<()> {
    match caller {
        Caller::Agent(c) if c.agent_id != agent_id => {
            Err(ApiError::Forbidden(format!("{field} does not match authenticated agent")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRETS: Secrets = Secrets {
        internal_key: Some("k3y"),
        jwt_secret: Some("jw7"),
        container_token: Some("c0n"),
    };
    const NOW: u64 = 1_000;

    fn token(rig: &str, agent: &str, exp: u64, secret: &str) -> String {
        let c = AgentClaims {
            agent_id: agent.into(),
            rig_id: rig.into(),
            town_id: "t".into(),
            user_id: "u".into(),
            exp,
            iat: Some(NOW - 10),
            role: None,
        };
        format!("Bearer {}", jwt::sign(&c, secret.as_bytes()))
    }

    fn rig(agent: Option<&str>) -> Access {
        Access::Rig { rig: "r1".into(), agent: agent.map(Into::into) }
    }

    fn message(access: &Access, creds: Credentials) -> String {
        match authorize(access, &creds, &SECRETS, NOW) {
            Ok(_) => "ok".into(),
            Err(e) => e.public_message().to_string(),
        }
    }

    fn status(access: &Access, creds: Credentials) -> u16 {
        match authorize(access, &creds, &SECRETS, NOW) {
            Ok(_) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn matrix() {
        let good = token("r1", "a1", NOW + 60, "jw7");
        let other_rig = token("r2", "a1", NOW + 60, "jw7");
        let expired = token("r1", "a1", NOW, "jw7");
        let forged = token("r1", "a1", NOW + 60, "nope");
        fn bearer(t: &str) -> Credentials<'_> {
            Credentials { authorization: Some(t), ..Default::default() }
        }
        fn key(k: &str) -> Credentials<'_> {
            Credentials { internal_key: Some(k), ..Default::default() }
        }
        let none = Credentials::default();

        assert_eq!(status(&Access::Public, none), 200);
        assert_eq!(status(&rig(None), none), 401);
        assert_eq!(status(&rig(None), key("k3y")), 200);
        assert_eq!(status(&rig(None), key("wrong")), 401);
        assert_eq!(status(&rig(None), bearer(&good)), 200);
        assert_eq!(status(&rig(Some("a1")), bearer(&good)), 200);
        assert_eq!(status(&rig(Some("a2")), bearer(&good)), 403);
        assert_eq!(status(&rig(None), bearer(&other_rig)), 403);
        assert_eq!(status(&rig(None), bearer(&expired)), 401);
        assert_eq!(status(&rig(None), bearer(&forged)), 401);
        assert_eq!(status(&rig(None), bearer("Basic abc")), 401);
        assert_eq!(status(&Access::Internal, bearer(&good)), 403);
        assert_eq!(status(&Access::Internal, key("k3y")), 200);
        assert_eq!(status(&Access::Internal, none), 401);
        let c0n = Credentials { container_token: Some("c0n"), ..Default::default() };
        assert_eq!(status(&Access::Container, c0n), 200);
        assert_eq!(
            status(
                &Access::Container,
                Credentials { container_token: Some("x"), ..Default::default() }
            ),
            401
        );
        assert_eq!(status(&Access::Container, bearer(&good)), 401);
        // A container token is no use elsewhere.
        assert_eq!(status(&Access::Internal, c0n), 401);
    }

    #[test]
    fn only_the_towns_mayor_token_opens_the_mayors_tools() {
        let sign = |town: &str, role: Option<&str>| {
            let c = AgentClaims {
                agent_id: "mayor".into(),
                rig_id: String::new(),
                town_id: town.into(),
                user_id: "u".into(),
                exp: NOW + 60,
                iat: Some(NOW - 10),
                role: role.map(Into::into),
            };
            format!("Bearer {}", jwt::sign(&c, b"jw7"))
        };
        let access = Access::Mayor { town: "t".into() };
        let with = |t: &str| {
            message(&access, Credentials { authorization: Some(t), ..Default::default() })
        };
        assert_eq!(with(&sign("t", Some("mayor"))), "ok");
        assert_eq!(with(&sign("t2", Some("mayor"))), "Token townId does not match route");
        assert_eq!(
            with(&token("r1", "a1", NOW + 60, "jw7")),
            "Forbidden: the mayor's tools need the mayor's token"
        );
        assert_eq!(
            status(
                &access,
                Credentials {
                    authorization: Some(&token("r1", "a1", NOW + 60, "jw7")),
                    ..Default::default()
                }
            ),
            403
        );
        assert_eq!(status(&access, Credentials::default()), 401);
        // The mayor's token opens no rig route.
        assert_eq!(
            status(
                &rig(None),
                Credentials {
                    authorization: Some(&sign("t", Some("mayor"))),
                    ..Default::default()
                }
            ),
            403
        );
    }

    #[test]
    fn reference_messages() {
        fn bearer(t: &str) -> Credentials<'_> {
            Credentials { authorization: Some(t), ..Default::default() }
        }
        let good = token("r1", "a1", NOW + 60, "jw7");
        let none = Credentials::default();
        assert_eq!(message(&rig(None), none), "Authentication required");
        assert_eq!(message(&rig(None), bearer("Basic abc")), "Authentication required");
        assert_eq!(message(&rig(None), bearer("Bearer")), "Authentication required");
        assert_eq!(message(&rig(None), bearer("Bearer   ")), "Missing token");
        assert_eq!(
            message(&rig(None), Credentials { internal_key: Some(""), ..Default::default() }),
            "Authentication required"
        );
        assert_eq!(
            message(&rig(None), Credentials { internal_key: Some("x"), ..Default::default() }),
            "Unauthorized"
        );
        assert_eq!(message(&rig(None), bearer(&good.replace("Bearer ", "bEaReR "))), "ok");
        assert_eq!(message(&rig(None), bearer("Bearer not.a.jwt")), "Invalid token signature");
        assert_eq!(
            message(&rig(None), bearer(&token("r1", "a1", NOW - 1, "jw7"))),
            "Token expired"
        );
        assert_eq!(
            message(&Access::Rig { rig: "r2".into(), agent: None }, bearer(&good)),
            "Token rigId does not match route"
        );
        assert_eq!(message(&rig(Some("a2")), bearer(&good)), "Token agentId does not match route");
        assert_eq!(message(&Access::Internal, bearer(&good)), "Forbidden: internal auth required");
        let c = Caller::Agent(AgentClaims {
            agent_id: "a1".into(),
            rig_id: "r1".into(),
            town_id: "t".into(),
            user_id: "u".into(),
            exp: 1,
            iat: None,
            role: None,
        });
        let e = check_body_agent(&c, "from_agent_id", "a2").expect_err("other agent");
        assert_eq!(e.public_message(), "from_agent_id does not match authenticated agent");
    }

    #[test]
    fn unset_secrets_disable_that_way_in() {
        let s = Secrets::default();
        let creds = Credentials { internal_key: Some(""), ..Default::default() };
        assert!(authorize(&Access::Internal, &creds, &s, NOW).is_err());
        assert!(!secret_matches("", Some("")));
    }

    #[test]
    fn body_agent_ids_must_be_the_callers() {
        let c = Caller::Agent(AgentClaims {
            agent_id: "a1".into(),
            rig_id: "r".into(),
            town_id: "t".into(),
            user_id: "u".into(),
            exp: 1,
            iat: None,
            role: None,
        });
        assert!(check_body_agent(&c, "agent_id", "a1").is_ok());
        assert_eq!(check_body_agent(&c, "agent_id", "a2").map_err(|e| e.status()), Err(403));
        assert!(check_body_agent(&Caller::Internal, "agent_id", "a2").is_ok());
    }
}
