//! `POST /agents/:id/stop` and the clean-up of a start that failed half-way.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use shared_types::{ProcessStatus, StopSignal};

use super::Supervisor;
use crate::error::Result;
use crate::kilo::server::KiloServer;

/// Extra time, beyond the grace period and the kill wait, that a stop waits for the agent's
/// record to show the end.
const SETTLE: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Stops an agent:
    /// - exited or failed: nothing to do (stopping is idempotent);
    /// - starting before its Kilo process exists: marked `stopping`; the start unwinds at its
    ///   next step and the agent ends as `exited`;
    /// - on its own Kilo process: the process group gets `signal`, then SIGKILL after the
    ///   grace period; returns once the process is gone;
    /// - on a shared Kilo process: its turn is aborted and it leaves the process, which is
    ///   stopped when no agent is left on it.
    pub async fn stop(self: &Arc<Self>, agent_id: &str, signal: StopSignal) -> Result<()> {
        self.stop_run(agent_id, None, signal).await
    }

    /// [`Self::stop`] of one run: with `only`, nothing happens unless the agent's current run is
    /// that generation (a run that ended its work must not take a newer run down with it).
    pub(super) async fn stop_run(
        self: &Arc<Self>,
        agent_id: &str,
        only: Option<u64>,
        signal: StopSignal,
    ) -> Result<()> {
        let agent = self.agent(agent_id)?;
        let generation = {
            let s = agent.lock();
            if !s.status.is_active() || only.is_some_and(|g| g != s.generation) {
                return Ok(());
            }
            s.generation
        };
        // Already stopping is fine: we wait for the same end below.
        let _ = agent.transition(Some(generation), ProcessStatus::Stopping);
        let signal = match signal {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        let placements = &self.registry.placements;
        let Some(run) = placements.placed(agent_id, generation) else {
            // Still before its process: the start sees `stopping` and unwinds.
            return Ok(());
        };
        let Some(server) = run.server.clone() else { return Ok(()) };
        if server.share_key.is_none() {
            server.stop(signal, self.config.stop_grace).await;
        } else {
            if let Some(live) = run.live() {
                if let Err(e) = server.client.abort(&live.session, &live.workdir).await {
                    tracing::warn!(agent = agent_id, error = %e, "could not abort the agent's turn");
                }
            }
            placements.remove_run(agent_id, generation);
            agent.finish(generation, None, None);
            self.release_if_unused(&server).await;
        }
        // The exit handler records the end; wait for it, bounded.
        agent
            .wait_while(self.config.stop_grace + SETTLE, |s| {
                s.generation == generation && s.status.is_active()
            })
            .await;
        Ok(())
    }

    /// Stops a Kilo process that no agent uses any more.
    pub(super) async fn release_if_unused(&self, server: &KiloServer) {
        if self.registry.placements.runs_on(server.id) == 0 {
            server.stop(Signal::SIGTERM, self.config.stop_grace).await;
        }
    }

    /// After a failed start: takes the agent off its Kilo process, stopping the process if
    /// the agent was alone on it.
    pub(super) async fn release_agent(&self, agent_id: &str, generation: u64) {
        if let Some((server, 0)) = self.registry.placements.remove_run(agent_id, generation) {
            server.stop(Signal::SIGTERM, self.config.stop_grace).await;
        }
    }
}
