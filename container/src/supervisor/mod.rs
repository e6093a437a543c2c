//! The process manager: starts agents (git worktree, Kilo server, session, first prompt),
//! sends them messages, stops them, and notices when their Kilo process dies.
//! Split by verb: [`start`], [`message`], [`stop`]; [`servers`] places agents on Kilo processes
//! and handles their exits.

mod drain;
mod finish;
mod mayor;
mod merge;
mod message;
mod pool;
mod push;
mod servers;
mod start;
mod stop;
mod wind_down;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::agents::{Agent, Registry};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::git::GitManager;
use crate::kilo::server::KiloServer;
use crate::process::Reaper;

pub struct Supervisor {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub http: reqwest::Client,
    pub started_at: Instant,
    reaper: Arc<Reaper>,
    git: GitManager,
    next_server_id: AtomicU64,
    /// Kilo config directory holding the Gastown tool files.
    tools_dir: PathBuf,
    /// This server's loopback URL, for the tool files inside Kilo processes.
    control_url: String,
    shutting_down: AtomicBool,
    /// Per share key (shared mode only): serializes choosing or spawning a shared Kilo server,
    /// so two starts that could share one do not both spawn. Starts with other keys, and every
    /// start with one process per agent, never wait for each other's Kilo start-up.
    placement: crate::locks::KeyedLocks,
    /// The refinery's merge jobs.
    merges: merge::MergeJobs,
    /// The container's memory limit, read once at start-up (`capacity.rs`).
    memory_limit: Option<u64>,
    /// Kilo processes started ahead of demand (`pool.rs`).
    pool: pool::WarmPool,
    /// The uids Kilo processes run as (`sandbox.rs`).
    pub uids: Arc<crate::sandbox::Uids>,
    /// Warm-up turns answered by the stand-in model (`http/warmup.rs`).
    pub warmup_turns: AtomicU64,
    /// The rigs' forge tokens, asked of the Worker (`forge.rs`).
    forge: crate::forge::ForgeTokens,
}

impl Supervisor {
    pub fn new(
        config: Arc<Config>,
        reaper: Arc<Reaper>,
        git: GitManager,
        tools_dir: PathBuf,
        control_url: String,
    ) -> Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            // Servers close idle keep-alive connections (workerd after about 5 s, Bun after
            // 10 s); reusing one at that moment fails the request. Never reuse one that old.
            .pool_idle_timeout(crate::IDLE_CONNECTION_REUSE)
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        // Event streams have no overall deadline; they end with the Kilo process.
        // Usage is spooled only where it is sent (with a Worker), so the spool never just grows.
        let mut registry = Registry::new(config.event_buffer_size);
        if config.api_url.is_some() {
            let spool = crate::usage_spool::UsageSpool::new(&config.workspace_root);
            registry = registry.with_usage_spool(Arc::new(spool));
        }
        let registry = Arc::new(registry);
        Ok(Arc::new(Self {
            registry,
            http,
            started_at: Instant::now(),
            reaper,
            git,
            next_server_id: AtomicU64::new(1),
            tools_dir,
            control_url,
            shutting_down: AtomicBool::new(false),
            placement: crate::locks::KeyedLocks::default(),
            merges: merge::MergeJobs::default(),
            memory_limit: crate::capacity::memory_limit(),
            pool: pool::WarmPool::new(config.pool_model.clone()),
            uids: crate::sandbox::Uids::new(
                config.isolate_agents,
                config.agent_uid_base,
                config.agent_uid_count,
            ),
            warmup_turns: AtomicU64::new(0),
            forge: crate::forge::ForgeTokens::default(),
            config,
        }))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn uptime_ms(&self) -> u64 {
        self.started_at.elapsed().as_millis() as u64
    }

    /// How many agents may run at once now (see `capacity.rs`).
    pub fn capacity(&self) -> usize {
        let samples: Vec<(u64, usize)> = self
            .registry
            .placements
            .loads()
            .into_iter()
            .filter(|(_, runs)| *runs > 0)
            .filter_map(|(s, runs)| Some((crate::capacity::rss(s.pid)?, runs)))
            .collect();
        let configured = self.config.agent_memory / self.config.agents_per_server as u64;
        let per_agent = crate::capacity::per_agent(configured, &samples);
        crate::capacity::agents_that_fit(
            self.memory_limit,
            self.config.memory_reserve,
            per_agent,
            self.config.max_agents,
        )
    }

    /// The memory the Kilo processes hold now (their resident sets, the warm pool's included).
    pub fn kilo_memory(&self) -> u64 {
        let loads = self.registry.placements.loads();
        loads.iter().filter_map(|(s, _)| crate::capacity::rss(s.pid)).sum()
    }

    /// The forge credential for git to reach a rig's origin (`None`: anonymous; `forge.rs`).
    async fn credential(
        &self,
        town_id: Option<&str>,
        rig_id: &str,
        git_url: &str,
    ) -> Result<Option<crate::git::GitCredential>> {
        let worker = crate::forge::WorkerAccess {
            http: &self.http,
            api_url: self.config.api_url.as_deref(),
            container_token: self.config.container_token.as_deref(),
        };
        self.forge.credential(&worker, town_id, rig_id, git_url).await.map_err(Error::Git)
    }

    pub fn agent(&self, agent_id: &str) -> Result<Arc<Agent>> {
        self.registry.get(agent_id)
    }

    /// The last `lines` lines the agent's Kilo process wrote (stdout and stderr, bounded).
    /// Empty when the agent has no process now. A shared process's output is its agents' too.
    pub fn output(&self, agent_id: &str, lines: usize) -> Result<Vec<String>> {
        let agent = self.agent(agent_id)?;
        let server = self.registry.placed(&agent).and_then(|p| p.server);
        Ok(server.map(|s| s.output_lines(lines)).unwrap_or_default())
    }

    /// The Kilo process whose tool key is `key` (compared in constant time against each).
    pub fn server_by_tool_key(&self, key: &str) -> Option<Arc<KiloServer>> {
        self.server_list().into_iter().find(|s| crate::secret::equal(&s.tool_key, key))
    }

    fn server_list(&self) -> Vec<Arc<KiloServer>> {
        self.registry.placements.servers()
    }

    /// Refuses new starts, saves the running agents' work ([`Self::drain`]), then stops every
    /// agent (SIGTERM, grace period, SIGKILL). Used on the server's own SIGTERM/SIGINT. Bounded
    /// by the drain window, the git timeout and the grace period plus the kill wait.
    pub async fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.drain().await;
        let active: Vec<_> =
            self.registry.all().into_iter().filter(|a| a.status().is_active()).collect();
        tracing::info!(agents = active.len(), "stopping all agents");
        let stops = active.iter().map(|a| self.stop(&a.id, shared_types::StopSignal::Term));
        futures_util::future::join_all(stops).await;
        // Pooled starts still in flight stop their process once it is up (the pool no longer
        // wants it); wait for them, bounded by Kilo's start-up deadline.
        let deadline = tokio::time::Instant::now() + self.config.kilo_ready_timeout;
        while self.pool_status().starting > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Whatever Kilo processes are left: the pool's, and a start's that was mid-flight.
        let left = self.server_list();
        futures_util::future::join_all(
            left.iter().map(|s| s.stop(nix::sys::signal::Signal::SIGTERM, self.config.stop_grace)),
        )
        .await;
    }
}
