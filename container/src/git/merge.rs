//! The refinery's git work: merging a reviewed polecat branch into the rig's default branch in
//! a worktree of the rig's shared clone, running the rig's quality gates on the merged tree,
//! and pushing the default branch (never forced).
//!
//! One merge at a time per rig is the caller's rule (the supervisor holds a per-rig merge
//! lock); the steps that write the shared clone's metadata (fetch, worktree add) also take the
//! rig lock that agent starts take.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shared_types::validate::branch_dir_name;
use shared_types::{MergeGate, MergeState};

use super::{is_repository, prune_stale_worktrees, scrub, GitError, GitManager};
use crate::process::command::run;

/// Merge commits are made by the refinery, not by any polecat.
const AUTHOR_NAME: &str = "Gastown Refinery";
const AUTHOR_EMAIL: &str = "refinery@gastown.local";
/// Pushes rejected because the default branch moved are retried this often (fetch, merge again).
const PUSH_ATTEMPTS: usize = 3;
/// Most bytes of a gate's or of git's output kept in an outcome.
const OUTPUT_TAIL: usize = 8 * 1024;

/// One merge to do.
#[derive(Debug, Clone)]
pub struct MergeJob<'a> {
    pub rig_id: &'a str,
    pub git_url: &'a str,
    pub default_branch: &'a str,
    pub branch: &'a str,
    pub message: &'a str,
    pub gates: &'a [MergeGate],
    pub delete_branch: bool,
}

/// How a merge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    pub state: MergeState,
    pub commit: Option<String>,
    pub detail: Option<String>,
    pub output: Option<String>,
}

impl MergeOutcome {
    fn failed(state: MergeState, detail: impl Into<String>, output: Option<String>) -> Self {
        Self { state, commit: None, detail: Some(detail.into()), output: output.map(|o| tail(&o)) }
    }
}

impl GitManager {
    /// Fetches, merges `origin/<branch>` into `origin/<default>` with `--no-ff` in the rig's
    /// refinery worktree, runs the gates, pushes the default branch, and on success deletes the
    /// remote branch (when asked). A push rejected because the default branch moved is retried
    /// from the fetch, [`PUSH_ATTEMPTS`] times. Conflicts and failed gates leave nothing behind
    /// on the origin, and the refinery worktree is reset at the start of every merge.
    pub async fn merge(&self, job: &MergeJob<'_>) -> MergeOutcome {
        for _ in 0..PUSH_ATTEMPTS {
            match self.merge_once(job).await {
                Ok(Step::Done(outcome)) => return outcome,
                Ok(Step::Moved) => continue,
                Err(e) => return MergeOutcome::failed(MergeState::Failed, e.to_string(), None),
            }
        }
        MergeOutcome::failed(MergeState::Failed, format!("the push to {} was rejected {PUSH_ATTEMPTS} times: the branch keeps moving", job.default_branch), None)
    }

