//! Idempotent agent calls: a call that carries an `Idempotency-Key` runs once; a retry with the
//! same key (its first answer was lost on the way back) gets the first reply again instead of
//! doing the work twice. The control server retries tool calls through a Worker outage this way
//! (container/src/tools/forward.rs), so `gt_done` is never lost or doubled.
//!
//! Replies are kept for [`KEEP_MS`] and only when final: successes and refusals (4xx). A 5xx
//! is not kept, so the retry really runs. The lookup, the op and the record happen in one
//! synchronous sequence, which the Durable Object runs atomically.

use serde::Deserialize;
use serde_json::Value;

use super::Rig;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::rpc::RigOp;
use crate::time::{iso_from_millis, millis_from_iso};

/// How long a reply is kept: far longer than any retry budget.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

#[derive(Deserialize)]
struct Kept {
    status: i64,
    body: String,
}

impl<D: Db> Rig<'_, D> {
    /// Runs `op` once per `key`; `.1` is true when the reply is a replay of the first one.
    pub fn handle_once(&self, key: Option<&str>, op: RigOp) -> (ApiResult<Value>, bool) {
        let Some(key) = key else { return (self.handle(op), false) };
        match self.db.first::<Kept>("SELECT status, body FROM idempotent_replies WHERE key = ?", params![key]) {
            Ok(Some(kept)) => return (replay(kept), true),
            Ok(None) => {}
            Err(e) => return (Err(e), false),
        }
        let result = self.handle(op);
        let (status, body) = match &result {
            Ok(data) => (200, data.to_string()),
            Err(e) if e.status() < 500 => (e.status(), e.public_message().to_string()),
            Err(_) => return (result, false),
        };
        let cutoff = millis_from_iso(&self.now).map(|now| iso_from_millis(now - KEEP_MS));
        let record = self
            .db
            .exec("INSERT INTO idempotent_replies (key, status, body, created_at) VALUES (?, ?, ?, ?)", params![key, i64::from(status), body, &self.now])
            .and_then(|_| match cutoff {
                Some(c) => self.db.exec("DELETE FROM idempotent_replies WHERE created_at < ?", params![c]),
                None => Ok(0),
            });
        match record {
            Ok(_) => (result, false),
            Err(e) => (Err(e), false),
        }
    }
}

fn replay(kept: Kept) -> ApiResult<Value> {
    if kept.status == 200 {
        serde_json::from_str(&kept.body).map_err(|e| ApiError::Internal(format!("a kept reply is not JSON: {e}")))
    } else {
        Err(ApiError::from_status(kept.status as u16, kept.body))
    }
}
