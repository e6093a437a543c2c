//! The RigDO's handler and its scheduler pass, run natively over SQLite with the town's
//! container answering as each test says (`crate::native_world`).

use serde_json::{json, Value};

use super::object::RigObject;
use super::op::RigCall;
use super::Rig;
use crate::effects::Effects;
use crate::error::ApiResult;
use crate::native_db::NativeDb;
use crate::native_world::{block_on, World};
use crate::routes::Method;

const VARS: &[(&str, &str)] = &[
    ("GASTOWN_MODEL", "test/model"),
    ("GASTOWN_JWT_SECRET", "a-secret-of-the-tests"),
    ("SCHEDULER_MAX_DISPATCH_ATTEMPTS", "3"),
];

struct Pass {
    world: World,
    db: NativeDb,
}

impl Pass {
    /// Rig `r1` of town `t1`, configured, with one bead slung; the polecat's id.
    fn slung() -> (Self, String) {
        let p = Self { world: World::new(VARS), db: NativeDb::with(super::schema::MIGRATIONS) };
        p.op(json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1", "git_url": "https://example.com/o/r.git"}}}))
            .expect("configure");
        let slung = p
            .op(json!({"op": "sling", "args": {"rig_id": "r1", "sling": {"title": "work"}}}))
            .expect("sling");
        let agent = slung["agent"]["id"].as_str().expect("the polecat").to_string();
        (p, agent)
    }

    fn op(&self, op: Value) -> ApiResult<Value> {
        let call: RigCall = serde_json::from_value(op).expect("a rig op");
        block_on(RigObject { db: &self.db, fx: &self.world }.handle(&call, None)).map(|r| r.0)
    }

    /// The alarm fires (and is due again only if the pass sets it).
    fn alarm(&self) {
        self.world.alarm.set(None);
        block_on(RigObject { db: &self.db, fx: &self.world }.alarm());
    }

    fn rig<T>(&self, f: impl FnOnce(&Rig<'_, NativeDb>) -> ApiResult<T>) -> T {
        let new_id = || "id-test".to_string();
        f(&Rig { db: &self.db, now: self.world.now_iso(), new_id: &new_id }).expect("rig")
    }

    fn paths(&self, method: Method) -> Vec<String> {
        let calls = self.world.container_calls.borrow();
        calls.iter().filter(|c| c.method == method).map(|c| c.path.clone()).collect()
    }
}

#[test]
fn hooked_work_arms_the_alarm_and_a_pass_dispatches_it() {
    let (p, agent) = Pass::slung();
    assert_eq!(
        p.world.alarms.borrow().as_slice(),
        &[super::object::FIRST_PASS_MS],
        "the first pass, soon"
    );
    p.world.container_answers(|c| match c.path.as_str() {
        "/agents/start" => (201, json!({"status": "starting", "bootId": "boot-1"})),
        _ => (200, json!({"status": "running", "bootId": "boot-1"})),
    });
    p.alarm();
    let start = p.world.container_calls.borrow()[0].clone();
    assert_eq!((start.method, start.path.as_str()), (Method::Post, "/agents/start"));
    let body = start.body.unwrap_or_default();
    assert_eq!(body["agentId"], json!(agent), "{body}");
    assert!(body["prompt"].as_str().is_some_and(|t| t.contains("work")), "{body}");
    let dispatched = p.rig(|r| r.dispatched());
    assert_eq!(dispatched.len(), 1);
    assert_eq!(dispatched[0].1.boot_id.as_deref(), Some("boot-1"));
    assert!(p.paths(Method::Get).contains(&format!("/agents/{agent}/status")), "witnessed");
    assert!(p.world.alarm.get().is_some(), "work remains: the alarm stays armed");
}

#[test]
fn a_full_container_queues_the_bead_without_spending_an_attempt() {
    let (p, _) = Pass::slung();
    p.world.container_answers(|_| (429, json!({"error": "at most 1 agents run at once"})));
    for _ in 0..5 {
        p.alarm();
    }
    let due = p.rig(|r| r.due_dispatches());
    assert_eq!((due.len(), due[0].attempts), (1, 0), "still waiting, no attempt spent");
    assert_eq!(p.paths(Method::Post).len(), 5, "one start per pass");
}

#[test]
fn a_rig_runs_on_the_shard_its_town_places_it_on_and_reports_one_that_did_not_answer() {
    let (p, agent) = Pass::slung();
    p.world.rig_shard.set(1);
    p.world.container_answers(|c| match (c.shard, c.path.as_str()) {
        (1, "/agents/start") => (503, json!({"error": "the control server did not answer"})),
        _ => (201, json!({"status": "starting"})),
    });
    p.alarm();
    let first = p.world.placements.borrow()[0].clone();
    assert_eq!((first.rig_id.as_str(), first.movable, first.unreachable), ("r1", true, None));
    assert!(p.world.container_calls.borrow().iter().all(|c| c.shard == 1), "every call: shard 1");
    assert_eq!(p.rig(|r| r.due_dispatches()).len(), 1, "the bead waits for the next pass");

    p.world.rig_shard.set(0);
    p.alarm();
    let second = p.world.placements.borrow()[1].clone();
    assert_eq!(second.unreachable, Some(1), "the town hears shard 1 did not answer");
    let calls = p.world.container_calls.borrow().clone();
    let start = calls.into_iter().rev().find(|c| c.path == "/agents/start").expect("a start");
    assert_eq!((start.shard, start.body.unwrap_or_default()["agentId"].clone()), (0, json!(agent)));
    assert_eq!(p.rig(|r| r.dispatched()).len(), 1, "dispatched on shard 0");

    p.alarm();
    let third = p.world.placements.borrow()[2].clone();
    assert_eq!((third.movable, third.unreachable), (false, None), "an agent runs: it stays");
}

#[test]
fn a_run_whose_shard_stops_answering_is_lost_after_the_grace_and_the_town_told() {
    let (p, agent) = Pass::slung();
    p.world.rig_shard.set(1);
    p.world.container_answers(|c| match c.path.as_str() {
        "/agents/start" => (201, json!({"status": "starting", "bootId": "boot-1"})),
        _ => (200, json!({"status": "running", "bootId": "boot-1"})),
    });
    p.alarm();
    assert_eq!(p.rig(|r| r.dispatched()).len(), 1);
    p.world.container_answers(|_| (503, json!({"error": "the control server did not answer"})));
    p.alarm();
    let now = p.world.now_ms.get();
    p.world.now_ms.set(now + 179_000);
    p.alarm();
    assert_eq!(p.rig(|r| r.dispatched()).len(), 1, "within the grace: still running");
    p.world.now_ms.set(now + 180_000);
    p.alarm();
    assert!(p.rig(|r| r.dispatched()).is_empty(), "lost with its shard");
    assert_eq!(p.rig(|r| r.due_dispatches())[0].agent.id, agent, "due again");
    p.alarm();
    let told = p.world.placements.borrow().last().cloned().expect("an ask");
    assert_eq!((told.movable, told.unreachable), (true, Some(1)));
}

#[test]
fn refused_starts_spend_attempts_until_the_bead_fails() {
    let (p, _) = Pass::slung();
    p.world.container_answers(|_| (500, json!({"error": "boom"})));
    for _ in 0..6 {
        p.alarm();
    }
    assert_eq!(p.paths(Method::Post).len(), 3, "SCHEDULER_MAX_DISPATCH_ATTEMPTS starts");
    let beads = p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}}));
    assert_eq!(beads.expect("beads")[0]["status"], "failed");
    assert!(p.world.alarm.get().is_none(), "no work left: the alarm is not armed again");
}

