//! A scripted OpenAI-compatible model server on loopback (stands in for the LLM only).
//!
//! Kilo (`kilo run` / `kilo serve`) is pointed at it through a custom
//! `@ai-sdk/openai-compatible` provider (see [`ModelServer::kilo_provider_config`]).
//!
//! # Scripts are per conversation
//! Several agents (several Kilo sessions, possibly in several Kilo processes) share one model
//! server. Each conversation picks its script with a marker `[script:NAME]` (see [`marker`])
//! placed in the first user message (the prompt) or in the system prompt. The step to play is
//! the number of assistant messages already in `messages`, so the server keeps no
//! per-conversation state and a retried request gets the same answer again.
//! When the script is exhausted the model answers the plain text [`SCRIPT_FINISHED`]; a
//! conversation without a known marker gets the plain text [`NOTHING_TO_DO`].
//!
//! # Several runs of one script
//! A bead can be worked in several Kilo sessions (a rework round after a failed merge starts a
//! new run with the same bead, marker included). [`ModelServer::set_runs`] gives a script one
//! step list per session: the n-th distinct `x-session-id` that plays the script gets run n
//! (sessions beyond the last run get [`SCRIPT_FINISHED`]). This is the one piece of state the
//! server keeps per conversation; a retried request of a session keeps its run.
//!
//! # Auxiliary requests
//! Kilo 7.7.7 also asks the `small_model` for a session title (once per session, after the first
//! turn). Such a request carries no `tools` field, its system prompt starts with
//! "You are a title generator" and its `x-session-id` header is `title-<session id>`; its user
//! message quotes the agent's prompt, marker included. Every request without a non-empty `tools`
//! array is therefore treated as auxiliary: it gets the short text [`AUX_ANSWER`] and never
//! plays a script step.
//!
//! Every request is recorded (see [`RecordedRequest`]) and tests can wait for "N requests seen"
//! with a deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

/// Plain text answered to a conversation that names no known script.
pub const NOTHING_TO_DO: &str = "nothing to do";
/// Plain text answered once a conversation's script has no step left.
pub const SCRIPT_FINISHED: &str = "script finished";
/// Plain text answered to auxiliary requests (titles, summaries).
pub const AUX_ANSWER: &str = "Scripted session";
/// The model id reported by `GET /v1/models` and used in answers.
pub const MODEL_ID: &str = "scripted-model";

/// Upper bound on any scripted delay, so a typo cannot hang a test run.
const MAX_DELAY: Duration = Duration::from_secs(600);

/// The marker that selects script `name` for a conversation: put it in the agent's prompt.
pub fn marker(name: &str) -> String {
    format!("[script:{name}]")
}

/// What the model does at one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// One or more tool calls (several = parallel tool calls in one answer).
    ToolCalls(Vec<(String, Value)>),
    /// A plain text answer (ends the agent's turn).
    Text(String),
    /// Answer with this HTTP status and an OpenAI-style error body.
    Fail(u16),
}

/// One scripted model answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub action: Action,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Step {
    /// The model calls tool `name` with `arguments` (a JSON object).
    pub fn tool(name: impl Into<String>, arguments: Value) -> Step {
        Step { action: Action::ToolCalls(vec![(name.into(), arguments)]), delay: None }
    }

    /// The model calls several tools at once.
    pub fn tools(calls: impl IntoIterator<Item = (String, Value)>) -> Step {
        Step { action: Action::ToolCalls(calls.into_iter().collect()), delay: None }
    }

    /// The model calls Kilo's built-in shell tool (`bash`, arguments `command`, `description`,
    /// optional `workdir`, `timeout` in ms).
    pub fn bash(command: impl Into<String>) -> Step {
        Step::tool("bash", json!({"command": command.into(), "description": "scripted command"}))
    }

    /// The model answers plain text.
    pub fn text(text: impl Into<String>) -> Step {
        Step { action: Action::Text(text.into()), delay: None }
    }

    /// The model endpoint fails with this HTTP status (e.g. 500). Kilo retries
    /// (`KILO_SESSION_RETRY_LIMIT`), and each retry gets the same failure.
    pub fn fail(status: u16) -> Step {
        Step { action: Action::Fail(status), delay: None }
    }

    /// Answer only after `delay` (capped at 10 minutes).
    pub fn delayed(mut self, delay: Duration) -> Step {
        self.delay = Some(delay.min(MAX_DELAY));
        self
    }
}

