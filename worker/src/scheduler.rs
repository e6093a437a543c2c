//! The RigDO scheduler's decisions: settings, the start request for a hooked agent,
//! and what the witness pass does with a container's answer. The alarm that runs them lives in
//! the runtime; the SQL side is in `rig::schedule`.
//!
//! Lessons of the reference built in: a dispatch-attempt limit after which the bead is failed
//! (no endless re-dispatch), a cold-start grace period during which "not found" from the
//! container is expected, "done" is only the done tool (an exited process is not success), and
//! the alarm is armed only while some agent has hooked work.

use std::collections::BTreeMap;

use serde_json::Value;
use shared_types::{validate, StartAgentRequest};

use crate::jwt::{self, AgentClaims};
use crate::model::{Agent, Bead, RigConfig};
use crate::prompts;

/// Scheduler settings, from Worker vars (all optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `SCHEDULER_TICK_MS`: alarm period while there is work.
    pub tick_ms: i64,
    /// `SCHEDULER_MAX_DISPATCH_ATTEMPTS`: failed starts of one hooked bead in a row (a start
    /// that never reaches the point of calling the API) before it is failed.
    pub max_attempts: i64,
    /// `SCHEDULER_MAX_LOST_RUNS`: runs of one hooked bead lost after they started for real
    /// (the process died, the container went) before it is failed: no endless re-dispatch.
    pub max_lost_runs: i64,
    /// `SCHEDULER_COLD_START_GRACE_MS`: how long "not found" is expected after a dispatch.
    pub grace_ms: i64,
    /// `SCHEDULER_GUPP_AFTER_MS`: idle time on hooked work before a GUPP reminder mail.
    pub gupp_after_ms: i64,
    /// `AGENT_TOKEN_TTL_SECS`: lifetime of the credential given to an agent.
    pub token_ttl_secs: u64,
    /// `SCHEDULER_NUDGE_EVERY_MS`: least time between two "you have mail" messages to an agent.
    pub nudge_every_ms: i64,
    /// `PR_POLL_MS`: least time between two reads of a pull request's state from its forge
    /// (each read is five requests against the forge's rate limit).
    pub pr_poll_ms: i64,
}

impl Settings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str, default: i64| crate::settings::positive(&lookup, k, default);
        Self {
            tick_ms: num("SCHEDULER_TICK_MS", 15_000),
            max_attempts: num("SCHEDULER_MAX_DISPATCH_ATTEMPTS", 3),
            max_lost_runs: num("SCHEDULER_MAX_LOST_RUNS", 5),
            grace_ms: num("SCHEDULER_COLD_START_GRACE_MS", 180_000),
            gupp_after_ms: num("SCHEDULER_GUPP_AFTER_MS", 600_000),
            // At most the tokens' 24 h maximum age (`jwt::MAX_AGE_SECS`): an older token is
            // refused whatever its `exp`.
            token_ttl_secs: (num("AGENT_TOKEN_TTL_SECS", 8 * 3600) as u64)
                .min(crate::jwt::MAX_AGE_SECS as u64),
            nudge_every_ms: num("SCHEDULER_NUDGE_EVERY_MS", 60_000),
            pr_poll_ms: num("PR_POLL_MS", 30_000),
        }
    }
}

/// Everything a dispatch needs besides the agent and its bead.
pub struct DispatchContext<'a> {
    pub config: &'a RigConfig,
    pub model: &'a str,
    pub jwt_secret: &'a str,
    pub now_secs: u64,
    pub settings: &'a Settings,
}

/// The agent's Worker credential: an HS256 token for exactly this agent and rig.
pub fn agent_token(agent: &Agent, ctx: &DispatchContext) -> String {
    let claims = AgentClaims {
        agent_id: agent.id.clone(),
        rig_id: ctx.config.rig_id.clone(),
        town_id: ctx.config.town_id.clone(),
        user_id: "gastown-scheduler".into(),
        exp: ctx.now_secs + ctx.settings.token_ttl_secs,
        iat: Some(ctx.now_secs),
        role: None,
    };
    jwt::sign(&claims, ctx.jwt_secret.as_bytes())
}

/// A hooked agent waiting for a dispatch, with what its start request needs.
#[derive(Debug, Clone)]
pub struct DueDispatch {
    pub agent: Agent,
    pub bead: Bead,
    /// Failed starts of this bead in a row (the attempt limit).
    pub attempts: i64,
    /// Runs of this bead lost after they started for real.
    pub lost_runs: i64,
    /// Which run of the agent this is; with the bead it names the dispatch, so a start repeated
    /// for the same run (a lost answer) gets that run back instead of a second one.
    pub generation: i64,
    /// Why the bead's last merge failed, when this is a rework round.
    pub rework_note: Option<String>,
    /// Merges into the rig's default branch recorded so far: the container fetches again for
    /// a start that has seen more than its last fetch did, so new work starts from them.
    pub merges_seen: u64,
}

