//! Agents' events, kept by the Worker: the control server sends each agent's events
//! (tool calls, text, errors, status changes) every few seconds, and an agent's history stays
//! queryable after its container restarts.
//!
//! They live in the TownContainer's own SQLite, apart from the RigDO, whose tables every
//! scheduler pass reads: a chatty agent never slows its rig. Retention is bounded per agent
//! ([`KEEP_PER_AGENT`] newest). A resent event is dropped: `(agent, bootId, id)` is unique.
//! A `usage` event is also summed into the town's usage (`crate::usage`), once per model call.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_types::records::{EventPage, KeptEvent};
use shared_types::{validate, AgentEventBatch};

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::params;

/// The events' table, a step of the TownContainer's schema (`crate::container::object`).
pub const EVENTS: &[&str] = &[
    "CREATE TABLE agent_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, rig_id TEXT NOT NULL,
    boot_id TEXT NOT NULL, event_id INTEGER NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,
    UNIQUE (agent_id, boot_id, event_id))",
    "CREATE INDEX agent_events_agent ON agent_events (agent_id, seq)",
];

/// Events kept per agent (the oldest go first).
pub const KEEP_PER_AGENT: i64 = 2_000;
/// Events per batch (the control server sends at most this many).
pub const MAX_BATCH: usize = 500;
/// Largest event data, as JSON (the control server sends larger data as a preview).
pub const MAX_DATA_BYTES: usize = 16 * 1024;
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1_000;

/// Checks a batch before anything is stored: a bad batch is refused whole.
pub fn validate_batch(batch: &AgentEventBatch) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if batch.boot_id.is_empty()
        || batch.boot_id.len() > 64
        || !batch.boot_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return bad("bootId: must be 1 to 64 letters or digits".into());
    }
    if batch.events.len() > MAX_BATCH {
        return bad(format!("events: at most {MAX_BATCH} per batch"));
    }
    for (i, r) in batch.events.iter().enumerate() {
        validate::id(&r.agent_id).or_else(|m| bad(format!("events[{i}].agentId: {m}")))?;
        validate::id(&r.rig_id).or_else(|m| bad(format!("events[{i}].rigId: {m}")))?;
        if crate::time::millis_from_iso(&r.event.at).is_none() {
            return bad(format!("events[{i}].at: must be an ISO-8601 UTC time"));
        }
        if r.event.data.to_string().len() > MAX_DATA_BYTES {
            return bad(format!("events[{i}].data: at most {MAX_DATA_BYTES} bytes of JSON"));
        }
    }
    Ok(())
}

/// Stores a (validated) batch; returns how many events were new.
pub fn append(db: &impl Db, batch: &AgentEventBatch) -> ApiResult<usize> {
    let mut added = 0;
    let mut agents: Vec<&str> = Vec::new();
    for r in &batch.events {
        let kind = serde_json::to_value(r.event.kind)
            .ok()
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default();
        let written = db.exec(
            "INSERT OR IGNORE INTO agent_events (agent_id, rig_id, boot_id, event_id, at, kind, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            params![&r.agent_id, &r.rig_id, &batch.boot_id, r.event.id as i64, &r.event.at, kind, r.event.data.to_string()],
        )?;
        added += usize::from(written > 0);
        if r.event.kind == shared_types::AgentEventKind::Usage {
            // Counted by its message id, not by this event: a call reported again after a
            // restart (another boot, another event id) still counts once.
            if let Ok(u) = crate::json::decode::<shared_types::UsageReport>(r.event.data.clone()) {
                crate::usage::record(db, &r.rig_id, &r.agent_id, &r.event.at, &u)?;
            }
        }
        if !agents.contains(&r.agent_id.as_str()) {
            agents.push(&r.agent_id);
        }
    }
    for agent in agents {
        db.exec(
            "DELETE FROM agent_events WHERE agent_id = ? AND seq <= (SELECT seq FROM agent_events WHERE agent_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            params![agent, agent, KEEP_PER_AGENT],
        )?;
    }
    Ok(added)
}

