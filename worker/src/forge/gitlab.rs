//! Merge requests over GitLab's REST API (v4, gitlab.com or self-managed), as the rig's
//! project or group token sees them, read into the same [`Snapshot`] as a GitHub pull request
//! so one [`super::pulls::decide`] serves both.
//!
//! How GitLab's words map:
//! - checks are the head commit's statuses (its pipeline's jobs and external statuses);
//! - approvals are `APPROVED` reviews of the head;
//! - a request for changes is an unresolved diff thread started on the head (its text is the
//!   feedback), so a rework that pushed a new head is not sent back again for the same thread;
//!   a reviewer whose state is "requested changes" holds the merge without sending work back;
//! - mergeable is GitLab's `detailed_merge_status`: `mergeable` merges, a conflict or a needed
//!   rebase sends the work back, anything else (checking, approvals or checks missing) waits.
//!
//! The merge method: `squash` squashes; `merge` and `rebase` merge as the project is set up
//! (GitLab chooses merge commits or fast-forward per project, not per request).

use serde::Deserialize;
use serde_json::{json, Value};

use super::pulls::{Check, PullRequest, Review, Snapshot};
use super::rest::{self, encode, Api, ForgeError};
use crate::effects::Effects;
use crate::routes::Method;

/// Most items read from one list (statuses, notes): GitLab's largest page.
const PAGE: &str = "per_page=100";

pub struct GitLab<'a, E: Effects>(pub Api<'a, E>);

impl<E: Effects> GitLab<'_, E> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ForgeError> {
        let url = format!(
            "{}/projects/{}{path}",
            self.0.api_url.trim_end_matches('/'),
            encode(&self.0.repo.path)
        );
        let headers = vec![
            ("private-token".into(), self.0.token.to_string()),
            ("accept".into(), "application/json".into()),
            ("user-agent".into(), "gastown".into()),
        ];
        let api = &self.0;
        rest::call(api.fx, api.validators, method, url, headers, body).await
    }

    /// Opens the merge request of `head` into `base`, or finds the open one GitLab already
    /// has for that branch (409: a rework pushed to the same branch, or an answer was lost).
    pub async fn open(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, ForgeError> {
        let created = self
            .call(
                Method::Post,
                "/merge_requests",
                Some(json!({"source_branch": head, "target_branch": base, "title": title,
                            "description": body})),
            )
            .await;
        let path = format!("/merge_requests?state=opened&source_branch={}", encode(head));
        let find_open = || self.call(Method::Get, &path, None);
        PullRequest::created_or_open(created, 409, find_open, ("iid", "web_url")).await
    }

    /// Where merge request `iid` stands: the request, its head's statuses, its approvals, its
    /// reviewers and its notes.
    pub async fn snapshot(&self, iid: u64) -> Result<Snapshot, ForgeError> {
        #[derive(Deserialize)]
        struct Mr {
            state: String,
            sha: String,
            merge_commit_sha: Option<String>,
            squash_commit_sha: Option<String>,
            #[serde(default)]
            detailed_merge_status: Option<String>,
            #[serde(default)]
            has_conflicts: bool,
        }
        let mr: Mr = crate::json::decode(
            self.call(Method::Get, &format!("/merge_requests/{iid}"), None).await?,
        )
        .map_err(|e| ForgeError::Refused(format!("the forge's merge request is malformed: {e}")))?;
        let sha = mr.sha.clone();
        let statuses = self
            .call(Method::Get, &format!("/repository/commits/{sha}/statuses?{PAGE}"), None)
            .await?;
        let checks = statuses.as_array().into_iter().flatten().map(check).collect();

        let mut reviews = Vec::new();
        let notes = self
            .call(
                Method::Get,
                &format!("/merge_requests/{iid}/notes?sort=asc&order_by=created_at&{PAGE}"),
                None,
            )
            .await?;
        for n in notes.as_array().into_iter().flatten() {
            let open_thread =
                n["type"] == "DiffNote" && n["system"] != true && n["resolved"] != true;
            if open_thread {
                reviews.push(Review {
                    user: user(&n["author"]),
                    state: "CHANGES_REQUESTED".into(),
                    body: format!(
                        "{}: {}",
                        n["position"]["new_path"].as_str().unwrap_or(""),
                        n["body"].as_str().unwrap_or("")
                    ),
                    commit: n["position"]["head_sha"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        let reviewers =
            self.call(Method::Get, &format!("/merge_requests/{iid}/reviewers"), None).await?;
        for r in reviewers.as_array().into_iter().flatten() {
            if r["state"] == "requested_changes" {
                // No head to say which push answers it: it holds the merge until they approve.
                reviews.push(Review {
                    user: user(&r["user"]),
                    state: "CHANGES_REQUESTED".into(),
                    body: String::new(),
                    commit: String::new(),
                });
            }
        }
        let approvals =
            self.call(Method::Get, &format!("/merge_requests/{iid}/approvals"), None).await?;
        for a in approvals["approved_by"].as_array().into_iter().flatten() {
            reviews.push(Review {
                user: user(&a["user"]),
                state: "APPROVED".into(),
                body: String::new(),
                commit: sha.clone(),
            });
        }
        let merged = mr.state == "merged";
        let mergeable = match mr.detailed_merge_status.as_deref() {
            _ if mr.has_conflicts => Some(false),
            Some("mergeable") => Some(true),
            Some("conflict" | "need_rebase") => Some(false),
            _ => None,
        };
        Ok(Snapshot {
            open: mr.state == "opened",
            merged,
            merge_commit: merged
                .then(|| mr.merge_commit_sha.or(mr.squash_commit_sha).unwrap_or(mr.sha)),
            mergeable,
            head_sha: sha,
            checks,
            reviews,
            comments: Vec::new(),
        })
    }

    /// Merges merge request `iid` at `sha` (a head that moved since is not merged): the
    /// commit that landed, or `None` when GitLab will not merge it now (405, 406, 409).
    pub async fn merge(
        &self,
        iid: u64,
        sha: &str,
        method: &str,
    ) -> Result<Option<String>, ForgeError> {
        let body = json!({"sha": sha, "squash": method == "squash"});
        match self.call(Method::Put, &format!("/merge_requests/{iid}/merge"), Some(body)).await {
            Ok(mr) => Ok(["merge_commit_sha", "squash_commit_sha", "sha"]
                .iter()
                .find_map(|k| mr[*k].as_str())
                .map(str::to_string)),
            Err(e) if [405, 406, 409].iter().any(|s| e.refused_with(*s)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A commit status as a check: running ones have no conclusion yet; GitLab's `failed` and
/// `canceled` fail (unless the job may fail), `success` and `skipped` pass, in GitHub's words.
fn check(status: &Value) -> Check {
    let conclusion = match status["status"].as_str().unwrap_or("pending") {
        // A job allowed to fail does not hold the merge request back, in GitLab or here.
        "failed" if status["allow_failure"] == true => Some("neutral"),
        "success" => Some("success"),
        "skipped" => Some("skipped"),
        "failed" => Some("failure"),
        "canceled" => Some("cancelled"),
        _ => None,
    };
    Check {
        name: status["name"].as_str().unwrap_or("status").to_string(),
        conclusion: conclusion.map(str::to_string),
        summary: status["description"].as_str().unwrap_or("").to_string(),
    }
}

fn user(u: &Value) -> String {
    u["username"].as_str().unwrap_or("someone").to_string()
}