    async fn merge_once(&self, job: &MergeJob<'_>) -> Result<Step, GitError> {
        let url = job.git_url;
        let refinery = self.refinery_worktree(job).await?;
        let target = format!("refs/remotes/origin/{}", job.default_branch);
        let source = format!("refs/remotes/origin/{}", job.branch);
        if self.git(Some(&refinery), &["rev-parse", "--verify", "--quiet", &format!("{target}^{{commit}}")], url).await.is_err() {
            return Ok(Step::Done(MergeOutcome::failed(MergeState::Failed, format!("default branch '{}' not found on the origin", job.default_branch), None)));
        }
        if self.git(Some(&refinery), &["rev-parse", "--verify", "--quiet", &format!("{source}^{{commit}}")], url).await.is_err() {
            return Ok(Step::Done(MergeOutcome::failed(MergeState::Failed, format!("branch '{}' not found on the origin", job.branch), None)));
        }
        self.git(Some(&refinery), &["checkout", "--quiet", "--detach", "--force", &target], url).await?;
        self.git(Some(&refinery), &["reset", "--quiet", "--hard", &target], url).await?;
        self.git(Some(&refinery), &["clean", "-fdxq"], url).await?;

        let (name, email) = (format!("user.name={AUTHOR_NAME}"), format!("user.email={AUTHOR_EMAIL}"));
        let merge = ["-c", &name, "-c", &email, "merge", "--no-ff", "--no-edit", "-m", job.message, &source];
        if let Err(GitError::Failed(report)) = self.git(Some(&refinery), &merge, url).await {
            let files = self.git(Some(&refinery), &["diff", "--name-only", "--diff-filter=U"], url).await.map(|f| f.output).unwrap_or_default();
            let files: Vec<&str> = files.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let _ = self.git(Some(&refinery), &["merge", "--abort"], url).await;
            let detail = if files.is_empty() {
                format!("'{}' does not merge into '{}'", job.branch, job.default_branch)
            } else {
                format!("'{}' conflicts with '{}' in: {}", job.branch, job.default_branch, files.join(", "))
            };
            return Ok(Step::Done(MergeOutcome::failed(MergeState::Conflict, detail, Some(report))));
        }

        for gate in job.gates {
            if let Some(failure) = self.run_gate(&refinery, gate, url).await {
                let _ = self.git(Some(&refinery), &["reset", "--quiet", "--hard", &target], url).await;
                return Ok(Step::Done(failure));
            }
        }

        let push = self.git(Some(&refinery), &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{}", job.default_branch)], url).await;
        if let Err(GitError::Failed(m)) = &push {
            if m.contains("rejected") || m.contains("fetch first") || m.contains("non-fast-forward") {
                return Ok(Step::Moved);
            }
        }
        push?;
        let commit = self.git(Some(&refinery), &["rev-parse", "HEAD"], url).await?.output.trim().to_string();
        if job.delete_branch {
            if let Err(e) = self.git(Some(&refinery), &["push", "--quiet", "origin", "--delete", job.branch], url).await {
                tracing::warn!(rig = job.rig_id, branch = job.branch, error = %e, "merged, but could not delete the branch on the origin");
            }
        }
        Ok(Step::Done(MergeOutcome { state: MergeState::Merged, commit: Some(commit), detail: None, output: None }))
    }

    /// The rig's refinery worktree, after a fresh fetch (both under the rig lock). Created
    /// detached when missing or broken.
    async fn refinery_worktree(&self, job: &MergeJob<'_>) -> Result<std::path::PathBuf, GitError> {
        let repo = self.paths.repo(job.rig_id).map_err(GitError::Invalid)?;
        let refinery = self.paths.refinery(job.rig_id).map_err(GitError::Invalid)?;
        let rig = self.rig(job.rig_id);
        let mut last_fetch = rig.lock.lock().await;
        if is_repository(&repo) {
            super::set_origin_url(&repo, job.git_url)?;
            self.git(Some(&repo), &["fetch", "--prune", "--quiet", "origin"], job.git_url).await?;
        } else {
            self.clone_into(&repo, job.git_url).await?;
        }
        *last_fetch = Some(std::time::Instant::now());
        if git2::Repository::open(&refinery).is_err() {
            if refinery.exists() {
                std::fs::remove_dir_all(&refinery).map_err(|e| GitError::Failed(format!("cannot clear {}: {e}", refinery.display())))?;
            }
            let r = git2::Repository::open(&repo).map_err(|e| GitError::Failed(e.message().to_string()))?;
            prune_stale_worktrees(&r)?;
            let path = refinery.to_string_lossy();
            let start = format!("refs/remotes/origin/{}", job.default_branch);
            self.git(Some(&repo), &["worktree", "add", "--quiet", "--detach", "--force", "--", &path, &start], job.git_url)
                .await
                .map_err(|e| match e {
                    GitError::Failed(m) if m.contains("invalid reference") => GitError::Invalid(format!("default branch '{}' not found on the origin", job.default_branch)),
                    other => other,
                })?;
        }
        Ok(refinery)
    }

    /// Runs one gate in the merged tree with a clean environment (nothing of the control
    /// server's: no container token). `None` when it passed.
    async fn run_gate(&self, dir: &Path, gate: &MergeGate, url: &str) -> Option<MergeOutcome> {
        let home = dir.parent().map(|p| p.join("refinery-home")).unwrap_or_else(|| dir.join(".home"));
        let _ = std::fs::create_dir_all(&home);
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&gate.command).current_dir(dir).env_clear().env("HOME", &home).env("LANG", "C.UTF-8").env("CI", "true");
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        let limit = Duration::from_secs(gate.timeout_secs);
        match run(&self.reaper, &mut cmd, limit).await {
            Ok(f) if f.exit.success() => None,
            Ok(f) => Some(MergeOutcome::failed(
                MergeState::GateFailed,
                format!("gate `{}` failed (exit {})", gate.command, f.exit.code()),
                Some(scrub(&f.output, url)),
            )),
            Err(e) => Some(MergeOutcome::failed(MergeState::GateFailed, format!("gate `{}`: {e}", gate.command), None)),
        }
    }

    /// Removes the worktree of `branch` and the local branch (after its merge). Missing pieces
    /// are fine; the caller makes sure no agent works there.
    pub async fn remove_worktree(&self, rig_id: &str, branch: &str) -> Result<(), GitError> {
        let repo = self.paths.repo(rig_id).map_err(GitError::Invalid)?;
        let worktree = self.paths.worktree(rig_id, &branch_dir_name(branch)).map_err(GitError::Invalid)?;
        let rig = self.rig(rig_id);
        let _guard = rig.lock.lock().await;
        if worktree.exists() {
            std::fs::remove_dir_all(&worktree).map_err(|e| GitError::Failed(format!("cannot remove {}: {e}", worktree.display())))?;
        }
        if !is_repository(&repo) {
            return Ok(());
        }
        let r = git2::Repository::open(&repo).map_err(|e| GitError::Failed(e.message().to_string()))?;
        prune_stale_worktrees(&r)?;
        if let Ok(mut b) = r.find_branch(branch, git2::BranchType::Local) {
            b.delete().map_err(|e| GitError::Failed(format!("cannot delete branch {branch}: {}", e.message())))?;
        }
        Ok(())
    }
}

enum Step {
    Done(MergeOutcome),
    /// The push was rejected because the default branch moved: fetch and merge again.
    Moved,
}

fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_TAIL {
        return text.to_string();
    }
    let mut start = text.len() - OUTPUT_TAIL;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}