#[test]
fn without_a_runtime_the_pass_stops_until_new_work() {
    let (p, _) = Pass::slung();
    let no_runtime = format!("{}: set CONTAINER_URL", crate::container::NO_RUNTIME);
    p.world.container_answers(move |_| (503, json!({"error": no_runtime})));
    p.alarm();
    assert!(p.world.alarm.get().is_none());
    assert_eq!(p.rig(|r| r.due_dispatches())[0].attempts, 0);
}

/// The polecat's work is done and waits for the refinery; its review entry's id.
fn done(p: &Pass, agent: &str) -> String {
    p.world.container_answers(|c| match c.path.as_str() {
        "/agents/start" => (201, json!({"bootId": "boot-1"})),
        _ => (200, json!({"status": "running", "bootId": "boot-1"})),
    });
    p.alarm();
    let done =
        json!({"op": "done", "args": {"agent_id": agent, "done": {"branch": "polecat/x/work"}}});
    let reply = p.op(done).expect("done");
    reply["review_entry"]["id"].as_str().expect("a review entry").to_string()
}

fn review_status(p: &Pass, id: &str) -> String {
    let all = p.op(json!({"op": "list_reviews", "args": {"limit": 10, "offset": 0}}));
    let all = all.expect("reviews");
    let entry = all.as_array().and_then(|a| a.iter().find(|e| e["id"] == id)).cloned();
    entry.map(|e| e["status"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
}

#[test]
fn a_merge_whose_shard_stops_answering_is_started_again_after_the_grace() {
    let (p, agent) = Pass::slung();
    let entry = done(&p, &agent);
    p.world.container_answers(|c| match c.path.as_str() {
        "/rigs/r1/merges" => (202, json!({"state": "running"})),
        _ => (200, json!({"state": "running", "status": "exited", "exitCode": 0})),
    });
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running");
    p.world.container_answers(|_| (503, json!({"error": "the control server did not answer"})));
    p.alarm();
    let now = p.world.now_ms.get();
    p.world.now_ms.set(now + 179_000);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running", "within the grace: still running");
    p.world.now_ms.set(now + 180_000);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "pending", "lost with its shard: waiting again");
    p.alarm();
    let told = p.world.placements.borrow().last().cloned().expect("an ask");
    assert_eq!((told.movable, told.unreachable), (true, Some(0)), "the rig may move off it");
    let merges = p.paths(Method::Post).iter().filter(|x| x.as_str() == "/rigs/r1/merges").count();
    assert_eq!(merges, 2, "the merge is requested again");
}

#[test]
fn a_merge_the_container_refuses_as_invalid_fails_its_entry() {
    let (p, agent) = Pass::slung();
    let entry = done(&p, &agent);
    p.world.container_answers(|c| match c.path.as_str() {
        "/rigs/r1/merges" => (400, json!({"error": "branch: not a branch name"})),
        _ => (404, json!({"error": "no"})),
    });
    p.alarm();
    assert_eq!(review_status(&p, &entry), "failed");
}

#[test]
fn a_merged_branch_closes_its_bead() {
    let (p, agent) = Pass::slung();
    let entry = done(&p, &agent);
    p.world.container_answers(|c| match c.path.as_str() {
        "/rigs/r1/merges" => (202, json!({})),
        _ => (200, json!({"reviewId": "x", "state": "running"})),
    });
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running", "requested, not merged yet");
    let merged = json!({"reviewId": entry, "state": "merged", "commit": "abc123"});
    p.world.container_answers(move |_| (200, merged.clone()));
    p.alarm();
    assert_eq!(review_status(&p, &entry), "merged");
    let beads = p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}}));
    assert_eq!(beads.expect("beads")[0]["status"], "closed");

    // The next start tells the container the default branch has moved since the first.
    p.op(json!({"op": "sling", "args": {"rig_id": "r1", "sling": {"title": "more"}}}))
        .expect("sling");
    p.world.container_answers(|_| (201, json!({"bootId": "boot-1"})));
    p.alarm();
    let calls = p.world.container_calls.borrow();
    let seen: Vec<_> = calls
        .iter()
        .filter(|c| c.path == "/agents/start")
        .map(|c| c.body.as_ref().map(|b| b["mergesSeen"].clone()))
        .collect();
    assert_eq!(seen, [Some(json!(0)), Some(json!(1))], "{seen:?}");
}

