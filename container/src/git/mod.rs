//! One shared clone per rig, one worktree per agent.
//!
//! Layout under `WORKSPACE_ROOT`:
//! ```text
//! rigs/<rigId>/repo                         the rig's clone (no checkout of its own)
//! rigs/<rigId>/worktrees/<branch, / -> ~>   one agent's worktree, on the agent's branch
//! rigs/<rigId>/refinery                     the refinery's worktree (merges, see merge.rs)
//! ```
//!
//! Which tool does what (measurements in shared/reference/git-worktrees.md): the git CLI clones,
//! fetches and adds worktrees, because libgit2's local transport is 6x slower, it cannot do
//! partial clones, its worktree add is about 2x slower, and https would need a vendored OpenSSL.
//! git2 does everything that is a lookup or a small ref edit: opening, resolving the default
//! branch, creating the agent's branch (no config write, so no `.git/config` lock contention),
//! checking and pruning worktrees.
//!
//! Concurrency: every step that writes the shared clone's metadata runs under a per-rig lock, so
//! two agents started on one rig at once clone it once and never race on `.git/config`.

mod merge;
mod paths;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared_types::validate::{branch_dir_name, redact_url};

pub use merge::MergeJob;
pub use paths::WorkspacePaths;

use crate::process::command::{run, Finished};
use crate::process::Reaper;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The request names something the repository does not have (e.g. its default branch).
    #[error("{0}")]
    Invalid(String),
    /// The branch is checked out by another live worktree.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

/// Times of one [`GitManager::prepare`] call, for the start-latency benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrepareTimings {
    pub clone_or_fetch: Duration,
    pub worktree: Duration,
    /// Whether this call cloned (false: it fetched, or reused a fresh fetch).
    pub cloned: bool,
}

#[derive(Debug)]
struct RigState {
    lock: tokio::sync::Mutex<Option<Instant>>,
}

pub struct GitManager {
    paths: WorkspacePaths,
    reaper: Arc<Reaper>,
    timeout: Duration,
    rigs: Mutex<HashMap<String, Arc<RigState>>>,
}

/// A fetch younger than this is reused by the next start on the same rig.
const FETCH_REUSE: Duration = Duration::from_secs(5);

/// What the agent's worktree is for.
#[derive(Debug, Clone)]
pub struct WorktreeRequest<'a> {
    pub rig_id: &'a str,
    pub git_url: &'a str,
    pub branch: &'a str,
    pub default_branch: &'a str,
    /// `user.name` / `user.email` written to the worktree's own config.
    pub author_name: &'a str,
    pub author_email: &'a str,
}

impl GitManager {
    pub fn new(paths: WorkspacePaths, reaper: Arc<Reaper>, timeout: Duration) -> Self {
        Self { paths, reaper, timeout, rigs: Mutex::new(HashMap::new()) }
    }

    pub fn paths(&self) -> &WorkspacePaths {
        &self.paths
    }

    fn rig(&self, rig_id: &str) -> Arc<RigState> {
        let mut rigs = self.rigs.lock().unwrap_or_else(|p| p.into_inner());
        rigs.entry(rig_id.to_string()).or_insert_with(|| Arc::new(RigState { lock: tokio::sync::Mutex::new(None) })).clone()
    }

