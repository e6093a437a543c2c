//! Pull requests over GitHub's REST API (github.com or an Enterprise Server), as the rig's
//! installation or token sees them.

use serde::Deserialize;
use serde_json::{json, Value};

use super::pulls::{Check, PullRequest, Review, Snapshot};
use super::rest::{self, encode, Api, ForgeError};
use crate::effects::Effects;
use crate::routes::Method;

pub struct GitHub<'a, E: Effects>(pub Api<'a, E>);

impl<E: Effects> GitHub<'_, E> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ForgeError> {
        let url = format!(
            "{}/repos/{}/{}{path}",
            self.0.api_url.trim_end_matches('/'),
            self.0.repo.owner,
            self.0.repo.name
        );
        let headers = vec![
            ("authorization".into(), format!("Bearer {}", self.0.token)),
            ("accept".into(), "application/vnd.github+json".into()),
            ("x-github-api-version".into(), "2022-11-28".into()),
            ("user-agent".into(), "gastown".into()),
        ];
        let api = &self.0;
        rest::call(api.fx, api.validators, method, url, headers, body).await
    }

    /// Opens the pull request of `head` into `base`, or finds the open one GitHub already has
    /// for it (a rework pushes to the same branch, and a retry after a lost answer opens none).
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
                "/pulls",
                Some(json!({"title": title, "head": head, "base": base, "body": body})),
            )
            .await;
        let path = format!("/pulls?state=open&head={}:{}", self.0.repo.owner, encode(head));
        let find_open = || self.call(Method::Get, &path, None);
        PullRequest::created_or_open(created, 422, find_open, ("number", "html_url")).await
    }

    /// Where pull request `number` stands: the pull, its head's check runs and commit
    /// statuses, its reviews and its line comments.
    pub async fn snapshot(&self, number: u64) -> Result<Snapshot, ForgeError> {
        #[derive(Deserialize)]
        struct Pull {
            state: String,
            #[serde(default)]
            merged: bool,
            merge_commit_sha: Option<String>,
            mergeable: Option<bool>,
            head: Head,
        }
        #[derive(Deserialize)]
        struct Head {
            sha: String,
        }
        let pull: Pull =
            crate::json::decode(self.call(Method::Get, &format!("/pulls/{number}"), None).await?)
                .map_err(|e| {
                ForgeError::Refused(format!("the forge's pull request is malformed: {e}"))
            })?;
        let sha = pull.head.sha.clone();
        let mut checks = Vec::new();
        let runs = self.call(Method::Get, &format!("/commits/{sha}/check-runs"), None).await?;
        for run in runs["check_runs"].as_array().into_iter().flatten() {
            checks.push(Check {
                name: run["name"].as_str().unwrap_or("check").to_string(),
                conclusion: (run["status"] == "completed")
                    .then(|| run["conclusion"].as_str().unwrap_or("failure").to_string()),
                summary: run["output"]["summary"].as_str().unwrap_or("").to_string(),
            });
        }
        let status = self.call(Method::Get, &format!("/commits/{sha}/status"), None).await?;
        for s in status["statuses"].as_array().into_iter().flatten() {
            let state = s["state"].as_str().unwrap_or("pending");
            checks.push(Check {
                name: s["context"].as_str().unwrap_or("status").to_string(),
                conclusion: (state != "pending").then(|| state.to_string()),
                summary: s["description"].as_str().unwrap_or("").to_string(),
            });
        }
        let reviews = self.call(Method::Get, &format!("/pulls/{number}/reviews"), None).await?;
        let reviews = reviews
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Review {
                user: r["user"]["login"].as_str().unwrap_or("someone").to_string(),
                state: r["state"].as_str().unwrap_or("").to_string(),
                body: r["body"].as_str().unwrap_or("").to_string(),
                commit: r["commit_id"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        let comments = self.call(Method::Get, &format!("/pulls/{number}/comments"), None).await?;
        let comments = comments
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["path"].as_str().unwrap_or(""),
                    c["body"].as_str().unwrap_or("")
                )
            })
            .collect();
        Ok(Snapshot {
            open: pull.state == "open",
            merged: pull.merged,
            merge_commit: pull.merge_commit_sha,
            mergeable: pull.mergeable,
            head_sha: sha,
            checks,
            reviews,
            comments,
        })
    }

    /// Merges pull request `number` at `sha` (a head that moved since is not merged): the
    /// merge commit, or `None` when GitHub will not merge it now (405, 409).
    pub async fn merge(
        &self,
        number: u64,
        sha: &str,
        method: &str,
    ) -> Result<Option<String>, ForgeError> {
        let path = format!("/pulls/{number}/merge");
        match self.call(Method::Put, &path, Some(json!({"sha": sha, "merge_method": method}))).await
        {
            Ok(merged) => Ok(merged["sha"].as_str().map(str::to_string)),
            Err(e) if e.refused_with(405) || e.refused_with(409) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