/// A pull request on the forge stand-in, as the test moves it along.
#[derive(Default)]
struct Pull {
    opened: u32,
    head: String,
    checks: Vec<(String, Option<String>)>,
    reviews: Vec<(String, String)>,
    open: bool,
    merged: bool,
    merges: Vec<Value>,
    /// Reads of the pull request answered 304 (its `ETag` was sent and it had not changed).
    not_modified: u32,
}

/// A strong `ETag` of a body (FNV-1a), as a forge would make one.
fn etag_of(body: &str) -> String {
    let hash = body
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("\"{hash:016x}\"")
}

/// Rig `r1` reviewing through pull requests (one approval required), its forge answering from
/// `pull`; the polecat's id.
fn pr_rig(pull: &std::rc::Rc<std::cell::RefCell<Pull>>) -> (Pass, String) {
    let p = Pass { world: World::new(VARS), db: NativeDb::with(super::schema::MIGRATIONS) };
    p.op(json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1",
        "git_url": "https://github.com/org/app.git", "merge_strategy": "pr", "require_review": 1}}}))
        .expect("configure");
    *p.world.forge_token.borrow_mut() =
        Some(json!({"kind": "github_app", "api_url": "https://api.github.test", "token": "ghs_t"}));
    let pull = pull.clone();
    p.world.forge_answers(move |req| {
        let mut pr = pull.borrow_mut();
        let path = req.url.strip_prefix("https://api.github.test/repos/org/app").unwrap_or("?");
        let (status, body) = match (req.method, path) {
            (Method::Post, "/pulls") => {
                pr.opened += 1;
                pr.open = true;
                (201, json!({"number": 7, "html_url": "https://github.test/org/app/pull/7"}))
            }
            (Method::Get, "/pulls/7") => {
                let body = json!({"state": if pr.open { "open" } else { "closed" },
                    "merged": pr.merged, "merge_commit_sha": pr.merged.then_some("m1"), "mergeable": true,
                    "head": {"sha": pr.head}});
                let etag = etag_of(&body.to_string());
                let asked = req.headers.iter().find(|(k, _)| k == "if-none-match").map(|(_, v)| v.clone());
                if asked.as_deref() == Some(etag.as_str()) {
                    pr.not_modified += 1;
                    return crate::effects::Inbound::new(304, "");
                }
                let mut answer = crate::effects::Inbound::new(200, body.to_string());
                answer.headers.push(("etag".into(), etag));
                return answer;
            }
            (Method::Get, p) if p.ends_with("/check-runs") => (200, json!({"check_runs": pr.checks.iter().map(|(n, c)|
                json!({"name": n, "status": if c.is_some() { "completed" } else { "in_progress" }, "conclusion": c,
                       "output": {"summary": format!("{n} said so")}})).collect::<Vec<_>>()})),
            (Method::Get, p) if p.ends_with("/status") => (200, json!({"state": "success", "statuses": []})),
            (Method::Get, "/pulls/7/reviews") => (200, json!(pr.reviews.iter().map(|(u, s)|
                json!({"user": {"login": u}, "state": s, "body": "please fix", "commit_id": pr.head})).collect::<Vec<_>>())),
            (Method::Get, "/pulls/7/comments") => (200, json!([])),
            (Method::Put, "/pulls/7/merge") => {
                pr.merges.push(serde_json::from_str(req.body.as_deref().unwrap_or("{}")).unwrap_or_default());
                pr.merged = true;
                pr.open = false;
                (200, json!({"merged": true, "sha": "m1"}))
            }
            _ => (404, json!({"message": "Not Found"})),
        };
        crate::effects::Inbound::new(status, body.to_string())
    });
    let slung = p.op(json!({"op": "sling", "args": {"rig_id": "r1", "sling": {"title": "work"}}}));
    let agent = slung.expect("sling")["agent"]["id"].as_str().expect("polecat").to_string();
    (p, agent)
}

