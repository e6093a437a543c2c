//! The container's heartbeat to the Worker: every interval, one request per town carrying every
//! agent that is active or ended since the last beat (so the Worker learns of exits too).
//!
//! Runs in its own task and never blocks the server or the agents. A failed beat is logged and
//! retried with exponential backoff (1 s, 2 s, 4 s, ... capped at the interval).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shared_types::{AgentHeartbeat, ContainerHeartbeat};

use crate::clock;
use crate::http::TOKEN_HEADER;
use crate::supervisor::Supervisor;
use crate::tools::forward::request_failure;

/// Starts the heartbeat task (does nothing without `GASTOWN_API_URL`).
pub fn spawn(supervisor: Arc<Supervisor>) {
    let Some(api_url) = supervisor.config.api_url.clone() else {
        tracing::info!("GASTOWN_API_URL is not set: no heartbeats");
        return;
    };
    tokio::spawn(async move {
        let interval = supervisor.config.heartbeat_interval;
        // Agents whose end was already reported.
        let mut reported_ended: HashSet<(String, String)> = HashSet::new();
        let mut failures = 0u32;
        loop {
            let delay = if failures == 0 { interval } else { backoff(failures, interval) };
            tokio::time::sleep(delay).await;
            let beats = collect(&supervisor, &reported_ended);
            let mut ok = true;
            for beat in &beats {
                if let Err(e) = send(&supervisor, &api_url, beat).await {
                    tracing::warn!(town = %beat.town_id, agents = beat.agents.len(), error = %e, attempt = failures + 1, "heartbeat failed");
                    ok = false;
                }
            }
            if ok {
                failures = 0;
                for beat in &beats {
                    for a in beat.agents.iter().filter(|a| !a.status.is_active()) {
                        reported_ended.insert((a.agent_id.clone(), a.timestamp.clone()));
                    }
                }
                // Bounded memory: forget reports of agents that were restarted or removed.
                if reported_ended.len() > 10_000 {
                    reported_ended.clear();
                }
            } else {
                failures = failures.saturating_add(1);
            }
        }
    });
}

fn backoff(failures: u32, cap: Duration) -> Duration {
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(shared_types::backoff::delay_ms(1_000, failures, cap_ms))
}

/// One heartbeat per town: active agents, plus ended ones not yet reported.
fn collect(
    supervisor: &Supervisor,
    reported_ended: &HashSet<(String, String)>,
) -> Vec<ContainerHeartbeat> {
    let now = clock::now_iso();
    let mut towns: BTreeMap<String, Vec<AgentHeartbeat>> = BTreeMap::new();
    // The mayor belongs to no rig (the Worker knows it from the town): its record has no place
    // in a rig's heartbeat, and an idle mayor must not keep the container awake.
    for agent in supervisor
        .registry
        .all()
        .into_iter()
        .filter(|a| a.spec().role != shared_types::AgentRole::Mayor)
    {
        let p = supervisor.registry.process(&agent);
        // An ended agent is identified by its end: its last activity time does not change.
        if !p.status.is_active()
            && reported_ended.contains(&(p.agent_id.clone(), p.last_activity_at.clone()))
        {
            continue;
        }
        towns.entry(p.town_id.clone()).or_default().push(AgentHeartbeat {
            agent_id: p.agent_id,
            rig_id: p.rig_id,
            town_id: p.town_id,
            status: p.status,
            timestamp: if p.status.is_active() { now.clone() } else { p.last_activity_at.clone() },
            last_activity_at: p.last_activity_at,
        });
    }
    let uptime = supervisor.uptime_ms();
    let capacity = u32::try_from(supervisor.capacity()).ok();
    let memory_bytes = Some(supervisor.kilo_memory());
    let pool_ready = u32::try_from(supervisor.registry.placements.pooled().len()).ok();
    towns
        .into_iter()
        .map(|(town_id, agents)| ContainerHeartbeat {
            town_id,
            timestamp: clock::iso(SystemTime::now()),
            uptime,
            boot_id: Some(crate::boot::id().to_string()),
            shard: supervisor.config.shard,
            capacity,
            memory_bytes,
            pool_ready,
            agents,
        })
        .collect()
}

async fn send(
    supervisor: &Supervisor,
    api_url: &str,
    beat: &ContainerHeartbeat,
) -> Result<(), String> {
    post(supervisor, &format!("{api_url}/api/towns/{}/container/heartbeat", beat.town_id), beat)
        .await
}

/// POSTs `body` to the Worker with the container token (10 s deadline); any 2xx is success.
/// Shared by the heartbeat and the event log.
pub(crate) async fn post(
    supervisor: &Supervisor,
    url: &str,
    body: &impl serde::Serialize,
) -> Result<(), String> {
    let mut req = supervisor.http.post(url).json(body).timeout(Duration::from_secs(10));
    if let Some(token) = &supervisor.config.container_token {
        req = req.header(TOKEN_HEADER, token);
    }
    let res = req.send().await.map_err(|e| request_failure(&e).to_string())?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("the Worker answered HTTP {}", res.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap), Duration::from_secs(2));
        assert_eq!(backoff(3, cap), Duration::from_secs(8));
        assert_eq!(backoff(20, cap), cap);
    }
}
