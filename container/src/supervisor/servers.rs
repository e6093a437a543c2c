//! Placing agents on `kilo serve` processes and reacting when one exits.
//!
//! Where an agent runs, in order:
//! | agent | process |
//! |---|---|
//! | the mayor | a new process started for it, with the mayor's tool files |
//! | `AGENTS_PER_SERVER > 1` | a shared process with room and the same share key (town, rig, model, envVars), else a new one |
//! | no envVars, a pooled process of its model is ready | that pooled process (`pool.rs`), all its own |
//! | otherwise | a new process started for it |
//!
//! No process's environment or config names an agent: every process runs the neutral agent
//! definition, the agent's system prompt comes with each message, tool calls name their session
//! (the control server knows whose it is), and the git author is in the checkout's own config.
//! That is what lets a process be started before its agent is known.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use shared_types::AgentRole;

use super::Supervisor;
use crate::agents::placements::Process;
use crate::agents::AgentSpec;
use crate::error::{Error, Result};
use crate::kilo::config::{kilo_config, KiloConfigInput, MODEL_KEY_VAR, NEUTRAL_AGENT_PROMPT};
use crate::kilo::events;
use crate::kilo::server::{KiloServer, RunDir, SpawnSpec, SpawnTimings};
use crate::process::Exit;

impl Supervisor {
    fn shared(&self) -> bool {
        self.config.agents_per_server > 1
    }

