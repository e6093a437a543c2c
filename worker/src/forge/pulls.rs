//! Pull requests on GitHub, for rigs whose merge strategy is `pr`: opening one for a reviewed
//! branch, reading where it stands (its state, mergeability, check runs, commit statuses and
//! reviews), and merging it. [`decide`] turns what was read into the next step; it is pure, and
//! the RigDO's alarm carries it out (`rig/object.rs`).

use serde::Deserialize;
use serde_json::{json, Value};
use shared_types::MergeState;

use crate::effects::{Effects, Inbound, Outbound};
use crate::refinery::MergeSettings;
use crate::routes::Method;

/// A repository on the forge, named from the rig's git URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub owner: String,
    pub name: String,
}

impl Repo {
    /// `https://host/owner/name(.git)` (or `http://` on loopback in local dev); `None` for
    /// other forms, which a pull request cannot name.
    pub fn of(git_url: &str) -> Option<Self> {
        let rest = git_url.strip_prefix("https://").or_else(|| git_url.strip_prefix("http://"))?;
        let path = rest.split_once('/')?.1.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.rsplitn(3, '/');
        let (name, owner) = (parts.next()?, parts.next()?);
        let ok = |s: &str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        (ok(owner) && ok(name)).then(|| Self { owner: owner.into(), name: name.into() })
    }
}

/// A pull request the rig follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
}

/// One check run, or one commit status context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// `None` while it runs; else GitHub's conclusion (`success`, `failure`, ...).
    pub conclusion: Option<String>,
    pub summary: String,
}

/// A review's verdict and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub user: String,
    pub state: String,
    pub body: String,
    /// The head it reviewed.
    pub commit: String,
}

/// Where a pull request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub open: bool,
    pub merged: bool,
    pub merge_commit: Option<String>,
    /// `None` while GitHub computes it.
    pub mergeable: Option<bool>,
    pub head_sha: String,
    pub checks: Vec<Check>,
    /// Reviews, oldest first.
    pub reviews: Vec<Review>,
    /// Line comments on the diff: `path: body`.
    pub comments: Vec<String>,
}

/// What to do next with a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do yet (checks running, reviews missing, a person to merge).
    Wait,
    /// Approved and green: merge its head.
    Merge { sha: String },
    /// Over: the state, a detail and the evidence, as a merge's outcome.
    Done { state: MergeState, commit: Option<String>, detail: String, output: Option<String> },
}

/// Conclusions that pass.
fn passes(conclusion: &str) -> bool {
    matches!(conclusion, "success" | "neutral" | "skipped")
}

/// The next step for a pull request, in this order: merged (by anyone) is done; closed is
/// done; a conflict, a failed check, or changes requested on this head in a reviewer's latest
/// review send the work back; checks still running wait; with the approvals the rig requires
/// (a reviewer's latest, on any head, as GitHub counts them unless the repository dismisses
/// stale ones), no request for changes left standing, every check passed and the forge saying
/// it merges, an `auto_merge` rig merges it, else a person does.
pub fn decide(s: &Snapshot, settings: &MergeSettings, default_branch: &str) -> Step {
    let done = |state, detail: String, output: Option<String>| Step::Done {
        state,
        commit: None,
        detail,
        output,
    };
    if s.merged {
        return Step::Done {
            state: MergeState::Merged,
            commit: s.merge_commit.clone(),
            detail: "the pull request was merged".into(),
            output: None,
        };
    }
    if !s.open {
        return done(
            MergeState::Closed,
            "the pull request was closed without merging".into(),
            None,
        );
    }
    if s.mergeable == Some(false) {
        return done(
            MergeState::Conflict,
            format!("the pull request conflicts with '{default_branch}'"),
            None,
        );
    }
    let failed: Vec<&Check> =
        s.checks.iter().filter(|c| c.conclusion.as_deref().is_some_and(|c| !passes(c))).collect();
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|c| format!("`{}` ({})", c.name, c.conclusion.as_deref().unwrap_or("")))
            .collect();
        let output = failed
            .iter()
            .map(|c| format!("{}: {}", c.name, c.summary.trim()))
            .collect::<Vec<_>>()
            .join("\n");
        return done(
            MergeState::ChecksFailed,
            format!("checks failed: {}", names.join(", ")),
            Some(output),
        );
    }
    let latest = latest_reviews(&s.reviews);
    // A request for changes on an earlier head was answered by the push that made this one;
    // the reviewer's next review says whether it was enough.
    let asking: Vec<&&Review> = latest
        .iter()
        .filter(|r| r.state == "CHANGES_REQUESTED" && r.commit == s.head_sha)
        .collect();
    if !asking.is_empty() {
        let mut text: Vec<String> =
            asking.iter().map(|r| format!("{}: {}", r.user, r.body.trim())).collect();
        text.extend(s.comments.iter().cloned());
        return done(
            MergeState::ChangesRequested,
            format!(
                "changes were requested by {}",
                asking.iter().map(|r| r.user.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some(text.join("\n")),
        );
    }
    let approvals = latest.iter().filter(|r| r.state == "APPROVED").count() as u32;
    let green = s.checks.iter().all(|c| c.conclusion.is_some());
    let still_asked = latest.iter().any(|r| r.state == "CHANGES_REQUESTED");
    if green
        && !still_asked
        && approvals >= settings.require_review
        && s.mergeable == Some(true)
        && settings.auto_merge
    {
        return Step::Merge { sha: s.head_sha.clone() };
    }
    Step::Wait
}

/// Each reviewer's latest review that decides (a comment-only review leaves the last verdict).
fn latest_reviews(reviews: &[Review]) -> Vec<&Review> {
    let mut latest: Vec<&Review> = Vec::new();
    for r in reviews
        .iter()
        .filter(|r| matches!(r.state.as_str(), "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED"))
    {
        latest.retain(|l| l.user != r.user);
        latest.push(r);
    }
    latest.retain(|r| r.state != "DISMISSED");
    latest
}

/// GitHub's REST API as the rig's installation (or token) sees it.
pub struct GitHub<'a, E: Effects> {
    pub fx: &'a E,
    pub api_url: &'a str,
    pub token: &'a str,
    pub repo: &'a Repo,
}