/// How the server classified a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An agent turn that played step `step` of script `script`.
    Scripted { script: String, step: usize },
    /// An agent turn whose script has no step left.
    Finished { script: String },
    /// An agent turn with no known marker.
    Unknown,
    /// Title/summary request (no tools offered).
    Auxiliary,
    /// A body that was not valid JSON (answered 400).
    Invalid,
}

/// One request received on `POST /v1/chat/completions`.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// 0-based arrival order.
    pub seq: usize,
    pub received_at: Instant,
    /// The `x-session-id` header Kilo sends (the Kilo session id, `title-<id>` for titles).
    pub session_header: Option<String>,
    pub kind: Kind,
    /// The request body (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The script this request belonged to, if any.
    pub fn script(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scripted { script, .. } | Kind::Finished { script } => Some(script),
            _ => None,
        }
    }

    /// The tool names offered to the model.
    pub fn tool_names(&self) -> Vec<String> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The system prompt(s), concatenated.
    pub fn system_text(&self) -> String {
        messages(&self.body)
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("system"))
            .map(|m| content_text(m.get("content")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The results of tool calls the model sees in this request, in order.
    pub fn tool_results(&self) -> Vec<String> {
        messages(&self.body)
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
            .map(|m| content_text(m.get("content")))
            .collect()
    }

    /// The text of every user message, in order.
    pub fn user_texts(&self) -> Vec<String> {
        messages(&self.body)
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| content_text(m.get("content")))
            .collect()
    }
}

struct Shared {
    /// Script name -> its runs (one step list per session; [`ModelServer::set_script`] gives one).
    scripts: Mutex<HashMap<String, Vec<Vec<Step>>>>,
    /// Script name -> the sessions that played it, in order of their first request.
    sessions: Mutex<HashMap<String, Vec<String>>>,
    requests: Mutex<Vec<RecordedRequest>>,
    count: watch::Sender<usize>,
}

impl Shared {
    /// The index of `session` among the sessions that played `script` (registered on first use).
    fn run_of(&self, script: &str, session: &str) -> usize {
        let mut sessions = lock(&self.sessions);
        let seen = sessions.entry(script.to_owned()).or_default();
        match seen.iter().position(|s| s == session) {
            Some(i) => i,
            None => {
                seen.push(session.to_owned());
                seen.len() - 1
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not make every later accessor panic too.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running scripted model server; stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ModelServer {
    /// Starts the server on `127.0.0.1:0` with the given named scripts. Call inside a Tokio
    /// runtime.
    pub async fn start<N: Into<String>>(
        scripts: impl IntoIterator<Item = (N, Vec<Step>)>,
    ) -> std::io::Result<ModelServer> {
        let (count, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            scripts: Mutex::new(scripts.into_iter().map(|(n, s)| (n.into(), vec![s])).collect()),
            sessions: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            count,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(ModelServer { addr, shared, shutdown: Some(tx) })
    }

    /// `http://127.0.0.1:PORT/v1` (the provider's `baseURL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds or replaces a script while the server runs.
    pub fn set_script(&self, name: impl Into<String>, steps: Vec<Step>) {
        self.set_runs(name, vec![steps]);
    }

    /// Adds or replaces a script with one step list per session that plays it (see the module
    /// docs): `runs[0]` for the first session, `runs[1]` for the second, ...
    pub fn set_runs(&self, name: impl Into<String>, runs: Vec<Vec<Step>>) {
        lock(&self.shared.scripts).insert(name.into(), runs);
    }

    /// The `provider` entry of a Kilo config for this server; use model `"{provider}/{MODEL_ID}"`
    /// for both `model` and `small_model`.
    pub fn kilo_provider_config(&self, provider: &str) -> Value {
        json!({
            provider: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted test model",
                "options": {"baseURL": self.base_url(), "apiKey": "test-key"},
                "models": {MODEL_ID: {
                    "name": MODEL_ID,
                    "tool_call": true,
                    "limit": {"context": 128000, "output": 4096}
                }}
            }
        })
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The agent requests (auxiliary ones excluded) of script `name`.
    pub fn requests_for(&self, name: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.script() == Some(name)).collect()
    }

    /// The requests Kilo sent for one Kilo session (by the `x-session-id` header), auxiliary
    /// ones excluded.
    pub fn requests_for_session(&self, session_id: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.session_header.as_deref() == Some(session_id))
            .collect()
    }

    /// Waits until at least `n` requests (of any kind) were seen; returns them all.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, String> {
        self.wait_until(timeout, |all| all.len() >= n)
            .await
            .map_err(|seen| format!("expected {n} model requests within {timeout:?}, saw {seen}"))
    }

    /// Waits until script `name` has received at least `n` requests; returns those.
    pub async fn wait_for_script_requests(
        &self,
        name: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, String> {
        self.wait_until(timeout, |all| all.iter().filter(|r| r.script() == Some(name)).count() >= n)
            .await
            .map(|_| self.requests_for(name))
            .map_err(|_| {
                format!(
                    "expected {n} model requests for script {name:?} within {timeout:?}, saw {}",
                    self.requests_for(name).len()
                )
            })
    }

    /// Waits until `pred` holds over all recorded requests, or the timeout passes
    /// (`Err(number of requests seen)`).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[RecordedRequest]) -> bool,
    ) -> Result<Vec<RecordedRequest>, usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.count.subscribe();
        loop {
            {
                let all = lock(&self.shared.requests);
                if pred(&all) {
                    return Ok(all.clone());
                }
            }
            // Each wake-up is a new request; the deadline bounds the loop.
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(lock(&self.shared.requests).len()),
            }
        }
    }

