//! Forge credentials, kept in the Worker: per town, with an optional override per rig. The
//! TownDO stores them; they are write-only: reading a forge shows its kind, API URL, whether
//! it is configured, the token's expiry and the last error, never a secret. Nothing here is
//! logged or answered with a secret in it ([`Secret`]'s `Debug` is redacted).
//!
//! Kinds: a GitHub App (`app_id`, `installation_id` and its PEM private key: the Worker signs
//! the app JWT and exchanges it for installation tokens), a GitHub token, or a GitLab token.
//! `api_url` defaults to the forge's public API; it must be https (http to a loopback host
//! only under `ALLOW_LOCAL_REPOS`, for local development and the tests).
//!
//! A GitHub App's credentials are tried when they are stored: an installation token is minted
//! at once ([`app`]), so a wrong key, app or installation shows as the forge's `last_error`
//! rather than at the first push. [`ForgeToken`] gives the token to push or call the API with
//! (a GitHub App's is refreshed when less than five minutes are left).

pub(crate) mod app;
mod github;
mod gitlab;
pub mod pulls;
pub mod rest;
pub mod webhooks;

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{self, Incoming, Plan};
use crate::body::{Kind, NON_EMPTY, STR};
use crate::db::Db;
use crate::effects::Effects;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::requests::{parse_value, Issues, Shape, Validate};
use crate::routes::{Endpoint, Rule};
use crate::town::object::TownObject;
use crate::town::op::{town_ops, TownOp};

/// The TownDO's forge table: one row per scope (`town`, or `rig:<id>`).
pub const MIGRATION: &[&str] = &["CREATE TABLE forge (scope TEXT PRIMARY KEY, kind TEXT NOT NULL,
        api_url TEXT NOT NULL, secrets TEXT NOT NULL, updated_at TEXT NOT NULL,
        cached_token TEXT, token_expires_at TEXT, last_error TEXT)"];

pub const ROUTES: &[Endpoint] = &[
    Endpoint::put("/api/towns/:townId/forge", Rule::Internal, put_town),
    Endpoint::get("/api/towns/:townId/forge", Rule::Internal, get_town),
    Endpoint::delete("/api/towns/:townId/forge", Rule::Internal, delete_town),
    Endpoint::put("/api/towns/:townId/rigs/:rigId/forge", Rule::Internal, put_rig),
    Endpoint::get("/api/towns/:townId/rigs/:rigId/forge", Rule::Internal, get_rig),
    Endpoint::delete("/api/towns/:townId/rigs/:rigId/forge", Rule::Internal, delete_rig),
    // The control server's pushes and fetches for a rig: the token, minted when it must be.
    Endpoint::post(
        "/api/towns/:townId/container/rigs/:rigId/forge-token",
        Rule::Container,
        token_for_container,
    ),
];

fn input(req: &Incoming) -> ApiResult<ForgeInput> {
    let mut forge: ForgeInput = parse_value(req.body, ForgeInput::FIELDS)?;
    forge.allow_local = req.allow_local_repos;
    forge.validate()?;
    Ok(forge)
}

fn put_town(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &PutForge { rig_id: None, forge: input(req)? }, 200)
}

fn get_town(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &GetForge { rig_id: None }, 200)
}

fn delete_town(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &DeleteForge { rig_id: None }, 200)
}

fn put_rig(req: &Incoming) -> ApiResult<Plan> {
    let op = PutForge { rig_id: Some(req.param("rigId")?), forge: input(req)? };
    api::town(req.param("townId")?, &op, 200)
}

fn get_rig(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &GetForge { rig_id: Some(req.param("rigId")?) }, 200)
}

fn delete_rig(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &DeleteForge { rig_id: Some(req.param("rigId")?) }, 200)
}

fn token_for_container(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &ForgeToken { rig_id: req.param("rigId")? }, 200)
}

/// A secret value: serialized as is (it must reach the TownDO), never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgeKind {
    GithubApp,
    Token,
    Gitlab,
}