impl DueDispatch {
    /// The container's `dispatchId`: (bead, run generation).
    pub fn dispatch_id(&self) -> String {
        format!("{}-g{}", self.bead.id, self.generation)
    }
}

/// `POST /agents/start` for an agent and its hooked bead.
pub fn start_request(due: &DueDispatch, ctx: &DispatchContext) -> StartAgentRequest {
    let (agent, bead) = (&due.agent, &due.bead);
    let branch = validate::polecat_branch(&agent.name, &bead.id);
    let who = prompts::Identity {
        name: &agent.name,
        rig_id: &ctx.config.rig_id,
        town_id: &ctx.config.town_id,
        role: agent.role,
        branch: &branch,
        default_branch: &ctx.config.default_branch,
    };
    let mut env_vars = BTreeMap::new();
    env_vars.insert("GASTOWN_SESSION_TOKEN".to_string(), agent_token(agent, ctx));
    StartAgentRequest {
        agent_id: agent.id.clone(),
        rig_id: ctx.config.rig_id.clone(),
        town_id: ctx.config.town_id.clone(),
        role: agent.role,
        name: agent.name.clone(),
        identity: agent.identity.clone(),
        prompt: match &due.rework_note {
            Some(note) => prompts::rework_prompt(bead, note, &ctx.config.default_branch),
            None => prompts::bead_prompt(bead),
        },
        model: ctx.model.to_string(),
        system_prompt: prompts::for_role(&who),
        git_url: ctx.config.git_url.clone(),
        branch,
        default_branch: ctx.config.default_branch.clone(),
        env_vars,
        dispatch_id: Some(due.dispatch_id()),
        bead_id: Some(bead.id.clone()),
        convoy_id: bead.convoy_id.clone(),
        // Set by the TownContainer from the town's limits, on the way to the container.
        max_concurrent_agents: None,
        merges_seen: Some(due.merges_seen),
    }
}

/// Why a due bead must not be dispatched again, if a limit says so.
pub fn exhausted(due: &DueDispatch, settings: &Settings) -> Option<String> {
    if due.attempts >= settings.max_attempts {
        Some(format!("{} dispatch attempts", due.attempts))
    } else if due.lost_runs >= settings.max_lost_runs {
        Some(format!("{} runs lost after they started", due.lost_runs))
    } else {
        None
    }
}

/// What the witness pass does with one dispatched agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// Running (or still starting within the grace period): nothing to do.
    Fine,
    /// The process is gone: record the exit; the next pass re-dispatches (attempt limit applies).
    Exited(String),
    /// The town wound the run down (a budget used up; the reason): its work was saved and the
    /// next pass dispatches it again, which waits while the budget is used up. Not a lost run.
    WoundDown(String),
    /// The shard's control server did not answer (its TownContainer could not reach it, or
    /// could not be called): the run is lost once this has lasted the grace period
    /// ([`unanswered_too_long`]); a shard that is only restarting answers well before.
    Unanswered,
    /// Any other answer that says nothing of the run: try again next pass.
    Unknown,
}

/// Whether a run whose shard has not answered since `since_ms` is lost: after the cold-start
/// grace period, which a container being replaced (a new boot answers 404) never needs.
pub fn unanswered_too_long(since_ms: i64, now_ms: i64, grace_ms: i64) -> bool {
    now_ms - since_ms >= grace_ms
}

/// A dispatched run as the RigDO recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub dispatched_ms: i64,
    /// The boot of the control server that took the start (`None`: its answer named none).
    pub boot_id: Option<String>,
}

/// `status`: the HTTP status of `GET /agents/:id/status` (`None` when the call failed).
///
/// A 404 from a control server whose boot is not the one that took the run means the run died
/// with its boot: lost now. The cold-start grace is only for a 404 that cannot be placed: a
/// boot unknown on either side (a dispatch from before boots were recorded, a server that
/// names none), or the same boot (the run was taken but its record is not there yet).
pub fn witness(
    status: Option<u16>,
    body: &Value,
    run: &Run,
    now_ms: i64,
    grace_ms: i64,
) -> Witness {
    let answering_boot = body["bootId"].as_str();
    match status {
        Some(200) => match body["status"].as_str() {
            Some("exited") | Some("failed") if body["stopReason"].is_string() => {
                Witness::WoundDown(format!(
                    "wound down: {}",
                    body["stopReason"].as_str().unwrap_or_default()
                ))
            }
            Some("exited") | Some("failed") => {
                let code = body["exitCode"]
                    .as_i64()
                    .map_or_else(|| "unknown".to_string(), |c| c.to_string());
                Witness::Exited(format!(
                    "process {} (exit code {code})",
                    body["status"].as_str().unwrap_or("exited")
                ))
            }
            _ => Witness::Fine,
        },
        Some(404)
            if run
                .boot_id
                .as_deref()
                .zip(answering_boot)
                .is_some_and(|(took, answers)| took != answers) =>
        {
            Witness::Exited(
                "the control server restarted: the run was lost with its earlier boot".into(),
            )
        }
        Some(404) if now_ms - run.dispatched_ms < grace_ms => Witness::Fine,
        Some(404) => {
            Witness::Exited("not found in the container after the cold-start grace period".into())
        }
        None | Some(503) => Witness::Unanswered,
        _ => Witness::Unknown,
    }
}

