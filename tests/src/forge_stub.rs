//! A loopback stand-in for a forge, for the forge tests: its REST API serves what a GitHub App's
//! token exchange needs (`POST /app/installations/:id/access_tokens`), checks the app JWT as
//! GitHub does (RS256 under the app's public key, issued by the app, at most ten minutes long,
//! not expired) and mints installation tokens, recording each exchange. With a token, it also
//! hosts private git repositories over smart HTTP (`forge_git.rs`) at `/git/<name>.git`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde_json::{json, Value};

use crate::forge_git::{GitHost, GitRequest};
use crate::forge_pulls::{CheckRule, Pull, PullHost, PullServer, RestCall};

/// One app installation the stand-in knows.
#[derive(Clone)]
pub struct App {
    pub app_id: u64,
    pub installation_id: u64,
    pub public_key: RsaPublicKey,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub installation_id: u64,
    /// Whether the app JWT passed GitHub's checks; why not otherwise.
    pub verdict: Result<(), String>,
    pub token: Option<String>,
}

#[derive(Clone)]
struct Shared {
    app: Option<App>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    /// Where minted tokens become valid for git.
    git: GitHost,
    /// How long a minted installation token lives, in seconds (GitHub's: an hour).
    token_lifetime: Arc<std::sync::atomic::AtomicI64>,
}

