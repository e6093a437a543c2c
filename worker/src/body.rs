//! Request bodies checked the way the reference checks them (zod 4), with its error shape.
//!
//! The reference parses a body with `JSON.parse` (empty or malformed input becomes `null`) and
//! validates it with a zod object schema; a failure is a 400
//! `{"success":false,"error":"Invalid request body","issues":[...]}` listing **every** problem,
//! in schema field order. Each route's schema is a [`Field`] list (`Shape::FIELDS` in
//! [`crate::requests`]); [`check`] walks the JSON value and reports zod-shaped issues:
//!
//! - `{"expected":"object","code":"invalid_type","path":[],"message":"Invalid input: expected object, received null"}`
//! - `{"expected":"string","code":"invalid_type","path":["title"],"message":"Invalid input: expected string, received undefined"}`
//! - `{"code":"invalid_value","values":[...],"path":["type"],"message":"Invalid option: expected one of \"a\"|\"b\""}`
//! - `{"origin":"string","code":"too_small","minimum":1,"inclusive":true,"path":["title"],"message":"Too small: expected string to have >=1 characters"}`
//!
//! Our own stricter rules (sizes, id alphabet, branch names, ...) run once the shape is right
//! and add `{"code":"custom","path":[...],"message":"..."}` issues under the same error.
//! Deliberate leniency: `null` for an optional field counts as absent (zod refuses it).

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string; `min(1)` when `non_empty`.
    Str { non_empty: bool },
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// An array of strings.
    StrArray,
    /// A JSON object (zod `record`).
    Record,
    /// Anything, including absent (zod `unknown`).
    Any,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

/// A required field.
pub const fn req(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: true }
}

/// An optional field.
pub const fn opt(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, required: false }
}

pub const STR: Kind = Kind::Str { non_empty: false };
pub const NON_EMPTY: Kind = Kind::Str { non_empty: true };

/// zod's name for what it received.
fn received(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

pub fn invalid_type(path: Vec<Value>, expected: &str, got: Option<&Value>) -> Value {
    json!({
        "expected": expected,
        "code": "invalid_type",
        "path": path,
        "message": format!("Invalid input: expected {expected}, received {}", received(got)),
    })
}

pub fn custom(path: Vec<Value>, message: &str) -> Value {
    json!({ "code": "custom", "path": path, "message": message })
}

/// A collector field name (`beads[0].title`) as a zod path (`["beads", 0, "title"]`).
pub fn path_of(field: &str) -> Vec<Value> {
    let mut path = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            path.push(json!(name));
        }
        for index in pieces {
            let index = index.trim_end_matches(']');
            path.push(index.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(index)));
        }
    }
    path
}

fn check_field(f: &Field, v: Option<&Value>, issues: &mut Vec<Value>) {
    let absent = match v {
        None => true,
        Some(Value::Null) => !f.required,
        Some(_) => false,
    };
    if absent && !f.required || matches!(f.kind, Kind::Any) {
        return;
    }
    let path = || vec![json!(f.name)];
    match f.kind {
        Kind::Any => {}
        Kind::Str { non_empty } => match v {
            Some(Value::String(s)) if non_empty && s.is_empty() => issues.push(json!({
                "origin": "string",
                "code": "too_small",
                "minimum": 1,
                "inclusive": true,
                "path": path(),
                "message": "Too small: expected string to have >=1 characters",
            })),
            Some(Value::String(_)) => {}
            other => issues.push(invalid_type(path(), "string", other)),
        },
        Kind::Enum(values) => {
            if !v.and_then(Value::as_str).is_some_and(|s| values.contains(&s)) {
                let quoted: Vec<String> = values.iter().map(|x| format!("\"{x}\"")).collect();
                issues.push(json!({
                    "code": "invalid_value",
                    "values": values,
                    "path": path(),
                    "message": format!("Invalid option: expected one of {}", quoted.join("|")),
                }));
            }
        }
        Kind::StrArray => match v {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        issues.push(invalid_type(
                            vec![json!(f.name), json!(i)],
                            "string",
                            Some(item),
                        ));
                    }
                }
            }
            other => issues.push(invalid_type(path(), "array", other)),
        },
        Kind::Record => {
            if !matches!(v, Some(Value::Object(_))) {
                issues.push(invalid_type(path(), "record", v));
            }
        }
    }
}

/// Parses `body` as the reference does (empty or malformed JSON is `null`) and checks it against
/// `fields`: the object on success, every issue otherwise.
pub fn check(body: &[u8], fields: &[Field]) -> Result<Map<String, Value>, Vec<Value>> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Value::Object(map) = value else {
        return Err(vec![invalid_type(Vec::new(), "object", Some(&value))]);
    };
    let mut issues = Vec::new();
    for f in fields {
        check_field(f, map.get(f.name), &mut issues);
    }
    if issues.is_empty() {
        Ok(map)
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAD: &[Field] = &[
        req("type", Kind::Enum(&["issue", "message"])),
        req("title", NON_EMPTY),
        opt("body", STR),
        opt("labels", Kind::StrArray),
        opt("metadata", Kind::Record),
    ];

    fn issues(body: &str) -> Vec<Value> {
        check(body.as_bytes(), BEAD).expect_err("invalid")
    }

    #[test]
    fn not_an_object() {
        let null = json!([{"expected":"object","code":"invalid_type","path":[],"message":"Invalid input: expected object, received null"}]);
        for body in ["", "  ", "{not json", "null"] {
            assert_eq!(Value::Array(issues(body)), null, "{body:?}");
        }
        assert_eq!(issues("[1]")[0]["message"], "Invalid input: expected object, received array");
        assert_eq!(issues("5")[0]["message"], "Invalid input: expected object, received number");
    }

    #[test]
    fn every_issue_in_field_order() {
        let got = issues(r#"{"type":"epic","title":"","body":5,"labels":["a",1],"metadata":[1]}"#);
        assert_eq!(
            Value::Array(got),
            json!([
                {"code":"invalid_value","values":["issue","message"],"path":["type"],"message":"Invalid option: expected one of \"issue\"|\"message\""},
                {"origin":"string","code":"too_small","minimum":1,"inclusive":true,"path":["title"],"message":"Too small: expected string to have >=1 characters"},
                {"expected":"string","code":"invalid_type","path":["body"],"message":"Invalid input: expected string, received number"},
                {"expected":"string","code":"invalid_type","path":["labels",1],"message":"Invalid input: expected string, received number"},
                {"expected":"record","code":"invalid_type","path":["metadata"],"message":"Invalid input: expected record, received array"},
            ])
        );
        let got = issues(r#"{}"#);
        assert_eq!(got[0]["code"], "invalid_value");
        assert_eq!(got[1]["message"], "Invalid input: expected string, received undefined");
        assert_eq!(
            issues(r#"{"type":"issue","title":"x","labels":"a"}"#)[0]["message"],
            "Invalid input: expected array, received string"
        );
    }

    #[test]
    fn valid_bodies_and_null_optionals() {
        assert!(check(br#"{"type":"issue","title":" ","extra":1}"#, BEAD).is_ok());
        assert!(check(br#"{"type":"issue","title":"t","body":null,"metadata":null}"#, BEAD).is_ok());
        assert_eq!(
            issues(r#"{"type":"issue","title":null}"#)[0]["message"],
            "Invalid input: expected string, received null"
        );
    }

    #[test]
    fn paths_of_collector_fields() {
        assert_eq!(path_of("title"), vec![json!("title")]);
        assert_eq!(path_of("beads[3].title"), vec![json!("beads"), json!(3), json!("title")]);
        assert!(path_of("").is_empty());
    }
}
