//! GitHub's webhooks for a town: `POST /api/webhooks/github/:townId`, signed with the
//! `webhook_secret` of the town's forge (or of one of its rigs').
//!
//! A webhook is a nudge, not a state: payloads arrive late, twice or out of order, so a
//! delivery about a pull request, its reviews or its checks only makes the rigs of that
//! repository read their running pull request at their next pass (`PullRequestChanged`), and
//! that read decides. The signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body) is
//! checked in constant time before anything else; a bad one is a 401 and changes nothing. A
//! delivery id (`X-GitHub-Delivery`) seen before is answered without acting again.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use super::pulls::Repo;
use crate::api::{self, Incoming, Plan};
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::rig::review::PullRequestChanged;
use crate::routes::{Endpoint, Rule};
use crate::town::object::TownObject;
use crate::town::op::{town_ops, TownOp};

pub const ROUTES: &[Endpoint] =
    &[Endpoint::post("/api/webhooks/github/:townId", Rule::Public, github)];

/// Deliveries remembered for this long (GitHub redelivers within hours).
const KEEP_DELIVERIES_MS: i64 = 24 * 3600 * 1000;
/// Longest payload taken (GitHub caps them at 25 MB; ours are about pull requests).
const MAX_PAYLOAD: usize = 1024 * 1024;
/// The events that say something about a pull request, its reviews or its checks.
const PULL_REQUEST_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "check_run",
    "check_suite",
    "status",
];

pub const MIGRATION: &[&str] =
    &["CREATE TABLE webhook_deliveries (id TEXT PRIMARY KEY, received_ms INTEGER NOT NULL)"];

fn github(req: &Incoming) -> ApiResult<Plan> {
    let header = |name: &str| (req.header)(name).unwrap_or_default();
    if req.body.len() > MAX_PAYLOAD {
        return Err(ApiError::bad_request(format!("payload: at most {MAX_PAYLOAD} bytes")));
    }
    let body = std::str::from_utf8(req.body)
        .map_err(|_| ApiError::bad_request("payload: not UTF-8 JSON"))?
        .to_string();
    let op = GithubWebhook {
        event: header("x-github-event"),
        delivery: header("x-github-delivery"),
        signature: header("x-hub-signature-256"),
        body,
    };
    api::town(req.param("townId")?, &op, 200)
}

/// One delivery, as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GithubWebhook {
    pub event: String,
    pub delivery: String,
    pub signature: String,
    pub body: String,
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`, compared
/// in constant time.
pub fn signed_by(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else { return false };
    let Some(expected) = decode_hex(hex) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

impl TownOp for GithubWebhook {
    const NAME: &'static str = "github_webhook";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        #[derive(Deserialize)]
        struct Secrets {
            webhook_secret: Option<String>,
        }
        #[derive(Deserialize)]
        struct Row {
            secrets: String,
        }
        let rows: Vec<Row> = o.db.query("SELECT secrets FROM forge", vec![])?;
        let secrets: Vec<String> = rows
            .iter()
            .filter_map(|r| serde_json::from_str::<Secrets>(&r.secrets).ok()?.webhook_secret)
            .collect();
        if !secrets.iter().any(|s| signed_by(s, self.body.as_bytes(), &self.signature)) {
            return Err(ApiError::Unauthorized(
                "X-Hub-Signature-256 does not match the town's webhook secret".into(),
            ));
        }
        if !PULL_REQUEST_EVENTS.contains(&self.event.as_str()) {
            return Ok(json!({ "ignored": format!("event '{}'", self.event) }));
        }
        let now = o.fx.now_ms();
        if !self.delivery.is_empty() {
            o.db.exec(
                "DELETE FROM webhook_deliveries WHERE received_ms < ?",
                params![now - KEEP_DELIVERIES_MS],
            )?;
            let new = o.db.exec(
                "INSERT OR IGNORE INTO webhook_deliveries (id, received_ms) VALUES (?, ?)",
                params![&self.delivery, now],
            )?;
            if new == 0 {
                return Ok(json!({ "duplicate": self.delivery }));
            }
        }
        let payload: Value = serde_json::from_str(&self.body)
            .map_err(|_| ApiError::bad_request("payload: not JSON"))?;
        let repository = payload["repository"]["full_name"].as_str().unwrap_or("");
        let mut nudged = Vec::new();
        for rig in o.with_town(|t| t.rigs())? {
            let Some(repo) = Repo::of(&rig.git_url) else { continue };
            if !format!("{}/{}", repo.owner, repo.name).eq_ignore_ascii_case(repository) {
                continue;
            }
            match crate::effects::rig_op(o.fx, &rig.id, &PullRequestChanged).await {
                Ok(Value::Bool(true)) => nudged.push(rig.id),
                Ok(_) => {}
                Err(e) => o.fx.log_error(&format!("webhook: rig {} not told: {e}", rig.id)),
            }
        }
        Ok(json!({ "rigs": nudged }))
    }
}

town_ops!(GithubWebhook);

#[cfg(test)]
mod tests;
