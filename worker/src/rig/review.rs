//! The review queue: branches submitted for merging, `pending -> running -> merged | failed`.

use super::op::{rig_ops, to_json, RigOp};
use serde_json::json;
use serde_json::Value;

use super::rows::ReviewRow;
use super::Rig;
use crate::api::{self, Incoming, Plan};
use crate::auth::check_body_agent;
use crate::body::{opt, req, Field, NON_EMPTY, STR};
use crate::db::{Db, Select};
use crate::error::{ApiError, ApiResult};
use crate::model::ReviewStatus;
use crate::model::{EventKind, ReviewEntry};
use crate::params;
use crate::requests::{opt_text, url, MAX_TEXT};
use crate::requests::{Issues, Validate};
use crate::routes::{Endpoint, Rule};
use serde::{Deserialize, Serialize};
use shared_types::validate;

/// The review queue: agents submit their work (reference), internal callers list it.
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/review-queue", Rule::Rig, submit),
    Endpoint::get("/api/rigs/:rigId/review-queue", Rule::Internal, list),
];

fn submit(req: &Incoming) -> ApiResult<Plan> {
    let review: NewReview = req.body()?;
    check_body_agent(&req.caller, "agent_id", &review.agent_id)?;
    api::ack(req.param("rigId")?, SubmitReview(review), 201, "submitted")
}

fn list(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, ListReviews(crate::query::review_filter(req.query)?))
}

/// `POST /api/rigs/:rigId/review-queue`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReview {
    pub agent_id: String,
    pub bead_id: String,
    pub branch: String,
    #[serde(default)]
    pub pr_url: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
}

impl Validate for NewReview {
    const FIELDS: &'static [Field] = &[
        req("agent_id", NON_EMPTY),
        req("bead_id", NON_EMPTY),
        req("branch", NON_EMPTY),
        opt("pr_url", STR),
        opt("summary", STR),
    ];

    fn check(&self, i: &mut Issues) {
        i.add("agent_id", validate::id(&self.agent_id));
        i.add("bead_id", validate::id(&self.bead_id));
        i.add("branch", validate::branch(&self.branch));
        i.add("pr_url", url(&self.pr_url));
        i.add("summary", opt_text(&self.summary, MAX_TEXT));
    }
}

/// Query of `GET /api/rigs/:rigId/review-queue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitReview(pub NewReview);

impl RigOp for SubmitReview {
    const NAME: &'static str = "submit_review";
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.submit_review(&self.0)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReviews(pub ReviewFilter);

impl RigOp for ListReviews {
    const NAME: &'static str = "list_reviews";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.list_reviews(&self.0)?)
    }
}

rig_ops!(SubmitReview, ListReviews);

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
