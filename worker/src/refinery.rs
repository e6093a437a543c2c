//! The refinery, the Worker's side: a rig's merge settings, the merge request the RigDO sends to
//! the town's container for a review entry, and what a finished merge means for the entry, its
//! bead and its polecat. Pure decisions; the RigDO's alarm carries them out (`rig/refinery.rs`
//! for storage, `runtime/rig_do.rs` for the container calls).
//!
//! A review entry goes `pending -> running -> merged | rework | failed`:
//! - merged: the bead is closed (and its convoy may land);
//! - rework (a conflict or a failed gate): the bead goes back to its polecat with the reason in
//!   its next prompt, through the normal dispatch; after `max_rework_rounds` it escalates;
//! - failed (the branch is gone, the origin unreachable, ...): escalated at once, since no
//!   rework by the polecat can fix it.

use serde::{Deserialize, Serialize};
use shared_types::{MergeGate, MergeRequest, MergeState, MergeStatus};

use crate::model::{Bead, RigConfig};
use crate::requests::{Issues, Shape, Validate};

/// How a rig's reviewed branches reach its default branch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// The refinery merges into the default branch and pushes it.
    #[default]
    Merge,
    /// Open a pull request for the branch on the rig's forge; follow its checks and reviews,
    /// and merge it there (`forge/pulls.rs`).
    Pr,
}

/// How the forge merges a pull request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMethod {
    #[default]
    Merge,
    Squash,
    Rebase,
}

impl MergeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Squash => "squash",
            Self::Rebase => "rebase",
        }
    }
}

/// A rig's merge settings (part of its configuration; every field optional on input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MergeSettings {
    /// Shell commands run on the merged tree before the push; all must exit 0.
    pub merge_gates: Vec<String>,
    /// Deadline of each gate.
    pub gate_timeout_secs: u64,
    /// Rework rounds a bead gets before it escalates.
    pub max_rework_rounds: u32,
    /// Delete the polecat branch on the origin once merged.
    pub delete_merged_branches: bool,
    pub merge_strategy: MergeStrategy,
    /// `pr`: approvals a pull request needs before it is merged.
    pub require_review: u32,
    /// `pr`: merge it once approved and green (false: a person merges it).
    pub auto_merge: bool,
    /// `pr`: how the forge merges it.
    pub merge_method: MergeMethod,
}

impl Default for MergeSettings {
    fn default() -> Self {
        Self {
            merge_gates: Vec::new(),
            gate_timeout_secs: 600,
            max_rework_rounds: 3,
            delete_merged_branches: true,
            merge_strategy: MergeStrategy::Merge,
            require_review: 0,
            auto_merge: true,
            merge_method: MergeMethod::Merge,
        }
    }
}

/// Most rework rounds a rig may allow.
pub const MAX_REWORK_ROUNDS: u32 = 20;
/// Most approvals a rig may require.
pub const MAX_REQUIRED_REVIEWS: u32 = 10;

impl Shape for MergeSettings {}

impl Validate for MergeSettings {
    fn check(&self, i: &mut Issues) {
        i.add("merge_gates", shared_types::validate_gates(&self.gates()));
        if self.max_rework_rounds > MAX_REWORK_ROUNDS {
            i.add("max_rework_rounds", Err(format!("must be at most {MAX_REWORK_ROUNDS}")));
        }
        if self.require_review > MAX_REQUIRED_REVIEWS {
            i.add("require_review", Err(format!("must be at most {MAX_REQUIRED_REVIEWS}")));
        }
    }
}

impl MergeSettings {
    pub fn gates(&self) -> Vec<MergeGate> {
        self.merge_gates
            .iter()
            .map(|c| MergeGate { command: c.clone(), timeout_secs: self.gate_timeout_secs })
            .collect()
    }
}

/// The container request that merges review entry `review_id` (branch `branch`) of `bead`.
pub fn merge_request(
    review_id: &str,
    branch: &str,
    bead: &Bead,
    config: &RigConfig,
) -> MergeRequest {
    let settings = &config.merge;
    MergeRequest {
        review_id: review_id.to_string(),
        bead_id: bead.id.clone(),
        git_url: config.git_url.clone(),
        default_branch: config.default_branch.clone(),
        branch: branch.to_string(),
        message: format!("Merge {branch}: {} (bead {})", first_line(&bead.title), bead.id),
        gates: settings.gates(),
        delete_branch: settings.delete_merged_branches,
        town_id: Some(config.town_id.clone()),
    }
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(120) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// What a finished merge does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Entry merged, bead closed.
    Merged { commit: Option<String> },
    /// Entry `rework`; the bead goes back to its polecat with `note` in its next prompt.
    Rework { note: String },
    /// Entry `rework` or `failed`; the bead fails and an escalation is raised with `reason`.
    Escalate { reason: String, entry_failed: bool },
    /// Entry `failed`; a person closed the pull request: the bead is open again, unassigned,
    /// and an escalation names it with `reason`.
    Returned { reason: String },
}

/// Decides from the container's final status. `rounds` is how many rework rounds the bead has
/// had before this one.
pub fn verdict(status: &MergeStatus, rounds: u32, settings: &MergeSettings) -> Verdict {
    let detail = status.detail.clone().unwrap_or_else(|| "no detail".into());
    match status.state {
        MergeState::Merged => Verdict::Merged { commit: status.commit.clone() },
        MergeState::Closed => {
            Verdict::Returned { reason: format!("{detail}; the bead is open again") }
        }
        MergeState::Conflict
        | MergeState::GateFailed
        | MergeState::ChecksFailed
        | MergeState::ChangesRequested
            if rounds < settings.max_rework_rounds =>
        {
            Verdict::Rework { note: rework_note(status) }
        }
        MergeState::Conflict
        | MergeState::GateFailed
        | MergeState::ChecksFailed
        | MergeState::ChangesRequested => Verdict::Escalate {
            reason: format!("still not mergeable after {rounds} rework rounds: {detail}"),
            entry_failed: false,
        },
        // Running is not final; treated as a failure only if a caller passes it by mistake.
        MergeState::Failed | MergeState::Running => {
            Verdict::Escalate { reason: format!("the merge failed: {detail}"), entry_failed: true }
        }
    }
}

