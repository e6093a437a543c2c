//! The RigDO's logic on a real SQLite (`native_db`): each op as the object runs it, natively.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::{json, Value};

use super::op::RigCall;
use super::schema::MIGRATIONS;
use super::Rig;
use crate::db::Db;
use crate::native_db::NativeDb;
use crate::scheduler::{self, Run, Witness};

/// One rig's storage and an id source; `rig()` is one request's view of it.
struct Fixture {
    db: NativeDb,
    new_id: Box<dyn Fn() -> String>,
}

impl Fixture {
    fn new() -> Self {
        let ids = Rc::new(Cell::new(0u64));
        let new_id = Box::new(move || {
            ids.set(ids.get() + 1);
            format!("id-{:04}", ids.get())
        });
        Self { db: NativeDb::with(MIGRATIONS), new_id }
    }

    fn rig(&self) -> Rig<'_, NativeDb> {
        Rig { db: &self.db, now: "2026-12-06T12:00:00.000Z".into(), new_id: &*self.new_id }
    }

    fn op(&self, op: Value) -> Result<Value, (u16, String)> {
        let call: RigCall = serde_json::from_value(op).expect("a rig op");
        self.rig()
            .handle(&call)
            .map(|ran| ran.data)
            .map_err(|e| (e.status(), e.public_message().to_string()))
    }

    fn configured() -> Self {
        let f = Self::new();
        f.op(json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1", "git_url": "https://example.com/o/r.git"}}}))
            .expect("configure");
        f
    }

    fn count(&self, table: &str) -> i64 {
        #[derive(serde::Deserialize)]
        struct N {
            n: i64,
        }
        self.db
            .first::<N>(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![])
            .expect("count")
            .map_or(0, |r| r.n)
    }
}

#[test]
fn an_unconfigured_rig_creates_nothing() {
    let f = Fixture::new();
    let creates = [
        json!({"op": "sling", "args": {"rig_id": "typo", "sling": {"title": "lost"}}}),
        json!({"op": "create_bead", "args": {"type": "issue", "title": "lost"}}),
        json!({"op": "register_agent", "args": {"role": "polecat", "name": "ghost", "identity": "ghost@typo"}}),
        json!({"op": "send_mail", "args": {"from_agent_id": "a", "to_agent_id": "b", "subject": "s", "body": "b"}}),
        json!({"op": "create_convoy", "args": {"rig_id": "typo", "convoy": {"title": "c", "beads": [{"title": "t"}]}}}),
        json!({"op": "create_escalation", "args": {"title": "stuck"}}),
    ];
    for op in creates {
        assert_eq!(f.op(op.clone()), Err((404, "Rig not found".into())), "{op}");
    }
    for table in ["beads", "agents", "mail", "bead_events"] {
        assert_eq!(f.count(table), 0, "{table}");
    }
    // Reads stay as they were: empty lists.
    assert_eq!(
        f.op(json!({"op": "list_beads", "args": {"limit": 50, "offset": 0}})),
        Ok(json!([]))
    );
}

#[test]
fn a_run_lost_with_its_boot_is_dispatched_again_as_a_lost_run() {
    let f = Fixture::configured();
    let slung = f
        .op(json!({"op": "sling", "args": {"rig_id": "r1", "sling": {"title": "work"}}}))
        .expect("sling");
    assert_eq!(slung["bead"]["status"], "in_progress", "{slung}");
    let due = f.rig().due_dispatches().expect("due");
    assert_eq!(due.len(), 1);
    let agent = due[0].agent.clone();

    f.rig().mark_dispatched(&agent, 1_000, true, Some("boot-a")).expect("dispatched");
    let dispatched = f.rig().dispatched().expect("dispatched");
    assert_eq!(dispatched.len(), 1);
    let run = dispatched[0].1.clone();
    assert_eq!(run, Run { dispatched_ms: 1_000, boot_id: Some("boot-a".into()) });

    // The restarted server does not know the agent: lost at once, not after the grace.
    let Witness::Exited(reason) = scheduler::witness(
        Some(404),
        &json!({"error": "x", "bootId": "boot-b"}),
        &run,
        2_000,
        180_000,
    ) else {
        panic!("a 404 from a new boot is a lost run");
    };
    // The run had called the API (its attempts reset): it counts as a lost run.
    f.rig().run_started(&agent.id).expect("run started");
    f.rig().mark_exited(&agent, run.dispatched_ms, &reason, true).expect("exited");
    let again = f.rig().due_dispatches().expect("due again");
    assert_eq!(
        (again.len(), again[0].generation, again[0].lost_runs),
        (1, 1, 1),
        "a new run of the same bead"
    );
    // The same witness repeated (a second pass that read the old dispatch) changes nothing.
    f.rig().mark_exited(&agent, run.dispatched_ms, &reason, true).expect("repeated");
    assert_eq!(f.rig().due_dispatches().expect("due")[0].generation, 1);

    // A run the town wound down (a budget) is dispatched again without counting as lost.
    f.rig().mark_dispatched(&agent, 3_000, true, Some("boot-b")).expect("dispatched");
    f.rig().run_started(&agent.id).expect("run started");
    let run = f.rig().dispatched().expect("dispatched")[0].1.clone();
    let status = json!({"status": "exited", "exitCode": 0, "bootId": "boot-b",
        "stopReason": "budget: 900 tokens used today"});
    let Witness::WoundDown(reason) = scheduler::witness(Some(200), &status, &run, 4_000, 180_000)
    else {
        panic!("a run stopped with a reason was wound down");
    };
    assert!(reason.contains("budget: 900 tokens"), "{reason}");
    f.rig().mark_exited(&agent, run.dispatched_ms, &reason, false).expect("wound down");
    let again = f.rig().due_dispatches().expect("due again");
    assert_eq!((again[0].generation, again[0].lost_runs), (2, 1), "not one more lost run");
}

