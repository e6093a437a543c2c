//! Idempotent calls: a call that carries an `Idempotency-Key` runs once; a retry with the same
//! key (its first answer was lost on the way back) gets the first reply again instead of doing
//! the work twice. The control server retries tool calls through a Worker outage this way
//! (container/src/tools/forward.rs), so `gt_done` or a mayor's convoy is never doubled.
//!
//! Replies are kept for [`KEEP_MS`] in the object's `idempotent_replies` table, and only when
//! final: successes and refusals (4xx). A 5xx is not kept, so the retry really runs. The RigDO
//! looks up, runs and records in one synchronous step (`rig/idempotency.rs`); the TownDO's mayor
//! ops await other objects in between, and the rig ops they make carry the same key.

use serde::Deserialize;
use serde_json::Value;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::time::{iso_from_millis, millis_from_iso};

/// How long a reply is kept: far longer than any retry budget.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// The table, in each object that honours keys.
pub const TABLE: &str =
    "CREATE TABLE idempotent_replies (key TEXT PRIMARY KEY, status INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL)";

#[derive(Deserialize)]
struct Kept {
    status: i64,
    body: String,
}

/// The reply kept for `key`, if any.
pub fn lookup<D: Db>(db: &D, key: &str) -> ApiResult<Option<ApiResult<Value>>> {
    let kept = db
        .first::<Kept>("SELECT status, body FROM idempotent_replies WHERE key = ?", params![key])?;
    Ok(kept.map(|kept| {
        if kept.status == 200 {
            serde_json::from_str(&kept.body)
                .map_err(|e| ApiError::Internal(format!("a kept reply is not JSON: {e}")))
        } else {
            Err(ApiError::from_status(kept.status as u16, kept.body))
        }
    }))
}

/// Keeps `result` as the reply to `key` when it is final, and forgets replies older than
/// [`KEEP_MS`].
pub fn record<D: Db>(db: &D, key: &str, now: &str, result: &ApiResult<Value>) -> ApiResult<()> {
    let (status, body) = match result {
        Ok(data) => (200, data.to_string()),
        Err(e) if e.status() < 500 => (e.status(), e.public_message().to_string()),
        Err(_) => return Ok(()),
    };
    db.exec("INSERT OR IGNORE INTO idempotent_replies (key, status, body, created_at) VALUES (?, ?, ?, ?)", params![key, i64::from(status), body, now])?;
    if let Some(cutoff) = millis_from_iso(now).map(|now| iso_from_millis(now - KEEP_MS)) {
        db.exec("DELETE FROM idempotent_replies WHERE created_at < ?", params![cutoff])?;
    }
    Ok(())
}
