//! The route table: (method, path) to a [`Route`], and who may call each route ([`Access`]).
//!
//! A hand-written matcher over path segments rather than a router crate: the table stays in one
//! readable `match`, path ids are validated once here (a bad id is a 400 before any Durable
//! Object is touched), and it is plain Rust that unit tests cover natively.

use shared_types::validate;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    // Reference routes on a rig (agents or internal callers).
    CreateBead {
        rig: String,
    },
    ListBeads {
        rig: String,
    },
    GetBead {
        rig: String,
        bead: String,
    },
    UpdateBeadStatus {
        rig: String,
        bead: String,
    },
    CloseBead {
        rig: String,
        bead: String,
    },
    RegisterAgent {
        rig: String,
    },
    ListAgents {
        rig: String,
    },
    GetAgent {
        rig: String,
        agent: String,
    },
    Hook {
        rig: String,
        agent: String,
    },
    Unhook {
        rig: String,
        agent: String,
    },
    Prime {
        rig: String,
        agent: String,
    },
    Done {
        rig: String,
        agent: String,
    },
    Checkpoint {
        rig: String,
        agent: String,
    },
    CheckMail {
        rig: String,
        agent: String,
    },
    AgentHeartbeat {
        rig: String,
        agent: String,
    },
    SendMail {
        rig: String,
    },
    SubmitReview {
        rig: String,
    },
    CreateEscalation {
        rig: String,
    },
    // Our additions on a rig (internal only).
    GetRigConfig {
        rig: String,
    },
    PutRigConfig {
        rig: String,
    },
    Sling {
        rig: String,
    },
    ListReviews {
        rig: String,
    },
    ListEvents {
        rig: String,
    },
    BeadEvents {
        rig: String,
        bead: String,
    },
    CreateConvoy {
        rig: String,
    },
    ListConvoys {
        rig: String,
    },
    GetConvoy {
        rig: String,
        convoy: String,
    },
    // Towns (internal only).
    CreateTown,
    ListTowns,
    GetTown {
        town: String,
    },
    CreateRig {
        town: String,
    },
    ListRigs {
        town: String,
    },
    CreateTownEscalation {
        town: String,
    },
    ListTownEscalations {
        town: String,
    },
    GetTownLimits {
        town: String,
    },
    SetTownLimits {
        town: String,
    },
    /// A person's message to the town's mayor (internal).
    MayorSend {
        town: String,
    },
    /// The mayor's transcript (internal).
    MayorMessages {
        town: String,
    },
    /// The mayor's state and open threads (internal).
    MayorStatus {
        town: String,
    },
    /// A mayor tool: `/api/mayor/:townId/tools/...`, the mayor's token only.
    MayorTool {
        town: String,
        tool: crate::mayor::MayorTool,
    },
    /// A call forwarded to the town's container control server; `path` is the control
    /// server's path (`/agents/start`, `/health`, ...).
    ContainerProxy {
        town: String,
        path: String,
    },
    /// The container's batched heartbeat (authenticated with the container token).
    ContainerHeartbeat {
        town: String,
    },
    /// The container's batch of agents' events to keep (container token).
    ContainerEvents {
        town: String,
    },
    /// An agent's kept events (internal).
    AgentEvents {
        town: String,
        agent: String,
    },
    /// An agent's live stream: a WebSocket opened with a one-shot stream ticket (the ticket is
    /// the credential: browsers cannot set headers on a WebSocket).
    AgentStream {
        town: String,
        agent: String,
    },
    /// The dashboard page (public: it holds no secret; the key is typed in the page).
    Dashboard,
    GetIdentity {
        identity: String,
    },
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

fn id(field: &str, value: &str) -> ApiResult<String> {
    // An empty segment (`/beads/`) is no route at all.
    if value.is_empty() {
        return Err(ApiError::no_route());
    }
    validate::id(value).map_err(|m| ApiError::bad_request(format!("{field}: {m}")))?;
    Ok(value.to_string())
}