fn bead_of(p: &Pass) -> Value {
    let beads =
        p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}})).expect("beads");
    beads
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "issue").cloned())
        .unwrap_or_default()
}

#[test]
fn a_pull_request_is_opened_reworked_on_a_failed_check_and_merged_once_approved_and_green() {
    let pull =
        std::rc::Rc::new(std::cell::RefCell::new(Pull { head: "h1".into(), ..Pull::default() }));
    let (p, agent) = pr_rig(&pull);
    pull.borrow_mut().checks = vec![("ci".into(), Some("failure".into()))];
    let first = done(&p, &agent);
    p.alarm();
    assert_eq!(pull.borrow().opened, 1);
    assert_eq!(review_status(&p, &first), "rework", "the failed check sends it back");
    let bead = bead_of(&p);
    assert_eq!(bead["metadata"]["pr_number"], 7, "{bead}");
    assert_eq!(bead["metadata"]["pr_url"], "https://github.test/org/app/pull/7");

    // The polecat pushes a fix to the same branch: the same pull request, checked again.
    {
        let mut pr = pull.borrow_mut();
        pr.head = "h2".into();
        pr.checks = vec![("ci".into(), None)];
    }
    let second = done(&p, &agent);
    p.world.now_ms.set(p.world.now_ms.get() + 1);
    p.alarm();
    assert_eq!(review_status(&p, &second), "running", "checks still running");
    let entry = p.op(json!({"op": "get_review", "args": {"entry_id": second}})).expect("entry");
    assert_eq!(
        (entry["pr_number"].clone(), entry["pr_url"].clone()),
        (json!(7), json!("https://github.test/org/app/pull/7"))
    );

    // Read again after PR_POLL_MS, conditionally: unchanged, the forge answers 304 and the
    // kept answer decides (checks still running).
    p.world.now_ms.set(p.world.now_ms.get() + 30_000);
    p.alarm();
    assert_eq!((pull.borrow().not_modified, review_status(&p, &second).as_str()), (1, "running"));

    // Read again only once PR_POLL_MS has passed; green and approved, it is merged at its head.
    pull.borrow_mut().checks = vec![("ci".into(), Some("success".into()))];
    pull.borrow_mut().reviews = vec![("ann".into(), "APPROVED".into())];
    let calls = p.world.forge_calls.borrow().len();
    p.alarm();
    assert_eq!(p.world.forge_calls.borrow().len(), calls, "not due yet");
    p.world.now_ms.set(p.world.now_ms.get() + 30_000);
    p.alarm();
    assert_eq!(review_status(&p, &second), "merged");
    assert_eq!(bead_of(&p)["status"], "closed");
    let pr = pull.borrow();
    assert_eq!(
        (pr.opened, pr.merges.clone()),
        (1, vec![json!({"sha": "h2", "merge_method": "merge"})])
    );
    let auth =
        p.world.forge_calls.borrow()[0].headers.iter().find(|(k, _)| k == "authorization").cloned();
    assert_eq!(auth.map(|a| a.1), Some("Bearer ghs_t".to_string()));
    assert!(p.paths(Method::Post).contains(&"/rigs/r1/worktrees/remove".to_string()));
}

