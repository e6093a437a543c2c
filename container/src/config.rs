//! Settings, read once from the environment at start-up. Every setting has a default that is
//! right inside the container image; tests and local development override them.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PORT` | 8080 | control server port |
//! | `BIND_ADDR` | 0.0.0.0 | control server address |
//! | `CONTAINER_TOKEN` | unset | secret required in `X-Container-Token` on every route but /health |
//! | `WORKSPACE_ROOT` | /workspace | rig clones, worktrees and per-agent state |
//! | `GASTOWN_API_URL` | unset | the Worker; tool calls and heartbeats go there |
//! | `KILO_BIN` | `kilo` | the Kilo CLI executable |
//! | `AGENTS_PER_SERVER` | 1 | agents that may share one `kilo serve` process |
//! | `STOP_GRACE_MS` | 10000 | SIGTERM-to-SIGKILL grace period |
//! | `SHUTDOWN_DRAIN_MS` | 30000 | on the server's SIGTERM: how long agents get to commit and push before their work is saved as a WIP commit (0: save at once) |
//! | `HEARTBEAT_INTERVAL_MS` | 30000 | heartbeat period |
//! | `ALLOW_LOCAL_REPOS` | false | accept `file://` git URLs (local development and tests) |
//! | `KILO_READY_TIMEOUT_MS` | 60000 | deadline for a `kilo serve` to answer its health check |
//! | `GIT_TIMEOUT_MS` | 600000 | deadline for one clone or fetch |
//! | `EVENT_BUFFER_SIZE` | 1000 | events kept per agent |
//! | `EVENT_BATCH_MS` | 2000 | how often agents' events (and usage) go to the Worker |
//! | `GASTOWN_MODEL_BASE_URL` | unset | OpenAI-compatible endpoint for the agents' model provider |
//! | `GASTOWN_MODEL_API_KEY` | unset | its API key (passed to Kilo by environment, never written) |
//! | `KILO_MEMORY_LIMIT_BYTES` | unset | passed to each Kilo process as `BUN_JSC_forceRAMSize` |
//! | `GASTOWN_TOOLS_DIR` | `<WORKSPACE_ROOT>/run/tools` | Kilo config folder for the Gastown tool files |
//! | `MAX_AGENTS` | 0 (from memory) | most agents running at once; 0: the memory limit divided by the per-agent memory |
//! | `AGENT_MEMORY_BYTES` | 734003200 (700 MiB) | memory assumed per agent before any is measured (one `kilo serve` after a turn) |
//! | `MEMORY_RESERVE_BYTES` | 536870912 (512 MiB) | memory kept for the control server, git and the gates |
//! | `LISTEN_FDS`, `LISTEN_PID` | unset | socket activation: serve on the inherited fd 3 instead of binding `BIND_ADDR`:`PORT` (`listen.rs`) |
//! | `WARM_POOL_SIZE` | 1 | `kilo serve` processes kept started ahead of demand (`supervisor/pool.rs`); 0: none |
//! | `WARM_POOL_MODEL` | unset (the last start's model) | the model the pooled processes are configured for |
//! | `GASTOWN_SHARD` | 0 | which of its town's shards this container is (set by its TownContainer; sent in heartbeats) |
//! | `AGENT_ISOLATION` | auto | `auto`: each Kilo process under its own uid when the server runs as root (`sandbox.rs`); `off`: every agent as the server's uid |
//! | `AGENT_UID_BASE` | 20000 | first uid handed to Kilo processes |
//! | `AGENT_UID_COUNT` | 1000 | how many uids, from `AGENT_UID_BASE` |
//! | `LOG` | info | log filter (tracing's env-filter syntax); logs are JSON lines on stdout |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shared_types::ValidationPolicy;

