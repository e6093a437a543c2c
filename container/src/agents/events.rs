//! A bounded buffer of one agent's events with ids that increase by one per event, so a client
//! can poll `GET /agents/:id/events?after=N` and learn exactly how many events it missed when the
//! buffer overflowed.

use std::collections::VecDeque;

use shared_types::{AgentEvent, AgentEventKind, AgentEvents};

use crate::clock;

#[derive(Debug)]
pub struct EventBuffer {
    events: VecDeque<AgentEvent>,
    capacity: usize,
    /// Id of the most recent event; 0 before the first.
    last_id: u64,
}

impl EventBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
            last_id: 0,
        }
    }

    /// Appends an event, dropping the oldest one when full. Returns its id.
    pub fn push(&mut self, kind: AgentEventKind, data: serde_json::Value) -> u64 {
        self.last_id += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(AgentEvent { id: self.last_id, at: clock::now_iso(), kind, data });
        self.last_id
    }

    #[cfg(test)]
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Events with an id greater than `after`, at most `limit` of them, and how many events
    /// after `after` are no longer in the buffer.
    pub fn after(&self, after: u64, limit: usize) -> AgentEvents {
        let oldest = self.events.front().map_or(self.last_id + 1, |e| e.id);
        let dropped =
            oldest.saturating_sub(after.saturating_add(1)).min(self.last_id.saturating_sub(after));
        let events: Vec<AgentEvent> =
            self.events.iter().filter(|e| e.id > after).take(limit).cloned().collect();
        let next_after =
            events.last().map_or(after.max(oldest.saturating_sub(1)).min(self.last_id), |e| e.id);
        AgentEvents { events, next_after, dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn buffer_with(capacity: usize, n: u64) -> EventBuffer {
        let mut b = EventBuffer::new(capacity);
        for i in 0..n {
            b.push(AgentEventKind::Text, json!({ "i": i }));
        }
        b
    }

    #[test]
    fn ids_increase_by_one() {
        let b = buffer_with(10, 3);
        let ids: Vec<u64> = b.after(0, 100).events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(b.last_id(), 3);
    }

    #[test]
    fn after_returns_only_newer_events_and_a_cursor() {
        let b = buffer_with(10, 5);
        let page = b.after(3, 100);
        assert_eq!(page.events.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(page.next_after, 5);
        assert_eq!(page.dropped, 0);
        let empty = b.after(5, 100);
        assert!(empty.events.is_empty());
        assert_eq!(empty.next_after, 5);
    }

    #[test]
    fn overflow_drops_oldest_and_reports_the_gap() {
        let b = buffer_with(3, 10);
        let page = b.after(0, 100);
        assert_eq!(page.events.iter().map(|e| e.id).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(page.dropped, 7);
        assert_eq!(b.after(8, 100).dropped, 0);
        assert_eq!(b.after(5, 100).dropped, 2);
    }

    #[test]
    fn limit_pages_through() {
        let b = buffer_with(10, 5);
        let first = b.after(0, 2);
        assert_eq!(first.events.len(), 2);
        assert_eq!(first.next_after, 2);
        let second = b.after(first.next_after, 2);
        assert_eq!(second.events.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn a_cursor_from_the_future_returns_nothing() {
        let b = buffer_with(10, 2);
        let page = b.after(50, 10);
        assert!(page.events.is_empty());
        assert_eq!(page.dropped, 0);
    }
}