#[test]
fn a_pull_request_closed_by_a_person_returns_the_bead_and_escalates() {
    let pull =
        std::rc::Rc::new(std::cell::RefCell::new(Pull { head: "h1".into(), ..Pull::default() }));
    let (p, agent) = pr_rig(&pull);
    let entry = done(&p, &agent);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running", "waits for its approval");
    pull.borrow_mut().open = false;
    p.world.now_ms.set(p.world.now_ms.get() + 30_000);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "failed");
    let bead = bead_of(&p);
    assert_eq!(
        (bead["status"].clone(), bead["assignee_agent_id"].clone()),
        (json!("open"), Value::Null)
    );
    let beads =
        p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}})).expect("beads");
    let escalation =
        beads.as_array().and_then(|b| b.iter().find(|b| b["type"] == "escalation").cloned());
    let escalation = escalation.expect("an escalation");
    assert!(
        escalation["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Pull request closed without merging")),
        "{escalation}"
    );
}

#[test]
fn without_a_forge_a_pull_request_entry_fails_and_says_how_to_configure_one() {
    let pull = std::rc::Rc::new(std::cell::RefCell::new(Pull::default()));
    let (p, agent) = pr_rig(&pull);
    *p.world.forge_token.borrow_mut() = None;
    let entry = done(&p, &agent);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "failed");
    let got = p.op(json!({"op": "get_review", "args": {"entry_id": entry}})).expect("entry");
    assert!(
        got["result"]["detail"].as_str().is_some_and(|d| d.contains("PUT /api/towns/t1/forge")),
        "{got}"
    );
}

