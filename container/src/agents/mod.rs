//! The agents this control server knows about, by id, and where their runs are.

pub mod agent;
pub mod events;
pub mod placements;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use agent::{Agent, AgentSpec};
pub use placements::{LiveSession, Placement, Placements};

use crate::error::{Error, Result};

/// What [`Registry::begin_start`] found.
#[derive(Debug)]
pub enum Claim {
    /// A new run, `starting`, with its generation.
    Started(Arc<Agent>, u64),
    /// The agent's current run was started by the same dispatch: answer with it.
    SameRun(Arc<Agent>),
    /// The agent's run `generation` has finished its work and is being released.
    Finishing(Arc<Agent>, u64),
}

#[derive(Debug, Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, Arc<Agent>>>,
    /// Where each run is: its process, session and folder (`placements.rs`).
    pub placements: Placements,
    event_capacity: usize,
    /// Where the mayor's replies go: `(agent id, text)`.
    replies: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>>,
    /// Usage not yet kept by the Worker (none in unit tests).
    usage_spool: Option<Arc<crate::usage_spool::UsageSpool>>,
}

impl Registry {
    pub fn new(event_capacity: usize) -> Self {
        Self { event_capacity, ..Self::default() }
    }

    /// The registry with `spool` for the usage its agents report.
    pub fn with_usage_spool(self, spool: Arc<crate::usage_spool::UsageSpool>) -> Self {
        Self { usage_spool: Some(spool), ..self }
    }

