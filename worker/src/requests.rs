//! Request bodies and query filters of the HTTP API, and their validation.
//!
//! Each body is first checked against its route's schema ([`Validate::FIELDS`], zod-shaped
//! issues as the reference reports them, see [`crate::body`]), then parsed (serde), then
//! [`Validate`] checks our own sizes and formats. All of it happens in the Worker before any
//! Durable Object is called, so bad input changes nothing; every failure is a 400
//! `Invalid request body` with the list of issues. SQL-looking strings need no special case: every value reaches SQLite as a
//! bound parameter.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_types::validate;

use crate::body::{self, opt, req, Field, Kind, NON_EMPTY, STR};
use crate::error::{ApiError, ApiResult};
use crate::model::{AgentRole, AgentStatus, BeadStatus, BeadType, Priority, ReviewStatus};

/// Largest request body the Worker reads.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
pub const MAX_TITLE: usize = 500;
pub const MAX_TEXT: usize = 64 * 1024;
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL: usize = 64;
pub const MAX_METADATA: usize = 16 * 1024;
pub const MAX_CHECKPOINT: usize = 256 * 1024;
pub const MAX_URL: usize = 2048;
pub const MAX_IDENTITY: usize = 256;
pub const DEFAULT_LIMIT: u32 = 50;
/// The bead list's default page (the reference's).
pub const DEFAULT_BEAD_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

pub trait Validate {
    /// The body's shape, as the reference's zod schema has it (checked before parsing). Our own
    /// routes leave it empty: serde's message then describes a wrong shape.
    const FIELDS: &'static [Field] = &[];

    /// Adds every problem to `issues`, so a client can fix them all at once.
    fn check(&self, issues: &mut Issues);

    fn validate(&self) -> ApiResult<()> {
        let mut issues = Issues::default();
        self.check(&mut issues);
        issues.into_result()
    }
}

/// Collected validation problems (shared-types' collector), reported as `custom` issues of a
/// 400 `Invalid request body`.
#[derive(Default)]
pub struct Issues(validate::Issues);

impl Issues {
    pub fn add(&mut self, field: &str, result: Result<(), String>) {
        self.0.check(field, result);
    }

    pub fn into_result(self) -> ApiResult<()> {
        self.0.into_result().map_err(|issues| {
            ApiError::InvalidBody(
                issues.iter().map(|i| body::custom(body::path_of(&i.field), &i.message)).collect(),
            )
        })
    }
}

/// Parses a JSON object body into `T`: the size limit, then `fields` (zod-shaped issues), then
/// serde (its message as a `custom` issue).
pub fn parse_value<T: serde::de::DeserializeOwned>(raw: &[u8], fields: &[Field]) -> ApiResult<T> {
    if raw.len() > MAX_BODY_BYTES {
        return Err(ApiError::invalid_body(format!(
            "request body must be at most {MAX_BODY_BYTES} bytes"
        )));
    }
    let map = body::check(raw, fields).map_err(ApiError::InvalidBody)?;
    Ok(serde_json::from_value(Value::Object(map))?)
}

/// Parses a JSON body into `T` and validates it.
pub fn parse_body<T: serde::de::DeserializeOwned + Validate>(raw: &[u8]) -> ApiResult<T> {
    let value: T = parse_value(raw, T::FIELDS)?;
    value.validate()?;
    Ok(value)
}

const BEAD_TYPES: Kind = Kind::Enum(&["issue", "message", "escalation", "merge_request"]);
pub(crate) const PRIORITIES: Kind = Kind::Enum(&["low", "medium", "high", "critical"]);
/// `failed` is ours (the reference has open, in_progress, closed).
const BEAD_STATUSES: Kind = Kind::Enum(&["open", "in_progress", "closed", "failed"]);
const ROLES: Kind = Kind::Enum(&["polecat", "refinery", "mayor", "witness"]);

pub fn text(value: &str, max: usize) -> Result<(), String> {
    validate::text(value, max, false)
}

fn opt_text(value: &Option<String>, max: usize) -> Result<(), String> {
    value.as_deref().map_or(Ok(()), |v| validate::text(v, max, true))
}

