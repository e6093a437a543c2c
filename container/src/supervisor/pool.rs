//! The warm pool: up to `WARM_POOL_SIZE` `kilo serve` processes started before any agent needs
//! them, so a dispatch that takes one only opens a session and sends its prompt (Kilo's own
//! start-up, 2-5 s on two cores and more under load, is off its path).
//!
//! - A pooled process carries nothing of an agent (see `servers.rs`): no identity, no envVars.
//!   An agent whose request has envVars gets a process started for it.
//! - It is configured for one model: `WARM_POOL_MODEL`, else the model of the last start. Ready
//!   processes of an older model are stopped when the model changes.
//! - A process serves one agent, once: it leaves the pool when taken, and is stopped when that
//!   agent's run ends, like any process started for one agent.
//! - The pool never grows past the capacity: active agents plus pooled processes stay within
//!   what fits (`capacity.rs`), so a full container holds no idle Kilo.
//! - It is refilled in the background after every take and every exit, once no agent is
//!   on its way to the model (a burst gets the CPU first). After a failed start it
//!   waits (2 s, doubling up to 30 s) and gives up after [`MAX_FAILURES`] failures in a row,
//!   until the next agent start asks again.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use shared_types::PoolStatus;

use super::Supervisor;
use crate::kilo::config::{AGENT_NAME, WARMUP_MODEL, WARMUP_PROVIDER};
use crate::kilo::server::KiloServer;

/// Failed starts in a row after which the pool stops trying until the next agent start.
const MAX_FAILURES: u32 = 5;
/// The longest a refill waits for the agents being started to be running.
const YIELD_TO_STARTS: Duration = Duration::from_secs(60);
/// Longest a warm-up turn may take (it answers in about a second on 2 cores).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct WarmPool {
    state: Mutex<PoolState>,
}

/// The pool's own state; its ready processes are in the placement table (`placements.rs`),
/// added and cleared under this lock so a change of model and a process coming ready cannot
/// cross.
#[derive(Default)]
struct PoolState {
    starting: usize,
    model: Option<String>,
    failures: u32,
}