impl ForgeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::GithubApp => "github_app",
            Self::Token => "token",
            Self::Gitlab => "gitlab",
        }
    }

    fn default_api_url(self) -> &'static str {
        match self {
            Self::GithubApp | Self::Token => "https://api.github.com",
            Self::Gitlab => "https://gitlab.com/api/v4",
        }
    }
}

request_body! {
    /// `PUT …/forge`
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ForgeInput {
        pub kind: ForgeKind = req(Kind::Enum(&["github_app", "token", "gitlab"])),
        pub api_url: Option<String> = opt(STR),
        pub app_id: Option<u64>,
        pub installation_id: Option<u64>,
        pub private_key: Option<Secret> = opt(NON_EMPTY),
        pub token: Option<Secret> = opt(NON_EMPTY),
        pub webhook_secret: Option<Secret> = opt(NON_EMPTY),
        /// Set by the Worker from its `ALLOW_LOCAL_REPOS` var, never read from the client.
        #[serde(skip_deserializing, default)]
        pub allow_local: bool,
    }
}

/// Longest token or webhook secret, and longest PEM key, in bytes.
const MAX_TOKEN: usize = 1024;
const MAX_PEM: usize = 16 * 1024;

impl Validate for ForgeInput {
    fn check(&self, i: &mut Issues) {
        if let Some(url) = &self.api_url {
            i.add("api_url", api_url(url, self.allow_local));
        }
        match self.kind {
            ForgeKind::GithubApp => {
                let need =
                    |v: bool| if v { Ok(()) } else { Err("required for a github_app".into()) };
                i.add("app_id", need(self.app_id.is_some_and(|v| v > 0)));
                i.add("installation_id", need(self.installation_id.is_some_and(|v| v > 0)));
                match &self.private_key {
                    Some(key) => i.add("private_key", pem(&key.0)),
                    None => i.add("private_key", need(false)),
                }
                if self.token.is_some() {
                    i.add("token", Err("is not taken for a github_app: it makes its own".into()));
                }
            }
            ForgeKind::Token | ForgeKind::Gitlab => {
                match &self.token {
                    Some(t) => i.add("token", token(&t.0)),
                    None => i.add("token", Err(format!("required for {}", self.kind.as_str()))),
                }
                for (field, set) in [
                    ("app_id", self.app_id.is_some()),
                    ("installation_id", self.installation_id.is_some()),
                    ("private_key", self.private_key.is_some()),
                ] {
                    if set {
                        i.add(field, Err("is only taken for a github_app".into()));
                    }
                }
            }
        }
        if let Some(s) = &self.webhook_secret {
            i.add("webhook_secret", token(&s.0));
        }
    }
}

