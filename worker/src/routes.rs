//! The route table: every endpoint's method, path pattern, who may call it and how it is
//! planned, gathered from the resource modules that own them ([`TABLE`]).
//!
//! A resource module (beads, agents, mail, ...) declares its endpoints as a `ROUTES` list next
//! to its bodies, their validation and its handlers; adding an endpoint is an entry there, and a
//! new module is one line in [`TABLE`]. Path ids are validated when a route matches (a bad id is
//! a 400 before any Durable Object is touched). Plain Rust, unit-tested natively.

use shared_types::validate;

use crate::api::{Incoming, Plan};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Other,
}

impl Method {
    pub fn parse(m: &str) -> Self {
        match m.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Public,
    /// `X-Internal-API-Key` only.
    Internal,
    /// Internal callers, or an agent whose token is for this rig (and for this agent, when set).
    Rig {
        rig: String,
        agent: Option<String>,
    },
    /// The town's container, with `X-Container-Token`.
    Container,
    /// Internal callers, or the mayor's token for this town.
    Mayor {
        town: String,
    },
}

/// Who may call an endpoint, before its path's ids are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Public,
    Internal,
    /// The rig of `:rigId`.
    Rig,
    /// The agent `:agentId` of the rig `:rigId`.
    RigAgent,
    Container,
    /// The mayor of the town `:townId`.
    Mayor,
}

impl Rule {
    fn access(self, params: &Params) -> Access {
        let get = |name| params.raw(name).unwrap_or_default().to_string();
        match self {
            Self::Public => Access::Public,
            Self::Internal => Access::Internal,
            Self::Rig => Access::Rig { rig: get("rigId"), agent: None },
            Self::RigAgent => Access::Rig { rig: get("rigId"), agent: Some(get("agentId")) },
            Self::Container => Access::Container,
            Self::Mayor => Access::Mayor { town: get("townId") },
        }
    }
}

/// One endpoint: `path` is a pattern of literal segments and `:name` parameters.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub rule: Rule,
    /// From the authorized request to what must be done; pure, so a refused request changes
    /// nothing.
    pub plan: fn(&Incoming) -> ApiResult<Plan>,
}

impl Endpoint {
    pub const fn get(
        path: &'static str,
        rule: Rule,
        plan: fn(&Incoming) -> ApiResult<Plan>,
    ) -> Self {
        Self { method: Method::Get, path, rule, plan }
    }
    pub const fn post(
        path: &'static str,
        rule: Rule,
        plan: fn(&Incoming) -> ApiResult<Plan>,
    ) -> Self {
        Self { method: Method::Post, path, rule, plan }
    }
    pub const fn put(
        path: &'static str,
        rule: Rule,
        plan: fn(&Incoming) -> ApiResult<Plan>,
    ) -> Self {
        Self { method: Method::Put, path, rule, plan }
    }
    pub const fn patch(
        path: &'static str,
        rule: Rule,
        plan: fn(&Incoming) -> ApiResult<Plan>,
    ) -> Self {
        Self { method: Method::Patch, path, rule, plan }
    }
    pub const fn delete(
        path: &'static str,
        rule: Rule,
        plan: fn(&Incoming) -> ApiResult<Plan>,
    ) -> Self {
        Self { method: Method::Delete, path, rule, plan }
    }
}

/// A path prefix whose callers are authenticated before an unknown route under it is answered:
/// the reference runs its auth middleware on `/api/rigs/:rigId/*` and `/api/towns/:townId/*`
/// (and the agent check on `/api/rigs/:rigId/agents/:agentId/*`) before its 404. A trailing `*`
/// needs at least one more segment. Ids here are not validated yet.
const MOUNTS: &[(&str, Rule)] = &[
    ("/api/rigs/:rigId/agents/:agentId/*", Rule::RigAgent),
    ("/api/rigs/:rigId", Rule::Rig),
    ("/api/towns/:townId", Rule::Internal),
    ("/api/mayor/:townId", Rule::Mayor),
];

/// The Worker's own endpoints: its health and the dashboard page.
const OWN: &[Endpoint] = &[
    Endpoint::get("/health", Rule::Public, |_| Ok(Plan::Health)),
    Endpoint::get("/", Rule::Public, |_| Ok(Plan::Page)),
];

/// Every endpoint, by resource.
static TABLE: &[&[Endpoint]] = &[
    OWN,
    crate::rig::beads::ROUTES,
    crate::rig::agents::ROUTES,
    crate::rig::mail::ROUTES,
    crate::rig::review::ROUTES,
    crate::rig::config::ROUTES,
    crate::rig::sling::ROUTES,
    crate::rig::events::ROUTES,
    crate::rig::convoys::ROUTES,
    crate::escalations::ROUTES,
    crate::town::ROUTES,
    crate::spending::ROUTES,
    crate::mayor::routes::ROUTES,
    crate::container::routes::ROUTES,
    crate::identity::ROUTES,
    crate::forge::ROUTES,
    crate::forge::webhooks::ROUTES,
    crate::usage::ROUTES,
    crate::shards::ROUTES,
];

