//! The forge stand-in's merge requests: the subset of GitLab's REST API (v4) the town's `pr`
//! merge strategy calls on a GitLab forge, over the same repositories and pull requests as the
//! GitHub routes (`forge_pulls.rs`), in GitLab's shapes and status codes as its REST
//! documentation gives them (GitLab publishes no complete machine-readable description to
//! check against). Checks become the head commit's statuses; approvals and diff threads are
//! the test's to make, as people would.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};

use crate::forge_pulls::{git, MergeRefused, Pull, PullServer, RestCall};

type Answer = (StatusCode, Json<Value>);

fn answer(status: u16, body: Value) -> Answer {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body))
}

fn not_found() -> Answer {
    answer(404, json!({"message": "404 Not Found"}))
}

/// `/api/v4/projects/{id}/...`, behind the `PRIVATE-TOKEN` check; every call is recorded.
pub(crate) async fn serve(
    State(server): State<PullServer>,
    UrlPath((project, rest)): UrlPath<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let token = headers.get("private-token").and_then(|v| v.to_str().ok());
    let (status, Json(response)) = match project.strip_prefix("git/") {
        _ if !token.is_some_and(|t| server.git.allows(t)) => {
            answer(401, json!({"message": "401 Unauthorized"}))
        }
        Some(repo) => operation(&server, repo, &rest, &method, uri.query().unwrap_or(""), &body),
        None => not_found(),
    };
    if let Ok(mut calls) = server.host.gitlab_calls.lock() {
        calls.push(RestCall {
            repo: project.strip_prefix("git/").unwrap_or(&project).to_string(),
            method: method.to_string(),
            path: format!("/{rest}"),
            body,
            template: String::new(),
            status: status.as_u16(),
            response: response.clone(),
        });
    }
    (status, Json(response))
}

/// GitLab's merge request object.
fn shape(server: &PullServer, repo_path: &std::path::Path, repo: &str, p: &Pull) -> Value {
    let sha = git(repo_path, &["rev-parse", &format!("refs/heads/{}", p.head)]).unwrap_or_default();
    let conflict = p.open && {
        let (base, head) = (format!("refs/heads/{}", p.base), format!("refs/heads/{}", p.head));
        git(repo_path, &["merge-tree", "--write-tree", &base, &head]).is_none()
    };
    let state = match (p.open, &p.merge_commit) {
        (true, _) => "opened",
        (false, Some(_)) => "merged",
        (false, None) => "closed",
    };
    json!({
        "id": 1000 + p.number, "iid": p.number, "project_id": 1,
        "title": p.title, "description": p.body, "state": state,
        "source_branch": p.head, "target_branch": p.base, "sha": sha,
        "merge_commit_sha": p.merge_commit.as_ref().filter(|_| p.squashed.is_none()),
        "squash_commit_sha": p.squashed,
        "has_conflicts": conflict,
        "detailed_merge_status": if !p.open { "not_open" } else if conflict { "conflict" } else { "mergeable" },
        "web_url": format!("{}/git/{repo}/-/merge_requests/{}", server.base_url, p.number),
    })
}

fn operation(
    server: &PullServer,
    repo: &str,
    rest: &str,
    method: &Method,
    query: &str,
    body: &Value,
) -> Answer {
    let host = &server.host;
    let repo_path = server.git.root().join(format!("{repo}.git"));
    if !repo_path.exists() {
        return not_found();
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let find = |n: &str| {
        let n: u64 = n.parse().ok()?;
        host.with(|pulls| pulls.iter().find(|p| p.repo == repo && p.number == n).cloned())
    };
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["merge_requests"]) => {
            let text = |k: &str| body[k].as_str().unwrap_or("").to_string();
            let (head, base) = (text("source_branch"), text("target_branch"));
            if git(&repo_path, &["rev-parse", "--verify", &format!("refs/heads/{head}")]).is_none() {
                return answer(422, json!({"message": ["Source branch does not exist"]}));
            }
            let open = host.with(|pulls| pulls.iter().find(|p| p.repo == repo && p.head == head && p.open).map(|p| p.number));
            if let Some(n) = open {
                return answer(409, json!({"message": [format!("Another open merge request already exists for this source branch: !{n}")]}));
            }
            let p = host.open(repo, head, base, text("title"), text("description"));
            answer(201, shape(server, &repo_path, repo, &p))
        }
        ("GET", ["merge_requests"]) => {
            let source = crate::forge_pulls::form_value(query, "source_branch");
            let opened = crate::forge_pulls::form_value(query, "state").is_none_or(|s| s == "opened");
            let list: Vec<Value> = host.with(|pulls| pulls.clone()).iter()
                .filter(|p| p.repo == repo && (!opened || p.open) && source.as_ref().is_none_or(|s| *s == p.head))
                .map(|p| shape(server, &repo_path, repo, p))
                .collect();
            answer(200, Value::Array(list))
        }
        ("GET", ["merge_requests", n]) => match find(n) {
            Some(p) => answer(200, shape(server, &repo_path, repo, &p)),
            None => not_found(),
        },
        ("GET", ["repository", "commits", sha, "statuses"]) => {
            let runs = host.checks_of(&repo_path, sha)["check_runs"].as_array().cloned().unwrap_or_default();
            answer(200, Value::Array(runs.iter().map(|r| json!({
                "id": r["id"], "sha": sha, "name": r["name"], "allow_failure": false,
                "status": if r["conclusion"] == "success" { "success" } else { "failed" },
                "description": r["output"]["summary"],
            })).collect()))
        }
        ("GET", ["merge_requests", n, "notes"]) => match find(n) {
            Some(p) => answer(200, Value::Array(p.reviews.iter().enumerate().filter(|(_, r)| r.1 == "THREAD").map(|(i, (user, _, text, head))| json!({
                "id": i + 1, "type": "DiffNote", "body": text, "author": {"username": user}, "system": false,
                "resolvable": true, "resolved": false, "position": {"head_sha": head, "new_path": "feature.txt"},
            })).collect())),
            None => not_found(),
        },
        ("GET", ["merge_requests", n, "reviewers"]) => match find(n) {
            Some(_) => answer(200, json!([])),
            None => not_found(),
        },
        ("GET", ["merge_requests", n, "approvals"]) => match find(n) {
            Some(p) => {
                let by: Vec<Value> = p.reviews.iter().filter(|r| r.1 == "APPROVED").map(|r| json!({"user": {"username": r.0}})).collect();
                answer(200, json!({"iid": p.number, "approved": !by.is_empty(), "approved_by": by}))
            }
            None => not_found(),
        },
        ("PUT", ["merge_requests", n, "merge"]) => {
            let Some(p) = find(n) else { return not_found() };
            let method = if body["squash"] == true { "squash" } else { "merge" };
            match host.merge_pull(&repo_path, &p, body["sha"].as_str(), method) {
                Ok(p) => answer(200, shape(server, &repo_path, repo, &p)),
                Err(MergeRefused::HeadMoved) => answer(409, json!({"message": "SHA does not match HEAD of source branch"})),
                Err(MergeRefused::NotMergeable) => answer(405, json!({"message": "405 Method Not Allowed"})),
            }
        }
        _ => not_found(),
    }
}