/// A forge API URL: https with a host, or (local development) http to a loopback host.
fn api_url(url: &str, allow_local: bool) -> Result<(), String> {
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL of at most 2048 characters, without whitespace".into());
    }
    let (scheme, rest) = url.split_once("://").ok_or("must be an https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not hold credentials: they go in the token fields".into());
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host.is_empty() {
        return Err("has no host".into());
    }
    match scheme {
        "https" => Ok(()),
        "http" if allow_local && matches!(host, "127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        "http" if allow_local => Err("http:// is only allowed to a loopback host".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

fn token(t: &str) -> Result<(), String> {
    if t.len() > MAX_TOKEN || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must be at most {MAX_TOKEN} characters, without whitespace"));
    }
    Ok(())
}

/// A PEM private key: one `-----BEGIN … PRIVATE KEY-----` block of base64 that decodes to a
/// DER sequence. (The key itself is read when the first app JWT is signed.)
fn pem(key: &str) -> Result<(), String> {
    use base64::Engine;
    let bad = || "must be a PEM private key (-----BEGIN RSA PRIVATE KEY----- …)".to_string();
    if key.len() > MAX_PEM {
        return Err(format!("must be at most {MAX_PEM} bytes"));
    }
    let key = key.trim();
    let label = key
        .strip_prefix("-----BEGIN ")
        .and_then(|r| r.split_once("-----"))
        .map(|(label, _)| label)
        .filter(|l| l.ends_with("PRIVATE KEY"))
        .ok_or_else(bad)?;
    let body = key
        .strip_prefix(&format!("-----BEGIN {label}-----"))
        .and_then(|r| r.strip_suffix(&format!("-----END {label}-----")))
        .ok_or_else(bad)?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
    // A DER SEQUENCE, and long enough to hold an RSA key of 1024 bits or more.
    if der.first() != Some(&0x30) || der.len() < 128 {
        return Err(bad());
    }
    Ok(())
}

/// A `git_url` with credentials in it (`https://user:token@host/…`) is refused: credentials
/// belong to the town's forge, where no agent can read them.
pub fn no_credentials_in(git_url: &str) -> Result<(), String> {
    let held = match git_url.split_once("://") {
        Some(("https" | "http", rest)) => rest.split('/').next().unwrap_or_default().contains('@'),
        Some(("ssh", rest)) => rest
            .split('/')
            .next()
            .unwrap_or_default()
            .split_once('@')
            .is_some_and(|(u, _)| u.contains(':')),
        _ => false,
    };
    if held {
        return Err(
            "must not hold credentials: configure the town's forge instead (PUT /api/towns/:townId/forge)"
                .into(),
        );
    }
    Ok(())
}

fn scope(rig_id: &Option<String>) -> String {
    rig_id.as_ref().map_or_else(|| "town".to_string(), |r| format!("rig:{r}"))
}

/// What a forge shows: never a secret.
fn shown(row: Option<ForgeRow>, scope: &str) -> Value {
    match row {
        None => json!({ "scope": scope, "configured": false }),
        Some(r) => json!({
            "scope": scope, "configured": true, "kind": r.kind, "api_url": r.api_url,
            "updated_at": r.updated_at, "token_expires_at": r.token_expires_at,
            "last_error": r.last_error,
        }),
    }
}

#[derive(Deserialize)]
struct ForgeRow {
    kind: String,
    api_url: String,
    updated_at: String,
    token_expires_at: Option<String>,
    last_error: Option<String>,
}

fn read<D: Db>(db: &D, scope: &str) -> ApiResult<Option<ForgeRow>> {
    db.first(
        "SELECT kind, api_url, updated_at, token_expires_at, last_error FROM forge WHERE scope = ?",
        params![scope],
    )
}

/// The scope a forge op acts on, once the town exists and a rig override names one of its
/// rigs.
fn checked_scope<D: Db, E: Effects>(
    o: &TownObject<'_, D, E>,
    rig_id: &Option<String>,
) -> ApiResult<String> {
    o.with_town(|t| t.get())?;
    if let Some(rig_id) = rig_id {
        if !o.with_town(|t| t.rigs())?.iter().any(|r| &r.id == rig_id) {
            return Err(ApiError::not_found("rig"));
        }
    }
    Ok(scope(rig_id))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutForge {
    pub rig_id: Option<String>,
    pub forge: ForgeInput,
}

impl TownOp for PutForge {
    const NAME: &'static str = "put_forge";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let scope = checked_scope(o, &self.rig_id)?;
        let f = self.forge;
        let api_url = f.api_url.clone().unwrap_or_else(|| f.kind.default_api_url().to_string());
        let secrets = json!({
            "app_id": f.app_id, "installation_id": f.installation_id,
            "private_key": f.private_key.map(|s| s.0), "token": f.token.map(|s| s.0),
            "webhook_secret": f.webhook_secret.map(|s| s.0),
        });
        // A new credential starts clean: no token of the old one, no error of the old one.
        o.db.exec(
            "INSERT OR REPLACE INTO forge (scope, kind, api_url, secrets, updated_at, cached_token, token_expires_at, last_error)
             VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL)",
            params![&scope, f.kind.as_str(), &api_url, secrets.to_string(), o.fx.now_iso()],
        )?;
        if f.kind == ForgeKind::GithubApp {
            // Tried now: the answer already says whether the app's credentials work.
            let _ = token_of(o, &scope).await;
        }
        Ok(shown(read(o.db, &scope)?, &scope))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetForge {
    pub rig_id: Option<String>,
}

impl TownOp for GetForge {
    const NAME: &'static str = "get_forge";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let scope = checked_scope(o, &self.rig_id)?;
        Ok(shown(read(o.db, &scope)?, &scope))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteForge {
    pub rig_id: Option<String>,
}

impl TownOp for DeleteForge {
    const NAME: &'static str = "delete_forge";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let scope = checked_scope(o, &self.rig_id)?;
        o.db.exec("DELETE FROM forge WHERE scope = ?", params![&scope])?;
        Ok(shown(None, &scope))
    }
}

/// The token to push or call the forge with, for a rig (its own credentials, else its
/// town's): `{kind, api_url, token, expires_at}`. Only the container may ask (its token), for
/// the git processes it runs for the rig's agents and refinery; no agent ever holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgeToken {
    pub rig_id: String,
}

impl TownOp for ForgeToken {
    const NAME: &'static str = "forge_token";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        let own = checked_scope(o, &Some(self.rig_id))?;
        for candidate in [own, scope(&None)] {
            if let Some(issued) = token_of(o, &candidate).await.map_err(ApiError::Unavailable)? {
                return Ok(json!({
                    "kind": issued.kind, "api_url": issued.api_url, "token": issued.token.0,
                    "expires_at": issued.expires_at,
                }));
            }
        }
        Err(ApiError::NotFound("no forge is configured for this rig or its town".into()))
    }
}

