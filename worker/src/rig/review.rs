//! The review queue: branches submitted for merging, `pending -> running -> merged | failed`.

use serde_json::json;

use super::rows::ReviewRow;
use super::Rig;
use crate::db::{Db, Select};
use crate::error::{ApiError, ApiResult};
use crate::model::{EventKind, ReviewEntry};
use crate::params;
use crate::requests::{NewReview, ReviewFilter};

impl<D: Db> Rig<'_, D> {
    pub(super) fn submit_review(&self, r: &NewReview) -> ApiResult<ReviewEntry> {
        self.agent(&r.agent_id)?;
        self.bead(&r.bead_id)?;
        self.insert_review(r)
    }

    pub(super) fn insert_review(&self, r: &NewReview) -> ApiResult<ReviewEntry> {
        let id = (self.new_id)();
        self.db.exec(
            "INSERT INTO review_queue (id, agent_id, bead_id, branch, pr_url, status, summary, created_at)
             VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            params![&id, &r.agent_id, &r.bead_id, &r.branch, r.pr_url.clone(), r.summary.clone(), &self.now],
        )?;
        self.log(
            Some(&r.bead_id),
            Some(&r.agent_id),
            EventKind::ReviewSubmitted,
            json!({ "review_id": id, "branch": r.branch }),
        )?;
        self.db
            .first::<ReviewRow>("SELECT * FROM review_queue WHERE id = ?", params![&id])?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found("review entry"))
    }

    pub(super) fn list_reviews(&self, f: &ReviewFilter) -> ApiResult<Vec<ReviewEntry>> {
        let (sql, params) = Select::new("SELECT * FROM review_queue")
            .eq("status", f.status.map(|s| s.as_str()))
            .page("rowid", f.limit, f.offset);
        Ok(self.db.query::<ReviewRow>(&sql, params)?.into_iter().map(Into::into).collect())
    }
}