    /// Makes sure the rig's clone exists and is fresh, and that the agent's worktree exists on
    /// its branch. Idempotent: after a crash that left the branch, the worktree folder, or a
    /// stale `.git/worktrees` entry behind, it succeeds and reuses or repairs what it finds.
    ///
    /// - the branch exists: it is checked out as is (the agent's earlier commits survive);
    /// - it does not: it is created from `origin/<default_branch>`, without upstream;
    /// - the worktree folder holds a valid worktree on the branch: reused;
    /// - it holds anything else: removed and recreated;
    /// - the branch is checked out in another live worktree: [`GitError::Busy`].
    pub async fn prepare(&self, req: &WorktreeRequest<'_>) -> Result<(PathBuf, PrepareTimings), GitError> {
        let repo = self.paths.repo(req.rig_id).map_err(GitError::Invalid)?;
        let worktree = self.paths.worktree(req.rig_id, &branch_dir_name(req.branch)).map_err(GitError::Invalid)?;
        let rig = self.rig(req.rig_id);
        let mut last_fetch = rig.lock.lock().await;
        let mut timings = PrepareTimings::default();

        let t = Instant::now();
        if is_repository(&repo) {
            set_origin_url(&repo, req.git_url)?;
            if last_fetch.is_none_or(|at| at.elapsed() > FETCH_REUSE) {
                self.git(Some(&repo), &["fetch", "--prune", "--quiet", "origin"], req.git_url).await?;
            }
        } else {
            self.clone_into(&repo, req.git_url).await?;
            timings.cloned = true;
        }
        *last_fetch = Some(Instant::now());
        timings.clone_or_fetch = t.elapsed();

        let t = Instant::now();
        if !worktree_on_branch(&worktree, req.branch) {
            prepare_branch_and_slot(&repo, &worktree, req.branch, req.default_branch)?;
            let wt = worktree.to_string_lossy();
            self.git(Some(&repo), &["worktree", "add", "--quiet", "--", &wt, req.branch], req.git_url).await.map_err(|e| match e {
                GitError::Failed(m) if m.contains("already checked out") || m.contains("already used by worktree") => {
                    GitError::Busy(format!("branch {} is checked out by another worktree", req.branch))
                }
                other => other,
            })?;
        }
        self.git(Some(&worktree), &["config", "--worktree", "user.name", req.author_name], req.git_url).await?;
        self.git(Some(&worktree), &["config", "--worktree", "user.email", req.author_email], req.git_url).await?;
        timings.worktree = t.elapsed();
        Ok((worktree, timings))
    }

