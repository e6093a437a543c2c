//! Stream tickets and the event stream they open.
//!
//! `POST /agents/:id/stream-ticket` (container token) returns a one-shot ticket valid for 60 s;
//! `GET /agents/:id/stream?ticket=T` (no token: a browser or proxy can hold the ticket) streams
//! the agent's events as server-sent events, starting with the buffered ones, until the agent
//! has ended and every event is sent.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
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
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(ticket) {
            Some((agent, expires)) => agent == agent_id && expires > Instant::now(),
            None => false,
        }
    }
}

pub async fn ticket(State(state): State<AppState>, AgentId(id): AgentId) -> Result<Json<StreamTicket>> {
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
    let events = futures_util::stream::unfold((agent, 0u64, false), |(agent, after, done)| async move {
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
                return Some((Ok(Event::default().event("events").data(data)), (agent, next, false)));
            }
            if !active {
                return Some((Ok(Event::default().event("end").data("{}")), (agent, after, true)));
            }
            // Bounded wait: wake on the next event or re-check every 15 s.
            let _ = tokio::time::timeout(Duration::from_secs(15), agent.changed()).await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
