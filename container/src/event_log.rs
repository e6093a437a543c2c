//! Agents' events, kept by the Worker: every few seconds the events of each agent
//! since the last accepted batch go to `POST /api/towns/:town/container/events`, so an agent's
//! history survives a container restart (its buffer here does not).
//!
//! Runs in its own task, like the heartbeat. A batch that fails is sent again next time (the
//! Worker drops what it already has: `(agent, bootId, id)` is unique there). Large event data
//! is cut to a preview, and each batch is bounded; an agent whose buffer overflowed before its
//! events were sent loses the overflow, as a client polling too slowly would.
//!
//! Usage events are also on disk until a batch holding them is accepted (`usage_spool.rs`):
//! what a killed server had not sent is sent when it starts again, as a batch of its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};
use shared_types::{AgentEvent, AgentEventBatch, AgentEventKind, AgentEventRecord};

use crate::supervisor::Supervisor;
use crate::usage_spool::Spooled;

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
        // What an earlier run of the server left unsent, sent first (until it goes through).
        let mut left_over =
            supervisor.registry.usage_spool().map(|s| s.pending()).unwrap_or_default();
        loop {
            if !left_over.is_empty() && resend(&supervisor, &api_url, &left_over).await {
                left_over.clear();
            }
            tokio::time::sleep(supervisor.config.event_batch_interval).await;
            for (town, records) in collect(&supervisor, &sent) {
                let batch =
                    AgentEventBatch { boot_id: crate::boot::id().to_string(), events: records };
                match send(&supervisor, &api_url, &town, &batch).await {
                    Ok(()) => {
                        for r in &batch.events {
                            let last = sent.entry(r.agent_id.clone()).or_default();
                            *last = (*last).max(r.event.id);
                        }
                        settle(&supervisor, &batch.events);
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

/// Takes the usage in `accepted` out of the spool: the Worker has it.
fn settle(supervisor: &Supervisor, accepted: &[AgentEventRecord]) {
    let kept: HashSet<String> = accepted
        .iter()
        .filter(|r| r.event.kind == AgentEventKind::Usage)
        .filter_map(|r| r.event.data["messageId"].as_str().map(str::to_string))
        .collect();
    if let (false, Some(spool)) = (kept.is_empty(), supervisor.registry.usage_spool()) {
        spool.settle(&kept);
    }
}

/// Sends the usage an earlier run of the server left in the spool, per town, as events of a
/// boot of their own (so their ids cannot collide with this run's); true when all of it went.
async fn resend(supervisor: &Supervisor, api_url: &str, left: &[Spooled]) -> bool {
    let mut towns: BTreeMap<&str, Vec<AgentEventRecord>> = BTreeMap::new();
    for (i, s) in left.iter().enumerate() {
        let Ok(data) = serde_json::to_value(&s.report) else { continue };
        towns.entry(&s.town_id).or_default().push(AgentEventRecord {
            agent_id: s.agent_id.clone(),
            rig_id: s.rig_id.clone(),
            event: AgentEvent {
                id: i as u64 + 1,
                at: s.at.clone(),
                kind: AgentEventKind::Usage,
                data,
            },
        });
    }
    let mut all_sent = true;
    for (town, records) in towns {
        for chunk in records.chunks(PER_BATCH) {
            let batch = AgentEventBatch {
                boot_id: format!("{}r", crate::boot::id()),
                events: chunk.to_vec(),
            };
            match send(supervisor, api_url, town, &batch).await {
                Ok(()) => settle(supervisor, chunk),
                Err(e) => {
                    tracing::warn!(town, calls = chunk.len(), error = %e, "left-over usage not kept yet");
                    all_sent = false;
                }
            }
        }
    }
    all_sent
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