    /// Clones into a temporary sibling and renames it into place, so a crash mid-clone never
    /// leaves a half-cloned `repo` that later starts would trust.
    async fn clone_into(&self, repo: &Path, url: &str) -> Result<(), GitError> {
        let parent = repo.parent().ok_or_else(|| GitError::Failed("repository path has no parent".into()))?;
        std::fs::create_dir_all(parent).map_err(|e| GitError::Failed(format!("cannot create {}: {e}", parent.display())))?;
        if repo.exists() {
            // Not a repository (we checked): the remains of an interrupted clone.
            std::fs::remove_dir_all(repo).map_err(|e| GitError::Failed(format!("cannot clear a broken clone: {e}")))?;
        }
        let tmp = parent.join(format!(".repo-clone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let tmp_s = tmp.to_string_lossy();
        let result = self.git(None, &["clone", "--no-checkout", "--quiet", "--", url, &tmp_s], url).await;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Per-worktree identity (user.name/email) needs this extension in the shared clone.
        self.git(Some(&tmp), &["config", "extensions.worktreeConfig", "true"], url).await?;
        std::fs::rename(&tmp, repo).map_err(|e| GitError::Failed(format!("cannot move the clone into place: {e}")))?;
        Ok(())
    }

    /// Saves an agent's work before its container goes away: commits everything uncommitted in
    /// the worktree as a WIP commit (hooks skipped, the worktree's own identity), then pushes the
    /// branch. Never force-pushes: a rejected push (the remote moved) is reported, not overridden.
    /// Returns whether a WIP commit was made.
    pub async fn save_work(&self, worktree: &Path, branch: &str, url: &str) -> Result<bool, GitError> {
        self.git(Some(worktree), &["add", "--all"], url).await?;
        let staged = self.git(Some(worktree), &["diff", "--cached", "--quiet"], url).await.is_err();
        if staged {
            self.git(Some(worktree), &["commit", "--quiet", "--no-verify", "-m", "WIP: saved by gastown when the container shut down"], url).await?;
        }
        self.git(Some(worktree), &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")], url).await?;
        Ok(staged)
    }

    /// Runs git with a safe environment; output and errors have credentials removed.
    async fn git(&self, dir: Option<&Path>, args: &[&str], url: &str) -> Result<Finished, GitError> {
        let mut cmd = Command::new("git");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(["-c", "protocol.ext.allow=never", "-c", "core.hooksPath=/dev/null"]).args(args);
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        let what = args.first().copied().unwrap_or("git");
        let finished = run(&self.reaper, &mut cmd, self.timeout).await.map_err(|e| GitError::Failed(scrub(&e.to_string(), url)))?;
        if finished.exit.success() {
            Ok(finished)
        } else {
            Err(GitError::Failed(format!("git {what} failed (exit {}): {}", finished.exit.code(), scrub(finished.output.trim(), url))))
        }
    }
}

fn is_repository(path: &Path) -> bool {
    git2::Repository::open(path).is_ok()
}

/// Keeps the clone's `origin` in step with the rig's URL (a rotated token changes it).
fn set_origin_url(repo: &Path, url: &str) -> Result<(), GitError> {
    let r = git2::Repository::open(repo).map_err(|e| GitError::Failed(e.message().to_string()))?;
    let current = r.find_remote("origin").ok().and_then(|o| o.url().ok().map(str::to_string));
    if current.as_deref() != Some(url) {
        r.remote_set_url("origin", url).map_err(|e| GitError::Failed(format!("cannot update origin: {}", e.message())))?;
    }
    Ok(())
}

/// True if `path` is a worktree whose HEAD is `refs/heads/<branch>`.
fn worktree_on_branch(path: &Path, branch: &str) -> bool {
    let Ok(r) = git2::Repository::open(path) else { return false };
    let want = format!("refs/heads/{branch}");
    // HEAD is symbolic to the branch in a healthy worktree; read the symbolic target so an
    // unborn branch does not read as "not on the branch".
    r.find_reference("HEAD").ok().and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string)).is_some_and(|t| t == want)
}

/// Under the rig lock: prunes stale worktree entries, clears a leftover folder at the
/// worktree's path, and creates the branch from `origin/<default>` if it does not exist.
fn prepare_branch_and_slot(repo: &Path, worktree: &Path, branch: &str, default_branch: &str) -> Result<(), GitError> {
    let fail = |e: git2::Error| GitError::Failed(e.message().to_string());
    let r = git2::Repository::open(repo).map_err(fail)?;
    if worktree.exists() {
        std::fs::remove_dir_all(worktree).map_err(|e| GitError::Failed(format!("cannot clear {}: {e}", worktree.display())))?;
    }
    prune_stale_worktrees(&r)?;
    if r.find_branch(branch, git2::BranchType::Local).is_err() {
        let origin_ref = format!("refs/remotes/origin/{default_branch}");
        let commit = r
            .find_reference(&origin_ref)
            .and_then(|reference| reference.peel_to_commit())
            .map_err(|_| GitError::Invalid(format!("default branch '{default_branch}' not found in the repository")))?;
        r.branch(branch, &commit, false).map_err(fail)?;
    }
    if let Some(parent) = worktree.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GitError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// Removes `.git/worktrees/<name>` entries whose folder is gone, so the branch can be checked
/// out again (libgit2's and the CLI's "already exists" after a crash).
fn prune_stale_worktrees(r: &git2::Repository) -> Result<(), GitError> {
    let names = r.worktrees().map_err(|e| GitError::Failed(e.message().to_string()))?;
    for name in names.iter().flatten().flatten() {
        if let Ok(wt) = r.find_worktree(name) {
            if wt.validate().is_err() {
                let mut opts = git2::WorktreePruneOptions::new();
                opts.valid(false).working_tree(false);
                if let Err(e) = wt.prune(Some(&mut opts)) {
                    tracing::warn!(worktree = name, error = %e.message(), "could not prune stale worktree");
                }
            }
        }
    }
    Ok(())
}

/// Removes credentials from text that may quote a URL.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    // Any other `scheme://user:secret@` in the text.
    let mut result = String::with_capacity(out.len());
    while let Some(i) = out.find("://") {
        let (head, tail) = out.split_at(i + 3);
        result.push_str(head);
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"').unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                result.push_str("***");
                result.push_str(&tail[at..end]);
            }
            None => result.push_str(&tail[..end]),
        }
        out = tail[end..].to_string();
    }
    result.push_str(&out);
    result
}

#[cfg(test)]
mod tests;
