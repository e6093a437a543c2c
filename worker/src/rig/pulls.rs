//! The review queue's storage side for pull requests (the `pr` merge strategy): which pull
//! request carries an entry and its bead, when the forge was last read for it, and the forge's
//! last answers kept for conditional reads.

use serde::Deserialize;
use serde_json::json;

use super::Rig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::forge::rest::Validators;
use crate::model::EventKind;
use crate::params;

impl<D: Db> Rig<'_, D> {
    /// The pull request the bead's earlier entries opened (a rework follows the same one).
    pub fn pull_request_of(&self, bead_id: &str) -> ApiResult<Option<(u64, String)>> {
        #[derive(Deserialize)]
        struct Row {
            number: Option<i64>,
            url: Option<String>,
        }
        let row = self.db.first::<Row>(
            "SELECT json_extract(metadata, '$.pr_number') AS number, json_extract(metadata, '$.pr_url') AS url FROM beads WHERE id = ?",
            params![bead_id],
        )?;
        Ok(row.and_then(|r| Some((u64::try_from(r.number?).ok()?, r.url.unwrap_or_default()))))
    }

    /// Records that pull request `number` carries the running entry and its bead.
    pub fn record_pull_request(
        &self,
        entry_id: &str,
        bead_id: &str,
        number: u64,
        url: &str,
    ) -> ApiResult<()> {
        // Bound as a JavaScript number in the Worker: stored as a real unless cast.
        let n = number as i64;
        self.db.exec(
            "UPDATE review_queue SET pr_number = ?, pr_url = ? WHERE id = ? AND status = 'running'",
            params![n, url, entry_id],
        )?;
        let opened = self.pull_request_of(bead_id)?.is_none_or(|(known, _)| known != number);
        self.db.exec(
            "UPDATE beads SET metadata = json_set(metadata, '$.pr_number', CAST(? AS INTEGER), '$.pr_url', ?), updated_at = ? WHERE id = ?",
            params![n, url, &self.now, bead_id],
        )?;
        if opened {
            self.log(
                Some(bead_id),
                None,
                EventKind::PrOpened,
                json!({ "review_id": entry_id, "pr_number": number, "pr_url": url }),
            )?;
        }
        Ok(())
    }

    /// Notes that the running entry's pull request was read at `now_ms`.
    pub fn mark_polled(&self, entry_id: &str, now_ms: i64) -> ApiResult<()> {
        self.db.exec(
            "UPDATE review_queue SET polled_ms = ? WHERE id = ?",
            params![now_ms, entry_id],
        )?;
        Ok(())
    }

    /// When the running entry's pull request was last read (`None`: never).
    pub fn polled_ms(&self, entry_id: &str) -> ApiResult<Option<i64>> {
        #[derive(Deserialize)]
        struct Row {
            polled_ms: Option<i64>,
        }
        Ok(self
            .db
            .first::<Row>("SELECT polled_ms FROM review_queue WHERE id = ?", params![entry_id])?
            .and_then(|r| r.polled_ms))
    }

    /// Makes the running entry's pull request due for a read; whether there is a running entry.
    /// One whose pull request is being opened right now counts: the read in flight has marked
    /// it polled already, so the mark is taken back and the next pass reads again.
    pub fn read_pull_request_soon(&self) -> ApiResult<bool> {
        let changed = self
            .db
            .exec("UPDATE review_queue SET polled_ms = NULL WHERE status = 'running'", vec![])?;
        Ok(changed > 0)
    }
}

/// Answers kept for conditional reads: the newest [`KeptAnswers::MAX`], none older than a day.
pub struct KeptAnswers<'a, D: Db> {
    pub db: &'a D,
    pub now_ms: i64,
}

impl<D: Db> KeptAnswers<'_, D> {
    const MAX: i64 = 200;
    const KEEP_MS: i64 = 24 * 3600 * 1000;
}

impl<D: Db> Validators for KeptAnswers<'_, D> {
    fn last(&self, url: &str) -> Option<(String, String)> {
        #[derive(Deserialize)]
        struct Row {
            etag: String,
            body: String,
        }
        let row = self.db.first::<Row>(
            "SELECT etag, body FROM forge_answers WHERE url = ? AND stored_ms >= ?",
            params![url, self.now_ms - Self::KEEP_MS],
        );
        row.ok().flatten().map(|r| (r.etag, r.body))
    }

    fn keep(&self, url: &str, etag: &str, body: &str) {
        // A lost answer only costs one full read later: errors are not the caller's concern.
        let _ = self.db.exec(
            "INSERT OR REPLACE INTO forge_answers (url, etag, body, stored_ms) VALUES (?, ?, ?, ?)",
            params![url, etag, body, self.now_ms],
        );
        let _ = self.db.exec(
            "DELETE FROM forge_answers WHERE stored_ms < ? OR url NOT IN
             (SELECT url FROM forge_answers ORDER BY stored_ms DESC LIMIT ?)",
            params![self.now_ms - Self::KEEP_MS, Self::MAX],
        );
    }
}
