//! Idempotent calls: a call that carries an `Idempotency-Key` runs once; a retry with the same
//! key (its first answer was lost on the way back) gets the first reply again instead of doing
//! the work twice. The control server retries tool calls through a Worker outage this way
//! (container/src/tools/forward.rs), so `gt_done` or a mayor's convoy is never doubled.
//!
//! Replies are kept for [`KEEP_MS`] in the object's `idempotent_replies` table, and only when
//! final: successes and refusals (4xx). A 5xx is not kept, so the retry really runs. The RigDO
//! looks up, runs and records in one synchronous step (`rig/idempotency.rs`). The TownDO's mayor
//! ops await other objects, so another call could arrive in between: the TownDO first [`claim`]s
//! the key (a pending row, in the same step as the lookup), and a second call with the key while
//! the first runs is told to retry (503) instead of running the op again. The rig ops a mayor op
//! makes carry the same key.

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

/// A claim's row while its call runs (a status no reply has).
const PENDING: i64 = 0;
/// A pending claim older than this was left by a call that never finished (its object was
/// evicted mid-op): the next call with the key takes it over.
pub const STALE_CLAIM_MS: i64 = 120 * 1000;

/// The reply kept for `key`, if any (a pending claim is none).
pub fn lookup<D: Db>(db: &D, key: &str) -> ApiResult<Option<ApiResult<Value>>> {
    let kept = db.first::<Kept>(
        "SELECT status, body FROM idempotent_replies WHERE key = ? AND status != ?",
        params![key, PENDING],
    )?;
    Ok(kept.map(|kept| {
        if kept.status == 200 {
            crate::json::parse(&kept.body)
                .map_err(|e| ApiError::Internal(format!("a kept reply is not JSON: {e}")))
        } else {
            Err(ApiError::from_status(kept.status as u16, kept.body))
        }
    }))
}

/// What a call with a key may do: answer with the kept reply, run (the key is now claimed), or
/// wait because another call with the key is running.
#[derive(Debug, PartialEq)]
pub enum Claim {
    Kept(ApiResult<Value>),
    Run,
    Busy,
}

/// Looks `key` up and, when no call has it, claims it for this one, in one synchronous step
/// (no other call of the object runs in between). [`record`] settles the claim.
pub fn claim<D: Db>(db: &D, key: &str, now: &str) -> ApiResult<Claim> {
    if let Some(kept) = lookup(db, key)? {
        return Ok(Claim::Kept(kept));
    }
    #[derive(Deserialize)]
    struct Pending {
        created_at: String,
    }
    let pending = db.first::<Pending>(
        "SELECT created_at FROM idempotent_replies WHERE key = ?",
        params![key],
    )?;
    let now_ms = millis_from_iso(now);
    let fresh =
        |at: &str| now_ms.zip(millis_from_iso(at)).is_some_and(|(n, a)| n - a < STALE_CLAIM_MS);
    if pending.is_some_and(|p| fresh(&p.created_at)) {
        return Ok(Claim::Busy);
    }
    db.exec(
        "INSERT OR REPLACE INTO idempotent_replies (key, status, body, created_at) VALUES (?, ?, '', ?)",
        params![key, PENDING, now],
    )?;
    Ok(Claim::Run)
}

/// Keeps `result` as the reply to `key` when it is final (replacing the call's claim), and
/// forgets replies older than [`KEEP_MS`]. A 5xx is not kept: the claim is dropped, so a retry
/// runs the call again.
pub fn record<D: Db>(db: &D, key: &str, now: &str, result: &ApiResult<Value>) -> ApiResult<()> {
    let (status, body) = match result {
        Ok(data) => (200, data.to_string()),
        Err(e) if e.status() < 500 => (e.status(), e.public_message().to_string()),
        Err(_) => {
            db.exec(
                "DELETE FROM idempotent_replies WHERE key = ? AND status = ?",
                params![key, PENDING],
            )?;
            return Ok(());
        }
    };
    db.exec(
        "INSERT OR REPLACE INTO idempotent_replies (key, status, body, created_at) VALUES (?, ?, ?, ?)",
        params![key, i64::from(status), body, now],
    )?;
    if let Some(cutoff) = millis_from_iso(now).map(|now| iso_from_millis(now - KEEP_MS)) {
        db.exec("DELETE FROM idempotent_replies WHERE created_at < ?", params![cutoff])?;
    }
    Ok(())
}

#[cfg(test)]
mod claim_tests {
    use super::*;
    use crate::native_db::NativeDb;

    const T0: &str = "2026-12-06T12:00:00.000Z";
    const T1: &str = "2026-12-06T12:00:05.000Z";
    const LATER: &str = "2026-12-06T12:05:00.000Z";

    #[test]
    fn a_second_call_while_the_first_runs_is_told_to_wait_then_gets_the_first_reply() {
        let db = NativeDb::with(&[&[TABLE]]);
        assert_eq!(claim(&db, "k", T0), Ok(Claim::Run));
        assert_eq!(claim(&db, "k", T1), Ok(Claim::Busy), "the first call has not finished");
        record(&db, "k", T1, &Ok(serde_json::json!({"id": 7}))).expect("record");
        assert_eq!(claim(&db, "k", T1), Ok(Claim::Kept(Ok(serde_json::json!({"id": 7})))));
        assert_eq!(claim(&db, "other", T1), Ok(Claim::Run), "keys are apart");
    }

    #[test]
    fn a_failure_frees_the_key_and_an_abandoned_claim_is_taken_over() {
        let db = NativeDb::with(&[&[TABLE]]);
        assert_eq!(claim(&db, "k", T0), Ok(Claim::Run));
        record(&db, "k", T0, &Err(ApiError::Internal("boom".into()))).expect("record");
        assert_eq!(claim(&db, "k", T1), Ok(Claim::Run), "a 5xx is not kept: the retry runs");
        assert_eq!(claim(&db, "k", LATER), Ok(Claim::Run), "a claim older than the stale bound");
        record(&db, "k", LATER, &Err(ApiError::NotFound("Rig not found".into()))).expect("record");
        assert_eq!(
            claim(&db, "k", LATER),
            Ok(Claim::Kept(Err(ApiError::NotFound("Rig not found".into()))))
        );
    }
}
