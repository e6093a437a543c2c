//! `gt watch` on the Worker's live stream: a one-shot ticket (internal key), then the WebSocket
//! `…/container/agents/:agent/stream?ticket=` whose frames are `{agentId, id, event, data,
//! timestamp}`. The stream replays what is buffered (or, for a run its container no longer
//! knows, what the Worker kept) and ends when the run does.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use shared_types::control::{StreamFrame, StreamTicket};
use shared_types::records::KeptEvent;

use crate::api::{read, Api, Error};

/// Prints the agent's frames until the run ends, the server closes, or `deadline`.
/// `print(event)` gets each frame as an event `{at, kind, data}`.
pub async fn follow(
    api: &Api,
    town: &str,
    agent: &str,
    deadline: Option<Instant>,
    mut print: impl FnMut(&Watched),
) -> Result<(), Error> {
    let ticket: StreamTicket = read(
        &api.post(&format!("/api/towns/{town}/container/agents/{agent}/stream-ticket"), json!({}))
            .await?,
    )?;
    let ticket = ticket.ticket;
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
                let Ok(frame) = serde_json::from_str::<StreamFrame>(text.as_str()) else {
                    continue; // not a frame of ours: nothing to show
                };
                if frame.event == "error" {
                    continue; // the close that follows carries the reason
                }
                let exited = frame.event == "agent.exited";
                print(&Watched::from(frame));
                if exited {
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

/// An event as `gt watch` prints it, from a live frame or a kept event: one printer, one
/// JSON shape (`--json`: a line each).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Watched {
    pub at: String,
    pub kind: String,
    pub data: Value,
    pub agent_id: String,
    pub id: i64,
}

impl From<StreamFrame> for Watched {
    /// The last frame, `agent.exited`, reads as a `status` event with the run's end as its
    /// status, as the kept events have it.
    fn from(f: StreamFrame) -> Self {
        let (kind, data) = if f.event == "agent.exited" {
            let reason = f.data["properties"]["reason"].as_str().unwrap_or("exited");
            ("status".to_string(), json!({ "status": reason }))
        } else {
            (f.event, f.data)
        };
        Self { at: f.timestamp, kind, data, agent_id: f.agent_id, id: f.id }
    }
}

impl From<KeptEvent> for Watched {
    fn from(e: KeptEvent) -> Self {
        Self { at: e.at, kind: e.kind, data: e.data, agent_id: e.agent_id, id: e.seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_as_events() {
        let f = StreamFrame::new("a1", 3, "tool_call", &json!({ "tool": "bash" }), "t");
        let w = Watched::from(f);
        assert_eq!((w.kind.as_str(), w.id, w.data), ("tool_call", 3, json!({ "tool": "bash" })));
        let exited = json!({ "type": "agent.exited", "properties": { "reason": "failed" } });
        let end = Watched::from(StreamFrame::new("a1", 9, "agent.exited", &exited, "t"));
        assert_eq!((end.kind.as_str(), end.data), ("status", json!({ "status": "failed" })));
    }
}
