//! Following a `kilo serve` process's event stream and turning it into agent events.
//!
//! One follower per Kilo process reads `GET /global/event` (all directories, so all sessions of
//! a shared server) and attributes each event to an agent by `properties.sessionID`. Only what
//! a person watching an agent cares about becomes an event: tool calls as their state changes,
//! finished text, errors. Everything attributable counts as activity.
//!
//! `session.idle` is deliberately not treated as completion: it fires after every turn. An
//! agent is done when it calls `gt_done`, which the Worker learns about directly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared_types::AgentEventKind;

use super::client::KiloClient;
use crate::agents::Registry;
use crate::process::ExitWatch;

/// Longest text kept in one event.
const MAX_TEXT: usize = 4000;

/// What one Kilo event means for the agent whose session it belongs to.
#[derive(Debug, PartialEq)]
pub enum Meaning {
    /// Something happened; nothing worth an event.
    Activity,
    /// The session's turn started (`true`) or ended (`false`).
    Busy(bool),
    Event(AgentEventKind, Value),
}

/// Remembers each tool call's last state, so repeated `running` updates make one event.
#[derive(Debug, Default)]
pub struct Interpreter {
    tool_states: HashMap<String, String>,
}

impl Interpreter {
    /// Reads one `/global/event` payload: `{"directory", "payload": {"type", "properties"}}`.
    /// Returns the session id and the meaning, or `None` for events of no session.
    pub fn interpret(&mut self, event: &Value) -> Option<(String, Meaning)> {
        let payload = event.get("payload").unwrap_or(event);
        let kind = payload["type"].as_str()?;
        let props = &payload["properties"];
        let session = props["sessionID"]
            .as_str()
            .or_else(|| props["part"]["sessionID"].as_str())
            .or_else(|| props["info"]["sessionID"].as_str())?
            .to_string();
        let meaning = match kind {
            "message.part.updated" => self.part(&props["part"]),
            "session.error" => {
                let message = props["error"]["data"]["message"]
                    .as_str()
                    .or_else(|| props["error"]["name"].as_str())
                    .unwrap_or("unknown error");
                Meaning::Event(
                    AgentEventKind::Error,
                    json!({ "message": truncate(message), "source": "session" }),
                )
            }
            "session.status" if props["status"]["type"] == "busy" => Meaning::Busy(true),
            "session.status" if props["status"]["type"] == "idle" => Meaning::Busy(false),
            "session.idle" => Meaning::Busy(false),
            "session.status" if props["status"]["type"] == "retry" => {
                let message = props["status"]["message"].as_str().unwrap_or("");
                Meaning::Event(
                    AgentEventKind::Error,
                    json!({ "message": format!("model call failed, retrying: {}", truncate(message)), "source": "retry" }),
                )
            }
            _ => Meaning::Activity,
        };
        Some((session, meaning))
    }

    fn part(&mut self, part: &Value) -> Meaning {
        match part["type"].as_str() {
            Some("tool") => {
                let call = part["callID"].as_str().unwrap_or_default().to_string();
                let status = part["state"]["status"].as_str().unwrap_or("unknown").to_string();
                if self.tool_states.get(&call) == Some(&status) {
                    return Meaning::Activity;
                }
                if self.tool_states.len() >= 4096 {
                    self.tool_states.clear();
                }
                self.tool_states.insert(call.clone(), status.clone());
                let mut data = json!({ "tool": part["tool"], "callId": call, "state": status });
                if status == "error" {
                    data["error"] = truncate(part["state"]["error"].as_str().unwrap_or("")).into();
                }
                if let Some(exit) = part["state"]["metadata"]["exit"].as_i64() {
                    data["exit"] = exit.into();
                }
                // What it was called with and what it gave, for the live stream (bounded).
                if part["state"]["input"].is_object() {
                    data["input"] = truncate(&part["state"]["input"].to_string()).into();
                }
                if let Some(output) =
                    part["state"]["output"].as_str().filter(|_| status == "completed")
                {
                    data["output"] = truncate(output).into();
                }
                Meaning::Event(AgentEventKind::ToolCall, data)
            }
            // Text parts stream in; the one with an end time is the finished text.
            Some("text") if part["time"]["end"].is_number() && part["synthetic"] != true => {
                Meaning::Event(
                    AgentEventKind::Text,
                    json!({ "text": truncate(part["text"].as_str().unwrap_or("")) }),
                )
            }
            _ => Meaning::Activity,
        }
    }
}

fn truncate(s: &str) -> String {
    let mut s = s.to_string();
    shared_types::text::cut_with_ellipsis(&mut s, MAX_TEXT);
    s
}