    pub fn usage_spool(&self) -> Option<&Arc<crate::usage_spool::UsageSpool>> {
        self.usage_spool.as_ref()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Agent>>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the agent id for a start (see [`Claim`]):
    /// - unknown id: a new record;
    /// - an agent that exited or failed: the same record, restarted (fresh start);
    /// - an active agent whose run has the same `dispatchId`: that run (a repeated dispatch);
    /// - an active agent whose run has finished its work (`gt_done`): the caller ends that run
    ///   and claims again;
    /// - any other active agent: 409, nothing changes.
    ///
    /// A new run is refused with [`Error::AtCapacity`] when `capacity` runs are active already,
    /// or as many as the town's cap (`maxConcurrentAgents`, its spending guard) allows. Counted
    /// under the same lock, so concurrent starts cannot overshoot.
    pub fn begin_start(
        &self,
        spec: AgentSpec,
        api_token: Option<String>,
        capacity: usize,
    ) -> Result<Claim> {
        let mut agents = self.map();
        let active =
            agents.values().filter(|a| a.id != spec.agent_id && a.status().is_active()).count();
        let town_cap = spec.max_concurrent_agents.map(|c| c as usize).filter(|c| *c < capacity);
        let capacity = town_cap.unwrap_or(capacity);
        let full = || {
            Error::AtCapacity(match town_cap {
                Some(cap) => format!("spending cap: {active} agents are running and the town allows {cap} (max_concurrent_agents); the work waits until one finishes"),
                None => format!("at capacity: {active} of {capacity} agents are running; try again when one finishes"),
            })
        };
        if let Some(existing) = agents.get(&spec.agent_id) {
            let (status, generation, same_dispatch, work_done) = {
                let s = existing.lock();
                let same = spec.dispatch_id.is_some() && s.spec.dispatch_id == spec.dispatch_id;
                (s.status, s.generation, same, s.work_done)
            };
            if !status.is_active() {
                if active >= capacity {
                    return Err(full());
                }
                let generation = existing
                    .restart(spec, api_token)
                    .map_err(|e| Error::Conflict(e.to_string()))?;
                return Ok(Claim::Started(existing.clone(), generation));
            }
            if same_dispatch {
                return Ok(Claim::SameRun(existing.clone()));
            }
            if work_done {
                return Ok(Claim::Finishing(existing.clone(), generation));
            }
            return Err(Error::Conflict(format!(
                "agent {} is already {}",
                existing.id,
                status.as_str()
            )));
        }
        if active >= capacity {
            return Err(full());
        }
        let agent = Arc::new(Agent::new(spec, api_token, self.event_capacity));
        agents.insert(agent.id.clone(), agent.clone());
        Ok(Claim::Started(agent, 1))
    }

    pub fn get(&self, agent_id: &str) -> Result<Arc<Agent>> {
        self.map().get(agent_id).cloned().ok_or_else(|| Error::unknown_agent(agent_id))
    }

    /// Every agent, sorted by id so listings are stable.
    pub fn all(&self) -> Vec<Arc<Agent>> {
        let mut all: Vec<_> = self.map().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn active_count(&self) -> usize {
        self.map().values().filter(|a| a.status().is_active()).count()
    }

    /// Agents at work ([`Agent::at_work`]): what keeps the container awake.
    pub fn at_work_count(&self) -> usize {
        self.map().values().filter(|a| a.at_work()).count()
    }

    /// Where the mayor's replies go (the forwarder to the Worker, `supervisor/mayor.rs`).
    pub fn set_reply_sink(&self, sink: tokio::sync::mpsc::UnboundedSender<(String, String)>) {
        *self.replies.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// A turn of agent `agent_id` (the mayor) ended with `text`: its reply to people.
    pub fn reply(&self, agent_id: &str, text: String) {
        if let Some(sink) = self.replies.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = sink.send((agent_id.to_string(), text));
        }
    }

    pub fn agent_for_session(&self, session_id: &str) -> Option<Arc<Agent>> {
        let agent_id = self.placements.agent_for_session(session_id)?;
        self.map().get(&agent_id).cloned()
    }

    /// The agent's current run while it is on its process.
    pub fn placed(&self, agent: &Agent) -> Option<Placement> {
        let generation = agent.lock().generation;
        self.placements.placed(&agent.id, generation)
    }

    /// The agent's current run's live session, if it has one.
    pub fn live_session(&self, agent: &Agent) -> Option<LiveSession> {
        self.placed(agent)?.live()
    }

    /// The agent's record as the API shows it, with the pid and folder of its run.
    pub fn process(&self, agent: &Agent) -> shared_types::AgentProcess {
        agent.to_process(self.placements.run(&agent.id).as_ref())
    }

    /// The agent's status as the API shows it, with the pid of its run.
    pub fn status(&self, agent: &Agent) -> shared_types::AgentStatusResponse {
        agent.to_status(self.placements.run(&agent.id).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(id: &str, town_cap: Option<u32>) -> AgentSpec {
        let mut s: AgentSpec = serde_json::from_value(json!({
            "agentId": id, "rigId": "r1", "townId": "t1", "role": "polecat", "name": id,
            "identity": id, "prompt": "p", "model": "m/m", "systemPrompt": "",
            "gitUrl": "https://x.test/r", "branch": "b", "defaultBranch": "main"
        }))
        .expect("valid spec");
        s.max_concurrent_agents = town_cap;
        s
    }

    #[test]
    fn the_towns_cap_and_the_capacity_both_bound_new_runs() {
        let r = Registry::new(16);
        assert!(matches!(r.begin_start(spec("a", Some(2)), None, 8), Ok(Claim::Started(..))));
        assert!(matches!(r.begin_start(spec("b", Some(2)), None, 8), Ok(Claim::Started(..))));
        match r.begin_start(spec("c", Some(2)), None, 8) {
            Err(Error::AtCapacity(m)) => assert!(
                m.starts_with("spending cap: 2 agents") && m.contains("max_concurrent_agents"),
                "{m}"
            ),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // A cap above the capacity is the capacity's message; no cap is the capacity alone.
        match r.begin_start(spec("c", Some(50)), None, 2) {
            Err(Error::AtCapacity(m)) => assert!(m.starts_with("at capacity: 2 of 2"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(matches!(r.begin_start(spec("c", None), None, 3), Ok(Claim::Started(..))));
    }
}