/// Every variable [`Config::from_env`] reads (printed by `gastown-container print-env`, which the
/// Dockerfile check compares against).
pub const ENV_VARS: &[&str] = &[
    "PORT",
    "BIND_ADDR",
    "CONTAINER_TOKEN",
    "WORKSPACE_ROOT",
    "GASTOWN_API_URL",
    "KILO_BIN",
    "AGENTS_PER_SERVER",
    "STOP_GRACE_MS",
    "SHUTDOWN_DRAIN_MS",
    "HEARTBEAT_INTERVAL_MS",
    "ALLOW_LOCAL_REPOS",
    "KILO_READY_TIMEOUT_MS",
    "GIT_TIMEOUT_MS",
    "EVENT_BUFFER_SIZE",
    "EVENT_BATCH_MS",
    "GASTOWN_MODEL_BASE_URL",
    "GASTOWN_MODEL_API_KEY",
    "KILO_MEMORY_LIMIT_BYTES",
    "GASTOWN_TOOLS_DIR",
    "LOG",
    "LISTEN_FDS",
    "LISTEN_PID",
    "MAX_AGENTS",
    "AGENT_MEMORY_BYTES",
    "MEMORY_RESERVE_BYTES",
    "WARM_POOL_SIZE",
    "WARM_POOL_MODEL",
    "GASTOWN_SHARD",
    "AGENT_ISOLATION",
    "AGENT_UID_BASE",
    "AGENT_UID_COUNT",
];

/// The variables that hold secrets: erased from the environment once read (`secret.rs`).
pub const SECRET_VARS: &[&str] = &["CONTAINER_TOKEN", "GASTOWN_MODEL_API_KEY"];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub container_token: Option<String>,
    pub workspace_root: PathBuf,
    pub api_url: Option<String>,
    pub kilo_bin: PathBuf,
    pub agents_per_server: usize,
    pub stop_grace: Duration,
    pub shutdown_drain: Duration,
    pub heartbeat_interval: Duration,
    pub allow_local_repos: bool,
    pub kilo_ready_timeout: Duration,
    pub git_timeout: Duration,
    pub event_buffer_size: usize,
    pub event_batch_interval: Duration,
    pub model_base_url: Option<String>,
    pub model_api_key: Option<String>,
    pub kilo_memory_limit: Option<u64>,
    pub tools_dir: Option<PathBuf>,
    /// `MAX_AGENTS`: a fixed cap on running agents (`None`: from memory, see `capacity.rs`).
    pub max_agents: Option<usize>,
    pub agent_memory: u64,
    pub memory_reserve: u64,
    pub pool_size: usize,
    pub pool_model: Option<String>,
    /// Which shard of its town this container is.
    pub shard: u32,
    /// `AGENT_ISOLATION` is not `off`.
    pub isolate_agents: bool,
    pub agent_uid_base: u32,
    pub agent_uid_count: u32,
}