fn opt_id(value: &Option<String>) -> Result<(), String> {
    value.as_deref().map_or(Ok(()), validate::id)
}

fn labels(value: &Option<Vec<String>>) -> Result<(), String> {
    let Some(labels) = value else { return Ok(()) };
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    labels.iter().try_for_each(|l| text(l, MAX_LABEL))
}

/// Metadata is a JSON object of bounded size (it is stored as text and returned as is).
fn metadata(value: &Option<Value>) -> Result<(), String> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(v @ Value::Object(_)) => json_size(v, MAX_METADATA),
        Some(_) => Err("must be a JSON object".into()),
    }
}

fn json_size(v: &Value, max: usize) -> Result<(), String> {
    let len = serde_json::to_string(v).map(|s| s.len()).unwrap_or(usize::MAX);
    if len > max {
        return Err(format!("must be at most {max} bytes of JSON"));
    }
    Ok(())
}

/// An optional http(s) URL; an empty string counts as absent (tool plugins send `""`).
fn url(value: &Option<String>) -> Result<(), String> {
    let Some(u) = value.as_deref().filter(|u| !u.is_empty()) else { return Ok(()) };
    if u.len() > MAX_URL || !(u.starts_with("https://") || u.starts_with("http://")) {
        return Err(format!("must be an http(s) URL of at most {MAX_URL} characters"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    Ok(())
}

/// `POST /api/rigs/:rigId/beads`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBead {
    #[serde(rename = "type")]
    pub bead_type: BeadType,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub assignee_agent_id: Option<String>,
    #[serde(default)]
    pub convoy_id: Option<String>,
}

impl Validate for NewBead {
    const FIELDS: &'static [Field] = &[
        req("type", BEAD_TYPES),
        req("title", NON_EMPTY),
        opt("body", STR),
        opt("priority", PRIORITIES),
        opt("labels", Kind::StrArray),
        opt("metadata", Kind::Record),
        opt("assignee_agent_id", STR),
        opt("convoy_id", STR),
    ];

    fn check(&self, i: &mut Issues) {
        i.add("title", text(&self.title, MAX_TITLE));
        i.add("body", opt_text(&self.body, MAX_TEXT));
        i.add("labels", labels(&self.labels));
        i.add("metadata", metadata(&self.metadata));
        i.add("assignee_agent_id", opt_id(&self.assignee_agent_id));
        i.add("convoy_id", opt_id(&self.convoy_id));
    }
}

/// `PATCH /api/rigs/:rigId/beads/:beadId/status`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub status: BeadStatus,
    pub agent_id: String,
}

impl Validate for StatusUpdate {
    const FIELDS: &'static [Field] = &[req("status", BEAD_STATUSES), req("agent_id", NON_EMPTY)];

    fn check(&self, i: &mut Issues) {
        i.add("agent_id", validate::id(&self.agent_id));
    }
}

/// `POST /api/rigs/:rigId/beads/:beadId/close`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseBead {
    pub agent_id: String,
}

impl Validate for CloseBead {
    const FIELDS: &'static [Field] = &[req("agent_id", NON_EMPTY)];

    fn check(&self, i: &mut Issues) {
        i.add("agent_id", validate::id(&self.agent_id));
    }
}

/// `POST /api/rigs/:rigId/agents`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAgent {
    pub role: AgentRole,
    pub name: String,
    pub identity: String,
}

impl Validate for NewAgent {
    const FIELDS: &'static [Field] =
        &[req("role", ROLES), req("name", NON_EMPTY), req("identity", NON_EMPTY)];

    fn check(&self, i: &mut Issues) {
        i.add("name", validate::agent_name(&self.name));
        i.add("identity", text(&self.identity, MAX_IDENTITY));
    }
}

/// `POST /api/rigs/:rigId/agents/:agentId/hook`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRequest {
    pub bead_id: String,
}

impl Validate for HookRequest {
    const FIELDS: &'static [Field] = &[req("bead_id", NON_EMPTY)];

