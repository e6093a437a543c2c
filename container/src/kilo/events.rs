//! Following a `kilo serve` process's event stream and turning it into agent events.
//!
//! One follower per Kilo process reads `GET /global/event` (all directories, so all sessions of
//! a shared server) and attributes each event to an agent by `properties.sessionID`. Only what
//! a person watching an agent cares about becomes an event: tool calls as their state changes,
//! finished text, errors, and each finished model call's usage (tokens and cost, once per
//! message). Everything attributable counts as activity.
//!
//! `session.idle` is deliberately not treated as completion: it fires after every turn. An
//! agent is done when it calls `gt_done`, which the Worker learns about directly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared_types::{AgentEventKind, Tokens};

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
    /// The model began answering a step (its first chunk came back).
    Stepped,
    Event(AgentEventKind, Value),
    /// A model call finished: its message id, model, tokens and cost (`None`: not reported).
    Usage {
        message_id: String,
        model: String,
        tokens: Tokens,
        cost_usd: Option<f64>,
    },
}

/// Remembers each tool call's last state, so repeated `running` updates make one event, and the
/// messages whose usage was reported, so each counts once.
#[derive(Debug, Default)]
pub struct Interpreter {
    tool_states: HashMap<String, String>,
    counted: HashSet<String>,
}

/// Tool calls and messages remembered at most (then forgotten at once: a repeat after that is
/// as rare as it is harmless, the Worker drops a usage it already has).
const REMEMBERED: usize = 4096;

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
            "message.updated" => self.message(&props["info"]),
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

    /// A finished assistant message carries the call's usage: Kilo's `tokens` and `cost`. A
    /// cost of 0 with tokens spent means the provider's price is unknown to Kilo, not free.
    fn message(&mut self, info: &Value) -> Meaning {
        let finished = info["role"] == "assistant" && info["time"]["completed"].is_number();
        let Some(id) = info["id"].as_str().filter(|_| finished) else { return Meaning::Activity };
        if self.counted.contains(id) {
            return Meaning::Activity;
        }
        if self.counted.len() >= REMEMBERED {
            self.counted.clear();
        }
        self.counted.insert(id.to_string());
        let t = &info["tokens"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let tokens = Tokens {
            input_tokens: n(&t["input"]),
            output_tokens: n(&t["output"]),
            reasoning_tokens: n(&t["reasoning"]),
            cache_read_tokens: n(&t["cache"]["read"]),
            cache_write_tokens: n(&t["cache"]["write"]),
        };
        let cost = info["cost"].as_f64().filter(|c| c.is_finite() && *c >= 0.0);
        let cost_usd = cost.filter(|c| *c > 0.0 || tokens.total() == 0);
        let model = match (info["providerID"].as_str(), info["modelID"].as_str()) {
            (Some(p), Some(m)) => format!("{p}/{m}"),
            (None, Some(m)) => m.to_string(),
            _ => "unknown".to_string(),
        };
        Meaning::Usage { message_id: id.to_string(), model, tokens, cost_usd }
    }

    fn part(&mut self, part: &Value) -> Meaning {
        match part["type"].as_str() {
            Some("tool") => {
                let call = part["callID"].as_str().unwrap_or_default().to_string();
                let status = part["state"]["status"].as_str().unwrap_or("unknown").to_string();
                if self.tool_states.get(&call) == Some(&status) {
                    return Meaning::Activity;
                }
                if self.tool_states.len() >= REMEMBERED {
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
            Some("step-start") => Meaning::Stepped,
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
                            Meaning::Stepped => agent.stepped(),
                            Meaning::Busy(busy) => {
                                if let Some(reply) = agent.set_busy(busy) {
                                    registry.reply(&agent.id, reply);
                                }
                            }
                            Meaning::Event(kind, data) => agent.record(kind, data),
                            Meaning::Usage { message_id, model, tokens, cost_usd } => {
                                let spec = agent.spec();
                                let report = shared_types::UsageReport {
                                    message_id,
                                    model,
                                    bead_id: spec.bead_id.clone(),
                                    convoy_id: spec.convoy_id.clone(),
                                    dispatch_id: spec.dispatch_id.clone(),
                                    tokens,
                                    cost_usd,
                                };
                                if let Some(spool) = registry.usage_spool() {
                                    spool.add(&crate::usage_spool::Spooled {
                                        town_id: spec.town_id.clone(),
                                        rig_id: spec.rig_id.clone(),
                                        agent_id: agent.id.clone(),
                                        at: crate::clock::now_iso(),
                                        report: report.clone(),
                                    });
                                }
                                if let Ok(data) = serde_json::to_value(&report) {
                                    agent.record(AgentEventKind::Usage, data);
                                }
                            }
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
    fn a_finished_assistant_message_reports_its_usage_once() {
        let mut i = Interpreter::default();
        let message = |completed: bool, cost: f64| {
            wrap(json!({"type": "message.updated", "properties": {"info": {
                "id": "msg_1", "sessionID": "s1", "role": "assistant", "providerID": "scripted", "modelID": "m",
                "time": if completed { json!({"created": 1, "completed": 2}) } else { json!({"created": 1}) },
                "cost": cost, "tokens": {"input": 10, "output": 5, "reasoning": 2, "cache": {"read": 7, "write": 1}}}}}))
        };
        assert_eq!(i.interpret(&message(false, 0.0)).expect("event").1, Meaning::Activity);
        let (session, usage) = i.interpret(&message(true, 0.25)).expect("event");
        assert_eq!(session, "s1");
        let tokens = Tokens {
            input_tokens: 10,
            output_tokens: 5,
            reasoning_tokens: 2,
            cache_read_tokens: 7,
            cache_write_tokens: 1,
        };
        assert_eq!(
            usage,
            Meaning::Usage {
                message_id: "msg_1".into(),
                model: "scripted/m".into(),
                tokens,
                cost_usd: Some(0.25)
            }
        );
        assert_eq!(i.interpret(&message(true, 0.25)).expect("event").1, Meaning::Activity, "once");
        // A cost of 0 for tokens spent is an unknown price, never a free call.
        let mut fresh = Interpreter::default();
        let Meaning::Usage { cost_usd, .. } = fresh.interpret(&message(true, 0.0)).expect("e").1
        else {
            panic!("usage")
        };
        assert_eq!(cost_usd, None);
        let user = wrap(json!({"type": "message.updated", "properties": {"info": {
            "id": "msg_2", "sessionID": "s1", "role": "user", "time": {"created": 1, "completed": 2}}}}));
        assert_eq!(fresh.interpret(&user).expect("event").1, Meaning::Activity);
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
    fn a_step_start_is_the_model_answering() {
        let mut i = Interpreter::default();
        let step = wrap(
            json!({"type": "message.part.updated", "properties": {"part": {"type": "step-start", "sessionID": "s1"}}}),
        );
        assert_eq!(i.interpret(&step).expect("step"), ("s1".to_string(), Meaning::Stepped));
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
