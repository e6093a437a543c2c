//! The forge stand-in's pull requests: the subset of GitHub's REST API the town's `pr` merge
//! strategy calls, over the stand-in's own git repositories (`forge_git.rs`), with GitHub's
//! shapes and status codes. Mergeability is git's own answer (`git merge-tree`), a merge is a
//! real merge commit on the base branch, and check runs follow a rule the test sets (a check
//! passes when the head's tree has a given file). Reviews, and closing a pull request, are the
//! test's to make, as people would.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};

use crate::forge_openapi::Examples;

/// One pull request.
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub repo: String,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    pub open: bool,
    pub merge_commit: Option<String>,
    /// The squashed commit, when the merge squashed it.
    pub squashed: Option<String>,
    /// `(user, state, body, the head it reviewed)`, oldest first (on GitLab: `APPROVED` or a
    /// diff `THREAD`).
    pub reviews: Vec<(String, String, String, String)>,
}

/// A check run every head gets: it passes when the head's tree has `file`.
#[derive(Debug, Clone)]
pub struct CheckRule {
    pub name: String,
    pub file: String,
}

/// One REST request the product made, and the stand-in's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RestCall {
    /// The repository's name.
    pub repo: String,
    pub method: String,
    /// The path after the repository (`/pulls/1`).
    pub path: String,
    pub body: Value,
    /// The operation in GitHub's OpenAPI description (`/repos/{owner}/{repo}/pulls/{pull_number}`).
    pub template: String,
    pub status: u16,
    pub response: Value,
}

#[derive(Clone)]
pub(crate) struct PullHost {
    pub(crate) pulls: Arc<Mutex<Vec<Pull>>>,
    pub(crate) checks: Arc<Mutex<Vec<CheckRule>>>,
    pub(crate) calls: Arc<Mutex<Vec<RestCall>>>,
    /// The calls to the GitLab routes (`forge_gitlab.rs`).
    pub(crate) gitlab_calls: Arc<Mutex<Vec<RestCall>>>,
    pub(crate) examples: Arc<Examples>,
}

impl PullHost {
    pub(crate) fn new(examples: Examples) -> Self {
        Self {
            pulls: Arc::default(),
            checks: Arc::default(),
            calls: Arc::default(),
            gitlab_calls: Arc::default(),
            examples: Arc::new(examples),
        }
    }
}

pub(crate) fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(repo).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

type Answer = (StatusCode, Json<Value>);

fn answer(status: u16, body: Value) -> Answer {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body))
}

fn not_found() -> Answer {
    answer(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

impl PullHost {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Vec<Pull>) -> T) -> T {
        f(&mut self.pulls.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A new open pull request of `repo`, numbered after the repository's others.
    pub(crate) fn open(
        &self,
        repo: &str,
        head: String,
        base: String,
        title: String,
        body: String,
    ) -> Pull {
        self.with(|pulls| {
            let number = pulls.iter().filter(|p| p.repo == repo).count() as u64 + 1;
            let p = Pull {
                number,
                repo: repo.to_string(),
                head,
                base,
                title,
                body,
                open: true,
                merge_commit: None,
                squashed: None,
                reviews: Vec::new(),
            };
            pulls.push(p.clone());
            p
        })
    }

    /// GitHub's pull request object, with the head as the branch names it now.
    fn shape(&self, repo_path: &Path, base_url: &str, p: &Pull) -> Value {
        let sha =
            git(repo_path, &["rev-parse", &format!("refs/heads/{}", p.head)]).unwrap_or_default();
        let mergeable = p.open.then(|| {
            let (base, head) = (format!("refs/heads/{}", p.base), format!("refs/heads/{}", p.head));
            git(repo_path, &["merge-tree", "--write-tree", &base, &head]).is_some()
        });
        json!({
            "url": format!("{base_url}/repos/git/{}/pulls/{}", p.repo, p.number),
            "html_url": format!("{base_url}/git/{}/pull/{}", p.repo, p.number),
            "number": p.number,
            "state": if p.open { "open" } else { "closed" },
            "title": p.title,
            "body": p.body,
            "merged": p.merge_commit.is_some(),
            "merge_commit_sha": p.merge_commit,
            "mergeable": mergeable,
            "head": {"ref": p.head, "sha": sha},
            "base": {"ref": p.base},
        })
    }

    pub(crate) fn checks_of(&self, repo_path: &Path, sha: &str) -> Value {
        let files = git(repo_path, &["ls-tree", "-r", "--name-only", sha]).unwrap_or_default();
        let rules = self.checks.lock().map(|c| c.clone()).unwrap_or_default();
        let runs: Vec<Value> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let pass = files.lines().any(|f| f == r.file);
                self.examples.with("check-run", json!({"id": i + 1, "name": r.name, "head_sha": sha, "status": "completed",
                       "conclusion": if pass { "success" } else { "failure" },
                       "output": {"title": r.name, "summary": if pass { format!("{} is there", r.file) } else { format!("{} is missing", r.file) }}}))
            })
            .collect();
        json!({"total_count": runs.len(), "check_runs": runs})
    }

    /// What a forge's merge endpoint does with pull request `p`: refused when `sha` names a
    /// head other than the branch's (someone pushed since), or when the pull request is closed
    /// or conflicts; otherwise merged on its base (see [`Self::merge`]) and marked merged. The
    /// pull request as it is afterwards.
    pub(crate) fn merge_pull(
        &self,
        repo_path: &Path,
        p: &Pull,
        sha: Option<&str>,
        method: &str,
    ) -> Result<Pull, MergeRefused> {
        let head = git(repo_path, &["rev-parse", &format!("refs/heads/{}", p.head)]);
        if sha.is_some_and(|s| Some(s) != head.as_deref()) {
            return Err(MergeRefused::HeadMoved);
        }
        let commit = p
            .open
            .then(|| self.merge(repo_path, p, method))
            .flatten()
            .ok_or(MergeRefused::NotMergeable)?;
        self.with(|pulls| {
            let q = pulls.iter_mut().find(|q| q.number == p.number && q.repo == p.repo)?;
            q.open = false;
            q.merge_commit = Some(commit.clone());
            q.squashed = (method == "squash").then(|| commit.clone());
            Some(q.clone())
        })
        .ok_or(MergeRefused::NotMergeable)
    }

    /// Merges the pull request on its base: a merge commit of base and head (`merge`), a
    /// commit of the merged tree on the base alone (`squash`); `rebase` is answered as `merge`.
    pub(crate) fn merge(&self, repo_path: &Path, p: &Pull, method: &str) -> Option<String> {
        let (base, head) = (format!("refs/heads/{}", p.base), format!("refs/heads/{}", p.head));
        let tree = git(repo_path, &["merge-tree", "--write-tree", &base, &head])?;
        let base_sha = git(repo_path, &["rev-parse", &base])?;
        let head_sha = git(repo_path, &["rev-parse", &head])?;
        let message = format!("Merge pull request #{} from git/{}", p.number, p.head);
        let ident = ["-c", "user.name=Forge", "-c", "user.email=forge@test"];
        let mut args: Vec<&str> = ident.to_vec();
        args.extend(["commit-tree", &tree, "-p", &base_sha]);
        if method != "squash" {
            args.extend(["-p", &head_sha]);
        }
        args.extend(["-m", &message]);
        let commit = git(repo_path, &args)?;
        git(repo_path, &["update-ref", &base, &commit, &base_sha])?;
        Some(commit)
    }
}