pub struct ForgeStub {
    pub addr: SocketAddr,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    git: Option<GitHost>,
    pulls: PullHost,
    /// Where, and with which secret, webhooks go (`deliver_webhooks_to`).
    webhooks: Mutex<Option<(String, String)>>,
    /// Where, and with which token, GitLab's webhooks go (`deliver_gitlab_webhooks_to`).
    gitlab_webhooks: Mutex<Option<(String, String)>>,
    token_lifetime: Arc<std::sync::atomic::AtomicI64>,
    _task: tokio::task::JoinHandle<()>,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// GitHub's checks of an app JWT.
fn check(app: &App, authorization: Option<&str>) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt = authorization.and_then(|a| a.strip_prefix("Bearer ")).ok_or("no bearer JWT")?;
    let (input, sig) = jwt.rsplit_once('.').ok_or("no signature")?;
    let sig = Signature::try_from(b64.decode(sig).map_err(|e| e.to_string())?.as_slice())
        .map_err(|e| e.to_string())?;
    VerifyingKey::<sha2::Sha256>::new(app.public_key.clone())
        .verify(input.as_bytes(), &sig)
        .map_err(|_| "A JSON web token could not be decoded".to_string())?;
    let (header, claims) = input.split_once('.').ok_or("no claims")?;
    let decode = |part: &str| -> Result<Value, String> {
        serde_json::from_slice(&b64.decode(part).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    let now = now_secs();
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if header["alg"] != "RS256" {
        return Err("'alg' must be RS256".into());
    }
    if claims["iss"] != json!(app.app_id.to_string()) {
        return Err("'iss' is not this app".into());
    }
    if iat > now + 30 || exp <= now || exp - iat > 600 {
        return Err("'iat' and 'exp' must span at most ten minutes around now".into());
    }
    Ok(())
}

async fn access_tokens(
    State(shared): State<Shared>,
    Path(installation_id): Path<u64>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let Some(app) = &shared.app else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"})));
    };
    let verdict = check(app, auth);
    let known = installation_id == app.installation_id;
    let mut exchanges = shared.exchanges.lock().unwrap_or_else(|p| p.into_inner());
    let (status, body, token) = match (&verdict, known) {
        (Err(why), _) => (StatusCode::UNAUTHORIZED, json!({"message": why}), None),
        (Ok(()), false) => (StatusCode::NOT_FOUND, json!({"message": "Not Found"}), None),
        (Ok(()), true) => {
            let token = format!("ghs_stub{}x{}", installation_id, exchanges.len() + 1);
            let lifetime = shared.token_lifetime.load(std::sync::atomic::Ordering::Relaxed);
            let body = json!({"token": token, "expires_at": iso(now_secs() + lifetime)});
            let until = std::time::Instant::now()
                + std::time::Duration::from_secs(u64::try_from(lifetime).unwrap_or(0));
            shared.git.allow_until(&token, Some(until));
            (StatusCode::CREATED, body, Some(token))
        }
    };
    exchanges.push(Exchange { installation_id, verdict, token });
    (status, Json(body))
}

/// Seconds since the epoch as GitHub writes times (`2026-12-07T01:00:00Z`).
fn iso(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl ForgeStub {
    pub async fn start(app: App) -> Self {
        Self::serve(Some(app), None).await
    }

    /// A forge that also hosts private repositories, open to the tokens `app` mints and to
    /// those [`Self::allow_git_token`] names.
    pub async fn start_with_git(app: Option<App>) -> Self {
        Self::serve(app, Some(GitHost::new())).await
    }

    async fn serve(app: Option<App>, git: Option<GitHost>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let host = git.clone().unwrap_or_default();
        let token_lifetime = Arc::new(std::sync::atomic::AtomicI64::new(3600));
        let shared = Shared {
            app,
            exchanges: exchanges.clone(),
            git: host.clone(),
            token_lifetime: token_lifetime.clone(),
        };
        let mut router = axum::Router::new()
            .route("/app/installations/{id}/access_tokens", axum::routing::post(access_tokens))
            .with_state(shared);
        let pulls = PullHost::new(if git.is_some() {
            crate::forge_openapi::Examples::load()
        } else {
            crate::forge_openapi::Examples::none()
        });
        if git.is_some() {
            let repos = axum::Router::new()
                .route("/git/{*path}", axum::routing::any(crate::forge_git::serve))
                .with_state(host.clone());
            let server =
                PullServer { host: pulls.clone(), git: host, base_url: format!("http://{addr}") };
            let rest = axum::Router::new()
                .route(
                    "/repos/{owner}/{repo}/{*rest}",
                    axum::routing::any(crate::forge_pulls::serve),
                )
                .route(
                    "/api/v4/projects/{project}/{*rest}",
                    axum::routing::any(crate::forge_gitlab::serve),
                )
                .with_state(server);
            router = router.merge(repos).merge(rest);
        }
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            exchanges,
            git,
            pulls,
            webhooks: Mutex::new(None),
            gitlab_webhooks: Mutex::new(None),
            token_lifetime,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Installation tokens minted from now on live `secs` (git and the REST routes refuse them
    /// after that).
    pub fn set_token_lifetime(&self, secs: i64) {
        self.token_lifetime.store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// A private repository holding `seed`'s branches: its http URL and its path on disk.
    pub fn add_repo(&self, name: &str, seed: &std::path::Path) -> (String, std::path::PathBuf) {
        let host = self.git.as_ref().expect("a forge started with git");
        let path = host.add_repo(name, seed);
        (format!("{}/git/{name}.git", self.url()), path)
    }

    /// Lets git in with `token` (a token forge's own).
    pub fn allow_git_token(&self, token: &str) {
        if let Some(host) = &self.git {
            host.allow(token);
        }
    }

    /// Every git request so far.
    pub fn git_requests(&self) -> Vec<GitRequest> {
        self.git.as_ref().map(GitHost::requests).unwrap_or_default()
    }

    /// Every head gets check run `name`, which passes when the head's tree has `file`.
    pub fn require_check(&self, name: &str, file: &str) {
        if let Ok(mut checks) = self.pulls.checks.lock() {
            checks.push(CheckRule { name: name.into(), file: file.into() });
        }
    }

    /// The pull requests so far.
    pub fn pulls(&self) -> Vec<Pull> {
        self.pulls.pulls.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// From now on, a review or a closed pull request is told to `url` as GitHub's webhook
    /// would, signed with `secret`.
    pub fn deliver_webhooks_to(&self, url: &str, secret: &str) {
        if let Ok(mut w) = self.webhooks.lock() {
            *w = Some((url.to_string(), secret.to_string()));
        }
    }

    /// Records a review of pull request `number` of `repo` on its head as it is now.
    fn add_review(
        &self,
        repo: &str,
        number: u64,
        user: &str,
        state: &str,
        body: &str,
    ) -> Option<Pull> {
        let root = self.git.as_ref().map(|g| g.root().to_path_buf()).unwrap_or_default();
        let mut pulls = self.pulls.pulls.lock().ok()?;
        let p = pulls.iter_mut().find(|p| p.repo == repo && p.number == number)?;
        let path = root.join(format!("{}.git", p.repo));
        let head =
            crate::forge_pulls::git(&path, &["rev-parse", &format!("refs/heads/{}", p.head)]);
        p.reviews.push((user.into(), state.into(), body.into(), head.unwrap_or_default()));
        Some(p.clone())
    }

    /// A person reviews pull request `number` of `repo` on its head as it is now (`APPROVED`,
    /// `CHANGES_REQUESTED`, `COMMENTED`); GitHub sends `pull_request_review`.
    pub async fn review(&self, repo: &str, number: u64, user: &str, state: &str, body: &str) {
        let Some(pull) = self.add_review(repo, number, user, state, body) else { return };
        let review = json!({"id": pull.reviews.len(), "user": {"login": user}, "body": body, "state": state.to_lowercase(),
                            "commit_id": pull.reviews.last().map(|r| r.3.clone())});
        self.tell("pull_request_review", "submitted", json!({"review": review}), &pull).await;
    }

    /// A person closes pull request `number` of `repo` without merging it; GitHub sends
    /// `pull_request`.
    pub async fn close(&self, repo: &str, number: u64) {
        let pull = {
            let Ok(mut pulls) = self.pulls.pulls.lock() else { return };
            let Some(p) = pulls.iter_mut().find(|p| p.repo == repo && p.number == number) else {
                return;
            };
            p.open = false;
            p.clone()
        };
        self.tell("pull_request", "closed", json!({}), &pull).await;
    }

    /// A person merges pull request `number` of `repo` on the forge (a merge commit); GitHub
    /// sends `pull_request` closed, merged.
    pub async fn merge_by_hand(&self, repo: &str, number: u64) {
        let root = self.git.as_ref().map(|g| g.root().to_path_buf()).unwrap_or_default();
        let pull = {
            let Ok(mut pulls) = self.pulls.pulls.lock() else { return };
            let Some(p) = pulls.iter_mut().find(|p| p.repo == repo && p.number == number && p.open)
            else {
                return;
            };
            let repo = root.join(format!("{}.git", p.repo));
            let commit = self.pulls.merge(&repo, p, "merge").expect("a clean merge");
            p.open = false;
            p.merge_commit = Some(commit);
            p.clone()
        };
        self.tell("pull_request", "closed", json!({}), &pull).await;
    }

    /// Sends a webhook about `pull` (when deliveries are on): GitHub's example payload of the
    /// event and action (`@octokit/webhooks-examples`), with `ours` and the pull request's and
    /// repository's own fields laid over it.
    async fn tell(&self, event: &str, action: &str, mut ours: Value, pull: &Pull) {
        let Some((url, secret)) = self.webhooks.lock().ok().and_then(|w| w.clone()) else { return };
        ours["pull_request"] = json!({"number": pull.number, "state": if pull.open { "open" } else { "closed" },
                                      "merged": pull.merge_commit.is_some(), "head": {"ref": pull.head}, "base": {"ref": pull.base}});
        ours["repository"] = json!({"name": pull.repo, "full_name": format!("git/{}", pull.repo), "owner": {"login": "git"}});
        let payload = crate::forge_openapi::webhook_payload(event, action, ours);
        let (status, answer) = self.deliver(&url, &secret, event, &payload).await;
        assert_eq!(status, 200, "the Worker refused the {event} webhook: {answer}");
    }

    /// Delivers one webhook as GitHub does: `X-GitHub-Event`, a fresh `X-GitHub-Delivery`, and
    /// `X-Hub-Signature-256` of the raw body under `secret`. The Worker's status and answer.
    pub async fn deliver(
        &self,
        url: &str,
        secret: &str,
        event: &str,
        payload: &Value,
    ) -> (u16, Value) {
        use hmac::Mac;
        let body = payload.to_string();
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(body.as_bytes());
        let signature: String =
            mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let delivery = format!("{:x}", rand::random::<u128>());
        let res = crate::http_client(std::time::Duration::from_secs(30))
            .post(url)
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the webhook was sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Every REST call the product made to the pull request routes.
    pub fn rest_calls(&self) -> Vec<RestCall> {
        self.pulls.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Every REST call the product made to the GitLab routes.
    pub fn gitlab_calls(&self) -> Vec<RestCall> {
        self.pulls.gitlab_calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// From now on, an approval or a thread on a merge request is told to `url` as GitLab's
    /// webhook would, with `token` as its `X-Gitlab-Token`.
    pub fn deliver_gitlab_webhooks_to(&self, url: &str, token: &str) {
        if let Ok(mut w) = self.gitlab_webhooks.lock() {
            *w = Some((url.to_string(), token.to_string()));
        }
    }

    /// A person approves merge request `iid` of `repo`; GitLab sends a `Merge Request Hook`
    /// (action `approved`).
    pub async fn approve_merge_request(&self, repo: &str, iid: u64, user: &str) {
        let Some(pull) = self.add_review(repo, iid, user, "APPROVED", "") else { return };
        self.tell_gitlab("Merge Request Hook", "approved", &pull).await;
    }

    /// A person starts a diff thread on merge request `iid`'s head; GitLab sends a `Note Hook`.
    pub async fn open_thread(&self, repo: &str, iid: u64, user: &str, text: &str) {
        let Some(pull) = self.add_review(repo, iid, user, "THREAD", text) else { return };
        self.tell_gitlab("Note Hook", "create", &pull).await;
    }

    async fn tell_gitlab(&self, event: &str, action: &str, pull: &Pull) {
        let Some((url, token)) = self.gitlab_webhooks.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        let payload = json!({
            "object_kind": if event == "Note Hook" { "note" } else { "merge_request" },
            "event_type": if event == "Note Hook" { "note" } else { "merge_request" },
            "project": {"path_with_namespace": format!("git/{}", pull.repo), "name": pull.repo},
            "object_attributes": {"iid": pull.number, "action": action,
                                  "state": if pull.open { "opened" } else { "closed" },
                                  "source_branch": pull.head, "target_branch": pull.base},
        });
        let (status, answer) = self.deliver_gitlab(&url, &token, event, &payload).await;
        assert_eq!(status, 200, "the Worker refused the {event} webhook: {answer}");
    }

    /// Delivers one webhook as GitLab does: `X-Gitlab-Event`, `X-Gitlab-Token`, a fresh
    /// `X-Gitlab-Event-UUID` and `Idempotency-Key`. The Worker's status and answer.
    pub async fn deliver_gitlab(
        &self,
        url: &str,
        token: &str,
        event: &str,
        payload: &Value,
    ) -> (u16, Value) {
        let id = format!("{:x}", rand::random::<u128>());
        let res = crate::http_client(std::time::Duration::from_secs(30))
            .post(url)
            .header("x-gitlab-event", event)
            .header("x-gitlab-token", token)
            .header("x-gitlab-event-uuid", &id)
            .header("idempotency-key", &id)
            .header("content-type", "application/json")
            .json(payload)
            .send()
            .await
            .expect("the webhook was sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}
