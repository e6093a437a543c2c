//! A rig's forge credential, asked of the Worker when the server's git talks to the rig's origin
//! over http(s): the clone and fetch of the rig's clone, the refinery's fetch and pushes, and the
//! pushes made for agents.
//!
//! The Worker keeps the credentials (a GitHub App's key, a token) and answers with a token it
//! minted or refreshed (`POST /api/towns/:town/container/rigs/:rig/forge-token`, the container
//! token as proof). A token is kept in memory for a minute: the Worker hands out app tokens
//! with at least five minutes left, and a revoked one stops working within a minute. A 404 (no
//! forge configured) means anonymous git, asked again next time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::git::GitCredential;
use crate::http::TOKEN_HEADER;

/// How long a token is reused before the Worker is asked again.
const REUSE: Duration = Duration::from_secs(60);

/// Town, rig and git URL: a credential is bound to its URL's host.
type Key = (String, String, String);
type Cache = HashMap<Key, (Instant, GitCredential)>;

#[derive(Default)]
pub struct ForgeTokens {
    cache: Mutex<Cache>,
}

#[derive(Deserialize)]
struct Issued {
    kind: String,
    token: String,
}

/// Who asks the Worker: its API URL and the container token.
pub struct WorkerAccess<'a> {
    pub http: &'a reqwest::Client,
    pub api_url: Option<&'a str>,
    pub container_token: Option<&'a str>,
}

impl ForgeTokens {
    /// The credential for git to reach `git_url` for `rig_id` of `town_id`: `None` when the URL
    /// is not http(s), when there is no Worker to ask (a control server on its own), and when
    /// no forge is configured for the rig or its town.
    pub async fn credential(
        &self,
        worker: &WorkerAccess<'_>,
        town_id: Option<&str>,
        rig_id: &str,
        git_url: &str,
    ) -> Result<Option<GitCredential>, String> {
        if shared_types::validate::http_host(git_url).is_none() {
            return Ok(None);
        }
        let (Some(api_url), Some(town_id)) = (worker.api_url, town_id) else { return Ok(None) };
        let key = (town_id.to_string(), rig_id.to_string(), git_url.to_string());
        if let Some((at, cred)) = self.lock().get(&key) {
            if at.elapsed() < REUSE {
                return Ok(Some(cred.clone()));
            }
        }
        let url = format!("{api_url}/api/towns/{town_id}/container/rigs/{rig_id}/forge-token");
        let mut req = worker.http.post(url).timeout(Duration::from_secs(30));
        if let Some(token) = worker.container_token {
            req = req.header(TOKEN_HEADER, token);
        }
        let res = req.send().await.map_err(|e| {
            format!(
                "cannot ask the Worker for the rig's forge token: {}",
                crate::tools::forward::request_failure(&e)
            )
        })?;
        let status = res.status().as_u16();
        if status == 404 {
            self.lock().remove(&key);
            return Ok(None);
        }
        let envelope: serde_json::Value = res.json().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let error = envelope["error"].as_str().unwrap_or("no reason given");
            return Err(format!("the Worker gave no forge token (HTTP {status}): {error}"));
        }
        let issued: Issued = serde_json::from_value(envelope["data"].clone())
            .map_err(|_| "the Worker's forge token answer is malformed".to_string())?;
        let Some(cred) = GitCredential::new(&issued.kind, issued.token, git_url) else {
            return Ok(None);
        };
        self.lock().insert(key, (Instant::now(), cred.clone()));
        Ok(Some(cred))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
