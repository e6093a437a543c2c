//! The refinery's git work: merging a reviewed polecat branch into the rig's default branch in
//! a worktree of the rig's shared clone, running the rig's quality gates on the merged tree,
//! and pushing the default branch (never forced).
//!
//! The gates run code the polecats wrote. When agents are isolated (the server is root), they
//! run under a uid of the merge's own (leased by the caller for the length of the merge, gid =
//! uid, no other groups), with a fresh private HOME, and the refinery worktree is lent to that
//! uid for the gates only: before root runs git there again, every process of the uid is
//! killed, the tree is taken back and its `.git` file written anew. Isolation off: the gates
//! run as the server's user, with HOME `rigs/<rig>/refinery-home`.
//!
//! One merge at a time per rig is the caller's rule (the supervisor holds a per-rig merge
//! lock); the steps that write the shared clone's metadata (fetch, worktree add) also take the
//! rig lock that agent starts take.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shared_types::validate::branch_dir_name;
use shared_types::{MergeGate, MergeState};

use super::push::is_rejection;
use super::{is_repository, prune_stale_worktrees, scrub, GitCredential, GitError, GitManager};
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
    /// The uid the gates run as (`None`: the server's own; isolation is off). The caller holds
    /// its lease for the whole merge.
    pub gate_uid: Option<u32>,
    /// For the fetch and the pushes (the gates never see it).
    pub credential: Option<&'a GitCredential>,
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
        MergeOutcome::failed(
            MergeState::Failed,
            format!(
                "the push to {} was rejected {PUSH_ATTEMPTS} times: the branch keeps moving",
                job.default_branch
            ),
            None,
        )
    }

    async fn merge_once(&self, job: &MergeJob<'_>) -> Result<Step, GitError> {
        let url = job.git_url;
        let refinery = self.refinery_worktree(job).await?;
        let target = format!("refs/remotes/origin/{}", job.default_branch);
        let source = format!("refs/remotes/origin/{}", job.branch);
        if self
            .git(
                Some(&refinery),
                &["rev-parse", "--verify", "--quiet", &format!("{target}^{{commit}}")],
                url,
            )
            .await
            .is_err()
        {
            return Ok(Step::Done(MergeOutcome::failed(
                MergeState::Failed,
                format!("default branch '{}' not found on the origin", job.default_branch),
                None,
            )));
        }
        if self
            .git(
                Some(&refinery),
                &["rev-parse", "--verify", "--quiet", &format!("{source}^{{commit}}")],
                url,
            )
            .await
            .is_err()
        {
            return Ok(Step::Done(MergeOutcome::failed(
                MergeState::Failed,
                format!("branch '{}' not found on the origin", job.branch),
                None,
            )));
        }
        self.git(Some(&refinery), &["checkout", "--quiet", "--detach", "--force", &target], url)
            .await?;
        self.git(Some(&refinery), &["reset", "--quiet", "--hard", &target], url).await?;
        self.git(Some(&refinery), &["clean", "-fdxq"], url).await?;

        let (name, email) =
            (format!("user.name={AUTHOR_NAME}"), format!("user.email={AUTHOR_EMAIL}"));
        let merge = [
            "-c",
            &name,
            "-c",
            &email,
            "merge",
            "--no-ff",
            "--no-edit",
            "-m",
            job.message,
            &source,
        ];
        if let Err(GitError::Failed(report)) = self.git(Some(&refinery), &merge, url).await {
            let files = self
                .git(Some(&refinery), &["diff", "--name-only", "--diff-filter=U"], url)
                .await
                .map(|f| f.output)
                .unwrap_or_default();
            let files: Vec<&str> = files.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let _ = self.git(Some(&refinery), &["merge", "--abort"], url).await;
            let detail = if files.is_empty() {
                format!("'{}' does not merge into '{}'", job.branch, job.default_branch)
            } else {
                format!(
                    "'{}' conflicts with '{}' in: {}",
                    job.branch,
                    job.default_branch,
                    files.join(", ")
                )
            };
            return Ok(Step::Done(MergeOutcome::failed(
                MergeState::Conflict,
                detail,
                Some(report),
            )));
        }

        if let Some(failure) = self.run_gates(&refinery, job).await? {
            let _ = self.git(Some(&refinery), &["reset", "--quiet", "--hard", &target], url).await;
            return Ok(Step::Done(failure));
        }

        let head = format!("HEAD:refs/heads/{}", job.default_branch);
        let push = self
            .git_remote(Some(&refinery), &["push", "--quiet", "origin", &head], url, job.credential)
            .await;
        if let Err(GitError::Failed(m)) = &push {
            if is_rejection(m) {
                return Ok(Step::Moved);
            }
        }
        push?;
        let commit =
            self.git(Some(&refinery), &["rev-parse", "HEAD"], url).await?.output.trim().to_string();
        if job.delete_branch {
            let delete = ["push", "--quiet", "origin", "--delete", job.branch];
            if let Err(e) = self.git_remote(Some(&refinery), &delete, url, job.credential).await {
                tracing::warn!(rig = job.rig_id, branch = job.branch, error = %e, "merged, but could not delete the branch on the origin");
            }
        }
        Ok(Step::Done(MergeOutcome {
            state: MergeState::Merged,
            commit: Some(commit),
            detail: None,
            output: None,
        }))
    }

    /// The rig's refinery worktree, after a fresh fetch (both under the rig lock). Created
    /// detached when missing or broken.
    async fn refinery_worktree(&self, job: &MergeJob<'_>) -> Result<std::path::PathBuf, GitError> {
        let repo = self.paths.repo(job.rig_id).map_err(GitError::Invalid)?;
        let refinery = self.paths.refinery(job.rig_id).map_err(GitError::Invalid)?;
        let rig = self.rig(job.rig_id);
        let mut last_fetch = rig.lock.lock().await;
        let url = &super::origin_url(job.git_url, job.credential);
        // Always fetched: the merge must see the branch as it is on the origin now.
        self.sync_clone(&repo, url, job.credential, &mut last_fetch, super::Reuse::NEVER).await?;
        // Root's git would refuse a worktree owned by another uid ("dubious ownership"), and must
        // not trust one anyway (its `.git` file could point at a repository of the gate's, whose
        // config runs commands): `run_gates` always takes the tree back before root runs git in
        // it, and we do not list it under `safe.directory`. One that is not ours was left lent to
        // a gate uid by a crash during the gates: it is made anew.
        let ours = super::owner_of(&refinery) == Some(nix::unistd::geteuid().as_raw());
        if !ours || git2::Repository::open(&refinery).is_err() {
            if refinery.exists() {
                std::fs::remove_dir_all(&refinery).map_err(|e| {
                    GitError::Failed(format!("cannot clear {}: {e}", refinery.display()))
                })?;
            }
            let r = git2::Repository::open(&repo)
                .map_err(|e| GitError::Failed(e.message().to_string()))?;
            prune_stale_worktrees(&r)?;
            let path = refinery.to_string_lossy();
            let start = format!("refs/remotes/origin/{}", job.default_branch);
            self.git(
                Some(&repo),
                &["worktree", "add", "--quiet", "--detach", "--force", "--", &path, &start],
                job.git_url,
            )
            .await
            .map_err(|e| match e {
                GitError::Failed(m) if m.contains("invalid reference") => GitError::Invalid(
                    format!("default branch '{}' not found on the origin", job.default_branch),
                ),
                other => other,
            })?;
        }
        Ok(refinery)
    }

    /// Runs the job's gates in order on the merged tree; `Some` with the first failure.
    ///
    /// With a gate uid, the worktree is lent to it for the gates and taken back before this
    /// returns, whatever happened: every process of the uid is killed first (a gate's
    /// background job dies with the gates), then the tree becomes root's again and its `.git`
    /// file is written anew (a gate could have pointed it at a repository of its own, whose
    /// config would run commands as root). An error here fails the merge.
    async fn run_gates(
        &self,
        refinery: &Path,
        job: &MergeJob<'_>,
    ) -> Result<Option<MergeOutcome>, GitError> {
        if job.gates.is_empty() {
            return Ok(None);
        }
        let Some(uid) = job.gate_uid else {
            let home = refinery
                .parent()
                .map(|p| p.join("refinery-home"))
                .unwrap_or_else(|| refinery.join(".home"));
            let _ = std::fs::create_dir_all(&home);
            return Ok(self.run_each_gate(job, &GateUser { uid: None, home, refinery }).await);
        };
        let io = |what: &str, path: &Path, e: std::io::Error| {
            GitError::Failed(format!("cannot {what} {}: {e}", path.display()))
        };
        let gitfile = refinery.join(".git");
        let link = std::fs::read(&gitfile).map_err(|e| io("read", &gitfile, e))?;
        // A fresh HOME per merge: nothing one merge's gates leave there (a tool's config, say)
        // reaches the next merge's.
        let home = self.paths.run_dir(&format!("gates-{uid}")).map_err(GitError::Failed)?;
        let lent = async {
            std::fs::remove_dir_all(&home).map_err(|e| io("clear", &home, e))?;
            std::fs::create_dir_all(home.join("tmp")).map_err(|e| io("create", &home, e))?;
            crate::sandbox::give(&home, Some(uid)).map_err(|e| io("hand over", &home, e))?;
            crate::sandbox::give(refinery, Some(uid)).map_err(|e| io("lend", refinery, e))?;
            Ok::<_, GitError>(
                self.run_each_gate(job, &GateUser { uid: Some(uid), home: home.clone(), refinery })
                    .await,
            )
        }
        .await;
        let swept = crate::sandbox::kill_uid(uid);
        let _ = std::fs::remove_dir_all(&home);
        if !swept {
            return Err(GitError::Failed(format!(
                "processes the gates left under uid {uid} could not be killed"
            )));
        }
        let taken_back = (|| {
            crate::sandbox::take_back(refinery).map_err(|e| io("take back", refinery, e))?;
            match std::fs::symlink_metadata(&gitfile) {
                Ok(m) if m.is_dir() => {
                    std::fs::remove_dir_all(&gitfile).map_err(|e| io("clear", &gitfile, e))?
                }
                Ok(_) => std::fs::remove_file(&gitfile).map_err(|e| io("clear", &gitfile, e))?,
                Err(_) => {}
            }
            std::fs::write(&gitfile, &link).map_err(|e| io("write", &gitfile, e))
        })();
        if let Err(e) = taken_back {
            // Half taken back, the tree may look like ours with the gate's `.git` in it: it goes,
            // and the next merge makes a new one.
            let _ = std::fs::remove_dir_all(refinery);
            return Err(e);
        }
        lent
    }

    async fn run_each_gate(&self, job: &MergeJob<'_>, user: &GateUser<'_>) -> Option<MergeOutcome> {
        for gate in job.gates {
            if let Some(failure) = self.run_gate(gate, job.git_url, user).await {
                return Some(failure);
            }
        }
        None
    }

    /// Runs one gate in the merged tree with a clean environment (nothing of the control
    /// server's: no container token), as the gate user. `None` when it passed.
    async fn run_gate(
        &self,
        gate: &MergeGate,
        url: &str,
        user: &GateUser<'_>,
    ) -> Option<MergeOutcome> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&gate.command)
            .current_dir(user.refinery)
            .env_clear()
            .env("HOME", &user.home)
            .env("LANG", "C.UTF-8")
            .env("CI", "true");
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        if let Some(uid) = user.uid {
            // As root, std drops the supplementary groups (setgroups) before the uid.
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, uid);
            // The worktree (and its `.git` file) is the gate uid's now, but its git dir
            // (`repo/.git/worktrees/refinery`) stays root's: git refuses a repository whose
            // parts have another owner ("dubious ownership") unless its path is listed under
            // `safe.directory`, which counts only in the user's or the command line's config.
            // Listed here as command-line config for the gate's git commands (`git diff` in a
            // gate); the repository's objects and refs are only read, never written.
            cmd.env("TMPDIR", user.home.join("tmp"))
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "safe.directory")
                .env("GIT_CONFIG_VALUE_0", user.refinery);
        }
        let limit = Duration::from_secs(gate.timeout_secs);
        match run(&self.reaper, &mut cmd, limit).await {
            Ok(f) if f.exit.success() => None,
            Ok(f) => Some(MergeOutcome::failed(
                MergeState::GateFailed,
                format!("gate `{}` failed (exit {})", gate.command, f.exit.code()),
                Some(scrub(&f.output, url)),
            )),
            Err(e) => Some(MergeOutcome::failed(
                MergeState::GateFailed,
                format!("gate `{}`: {e}", gate.command),
                None,
            )),
        }
    }

    /// Removes the worktree of `branch` and the local branch (after its merge). Missing pieces
    /// are fine; the caller makes sure no agent works there.
    pub async fn remove_worktree(&self, rig_id: &str, branch: &str) -> Result<(), GitError> {
        let repo = self.paths.repo(rig_id).map_err(GitError::Invalid)?;
        let worktree =
            self.paths.worktree(rig_id, &branch_dir_name(branch)).map_err(GitError::Invalid)?;
        let rig = self.rig(rig_id);
        let _guard = rig.lock.lock().await;
        if worktree.exists() {
            std::fs::remove_dir_all(&worktree).map_err(|e| {
                GitError::Failed(format!("cannot remove {}: {e}", worktree.display()))
            })?;
        }
        if !is_repository(&repo) {
            return Ok(());
        }
        let r =
            git2::Repository::open(&repo).map_err(|e| GitError::Failed(e.message().to_string()))?;
        prune_stale_worktrees(&r)?;
        if let Ok(mut b) = r.find_branch(branch, git2::BranchType::Local) {
            b.delete().map_err(|e| {
                GitError::Failed(format!("cannot delete branch {branch}: {}", e.message()))
            })?;
        }
        Ok(())
    }
}

/// Who runs the gates, and where.
struct GateUser<'a> {
    /// `None`: the server's own user (isolation off).
    uid: Option<u32>,
    home: std::path::PathBuf,
    refinery: &'a Path,
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