/// A scope's token, with what the caller needs to use it.
struct Issued {
    kind: String,
    api_url: String,
    token: Secret,
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Stored {
    kind: String,
    api_url: String,
    secrets: String,
    cached_token: Option<String>,
    token_expires_at: Option<String>,
}

#[derive(Deserialize)]
struct StoredSecrets {
    app_id: Option<u64>,
    installation_id: Option<u64>,
    private_key: Option<String>,
    token: Option<String>,
}

/// The scope's token (`None`: no forge is configured for it): a token forge's own; a GitHub
/// App's cached one while it has time left, else a new one (kept, with its expiry; a failure
/// is kept as the forge's `last_error`).
async fn token_of<D: Db, E: Effects>(
    o: &TownObject<'_, D, E>,
    scope: &str,
) -> Result<Option<Issued>, String> {
    let stored: Option<Stored> = o
        .db
        .first(
            "SELECT kind, api_url, secrets, cached_token, token_expires_at FROM forge WHERE scope = ?",
            params![scope],
        )
        .map_err(|e| e.public_message().to_string())?;
    let Some(stored) = stored else { return Ok(None) };
    let secrets: StoredSecrets = crate::json::from_text(&stored.secrets)
        .map_err(|_| "the stored credentials are unreadable")?;
    let issued = |token: String, expires_at: Option<String>| Issued {
        kind: stored.kind.clone(),
        api_url: stored.api_url.clone(),
        token: Secret(token),
        expires_at,
    };
    if stored.kind != ForgeKind::GithubApp.as_str() {
        return secrets
            .token
            .map(|t| Some(issued(t, None)))
            .ok_or_else(|| "no token is stored".into());
    }
    if let Some(cached) = stored
        .cached_token
        .clone()
        .filter(|_| !app::needs_refresh(stored.token_expires_at.as_deref(), o.fx.now_ms()))
    {
        return Ok(Some(issued(cached, stored.token_expires_at.clone())));
    }
    let (Some(app_id), Some(installation_id), Some(pem)) =
        (secrets.app_id, secrets.installation_id, secrets.private_key)
    else {
        return Err("the app's credentials are incomplete".into());
    };
    let minted =
        app::installation_token(o.fx, &stored.api_url, app_id, installation_id, &pem).await;
    let kept = match &minted {
        Ok(t) => o.db.exec(
            "UPDATE forge SET cached_token = ?, token_expires_at = ?, last_error = NULL WHERE scope = ?",
            params![&t.token, &t.expires_at, scope],
        ),
        Err(e) => o.db.exec("UPDATE forge SET last_error = ? WHERE scope = ?", params![e, scope]),
    };
    kept.map_err(|e| e.public_message().to_string())?;
    minted.map(|t| Some(issued(t.token, Some(t.expires_at))))
}

town_ops!(PutForge, GetForge, DeleteForge, ForgeToken);

#[cfg(test)]
mod tests;