    fn check(&self, i: &mut Issues) {
        i.add("bead_id", validate::id(&self.bead_id));
    }
}

/// `POST /api/rigs/:rigId/agents/:agentId/done`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneRequest {
    pub branch: String,
    #[serde(default)]
    pub pr_url: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
}

impl Validate for DoneRequest {
    const FIELDS: &'static [Field] =
        &[req("branch", NON_EMPTY), opt("pr_url", STR), opt("summary", STR)];

    fn check(&self, i: &mut Issues) {
        i.add("branch", validate::branch(&self.branch));
        i.add("pr_url", url(&self.pr_url));
        i.add("summary", opt_text(&self.summary, MAX_TEXT));
    }
}

/// `POST /api/rigs/:rigId/agents/:agentId/checkpoint`: any JSON value, bounded; `{}` stores
/// `null` (as the reference).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    #[serde(default)]
    pub data: Value,
}

impl Validate for CheckpointRequest {
    const FIELDS: &'static [Field] = &[opt("data", Kind::Any)];

    fn check(&self, i: &mut Issues) {
        i.add("data", json_size(&self.data, MAX_CHECKPOINT));
    }
}

/// `POST /api/rigs/:rigId/mail`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMail {
    pub from_agent_id: String,
    pub to_agent_id: String,
    pub subject: String,
    pub body: String,
}

impl Validate for NewMail {
    const FIELDS: &'static [Field] = &[
        req("from_agent_id", NON_EMPTY),
        req("to_agent_id", NON_EMPTY),
        req("subject", NON_EMPTY),
        req("body", NON_EMPTY),
    ];

    fn check(&self, i: &mut Issues) {
        i.add("from_agent_id", validate::id(&self.from_agent_id));
        i.add("to_agent_id", validate::id(&self.to_agent_id));
        i.add("subject", text(&self.subject, MAX_TITLE));
        i.add("body", validate::text(&self.body, MAX_TEXT, true));
    }
}

/// `POST /api/rigs/:rigId/review-queue`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReview {
    pub agent_id: String,
    pub bead_id: String,
    pub branch: String,
    #[serde(default)]
    pub pr_url: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
}

impl Validate for NewReview {
    const FIELDS: &'static [Field] = &[
        req("agent_id", NON_EMPTY),
        req("bead_id", NON_EMPTY),
        req("branch", NON_EMPTY),
        opt("pr_url", STR),
        opt("summary", STR),
    ];

    fn check(&self, i: &mut Issues) {
        i.add("agent_id", validate::id(&self.agent_id));
        i.add("bead_id", validate::id(&self.bead_id));
        i.add("branch", validate::branch(&self.branch));
        i.add("pr_url", url(&self.pr_url));
        i.add("summary", opt_text(&self.summary, MAX_TEXT));
    }
}

/// `POST /api/rigs/:rigId/escalations` and `POST /api/towns/:townId/escalations`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEscalation {
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl Validate for NewEscalation {
    const FIELDS: &'static [Field] = &[
        req("title", NON_EMPTY),
        opt("body", STR),
        opt("priority", PRIORITIES),
        opt("metadata", Kind::Record),
    ];

    fn check(&self, i: &mut Issues) {
        i.add("title", text(&self.title, MAX_TITLE));
        i.add("body", opt_text(&self.body, MAX_TEXT));
        i.add("metadata", metadata(&self.metadata));
    }
}

/// `POST /api/rigs/:rigId/sling` (internal): a bead for the next idle polecat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlingRequest {
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub convoy_id: Option<String>,
}

impl SlingRequest {
    /// The bead sling creates: an `issue`, hooked (and so assigned) by sling itself.
    pub fn bead(&self) -> NewBead {
        NewBead {
            bead_type: BeadType::Issue,
            title: self.title.clone(),
            body: self.body.clone(),
            priority: self.priority,
            labels: self.labels.clone(),
            metadata: self.metadata.clone(),
            assignee_agent_id: None,
            convoy_id: self.convoy_id.clone(),
        }
    }
}

