//! GitHub's own OpenAPI description (npm `@octokit/openapi`, pinned in package.json), so the
//! forge stand-in cannot drift from GitHub: its answers start from the description's examples
//! with the stand-in's values laid over them, and [`check`] validates every recorded request
//! and answer against the description's schemas (`tests/forge/openapi.mjs`, with ajv). Its
//! webhooks start from GitHub's example payloads the same way ([`webhook_payload`]).

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

use crate::forge_pulls::RestCall;
use crate::project::repo_root;

/// The examples the stand-in answers from, by name.
pub struct Examples(HashMap<&'static str, Value>);

impl Examples {
    /// Reads the description (13 MB) once.
    pub fn load() -> Self {
        let path = repo_root().join("node_modules/@octokit/openapi/generated/api.github.com.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("the OpenAPI description");
        let example = |name: &str| doc["components"]["examples"][name]["value"].clone();
        let mut pull = example("pull-request");
        // GitHub's example lists a team without the `type` its own schema requires; the
        // stand-in requests no teams.
        pull["requested_teams"] = Value::Array(Vec::new());
        let mut simple = example("pull-request-simple-items")[0].clone();
        simple["requested_teams"] = Value::Array(Vec::new());
        let examples = HashMap::from([
            ("pull-request", pull),
            ("pull-request-simple", simple),
            ("review", example("pull-request-review-items")[0].clone()),
            ("check-run", example("check-run-paginated")["check_runs"][0].clone()),
            ("combined-status", example("combined-commit-status")),
            ("merge-result", example("pull-request-merge-result-response-if-merge-was-successful")),
        ]);
        for (name, value) in &examples {
            assert!(value.is_object(), "no example {name} in the OpenAPI description");
        }
        Self(examples)
    }

    /// No examples (a stand-in that hosts no repositories answers no pull request routes).
    pub fn none() -> Self {
        Self(HashMap::new())
    }

    /// Example `name` with `ours` laid over it (objects merged key by key, ours winning).
    pub fn with(&self, name: &str, ours: Value) -> Value {
        let mut base = self.0.get(name).cloned().unwrap_or(Value::Null);
        overlay(&mut base, ours);
        base
    }
}

fn overlay(base: &mut Value, ours: Value) {
    match (base, ours) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                overlay(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// GitHub's own webhook payloads (npm `@octokit/webhooks-examples`, pinned in package.json):
/// the example of an event and action, with `ours` laid over it.
pub fn webhook_payload(event: &str, action: &str, ours: Value) -> Value {
    let path =
        repo_root().join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", path.display()));
    let all: Value = serde_json::from_str(&text).expect("the webhook examples");
    let mut payload = all
        .as_array()
        .and_then(|events| events.iter().find(|e| e["name"] == event))
        .and_then(|e| e["examples"].as_array()?.iter().find(|x| x["action"] == action).cloned())
        .unwrap_or_else(|| panic!("no example of {event} {action}"));
    overlay(&mut payload, ours);
    payload
}

/// Validates `calls` against the description; the problems found, one per line.
pub fn check(calls: &[RestCall]) -> Result<String, String> {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let json: Vec<Value> = calls
        .iter()
        .map(|c| {
            serde_json::json!({"method": c.method, "template": c.template, "status": c.status,
                               "body": c.body, "response": c.response})
        })
        .collect();
    std::fs::write(file.path(), Value::Array(json).to_string()).expect("calls written");
    let out = Command::new("node")
        .arg(repo_root().join("tests/forge/openapi.mjs"))
        .arg(file.path())
        .current_dir(repo_root())
        .output()
        .expect("node runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