/// Which of an agent's kept events to read: those after `after` (a `seq`), at most `limit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventQuery {
    pub agent_id: String,
    pub after: i64,
    pub limit: u32,
}

#[derive(Deserialize)]
struct Row {
    seq: i64,
    agent_id: String,
    rig_id: String,
    at: String,
    kind: String,
    data: String,
}

pub fn list(db: &impl Db, q: &EventQuery) -> ApiResult<EventPage> {
    let rows: Vec<Row> = db.query(
        "SELECT seq, agent_id, rig_id, at, kind, data FROM agent_events WHERE agent_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        params![&q.agent_id, q.after, i64::from(q.limit)],
    )?;
    let next_after = rows.last().map_or(q.after, |r| r.seq);
    let events = rows
        .into_iter()
        .map(|r| KeptEvent {
            seq: r.seq,
            agent_id: r.agent_id,
            rig_id: r.rig_id,
            at: r.at,
            kind: r.kind,
            data: crate::json::parse(&r.data).unwrap_or(Value::Null),
        })
        .collect();
    Ok(EventPage { events, next_after })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn batch(v: Value) -> AgentEventBatch {
        serde_json::from_value(v).expect("batch")
    }

    #[test]
    fn a_usage_event_counts_once_whatever_batch_or_boot_brings_it() {
        let db = crate::native_db::NativeDb::with(crate::container::object::MIGRATIONS);
        let usage = |boot: &str, id: u64| {
            batch(json!({ "bootId": boot, "events": [{ "agentId": "a1", "rigId": "r1", "id": id,
                "at": "2026-12-07T10:00:00.000Z", "kind": "usage", "data": {
                    "messageId": "msg_1", "model": "p/m", "beadId": "b1", "inputTokens": 10, "outputTokens": 5,
                    "reasoningTokens": 0, "cacheReadTokens": 0, "cacheWriteTokens": 0, "costUsd": null }}]}))
        };
        for (boot, id) in [("b00t", 1), ("b00t", 1), ("again", 7)] {
            append(&db, &usage(boot, id)).expect("stored");
        }
        let q = crate::usage::UsageQuery {
            from: None,
            to: None,
            group_by: None,
            limit: 1,
            offset_minutes: 0,
        };
        let total = crate::usage::report(&db, &q).expect("report").total;
        assert_eq!((total.input_tokens, total.calls), (10, 1));
    }

    #[test]
    fn batches_are_checked_whole() {
        let ok = json!({ "bootId": "b00t", "events": [
            { "agentId": "a1", "rigId": "r1", "id": 1, "at": "2026-01-01T00:00:00.000Z", "kind": "text", "data": { "text": "hi" } }
        ]});
        assert!(validate_batch(&batch(ok.clone())).is_ok());
        for (path, bad) in [
            ("/bootId", json!("has space")),
            ("/events/0/agentId", json!("../x")),
            ("/events/0/at", json!("yesterday")),
            ("/events/0/data", json!({ "text": "x".repeat(MAX_DATA_BYTES) })),
        ] {
            let mut b = ok.clone();
            *b.pointer_mut(path).expect("field") = bad;
            assert_eq!(validate_batch(&batch(b)).map_err(|e| e.status()), Err(400), "{path}");
        }
        let mut many = ok.clone();
        many["events"] = Value::Array(vec![ok["events"][0].clone(); MAX_BATCH + 1]);
        assert!(validate_batch(&batch(many)).is_err());
        assert!(serde_json::from_value::<AgentEventBatch>(json!({ "bootId": "b", "events": [{ "agentId": "a", "rigId": "r", "id": 1, "at": "x", "kind": "nope", "data": {} }] })).is_err(), "unknown kinds are refused by parsing");
    }
}
