//! The TownContainer's decisions, kept out of the runtime so they are unit-tested: where a
//! request goes, what environment the container starts with, which requests count as activity,
//! and when an idle container is put to sleep.
//!
//! The JS `@cloudflare/containers` helper the reference used does not exist for Rust; the
//! TownContainer Durable Object implements its behaviour (default port, env vars, wait for the
//! port, `sleepAfter` renewed by real activity and enforced by the alarm) on top of these.

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};

/// The control server's port inside the container.
pub const DEFAULT_PORT: u16 = 8080;
/// `sleepAfter` when `CONTAINER_SLEEP_AFTER_MS` is not set: 30 minutes.
pub const DEFAULT_SLEEP_AFTER_MS: i64 = 30 * 60 * 1000;
/// How long a start may take before the port answers.
pub const START_DEADLINE_MS: i64 = 90_000;
/// Delay between two tries while the port is not ready.
pub const PORT_POLL_MS: u64 = 300;

/// Worker env vars passed on to the container, under the same names (see the control server's
/// `config.rs`). Secrets among them travel only in the start options, never in logs.
pub const PASSED_ENV: &[&str] =
    &["GASTOWN_API_URL", "CONTAINER_TOKEN", "GASTOWN_MODEL_BASE_URL", "GASTOWN_MODEL_API_KEY", "ALLOW_LOCAL_REPOS"];

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

/// The container's environment, from the Worker's env (`lookup`).
pub fn container_env(lookup: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> =
        PASSED_ENV.iter().filter_map(|k| lookup(k).filter(|v| !v.is_empty()).map(|v| (k.to_string(), v))).collect();
    env.insert("PORT".into(), DEFAULT_PORT.to_string());
    env
}

/// `CONTAINER_SLEEP_AFTER_MS`, or the default when unset or not a positive number.
pub fn sleep_after_ms(value: Option<&str>) -> i64 {
    value.and_then(|v| v.trim().parse::<i64>().ok()).filter(|v| *v > 0).unwrap_or(DEFAULT_SLEEP_AFTER_MS)
}

/// Real activity renews `sleepAfter`; health checks and status polls do not, or a monitor
/// polling an idle container would keep it (and its bill) alive forever.
pub fn is_activity(method: &str, path: &str) -> bool {
    let polling = method.eq_ignore_ascii_case("GET") && (path == "/health" || path.ends_with("/status"));
    !polling
}

/// The alarm's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    /// Idle for `sleepAfter`: stop the container and arm nothing.
    Sleep,
    /// Still in use: look again at this time (ms since the epoch).
    RearmAt(i64),
}

pub fn on_alarm(now_ms: i64, last_activity_ms: Option<i64>, sleep_after_ms: i64) -> AlarmAction {
    match last_activity_ms {
        Some(last) if now_ms < last + sleep_after_ms => AlarmAction::RearmAt(last + sleep_after_ms),
        _ => AlarmAction::Sleep,
    }
}

/// Errors that mean "the server inside is not listening yet": retried until the deadline.
pub fn port_not_ready(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("container port not found") || m.contains("not listening") || m.contains("connection refused")
        || m.contains("container is not running") || m.contains("no container instance")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target(true, Some("http://127.0.0.1:1")), Target::Container);
        assert_eq!(target(false, Some("http://127.0.0.1:1/")), Target::Url("http://127.0.0.1:1".into()));
        assert_eq!(target(false, Some("  ")), Target::Unavailable);
        assert_eq!(target(false, None), Target::Unavailable);
        assert_eq!(forward_url("http://h:1", "/agents/start").as_deref(), Ok("http://h:1/agents/start"));
        assert!(forward_url("file:///x", "/h").is_err());
    }

    #[test]
    fn env_passes_only_known_set_variables() {
        let env = container_env(|k| match k {
            "CONTAINER_TOKEN" => Some("t".into()),
            "GASTOWN_MODEL_API_KEY" => Some(String::new()),
            "INTERNAL_API_SECRET" => Some("never".into()),
            _ => None,
        });
        assert_eq!(env.get("CONTAINER_TOKEN").map(String::as_str), Some("t"));
        assert_eq!(env.get("PORT").map(String::as_str), Some("8080"));
        assert!(!env.contains_key("GASTOWN_MODEL_API_KEY") && !env.contains_key("INTERNAL_API_SECRET"));
    }

    #[test]
    fn sleep_policy() {
        assert_eq!(sleep_after_ms(None), DEFAULT_SLEEP_AFTER_MS);
        assert_eq!(sleep_after_ms(Some("1000")), 1000);
        assert_eq!(sleep_after_ms(Some("-5")), DEFAULT_SLEEP_AFTER_MS);
        assert_eq!(on_alarm(1_500, Some(1_000), 1_000), AlarmAction::RearmAt(2_000));
        assert_eq!(on_alarm(2_000, Some(1_000), 1_000), AlarmAction::Sleep);
        assert_eq!(on_alarm(2_000, None, 1_000), AlarmAction::Sleep);
        assert!(!is_activity("GET", "/health"));
        assert!(!is_activity("GET", "/agents/a1/status"));
        assert!(is_activity("POST", "/agents/start"));
        assert!(is_activity("POST", "/agents/a1/message"));
    }

    #[test]
    fn port_readiness_errors() {
        assert!(port_not_ready("Error: container port not found. Make sure you exposed the port"));
        assert!(!port_not_ready("Internal error"));
    }
}