/// What SQLite does for `sql`: a page must not read the whole table (`SCAN beads` without an
/// index) nor sort it (`USE TEMP B-TREE`).
fn assert_indexed(f: &Fixture, what: &str, sql: &str, params: Vec<crate::db::SqlValue>) {
    let plan = f.db.plan(sql, params);
    let scans = plan.lines().any(|l| l.starts_with("SCAN ") && !l.contains(" USING "));
    assert!(!scans && !plan.contains("TEMP B-TREE"), "{what}: {sql}\n{plan}");
}

#[test]
fn bead_pages_and_lookups_use_an_index_for_filter_and_order() {
    let f = Fixture::configured();
    let filter = |v: Value| -> crate::rig::beads::BeadFilter {
        serde_json::from_value(v).expect("a filter")
    };
    let page = |v: Value| super::beads::list_sql(&filter(v));
    for (what, args) in [
        ("default", json!({"limit": 50, "offset": 0})),
        ("status", json!({"status": "open", "limit": 50, "offset": 0})),
        ("type", json!({"bead_type": "issue", "limit": 50, "offset": 0})),
        ("assignee", json!({"assignee_agent_id": "a1", "limit": 50, "offset": 0})),
        ("convoy", json!({"convoy_id": "c1", "limit": 50, "offset": 0})),
    ] {
        let (sql, params) = page(args);
        assert_indexed(&f, what, &sql, params);
    }
    assert_indexed(&f, "get", "SELECT * FROM beads WHERE id = ?", crate::params!["b1"]);
}

/// Bead pages, lookups and creates at 0, 10,000 and 100,000 beads in one rig, on the SQL the
/// RigDO runs (`bench/bead-pages.sh` prints the table). Ignored in the suite: a benchmark, not
/// a test (no timing is asserted).
#[test]
#[ignore]
fn bench_bead_pages() {
    use std::time::Instant;
    let f = Fixture::configured();
    let filter = |v: Value| -> crate::rig::beads::BeadFilter {
        serde_json::from_value(v).expect("a filter")
    };
    let runs = 200;
    let time = |what: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..runs {
            what();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
    };
    println!("| beads | list-50 default (µs) | list-50 status=open (µs) | list-50 assignee (µs) | get (µs) | create (µs) |");
    println!("|---|---|---|---|---|---|");
    let mut made = 0;
    for target in [0, 10_000, 100_000] {
        // Seeded straight into the table (the rig's own insert, without its event log), in one
        // transaction: a benchmark of reads, not of seeding.
        f.db.exec("BEGIN", vec![]).expect("begin");
        while made < target {
            let status = ["open", "in_progress", "closed", "closed"][made % 4];
            f.db.exec(
                "INSERT INTO beads (id, type, status, title, assignee_agent_id, priority, labels, metadata, created_at, updated_at)
                 VALUES (?, 'issue', ?, 'seeded', ?, 'medium', '[]', '{}', ?, ?)",
                crate::params![format!("seed-{made}"), status, format!("agent-{}", made % 50), format!("2026-01-01T00:00:{:09}Z", made), "x"],
            )
            .expect("seed");
            made += 1;
        }
        f.db.exec("COMMIT", vec![]).expect("commit");
        let f = &f;
        let list = |v: Value| {
            let page = filter(v);
            move || {
                f.rig().list_beads(&page).expect("list");
            }
        };
        let default = time(&list(json!({"limit": 50, "offset": 0})));
        let open = time(&list(json!({"status": "open", "limit": 50, "offset": 0})));
        let assignee =
            time(&list(json!({"assignee_agent_id": "agent-7", "limit": 50, "offset": 0})));
        let get = time(&|| {
            f.rig().bead("seed-0").ok();
        });
        let create = time(&|| {
            f.op(json!({"op": "create_bead", "args": {"type": "issue", "title": "bench"}}))
                .expect("create");
        });
        println!(
            "| {target} | {default:.0} | {open:.0} | {assignee:.0} | {get:.0} | {create:.0} |"
        );
    }
}

#[test]
fn a_rig_stored_with_a_credential_in_its_url_says_how_to_be_rid_of_it() {
    let f = Fixture::new();
    // Stored before such URLs were refused (the op itself takes what it is given).
    let old = json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1",
        "git_url": "https://x-access-token:ghp_old@github.com/o/r.git"}}});
    f.op(old).expect("configure");
    let config = f.op(json!({"op": "get_config", "args": null})).expect("config");
    let warning = config["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("PUT /api/towns/t1/forge"), "{config}");
    assert!(!config.to_string().contains("ghp_old"), "the credential is never shown: {config}");
    let clean = json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1",
        "git_url": "https://github.com/o/r.git"}}});
    f.op(clean).expect("configure");
    assert!(f
        .op(json!({"op": "get_config", "args": null}))
        .expect("config")
        .get("warning")
        .is_none());
}