/// Whether the RigDO's alarm must be set to fire at `want_ms`: when none is set, or the one set
/// fires later. New work (a sling, a hook, a review) is never left waiting behind a pass
/// armed for something else, and a pass that ends never pushes back an earlier one set
/// meanwhile.
pub fn alarm_needed(set_at_ms: Option<i64>, want_ms: i64) -> bool {
    set_at_ms.is_none_or(|at| at > want_ms)
}

/// Whether a running agent's credential should be replaced: once half its lifetime has passed
/// since it was issued (at dispatch, or at the last refresh), so a long-running agent never
/// calls the API with an expired token.
pub fn token_due(issued_ms: i64, now_ms: i64, ttl_secs: u64) -> bool {
    now_ms - issued_ms >= (ttl_secs as i64) * 1000 / 2
}

/// The GUPP reminder mail.
pub const GUPP_SUBJECT: &str = "GUPP: work is on your hook";
pub const GUPP_BODY: &str = "You have a bead on your hook and have been idle. Work is on your hook - execute it \
immediately: call gt_prime(), do the work, commit and push, then gt_done. If you are blocked, gt_escalate.";
/// The message that tells a working agent it has mail (the mail itself is read with the tool,
/// which wraps it as untrusted data).
pub fn mail_nudge(unread: i64) -> String {
    format!("You have {unread} unread mail message(s). Call gt_mail_check to read them, then go on with your work.")
}