/// Why the stand-in's merge endpoint refused.
#[derive(Debug)]
pub(crate) enum MergeRefused {
    HeadMoved,
    NotMergeable,
}

/// What the REST routes serve from.
#[derive(Clone)]
pub(crate) struct PullServer {
    pub(crate) host: PullHost,
    pub(crate) git: crate::forge_git::GitHost,
    pub(crate) base_url: String,
}

/// `/repos/{owner}/{repo}/...`: the REST subset, behind the token check. Every call is
/// recorded with the operation it is in GitHub's description, and the answer given.
pub(crate) async fn serve(
    State(server): State<PullServer>,
    UrlPath((_owner, repo, rest)): UrlPath<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "));
    let (template, (mut status, Json(mut response))) =
        if token.is_some_and(|t| server.git.allows(t)) {
            operation(&server, &repo, &rest, &method, uri.query().unwrap_or(""), &body)
        } else {
            ("", answer(401, json!({"message": "Bad credentials", "documentation_url": DOCS})))
        };
    // A pull request's read carries an ETag, and a read that names it is a 304 while the pull
    // request is unchanged (GitHub describes 304 for this operation).
    let etag = (template == PULL && status == StatusCode::OK).then(|| etag_of(&response));
    let asked = headers.get("if-none-match").and_then(|v| v.to_str().ok());
    if etag.is_some() && asked == etag.as_deref() {
        status = StatusCode::NOT_MODIFIED;
        response = Value::Null;
    }
    if let Ok(mut calls) = server.host.calls.lock() {
        calls.push(RestCall {
            repo: repo.clone(),
            method: method.to_string(),
            path: format!("/{rest}"),
            body,
            template: template.to_string(),
            status: status.as_u16(),
            response: response.clone(),
        });
    }
    match (status, etag) {
        (StatusCode::NOT_MODIFIED, _) => status.into_response(),
        (_, Some(etag)) => (status, [("etag", etag)], Json(response)).into_response(),
        _ => (status, Json(response)).into_response(),
    }
}

/// A strong ETag of an answer (FNV-1a of its JSON).
fn etag_of(answer: &Value) -> String {
    let hash = answer
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("\"{hash:016x}\"")
}

const DOCS: &str = "https://docs.github.com/rest";
const PULLS: &str = "/repos/{owner}/{repo}/pulls";
const PULL: &str = "/repos/{owner}/{repo}/pulls/{pull_number}";
const REVIEWS: &str = "/repos/{owner}/{repo}/pulls/{pull_number}/reviews";
const COMMENTS: &str = "/repos/{owner}/{repo}/pulls/{pull_number}/comments";
const MERGE: &str = "/repos/{owner}/{repo}/pulls/{pull_number}/merge";
const CHECK_RUNS: &str = "/repos/{owner}/{repo}/commits/{ref}/check-runs";
const STATUS: &str = "/repos/{owner}/{repo}/commits/{ref}/status";