/// A path's parameters, by pattern name: raw as matched, then validated ([`find`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    fn raw(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The parameter `name` of the matched pattern.
    pub fn get(&self, name: &str) -> ApiResult<String> {
        self.raw(name)
            .map(str::to_string)
            .ok_or_else(|| ApiError::Internal(format!("the route has no parameter {name}")))
    }

    #[cfg(test)]
    pub fn of(pairs: &[(&'static str, &str)]) -> Self {
        Self(pairs.iter().map(|(n, v)| (*n, v.to_string())).collect())
    }
}

/// Matches `segs` against `pattern`. `prefix`: the pattern may match the start of the path (a
/// trailing `*` then needs one more segment); parameters of an exact match must be non-empty
/// (`/beads/` is no route).
fn capture(pattern: &'static str, segs: &[&str], prefix: bool) -> Option<Params> {
    let mut params = Vec::new();
    let mut pat = pattern.split('/').skip(1).peekable();
    let mut rest = segs.iter();
    while let Some(p) = pat.next() {
        if p == "*" && pat.peek().is_none() {
            return rest.next().map(|_| Params(params));
        }
        let s = rest.next()?;
        match p.strip_prefix(':') {
            Some(name) if prefix || !s.is_empty() => params.push((name, s.to_string())),
            Some(_) => return None,
            None if p == *s => {}
            None => return None,
        }
    }
    (prefix || rest.next().is_none()).then_some(Params(params))
}

/// A matched parameter, validated: an id (`validate::id`), or for `identity` percent-decoded
/// text.
fn checked(name: &'static str, raw: String) -> ApiResult<String> {
    if name == "identity" {
        let decoded = percent_encoding::percent_decode_str(&raw)
            .decode_utf8()
            .map_err(|_| ApiError::bad_request("identity: must be UTF-8"))?;
        crate::requests::text(&decoded, crate::requests::MAX_IDENTITY)
            .map_err(|m| ApiError::bad_request(format!("identity: {m}")))?;
        return Ok(decoded.into_owned());
    }
    validate::id(&raw).map_err(|m| ApiError::bad_request(format!("{name}: {m}")))?;
    Ok(raw)
}

/// A request's endpoint and its validated parameters.
pub struct Matched {
    pub endpoint: &'static Endpoint,
    pub params: Params,
}

impl Matched {
    pub fn access(&self) -> Access {
        self.endpoint.rule.access(&self.params)
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').skip(1).collect()
}

/// The endpoint of a request. `Err(NotFound)` (`Not found`) for an unknown path and for a known
/// path with another method (the reference has no 405), `Err(BadRequest)` for a malformed id
/// in the path. No trailing-slash normalisation (`/health/` is unknown, as in the reference).
pub fn find(method: Method, path: &str) -> ApiResult<Matched> {
    let segs = segments(path);
    for endpoint in TABLE.iter().flat_map(|routes| routes.iter()) {
        if endpoint.method != method {
            continue;
        }
        if let Some(Params(raw)) = capture(endpoint.path, &segs, false) {
            let params = raw
                .into_iter()
                .map(|(name, value)| Ok((name, checked(name, value)?)))
                .collect::<ApiResult<_>>()?;
            return Ok(Matched { endpoint, params: Params(params) });
        }
    }
    Err(ApiError::no_route())
}

/// Who must have authenticated before an unknown route under this path is answered
/// ([`MOUNTS`]); `None` elsewhere (a plain 404).
pub fn prefix_access(path: &str) -> Option<Access> {
    let segs = segments(path);
    MOUNTS.iter().find_map(|(prefix, rule)| capture(prefix, &segs, true).map(|p| rule.access(&p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    fn access(method: Method, path: &str) -> ApiResult<Access> {
        find(method, path).map(|m| m.access())
    }

    fn params(method: Method, path: &str) -> ApiResult<Params> {
        find(method, path).map(|m| m.params)
    }

    #[test]
    fn patterns_and_their_parameters() {
        assert_eq!(find(Get, "/health").map(|m| m.endpoint.path), Ok("/health"));
        assert_eq!(
            params(Patch, "/api/rigs/r1/beads/b1/status"),
            Ok(Params::of(&[("rigId", "r1"), ("beadId", "b1")]))
        );
        assert_eq!(
            find(Delete, "/api/rigs/r1/agents/a1/hook").map(|m| m.endpoint.path),
            Ok("/api/rigs/:rigId/agents/:agentId/hook")
        );
        assert_eq!(
            params(Get, "/api/identities/polecat%2Ftoast%40r1"),
            Ok(Params::of(&[("identity", "polecat/toast@r1")]))
        );
        assert_eq!(
            params(Post, "/api/mayor/t1/tools/escalations/resolve"),
            Ok(Params::of(&[("townId", "t1")]))
        );
    }

    #[test]
    fn every_pattern_is_reachable_and_unique() {
        let all: Vec<&Endpoint> = TABLE.iter().flat_map(|r| r.iter()).collect();
        for e in &all {
            let path: String = e
                .path
                .split('/')
                .map(|s| if s.starts_with(':') { "x1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let found = find(e.method, &path).map(|m| (m.endpoint.method, m.endpoint.path));
            assert_eq!(found, Ok((e.method, e.path)), "{:?} {} is shadowed", e.method, e.path);
            let twins = all.iter().filter(|o| o.method == e.method && o.path == e.path).count();
            assert_eq!(twins, 1, "{:?} {} is listed twice", e.method, e.path);
        }
    }

    #[test]
    fn unknown_paths_methods_and_bad_ids() {
        assert_eq!(find(Get, "/nope").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(
            find(Get, "/api/rigs/r1/agents/a1/dance").map(|_| ()),
            Err(ApiError::no_route())
        );
        assert_eq!(find(Delete, "/api/rigs/r1/beads").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(find(Post, "/health").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(find(Other, "/health").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(find(Get, "/health/").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(find(Get, "/api/rigs/r1/beads/").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(find(Get, "/api/rigs/r.1/beads").map_err(|e| e.status()).map(|_| ()), Err(400));
        assert_eq!(
            find(Get, "/api/rigs/r1/beads/%27%3B").map_err(|e| e.status()).map(|_| ()),
            Err(400)
        );
        assert_eq!(find(Get, "/api/mayor/t1/tools/convoys").map(|_| ()), Err(ApiError::no_route()));
        assert_eq!(
            find(Post, "/api/mayor/t.1/tools/sling").map_err(|e| e.status()).map(|_| ()),
            Err(400)
        );
    }

    #[test]
    fn prefixes_that_authenticate_before_404() {
        assert_eq!(
            prefix_access("/api/rigs/r1"),
            Some(Access::Rig { rig: "r1".into(), agent: None })
        );
        assert_eq!(
            prefix_access("/api/rigs/r.1/nope"),
            Some(Access::Rig { rig: "r.1".into(), agent: None })
        );
        assert_eq!(
            prefix_access("/api/rigs/r1/agents/a2/zzz"),
            Some(Access::Rig { rig: "r1".into(), agent: Some("a2".into()) })
        );
        assert_eq!(
            prefix_access("/api/rigs/r1/agents/a2"),
            Some(Access::Rig { rig: "r1".into(), agent: None })
        );
        assert_eq!(prefix_access("/api/towns/t1/whatever"), Some(Access::Internal));
        assert_eq!(prefix_access("/api/mayor/t1/nope"), Some(Access::Mayor { town: "t1".into() }));
        assert_eq!(prefix_access("/api/rigs"), None);
        assert_eq!(prefix_access("/api/unknown"), None);
        assert_eq!(prefix_access("/nope"), None);
    }

    #[test]
    fn access_rules() {
        let internal = Ok(Access::Internal);
        assert_eq!(access(Get, "/health"), Ok(Access::Public));
        assert_eq!(access(Get, "/"), Ok(Access::Public));
        assert_eq!(
            access(Post, "/api/rigs/r1/agents/a1/done"),
            Ok(Access::Rig { rig: "r1".into(), agent: Some("a1".into()) })
        );
        assert_eq!(
            access(Get, "/api/rigs/r1/agents/a1"),
            Ok(Access::Rig { rig: "r1".into(), agent: None })
        );
        assert_eq!(access(Post, "/api/rigs/r1/sling"), internal);
        assert_eq!(access(Post, "/api/rigs/r1/convoys"), internal);
        assert_eq!(access(Get, "/api/rigs/r1/convoys/c1"), internal);
        assert_eq!(access(Post, "/api/towns/t/container/agents/start"), internal);
        assert_eq!(access(Post, "/api/towns/t/container/heartbeat"), Ok(Access::Container));
        assert_eq!(access(Post, "/api/towns/t1/mayor/messages"), internal);
        assert_eq!(access(Get, "/api/towns"), internal);
        assert_eq!(
            access(Post, "/api/mayor/t1/tools/convoys"),
            Ok(Access::Mayor { town: "t1".into() })
        );
        // The live stream's credential is its ticket.
        assert_eq!(access(Get, "/api/towns/t/container/agents/a1/stream"), Ok(Access::Public));
        assert_eq!(
            access(Post, "/api/towns/t/container/agents/a1/stream").map_err(|e| e.status()),
            Err(404)
        );
        assert_eq!(
            access(Get, "/api/towns/t/container/agents/a.1/stream").map_err(|e| e.status()),
            Err(400)
        );
    }
}
