//! HTTP calls to one `kilo serve` process on loopback (shapes measured against Kilo 7.7.7).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct KiloClient {
    base: String,
    http: reqwest::Client,
    auth: Credentials,
}

/// The per-process basic-auth credentials of one `kilo serve` (`KILO_SERVER_USERNAME` /
/// `KILO_SERVER_PASSWORD` in its environment). Without them Kilo answers 401, so another
/// process on the loopback (another agent's shell) cannot drive it. Never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// A fresh random password; the user name is fixed (it is not a secret).
    pub fn random() -> Self {
        Self { username: "gastown".into(), password: crate::secret::random_token() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KiloError {
    #[error("kilo did not answer: {0}")]
    Unreachable(String),
    #[error("kilo answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("kilo answered something unexpected: {0}")]
    Unexpected(String),
}

/// Per-request deadline for calls that should answer at once. A health request sent while the
/// server is still starting can hang for good, so it gets a much shorter one.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

impl KiloClient {
    pub fn new(http: reqwest::Client, port: u16, auth: Credentials) -> Self {
        Self { base: format!("http://127.0.0.1:{port}"), http, auth }
    }

    /// A request to `path` with this process's credentials (every call, the event stream too).
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.auth.username, Some(&self.auth.password))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /global/health` -> `{"healthy":true,...}`.
    pub async fn healthy(&self) -> bool {
        let res = self
            .request(reqwest::Method::GET, "/global/health")
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                r.json::<Value>().await.is_ok_and(|v| v["healthy"] == true)
            }
            _ => false,
        }
    }

    /// `POST {path}?directory=D` with an optional JSON body; the answer's body on success.
    async fn post_in(
        &self,
        path: &str,
        directory: &Path,
        body: Option<&Value>,
    ) -> Result<String, KiloError> {
        let mut req = self
            .request(reqwest::Method::POST, path)
            .query(&[("directory", directory.to_string_lossy())])
            .timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res =
            req.send().await.map_err(|e| KiloError::Unreachable(e.without_url().to_string()))?;
        checked(res).await
    }

    /// `POST /session?directory=D` -> the new session's id.
    pub async fn create_session(&self, directory: &Path, title: &str) -> Result<String, KiloError> {
        let body = self.post_in("/session", directory, Some(&json!({ "title": title }))).await?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|_| KiloError::Unexpected("session is not JSON".into()))?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| KiloError::Unexpected("session has no id".into()))
    }

    /// `POST /session/{id}/message` with `model`: one turn, answered when it ends (within
    /// `timeout`).
    pub async fn turn_with(
        &self,
        session: &str,
        directory: &Path,
        agent: &str,
        (provider, model): (&str, &str),
        text: &str,
        timeout: std::time::Duration,
    ) -> Result<(), KiloError> {
        let body = json!({
            "agent": agent,
            "model": { "providerID": provider, "modelID": model },
            "parts": [{ "type": "text", "text": text }],
        });
        let res = self
            .request(reqwest::Method::POST, &format!("/session/{session}/message"))
            .query(&[("directory", directory.to_string_lossy())])
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| KiloError::Unreachable(e.without_url().to_string()))?;
        checked(res).await.map(|_| ())
    }

    /// `POST /session/{id}/prompt_async`: starts a turn and returns at once (204).
    /// `system`, when given, is appended to the system prompt for this message only.
    pub async fn prompt_async(
        &self,
        session: &str,
        directory: &Path,
        agent: &str,
        text: &str,
        system: Option<&str>,
    ) -> Result<(), KiloError> {
        let mut body = json!({ "agent": agent, "parts": [{ "type": "text", "text": text }] });
        if let Some(system) = system.filter(|s| !s.is_empty()) {
            body["system"] = system.into();
        }
        self.post_in(&format!("/session/{session}/prompt_async"), directory, Some(&body))
            .await
            .map(|_| ())
    }

    /// `GET /session/{id}/message?limit=N`: the session's last `limit` messages, oldest first,
    /// each `{info: {id, role, parentID?, time: {created, completed?}, finish?, error?}, parts}`.
    pub async fn last_messages(
        &self,
        session: &str,
        directory: &Path,
        limit: usize,
    ) -> Result<Vec<Value>, KiloError> {
        let res = self
            .request(reqwest::Method::GET, &format!("/session/{session}/message"))
            .query(&[
                ("directory", directory.to_string_lossy().to_string()),
                ("limit", limit.to_string()),
            ])
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| KiloError::Unreachable(e.without_url().to_string()))?;
        let body = checked(res).await?;
        serde_json::from_str(&body)
            .map_err(|_| KiloError::Unexpected("message list is not a JSON array".into()))
    }

    /// `POST /session/{id}/abort`: ends the running turn, if any.
    pub async fn abort(&self, session: &str, directory: &Path) -> Result<(), KiloError> {
        self.post_in(&format!("/session/{session}/abort"), directory, None).await.map(|_| ())
    }

    /// `GET /global/event`: the server-sent events of every directory the server serves.
    pub async fn global_events(&self) -> Result<reqwest::Response, KiloError> {
        let res = self
            .request(reqwest::Method::GET, "/global/event")
            .send()
            .await
            .map_err(|e| KiloError::Unreachable(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(KiloError::Status { status: res.status().as_u16(), body: String::new() });
        }
        Ok(res)
    }
}

async fn checked(res: reqwest::Response) -> Result<String, KiloError> {
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        let mut body = body;
        body.truncate(500);
        Err(KiloError::Status { status: status.as_u16(), body })
    }
}
