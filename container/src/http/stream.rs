//! Stream tickets and the event stream they open.
//!
//! `POST /agents/:id/stream-ticket` (container token) returns a one-shot ticket valid for 60 s;
//! `GET /agents/:id/stream?ticket=T` (no token: a browser or proxy can hold the ticket) streams
//! the agent's events as server-sent events, starting with the buffered ones, until the agent
//! has ended and every event is sent.
//!
//! `GET /agents/:id/ws?ticket=T` is the same stream as a WebSocket (the Worker's live stream
//! route passes the upgrade through to it): JSON text frames `{agentId, id, event, data,
//! timestamp}`, buffered events first, then live ones, then an `agent.exited` frame and a close
//! (1000) once the run has ended. Each frame is sent only after the previous one was written:
//! a slow client holds its cursor back (backpressure), nothing queues up for it. A refused
//! ticket or an unknown agent gets one `error` frame and a close with code 4401 or 4404 and
//! the reason, so a browser can show it (an HTTP error on the upgrade is invisible to it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use shared_types::StreamTicket;

use super::extract::{AgentId, QueryParams};
use super::AppState;
use crate::clock;
use crate::error::{Error, Result};

const TICKET_TTL: Duration = Duration::from_secs(60);
/// Outstanding tickets are bounded; the oldest are dropped first.
const MAX_TICKETS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Tickets {
    map: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tickets {
    /// A new ticket for `agent_id`, valid for [`TICKET_TTL`].
    fn issue(&self, agent_id: &str) -> String {
        let ticket = crate::secret::random_token();
        let expires = Instant::now() + TICKET_TTL;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, exp)| *exp > now);
        if map.len() >= MAX_TICKETS {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(ticket.clone(), (agent_id.to_string(), expires));
        ticket
    }

    /// Consumes the ticket: true if it was valid for this agent and not expired.
    fn redeem(&self, ticket: &str, agent_id: &str) -> bool {
        self.check(ticket, agent_id).is_ok()
    }

    /// Consumes the ticket (whatever the outcome); `Err(why)` if it is not valid for this agent.
    fn check(&self, ticket: &str, agent_id: &str) -> std::result::Result<(), &'static str> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(ticket) {
            None => Err("unknown or already used stream ticket"),
            Some((agent, _)) if agent != agent_id => {
                Err("this stream ticket was issued for another agent")
            }
            Some((_, expires)) if expires <= Instant::now() => {
                Err("this stream ticket has expired (tickets are valid for 60 s)")
            }
            Some(_) => Ok(()),
        }
    }
}

pub async fn ticket(
    State(state): State<AppState>,
    AgentId(id): AgentId,
) -> Result<Json<StreamTicket>> {
    state.supervisor.agent(&id)?;
    let ticket = state.tickets.issue(&id);
    let expires_at = clock::iso(SystemTime::now() + TICKET_TTL);
    Ok(Json(StreamTicket { ticket, expires_at }))
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    ticket: String,
}