/// Who must have authenticated before an unknown route under this path is answered: the
/// reference runs its auth middleware on `/api/rigs/:rigId/*` and `/api/towns/:townId/*` (and
/// the agent check on `/api/rigs/:rigId/agents/:agentId/*`) before its 404, and before looking
/// at ids. `None` elsewhere (a plain 404).
pub fn prefix_access(path: &str) -> Option<Access> {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    match segs.as_slice() {
        ["api", "rigs", rig, rest @ ..] => {
            let agent = match rest {
                ["agents", agent, _, ..] => Some(agent.to_string()),
                _ => None,
            };
            Some(Access::Rig { rig: rig.to_string(), agent })
        }
        ["api", "towns", _, ..] => Some(Access::Internal),
        ["api", "mayor", town, ..] => Some(Access::Mayor { town: town.to_string() }),
        _ => None,
    }
}

/// Matches a request. `Err(NotFound)` (`Not found`) for an unknown path and for a known path
/// with another method (the reference has no 405), `Err(BadRequest)` for a malformed id in the
/// path. No trailing-slash normalisation (`/health/` is unknown, as in the reference).
pub fn parse(method: Method, path: &str) -> ApiResult<Route> {
    use Method::*;
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let not_found = ApiError::no_route;
    // `allow!(method => route, ...)`: the first arm whose method matches, else 404.
    macro_rules! allow {
        ($($m:ident => $r:expr),+ $(,)?) => {
            match method { $($m => Ok($r),)+ _ => Err(not_found()) }
        };
    }
    match segs.as_slice() {
        ["health"] => allow!(Get => Route::Health),
        [""] => allow!(Get => Route::Dashboard),
        ["api", "rigs", rig, rest @ ..] => {
            let rig = id("rigId", rig)?;
            match rest {
                ["beads"] => {
                    allow!(Post => Route::CreateBead { rig: rig.clone() }, Get => Route::ListBeads { rig })
                }
                ["beads", bead, tail @ ..] => {
                    let bead = id("beadId", bead)?;
                    match tail {
                        [] => allow!(Get => Route::GetBead { rig, bead }),
                        ["status"] => allow!(Patch => Route::UpdateBeadStatus { rig, bead }),
                        ["close"] => allow!(Post => Route::CloseBead { rig, bead }),
                        ["events"] => allow!(Get => Route::BeadEvents { rig, bead }),
                        _ => Err(not_found()),
                    }
                }
                ["agents"] => {
                    allow!(Post => Route::RegisterAgent { rig: rig.clone() }, Get => Route::ListAgents { rig })
                }
                ["agents", agent, tail @ ..] => {
                    let agent = id("agentId", agent)?;
                    match tail {
                        [] => allow!(Get => Route::GetAgent { rig, agent }),
                        ["hook"] => allow!(
                            Post => Route::Hook { rig: rig.clone(), agent: agent.clone() },
                            Delete => Route::Unhook { rig, agent },
                        ),
                        ["prime"] => allow!(Get => Route::Prime { rig, agent }),
                        ["done"] => allow!(Post => Route::Done { rig, agent }),
                        ["checkpoint"] => allow!(Post => Route::Checkpoint { rig, agent }),
                        ["mail"] => allow!(Get => Route::CheckMail { rig, agent }),
                        ["heartbeat"] => allow!(Post => Route::AgentHeartbeat { rig, agent }),
                        _ => Err(not_found()),
                    }
                }
                ["mail"] => allow!(Post => Route::SendMail { rig }),
                ["review-queue"] => {
                    allow!(Post => Route::SubmitReview { rig: rig.clone() }, Get => Route::ListReviews { rig })
                }
                ["escalations"] => allow!(Post => Route::CreateEscalation { rig }),
                ["config"] => {
                    allow!(Get => Route::GetRigConfig { rig: rig.clone() }, Put => Route::PutRigConfig { rig })
                }
                ["sling"] => allow!(Post => Route::Sling { rig }),
                ["events"] => allow!(Get => Route::ListEvents { rig }),
                ["convoys"] => {
                    allow!(Post => Route::CreateConvoy { rig: rig.clone() }, Get => Route::ListConvoys { rig })
                }
                ["convoys", convoy] => {
                    let convoy = id("convoyId", convoy)?;
                    allow!(Get => Route::GetConvoy { rig, convoy })
                }
                _ => Err(not_found()),
            }
        }
        ["api", "towns"] => allow!(Post => Route::CreateTown, Get => Route::ListTowns),
        ["api", "towns", town, rest @ ..] => {
            let town = id("townId", town)?;
            match rest {
                [] => allow!(Get => Route::GetTown { town }),
                ["rigs"] => {
                    allow!(Post => Route::CreateRig { town: town.clone() }, Get => Route::ListRigs { town })
                }
                ["escalations"] => allow!(
                    Post => Route::CreateTownEscalation { town: town.clone() },
                    Get => Route::ListTownEscalations { town },
                ),
                ["limits"] => {
                    allow!(Get => Route::GetTownLimits { town: town.clone() }, Put => Route::SetTownLimits { town })
                }
                ["mayor"] => allow!(Get => Route::MayorStatus { town }),
                ["mayor", "messages"] => {
                    allow!(Post => Route::MayorSend { town: town.clone() }, Get => Route::MayorMessages { town })
                }
                ["container", "heartbeat"] => allow!(Post => Route::ContainerHeartbeat { town }),
                ["container", "events"] => allow!(Post => Route::ContainerEvents { town }),
                ["agents", agent, "events"] => {
                    let agent = id("agentId", agent)?;
                    allow!(Get => Route::AgentEvents { town, agent })
                }
                ["container", "health"] => {
                    allow!(Get => Route::ContainerProxy { town, path: "/health".into() })
                }
                // The TownContainer's own view: lifecycle status, last activity, running agents,
                // failed probes (answered by the object, not the control server).
                ["container", "state"] => {
                    allow!(Get => Route::ContainerProxy { town, path: crate::container::STATE_PATH.into() })
                }
                ["container", "agents", "start"] => {
                    allow!(Post => Route::ContainerProxy { town, path: "/agents/start".into() })
                }
                ["container", "agents", agent, "stream"] => {
                    let agent = id("agentId", agent)?;
                    allow!(Get => Route::AgentStream { town, agent })
                }
                ["container", "agents", agent, action] => {
                    let agent = id("agentId", agent)?;
                    let path = format!("/agents/{agent}/{action}");
                    match *action {
                        "stop" | "message" | "stream-ticket" => {
                            allow!(Post => Route::ContainerProxy { town, path })
                        }
                        "status" => allow!(Get => Route::ContainerProxy { town, path }),
                        _ => Err(not_found()),
                    }
                }
                _ => Err(not_found()),
            }
        }
        ["api", "mayor", town, "tools", rest @ ..] => {
            let town = id("townId", town)?;
            let post = match method {
                Post => true,
                Get => false,
                _ => return Err(not_found()),
            };
            crate::mayor::MayorTool::parse(post, rest)
                .map(|tool| Route::MayorTool { town, tool })
                .ok_or_else(not_found)
        }
        ["api", "identities", identity] => {
            let decoded = percent_encoding::percent_decode_str(identity)
                .decode_utf8()
                .map_err(|_| ApiError::bad_request("identity: must be UTF-8"))?;
            crate::requests::text(&decoded, crate::requests::MAX_IDENTITY)
                .map_err(|m| ApiError::bad_request(format!("identity: {m}")))?;
            allow!(Get => Route::GetIdentity { identity: decoded.into_owned() })
        }
        _ => Err(not_found()),
    }
}