/// The sender of scheduler mail.
pub const SCHEDULER_SENDER: &str = "gastown-scheduler";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AgentRole;
    use serde_json::json;

    #[test]
    fn an_alarm_is_only_ever_brought_forward() {
        assert!(alarm_needed(None, 1_000), "none set");
        assert!(alarm_needed(Some(60_000), 1_000), "a tick armed for later: brought forward");
        assert!(!alarm_needed(Some(500), 1_000), "an earlier one stays");
        assert!(!alarm_needed(Some(1_000), 1_000));
    }

    #[test]
    fn tokens_are_refreshed_at_half_their_lifetime() {
        assert!(!token_due(0, 1_799_999, 3600));
        assert!(token_due(0, 1_800_000, 3600));
        assert!(token_due(1_000, 100_000, 10));
    }

    fn agent() -> Agent {
        serde_json::from_value(json!({"id": "a1", "role": "polecat", "name": "toast", "identity": "polecat/toast@r1",
            "status": "working", "current_hook_bead_id": "b1", "last_activity_at": null, "checkpoint": null, "created_at": "x"}))
        .expect("agent")
    }

    fn bead() -> Bead {
        serde_json::from_value(json!({"id": "0b6a9a2e-7c1d-4f43", "type": "issue", "status": "in_progress", "title": "Fix it",
            "body": "details", "assignee_agent_id": "a1", "convoy_id": null, "molecule_id": null, "priority": "high",
            "labels": [], "metadata": {}, "created_at": "x", "updated_at": "x", "closed_at": null}))
        .expect("bead")
    }

    #[test]
    fn start_request_is_complete_and_valid() {
        let config = RigConfig {
            rig_id: "r1".into(),
            town_id: "t1".into(),
            name: None,
            git_url: "https://github.com/o/r.git".into(),
            default_branch: "main".into(),
            updated_at: "x".into(),
            merge: Default::default(),
        };
        let settings = Settings::from_lookup(|_| None);
        let ctx = DispatchContext {
            config: &config,
            model: "p/m",
            jwt_secret: "s",
            now_secs: 1000,
            settings: &settings,
        };
        let mut due = DueDispatch {
            agent: agent(),
            bead: bead(),
            attempts: 0,
            lost_runs: 0,
            generation: 2,
            rework_note: None,
            merges_seen: 4,
        };
        assert_eq!(exhausted(&due, &settings), None);
        assert_eq!(
            exhausted(&DueDispatch { attempts: 3, ..due.clone() }, &settings).as_deref(),
            Some("3 dispatch attempts")
        );
        assert_eq!(
            exhausted(&DueDispatch { lost_runs: 5, ..due.clone() }, &settings).as_deref(),
            Some("5 runs lost after they started")
        );
        let r = start_request(&due, &ctx);
        assert_eq!(
            (r.role, r.branch.as_str(), r.default_branch.as_str()),
            (AgentRole::Polecat, "polecat/toast/0b6a9a2e", "main")
        );
        assert!(r.prompt.contains("Fix it") && r.system_prompt.contains("GUPP"));
        assert!(r.system_prompt.contains("polecat/toast/0b6a9a2e"));
        assert!(r.validate(shared_types::ValidationPolicy::default()).is_ok());
        let token = r.env_vars.get("GASTOWN_SESSION_TOKEN").expect("token");
        let claims = jwt::verify(token, b"s", 1001).expect("valid token");
        assert_eq!(
            (claims.agent_id.as_str(), claims.rig_id.as_str(), claims.exp),
            ("a1", "r1", 1000 + 8 * 3600)
        );
        assert_eq!(
            r.dispatch_id.as_deref(),
            Some("0b6a9a2e-7c1d-4f43-g2"),
            "the same run keeps its dispatch id"
        );
        assert_eq!(r.merges_seen, Some(4), "the container learns of the rig's merges");
        assert_eq!(r.convoy_id, None);
        let mut in_convoy = due.clone();
        in_convoy.bead.convoy_id = Some("c1".into());
        let r2 = start_request(&in_convoy, &ctx);
        assert_eq!(r2.convoy_id.as_deref(), Some("c1"), "its usage is summed per convoy");

        // A rework round leads with the refinery's report.
        due.rework_note = Some("Your branch conflicts with the default branch. in: a.txt".into());
        let r = start_request(&due, &ctx);
        assert!(
            r.prompt.contains("<merge-report>")
                && r.prompt.contains("a.txt")
                && r.prompt.contains("git merge origin/main")
        );
        assert!(r.prompt.contains("Fix it"), "the bead is still there");
    }

    #[test]
    fn witness_decisions() {
        let g = 1000;
        let run = Run { dispatched_ms: 0, boot_id: None };
        assert_eq!(witness(Some(200), &json!({"status": "running"}), &run, 5000, g), Witness::Fine);
        assert!(
            matches!(witness(Some(200), &json!({"status": "exited", "exitCode": 137}), &run, 5000, g), Witness::Exited(m) if m.contains("137"))
        );
        assert_eq!(witness(Some(404), &Value::Null, &run, 500, g), Witness::Fine);
        assert!(matches!(witness(Some(404), &Value::Null, &run, 1500, g), Witness::Exited(_)));
        assert_eq!(witness(None, &Value::Null, &run, 5000, g), Witness::Unanswered);
        assert_eq!(witness(Some(503), &Value::Null, &run, 5000, g), Witness::Unanswered);
        assert_eq!(witness(Some(500), &Value::Null, &run, 5000, g), Witness::Unknown);
        assert!(!unanswered_too_long(1_000, 1_000 + g - 1, g));
        assert!(unanswered_too_long(1_000, 1_000 + g, g));
    }

    #[test]
    fn a_404_from_a_new_boot_is_a_lost_run_at_once() {
        let g = 180_000;
        let took = Run { dispatched_ms: 0, boot_id: Some("boot-a".into()) };
        let from = |boot: &str| json!({"error": "Agent a1 not found", "bootId": boot});
        assert!(
            matches!(witness(Some(404), &from("boot-b"), &took, 100, g), Witness::Exited(m) if m.contains("restarted"))
        );
        assert_eq!(
            witness(Some(404), &from("boot-a"), &took, 100, g),
            Witness::Fine,
            "the same boot: within the grace"
        );
        assert_eq!(
            witness(Some(404), &json!({"error": "x"}), &took, 100, g),
            Witness::Fine,
            "no boot in the answer"
        );
        let unknown = Run { boot_id: None, ..took.clone() };
        assert_eq!(
            witness(Some(404), &from("boot-b"), &unknown, 100, g),
            Witness::Fine,
            "no boot on record"
        );
        assert!(
            matches!(witness(Some(404), &from("boot-a"), &took, g, g), Witness::Exited(m) if m.contains("grace"))
        );
    }

    #[test]
    fn settings_defaults_and_overrides() {
        let s = Settings::from_lookup(|k| (k == "SCHEDULER_TICK_MS").then(|| "250".to_string()));
        assert_eq!((s.tick_ms, s.max_attempts, s.max_lost_runs, s.grace_ms), (250, 3, 5, 180_000));
        let s =
            Settings::from_lookup(|k| (k == "AGENT_TOKEN_TTL_SECS").then(|| "999999".to_string()));
        assert_eq!(s.token_ttl_secs, 86_400, "capped at the tokens' maximum age");
    }
}
