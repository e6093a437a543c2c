//! The end of a run whose work is done: after the agent's `gt_done` has been accepted by the
//! Worker, its Kilo session is closed and its process released, so a finished polecat holds no
//! memory and its id can take new work.
//!
//! The turn that called `gt_done` is let finish first (the model answers the tool result), up
//! to [`TURN_END_WAIT`]: the run waits for the session to report a turn end after the Worker
//! took the work, not for a "busy" flag to clear, since a loaded machine can take longer than
//! any fixed look to send the model that answer and the turn's start may not have been seen.
//! Then the run is stopped like a requested stop: its own Kilo process is
//! terminated, or, on a shared process, its session is aborted and the process goes with its
//! last agent. The worktree stays: the branch is not merged yet (the refinery removes it).

use std::sync::Arc;
use std::time::Duration;

use shared_types::StopSignal;

use super::Supervisor;
use crate::agents::Agent;

/// Longest wait for the turn that called `gt_done` to end before the run is stopped anyway.
const TURN_END_WAIT: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Called once the Worker accepted the agent's `gt_done` for run `generation`. Returns at
    /// once; the run is ended in the background. A run that is stopped or replaced meanwhile
    /// is left alone (the stop is for this generation only).
    pub fn work_done(self: &Arc<Self>, agent: &Arc<Agent>, generation: u64) {
        let Some(turns_ended) = agent.mark_work_done(generation) else {
            return;
        };
        let this = self.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            agent
                .wait_while(TURN_END_WAIT, |s| {
                    s.generation == generation
                        && s.status.is_active()
                        && s.turns_ended == turns_ended
                })
                .await;
            tracing::info!(agent = %agent.id, generation, "work done: ending the run");
            if let Err(e) = this.stop_run(&agent.id, Some(generation), StopSignal::Term).await {
                tracing::warn!(agent = %agent.id, error = %e, "could not end the finished run");
            }
        });
    }
}