impl Config {
    /// Reads the settings; an unparsable value is an error naming the variable.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |k: &str| {
            debug_assert!(ENV_VARS.contains(&k), "{k} missing from ENV_VARS");
            get(k).filter(|v| !v.trim().is_empty())
        };
        let num = |k: &str, default: u64| -> Result<u64, String> {
            get(k).map_or(Ok(default), |v| {
                v.trim().parse().map_err(|_| format!("{k} must be a whole number, got {v:?}"))
            })
        };
        let ms = |k: &str, default: u64| num(k, default).map(Duration::from_millis);
        let port = u16::try_from(num("PORT", 8080)?)
            .map_err(|_| "PORT must be at most 65535".to_string())?;
        let bind = get("BIND_ADDR").unwrap_or_else(|| "0.0.0.0".into());
        let listen = format!("{bind}:{port}")
            .parse()
            .map_err(|_| format!("BIND_ADDR {bind:?} is not an IP address"))?;
        let agents_per_server = num("AGENTS_PER_SERVER", 1)?;
        if !(1..=64).contains(&agents_per_server) {
            return Err("AGENTS_PER_SERVER must be between 1 and 64".into());
        }
        let event_buffer_size = num("EVENT_BUFFER_SIZE", 1000)?.clamp(10, 100_000);
        let flag = |k: &str| get(k).is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        Ok(Self {
            listen,
            container_token: get("CONTAINER_TOKEN"),
            workspace_root: PathBuf::from(
                get("WORKSPACE_ROOT").unwrap_or_else(|| "/workspace".into()),
            ),
            api_url: get("GASTOWN_API_URL").map(|u| u.trim_end_matches('/').to_string()),
            kilo_bin: PathBuf::from(get("KILO_BIN").unwrap_or_else(|| "kilo".into())),
            agents_per_server: agents_per_server as usize,
            stop_grace: ms("STOP_GRACE_MS", 10_000)?,
            shutdown_drain: ms("SHUTDOWN_DRAIN_MS", 30_000)?,
            heartbeat_interval: ms("HEARTBEAT_INTERVAL_MS", 30_000)?
                .max(Duration::from_millis(100)),
            allow_local_repos: flag("ALLOW_LOCAL_REPOS"),
            kilo_ready_timeout: ms("KILO_READY_TIMEOUT_MS", 60_000)?,
            git_timeout: ms("GIT_TIMEOUT_MS", 600_000)?,
            event_buffer_size: event_buffer_size as usize,
            event_batch_interval: ms("EVENT_BATCH_MS", 2_000)?
                .clamp(Duration::from_millis(100), Duration::from_secs(3_600)),
            model_base_url: get("GASTOWN_MODEL_BASE_URL"),
            model_api_key: get("GASTOWN_MODEL_API_KEY"),
            tools_dir: get("GASTOWN_TOOLS_DIR").map(PathBuf::from),
            kilo_memory_limit: get("KILO_MEMORY_LIMIT_BYTES")
                .map(|v| {
                    v.parse().map_err(|_| "KILO_MEMORY_LIMIT_BYTES must be a number".to_string())
                })
                .transpose()?,
            max_agents: Some(num("MAX_AGENTS", 0)? as usize).filter(|n| *n > 0),
            agent_memory: num("AGENT_MEMORY_BYTES", 700 * 1024 * 1024)?.max(1),
            memory_reserve: num("MEMORY_RESERVE_BYTES", 512 * 1024 * 1024)?,
            pool_size: num("WARM_POOL_SIZE", 1)?.min(64) as usize,
            pool_model: get("WARM_POOL_MODEL").map(|m| m.trim().to_string()),
            shard: u32::try_from(num("GASTOWN_SHARD", 0)?)
                .ok()
                .filter(|s| *s < 1000)
                .ok_or("GASTOWN_SHARD must be a whole number below 1000")?,
            isolate_agents: match get("AGENT_ISOLATION").as_deref().map(str::trim) {
                None | Some("auto") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(format!("AGENT_ISOLATION must be auto or off, got {other:?}"))
                }
            },
            agent_uid_base: u32::try_from(num("AGENT_UID_BASE", 20_000)?)
                .ok()
                .filter(|b| *b >= 1000)
                .ok_or("AGENT_UID_BASE must be between 1000 and 4294967295")?,
            agent_uid_count: u32::try_from(num("AGENT_UID_COUNT", 1000)?)
                .ok()
                .filter(|c| (1..=65_536).contains(c))
                .ok_or("AGENT_UID_COUNT must be between 1 and 65536")?,
        })
    }

    pub fn validation_policy(&self) -> ValidationPolicy {
        ValidationPolicy { allow_local_repos: self.allow_local_repos }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_match_the_container_image() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.workspace_root, PathBuf::from("/workspace"));
        assert_eq!(c.agents_per_server, 1);
        assert_eq!(c.stop_grace, Duration::from_secs(10));
        assert_eq!(c.shutdown_drain, Duration::from_secs(30));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert!(!c.allow_local_repos);
        assert!(c.container_token.is_none());
        assert_eq!(c.pool_size, 1);
        assert!(c.pool_model.is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert!(config(&[("PORT", "x")]).unwrap_err().contains("PORT"));
        assert!(config(&[("PORT", "70000")]).is_err());
        assert!(config(&[("AGENTS_PER_SERVER", "0")]).is_err());
        assert!(config(&[("STOP_GRACE_MS", "-1")]).unwrap_err().contains("STOP_GRACE_MS"));
        assert!(config(&[("BIND_ADDR", "nope")]).is_err());
        assert!(config(&[("AGENT_ISOLATION", "maybe")]).unwrap_err().contains("AGENT_ISOLATION"));
        assert!(
            config(&[("AGENT_UID_BASE", "0")]).unwrap_err().contains("AGENT_UID_BASE"),
            "never root's or system uids"
        );
        assert!(config(&[("AGENT_UID_COUNT", "0")]).is_err());
    }

    #[test]
    fn empty_token_means_no_token() {
        assert!(config(&[("CONTAINER_TOKEN", "  ")]).expect("valid").container_token.is_none());
        assert_eq!(
            config(&[("CONTAINER_TOKEN", "s")]).expect("valid").container_token.as_deref(),
            Some("s")
        );
    }
}