    /// Stops accepting connections (also done on drop).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "gastown-tests"}]
    }))
    .into_response()
}

fn messages(body: &Value) -> &[Value] {
    body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Text of a message `content`: a string or an array of `{type: "text", text}` parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Finds `[script:NAME]` in `text` where NAME is a known script.
fn find_marker<V>(text: &str, scripts: &HashMap<String, V>) -> Option<String> {
    let mut rest = text;
    // Bounded: every iteration consumes at least the "[script:" prefix.
    while let Some(pos) = rest.find("[script:") {
        let after = &rest[pos + "[script:".len()..];
        if let Some(end) = after.find(']') {
            let name = &after[..end];
            if scripts.contains_key(name) {
                return Some(name.to_owned());
            }
        }
        rest = after;
    }
    None
}

/// Decides what to answer to one parsed request.
/// `run_of(script)` is the run the request's session plays (0 for most scripts).
fn classify(
    body: &Value,
    scripts: &HashMap<String, Vec<Vec<Step>>>,
    run_of: &dyn Fn(&str) -> usize,
) -> (Kind, Step) {
    let has_tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if !has_tools {
        return (Kind::Auxiliary, Step::text(AUX_ANSWER));
    }
    let msgs = messages(body);
    let first_user = msgs
        .iter()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    let system: String = msgs
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("system"))
        .map(|m| content_text(m.get("content")))
        .collect::<Vec<_>>()
        .join("\n");
    let Some(script) = find_marker(&first_user, scripts).or_else(|| find_marker(&system, scripts))
    else {
        return (Kind::Unknown, Step::text(NOTHING_TO_DO));
    };
    let step =
        msgs.iter().filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant")).count();
    let runs = scripts.get(&script).map(Vec::as_slice).unwrap_or_default();
    let run = if runs.len() > 1 { run_of(&script) } else { 0 };
    match runs.get(run).and_then(|s| s.get(step)) {
        Some(s) => {
            let mut s = s.clone();
            if let (Action::ToolCalls(calls), Some(branch)) =
                (&mut s.action, polecat_branch(&system).or_else(|| polecat_branch(&first_user)))
            {
                for (_, args) in calls.iter_mut() {
                    substitute(args, BRANCH_PLACEHOLDER, &branch);
                }
            }
            let users: Vec<String> = msgs
                .iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .map(|m| content_text(m.get("content")))
                .collect();
            if let (Action::ToolCalls(calls), Some(id)) =
                (&mut s.action, users.iter().rev().find_map(|u| escalation_id(u)))
            {
                for (_, args) in calls.iter_mut() {
                    substitute(args, ESCALATION_PLACEHOLDER, &id);
                }
            }
            (Kind::Scripted { script, step }, s)
        }
        None => (Kind::Finished { script }, Step::text(SCRIPT_FINISHED)),
    }
}

