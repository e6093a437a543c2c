//! Placing agents on `kilo serve` processes and reacting when one exits.
//!
//! With `AGENTS_PER_SERVER = 1` (the default) every agent gets its own process, and the
//! process's environment carries the agent's identity. With a larger value, agents share a
//! process only when everything in its environment would be the same for them (town, rig,
//! model, envVars); their identities then live outside the environment: git author in the
//! worktree's own config, the Gastown identity in the control server (tool calls name their
//! session), and the system prompt is sent with every message.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Supervisor;
use crate::agents::AgentSpec;
use crate::error::{Error, Result};
use crate::kilo::config::{kilo_config, KiloConfigInput, MODEL_KEY_VAR};
use crate::kilo::events;
use crate::kilo::server::{KiloServer, RunDir, SpawnSpec, SpawnTimings};
use crate::process::Exit;

/// Git author and committer of an agent: `<name> (gastown)` / `<name>@gastown.local`.
pub fn git_identity(name: &str) -> (String, String) {
    (format!("{name} (gastown)"), format!("{name}@gastown.local"))
}

impl Supervisor {
    fn shared(&self) -> bool {
        self.config.agents_per_server > 1
    }

    /// The environment of the Kilo process for `spec`: identity first, then the request's
    /// envVars (already checked against the reserved names), then provider settings.
    fn agent_env(&self, spec: &AgentSpec) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut put = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
        if !self.shared() {
            let (name, email) = git_identity(&spec.name);
            put("GASTOWN_AGENT_ID", &spec.agent_id);
            for (k, v) in [("GIT_AUTHOR_NAME", &name), ("GIT_AUTHOR_EMAIL", &email), ("GIT_COMMITTER_NAME", &name), ("GIT_COMMITTER_EMAIL", &email)] {
                put(k, v);
            }
        }
        put("GASTOWN_RIG_ID", &spec.rig_id);
        put("GASTOWN_TOWN_ID", &spec.town_id);
        if let Some(url) = &self.config.api_url {
            put("GASTOWN_API_URL", url);
        }
        for (k, v) in &spec.env_vars {
            put(k, v);
        }
        if let Some(key) = &self.config.model_api_key {
            put(MODEL_KEY_VAR, key);
        }
        if let Some(limit) = self.config.kilo_memory_limit {
            put("BUN_JSC_forceRAMSize", &limit.to_string());
        }
        env
    }

    /// Agents with equal keys may share a Kilo process. Held in memory only (it contains
    /// envVars values); never logged.
    fn share_key(spec: &AgentSpec) -> String {
        let vars: Vec<String> = spec.env_vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}\0{}\0{}\0{}", spec.town_id, spec.rig_id, spec.model, vars.join("\0"))
    }

    /// A Kilo process for `spec`: an existing shared one with room, or a new one.
    /// Returns the server and, when it was spawned for this call, its timings.
    pub(super) async fn place(self: &Arc<Self>, spec: &AgentSpec) -> Result<(Arc<KiloServer>, Option<SpawnTimings>)> {
        let key = self.shared().then(|| Self::share_key(spec));
        let key_lock = key.as_ref().map(|k| self.placement.get(k));
        let _placing = match &key_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        if let Some(key) = &key {
            let existing = self.server_list().into_iter().find(|s| {
                s.share_key.as_ref() == Some(key) && !s.is_stopping() && s.exit.now().is_none() && s.agent_count() < self.config.agents_per_server
            });
            if let Some(server) = existing {
                return Ok((server, None));
            }
        }
        let id = self.next_server_id.fetch_add(1, Ordering::SeqCst);
        let run_name = if self.shared() { format!("server-{id}") } else { format!("agent-{}", spec.agent_id) };
        let run_dir = self.git.paths().run_dir(&run_name).map_err(Error::Internal)?;
        // A shared process runs several agents: its agent definition is neutral and each
        // message carries the agent's own system prompt.
        let agent_prompt = if self.shared() { "" } else { spec.system_prompt.as_str() };
        let config = kilo_config(&KiloConfigInput {
            model: &spec.model,
            model_base_url: self.config.model_base_url.as_deref(),
            has_model_key: self.config.model_api_key.is_some(),
            agent_prompt,
        });
        let spawn = SpawnSpec {
            id,
            kilo_bin: &self.config.kilo_bin,
            run_dir: RunDir(run_dir),
            tools_dir: &self.tools_dir,
            config,
            control_url: &self.control_url,
            env: self.agent_env(spec),
            ready_timeout: self.config.kilo_ready_timeout,
        };
        let (server, timings) = KiloServer::spawn(&self.reaper, self.http.clone(), spawn, key).await.map_err(Error::Agent)?;
        tracing::info!(server = id, pid = server.pid, port = %server.client.base(), shared = self.shared(), "kilo server ready");
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).push(server.clone());
        events::follow(server.client.clone(), self.registry.clone(), server.exit.clone());
        let this = self.clone();
        let watched = server.clone();
        tokio::spawn(async move {
            let exit = watched.exit.clone().wait().await;
            this.on_server_exit(&watched, exit);
        });
        Ok((server, Some(timings)))
    }

    /// A Kilo process ended: every agent still on it has ended too. An exit nobody asked for is
    /// a failure, with the tail of the process's output as the reason.
    fn on_server_exit(&self, server: &KiloServer, exit: Option<Exit>) {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s.id != server.id);
        let code = exit.map(Exit::code);
        let unexpected = !server.is_stopping();
        for (agent_id, generation) in server.agents() {
            let Ok(agent) = self.registry.get(&agent_id) else { continue };
            if let Some(a) = agent.lock().attachment.clone() {
                self.registry.unbind_session(&a.session_id);
            }
            let error = unexpected.then(|| {
                let tail = server.output_tail(10);
                format!("kilo exited unexpectedly (code {}){}", code.map_or("unknown".into(), |c| c.to_string()), if tail.is_empty() { String::new() } else { format!(": {tail}") })
            });
            agent.finish(generation, code, error);
        }
        server.clean_up();
        tracing::info!(server = server.id, pid = server.pid, ?exit, unexpected, "kilo server exited");
    }
}
