//! The review queue: branches submitted for merging, `pending -> running -> merged | failed`.

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::validate;

use super::op::{rig_ops, to_json, RigOp};
use super::rows::ReviewRow;
use super::Rig;
use crate::api::{self, Incoming, Plan};
use crate::auth::check_body_agent;
use crate::body::{NON_EMPTY, STR};
use crate::db::{Db, Select};
use crate::error::{ApiError, ApiResult};
use crate::model::{EventKind, ReviewEntry, ReviewStatus};
use crate::params;
use crate::requests::{opt_text, url, Issues, Validate, MAX_TEXT};
use crate::routes::{Endpoint, Rule};

/// The review queue: agents submit their work (reference), internal callers list it and read
/// one entry.
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/review-queue", Rule::Rig, submit),
    Endpoint::get("/api/rigs/:rigId/review-queue", Rule::Internal, list),
    Endpoint::get("/api/rigs/:rigId/review-queue/:entryId", Rule::Internal, get),
];

fn submit(req: &Incoming) -> ApiResult<Plan> {
    let review: NewReview = req.body()?;
    check_body_agent(&req.caller, "agent_id", &review.agent_id)?;
    api::ack(req.param("rigId")?, SubmitReview(review), 201, "submitted")
}

fn list(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, ListReviews(crate::query::review_filter(req.query)?))
}

fn get(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, GetReview { entry_id: req.param("entryId")? })
}

request_body! {
    /// `POST /api/rigs/:rigId/review-queue`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewReview {
        pub agent_id: String = req(NON_EMPTY),
        pub bead_id: String = req(NON_EMPTY),
        pub branch: String = req(NON_EMPTY),
        pub pr_url: Option<String> = opt(STR),
        pub summary: Option<String> = opt(STR),
    }
}

impl Validate for NewReview {
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

/// One entry of the queue, whatever its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetReview {
    pub entry_id: String,
}

impl RigOp for GetReview {
    const NAME: &'static str = "get_review";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.review(&self.entry_id)?)
    }
}

/// The forge says a pull request of the rig changed (a webhook): the running entry's pull
/// request is read at the next pass instead of after `PR_POLL_MS`. Whether one was waiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequestChanged;

impl RigOp for PullRequestChanged {
    const NAME: &'static str = "pull_request_changed";
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        Ok(Value::Bool(rig.read_pull_request_soon()?))
    }
}

rig_ops!(SubmitReview, ListReviews, GetReview, PullRequestChanged);

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
        self.review(&id)
    }

    pub(super) fn review(&self, id: &str) -> ApiResult<ReviewEntry> {
        self.db
            .first::<ReviewRow>("SELECT * FROM review_queue WHERE id = ?", params![id])?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::plan_for;
    use crate::auth::Caller;
    use crate::native_db::NativeDb;
    use crate::routes::Method;

    #[test]
    fn one_entry_is_read_by_its_id() {
        let p = plan_for(Method::Get, "/api/rigs/r1/review-queue/e1", Caller::Internal, "");
        let Ok(Plan::Rig { op, status: 200, .. }) = p else { panic!("{p:?}") };
        assert_eq!((op.op.as_str(), op.args["entry_id"].as_str()), ("get_review", Some("e1")));
        let bad = plan_for(Method::Get, "/api/rigs/r1/review-queue/e.1", Caller::Internal, "");
        assert_eq!(bad.map_err(|e| e.status()).map(|_| ()), Err(400));

        let db = NativeDb::with(super::super::schema::MIGRATIONS);
        let ids = std::cell::Cell::new(0);
        let new_id = || {
            ids.set(ids.get() + 1);
            format!("id-{}", ids.get())
        };
        let rig = Rig { db: &db, now: "2026-12-07T00:00:00.000Z".into(), new_id: &new_id };
        let config = serde_json::from_value(
            json!({"town_id": "t1", "git_url": "https://example.com/o/r.git"}),
        )
        .expect("config");
        rig.configure("r1", &config).expect("configure");
        let slung = rig
            .sling("r1", &serde_json::from_value(json!({"title": "t"})).expect("sling"))
            .expect("slung");
        let review = NewReview {
            agent_id: slung.agent.id,
            bead_id: slung.bead.id,
            branch: "polecat/a/t".into(),
            pr_url: None,
            summary: None,
        };
        let entry = rig.submit_review(&review).expect("submitted");
        let read = GetReview { entry_id: entry.id.clone() }.run(&rig).expect("read");
        assert_eq!(
            (read["id"].as_str(), read["status"].as_str()),
            (Some(&*entry.id), Some("pending"))
        );
        let missing = GetReview { entry_id: "nope".into() }.run(&rig);
        assert_eq!(
            missing.map_err(|e| e.public_message().to_string()),
            Err("Review entry not found".into())
        );
    }
}
