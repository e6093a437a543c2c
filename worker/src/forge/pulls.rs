//! Pull requests (merge requests on GitLab), for rigs whose merge strategy is `pr`: opening
//! one for a reviewed branch, reading where it stands (its state, mergeability, checks and
//! reviews) into one [`Snapshot`] whatever the forge, and merging it. [`decide`] turns what
//! was read into the next step; it is pure, and the RigDO's alarm carries it out
//! (`rig/object/pr_review.rs`). The forges' own clients are `github.rs` and `gitlab.rs`.

use serde_json::Value;
use shared_types::MergeState;

use super::github::GitHub;
use super::gitlab::GitLab;
use super::rest::{Api, ForgeError, Validators};
use crate::effects::Effects;
use crate::refinery::MergeSettings;

/// A repository on the forge, named from the rig's git URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The last two segments: GitHub's owner and name.
    pub owner: String,
    pub name: String,
    /// The whole path, GitLab's project path (`group/subgroup/project`).
    pub path: String,
}

impl Repo {
    /// `https://host/owner/name(.git)` (or `http://` on loopback in local dev); `None` for
    /// other forms, which a pull request cannot name.
    pub fn of(git_url: &str) -> Option<Self> {
        let rest = git_url.strip_prefix("https://").or_else(|| git_url.strip_prefix("http://"))?;
        let path = rest.split_once('/')?.1.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let ok = |s: &str| {
            s.bytes().any(|b| b != b'.')
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        let segments: Vec<&str> = path.split('/').collect();
        let [.., owner, name] = segments[..] else { return None };
        segments.iter().all(|s| ok(s)).then(|| Self {
            owner: owner.into(),
            name: name.into(),
            path: path.into(),
        })
    }
}

/// The rig's forge, as its token's kind says (`gitlab`, else GitHub).
pub enum Forge<'a, E: Effects> {
    GitHub(GitHub<'a, E>),
    GitLab(GitLab<'a, E>),
}

impl<'a, E: Effects> Forge<'a, E> {
    pub fn new(
        kind: &str,
        fx: &'a E,
        api_url: &'a str,
        token: &'a str,
        repo: &'a Repo,
        validators: Option<&'a dyn Validators>,
    ) -> Self {
        let api = Api { fx, api_url, token, repo, validators };
        if kind == "gitlab" {
            Self::GitLab(GitLab(api))
        } else {
            Self::GitHub(GitHub(api))
        }
    }

    /// Opens the request of `head` into `base`, or finds the open one the forge has for it.
    pub async fn open(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, ForgeError> {
        match self {
            Self::GitHub(f) => f.open(head, base, title, body).await,
            Self::GitLab(f) => f.open(head, base, title, body).await,
        }
    }

    pub async fn snapshot(&self, number: u64) -> Result<Snapshot, ForgeError> {
        match self {
            Self::GitHub(f) => f.snapshot(number).await,
            Self::GitLab(f) => f.snapshot(number).await,
        }
    }

    /// Merges at `sha`: the commit that landed, or `None` when the forge will not merge now.
    pub async fn merge(
        &self,
        number: u64,
        sha: &str,
        method: &str,
    ) -> Result<Option<String>, ForgeError> {
        match self {
            Self::GitHub(f) => f.merge(number, sha, method).await,
            Self::GitLab(f) => f.merge(number, sha, method).await,
        }
    }
}

/// A pull request the rig follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
}

impl PullRequest {
    /// The pull request the forge made, or, when it refused a duplicate with `exists`, the
    /// first open one `find_open` lists: an open retried after a lost answer follows the pull
    /// request the first made. `number` and `url` name the fields the forge answers with.
    pub async fn created_or_open<F>(
        created: Result<Value, ForgeError>,
        exists: u16,
        find_open: impl FnOnce() -> F,
        (number, url): (&str, &str),
    ) -> Result<Self, ForgeError>
    where
        F: std::future::Future<Output = Result<Value, ForgeError>>,
    {
        let pr = match created {
            Ok(pr) => pr,
            Err(e) if e.refused_with(exists) => {
                find_open().await?.as_array().and_then(|a| a.first()).cloned().ok_or(e)?
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            number: pr[number].as_u64().ok_or_else(|| {
                ForgeError::Refused(format!("the forge's pull request has no {number}"))
            })?,
            url: pr[url].as_str().unwrap_or("").to_string(),
        })
    }
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
        // Merged in, not rebased: the branch is pushed for the agent and never forced.
        return done(
            MergeState::Conflict,
            format!(
                "the pull request conflicts with '{default_branch}': merge it into your branch \
                 (`git fetch origin && git merge origin/{default_branch}`), resolve, commit and \
                 call gt_done again"
            ),
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

#[cfg(test)]
mod tests;