#[test]
fn a_rate_limited_forge_gets_no_request_until_the_time_it_names() {
    let pull =
        std::rc::Rc::new(std::cell::RefCell::new(Pull { head: "h1".into(), ..Pull::default() }));
    let (p, agent) = pr_rig(&pull);
    let entry = done(&p, &agent);
    p.world.forge_answers(|_| crate::effects::Inbound {
        headers: vec![("retry-after".into(), "120".into())],
        ..crate::effects::Inbound::new(
            403,
            r#"{"message": "You have exceeded a secondary rate limit."}"#,
        )
    });
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running", "waits, not failed");
    let calls = p.world.forge_calls.borrow().len();
    assert_eq!(calls, 1, "stopped at the first refusal");
    p.world.now_ms.set(p.world.now_ms.get() + 119_000);
    p.alarm();
    assert_eq!(p.world.forge_calls.borrow().len(), calls, "no request before the time is up");
    p.world.now_ms.set(p.world.now_ms.get() + 2_000);
    p.alarm();
    assert!(p.world.forge_calls.borrow().len() > calls, "asked again after it");
}

#[test]
fn a_pull_request_without_checks_waits_for_them_to_start_before_it_is_merged() {
    let pull = std::rc::Rc::new(std::cell::RefCell::new(Pull {
        head: "h1".into(),
        reviews: vec![("ann".into(), "APPROVED".into())],
        ..Pull::default()
    }));
    let (p, agent) = pr_rig(&pull);
    let entry = done(&p, &agent);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running", "no check has started yet");
    p.world.now_ms.set(p.world.now_ms.get() + 30_000);
    p.alarm();
    assert!(pull.borrow().merges.is_empty(), "still within the minute");
    p.world.now_ms.set(p.world.now_ms.get() + 31_000);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "merged", "none came: merged");
}

/// A merge request on the GitLab stand-in, as the test moves it along.
#[derive(Default)]
struct MergeRequest {
    opened: u32,
    exists: bool,
    head: String,
    /// Job name and GitLab status.
    jobs: Vec<(String, String)>,
    /// Unresolved diff threads: author, text, the head they were started on.
    threads: Vec<(String, String, String)>,
    approved_by: Vec<String>,
    state: String,
    merges: Vec<Value>,
}