    /// What every Kilo process's environment carries besides the offline settings: the model
    /// provider's key and the memory hint. The same for every agent, so pooled processes have it.
    pub(super) fn base_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(key) = &self.config.model_api_key {
            env.push((MODEL_KEY_VAR.to_string(), key.clone()));
        }
        if let Some(limit) = self.config.kilo_memory_limit {
            env.push(("BUN_JSC_forceRAMSize".to_string(), limit.to_string()));
        }
        env
    }

    /// The environment of a process started for `spec`: [`Self::base_env`] and the request's
    /// envVars (already checked against the reserved names).
    fn agent_env(&self, spec: &AgentSpec) -> Vec<(String, String)> {
        let mut env = self.base_env();
        env.extend(spec.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Agents with equal keys may share a Kilo process. Held in memory only (it contains
    /// envVars values); never logged.
    fn share_key(spec: &AgentSpec) -> String {
        let vars: Vec<String> = spec.env_vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}\0{}\0{}\0{}", spec.town_id, spec.rig_id, spec.model, vars.join("\0"))
    }

    /// A Kilo process for `spec` (see the table above). Returns the server and, when it was
    /// started for this call, its timings.
    pub(super) async fn place(
        self: &Arc<Self>,
        spec: &AgentSpec,
    ) -> Result<(Arc<KiloServer>, Option<SpawnTimings>)> {
        if spec.role == AgentRole::Mayor {
            // Its own process, with the mayor's tool files: never pooled, never shared.
            let tools = crate::tools::js::mayor_dir(&self.tools_dir);
            return self
                .spawn_server(&spec.model, self.agent_env(spec), None, &tools)
                .await
                .map(|(server, timings)| (server, Some(timings)));
        }
        if self.shared() {
            return self.place_shared(spec).await;
        }
        let poolable = spec.env_vars.is_empty();
        if poolable {
            self.note_pool_model(&spec.model);
            if let Some(server) = self.take_pooled(&spec.model) {
                tracing::info!(
                    server = server.id,
                    pid = server.pid,
                    "agent takes a pooled kilo server"
                );
                self.refill_pool();
                return Ok((server, None));
            }
        }
        let placed =
            self.spawn_server(&spec.model, self.agent_env(spec), None, &self.tools_dir).await;
        self.refill_pool();
        placed.map(|(server, timings)| (server, Some(timings)))
    }

    /// Shared mode: an existing process with room and the same key, or a new one. Serialized
    /// per key, so two starts that could share one do not both spawn.
    async fn place_shared(
        self: &Arc<Self>,
        spec: &AgentSpec,
    ) -> Result<(Arc<KiloServer>, Option<SpawnTimings>)> {
        let key = Self::share_key(spec);
        let lock = self.placement.get(&key);
        let _placing = lock.lock().await;
        let existing = self.registry.placements.loads().into_iter().find_map(|(s, runs)| {
            let fits = s.share_key.as_ref() == Some(&key)
                && s.usable()
                && runs < self.config.agents_per_server;
            fits.then_some(s)
        });
        if let Some(server) = existing {
            return Ok((server, None));
        }
        let (server, timings) = self
            .spawn_server(&spec.model, self.agent_env(spec), Some(key), &self.tools_dir)
            .await?;
        Ok((server, Some(timings)))
    }

    /// Starts a `kilo serve` for `model` in a fresh private folder (`run/kilo-<id>`), with the
    /// tool files of `tools_dir` (a role's set), waits until it answers, follows its events and
    /// watches its exit.
    pub(super) async fn spawn_server(
        self: &Arc<Self>,
        model: &str,
        env: Vec<(String, String)>,
        share_key: Option<String>,
        tools_dir: &std::path::Path,
    ) -> Result<(Arc<KiloServer>, SpawnTimings)> {
        let id = self.next_server_id.fetch_add(1, Ordering::SeqCst);
        let run_dir = self.git.paths().run_dir(&format!("kilo-{id}")).map_err(Error::Internal)?;
        let uid = self.uids.lease().map_err(Error::Agent)?;
        let warmup = format!("{}/warmup/v1", self.control_url.trim_end_matches('/'));
        let config = kilo_config(&KiloConfigInput {
            model,
            model_base_url: self.config.model_base_url.as_deref(),
            has_model_key: self.config.model_api_key.is_some(),
            agent_prompt: NEUTRAL_AGENT_PROMPT,
            warmup_base_url: Some(&warmup),
        });
        let spawn = SpawnSpec {
            id,
            model: model.to_string(),
            kilo_bin: &self.config.kilo_bin,
            run_dir: RunDir(run_dir.clone()),
            tools_dir,
            config,
            control_url: &self.control_url,
            env,
            ready_timeout: self.config.kilo_ready_timeout,
            uid,
            share_key,
        };
        let (server, timings) =
            match KiloServer::spawn(&self.reaper, self.http.clone(), spawn).await {
                Ok(spawned) => spawned,
                Err(e) => {
                    // The process is gone (killed by spawn) and its uid given back: its folder goes too.
                    let _ = std::fs::remove_dir_all(&run_dir);
                    return Err(Error::Agent(e));
                }
            };
        tracing::info!(server = id, pid = server.pid, uid = server.owner.uid, port = %server.client.base(), shared = self.shared(), "kilo server ready");
        self.registry.placements.add_server(server.clone());
        events::follow(server.client.clone(), self.registry.clone(), server.exit.clone());
        let this = self.clone();
        let watched = server.clone();
        tokio::spawn(async move {
            let exit = watched.exit.clone().wait().await;
            this.on_server_exit(&watched, exit);
            // A pooled process that died while waiting leaves a gap.
            this.refill_pool();
        });
        Ok((server, timings))
    }

    /// A Kilo process ended: every agent still on it has ended too. An exit nobody asked for is
    /// a failure, with the tail of the process's output as the reason.
    fn on_server_exit(&self, server: &KiloServer, exit: Option<Exit>) {
        let ended = self.registry.placements.remove_server(server.id);
        let code = exit.map(Exit::code);
        let unexpected = !server.is_stopping();
        for (agent_id, generation) in ended {
            let Ok(agent) = self.registry.get(&agent_id) else { continue };
            let error = unexpected.then(|| {
                let tail = server.output_tail(10);
                format!(
                    "kilo exited unexpectedly (code {}){}",
                    code.map_or("unknown".into(), |c| c.to_string()),
                    if tail.is_empty() { String::new() } else { format!(": {tail}") }
                )
            });
            agent.finish(generation, code, error);
        }
        server.clean_up();
        tracing::info!(
            server = server.id,
            pid = server.pid,
            ?exit,
            unexpected,
            "kilo server exited"
        );
    }
}
