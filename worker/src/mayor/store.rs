//! The TownDO's mayor tables and what is done with them in one synchronous step each.
//!
//! - `mayor`: one row once anyone has talked to the mayor (until then the town's notices are
//!   not kept: a town that never uses its mayor starts none). It holds the run generation (a
//!   start's `dispatchId`), when its token was issued, and the current turn's counters.
//! - `mayor_messages`: the transcript, in order: people's messages (`person`), the mayor's
//!   replies (`mayor`), and what the town told it (`town`: escalations, landed convoys).
//!   `delivered_at` is set once a message reached the mayor's session; `read_at` once the mayor
//!   read a town notice with `gt_mail_check`.
//! - `mayor_threads`: what is still open for the mayor (escalations it was told of, convoys it
//!   created), given back to it when it is resumed.

use serde::Deserialize;
use serde_json::{json, Value};

use super::TurnLimits;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::model::MayorMessage;
use crate::params;

pub const MIGRATION: &[&str] = &[
    "CREATE TABLE mayor (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL DEFAULT 0,
        token_issued_ms INTEGER, turn INTEGER NOT NULL DEFAULT 0, turn_beads INTEGER NOT NULL DEFAULT 0,
        turn_slings INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL)",
    "CREATE TABLE mayor_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, role TEXT NOT NULL, text TEXT NOT NULL,
        created_at TEXT NOT NULL, delivered_at TEXT, read_at TEXT, in_reply_to INTEGER)",
    "CREATE TABLE mayor_threads (kind TEXT NOT NULL, rig_id TEXT NOT NULL, ref_id TEXT NOT NULL, title TEXT NOT NULL,
        opened_at TEXT NOT NULL, closed_at TEXT, PRIMARY KEY (kind, rig_id, ref_id))",
    // The mayor's tool calls are retried through outages with an Idempotency-Key.
    crate::idempotency::TABLE,
    "CREATE INDEX idempotent_replies_created ON idempotent_replies (created_at)",
];

/// Who wrote a transcript message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Person,
    Mayor,
    Town,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Mayor => "mayor",
            Self::Town => "town",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub id: i64,
    pub role: String,
    pub text: String,
    pub created_at: String,
    pub delivered_at: Option<String>,
    /// On the mayor's replies: the newest message it had been given when it replied (a
    /// person who sent message N waits for a reply with `inReplyTo >= N`).
    #[serde(default)]
    pub in_reply_to: Option<i64>,
}

impl Message {
    /// The message as the API answers it.
    pub fn record(&self) -> MayorMessage {
        MayorMessage {
            id: self.id,
            role: self.role.clone(),
            text: self.text.clone(),
            created_at: self.created_at.clone(),
            in_reply_to: self.in_reply_to,
        }
    }
}

const MESSAGE_COLUMNS: &str = "id, role, text, created_at, delivered_at, in_reply_to";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Thread {
    pub kind: String,
    pub rig_id: String,
    pub ref_id: String,
    pub title: String,
    pub opened_at: String,
}

impl Thread {
    pub fn to_json(&self) -> Value {
        json!({ "kind": self.kind, "rigId": self.rig_id, "refId": self.ref_id, "title": self.title, "openedAt": self.opened_at })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct MayorRow {
    pub generation: i64,
    pub token_issued_ms: Option<i64>,
    pub turn: i64,
    pub turn_beads: i64,
    pub turn_slings: i64,
}

/// A `SELECT MAX(id) AS id` row (`None` on an empty table).
#[derive(Deserialize)]
struct MaxId {
    id: Option<i64>,
}

/// Newest transcript messages given back in full to a resumed mayor, at most this many bytes.
pub const RESUME_BYTES: usize = 12 * 1024;
/// Messages before those summarized by their first line.
pub const SUMMARY_LINES: i64 = 40;

/// What a resumed mayor is given of its transcript.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The newest messages, in full, oldest first.
    pub recent: Vec<Message>,
    /// The messages before those, oldest first, to be shown by their first line.
    pub summary: Vec<Message>,
    /// Older messages not shown at all.
    pub left_out: i64,
}

pub struct Store<'a, D: Db> {
    pub db: &'a D,
    pub now: String,
}