/// Rig `r1` on a GitLab subgroup project, reviewing through merge requests (one approval).
fn mr_rig(mr: &std::rc::Rc<std::cell::RefCell<MergeRequest>>) -> (Pass, String) {
    let p = Pass { world: World::new(VARS), db: NativeDb::with(super::schema::MIGRATIONS) };
    p.op(json!({"op": "configure", "args": {"rig_id": "r1", "config": {"town_id": "t1",
        "git_url": "https://gitlab.test/group/sub/app.git", "merge_strategy": "pr", "require_review": 1,
        "merge_method": "squash"}}}))
        .expect("configure");
    *p.world.forge_token.borrow_mut() = Some(
        json!({"kind": "gitlab", "api_url": "https://gitlab.test/api/v4", "token": "glpat-t"}),
    );
    let mr = mr.clone();
    p.world.forge_answers(move |req| {
        let mut m = mr.borrow_mut();
        let path = req.url.strip_prefix("https://gitlab.test/api/v4/projects/group%2Fsub%2Fapp");
        let path = path.unwrap_or("?").split('?').next().unwrap_or("");
        let (status, body) = match (req.method, path) {
            (Method::Post, "/merge_requests") if m.exists => {
                (409, json!({"message": ["Another open merge request already exists for this source branch: !3"]}))
            }
            (Method::Post, "/merge_requests") => {
                m.opened += 1;
                m.exists = true;
                (201, json!({"iid": 3, "web_url": "https://gitlab.test/group/sub/app/-/merge_requests/3"}))
            }
            (Method::Get, "/merge_requests") => (200, json!([{"iid": 3, "web_url": "https://gitlab.test/group/sub/app/-/merge_requests/3"}])),
            (Method::Get, "/merge_requests/3") => (200, json!({"state": m.state, "sha": m.head,
                "merge_commit_sha": null, "squash_commit_sha": (m.state == "merged").then_some("sq1"),
                "detailed_merge_status": if m.approved_by.is_empty() { "not_approved" } else { "mergeable" },
                "has_conflicts": false})),
            (Method::Get, p) if p.ends_with("/statuses") => (200, json!(m.jobs.iter().map(|(n, s)|
                json!({"name": n, "status": s, "description": format!("{n} said so"), "allow_failure": false})).collect::<Vec<_>>())),
            (Method::Get, "/merge_requests/3/notes") => (200, json!(m.threads.iter().map(|(u, b, h)|
                json!({"type": "DiffNote", "system": false, "resolvable": true, "resolved": false, "body": b,
                       "author": {"username": u}, "position": {"new_path": "src/a.rs", "head_sha": h}})).collect::<Vec<_>>())),
            (Method::Get, "/merge_requests/3/reviewers") => (200, json!([])),
            (Method::Get, "/merge_requests/3/approvals") => (200, json!({"approved_by":
                m.approved_by.iter().map(|u| json!({"user": {"username": u}})).collect::<Vec<_>>()})),
            (Method::Put, "/merge_requests/3/merge") => {
                m.merges.push(serde_json::from_str(req.body.as_deref().unwrap_or("{}")).unwrap_or_default());
                m.state = "merged".into();
                (200, json!({"state": "merged", "merge_commit_sha": null, "squash_commit_sha": "sq1", "sha": m.head}))
            }
            _ => (404, json!({"message": "404 Not Found"})),
        };
        crate::effects::Inbound::new(status, body.to_string())
    });
    let slung = p.op(json!({"op": "sling", "args": {"rig_id": "r1", "sling": {"title": "work"}}}));
    let agent = slung.expect("sling")["agent"]["id"].as_str().expect("polecat").to_string();
    (p, agent)
}

#[test]
fn a_gitlab_merge_request_is_reworked_on_a_failed_job_and_a_thread_then_squashed_once_approved() {
    let mr = std::rc::Rc::new(std::cell::RefCell::new(MergeRequest {
        head: "h1".into(),
        state: "opened".into(),
        jobs: vec![("test".into(), "failed".into())],
        ..MergeRequest::default()
    }));
    let (p, agent) = mr_rig(&mr);
    let first = done(&p, &agent);
    p.alarm();
    assert_eq!(mr.borrow().opened, 1);
    assert_eq!(review_status(&p, &first), "rework", "the failed job sends it back");
    let got = p.op(json!({"op": "get_review", "args": {"entry_id": first}})).expect("entry");
    assert_eq!(got["result"]["state"], "checks_failed", "{got}");
    assert_eq!(got["result"]["output"], "test: test said so");
    assert_eq!(
        bead_of(&p)["metadata"]["pr_url"],
        "https://gitlab.test/group/sub/app/-/merge_requests/3"
    );

    // Fixed, but a reviewer opens a thread on the new head: back again, with the thread's text.
    {
        let mut m = mr.borrow_mut();
        m.head = "h2".into();
        m.jobs = vec![("test".into(), "success".into())];
        m.threads = vec![("ann".into(), "use a constant".into(), "h2".into())];
    }
    let second = done(&p, &agent);
    p.world.now_ms.set(p.world.now_ms.get() + 1);
    p.alarm();
    let got = p.op(json!({"op": "get_review", "args": {"entry_id": second}})).expect("entry");
    assert_eq!(got["result"]["state"], "changes_requested", "{got}");
    assert_eq!(got["result"]["output"], "ann: src/a.rs: use a constant");

    // The thread stays open on the old head; approved and green, the request is squashed.
    {
        let mut m = mr.borrow_mut();
        m.head = "h3".into();
        m.approved_by = vec!["ann".into()];
    }
    let third = done(&p, &agent);
    p.world.now_ms.set(p.world.now_ms.get() + 61_000);
    p.alarm();
    assert_eq!(review_status(&p, &third), "merged");
    assert_eq!(bead_of(&p)["status"], "closed");
    let m = mr.borrow();
    assert_eq!((m.opened, m.merges.clone()), (1, vec![json!({"sha": "h3", "squash": true})]));
    let calls = p.world.forge_calls.borrow();
    let token = calls[0].headers.iter().find(|(k, _)| k == "private-token").map(|h| h.1.clone());
    assert_eq!(token.as_deref(), Some("glpat-t"));
}

