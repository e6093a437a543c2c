//! What every request body shares: its size limit, its parse and check ([`parse_body`]), the
//! [`Validate`] trait each body implements (in its resource module), and the field rules.
//!
//! Each body is first checked against its route's schema ([`Shape::FIELDS`], zod-shaped
//! issues as the reference reports them, see [`crate::body`]), then parsed (serde), then
//! [`Validate`] checks our own sizes and formats. All of it happens in the Worker before any
//! Durable Object is called, so bad input changes nothing; every failure is a 400
//! `Invalid request body` with the list of issues. SQL-looking strings need no special case: every value reaches SQLite as a
//! bound parameter.

use serde_json::Value;
use shared_types::validate;

use crate::body::{self, Field, Kind};
use crate::error::{ApiError, ApiResult};

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

/// A body's shape, as the reference's zod schema has it (checked before parsing). Written by
/// [`request_body!`] from the struct's own fields; our own routes' bodies leave it empty, and
/// serde's message then describes a wrong shape.
pub trait Shape {
    const FIELDS: &'static [Field] = &[];
}

/// Declares a request body once: the struct and its [`Shape`]. Each field is written as in a
/// struct, followed by its zod rule, `= req(KIND)` or `= opt(KIND)`, or by nothing when the
/// reference's schema does not list it; `name as "wire": Type` names a field whose wire name is
/// not its Rust name (a keyword). A missing `Option` field is `None` without `#[serde(default)]`.
macro_rules! request_body {
    // The zod list, built field by field: a field without a rule is left out.
    (@fields [$($out:tt)*]) => { &[$($out)*] };
    (@fields [$($out:tt)*] $field:ident [$($wire:literal)?] [$presence:ident($kind:expr)] $($rest:tt)*) => {
        $crate::requests::request_body!(@fields [
            $($out)*
            $crate::body::$presence($crate::requests::request_body!(@wire $field $($wire)?), $kind),
        ] $($rest)*)
    };
    (@fields [$($out:tt)*] $field:ident [$($wire:literal)?] [] $($rest:tt)*) => {
        $crate::requests::request_body!(@fields [$($out)*] $($rest)*)
    };
    (@wire $field:ident) => { stringify!($field) };
    (@wire $field:ident $wire:literal) => { $wire };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident $(as $wire:literal)? : $ty:ty $(= $presence:ident($kind:expr))?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$fmeta])*
                $(#[serde(rename = $wire)])?
                $fvis $field: $ty,
            )*
        }

        impl $crate::requests::Shape for $name {
            const FIELDS: &'static [$crate::body::Field] = $crate::requests::request_body!(
                @fields [] $($field [$($wire)?] [$($presence($kind))?])*
            );
        }
    };
}
pub(crate) use request_body;

pub trait Validate {
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

    /// Adds a nested body's issues under `prefix` (`beads[3]`).
    pub fn nested(&mut self, prefix: &str, inner: Issues) {
        for issue in inner.0.into_result().err().unwrap_or_default() {
            self.add(&format!("{prefix}.{}", issue.field), Err(issue.message));
        }
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
    Ok(crate::json::decode(checked_object(raw, fields)?)?)
}

/// The checks of [`parse_value`] before serde (not generic: one copy in the wasm).
#[inline(never)]
fn checked_object(raw: &[u8], fields: &[Field]) -> ApiResult<Value> {
    if raw.len() > MAX_BODY_BYTES {
        return Err(ApiError::invalid_body(format!(
            "request body must be at most {MAX_BODY_BYTES} bytes"
        )));
    }
    let map = body::check(raw, fields).map_err(ApiError::InvalidBody)?;
    Ok(Value::Object(map))
}

/// Parses a JSON body into `T` and validates it.
pub fn parse_body<T: serde::de::DeserializeOwned + Shape + Validate>(raw: &[u8]) -> ApiResult<T> {
    let value: T = parse_value(raw, T::FIELDS)?;
    value.validate()?;
    Ok(value)
}

pub(crate) const PRIORITIES: Kind = Kind::Enum(&["low", "medium", "high", "critical"]);

pub fn text(value: &str, max: usize) -> Result<(), String> {
    validate::text(value, max, false)
}

pub fn opt_text(value: &Option<String>, max: usize) -> Result<(), String> {
    value.as_deref().map_or(Ok(()), |v| validate::text(v, max, true))
}

pub fn opt_id(value: &Option<String>) -> Result<(), String> {
    value.as_deref().map_or(Ok(()), validate::id)
}

pub fn labels(value: &Option<Vec<String>>) -> Result<(), String> {
    let Some(labels) = value else { return Ok(()) };
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    labels.iter().try_for_each(|l| text(l, MAX_LABEL))
}

/// Metadata is a JSON object of bounded size (it is stored as text and returned as is).
pub fn metadata(value: &Option<Value>) -> Result<(), String> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(v @ Value::Object(_)) => json_size(v, MAX_METADATA),
        Some(_) => Err("must be a JSON object".into()),
    }
}

pub fn json_size(v: &Value, max: usize) -> Result<(), String> {
    let len = serde_json::to_string(v).map(|s| s.len()).unwrap_or(usize::MAX);
    if len > max {
        return Err(format!("must be at most {max} bytes of JSON"));
    }
    Ok(())
}

/// An optional http(s) URL; an empty string counts as absent (tool plugins send `""`).
pub fn url(value: &Option<String>) -> Result<(), String> {
    let Some(u) = value.as_deref().filter(|u| !u.is_empty()) else { return Ok(()) };
    if u.len() > MAX_URL || !(u.starts_with("https://") || u.starts_with("http://")) {
        return Err(format!("must be an http(s) URL of at most {MAX_URL} characters"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::agents::{CheckpointRequest, DoneRequest};
    use crate::rig::beads::NewBead;
    use crate::rig::config::RigConfigInput;
    use crate::rig::mail::NewMail;

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

    #[test]
    fn a_declared_body_lists_its_ruled_fields_by_wire_name_in_order() {
        use crate::body::Field;
        let names = |f: &[Field]| f.iter().map(|f| (f.name, f.required)).collect::<Vec<_>>();
        let bead = names(crate::rig::beads::NewBead::FIELDS);
        assert_eq!(bead[..3], [("type", true), ("title", true), ("body", false)]);
        // Fields without a rule (numbers the reference does not list, one set by the Worker)
        // are parsed but not listed.
        let forge = names(crate::forge::ForgeInput::FIELDS);
        let forge: Vec<&str> = forge.iter().map(|(n, _)| *n).collect();
        assert_eq!(forge, ["kind", "api_url", "private_key", "token", "webhook_secret"]);
        // The wire name is serde's too.
        let b: crate::rig::beads::NewBead =
            parse_body(br#"{"type":"message","title":"t"}"#).expect("a valid bead");
        assert_eq!(b.bead_type, crate::model::BeadType::Message);
        assert_eq!(b.body, None, "a missing optional field is None");
    }
}