impl Validate for SlingRequest {
    const FIELDS: &'static [Field] = &[
        req("title", NON_EMPTY),
        opt("body", STR),
        opt("priority", PRIORITIES),
        opt("labels", Kind::StrArray),
        opt("metadata", Kind::Record),
        opt("convoy_id", STR),
    ];

    fn check(&self, i: &mut Issues) {
        self.bead().check(i);
    }
}

/// Most beads in one convoy.
pub const MAX_CONVOY_BEADS: usize = 50;

/// `POST /api/rigs/:rigId/convoys` (internal): beads slung together as one convoy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConvoy {
    pub title: String,
    /// Each as a sling request (its own `convoy_id`, if any, is replaced by the new convoy's).
    pub beads: Vec<SlingRequest>,
}

impl Validate for NewConvoy {
    fn check(&self, i: &mut Issues) {
        i.add("title", text(&self.title, MAX_TITLE));
        if self.beads.is_empty() || self.beads.len() > MAX_CONVOY_BEADS {
            i.add("beads", Err(format!("must list 1 to {MAX_CONVOY_BEADS} beads")));
        }
        for (n, b) in self.beads.iter().enumerate() {
            let mut inner = Issues::default();
            b.check(&mut inner);
            for issue in inner.0.into_result().err().unwrap_or_default() {
                i.add(&format!("beads[{n}].{}", issue.field), Err(issue.message));
            }
        }
    }
}

/// `PUT /api/rigs/:rigId/config` (internal), also sent by the TownDO when it creates a rig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RigConfigInput {
    pub town_id: String,
    pub git_url: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Merge settings (`merge_gates`, `gate_timeout_secs`, `max_rework_rounds`,
    /// `delete_merged_branches`, `merge_strategy`), each optional.
    #[serde(flatten)]
    pub merge: crate::refinery::MergeSettings,
    /// Set by the Worker from its `ALLOW_LOCAL_REPOS` var, never read from the client.
    #[serde(skip_deserializing, default)]
    pub allow_local_repos: bool,
}

fn default_branch() -> String {
    "main".into()
}

impl Validate for RigConfigInput {
    fn check(&self, i: &mut Issues) {
        let policy = validate::ValidationPolicy { allow_local_repos: self.allow_local_repos };
        i.add("town_id", validate::id(&self.town_id));
        i.add("git_url", validate::git_url(&self.git_url, policy).map(|_| ()));
        i.add("default_branch", validate::branch(&self.default_branch));
        i.add("name", opt_text(&self.name, MAX_TITLE));
        self.merge.check(i);
    }
}

/// `POST /api/towns`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTown {
    pub name: String,
    /// Free-form town settings (default model, ...), a JSON object.
    #[serde(default)]
    pub config: Option<Value>,
}

impl Validate for NewTown {
    fn check(&self, i: &mut Issues) {
        i.add("name", text(&self.name, MAX_TITLE));
        i.add("config", metadata(&self.config));
    }
}

/// `POST /api/towns/:townId/rigs`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRig {
    pub name: String,
    pub git_url: String,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Merge settings, as in [`RigConfigInput`].
    #[serde(flatten)]
    pub merge: crate::refinery::MergeSettings,
    #[serde(skip_deserializing, default)]
    pub allow_local_repos: bool,
}

impl Validate for NewRig {
    fn check(&self, i: &mut Issues) {
        let policy = validate::ValidationPolicy { allow_local_repos: self.allow_local_repos };
        i.add("name", text(&self.name, MAX_TITLE));
        i.add("git_url", validate::git_url(&self.git_url, policy).map(|_| ()));
        i.add("default_branch", validate::branch(&self.default_branch));
        self.merge.check(i);
    }
}

/// Query of `GET /api/rigs/:rigId/beads`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeadFilter {
    pub status: Option<BeadStatus>,
    pub bead_type: Option<BeadType>,
    pub assignee_agent_id: Option<String>,
    pub convoy_id: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// Query of `GET /api/rigs/:rigId/agents`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFilter {
    pub role: Option<AgentRole>,
    pub status: Option<AgentStatus>,
}