#[test]
fn a_gitlab_merge_request_that_exists_already_is_followed_not_opened_again() {
    let mr = std::rc::Rc::new(std::cell::RefCell::new(MergeRequest {
        head: "h1".into(),
        state: "opened".into(),
        exists: true,
        jobs: vec![("test".into(), "running".into())],
        ..MergeRequest::default()
    }));
    let (p, agent) = mr_rig(&mr);
    let entry = done(&p, &agent);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "running", "the job still runs");
    let got = p.op(json!({"op": "get_review", "args": {"entry_id": entry}})).expect("entry");
    assert_eq!((got["pr_number"].clone(), mr.borrow().opened), (json!(3), 0));
    // Merged by a person in GitLab: the bead closes.
    mr.borrow_mut().state = "merged".into();
    p.world.now_ms.set(p.world.now_ms.get() + 30_000);
    p.alarm();
    assert_eq!(review_status(&p, &entry), "merged");
    let got = p.op(json!({"op": "get_review", "args": {"entry_id": entry}})).expect("entry");
    assert_eq!(got["result"]["commit"], "sq1");
}

#[test]
fn a_bead_over_its_token_budget_fails_unhooked_and_escalates_once() {
    let (p, agent) = Pass::slung();
    let beads = p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}}));
    let bead = beads.expect("beads")[0]["id"].as_str().expect("bead").to_string();
    let stop = json!({"op": "stop_over_budget", "args": {"bead_id": bead,
        "reason": "budget: bead has used 900 tokens and the town allows 500 per bead"}});
    let stopped = p.op(stop.clone()).expect("stopped");
    assert_eq!(
        (stopped["stopped"].clone(), stopped["agent_id"].clone()),
        (json!(true), json!(agent))
    );
    let all = p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}})).expect("beads");
    let of_type = |t: &str| {
        all.as_array().expect("list").iter().filter(|b| b["type"] == t).cloned().collect::<Vec<_>>()
    };
    assert_eq!(of_type("issue")[0]["status"], "failed");
    let escalations = of_type("escalation");
    assert_eq!(escalations.len(), 1);
    assert!(escalations[0]["body"].as_str().is_some_and(|b| b.contains("900 tokens")));
    assert!(p.rig(|r| r.due_dispatches()).is_empty(), "the agent is unhooked: no new run");
    let told = p.world.mayor_notices.borrow().clone();
    assert_eq!(told.len(), 1, "the mayor hears of it: {told:?}");
    assert!(told[0].title.starts_with("Bead over its token budget"), "{}", told[0].title);
    // Reported again (a later batch): nothing more.
    assert_eq!(p.op(stop).expect("again")["stopped"], false);
    let after =
        p.op(json!({"op": "list_beads", "args": {"limit": 10, "offset": 0}})).expect("beads");
    assert_eq!(after.as_array().expect("list").len(), 2);
    let unknown = json!({"op": "stop_over_budget", "args": {"bead_id": "nope", "reason": "x"}});
    assert_eq!(p.op(unknown).map_err(|e| e.status()).err(), Some(404));
}