/// In a scripted tool call's arguments, stands for the agent's branch as its prompts name it
/// (the first `polecat/...` word of the system prompt or the first user message), so a script
/// can push and call `gt_done` on a branch that is only known once the Worker has slung the bead.
pub const BRANCH_PLACEHOLDER: &str = "{{branch}}";

/// A whole polecat run: write `content` to `file`, commit, call `gt_done` on the agent's
/// branch (which the control server pushes for it), and end the turn.
pub fn commit_then_done(file: &str, content: &str) -> Vec<Step> {
    vec![
        Step::bash(format!(
            "echo {content} > {file} && git add {file} && git commit -qm 'write {file}' && echo committed"
        )),
        Step::tool("gt_done", json!({ "branch": BRANCH_PLACEHOLDER, "summary": format!("wrote {file}") })),
        Step::text("done"),
    ]
}

/// In a scripted tool call's arguments, stands for the id of the newest escalation the
/// conversation was told of (the mayor's notices say "Escalation `<id>`"), so the mayor's script
/// can answer an escalation whose id is only known once a polecat raised it.
pub const ESCALATION_PLACEHOLDER: &str = "{{escalation_id}}";

fn escalation_id(text: &str) -> Option<String> {
    let start = text.rfind("Escalation `")? + "Escalation `".len();
    let id: String = text[start..].chars().take_while(|c| *c != '`').collect();
    (!id.is_empty()).then_some(id)
}

fn polecat_branch(text: &str) -> Option<String> {
    let start = text.find("polecat/")?;
    let branch: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
        .collect();
    let branch = branch.trim_end_matches(['.', '/']).to_string();
    (branch.matches('/').count() >= 2).then_some(branch)
}

fn substitute(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, from, to)),
        _ => {}
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let session_header =
        headers.get("x-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed: Result<Value, _> = serde_json::from_slice(&raw);
    let (kind, step, body) = match parsed {
        Ok(body) if body.is_object() => {
            let run_of = |script: &str| {
                session_header.as_deref().map_or(0, |session| shared.run_of(script, session))
            };
            let (kind, step) = classify(&body, &lock(&shared.scripts), &run_of);
            (kind, Some(step), body)
        }
        _ => (Kind::Invalid, None, Value::Null),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let seq = {
        let mut all = lock(&shared.requests);
        let seq = all.len();
        all.push(RecordedRequest { seq, received_at: Instant::now(), session_header, kind, body });
        seq
    };
    shared.count.send_replace(seq + 1);

    let Some(step) = step else {
        return error_response(StatusCode::BAD_REQUEST, "request body must be a JSON object");
    };
    if let Some(delay) = step.delay {
        tokio::time::sleep(delay).await;
    }
    let id = format!("chatcmpl-{seq}");
    match step.action {
        Action::Fail(status) => error_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "scripted failure",
        ),
        Action::Text(text) => answer(stream, &id, None, Some(text)),
        Action::ToolCalls(calls) => answer(stream, &id, Some((seq, calls)), None),
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"message": message, "type": "scripted_error"}})))
        .into_response()
}

