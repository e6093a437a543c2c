//! Agents' events, kept by the Worker: every few seconds the events of each agent
//! since the last accepted batch go to `POST /api/towns/:town/container/events`, so an agent's
//! history survives a container restart (its buffer here does not).
//!
//! Runs in its own task, like the heartbeat. A batch that fails is sent again next time (the
//! Worker drops what it already has: `(agent, bootId, id)` is unique there). Large event data
//! is cut to a preview, and each batch is bounded; an agent whose buffer overflowed before its
//! events were sent loses the overflow, as a client polling too slowly would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shared_types::{AgentEventBatch, AgentEventRecord};

use crate::supervisor::Supervisor;

/// How often events are sent.
const EVERY: Duration = Duration::from_secs(2);
/// Events per agent per batch, and per batch (the Worker's limit).
const PER_AGENT: usize = 200;
pub const PER_BATCH: usize = 500;
/// Event data larger than this (as JSON) is sent as a preview.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
const PREVIEW_CHARS: usize = 4 * 1024;

/// Starts the task (does nothing without `GASTOWN_API_URL`).
pub fn spawn(supervisor: Arc<Supervisor>) {
    let Some(api_url) = supervisor.config.api_url.clone() else { return };
    tokio::spawn(async move {
        // The last event id the Worker accepted, per agent.
        let mut sent: HashMap<String, u64> = HashMap::new();
        loop {
            tokio::time::sleep(EVERY).await;
            for (town, records) in collect(&supervisor, &sent) {
                let batch =
                    AgentEventBatch { boot_id: crate::boot::id().to_string(), events: records };
                match send(&supervisor, &api_url, &town, &batch).await {
                    Ok(()) => {
                        for r in &batch.events {
                            let last = sent.entry(r.agent_id.clone()).or_default();
                            *last = (*last).max(r.event.id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(town = %town, events = batch.events.len(), error = %e, "agent events not kept yet")
                    }
                }
            }
            // Bounded memory: forget agents that are gone.
            if sent.len() > 10_000 {
                let known: std::collections::HashSet<String> =
                    supervisor.registry.all().iter().map(|a| a.id.clone()).collect();
                sent.retain(|id, _| known.contains(id));
            }
        }
    });
}

/// The unsent events, per town, within the batch bounds.
fn collect(
    supervisor: &Supervisor,
    sent: &HashMap<String, u64>,
) -> BTreeMap<String, Vec<AgentEventRecord>> {
    let mut towns: BTreeMap<String, Vec<AgentEventRecord>> = BTreeMap::new();
    for agent in supervisor.registry.all() {
        let after = sent.get(&agent.id).copied().unwrap_or(0);
        let (town, rig, page) = {
            let s = agent.lock();
            (s.spec.town_id.clone(), s.spec.rig_id.clone(), s.events.after(after, PER_AGENT))
        };
        let records = towns.entry(town).or_default();
        for mut event in page.events {
            if records.len() >= PER_BATCH {
                break;
            }
            event.data = bounded(event.data);
            records.push(AgentEventRecord {
                agent_id: agent.id.clone(),
                rig_id: rig.clone(),
                event,
            });
        }
    }
    towns.retain(|_, r| !r.is_empty());
    towns
}

/// Event data within [`MAX_DATA_BYTES`]: larger data becomes a preview that says so.
pub fn bounded(data: Value) -> Value {
    let text = data.to_string();
    if text.len() <= MAX_DATA_BYTES {
        return data;
    }
    let preview: String = text.chars().take(PREVIEW_CHARS).collect();
    json!({ "truncated": true, "bytes": text.len(), "preview": preview })
}

async fn send(
    supervisor: &Supervisor,
    api_url: &str,
    town: &str,
    batch: &AgentEventBatch,
) -> Result<(), String> {
    crate::heartbeat::post(
        supervisor,
        &format!("{api_url}/api/towns/{town}/container/events"),
        batch,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_data_is_cut_to_a_preview() {
        let small = json!({ "text": "hi" });
        assert_eq!(bounded(small.clone()), small);
        let big = bounded(json!({ "text": "x".repeat(MAX_DATA_BYTES) }));
        assert_eq!(big["truncated"], true);
        assert!(big["bytes"].as_u64().is_some_and(|b| b as usize > MAX_DATA_BYTES));
        assert_eq!(big["preview"].as_str().map(str::len), Some(PREVIEW_CHARS));
    }
}