impl Route {
    pub fn access(&self) -> Access {
        use Route::*;
        let rig = |rig: &String| Access::Rig { rig: rig.clone(), agent: None };
        let agent = |rig: &String, agent: &String| Access::Rig {
            rig: rig.clone(),
            agent: Some(agent.clone()),
        };
        match self {
            Health | Dashboard | AgentStream { .. } => Access::Public,
            CreateBead { rig: r }
            | ListBeads { rig: r }
            | GetBead { rig: r, .. }
            | UpdateBeadStatus { rig: r, .. }
            | CloseBead { rig: r, .. }
            | RegisterAgent { rig: r }
            | ListAgents { rig: r }
            | GetAgent { rig: r, .. }
            | SendMail { rig: r }
            | SubmitReview { rig: r }
            | CreateEscalation { rig: r } => rig(r),
            Hook { rig: r, agent: a }
            | Unhook { rig: r, agent: a }
            | Prime { rig: r, agent: a }
            | Done { rig: r, agent: a }
            | Checkpoint { rig: r, agent: a }
            | CheckMail { rig: r, agent: a }
            | AgentHeartbeat { rig: r, agent: a } => agent(r, a),
            GetRigConfig { .. }
            | PutRigConfig { .. }
            | Sling { .. }
            | ListReviews { .. }
            | ListEvents { .. }
            | BeadEvents { .. }
            | CreateConvoy { .. }
            | ListConvoys { .. }
            | GetConvoy { .. }
            | CreateTown
            | ListTowns
            | GetTown { .. }
            | CreateRig { .. }
            | ListRigs { .. }
            | CreateTownEscalation { .. }
            | ListTownEscalations { .. }
            | GetTownLimits { .. }
            | SetTownLimits { .. }
            | AgentEvents { .. }
            | ContainerProxy { .. }
            | GetIdentity { .. } => Access::Internal,
            ContainerHeartbeat { .. } | ContainerEvents { .. } => Access::Container,
            MayorSend { .. } | MayorMessages { .. } | MayorStatus { .. } => Access::Internal,
            MayorTool { town, .. } => Access::Mayor { town: town.clone() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    #[test]
    fn reference_routes() {
        assert_eq!(parse(Get, "/health"), Ok(Route::Health));
        assert_eq!(parse(Post, "/api/rigs/r1/beads"), Ok(Route::CreateBead { rig: "r1".into() }));
        assert_eq!(
            parse(Patch, "/api/rigs/r1/beads/b1/status"),
            Ok(Route::UpdateBeadStatus { rig: "r1".into(), bead: "b1".into() })
        );
        assert_eq!(
            parse(Delete, "/api/rigs/r1/agents/a1/hook"),
            Ok(Route::Unhook { rig: "r1".into(), agent: "a1".into() })
        );
        assert_eq!(
            parse(Get, "/api/rigs/r1/agents/a1/mail"),
            Ok(Route::CheckMail { rig: "r1".into(), agent: "a1".into() })
        );
        assert_eq!(
            parse(Post, "/api/towns/t1/container/agents/a1/stream-ticket"),
            Ok(Route::ContainerProxy {
                town: "t1".into(),
                path: "/agents/a1/stream-ticket".into()
            })
        );
        assert_eq!(
            parse(Get, "/api/identities/polecat%2Ftoast%40r1"),
            Ok(Route::GetIdentity { identity: "polecat/toast@r1".into() })
        );
    }

    #[test]
    fn unknown_paths_methods_and_bad_ids() {
        assert_eq!(parse(Get, "/nope").map_err(|e| e.status()), Err(404));
        assert_eq!(parse(Get, "/api/rigs/r1/agents/a1/dance").map_err(|e| e.status()), Err(404));
        assert_eq!(parse(Delete, "/api/rigs/r1/beads"), Err(ApiError::no_route()));
        assert_eq!(parse(Post, "/health"), Err(ApiError::no_route()));
        assert_eq!(parse(Other, "/health"), Err(ApiError::no_route()));
        assert_eq!(parse(Get, "/health/"), Err(ApiError::no_route()));
        assert_eq!(parse(Get, "/api/rigs/r1/beads/"), Err(ApiError::no_route()));
        assert_eq!(parse(Get, "/api/rigs/r.1/beads").map_err(|e| e.status()), Err(400));
        assert_eq!(parse(Get, "/api/rigs/r1/beads/%27%3B").map_err(|e| e.status()), Err(400));
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
        assert_eq!(prefix_access("/api/towns/t1/whatever"), Some(Access::Internal));
        assert_eq!(prefix_access("/api/rigs"), None);
        assert_eq!(prefix_access("/api/unknown"), None);
        assert_eq!(prefix_access("/nope"), None);
    }

    #[test]
    fn mayor_routes() {
        use crate::mayor::MayorTool as T;
        assert_eq!(
            parse(Post, "/api/towns/t1/mayor/messages").map(|r| r.access()),
            Ok(Access::Internal)
        );
        assert_eq!(parse(Get, "/api/towns/t1/mayor"), Ok(Route::MayorStatus { town: "t1".into() }));
        let tool = parse(Post, "/api/mayor/t1/tools/convoys");
        assert_eq!(tool, Ok(Route::MayorTool { town: "t1".into(), tool: T::Convoy }));
        assert_eq!(tool.map(|r| r.access()), Ok(Access::Mayor { town: "t1".into() }));
        assert_eq!(parse(Get, "/api/mayor/t1/tools/convoys").map_err(|e| e.status()), Err(404));
        assert_eq!(parse(Post, "/api/mayor/t.1/tools/sling").map_err(|e| e.status()), Err(400));
        assert_eq!(prefix_access("/api/mayor/t1/nope"), Some(Access::Mayor { town: "t1".into() }));
    }

    #[test]
    fn access_rules() {
        assert_eq!(parse(Get, "/health").map(|r| r.access()), Ok(Access::Public));
        assert_eq!(
            parse(Post, "/api/rigs/r1/agents/a1/done").map(|r| r.access()),
            Ok(Access::Rig { rig: "r1".into(), agent: Some("a1".into()) })
        );
        assert_eq!(
            parse(Get, "/api/rigs/r1/agents/a1").map(|r| r.access()),
            Ok(Access::Rig { rig: "r1".into(), agent: None })
        );
        assert_eq!(parse(Post, "/api/rigs/r1/sling").map(|r| r.access()), Ok(Access::Internal));
        assert_eq!(parse(Post, "/api/rigs/r1/convoys").map(|r| r.access()), Ok(Access::Internal));
        assert_eq!(parse(Get, "/api/rigs/r1/convoys/c1").map(|r| r.access()), Ok(Access::Internal));
        assert_eq!(
            parse(Post, "/api/towns/t/container/agents/start").map(|r| r.access()),
            Ok(Access::Internal)
        );
        assert_eq!(
            parse(Post, "/api/towns/t/container/heartbeat").map(|r| r.access()),
            Ok(Access::Container)
        );
        // The live stream's credential is its ticket; the dashboard page holds no secret.
        assert_eq!(
            parse(Get, "/api/towns/t/container/agents/a1/stream"),
            Ok(Route::AgentStream { town: "t".into(), agent: "a1".into() })
        );
        assert_eq!(
            parse(Get, "/api/towns/t/container/agents/a1/stream").map(|r| r.access()),
            Ok(Access::Public)
        );
        assert_eq!(
            parse(Post, "/api/towns/t/container/agents/a1/stream").map_err(|e| e.status()),
            Err(404)
        );
        assert_eq!(
            parse(Get, "/api/towns/t/container/agents/a.1/stream").map_err(|e| e.status()),
            Err(400)
        );
        assert_eq!(parse(Get, "/").map(|r| r.access()), Ok(Access::Public));
        assert_eq!(parse(Get, "/api/towns").map(|r| r.access()), Ok(Access::Internal));
    }
}