pub async fn stream(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if !state.tickets.redeem(&q.ticket, &id) {
        return Err(Error::Unauthorized);
    }
    let agent = state.supervisor.agent(&id)?;
    let events =
        futures_util::stream::unfold((agent, 0u64, false), |(agent, after, done)| async move {
            if done {
                return None;
            }
            loop {
                let (page, active) = {
                    let s = agent.lock();
                    (s.events.after(after, 100), s.status.is_active())
                };
                if !page.events.is_empty() {
                    let next = page.next_after;
                    let data = serde_json::to_string(&page.events).unwrap_or_else(|_| "[]".into());
                    return Some((
                        Ok(Event::default().event("events").data(data)),
                        (agent, next, false),
                    ));
                }
                if !active {
                    return Some((
                        Ok(Event::default().event("end").data("{}")),
                        (agent, after, true),
                    ));
                }
                // Bounded wait: wake on the next event or re-check every 15 s.
                let _ = tokio::time::timeout(Duration::from_secs(15), agent.changed()).await;
            }
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A WebSocket frame, as the reference's live stream has it (`id` added: the event's id).
fn frame(
    agent_id: &str,
    id: u64,
    event: &str,
    data: &serde_json::Value,
    timestamp: &str,
) -> String {
    let id = i64::try_from(id).unwrap_or(i64::MAX);
    shared_types::control::StreamFrame::new(agent_id, id, event, data, timestamp).text()
}

/// The event name of a kind (`tool_call`, `text`, ...).
fn kind_name(kind: shared_types::AgentEventKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

pub async fn websocket(
    State(state): State<AppState>,
    AgentId(id): AgentId,
    QueryParams(q): QueryParams<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let checked =
        state.tickets.check(&q.ticket, &id).map_err(|why| (4401u16, why.to_string())).and_then(
            |()| {
                state
                    .supervisor
                    .agent(&id)
                    .map_err(|_| (4404u16, format!("agent {id} not found in this container")))
            },
        );
    upgrade.on_upgrade(move |socket| async move {
        match checked {
            Ok(agent) => relay(socket, &id, agent).await,
            Err((code, reason)) => {
                tracing::info!(agent_id = %id, code, "live stream refused: {reason}");
                refuse(socket, &id, code, reason).await
            }
        }
    })
}

async fn refuse(mut socket: WebSocket, agent_id: &str, code: u16, reason: String) {
    let data = serde_json::json!({ "error": reason, "code": code });
    let _ = socket
        .send(Message::Text(
            frame(agent_id, 0, "error", &data, &clock::iso(SystemTime::now())).into(),
        ))
        .await;
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// After our close frame, how long the client has to answer with its own before the
/// connection is dropped. Dropping it at once can reset the TCP connection while the close
/// frame is still unread on the way (a proxy then passes on a reset instead of the close).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Most time a frame may take to be written before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

async fn relay(socket: WebSocket, agent_id: &str, agent: std::sync::Arc<crate::agents::Agent>) {
    let (mut tx, mut rx) = socket.split();
    // The client's side: only its close (or a broken connection) matters.
    let mut closed = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    });
    send_events(&mut tx, agent_id, &agent, &mut closed).await;
    // The closing handshake: the client's close (or its going away) ends `closed`. A finished
    // task may already have been polled to its end, which must not happen twice.
    if !closed.is_finished() {
        let _ = tokio::time::timeout(CLOSE_WAIT, &mut closed).await;
    }
    closed.abort();
}

async fn send_events(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    agent_id: &str,
    agent: &crate::agents::Agent,
    closed: &mut tokio::task::JoinHandle<()>,
) {
    let mut after = 0u64;
    loop {
        let (page, status) = {
            let s = agent.lock();
            (s.events.after(after, 100), s.status)
        };
        if !page.events.is_empty() {
            after = page.next_after;
            for e in &page.events {
                let text = frame(agent_id, e.id, &kind_name(e.kind), &e.data, &e.at);
                match tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Text(text.into()))).await
                {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            continue;
        }
        if !status.is_active() {
            let data = serde_json::json!({ "type": "agent.exited", "properties": { "reason": status.as_str() } });
            let _ = tx
                .send(Message::Text(
                    frame(agent_id, after, "agent.exited", &data, &clock::iso(SystemTime::now()))
                        .into(),
                ))
                .await;
            let _ = tx
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "agent run ended".into(),
                })))
                .await;
            return;
        }
        // Wake on the next change, the client's close, or every 15 s (a ping keeps proxies open).
        tokio::select! {
            _ = agent.changed() => {}
            _ = &mut *closed => return,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_one_shot_bound_to_their_agent_and_expire() {
        let t = Tickets::default();
        let a = t.issue("a1");
        assert_eq!(t.check(&a, "a1"), Ok(()));
        assert_eq!(t.check(&a, "a1"), Err("unknown or already used stream ticket"));
        let b = t.issue("a1");
        assert_eq!(t.check(&b, "a2"), Err("this stream ticket was issued for another agent"));
        assert!(t.check(&b, "a1").is_err(), "a refused ticket is used up too");
        let c = t.issue("a1");
        t.map.lock().unwrap().get_mut(&c).unwrap().1 = Instant::now();
        assert_eq!(
            t.check(&c, "a1"),
            Err("this stream ticket has expired (tickets are valid for 60 s)")
        );
        assert_eq!(t.check("nope", "a1"), Err("unknown or already used stream ticket"));
    }
}
