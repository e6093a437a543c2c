//! The RigDO's SQLite schema. Append a migration to change it; never edit a shipped one.

pub const MIGRATIONS: &[&[&str]] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10];

const V1: &[&str] = &[
    "CREATE TABLE rig_config (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        rig_id TEXT NOT NULL, town_id TEXT NOT NULL, name TEXT,
        git_url TEXT NOT NULL, default_branch TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "CREATE TABLE beads (
        id TEXT PRIMARY KEY, type TEXT NOT NULL, status TEXT NOT NULL, title TEXT NOT NULL,
        body TEXT, assignee_agent_id TEXT, convoy_id TEXT, molecule_id TEXT,
        priority TEXT NOT NULL, labels TEXT NOT NULL, metadata TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, closed_at TEXT)",
    "CREATE INDEX beads_status ON beads (status)",
    "CREATE INDEX beads_assignee ON beads (assignee_agent_id)",
    "CREATE INDEX beads_convoy ON beads (convoy_id)",
    "CREATE TABLE agents (
        id TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, identity TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL, current_hook_bead_id TEXT, last_activity_at TEXT, checkpoint TEXT,
        dispatch_attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL)",
    "CREATE TABLE mail (
        id TEXT PRIMARY KEY, from_agent_id TEXT NOT NULL, to_agent_id TEXT NOT NULL,
        subject TEXT NOT NULL, body TEXT NOT NULL, delivered INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, delivered_at TEXT)",
    "CREATE INDEX mail_to ON mail (to_agent_id, delivered)",
    "CREATE TABLE review_queue (
        id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, bead_id TEXT NOT NULL, branch TEXT NOT NULL,
        pr_url TEXT, status TEXT NOT NULL, summary TEXT, created_at TEXT NOT NULL, processed_at TEXT)",
    "CREATE INDEX review_status ON review_queue (status)",
    "CREATE TABLE bead_events (
        id TEXT PRIMARY KEY, bead_id TEXT, agent_id TEXT, kind TEXT NOT NULL, data TEXT NOT NULL,
        created_at TEXT NOT NULL)",
    "CREATE INDEX bead_events_bead ON bead_events (bead_id)",
];

/// The scheduler's bookkeeping: when the hooked work was sent to the container and
/// when the agent last got a GUPP reminder, in milliseconds since the epoch.
const V2: &[&str] = &[
    "ALTER TABLE agents ADD COLUMN dispatched_ms INTEGER",
    "ALTER TABLE agents ADD COLUMN gupp_ms INTEGER",
];

/// A town that finishes its work: the refinery's settings and outcomes, rework
/// rounds, convoys, and the dispatch generation that makes a repeated start idempotent.
const V3: &[&str] = &[
    // Which run of the agent a dispatch is: bumped when a run is known to be gone, so a start
    // repeated for the same run carries the same dispatch id.
    "ALTER TABLE agents ADD COLUMN dispatch_gen INTEGER NOT NULL DEFAULT 0",
    // When a reminder or mail was last delivered into the agent's session (rate limit).
    "ALTER TABLE agents ADD COLUMN nudged_ms INTEGER",
    // The rig's merge settings (refinery.rs): gates as a JSON array of commands.
    "ALTER TABLE rig_config ADD COLUMN merge_settings TEXT NOT NULL DEFAULT '{}'",
    // Rework rounds so far, and the reason for the next one (NULL when none is pending).
    "ALTER TABLE beads ADD COLUMN rework_rounds INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE beads ADD COLUMN rework_note TEXT",
    // The merge's outcome: {state, commit, detail, output}.
    "ALTER TABLE review_queue ADD COLUMN result TEXT",
    "CREATE TABLE convoys (id TEXT PRIMARY KEY, title TEXT NOT NULL, created_at TEXT NOT NULL, landed_at TEXT)",
];

/// Idempotent agent calls (`idempotency.rs`): the first reply to each key, for a day.
const V4: &[&str] = &[
    "CREATE TABLE idempotent_replies (key TEXT PRIMARY KEY, status INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE INDEX idempotent_replies_created ON idempotent_replies (created_at)",
];

/// Runs lost after they started for real: attempts count failed starts only and
/// reset once the agent calls the API; lost runs have a bound of their own.
const V5: &[&str] = &["ALTER TABLE agents ADD COLUMN lost_runs INTEGER NOT NULL DEFAULT 0"];

/// The outbox to the town's mayor (`notices.rs`): escalations raised and convoys landed, sent
/// to the TownDO after the op that wrote them.
const V6: &[&str] = &["CREATE TABLE town_notices (id INTEGER PRIMARY KEY AUTOINCREMENT, notice TEXT NOT NULL, created_at TEXT NOT NULL)"];

/// The boot of the control server that took a dispatch (its start answer's `bootId`): a 404
/// from another boot means the run is lost now, not after the cold-start grace.
const V7: &[&str] = &["ALTER TABLE agents ADD COLUMN dispatch_boot TEXT"];

/// Bead lists are pages, newest first: an index per filter that also holds the order, so a page
/// never scans and sorts the whole table (it did: list time grew with the rig).
const V8: &[&str] = &[
    "CREATE INDEX beads_created ON beads (created_at)",
    "DROP INDEX beads_status",
    "CREATE INDEX beads_status ON beads (status, created_at)",
    "DROP INDEX beads_assignee",
    "CREATE INDEX beads_assignee ON beads (assignee_agent_id, created_at)",
    "DROP INDEX beads_convoy",
    "CREATE INDEX beads_convoy ON beads (convoy_id, created_at)",
    "CREATE INDEX beads_type ON beads (type, created_at)",
];

/// Pull requests (the `pr` merge strategy): the entry's pull request, and when its state was
/// last read from the forge (the bead keeps `pr_number` and `pr_url` in its metadata, so a
/// rework's entry follows the same pull request).
const V9: &[&str] = &[
    "ALTER TABLE review_queue ADD COLUMN pr_number INTEGER",
    "ALTER TABLE review_queue ADD COLUMN polled_ms INTEGER",
];

/// The forge's last answers with an `ETag`, for conditional reads of pull requests.
const V10: &[&str] = &["CREATE TABLE forge_answers (url TEXT PRIMARY KEY, etag TEXT NOT NULL,
        body TEXT NOT NULL, stored_ms INTEGER NOT NULL)"];
