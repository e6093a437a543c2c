//! `gt watch` on the Worker's live stream: a one-shot ticket (internal key), then the WebSocket
//! `…/container/agents/:agent/stream?ticket=` whose frames are `{agentId, id, event, data,
//! timestamp}`. The stream replays what is buffered (or, for a run its container no longer
//! knows, what the Worker kept) and ends when the run does.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Api, Error};

/// Prints the agent's frames until the run ends, the server closes, or `deadline`.
/// `print(event)` gets each frame as an event `{at, kind, data}`.
pub async fn follow(
    api: &Api,
    town: &str,
    agent: &str,
    deadline: Option<Instant>,
    mut print: impl FnMut(&Value),
) -> Result<(), Error> {
    let ticket = api
        .post(&format!("/api/towns/{town}/container/agents/{agent}/stream-ticket"), json!({}))
        .await?;
    let ticket = ticket["ticket"].as_str().ok_or_else(|| Error::Api {
        status: 502,
        message: "the stream ticket answer has no ticket".into(),
    })?;
    let url = format!(
        "{}/api/towns/{town}/container/agents/{agent}/stream?ticket={ticket}",
        api.ws_base()
    );
    let (mut socket, _) =
        tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| Error::Unreachable {
            url: api.ws_base(),
            detail: format!("the live stream did not open: {e}"),
        })?;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(());
        }
        let next = match left {
            Some(l) => match tokio::time::timeout(l, socket.next()).await {
                Ok(n) => n,
                Err(_) => return Ok(()),
            },
            None => socket.next().await,
        };
        match next {
            None => return Ok(()),
            Some(Err(e)) => {
                return Err(Error::Unreachable {
                    url: api.ws_base(),
                    detail: format!("the live stream broke: {e}"),
                })
            }
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                if frame["event"] == "error" {
                    continue; // the close that follows carries the reason
                }
                print(&as_event(&frame));
                if frame["event"] == "agent.exited" {
                    return Ok(());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) if f.code != CloseCode::Normal => Err(Error::Api {
                        status: u16::from(f.code),
                        message: format!("the live stream was refused: {}", f.reason),
                    }),
                    _ => Ok(()),
                };
            }
            Some(Ok(_)) => {}
        }
    }
}

/// A frame in the shape of a kept event, so one printer serves both.
pub fn as_event(frame: &Value) -> Value {
    let kind = match frame["event"].as_str() {
        Some("agent.exited") => "status",
        Some(k) => k,
        None => "unknown",
    };
    let mut data = frame["data"].clone();
    if frame["event"] == "agent.exited" {
        data =
            json!({ "status": frame["data"]["properties"]["reason"].as_str().unwrap_or("exited") });
    }
    json!({ "at": frame["timestamp"], "kind": kind, "data": data, "agentId": frame["agentId"], "id": frame["id"] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_as_events() {
        let f = json!({ "agentId": "a1", "id": 3, "event": "tool_call", "data": { "tool": "bash" }, "timestamp": "2026-01-01T00:00:00.000Z" });
        assert_eq!(as_event(&f)["kind"], "tool_call");
        let end = json!({ "agentId": "a1", "event": "agent.exited", "data": { "properties": { "reason": "failed" } }, "timestamp": "t" });
        assert_eq!(as_event(&end)["data"], json!({ "status": "failed" }));
    }
}