impl<D: Db> Store<'_, D> {
    pub fn row(&self) -> ApiResult<Option<MayorRow>> {
        self.db.first("SELECT generation, token_issued_ms, turn, turn_beads, turn_slings FROM mayor WHERE id = 1", vec![])
    }

    /// The mayor's row, made on first use.
    pub fn ensure(&self) -> ApiResult<MayorRow> {
        self.db.exec(
            "INSERT OR IGNORE INTO mayor (id, created_at) VALUES (1, ?)",
            params![&self.now],
        )?;
        self.row()?.ok_or_else(|| ApiError::Internal("the mayor's row is missing".into()))
    }

    /// Adds a message to the transcript; returns its id. The mayor's own replies are delivered
    /// by nature.
    pub fn post(&self, role: Role, text: &str) -> ApiResult<i64> {
        let delivered = (role == Role::Mayor).then(|| self.now.clone());
        let in_reply_to = match role {
            Role::Mayor => self.newest_delivered()?,
            _ => None,
        };
        self.db.exec(
            "INSERT INTO mayor_messages (role, text, created_at, delivered_at, in_reply_to) VALUES (?, ?, ?, ?, ?)",
            params![role.as_str(), text, &self.now, delivered, in_reply_to],
        )?;
        // The op runs alone in the object, so the newest id is the one just written.
        self.last_id()
    }

    /// Messages after `after`, oldest first.
    pub fn messages(&self, after: i64, limit: i64) -> ApiResult<Vec<Message>> {
        self.db.query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM mayor_messages WHERE id > ? ORDER BY id LIMIT ?"
            ),
            params![after, limit],
        )
    }

    /// The newest message (not the mayor's own) that reached the mayor.
    fn newest_delivered(&self) -> ApiResult<Option<i64>> {
        Ok(self.db.first::<MaxId>("SELECT MAX(id) AS id FROM mayor_messages WHERE role != 'mayor' AND delivered_at IS NOT NULL", vec![])?.and_then(|r| r.id))
    }

    pub fn last_id(&self) -> ApiResult<i64> {
        Ok(self
            .db
            .first::<MaxId>("SELECT MAX(id) AS id FROM mayor_messages", vec![])?
            .and_then(|r| r.id)
            .unwrap_or(0))
    }

    /// People's messages and town notices that have not reached the mayor yet, oldest first.
    pub fn pending(&self) -> ApiResult<Vec<Message>> {
        self.db.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM mayor_messages WHERE delivered_at IS NULL ORDER BY id LIMIT 50"),
            vec![],
        )
    }

    /// `ids` reached the mayor: that is a new turn (its counters start again).
    pub fn delivered(&self, ids: &[i64]) -> ApiResult<()> {
        for id in ids {
            self.db.exec(
                "UPDATE mayor_messages SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                params![&self.now, *id],
            )?;
        }
        self.db.exec(
            "UPDATE mayor SET turn = turn + 1, turn_beads = 0, turn_slings = 0 WHERE id = 1",
            vec![],
        )?;
        Ok(())
    }

    /// The transcript the mayor had before `before` (delivered messages only): the newest that
    /// fit in [`RESUME_BYTES`], oldest first, in full; then, as a summary of what came before
    /// them, the first line of each of the [`SUMMARY_LINES`] messages before those.
    pub fn thread_before(&self, before: i64) -> ApiResult<History> {
        let newest: Vec<Message> = self.db.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM mayor_messages WHERE id < ? AND delivered_at IS NOT NULL ORDER BY id DESC LIMIT 200"),
            params![before],
        )?;
        let mut bytes = 0;
        let fits = newest
            .iter()
            .take_while(|m| {
                bytes += m.text.len();
                bytes <= RESUME_BYTES
            })
            .count();
        let mut recent = newest[..fits].to_vec();
        recent.reverse();
        let oldest_kept = recent.first().map_or(before, |m| m.id);
        let mut summary: Vec<Message> = self.db.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM mayor_messages WHERE id < ? AND delivered_at IS NOT NULL ORDER BY id DESC LIMIT ?"),
            params![oldest_kept, SUMMARY_LINES],
        )?;
        summary.reverse();
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        let total = self.db.first::<Count>("SELECT COUNT(*) AS n FROM mayor_messages WHERE id < ? AND delivered_at IS NOT NULL", params![before])?.map_or(0, |c| c.n);
        let left_out = total - (recent.len() + summary.len()) as i64;
        Ok(History { recent, summary, left_out })
    }

    /// Run `generation` of the mayor started (the container took its start), with a token
    /// issued at `token_issued_ms`. A start that was refused counts no run, so a retried start
    /// names the same run (its `dispatchId`) until one is taken.
    pub fn started(&self, generation: i64, token_issued_ms: i64) -> ApiResult<()> {
        self.db.exec(
            "UPDATE mayor SET generation = MAX(generation, ?), token_issued_ms = ? WHERE id = 1",
            params![generation, token_issued_ms],
        )?;
        Ok(())
    }

    pub fn token_issued(&self, ms: i64) -> ApiResult<()> {
        self.db.exec("UPDATE mayor SET token_issued_ms = ? WHERE id = 1", params![ms])?;
        Ok(())
    }

    /// Counts `beads` new beads and `slings` slings against this turn's limits, all or
    /// nothing: past a limit it is a 429 that names it, and nothing is counted.
    pub fn count(&self, beads: i64, slings: i64, limits: &TurnLimits) -> ApiResult<()> {
        let row = self.ensure()?;
        if row.turn_beads + beads > limits.beads {
            return Err(ApiError::TooManyRequests(format!(
                "the mayor may create at most {} beads per turn (MAYOR_MAX_BEADS_PER_TURN); this turn has created {}",
                limits.beads, row.turn_beads
            )));
        }
        if row.turn_slings + slings > limits.slings {
            return Err(ApiError::TooManyRequests(format!(
                "the mayor may sling at most {} beads per turn (MAYOR_MAX_SLINGS_PER_TURN); this turn has slung {}",
                limits.slings, row.turn_slings
            )));
        }
        self.db.exec("UPDATE mayor SET turn_beads = turn_beads + ?, turn_slings = turn_slings + ? WHERE id = 1", params![beads, slings])?;
        Ok(())
    }

    /// Gives back what [`Self::count`] took for a call that then failed.
    pub fn uncount(&self, beads: i64, slings: i64) -> ApiResult<()> {
        self.db.exec(
            "UPDATE mayor SET turn_beads = MAX(0, turn_beads - ?), turn_slings = MAX(0, turn_slings - ?) WHERE id = 1",
            params![beads, slings],
        )?;
        Ok(())
    }

    pub fn open_thread(
        &self,
        kind: &str,
        rig_id: &str,
        ref_id: &str,
        title: &str,
    ) -> ApiResult<()> {
        self.db.exec(
            "INSERT OR IGNORE INTO mayor_threads (kind, rig_id, ref_id, title, opened_at) VALUES (?, ?, ?, ?, ?)",
            params![kind, rig_id, ref_id, title, &self.now],
        )?;
        Ok(())
    }

    pub fn close_thread(&self, kind: &str, rig_id: &str, ref_id: &str) -> ApiResult<()> {
        self.db.exec(
            "UPDATE mayor_threads SET closed_at = ? WHERE kind = ? AND rig_id = ? AND ref_id = ? AND closed_at IS NULL",
            params![&self.now, kind, rig_id, ref_id],
        )?;
        Ok(())
    }

    pub fn open_threads(&self) -> ApiResult<Vec<Thread>> {
        self.db.query("SELECT kind, rig_id, ref_id, title, opened_at FROM mayor_threads WHERE closed_at IS NULL ORDER BY opened_at LIMIT 100", vec![])
    }

    /// The town's notices the mayor has not read with `gt_mail_check`, marked read now.
    pub fn read_inbox(&self) -> ApiResult<Vec<Message>> {
        let unread: Vec<Message> = self.db.query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM mayor_messages WHERE role = 'town' AND read_at IS NULL ORDER BY id LIMIT 100"),
            vec![],
        )?;
        for m in &unread {
            self.db.exec(
                "UPDATE mayor_messages SET read_at = ? WHERE id = ?",
                params![&self.now, m.id],
            )?;
        }
        Ok(unread)
    }
}

