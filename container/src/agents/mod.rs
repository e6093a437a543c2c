//! The agents this control server knows about, by id, and which Kilo session belongs to whom.

pub mod agent;
pub mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use agent::{Agent, AgentSpec, Attachment};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, Arc<Agent>>>,
    /// Kilo session id -> agent id: how a tool call names its caller.
    sessions: Mutex<HashMap<String, String>>,
    event_capacity: usize,
}

impl Registry {
    pub fn new(event_capacity: usize) -> Self {
        Self { event_capacity, ..Self::default() }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Agent>>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session_map(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the agent id for a start and returns the record with its generation.
    /// - unknown id: a new record;
    /// - an agent that exited or failed: the same record, restarted (fresh start);
    /// - an agent that is starting, running or stopping: 409, nothing changes.
    pub fn begin_start(&self, spec: AgentSpec, api_token: Option<String>) -> Result<(Arc<Agent>, u64)> {
        let mut agents = self.map();
        if let Some(existing) = agents.get(&spec.agent_id) {
            let status = existing.status();
            return match existing.restart(spec, api_token) {
                Ok(generation) => Ok((existing.clone(), generation)),
                Err(_) => Err(Error::Conflict(format!("agent {} is already {}", existing.id, status.as_str()))),
            };
        }
        let agent = Arc::new(Agent::new(spec, api_token, self.event_capacity));
        agents.insert(agent.id.clone(), agent.clone());
        Ok((agent, 1))
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

    pub fn bind_session(&self, session_id: &str, agent_id: &str) {
        self.session_map().insert(session_id.to_string(), agent_id.to_string());
    }

    pub fn unbind_session(&self, session_id: &str) {
        self.session_map().remove(session_id);
    }

    pub fn agent_for_session(&self, session_id: &str) -> Option<Arc<Agent>> {
        let agent_id = self.session_map().get(session_id).cloned()?;
        self.map().get(&agent_id).cloned()
    }
}