/// Query of `GET /api/rigs/:rigId/review-queue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub limit: u32,
    pub offset: u32,
}

/// Query of the event log routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    pub bead_id: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(e: ApiError) -> Value {
        match e {
            ApiError::InvalidBody(issues) => Value::Array(issues),
            other => panic!("not an invalid body: {other:?}"),
        }
    }

    #[test]
    fn wrong_types_and_unknown_enums_are_zod_shaped_issues() {
        let e = parse_body::<NewBead>(br#"{"type":"epic","title":"x"}"#).expect_err("enum");
        assert_eq!(e.public_message(), "Invalid request body");
        assert_eq!(issues(e)[0]["code"], "invalid_value");
        let e = parse_body::<NewBead>(br#"{"type":"issue","title":5}"#).expect_err("type");
        assert_eq!(issues(e)[0]["message"], "Invalid input: expected string, received number");
        for bad in [&b"{not json"[..], b"", b"[1]"] {
            let e = parse_body::<NewBead>(bad).expect_err("not an object");
            assert_eq!(
                (e.status(), issues(e)[0]["expected"].clone()),
                (400, serde_json::json!("object"))
            );
        }
        // Mail bodies must not be empty; a checkpoint without data stores null.
        let e = parse_body::<NewMail>(
            br#"{"from_agent_id":"a","to_agent_id":"b","subject":"s","body":""}"#,
        )
        .expect_err("empty");
        assert_eq!(issues(e)[0]["code"], "too_small");
        assert_eq!(parse_body::<CheckpointRequest>(b"{}").map(|c| c.data), Ok(Value::Null));
    }

    #[test]
    fn every_issue_is_listed() {
        let body =
            br#"{"type":"issue","title":" ","labels":["ok"],"metadata":{},"convoy_id":"../x"}"#;
        let e = parse_body::<NewBead>(body).expect_err("invalid");
        let paths: Vec<Value> =
            issues(e).as_array().expect("issues").iter().map(|i| i["path"].clone()).collect();
        assert_eq!(paths, vec![serde_json::json!(["title"]), serde_json::json!(["convoy_id"])]);
        let e = parse_body::<NewBead>(br#"{"title":"","labels":"x"}"#).expect_err("invalid");
        assert_eq!(issues(e).as_array().map(Vec::len), Some(3), "type, title and labels");
    }

    #[test]
    fn oversized_bodies_and_fields() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(parse_body::<NewBead>(&big).expect_err("big").detail().contains("at most"));
        let title = "x".repeat(MAX_TITLE + 1);
        let body = serde_json::json!({"type": "issue", "title": title}).to_string();
        assert!(parse_body::<NewBead>(body.as_bytes()).is_err());
    }

    #[test]
    fn sql_looking_strings_are_just_text() {
        let body = br#"{"type":"issue","title":"x'); DROP TABLE beads; --"}"#;
        assert!(parse_body::<NewBead>(body).is_ok());
    }

    #[test]
    fn done_checks_branch_and_url() {
        assert!(parse_body::<DoneRequest>(br#"{"branch":"polecat/toast/abcd1234"}"#).is_ok());
        assert!(parse_body::<DoneRequest>(br#"{"branch":"a..b"}"#).is_err());
        assert!(parse_body::<DoneRequest>(br#"{"branch":"b","pr_url":"javascript:x"}"#).is_err());
    }

    #[test]
    fn rig_config_git_urls_follow_the_policy() {
        let body = br#"{"town_id":"t1","git_url":"file:///tmp/origin.git"}"#;
        assert!(parse_body::<RigConfigInput>(body).is_err());
        let mut c: RigConfigInput = serde_json::from_slice(body).expect("parses");
        assert_eq!(c.default_branch, "main");
        c.allow_local_repos = true;
        assert!(c.validate().is_ok());
        // A client cannot turn the policy on.
        let c: RigConfigInput =
            serde_json::from_slice(br#"{"town_id":"t","git_url":"x","allow_local_repos":true}"#)
                .expect("parses");
        assert!(!c.allow_local_repos);
    }
}
