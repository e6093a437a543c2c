//! The Worker's HTTP API as `gt` uses it: the internal key on every request, the
//! `{"success", "data" | "error"}` envelope unwrapped, and failures sorted by what the person
//! can do about them (see [`Error::exit_code`]).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed the request (its status and message).
    #[error("the Gastown API answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The Worker could not be reached at all.
    #[error("cannot reach the Gastown API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// Settings or arguments that cannot work.
    #[error("{0}")]
    Usage(String),
    /// A wait for an answer (the mayor's reply) ended without it.
    #[error("{0}")]
    NoAnswer(String),
    /// The API answered in a shape this `gt` does not know (a Worker of another version).
    #[error("the Gastown API's answer is not the expected {what}: {detail}")]
    Shape { what: String, detail: String },
}

impl Error {
    /// 1: the API said no, or a wait ended without the answer; 2: the command line or settings
    /// are wrong (as clap's own errors); 3: nothing answered.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Api { .. } | Self::NoAnswer(_) | Self::Shape { .. } => 1,
            Self::Usage(_) => 2,
            Self::Unreachable { .. } => 3,
        }
    }
}

pub struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    /// `url`: the Worker (`GASTOWN_URL`); `key`: its internal key (`GASTOWN_KEY`).
    pub fn new(url: &str, key: &str) -> Result<Self, Error> {
        let base = url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Usage(format!("GASTOWN_URL must be an http(s) URL, not {base:?}")));
        }
        if key.trim().is_empty() {
            return Err(Error::Usage("GASTOWN_KEY is empty: set it to the town's INTERNAL_API_SECRET (scripts/dev prints it)".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // workerd closes idle keep-alive connections after about 5 s.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| Error::Usage(format!("no HTTP client: {e}")))?;
        Ok(Self { base, key: key.trim().to_string(), http })
    }

    /// Sends a request and returns the envelope's `data`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).header("x-internal-api-key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .map_err(|e| Error::Unreachable { url: self.base.clone(), detail: cause(&e) })?;
        let status = res.status().as_u16();
        let envelope: Value = res.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) && envelope["success"] != Value::Bool(false) {
            return Ok(envelope.get("data").cloned().unwrap_or(envelope));
        }
        Err(Error::Api { status, message: api_message(&envelope) })
    }

    /// The Worker's URL for WebSockets (`ws://` or `wss://`).
    pub fn ws_base(&self) -> String {
        match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", self.base.trim_start_matches("http://")),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// The API's `data` read as the record it is (`shared_types::records`).
pub fn read<T: serde::de::DeserializeOwned>(data: &Value) -> Result<T, Error> {
    T::deserialize(data).map_err(|e| Error::Shape {
        what: short_type_name(std::any::type_name::<T>()),
        detail: e.to_string(),
    })
}

/// `alloc::vec::Vec<shared_types::records::Bead>` as `Vec<Bead>`.
fn short_type_name(full: &str) -> String {
    let mut short = String::new();
    let mut path = String::new();
    for c in full.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            path.push(c);
        } else {
            short.push_str(path.rsplit("::").next().unwrap_or_default());
            path.clear();
            short.push(c);
        }
    }
    short.trim_end().to_string()
}

/// The error envelope's message, with each of its `issues` (a 400's field and problem) after
/// it: `Invalid request body` alone does not say what to change.
fn api_message(envelope: &Value) -> String {
    let mut message = envelope["error"].as_str().unwrap_or("no message").to_string();
    for issue in envelope["issues"].as_array().into_iter().flatten() {
        let path: Vec<String> = issue["path"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
            .collect();
        let problem = issue["message"].as_str().unwrap_or("invalid");
        if path.is_empty() {
            message.push_str(&format!("\n  {problem}"));
        } else {
            message.push_str(&format!("\n  {}: {problem}", path.join(".")));
        }
    }
    message
}

/// The innermost cause, without the URL (which the message already names).
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// A path segment from user input, checked with the ids' own rule (`shared_types::validate::id`,
/// which the API applies too), so `/` and `?` never change the request's meaning.
pub fn segment(what: &str, value: &str) -> Result<String, Error> {
    shared_types::validate::id(value).map(|()| value.to_string()).map_err(|m| {
        Error::Usage(format!("{what} must be an id (letters, digits, '-', '_'): {value:?} {m}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_ids_are_checked() {
        assert!(matches!(Api::new("127.0.0.1:8787", "k"), Err(Error::Usage(_))));
        assert!(matches!(Api::new("http://127.0.0.1:8787", " "), Err(Error::Usage(_))));
        assert!(Api::new("http://127.0.0.1:8787/", "k").is_ok_and(|a| a.base
            == "http://127.0.0.1:8787"
            && a.ws_base() == "ws://127.0.0.1:8787"));
        assert!(Api::new("https://town.example", "k")
            .is_ok_and(|a| a.ws_base() == "wss://town.example"));
        assert!(segment("rig", "r-1_a").is_ok());
        for bad in ["", "a/b", "x?y=1", "..", "a b"] {
            assert!(segment("rig", bad).is_err(), "{bad}");
        }
        assert_eq!((Error::Api { status: 404, message: String::new() }).exit_code(), 1);
        let invalid = serde_json::json!({"success": false, "error": "Invalid request body", "issues": [
            {"code": "too_small", "path": ["beads", 0, "title"], "message": "Too small: expected string to have >=1 characters"},
            {"code": "custom", "path": [], "message": "Unknown field"}]});
        assert_eq!(api_message(&invalid), "Invalid request body\n  beads.0.title: Too small: expected string to have >=1 characters\n  Unknown field");
        assert_eq!(api_message(&serde_json::json!({"error": "Rig not found"})), "Rig not found");
        assert_eq!(Error::Usage(String::new()).exit_code(), 2);
        assert_eq!(Error::NoAnswer(String::new()).exit_code(), 1);
        let shape = read::<Vec<shared_types::records::Bead>>(&serde_json::json!({"id": 1}));
        assert!(
            matches!(&shape, Err(Error::Shape { what, .. }) if what == "Vec<Bead>"),
            "{shape:?}"
        );
        assert_eq!(
            (Error::Unreachable { url: String::new(), detail: String::new() }).exit_code(),
            3
        );
    }
}