/// The operation a call is, and its answer.
fn operation(
    server: &PullServer,
    repo: &str,
    rest: &str,
    method: &Method,
    query: &str,
    body: &Value,
) -> (&'static str, Answer) {
    let PullServer { host, git: git_host, base_url } = server;
    let repo_path = git_host.root().join(format!("{repo}.git"));
    let parts: Vec<&str> = rest.split('/').collect();
    let template = match (method.as_str(), parts.as_slice()) {
        (_, ["pulls"]) => PULLS,
        (_, ["pulls", _]) => PULL,
        (_, ["pulls", _, "reviews"]) => REVIEWS,
        (_, ["pulls", _, "comments"]) => COMMENTS,
        (_, ["pulls", _, "merge"]) => MERGE,
        (_, ["commits", _, "check-runs"]) => CHECK_RUNS,
        (_, ["commits", _, "status"]) => STATUS,
        _ => "",
    };
    if !repo_path.exists() {
        return (template, not_found());
    }
    let failed = |status: u16, message: &str| {
        answer(status, json!({"message": message, "documentation_url": DOCS}))
    };
    let answered = match (method.as_str(), parts.as_slice()) {
        ("POST", ["pulls"]) => {
            let text = |k: &str| body[k].as_str().unwrap_or("").to_string();
            let (head, base) = (text("head"), text("base"));
            if git(&repo_path, &["rev-parse", "--verify", &format!("refs/heads/{head}")]).is_none() {
                return (template, answer(422, json!({"message": "Validation Failed", "documentation_url": DOCS, "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]})));
            }
            let exists = host.with(|pulls| pulls.iter().any(|p| p.repo == repo && p.head == head && p.open));
            if exists {
                return (template, answer(422, json!({"message": "Validation Failed", "documentation_url": DOCS, "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for git:{head}.")}]})));
            }
            let pull = host.open(repo, head, base, text("title"), text("body"));
            answer(201, host.examples.with("pull-request", host.shape(&repo_path, base_url, &pull)))
        }
        ("GET", ["pulls"]) => {
            let head = form_value(query, "head").and_then(|h| h.split_once(':').map(|(_, b)| b.to_string()));
            let open_only = form_value(query, "state").is_none_or(|s| s == "open");
            let list: Vec<Value> = host.with(|pulls| pulls.clone()).iter()
                .filter(|p| p.repo == repo && (!open_only || p.open) && head.as_ref().is_none_or(|h| *h == p.head))
                .map(|p| host.examples.with("pull-request-simple", host.shape(&repo_path, base_url, p)))
                .collect();
            answer(200, Value::Array(list))
        }
        ("GET", ["pulls", n]) => match find(host, repo, n) {
            Some(p) => answer(200, host.examples.with("pull-request", host.shape(&repo_path, base_url, &p))),
            None => not_found(),
        },
        ("GET", ["pulls", n, "reviews"]) => match find(host, repo, n) {
            Some(p) => answer(200, Value::Array(p.reviews.iter().enumerate().map(|(i, (user, state, body, commit))| {
                host.examples.with("review", json!({"id": i + 1, "user": {"login": user}, "state": state, "body": body, "commit_id": commit}))
            }).collect())),
            None => not_found(),
        },
        ("GET", ["pulls", n, "comments"]) => match find(host, repo, n) {
            Some(_) => answer(200, json!([])),
            None => not_found(),
        },
        ("GET", ["commits", sha, "check-runs"]) => answer(200, host.checks_of(&repo_path, sha)),
        ("GET", ["commits", sha, "status"]) => answer(200, host.examples.with("combined-status", json!({"state": "pending", "sha": sha, "total_count": 0, "statuses": []}))),
        ("PUT", ["pulls", n, "merge"]) => {
            let Some(p) = find(host, repo, n) else { return (template, not_found()) };
            let method = body["merge_method"].as_str().unwrap_or("merge");
            match host.merge_pull(&repo_path, &p, body["sha"].as_str(), method) {
                Ok(p) => answer(200, host.examples.with("merge-result", json!({"sha": p.merge_commit, "merged": true, "message": "Pull Request successfully merged"}))),
                Err(MergeRefused::HeadMoved) => failed(409, "Head branch was modified. Review and try the merge again."),
                Err(MergeRefused::NotMergeable) => failed(405, "Pull Request is not mergeable"),
            }
        }
        _ => not_found(),
    };
    (template, answered)
}

fn find(host: &PullHost, repo: &str, n: &str) -> Option<Pull> {
    let n: u64 = n.parse().ok()?;
    host.with(|pulls| pulls.iter().find(|p| p.repo == repo && p.number == n).cloned())
}

pub(crate) fn form_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3A", ":").replace("%2F", "/").replace("%3a", ":").replace("%2f", "/")
        })
    })
}