/// Follows the server's events until the server exits. Reconnects after a dropped stream
/// (bounded by the server's life: it stops as soon as the exit is seen).
pub fn follow(client: KiloClient, registry: Arc<Registry>, exit: ExitWatch) {
    tokio::spawn(async move {
        let mut interpreter = Interpreter::default();
        while exit.now().is_none() {
            match client.global_events().await {
                Ok(res) => {
                    let mut stream = res.bytes_stream().eventsource();
                    while let Some(Ok(event)) = stream.next().await {
                        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                            continue;
                        };
                        let Some((session, meaning)) = interpreter.interpret(&value) else {
                            continue;
                        };
                        let Some(agent) = registry.agent_for_session(&session) else { continue };
                        match meaning {
                            Meaning::Activity => agent.touch(),
                            Meaning::Busy(busy) => {
                                if let Some(reply) = agent.set_busy(busy) {
                                    registry.reply(&agent.id, reply);
                                }
                            }
                            Meaning::Event(kind, data) => agent.record(kind, data),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "kilo event stream unavailable"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(payload: Value) -> Value {
        json!({ "directory": "/w", "payload": payload })
    }

    #[test]
    fn tool_calls_become_one_event_per_state() {
        let mut i = Interpreter::default();
        let part = |status: &str| {
            wrap(json!({"type": "message.part.updated", "properties": {"sessionID": "s1", "part": {
            "type": "tool", "tool": "bash", "callID": "c1", "sessionID": "s1", "state": {"status": status, "metadata": {"exit": 0}}}}}))
        };
        let (s, m) = i.interpret(&part("running")).expect("session event");
        assert_eq!(s, "s1");
        assert_eq!(
            m,
            Meaning::Event(
                AgentEventKind::ToolCall,
                json!({"tool": "bash", "callId": "c1", "state": "running", "exit": 0})
            )
        );
        assert_eq!(i.interpret(&part("running")).expect("event").1, Meaning::Activity);
        assert!(matches!(
            i.interpret(&part("completed")).expect("event").1,
            Meaning::Event(AgentEventKind::ToolCall, _)
        ));
        // A finished call carries its input and output (for the live stream).
        let done = wrap(
            json!({"type": "message.part.updated", "properties": {"sessionID": "s1", "part": {
            "type": "tool", "tool": "bash", "callID": "c2", "state": {"status": "completed", "input": {"command": "echo hi"}, "output": "hi\n"}}}}),
        );
        let (_, m) = i.interpret(&done).expect("event");
        assert_eq!(
            m,
            Meaning::Event(
                AgentEventKind::ToolCall,
                json!({"tool": "bash", "callId": "c2", "state": "completed", "input": "{\"command\":\"echo hi\"}", "output": "hi\n"})
            )
        );
    }

    #[test]
    fn finished_text_errors_and_idle() {
        let mut i = Interpreter::default();
        let text = wrap(
            json!({"type": "message.part.updated", "properties": {"sessionID": "s1", "part": {"type": "text", "text": "all done", "time": {"start": 1, "end": 2}}}}),
        );
        assert_eq!(
            i.interpret(&text).expect("text").1,
            Meaning::Event(AgentEventKind::Text, json!({"text": "all done"}))
        );
        let streaming = wrap(
            json!({"type": "message.part.updated", "properties": {"sessionID": "s1", "part": {"type": "text", "text": "all", "time": {"start": 1}}}}),
        );
        assert_eq!(i.interpret(&streaming).expect("partial").1, Meaning::Activity);
        let err = wrap(
            json!({"type": "session.error", "properties": {"sessionID": "s1", "error": {"name": "APIError", "data": {"message": "boom"}}}}),
        );
        assert_eq!(
            i.interpret(&err).expect("error").1,
            Meaning::Event(AgentEventKind::Error, json!({"message": "boom", "source": "session"}))
        );
        let idle = wrap(json!({"type": "session.idle", "properties": {"sessionID": "s1"}}));
        assert_eq!(
            i.interpret(&idle).expect("idle").1,
            Meaning::Busy(false),
            "idle ends a turn, not the work"
        );
        let busy = wrap(
            json!({"type": "session.status", "properties": {"sessionID": "s1", "status": {"type": "busy"}}}),
        );
        assert_eq!(i.interpret(&busy).expect("busy").1, Meaning::Busy(true));
        let heartbeat = json!({"payload": {"type": "server.heartbeat", "properties": {}}});
        assert!(i.interpret(&heartbeat).is_none());
    }
}
