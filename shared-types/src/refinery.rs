//! The refinery's wire types: merging a reviewed polecat branch into the rig's default branch.
//!
//! The RigDO drives the review queue and the container does the git work. A merge is a job the
//! container runs in the background, named by the review entry's id: `POST /rigs/:rig/merges`
//! starts it (again: idempotent), `GET /rigs/:rig/merges/:reviewId` reports it.

use serde::{Deserialize, Serialize};

use crate::validate::{self, ValidationIssue, ValidationPolicy};

/// Most quality gates a rig may have.
pub const MAX_GATES: usize = 16;
/// Longest gate command, in bytes.
pub const MAX_GATE_COMMAND: usize = 4096;
/// Longest a gate may run.
pub const MAX_GATE_TIMEOUT_SECS: u64 = 3600;
/// Longest merge commit message.
pub const MAX_MERGE_MESSAGE: usize = 4096;

/// One quality gate: a shell command run in the merged tree; exit 0 passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeGate {
    pub command: String,
    pub timeout_secs: u64,
}

/// `POST /rigs/:rigId/merges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeRequest {
    pub review_id: String,
    pub bead_id: String,
    pub git_url: String,
    pub default_branch: String,
    /// The polecat branch to merge.
    pub branch: String,
    /// The merge commit's message (names the bead).
    pub message: String,
    #[serde(default)]
    pub gates: Vec<MergeGate>,
    /// Delete the polecat branch on the origin once it is merged.
    #[serde(default)]
    pub delete_branch: bool,
    /// The rig's town: whose forge credential the merge's fetch and pushes use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub town_id: Option<String>,
}

impl MergeRequest {
    pub fn validate(&self, policy: ValidationPolicy) -> Result<(), Vec<ValidationIssue>> {
        let mut issues = validate::Issues::default();
        issues.check("reviewId", validate::id(&self.review_id));
        if let Some(town) = &self.town_id {
            issues.check("townId", validate::id(town));
        }
        issues.check("beadId", validate::id(&self.bead_id));
        issues.check("gitUrl", validate::git_url(&self.git_url, policy).map(|_| ()));
        issues.check("defaultBranch", validate::branch(&self.default_branch));
        issues.check("branch", validate::branch(&self.branch));
        issues.check("message", validate::text(&self.message, MAX_MERGE_MESSAGE, false));
        if self.branch == self.default_branch {
            issues.check("branch", Err("must not be the default branch".into()));
        }
        issues.check("gates", validate_gates(&self.gates));
        issues.into_result()
    }
}

/// A rig's gate list: at most [`MAX_GATES`], each a non-empty command with a timeout of 1 s to
/// [`MAX_GATE_TIMEOUT_SECS`].
pub fn validate_gates(gates: &[MergeGate]) -> Result<(), String> {
    if gates.len() > MAX_GATES {
        return Err(format!("at most {MAX_GATES} gates"));
    }
    for (i, g) in gates.iter().enumerate() {
        validate::text(&g.command, MAX_GATE_COMMAND, false)
            .map_err(|m| format!("gate {i}: command {m}"))?;
        if g.timeout_secs == 0 || g.timeout_secs > MAX_GATE_TIMEOUT_SECS {
            return Err(format!("gate {i}: timeoutSecs must be 1 to {MAX_GATE_TIMEOUT_SECS}"));
        }
    }
    Ok(())
}

/// Where a merge job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeState {
    Running,
    /// Merged and pushed to the default branch.
    Merged,
    /// The branch does not merge cleanly into the default branch.
    Conflict,
    /// A quality gate failed on the merged tree.
    GateFailed,
    /// Something else went wrong (the branch is missing, the origin unreachable, ...).
    Failed,
    /// A pull request's checks failed (the `pr` strategy; never the container's).
    ChecksFailed,
    /// A pull request's review asked for changes (the `pr` strategy).
    ChangesRequested,
    /// A pull request was closed without being merged (the `pr` strategy).
    Closed,
}

impl MergeState {
    pub fn is_final(self) -> bool {
        self != Self::Running
    }
}

/// `GET /rigs/:rigId/merges/:reviewId` (and the answer to a start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeStatus {
    pub review_id: String,
    pub state: MergeState,
    /// The merge commit on the default branch, once merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What went wrong, in one line (conflicting files, the failed gate's command, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The tail of the failed gate's output, or of git's conflict report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> MergeRequest {
        MergeRequest {
            review_id: "r1".into(),
            bead_id: "b1".into(),
            git_url: "https://github.com/o/r.git".into(),
            default_branch: "main".into(),
            branch: "polecat/toast/b1".into(),
            message: "Merge bead b1".into(),
            gates: vec![MergeGate { command: "cargo test".into(), timeout_secs: 600 }],
            delete_branch: true,
            town_id: None,
        }
    }

    #[test]
    fn valid_requests_pass_and_each_bad_field_is_named() {
        assert!(request().validate(ValidationPolicy::default()).is_ok());
        let fields = |r: MergeRequest| {
            r.validate(ValidationPolicy::default())
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.field)
                .collect::<Vec<_>>()
        };
        let mut r = request();
        r.branch = "main".into();
        assert_eq!(fields(r), ["branch"]);
        let mut r = request();
        r.gates[0].timeout_secs = 0;
        assert_eq!(fields(r), ["gates"]);
        let mut r = request();
        r.gates[0].command = " ".into();
        assert_eq!(fields(r), ["gates"]);
        let mut r = request();
        r.review_id = "../x".into();
        r.git_url = "ext::sh".into();
        assert_eq!(fields(r), ["reviewId", "gitUrl"]);
    }

    #[test]
    fn states_are_snake_case() {
        assert_eq!(
            serde_json::to_value(MergeState::GateFailed).ok(),
            Some(serde_json::json!("gate_failed"))
        );
        assert!(!MergeState::Running.is_final() && MergeState::Conflict.is_final());
    }
}
