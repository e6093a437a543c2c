//! The AgentIdentityDO's logic: one persistent record per agent identity, kept across sessions
//! and rigs (name, role, current rig and agent id, sessions, beads completed).

use serde::{Deserialize, Serialize};

use crate::api::{Incoming, Plan};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::params;
use crate::routes::{Endpoint, Rule};
use crate::rpc::IdentityOp;

/// An identity's record (internal); the path's identity is percent-encoded.
pub const ROUTES: &[Endpoint] = &[Endpoint::get("/api/identities/:identity", Rule::Internal, get)];

fn get(req: &Incoming) -> ApiResult<Plan> {
    Ok(Plan::Identity { identity: req.param("identity")?, op: IdentityOp::Get })
}

pub const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE identity (id INTEGER PRIMARY KEY CHECK (id = 1), identity TEXT NOT NULL, name TEXT NOT NULL,
        role TEXT NOT NULL, rig_id TEXT NOT NULL, town_id TEXT, agent_id TEXT NOT NULL,
        sessions INTEGER NOT NULL, beads_completed INTEGER NOT NULL, created_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL)",
    // One row per completed bead, so a retried completion is counted once.
    "CREATE TABLE completions (bead_id TEXT PRIMARY KEY, completed_at TEXT NOT NULL)",
]];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub identity: String,
    pub name: String,
    pub role: String,
    pub rig_id: String,
    pub town_id: Option<String>,
    pub agent_id: String,
    pub sessions: i64,
    pub beads_completed: i64,
    pub created_at: String,
    pub last_seen_at: String,
}

pub struct Identity<'a, D: Db> {
    pub db: &'a D,
    pub now: String,
}

impl<D: Db> Identity<'_, D> {
    pub fn get(&self) -> ApiResult<IdentityRecord> {
        self.db
            .first(
                "SELECT identity, name, role, rig_id, town_id, agent_id, sessions, beads_completed, created_at,
                        last_seen_at FROM identity WHERE id = 1",
                vec![],
            )?
            .ok_or_else(|| ApiError::not_found("identity"))
    }

    /// A new agent id for the identity counts as a new session.
    pub fn upsert(
        &self,
        identity: &str,
        agent_id: &str,
        name: &str,
        role: &str,
        rig_id: &str,
        town_id: Option<&str>,
    ) -> ApiResult<IdentityRecord> {
        match self.get() {
            Ok(existing) => {
                let new_session = i64::from(existing.agent_id != agent_id);
                self.db.exec(
                    "UPDATE identity SET name = ?, role = ?, rig_id = ?, town_id = COALESCE(?, town_id), agent_id = ?,
                            sessions = sessions + ?, last_seen_at = ? WHERE id = 1",
                    params![name, role, rig_id, town_id, agent_id, new_session, &self.now],
                )?;
            }
            Err(ApiError::NotFound(_)) => {
                self.db.exec(
                    "INSERT INTO identity (id, identity, name, role, rig_id, town_id, agent_id, sessions, beads_completed,
                                           created_at, last_seen_at) VALUES (1, ?, ?, ?, ?, ?, ?, 1, 0, ?, ?)",
                    params![identity, name, role, rig_id, town_id, agent_id, &self.now, &self.now],
                )?;
            }
            Err(e) => return Err(e),
        }
        self.get()
    }

    pub fn record_completion(&self, bead_id: &str) -> ApiResult<IdentityRecord> {
        self.get()?;
        let added = self.db.exec(
            "INSERT OR IGNORE INTO completions (bead_id, completed_at) VALUES (?, ?)",
            params![bead_id, &self.now],
        )?;
        if added > 0 {
            self.db.exec(
                "UPDATE identity SET beads_completed = beads_completed + 1, last_seen_at = ? WHERE id = 1",
                params![&self.now],
            )?;
        }
        self.get()
    }
}

#[cfg(test)]
mod native_tests {
    use super::*;
    use crate::native_db::NativeDb;

    #[test]
    fn sessions_and_completions_are_counted_once_each() {
        let db = NativeDb::with(MIGRATIONS);
        let id = Identity { db: &db, now: "2026-12-06T12:00:00.000Z".into() };
        assert_eq!(id.get().map_err(|e| e.status()), Err(404));
        assert_eq!(id.record_completion("b1").map_err(|e| e.status()), Err(404), "no identity yet");
        let who = "polecat/toast@r1";
        id.upsert(who, "a1", "toast", "polecat", "r1", Some("t1")).expect("first session");
        let again = id.upsert(who, "a1", "toast", "polecat", "r1", None).expect("same agent");
        assert_eq!(
            (again.sessions, again.town_id.as_deref()),
            (1, Some("t1")),
            "the same agent id is the same session"
        );
        assert_eq!(
            id.upsert(who, "a2", "toast", "polecat", "r2", None).expect("new agent").sessions,
            2
        );
        id.record_completion("b1").expect("done");
        assert_eq!(id.record_completion("b1").expect("a retried completion").beads_completed, 1);
        assert_eq!(id.record_completion("b2").expect("another bead").beads_completed, 2);
    }
}
