//! The forges' webhooks for a town: `POST /api/webhooks/github/:townId`, signed with the
//! `webhook_secret` of the town's forge (or of one of its rigs'), and
//! `POST /api/webhooks/gitlab/:townId`, carrying that secret as its token.
//!
//! A webhook is a nudge, not a state: payloads arrive late, twice or out of order, so a
//! delivery about a pull request (merge request), its reviews, notes or checks (pipelines)
//! only makes the rigs of that repository read their running pull request at their next pass
//! (`PullRequestChanged`), and that read decides. The proof is checked in constant time before
//! anything else: GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the raw body), GitLab's
//! `X-Gitlab-Token` (the secret itself); a bad one is a 401 and changes nothing. A delivery id
//! seen before (`X-GitHub-Delivery`; GitLab's `Idempotency-Key`, kept across its retries, or
//! `X-Gitlab-Event-UUID`) is answered without acting again.

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

pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/webhooks/github/:townId", Rule::Public, github),
    Endpoint::post("/api/webhooks/gitlab/:townId", Rule::Public, gitlab),
];

/// Deliveries remembered for this long (GitHub redelivers within hours).
const KEEP_DELIVERIES_MS: i64 = 24 * 3600 * 1000;
/// Longest payload taken (GitHub caps them at 25 MB; ours are about pull requests).
const MAX_PAYLOAD: usize = 1024 * 1024;
/// GitHub's events that say something about a pull request, its reviews or its checks.
const GITHUB_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "check_run",
    "check_suite",
    "status",
];
/// GitLab's: the merge request (approvals included), its notes, its pipelines.
const GITLAB_EVENTS: &[&str] = &["Merge Request Hook", "Note Hook", "Pipeline Hook"];

pub const MIGRATION: &[&str] =
    &["CREATE TABLE webhook_deliveries (id TEXT PRIMARY KEY, received_ms INTEGER NOT NULL)"];

fn github(req: &Incoming) -> ApiResult<Plan> {
    let header = |name: &str| (req.header)(name).unwrap_or_default();
    let op = Webhook {
        forge: HookForge::GitHub,
        event: header("x-github-event"),
        delivery: header("x-github-delivery"),
        proof: header("x-hub-signature-256"),
        body: payload(req)?,
    };
    api::town(req.param("townId")?, &op, 200)
}

fn gitlab(req: &Incoming) -> ApiResult<Plan> {
    let header = |name: &str| (req.header)(name).unwrap_or_default();
    let delivery = Some(header("idempotency-key"))
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| header("x-gitlab-event-uuid"));
    let op = Webhook {
        forge: HookForge::GitLab,
        event: header("x-gitlab-event"),
        delivery,
        proof: header("x-gitlab-token"),
        body: payload(req)?,
    };
    api::town(req.param("townId")?, &op, 200)
}

fn payload(req: &Incoming) -> ApiResult<String> {
    if req.body.len() > MAX_PAYLOAD {
        return Err(ApiError::bad_request(format!("payload: at most {MAX_PAYLOAD} bytes")));
    }
    std::str::from_utf8(req.body)
        .map(str::to_string)
        .map_err(|_| ApiError::bad_request("payload: not UTF-8 JSON"))
}

/// Which forge sent a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookForge {
    GitHub,
    GitLab,
}

/// One delivery, as received: its event, its id, its proof (GitHub's signature, GitLab's
/// token) and its raw body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub forge: HookForge,
    pub event: String,
    pub delivery: String,
    pub proof: String,
    pub body: String,
}

impl Webhook {
    /// Whether the delivery proves it knows `secret`.
    fn proven_by(&self, secret: &str) -> bool {
        match self.forge {
            HookForge::GitHub => signed_by(secret, self.body.as_bytes(), &self.proof),
            HookForge::GitLab => same_secret(secret, &self.proof),
        }
    }

    /// What a bad proof is answered with.
    fn refusal(&self) -> &'static str {
        match self.forge {
            HookForge::GitHub => "X-Hub-Signature-256 does not match the town's webhook secret",
            HookForge::GitLab => "X-Gitlab-Token is not the town's webhook secret",
        }
    }

    fn about_pull_requests(&self) -> bool {
        let events = match self.forge {
            HookForge::GitHub => GITHUB_EVENTS,
            HookForge::GitLab => GITLAB_EVENTS,
        };
        events.contains(&self.event.as_str())
    }

    /// Whether the payload is about `repo`: GitHub names it `owner/name`, GitLab by its whole
    /// project path.
    fn names(&self, payload: &Value, repo: &Repo) -> bool {
        match self.forge {
            HookForge::GitHub => payload["repository"]["full_name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(&format!("{}/{}", repo.owner, repo.name))),
            HookForge::GitLab => payload["project"]["path_with_namespace"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(&repo.path)),
        }
    }
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

/// Whether `given` is `secret`, compared in constant time (a MAC of each under one key, so
/// neither their bytes nor their lengths show in the time taken).
fn same_secret(secret: &str, given: &str) -> bool {
    let mac = |v: &str| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"gastown webhook token").ok()?;
        m.update(v.as_bytes());
        Some(m)
    };
    match (mac(secret), mac(given)) {
        (Some(a), Some(b)) => b.verify_slice(&a.finalize().into_bytes()).is_ok(),
        _ => false,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

impl TownOp for Webhook {
    const NAME: &'static str = "forge_webhook";
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
            .filter_map(|r| crate::json::from_text::<Secrets>(&r.secrets).ok()?.webhook_secret)
            .collect();
        if !secrets.iter().any(|s| self.proven_by(s)) {
            return Err(ApiError::Unauthorized(self.refusal().into()));
        }
        if !self.about_pull_requests() {
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
        let payload: Value = crate::json::parse(&self.body)
            .map_err(|_| ApiError::bad_request("payload: not JSON"))?;
        let mut nudged = Vec::new();
        for rig in o.with_town(|t| t.rigs())? {
            if !Repo::of(&rig.git_url).is_some_and(|repo| self.names(&payload, &repo)) {
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

town_ops!(Webhook);

#[cfg(test)]
mod tests;
