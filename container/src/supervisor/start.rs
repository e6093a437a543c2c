//! `POST /agents/start`: validate, claim the agent id, then (in the background unless the
//! caller asks to wait) place the agent on a Kilo process, make its checkout as that process's
//! uid, open its session and send the first prompt.
//!
//! The answer comes as soon as the agent is registered as `starting`: a burst of starts is not
//! served one at a time, and the slow steps' outcome shows in the agent's status, events and
//! the heartbeat (`failed`, with the error). Invalid input is refused before anything is
//! created. A stop that arrives mid-start wins: each step checks that the run is still
//! starting and unwinds what it created if not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared_types::{AgentProcess, AgentRole, ProcessStatus, StartAgentRequest, StopSignal};

use super::Supervisor;
use crate::agents::agent::split_request;
use crate::agents::{Agent, AgentSpec, Claim};
use crate::error::{Error, Result};
use crate::git::{Owner, PrepareTimings, WorktreeRequest};
use crate::kilo::config::AGENT_NAME;

/// Where the time of one start went (logged per start; bench/container.sh reads it).
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimings {
    pub clone_ms: u64,
    pub worktree_ms: u64,
    pub spawn_ms: u64,
    pub ready_ms: u64,
    pub session_ms: u64,
    pub total_ms: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The outcome of a start: the run, and whether this call started it (false: a repeated
/// dispatch found the run it had started before).
pub struct Started {
    pub process: AgentProcess,
    pub created: bool,
}

impl Supervisor {
    /// Starts a run of an agent. A start whose `dispatchId` names the agent's current run
    /// answers with that run; a start for an agent whose run has finished its work (`gt_done`)
    /// ends that run first; a start for an agent that is really at work is a 409.
    ///
    /// Without `wait` it answers once the run is claimed (`starting`) and does the rest in the
    /// background; with `wait` it answers once the run is `running`, or with the start's error.
    pub async fn start(
        self: &Arc<Self>,
        request: StartAgentRequest,
        wait: bool,
    ) -> Result<Started> {
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        request.validate(self.config.validation_policy()).map_err(Error::invalid)?;
        let (spec, prompt, api_token) = split_request(request);
        let capacity = self.capacity();
        // At most two claims: a run that finished its work is ended once, then claimed again.
        let mut ended = None;
        let (agent, generation) = loop {
            match self.registry.begin_start(spec.clone(), api_token.clone(), capacity)? {
                Claim::Started(agent, generation) => break (agent, generation),
                Claim::SameRun(agent) => {
                    return Ok(Started { process: self.registry.process(&agent), created: false })
                }
                // Not a conflict: the run that finished its work is going away, and the start
                // can go as soon as it has (a 429 keeps the bead queued without spending one of
                // its dispatch attempts, as for a full container).
                Claim::Finishing(agent, _) if ended.is_some() => {
                    return Err(Error::AtCapacity(format!(
                        "agent {} is still ending its previous run; the start can go once it has",
                        agent.id
                    )));
                }
                Claim::Finishing(agent, finished) => {
                    tracing::info!(agent = %agent.id, "ending the finished run before the new one");
                    self.stop_run(&agent.id, Some(finished), StopSignal::Term).await?;
                    ended = Some(finished);
                }
            }
        };
        tracing::info!(agent = %agent.id, identity = %agent.spec().identity, generation, wait, "starting agent");
        if wait {
            self.run_start(&agent, generation, &prompt).await?;
        } else {
            let this = self.clone();
            let agent = agent.clone();
            tokio::spawn(async move {
                // The outcome is on the agent's record (running, or failed with the error).
                let _ = this.run_start(&agent, generation, &prompt).await;
            });
        }
        Ok(Started { process: self.registry.process(&agent), created: true })
    }

    /// The slow part of a start; on failure the run is released and recorded as `failed`.
    async fn run_start(
        self: &Arc<Self>,
        agent: &Arc<Agent>,
        generation: u64,
        prompt: &str,
    ) -> Result<()> {
        match self.launch(agent, generation, prompt).await {
            Ok(t) => {
                tracing::info!(
                    agent = %agent.id,
                    clone_ms = t.clone_ms,
                    worktree_ms = t.worktree_ms,
                    spawn_ms = t.spawn_ms,
                    ready_ms = t.ready_ms,
                    session_ms = t.session_ms,
                    total_ms = t.total_ms,
                    "agent running"
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(agent = %agent.id, error = %e, "agent start failed");
                self.release_agent(&agent.id, generation).await;
                agent.finish(generation, None, Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// The slow steps, in this order: the Kilo process (a pooled one is ready at once), then the
    /// checkout, made as that process's uid so it belongs to it, then the session and prompt.
    async fn launch(
        self: &Arc<Self>,
        agent: &Arc<Agent>,
        generation: u64,
        prompt: &str,
    ) -> Result<StartTimings> {
        let t0 = Instant::now();
        let spec = agent.spec();
        let busy = self.registry.all().into_iter().any(|other| {
            other.id != agent.id
                && other.status().is_active()
                && other.spec().rig_id == spec.rig_id
                && other.spec().branch == spec.branch
        });
        if busy {
            return Err(Error::Conflict(format!(
                "branch {} is being worked by another agent",
                spec.branch
            )));
        }
        // A stop that came before this task ran: start nothing.
        still_starting(agent, generation)?;

        let (server, spawn_times) = self.place(&spec).await?;
        let attached = {
            let s = agent.lock();
            let current = s.generation == generation && s.status == ProcessStatus::Starting;
            if current {
                self.registry.placements.place(&agent.id, generation, server.clone());
            }
            current
        };
        if !attached {
            self.release_if_unused(&server).await;
            return Err(stopped_during_start());
        }

        let (workdir, git_times) = if spec.role == AgentRole::Mayor {
            // The mayor works on the town through its tools, in its process's own folder.
            (server.scratch_dir(), Default::default())
        } else {
            self.checkout(&spec, &server.owner).await?
        };
        self.registry.placements.set_workdir(&agent.id, generation, workdir.clone());
        still_starting(agent, generation)?;

        let t_session = Instant::now();
        let session = server
            .client
            .create_session(&workdir, &format!("{} ({})", spec.name, spec.role.as_str()))
            .await
            .map_err(|e| Error::Agent(e.to_string()))?;
        if !self.registry.placements.bind_session(&agent.id, generation, &session) {
            return Err(stopped_during_start());
        }
        server
            .client
            .prompt_async(&session, &workdir, AGENT_NAME, prompt, Some(&spec.system_prompt))
            .await
            .map_err(|e| Error::Agent(e.to_string()))?;
        agent
            .transition(Some(generation), ProcessStatus::Running)
            .map_err(|_| stopped_during_start())?;

        Ok(StartTimings {
            clone_ms: ms(git_times.clone_or_fetch),
            worktree_ms: ms(git_times.worktree),
            spawn_ms: spawn_times.map_or(0, |t| ms(t.spawn)),
            ready_ms: spawn_times.map_or(0, |t| ms(t.ready)),
            session_ms: ms(t_session.elapsed()),
            total_ms: ms(t0.elapsed()),
        })
    }

    /// The agent's checkout of its rig on its branch, made as `owner` (its process's uid).
    async fn checkout(
        &self,
        spec: &AgentSpec,
        owner: &Owner,
    ) -> Result<(std::path::PathBuf, PrepareTimings)> {
        let (author_name, author_email) = git_identity(&spec.name);
        let credential = self.credential(Some(&spec.town_id), &spec.rig_id, &spec.git_url).await?;
        self.git
            .prepare(&WorktreeRequest {
                owner,
                rig_id: &spec.rig_id,
                git_url: &spec.git_url,
                branch: &spec.branch,
                default_branch: &spec.default_branch,
                author_name: &author_name,
                author_email: &author_email,
                credential: credential.as_ref(),
                merges_seen: spec.merges_seen.unwrap_or(0),
            })
            .await
            .map_err(Error::from)
    }
}

/// Git author and committer of an agent: `<name> (gastown)` / `<name>@gastown.local`.
fn git_identity(name: &str) -> (String, String) {
    (format!("{name} (gastown)"), format!("{name}@gastown.local"))
}

fn stopped_during_start() -> Error {
    Error::Conflict("the agent was stopped while it was starting".into())
}

fn still_starting(agent: &Agent, generation: u64) -> Result<()> {
    let s = agent.lock();
    if s.generation == generation && s.status == ProcessStatus::Starting {
        Ok(())
    } else {
        Err(stopped_during_start())
    }
}