#[cfg(test)]
mod native_tests {
    use super::*;
    use crate::native_db::NativeDb;

    fn store(db: &NativeDb) -> Store<'_, NativeDb> {
        Store { db, now: "2026-12-06T12:00:00.000Z".into() }
    }

    #[test]
    fn messages_are_delivered_once_and_replies_name_what_they_answer() {
        let db = NativeDb::with(crate::town::MIGRATIONS);
        let s = store(&db);
        s.ensure().expect("row");
        let first = s.post(Role::Person, "What is the plan?").expect("post");
        let second = s.post(Role::Person, "And the tests?").expect("post");
        assert_eq!(
            s.pending().expect("pending").iter().map(|m| m.id).collect::<Vec<_>>(),
            [first, second]
        );
        s.delivered(&[first, second]).expect("delivered");
        assert!(s.pending().expect("pending").is_empty(), "each message is delivered once");
        let reply = s.post(Role::Mayor, "Slung a convoy.").expect("reply");
        let all = s.messages(0, 10).expect("messages");
        assert_eq!(all.iter().find(|m| m.id == reply).and_then(|m| m.in_reply_to), Some(second));
        assert_eq!(s.messages(second, 10).expect("after").len(), 1, "?after= the last id seen");
    }

    #[test]
    fn a_turn_counts_all_or_nothing_and_starts_again_with_the_next_delivery() {
        let db = NativeDb::with(crate::town::MIGRATIONS);
        let s = store(&db);
        let limits = TurnLimits { beads: 3, slings: 2 };
        s.count(2, 2, &limits).expect("within the limits");
        let refused = s.count(2, 0, &limits).expect_err("past the bead limit");
        assert_eq!(refused.status(), 429);
        assert_eq!(
            s.row().expect("row").map(|r| (r.turn_beads, r.turn_slings)),
            Some((2, 2)),
            "nothing counted"
        );
        s.uncount(1, 1).expect("a failed call gives back");
        s.count(1, 1, &limits).expect("room again");
        let id = s.post(Role::Person, "next").expect("post");
        s.delivered(&[id]).expect("a new turn");
        assert_eq!(
            s.row().expect("row").map(|r| (r.turn, r.turn_beads, r.turn_slings)),
            Some((1, 0, 0))
        );
    }

    #[test]
    fn threads_open_once_and_close() {
        let db = NativeDb::with(crate::town::MIGRATIONS);
        let s = store(&db);
        s.open_thread("escalation", "r1", "b1", "stuck").expect("open");
        s.open_thread("escalation", "r1", "b1", "stuck").expect("a repeated notice");
        s.open_thread("convoy", "r1", "c1", "landing").expect("open");
        assert_eq!(s.open_threads().expect("open").len(), 2);
        s.close_thread("escalation", "r1", "b1").expect("close");
        assert_eq!(
            s.open_threads().expect("open").iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(),
            ["convoy"]
        );
    }
}