/// A forge answer that is not what the step needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeError {
    /// Worth trying again later (unreachable, a 5xx).
    Later(String),
    /// The forge asks for no request before `until_ms` (a rate limit, `Retry-After`).
    Paced { until_ms: i64, why: String },
    /// Will not work as asked (refused, not found): the entry fails with this.
    Refused(String),
}

/// When a refusing forge allows the next request: after `Retry-After` seconds, or, with no
/// requests left (`X-RateLimit-Remaining: 0`), at `X-RateLimit-Reset` (epoch seconds). At most
/// an hour away; `None` when the answer says nothing of it.
pub fn paced_until_ms(answer: &Inbound, now_ms: i64) -> Option<i64> {
    const HOUR_MS: i64 = 3600 * 1000;
    if let Some(secs) = answer.header("retry-after").and_then(|v| v.trim().parse::<i64>().ok()) {
        return Some(now_ms + (secs * 1000).clamp(0, HOUR_MS));
    }
    if answer.header("x-ratelimit-remaining").map(str::trim) == Some("0") {
        let reset = answer.header("x-ratelimit-reset")?.trim().parse::<i64>().ok()?;
        return Some((reset * 1000).clamp(now_ms, now_ms + HOUR_MS));
    }
    None
}

impl<E: Effects> GitHub<'_, E> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ForgeError> {
        let req = Outbound {
            method,
            url: format!(
                "{}/repos/{}/{}{path}",
                self.api_url.trim_end_matches('/'),
                self.repo.owner,
                self.repo.name
            ),
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.token)),
                ("accept".into(), "application/vnd.github+json".into()),
                ("x-github-api-version".into(), "2022-11-28".into()),
                ("user-agent".into(), "gastown".into()),
            ],
            body: body.map(|b| b.to_string()),
        };
        let answer = self
            .fx
            .http(&req)
            .await
            .map_err(|e| ForgeError::Later(format!("the forge is unreachable: {e}")))?;
        let parsed: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        let message = || parsed["message"].as_str().unwrap_or("no message").to_string();
        let why = || format!("HTTP {}: {}", answer.status, message());
        match answer.status {
            200..=299 => Ok(parsed),
            403 | 429 => match paced_until_ms(&answer, self.fx.now_ms()) {
                Some(until_ms) => Err(ForgeError::Paced { until_ms, why: why() }),
                // "API rate limit exceeded ..." without the headers that say for how long.
                None if message().contains("rate limit") => Err(ForgeError::Later(why())),
                None => Err(ForgeError::Refused(why())),
            },
            500..=599 => Err(ForgeError::Later(why())),
            _ => Err(ForgeError::Refused(why())),
        }
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
        let pr = match created {
            Ok(pr) => pr,
            Err(ForgeError::Refused(m)) if m.starts_with("HTTP 422") => {
                let path = format!("/pulls?state=open&head={}:{}", self.repo.owner, encode(head));
                let list = self.call(Method::Get, &path, None).await?;
                list.as_array().and_then(|a| a.first()).cloned().ok_or(ForgeError::Refused(m))?
            }
            Err(e) => return Err(e),
        };
        pull_request(&pr)
            .ok_or_else(|| ForgeError::Refused("the forge's pull request has no number".into()))
    }

    /// Where pull request `number` stands.
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
        let pull: Pull = serde_json::from_value(
            self.call(Method::Get, &format!("/pulls/{number}"), None).await?,
        )
        .map_err(|e| ForgeError::Refused(format!("the forge's pull request is malformed: {e}")))?;
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
            Err(ForgeError::Refused(m))
                if m.starts_with("HTTP 405") || m.starts_with("HTTP 409") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn pull_request(pr: &Value) -> Option<PullRequest> {
    Some(PullRequest {
        number: pr["number"].as_u64()?,
        url: pr["html_url"].as_str().unwrap_or("").to_string(),
    })
}

/// A branch name in a query string (`/` and the rest of git's branch characters kept readable).
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests;