impl WarmPool {
    pub(super) fn new(model: Option<String>) -> Self {
        Self { state: Mutex::new(PoolState { model, ..Default::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(shared_types::backoff::delay_ms(1_000, failures, 30_000))
}

impl Supervisor {
    /// Takes a ready pooled process configured for `model`, if there is one.
    pub(super) fn take_pooled(&self, model: &str) -> Option<Arc<KiloServer>> {
        self.registry.placements.take_pooled(model)
    }

    /// Follows the model agents are started with (unless `WARM_POOL_MODEL` fixes it). A new
    /// model stops the ready processes of the old one; the next refill starts new ones.
    pub(super) fn note_pool_model(&self, model: &str) {
        if self.config.pool_model.is_some() || self.config.pool_size == 0 {
            return;
        }
        let stale = {
            let mut pool = self.pool.lock();
            if pool.model.as_deref() == Some(model) {
                return;
            }
            pool.model = Some(model.to_string());
            pool.failures = 0;
            self.registry.placements.clear_pooled()
        };
        let grace = self.config.stop_grace;
        for server in stale {
            tokio::spawn(async move { server.stop(Signal::SIGTERM, grace).await });
        }
    }

    /// Starts processes in the background until the pool is full, within the capacity. Returns
    /// at once; does nothing while shutting down or before the model is known.
    pub fn refill_pool(self: &Arc<Self>) {
        if self.config.pool_size == 0 || self.is_shutting_down() {
            return;
        }
        let room = self.capacity().saturating_sub(self.registry.active_count());
        let (model, missing, failures) = {
            let mut pool = self.pool.lock();
            let Some(model) = pool.model.clone() else { return };
            if pool.failures >= MAX_FAILURES {
                return;
            }
            let held = self.registry.placements.pooled().len() + pool.starting;
            let missing = self.config.pool_size.min(room).saturating_sub(held);
            pool.starting += missing;
            (model, missing, pool.failures)
        };
        for _ in 0..missing {
            let this = self.clone();
            let model = model.clone();
            tokio::spawn(async move { this.start_pooled(model, failures).await });
        }
    }

    /// One pooled start: after `failures` failures in a row it waits first. It also waits
    /// (up to [`YIELD_TO_STARTS`]) while agents are on their way to the model (starting, or
    /// running before the model answered their first step): a refill is for the next dispatch
    /// and must not take the CPU from the ones under way. A Kilo start-up costs about 5
    /// CPU-seconds, a first turn's way to the model under one: six refills started as a
    /// burst's agents began their first turns made those turns wait behind 30 CPU-seconds.
    /// A process that is ready when the pool no longer wants it (shutdown, model changed) is
    /// stopped.
    async fn start_pooled(self: Arc<Self>, model: String, failures: u32) {
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
        }
        let yield_until = tokio::time::Instant::now() + YIELD_TO_STARTS;
        while self.registry.all().iter().any(|a| a.getting_going())
            && tokio::time::Instant::now() < yield_until
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let result = self.spawn_server(&model, self.base_env(), None, &self.tools_dir).await;
        if let Ok((server, _)) = &result {
            self.warm_up(server).await;
        }
        let unwanted = {
            let mut pool = self.pool.lock();
            pool.starting = pool.starting.saturating_sub(1);
            match result {
                Ok((server, timings)) => {
                    let wanted =
                        !self.is_shutting_down() && pool.model.as_deref() == Some(model.as_str());
                    if wanted {
                        tracing::info!(
                            server = server.id,
                            pid = server.pid,
                            ready_ms = timings.ready.as_millis() as u64,
                            "pooled kilo server ready"
                        );
                        pool.failures = 0;
                        self.registry.placements.add_pooled(server.id);
                        None
                    } else {
                        Some(server)
                    }
                }
                Err(e) => {
                    pool.failures += 1;
                    tracing::warn!(error = %e, failures = pool.failures, "a pooled kilo server failed to start");
                    None
                }
            }
        };
        if let Some(server) = unwanted {
            server.stop(Signal::SIGTERM, self.config.stop_grace).await;
        }
        self.refill_pool();
    }

    /// The warm-up turn of a new pooled process, in its own scratch folder, against the
    /// control server's stand-in model: Kilo loads its provider SDK, the tool files and the
    /// agent definition once, off the path of the agent that takes the process. Best effort: a
    /// process whose warm-up failed still serves (cold).
    async fn warm_up(&self, server: &KiloServer) {
        let dir = server.scratch_dir();
        let turn = async {
            let session = server.client.create_session(&dir, "warm-up").await?;
            let model = (WARMUP_PROVIDER, WARMUP_MODEL);
            server
                .client
                .turn_with(&session, &dir, AGENT_NAME, model, "Reply: ready.", WARM_UP_TIMEOUT)
                .await
        };
        let t0 = tokio::time::Instant::now();
        match turn.await {
            Ok(()) => tracing::info!(
                server = server.id,
                warm_up_ms = t0.elapsed().as_millis() as u64,
                "pooled kilo server warmed up"
            ),
            Err(e) => {
                tracing::warn!(server = server.id, error = %e, "a pooled kilo server's warm-up turn failed; it serves cold")
            }
        }
    }

    /// `/health`'s view of the pool.
    pub fn pool_status(&self) -> PoolStatus {
        let pool = self.pool.lock();
        let ready = self.registry.placements.pooled();
        PoolStatus {
            size: self.config.pool_size,
            ready: ready.len(),
            starting: pool.starting,
            model: pool.model.clone(),
            pids: ready.iter().map(|s| s.pid).collect(),
            warmup_turns: self.warmup_turns.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=7).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(waits, vec![2, 4, 8, 16, 30, 30, 30]);
    }
}