fn answer(
    stream: bool,
    id: &str,
    calls: Option<(usize, Vec<(String, Value)>)>,
    text: Option<String>,
) -> Response {
    let finish = if calls.is_some() { "tool_calls" } else { "stop" };
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    let tool_calls: Option<Vec<Value>> = calls.map(|(seq, calls)| {
        calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, args))| {
                json!({
                    "index": i,
                    "id": format!("call_{seq}_{i}"),
                    "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}
                })
            })
            .collect()
    });
    if !stream {
        let mut message = json!({"role": "assistant", "content": text});
        if let Some(tc) = tool_calls {
            // Non-streamed tool calls carry no `index`.
            let tc: Vec<Value> = tc
                .into_iter()
                .map(|mut c| {
                    if let Some(o) = c.as_object_mut() {
                        o.remove("index");
                    }
                    c
                })
                .collect();
            message["tool_calls"] = Value::Array(tc);
        }
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "created": 0, "model": MODEL_ID,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage
        }))
        .into_response();
    }
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": 0, "model": MODEL_ID,
            "choices": choices
        });
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    // One delta with the whole answer (the shape Kilo 7.7.7 was measured against), then the
    // finish reason, then usage.
    let mut delta = json!({"role": "assistant"});
    if let Some(text) = text {
        delta["content"] = Value::String(text);
    }
    if let Some(tc) = tool_calls {
        delta["tool_calls"] = Value::Array(tc);
    }
    let mut events =
        vec![chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]), None)];
    events.push(chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]), None));
    events.push(chunk(json!([]), Some(&usage)));
    events.push("data: [DONE]\n\n".to_owned());
    let body = Body::from_stream(futures_util::stream::iter(
        events.into_iter().map(Ok::<String, Infallible>),
    ));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts() -> HashMap<String, Vec<Vec<Step>>> {
        HashMap::from([(
            "a".to_owned(),
            vec![vec![Step::tool("gt_done", json!({"branch": "b"})), Step::text("ok")]],
        )])
    }

    #[test]
    fn each_session_plays_its_own_run() {
        let s = HashMap::from([(
            "r".to_owned(),
            vec![vec![Step::text("first")], vec![Step::text("second")]],
        )]);
        let m = json!([{"role": "user", "content": "go [script:r]"}]);
        assert_eq!(classify(&req(m.clone(), true), &s, &|_| 0).1, Step::text("first"));
        assert_eq!(classify(&req(m.clone(), true), &s, &|_| 1).1, Step::text("second"));
        assert_eq!(classify(&req(m, true), &s, &|_| 2).0, Kind::Finished { script: "r".into() });
    }

    fn req(msgs: Value, tools: bool) -> Value {
        let mut b = json!({"model": "m", "messages": msgs, "stream": true});
        if tools {
            b["tools"] = json!([{"type": "function", "function": {"name": "bash"}}]);
        }
        b
    }

    #[test]
    fn marker_in_parts_selects_script_and_assistant_count_selects_step() {
        let s = scripts();
        let m0 = json!([{"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "do it [script:a]"}]}]);
        assert_eq!(
            classify(&req(m0.clone(), true), &s, &|_| 0).0,
            Kind::Scripted { script: "a".into(), step: 0 }
        );
        let mut m1 = m0.as_array().unwrap().clone();
        m1.push(json!({"role": "assistant", "content": null, "tool_calls": []}));
        m1.push(json!({"role": "tool", "content": "done"}));
        let (k, st) = classify(&req(Value::Array(m1.clone()), true), &s, &|_| 0);
        assert_eq!(k, Kind::Scripted { script: "a".into(), step: 1 });
        assert_eq!(st, Step::text("ok"));
        m1.push(json!({"role": "assistant", "content": "ok"}));
        assert_eq!(
            classify(&req(Value::Array(m1), true), &s, &|_| 0).0,
            Kind::Finished { script: "a".into() }
        );
    }

    #[test]
    fn the_branch_placeholder_is_the_polecat_branch_of_the_prompts() {
        let s = HashMap::from([(
            "a".to_owned(),
            vec![vec![Step::tool(
                "gt_done",
                json!({"branch": "{{branch}}", "x": ["git push origin {{branch}}"]}),
            )]],
        )]);
        let m = json!([{"role": "system", "content": "You work on the branch `polecat/toast/0b6a9a2e`. Push it."},
            {"role": "user", "content": "go [script:a]"}]);
        let (_, step) = classify(&req(m, true), &s, &|_| 0);
        assert_eq!(
            step,
            Step::tool(
                "gt_done",
                json!({"branch": "polecat/toast/0b6a9a2e", "x": ["git push origin polecat/toast/0b6a9a2e"]})
            )
        );
        assert_eq!(polecat_branch("no branch here"), None);
        assert_eq!(polecat_branch("see polecat/nux/abc."), Some("polecat/nux/abc".into()));
    }

    #[test]
    fn no_tools_is_auxiliary_and_unknown_marker_is_unknown() {
        let s = scripts();
        let title = json!([{"role": "system", "content": "You are a title generator."},
            {"role": "user", "content": "1. [script:a] do it"}]);
        assert_eq!(classify(&req(title, false), &s, &|_| 0).0, Kind::Auxiliary);
        let other = json!([{"role": "user", "content": "[script:zzz] [script:] hi"}]);
        assert_eq!(classify(&req(other, true), &s, &|_| 0).0, Kind::Unknown);
        let in_system = json!([{"role": "system", "content": "prompt [script:a]"}, {"role": "user", "content": "x"}]);
        assert_eq!(
            classify(&req(in_system, true), &s, &|_| 0).0,
            Kind::Scripted { script: "a".into(), step: 0 }
        );
    }
}
