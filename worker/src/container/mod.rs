//! The TownContainer's decisions, kept out of the runtime so they are unit-tested: where a
//! request goes, what environment the container starts with, which requests count as activity,
//! and when to retry a forward (the lifecycle's decisions are in `lifecycle`).
//!
//! The JS `@cloudflare/containers` helper the reference used does not exist for Rust; the
//! TownContainer Durable Object implements its behaviour (default port, env vars, wait for the
//! port, `sleepAfter` renewed by real activity and enforced by the alarm) on top of these.

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};
use crate::routes::Method;

pub mod budgets;
pub mod lifecycle;
pub mod object;
pub mod routes;

/// The control server's port inside the container.
pub const DEFAULT_PORT: u16 = 8080;
/// How long a start may take before the port answers.
pub const START_DEADLINE_MS: i64 = 90_000;
/// Delay between two tries while the port is not ready.
pub const PORT_POLL_MS: u64 = 300;

/// Worker env vars passed on to the container, under the same names (see the control server's
/// `config.rs`). Secrets among them travel only in the start options, never in logs.
pub const PASSED_ENV: &[&str] = &[
    "GASTOWN_API_URL",
    "CONTAINER_TOKEN",
    "GASTOWN_MODEL_BASE_URL",
    "GASTOWN_MODEL_API_KEY",
    "ALLOW_LOCAL_REPOS",
];

/// Where the TownContainer sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The Cloudflare container of this Durable Object (production, or `wrangler dev` with Docker).
    Container,
    /// A control server run natively (local development without Docker): `CONTAINER_URL`.
    Url(String),
    /// Neither: answered with a 503.
    Unavailable,
}

pub fn target(has_container: bool, container_url: Option<&str>) -> Target {
    match (has_container, container_url.map(str::trim).filter(|u| !u.is_empty())) {
        (true, _) => Target::Container,
        (false, Some(url)) => Target::Url(url.trim_end_matches('/').to_string()),
        (false, None) => Target::Unavailable,
    }
}

/// How the "no container runtime and no CONTAINER_URL" error starts; the scheduler tells it
/// from a failing container by this prefix (it stops scheduling instead of burning attempts).
pub const NO_RUNTIME: &str = "container not available";

pub fn unavailable() -> ApiError {
    ApiError::Unavailable(format!(
        "{NO_RUNTIME}: this Worker has no container runtime (wrangler dev without Docker) and no CONTAINER_URL"
    ))
}

/// The URL of `path` on a natively run control server. Only http(s) bases are accepted.
pub fn forward_url(base: &str, path: &str) -> ApiResult<String> {
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ApiError::Internal("CONTAINER_URL must be an http(s) URL".into()));
    }
    Ok(format!("{base}{path}"))
}

/// The container's environment, from the Worker's env (`lookup`), for the town's shard `shard`.
pub fn container_env(
    lookup: impl Fn(&str) -> Option<String>,
    shard: u32,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = PASSED_ENV
        .iter()
        .filter_map(|k| lookup(k).filter(|v| !v.is_empty()).map(|v| (k.to_string(), v)))
        .collect();
    env.insert("PORT".into(), DEFAULT_PORT.to_string());
    env.insert("GASTOWN_SHARD".into(), shard.to_string());
    env
}

/// Real activity renews `sleepAfter`; health checks and status polls do not, or a monitor
/// polling an idle container would keep it (and its bill) alive forever.
pub fn is_activity(method: Method, path: &str) -> bool {
    let polling = method == Method::Get && (path == "/health" || path.ends_with("/status"));
    !polling
}

/// The Durable Object's own paths (state, activity); never forwarded, and no public route
/// maps to them except the ones `routes` lists.
pub const OWN_PATH_PREFIX: &str = "/_do/";
pub const STATE_PATH: &str = "/_do/state";
pub const ACTIVITY_PATH: &str = "/_do/activity";
/// Agents' events kept in the object's SQLite (`agent_events`): a batch in, a page out.
pub const EVENTS_APPEND_PATH: &str = "/_do/events/append";
pub const EVENTS_LIST_PATH: &str = "/_do/events/list";
/// The town's spending guard, kept by its first shard's object: another shard's start is
/// checked (and entered in the hourly ledger) there, and taken back out if not accepted.
pub const GUARD_PATH: &str = "/_do/guard";
pub const UNGUARD_PATH: &str = "/_do/unguard";
/// The town a request to the TownContainer is for (set by the Worker, which knows it from the
/// route or the rig's config); the spending guard reads the town's caps with it.
pub const TOWN_HEADER: &str = "x-gastown-town";

/// The wait before resending a forward whose fetch failed (a reset connection, a server
/// restarting): 250, 500 and 1000 ms, then the failure is the caller's. Resending is safe: a
/// start is idempotent by `dispatchId`, stops and polls by nature.
pub fn retry_delay_ms(retry: u32) -> Option<u64> {
    (retry < 3).then(|| shared_types::backoff::delay_ms(250, retry, 1_000))
}

/// Errors that mean "the server inside is not listening yet": retried until the deadline.
pub fn port_not_ready(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("container port not found")
        || m.contains("not listening")
        || m.contains("connection refused")
        || m.contains("container is not running")
        || m.contains("no container instance")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target(true, Some("http://127.0.0.1:1")), Target::Container);
        assert_eq!(
            target(false, Some("http://127.0.0.1:1/")),
            Target::Url("http://127.0.0.1:1".into())
        );
        assert_eq!(target(false, Some("  ")), Target::Unavailable);
        assert_eq!(target(false, None), Target::Unavailable);
        assert_eq!(
            forward_url("http://h:1", "/agents/start").as_deref(),
            Ok("http://h:1/agents/start")
        );
        assert!(forward_url("file:///x", "/h").is_err());
    }

    #[test]
    fn env_passes_only_known_set_variables() {
        let env = container_env(
            |k| match k {
                "CONTAINER_TOKEN" => Some("t".into()),
                "GASTOWN_MODEL_API_KEY" => Some(String::new()),
                "INTERNAL_API_SECRET" => Some("never".into()),
                _ => None,
            },
            2,
        );
        assert_eq!(env.get("GASTOWN_SHARD").map(String::as_str), Some("2"));
        assert_eq!(env.get("CONTAINER_TOKEN").map(String::as_str), Some("t"));
        assert_eq!(env.get("PORT").map(String::as_str), Some("8080"));
        assert!(
            !env.contains_key("GASTOWN_MODEL_API_KEY") && !env.contains_key("INTERNAL_API_SECRET")
        );
    }

    #[test]
    fn polls_are_not_activity() {
        assert!(!is_activity(Method::Get, "/health"));
        assert!(!is_activity(Method::Get, "/agents/a1/status"));
        assert!(is_activity(Method::Post, "/agents/start"));
        assert!(is_activity(Method::Post, "/agents/a1/message"));
    }

    #[test]
    fn forwards_are_retried_three_times_with_backoff() {
        let delays: Vec<u64> = (0..5).map_while(retry_delay_ms).collect();
        assert_eq!(delays, [250, 500, 1000]);
    }

    #[test]
    fn port_readiness_errors() {
        assert!(port_not_ready("Error: container port not found. Make sure you exposed the port"));
        assert!(!port_not_ready("Internal error"));
    }
}