/// The reason and the evidence, for the polecat's next prompt.
fn rework_note(status: &MergeStatus) -> String {
    let what = match status.state {
        MergeState::Conflict => "Your branch conflicts with the default branch.",
        MergeState::ChecksFailed => "Checks failed on your pull request.",
        MergeState::ChangesRequested => "A review of your pull request asked for changes.",
        _ => "A quality gate failed on your branch merged into the default branch.",
    };
    let mut note = format!("{what} {}", status.detail.as_deref().unwrap_or(""));
    if let Some(output) = status.output.as_deref().filter(|o| !o.trim().is_empty()) {
        note.push_str("\n\nOutput:\n```\n");
        note.push_str(output.trim_end());
        note.push_str("\n```");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(state: MergeState) -> MergeStatus {
        MergeStatus {
            review_id: "r".into(),
            state,
            commit: Some("abc".into()),
            detail: Some("gate `make test` failed (exit 2)".into()),
            output: Some("FAIL: x".into()),
        }
    }

    #[test]
    fn outcomes_become_verdicts_with_the_rework_limit() {
        let s = MergeSettings { max_rework_rounds: 2, ..MergeSettings::default() };
        assert_eq!(
            verdict(&status(MergeState::Merged), 0, &s),
            Verdict::Merged { commit: Some("abc".into()) }
        );
        let Verdict::Rework { note } = verdict(&status(MergeState::GateFailed), 1, &s) else {
            panic!("rework")
        };
        assert!(
            note.contains("quality gate") && note.contains("make test") && note.contains("FAIL: x"),
            "{note}"
        );
        assert!(matches!(
            verdict(&status(MergeState::Conflict), 2, &s),
            Verdict::Escalate { entry_failed: false, .. }
        ));
        assert!(matches!(
            verdict(&status(MergeState::Failed), 0, &s),
            Verdict::Escalate { entry_failed: true, .. }
        ));
        let Verdict::Rework { note } = verdict(&status(MergeState::ChecksFailed), 0, &s) else {
            panic!("rework")
        };
        assert!(note.starts_with("Checks failed on your pull request."), "{note}");
        assert!(matches!(
            verdict(&status(MergeState::ChangesRequested), 2, &s),
            Verdict::Escalate { entry_failed: false, .. }
        ));
        assert!(matches!(verdict(&status(MergeState::Closed), 0, &s), Verdict::Returned { .. }));
    }

    #[test]
    fn settings_have_defaults_and_refuse_bad_input() {
        let s: MergeSettings = serde_json::from_value(json!({})).expect("defaults");
        assert_eq!(s, MergeSettings::default());
        assert!(s.validate().is_ok());
        let s: MergeSettings =
            serde_json::from_value(json!({"merge_gates": ["cargo test"], "gate_timeout_secs": 30}))
                .expect("gates");
        assert_eq!(s.gates(), vec![MergeGate { command: "cargo test".into(), timeout_secs: 30 }]);
        assert!(
            serde_json::from_value::<MergeSettings>(json!({"merge_gates": "cargo test"})).is_err(),
            "a string is not a list"
        );
        assert!(
            serde_json::from_value::<MergeSettings>(json!({"merge_gates": [1, 2]})).is_err(),
            "numbers are not commands"
        );
        let pr: MergeSettings = serde_json::from_value(
            json!({"merge_strategy": "pr", "require_review": 2, "auto_merge": false, "merge_method": "squash"}),
        )
        .expect("parses");
        assert!(pr.validate().is_ok());
        assert_eq!(
            (pr.require_review, pr.auto_merge, pr.merge_method),
            (2, false, MergeMethod::Squash)
        );
        let greedy: MergeSettings =
            serde_json::from_value(json!({"require_review": 11})).expect("parses");
        assert!(greedy.validate().err().is_some_and(|e| e.detail().contains("require_review")));
        assert!(
            serde_json::from_value::<MergeSettings>(json!({"merge_method": "octopus"})).is_err()
        );
        let zero: MergeSettings =
            serde_json::from_value(json!({"merge_gates": ["x"], "gate_timeout_secs": 0}))
                .expect("parses");
        assert!(zero.validate().is_err());
    }

    #[test]
    fn the_merge_message_names_the_bead() {
        let bead: Bead = serde_json::from_value(json!({"id": "b1", "type": "issue", "status": "in_progress", "title": "Fix it\nmore", "body": null,
            "assignee_agent_id": "a1", "convoy_id": null, "molecule_id": null, "priority": "medium", "labels": [], "metadata": {},
            "created_at": "x", "updated_at": "x", "closed_at": null})).expect("bead");
        let config = RigConfig {
            rig_id: "r".into(),
            town_id: "t".into(),
            name: None,
            git_url: "https://g/r.git".into(),
            default_branch: "main".into(),
            updated_at: "x".into(),
            merge: MergeSettings::default(),
        };
        let r = merge_request("rev1", "polecat/toast/b1", &bead, &config);
        assert_eq!(r.message, "Merge polecat/toast/b1: Fix it (bead b1)");
        assert!(r.validate(shared_types::ValidationPolicy::default()).is_ok());
    }
}
