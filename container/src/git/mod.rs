//! One shared clone per rig; per agent, a checkout that borrows the clone's objects.
//!
//! Layout under `WORKSPACE_ROOT`:
//! ```text
//! rigs/<rigId>/repo                         the rig's clone (no checkout of its own)
//! rigs/<rigId>/worktrees/<branch, / -> ~>   one agent's checkout, on the agent's branch
//! rigs/<rigId>/refinery                     the refinery's worktree of the clone (merge.rs)
//! ```
//!
//! An agent's checkout is a `git clone --shared` of the rig's clone: its objects come from the
//! clone through `objects/info/alternates` (nothing is copied; 0.05 s), and everything the agent
//! writes (objects, refs, index, config) lands in its own `.git`. It is created by, and belongs
//! to, the agent's uid (`sandbox.rs`), mode 0700. A `git worktree` of the shared clone would
//! make every agent write into the clone's one object store and ref namespace, which would
//! need a group-writable clone that any agent of the rig could rewrite (another agent's branch
//! included); the clone-per-agent keeps agents apart at the same cost and, unlike worktree
//! adds, takes no lock on the clone's `.git/config`.
//!
//! Which tool does what (measurements in shared/reference/git-worktrees.md): the git CLI clones,
//! fetches and checks out, because libgit2's local transport is 6x slower, it cannot do
//! partial clones, and https would need a vendored OpenSSL. git2 does the lookups: opening,
//! checking a checkout's branch, pruning the refinery's worktree entries.
//!
//! Concurrency: every step that writes the shared clone runs under a per-rig lock, so two
//! agents started on one rig at once clone it once; their checkouts are made in parallel.

mod credential;
mod merge;
mod paths;
mod push;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared_types::validate::{branch_dir_name, redact_url};

pub use credential::{origin_url, GitCredential};
pub use merge::{MergeJob, MergeOutcome};
pub use paths::WorkspacePaths;
pub use push::{BranchPush, Pushed};

use crate::process::command::{run, Finished};
use crate::process::Reaper;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The request names something the repository does not have (e.g. its default branch).
    #[error("{0}")]
    Invalid(String),
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
    lock: tokio::sync::Mutex<Option<LastFetch>>,
}

/// The rig clone's last fetch from its origin.
#[derive(Debug, Clone, Copy)]
struct LastFetch {
    at: Instant,
    /// The most merges into the default branch any start had seen when this fetch (or an
    /// earlier one) was made: a start that has seen more must fetch again.
    merges_seen: u64,
}

/// When the rig clone's last fetch may serve a caller instead of a new one.
#[derive(Debug, Clone, Copy)]
struct Reuse {
    /// No older than this.
    within: Duration,
    /// Made for a start that had seen at least this many merges.
    merges_seen: u64,
}

impl Reuse {
    /// Never: the caller must see the origin as it is now.
    const NEVER: Reuse = Reuse { within: Duration::ZERO, merges_seen: 0 };

    fn allows(&self, last: Option<LastFetch>) -> bool {
        last.is_some_and(|l| l.at.elapsed() < self.within && l.merges_seen >= self.merges_seen)
    }
}

pub struct GitManager {
    paths: WorkspacePaths,
    reaper: Arc<Reaper>,
    timeout: Duration,
    rigs: Mutex<HashMap<String, Arc<RigState>>>,
    /// How long a start may reuse the rig clone's last fetch ([`FETCH_REUSE`]).
    fetch_reuse: Duration,
    /// Per owner HOME: agents sharing a process write its `.gitconfig` one at a time.
    homes: crate::locks::KeyedLocks,
}

/// A fetch younger than this is reused by the next start on the same rig.
const FETCH_REUSE: Duration = Duration::from_secs(5);

/// Who an agent's checkout belongs to: git runs as this uid (when agents are isolated) with
/// this HOME, whose `.gitconfig` lists the repositories of others the agent may use.
#[derive(Debug, Clone)]
pub struct Owner {
    pub uid: Option<u32>,
    pub home: PathBuf,
}

/// What the agent's checkout is for.
#[derive(Debug, Clone)]
pub struct WorktreeRequest<'a> {
    pub owner: &'a Owner,
    pub rig_id: &'a str,
    pub git_url: &'a str,
    pub branch: &'a str,
    pub default_branch: &'a str,
    /// `user.name` / `user.email` written to the checkout's own config.
    pub author_name: &'a str,
    pub author_email: &'a str,
    /// For the clone and fetch of the rig's clone (never for the agent's own git).
    pub credential: Option<&'a GitCredential>,
    /// Merges into the default branch the Worker had recorded (see
    /// `StartAgentRequest::merges_seen`): a recent fetch serves this start only if it was made
    /// for a start that had seen as many.
    pub merges_seen: u64,
}

impl GitManager {
    pub fn new(paths: WorkspacePaths, reaper: Arc<Reaper>, timeout: Duration) -> Self {
        Self {
            paths,
            reaper,
            timeout,
            rigs: Mutex::new(HashMap::new()),
            fetch_reuse: FETCH_REUSE,
            homes: crate::locks::KeyedLocks::default(),
        }
    }

    /// The same manager with another fetch reuse window (tests make it long enough that a
    /// reuse never depends on how fast the machine is).
    #[cfg(test)]
    fn with_fetch_reuse(mut self, within: Duration) -> Self {
        self.fetch_reuse = within;
        self
    }

    pub fn paths(&self) -> &WorkspacePaths {
        &self.paths
    }

    fn rig(&self, rig_id: &str) -> Arc<RigState> {
        let mut rigs = self.rigs.lock().unwrap_or_else(|p| p.into_inner());
        rigs.entry(rig_id.to_string())
            .or_insert_with(|| Arc::new(RigState { lock: tokio::sync::Mutex::new(None) }))
            .clone()
    }

    /// Makes sure the rig's clone exists and is fresh, and that the agent's checkout exists on
    /// its branch. Idempotent: after a crash that left a checkout or a half-made folder behind,
    /// it succeeds and reuses or replaces what it finds.
    ///
    /// - the folder holds a checkout on the branch: reused as is (the agent's earlier commits
    ///   survive, pushed or not), handed over to this owner if an earlier run's uid had it;
    /// - it holds anything else, or nothing: a new checkout, on `origin/<branch>` when the
    ///   branch was pushed before (a rework after a restart), else on a new branch from
    ///   `origin/<default_branch>`, without upstream.
    pub async fn prepare(
        &self,
        req: &WorktreeRequest<'_>,
    ) -> Result<(PathBuf, PrepareTimings), GitError> {
        let repo = self.paths.repo(req.rig_id).map_err(GitError::Invalid)?;
        let checkout = self
            .paths
            .worktree(req.rig_id, &branch_dir_name(req.branch))
            .map_err(GitError::Invalid)?;
        let mut timings = PrepareTimings::default();
        let url = &origin_url(req.git_url, req.credential);
        {
            let rig = self.rig(req.rig_id);
            let mut last_fetch = rig.lock.lock().await;
            let t = Instant::now();
            let reuse = Reuse { within: self.fetch_reuse, merges_seen: req.merges_seen };
            timings.cloned =
                self.sync_clone(&repo, url, req.credential, &mut last_fetch, reuse).await?;
            timings.clone_or_fetch = t.elapsed();
        }

        let t = Instant::now();
        self.trust_for(req.owner, &repo, req.git_url).await?;
        if !checkout_on_branch(&checkout, req.branch) {
            self.create_checkout(&repo, &checkout, req).await?;
        } else {
            if let Some(uid) = req.owner.uid.filter(|uid| owner_of(&checkout) != Some(*uid)) {
                // A later run of the work (a rework) runs under another uid: the checkout is
                // its now.
                crate::sandbox::give(&checkout, Some(uid)).map_err(|e| {
                    GitError::Failed(format!("cannot hand {} over: {e}", checkout.display()))
                })?;
            }
            let owner = Some(req.owner);
            let steps: [&[&str]; 4] = [
                &["remote", "set-url", "origin", &repo.to_string_lossy()],
                &["remote", "set-url", "--push", "origin", url],
                &["config", "user.name", req.author_name],
                &["config", "user.email", req.author_email],
            ];
            for args in steps {
                self.git_as(owner, Some(&checkout), args, url).await?;
            }
            self.follow_the_clone(req.owner, &checkout, url).await?;
        }
        timings.worktree = t.elapsed();
        Ok((checkout, timings))
    }

    /// Brings the clone's view of the origin into the checkout: its `origin` is the rig's
    /// clone for fetches, and `git fetch origin` copies the clone's `refs/remotes/origin/*`
    /// (fresh from the server's own fetch, made with the forge credential the agent never
    /// holds). Pushes name the real origin (`remote.origin.pushurl`): an agent may push itself
    /// where it can (a local origin), and `gt_done` pushes for it where it cannot.
    async fn follow_the_clone(
        &self,
        owner: &Owner,
        checkout: &Path,
        url: &str,
    ) -> Result<(), GitError> {
        let steps: [&[&str]; 2] = [
            &["config", "remote.origin.fetch", "+refs/remotes/origin/*:refs/remotes/origin/*"],
            &["fetch", "--quiet", "--no-tags", "origin"],
        ];
        for args in steps {
            self.git_as(Some(owner), Some(checkout), args, url).await?;
        }
        Ok(())
    }

    /// A new checkout of `req.branch` at `checkout`, made by its owner in a folder that only
    /// the owner may enter. Whatever was at that path is removed first.
    async fn create_checkout(
        &self,
        repo: &Path,
        checkout: &Path,
        req: &WorktreeRequest<'_>,
    ) -> Result<(), GitError> {
        let io = |what: &str, e: std::io::Error| {
            GitError::Failed(format!("cannot {what} {}: {e}", checkout.display()))
        };
        if checkout.exists() {
            std::fs::remove_dir_all(checkout).map_err(|e| io("clear", e))?;
        }
        std::fs::create_dir(checkout).map_err(|e| io("create", e))?;
        crate::sandbox::give(checkout, req.owner.uid).map_err(|e| io("hand over", e))?;
        let owner = Some(req.owner);
        let (repo_s, checkout_s) = (repo.to_string_lossy(), checkout.to_string_lossy());
        let url = &origin_url(req.git_url, req.credential);
        // The checkout's own settings come with the clone (`-c` writes them into its config
        // before anything else runs): each git process is a few milliseconds of every start.
        let (push_url, name, email) = (
            format!("remote.origin.pushurl={url}"),
            format!("user.name={}", req.author_name),
            format!("user.email={}", req.author_email),
        );
        let clone = [
            "clone",
            "--shared",
            "--no-checkout",
            "--quiet",
            "-c",
            &push_url,
            "-c",
            &name,
            "-c",
            &email,
            "--",
            &repo_s,
            &checkout_s,
        ];
        self.git_as(owner, None, &clone, url).await?;
        // The clone's remote-tracking refs are the rig clone's own, fresh from its fetch.
        self.follow_the_clone(req.owner, checkout, url).await?;
        let pushed = format!("refs/remotes/origin/{}", req.branch);
        let default = format!("refs/remotes/origin/{}", req.default_branch);
        let start = if has_ref(checkout, &pushed) {
            pushed
        } else if has_ref(checkout, &default) {
            default
        } else {
            let _ = std::fs::remove_dir_all(checkout);
            return Err(GitError::Invalid(format!(
                "default branch '{}' not found in the repository",
                req.default_branch
            )));
        };
        self.git_as(
            owner,
            Some(checkout),
            &["checkout", "--quiet", "--no-track", "-B", req.branch, &start],
            url,
        )
        .await?;
        Ok(())
    }

    /// Lets the owner's git use repositories it does not own: the rig's clone (the source of
    /// its checkout) and, for a local `file://` origin, the origin (git refuses a repository
    /// owned by another uid unless the user's own config lists it under `safe.directory`).
    async fn trust_for(&self, owner: &Owner, repo: &Path, url: &str) -> Result<(), GitError> {
        // Git names a clone with a work tree by either path, depending on the command.
        let mut paths = vec![
            repo.to_string_lossy().into_owned(),
            repo.join(".git").to_string_lossy().into_owned(),
        ];
        if let Some(local) = url.strip_prefix("file://") {
            paths.push(local.to_string());
        }
        let lock = self.homes.get(&owner.home.to_string_lossy());
        let _writing = lock.lock().await;
        let listed = self
            .git_as(Some(owner), None, &["config", "--global", "--get-all", "safe.directory"], url)
            .await
            .map(|f| f.output)
            .unwrap_or_default();
        for path in paths {
            if !listed.lines().any(|l| l.trim() == path) {
                self.git_as(
                    Some(owner),
                    None,
                    &["config", "--global", "--add", "safe.directory", &path],
                    url,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Clones into a temporary sibling and renames it into place, so a crash mid-clone never
    /// leaves a half-cloned `repo` that later starts would trust.
    async fn clone_into(
        &self,
        repo: &Path,
        url: &str,
        credential: Option<&GitCredential>,
    ) -> Result<(), GitError> {
        let parent = repo
            .parent()
            .ok_or_else(|| GitError::Failed("repository path has no parent".into()))?;
        std::fs::create_dir_all(parent)
            .map_err(|e| GitError::Failed(format!("cannot create {}: {e}", parent.display())))?;
        if repo.exists() {
            // Not a repository (we checked): the remains of an interrupted clone.
            std::fs::remove_dir_all(repo)
                .map_err(|e| GitError::Failed(format!("cannot clear a broken clone: {e}")))?;
        }
        let tmp = parent.join(format!(".repo-clone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let tmp_s = tmp.to_string_lossy();
        let clone = ["clone", "--no-checkout", "--quiet", "--", url, &tmp_s];
        let result = self.git_remote(None, &clone, url, credential).await;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Agents' checkouts borrow these objects: nothing may ever prune them.
        self.git(Some(&tmp), &["config", "gc.auto", "0"], url).await?;
        // Every agent's checkout of the rig reads these objects, under its own uid.
        crate::sandbox::readable_tree(&tmp)
            .map_err(|e| GitError::Failed(format!("cannot open the clone to the agents: {e}")))?;
        std::fs::rename(&tmp, repo)
            .map_err(|e| GitError::Failed(format!("cannot move the clone into place: {e}")))?;
        Ok(())
    }

    /// Saves an agent's work before its run is stopped: commits everything uncommitted in the
    /// checkout as a WIP commit ("WIP: saved by gastown `when`"; hooks skipped, the checkout's
    /// own identity, as its owner),
    /// then pushes the checkout's `HEAD` to the agent's branch ([`Self::push_branch`]). Never
    /// force-pushes: a rejected push (the remote moved) is reported, not overridden. Returns
    /// whether a WIP commit was made.
    pub async fn save_work(&self, push: &BranchPush<'_>, when: &str) -> Result<bool, GitError> {
        let (owner, checkout, url) = (Some(push.owner), Some(push.checkout), push.git_url);
        self.git_as(owner, checkout, &["add", "--all"], url).await?;
        let staged =
            self.git_as(owner, checkout, &["diff", "--cached", "--quiet"], url).await.is_err();
        if staged {
            let message = format!("WIP: saved by gastown {when}");
            self.git_as(
                owner,
                checkout,
                &["commit", "--quiet", "--no-verify", "-m", &message],
                url,
            )
            .await?;
        }
        self.push_branch(push).await?;
        Ok(staged)
    }

    /// Brings the rig's clone up to date with its origin, cloning it when missing, as the server
    /// with the rig's credential. The caller holds the rig lock; `last_fetch` is its record of
    /// the last fetch, which serves instead of a new one when `reuse` allows. Whether it cloned.
    async fn sync_clone(
        &self,
        repo: &Path,
        url: &str,
        credential: Option<&GitCredential>,
        last_fetch: &mut Option<LastFetch>,
        reuse: Reuse,
    ) -> Result<bool, GitError> {
        let known = last_fetch.map_or(0, |l| l.merges_seen);
        let cloned = if is_repository(repo) {
            set_origin_url(repo, url)?;
            if reuse.allows(*last_fetch) {
                return Ok(false);
            }
            let fetch = ["fetch", "--prune", "--quiet", "origin"];
            self.git_remote(Some(repo), &fetch, url, credential).await?;
            false
        } else {
            self.clone_into(repo, url, credential).await?;
            true
        };
        // A fetch sees at least what every earlier one saw.
        let merges_seen = known.max(reuse.merges_seen);
        *last_fetch = Some(LastFetch { at: Instant::now(), merges_seen });
        Ok(cloned)
    }

    /// Runs git as the control server, in its own repositories.
    async fn git(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        url: &str,
    ) -> Result<Finished, GitError> {
        self.git_as(None, dir, args, url).await
    }

    /// Runs git as the control server in one of its own repositories, talking to the origin
    /// with `credential` (the only git processes that ever get one).
    async fn git_remote(
        &self,
        dir: Option<&Path>,
        args: &[&str],
        url: &str,
        credential: Option<&GitCredential>,
    ) -> Result<Finished, GitError> {
        let mut cmd = self.command(None, dir, args);
        if let Some(credential) = credential {
            credential.apply(&mut cmd);
        }
        self.exec(cmd, args, url, credential).await
    }

    /// Runs git with a safe environment; output and errors have credentials removed. With an
    /// owner, as the owner's uid, with the owner's HOME and nothing of the server's environment
    /// (the process is the owner's to read).
    async fn git_as(
        &self,
        owner: Option<&Owner>,
        dir: Option<&Path>,
        args: &[&str],
        url: &str,
    ) -> Result<Finished, GitError> {
        self.exec(self.command(owner, dir, args), args, url, None).await
    }

    /// A git command with a safe environment (see [`Self::git_as`]), not started.
    fn command(&self, owner: Option<&Owner>, dir: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(["-c", "protocol.ext.allow=never", "-c", "core.hooksPath=/dev/null"]).args(args);
        if let Some(owner) = owner {
            cmd.env_clear()
                .envs(crate::kilo::server::inherited_env())
                .env("HOME", &owner.home)
                .env("XDG_CONFIG_HOME", owner.home.join(".config"));
            if let Some(uid) = owner.uid {
                std::os::unix::process::CommandExt::uid(&mut cmd, uid);
                std::os::unix::process::CommandExt::gid(&mut cmd, uid);
            }
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        cmd
    }

    async fn exec(
        &self,
        mut cmd: Command,
        args: &[&str],
        url: &str,
        credential: Option<&GitCredential>,
    ) -> Result<Finished, GitError> {
        let clean = |text: &str| {
            let text = scrub(text, url);
            match credential {
                Some(c) if !c.token().is_empty() => text.replace(c.token(), "***"),
                _ => text,
            }
        };
        let what = args.first().copied().unwrap_or("git");
        let finished = run(&self.reaper, &mut cmd, self.timeout)
            .await
            .map_err(|e| GitError::Failed(clean(&e.to_string())))?;
        if finished.exit.success() {
            Ok(finished)
        } else {
            Err(GitError::Failed(format!(
                "git {what} failed (exit {}): {}",
                finished.exit.code(),
                clean(finished.output.trim())
            )))
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
        r.remote_set_url("origin", url)
            .map_err(|e| GitError::Failed(format!("cannot update origin: {}", e.message())))?;
    }
    Ok(())
}

/// True if `path` is a checkout whose HEAD is `refs/heads/<branch>`.
fn checkout_on_branch(path: &Path, branch: &str) -> bool {
    let Ok(r) = git2::Repository::open(path) else { return false };
    let want = format!("refs/heads/{branch}");
    // HEAD is symbolic to the branch in a healthy checkout; read the symbolic target so an
    // unborn branch does not read as "not on the branch".
    r.find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
        .is_some_and(|t| t == want)
}

fn owner_of(path: &Path) -> Option<u32> {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path).ok()?).into()
}

fn has_ref(repo: &Path, name: &str) -> bool {
    git2::Repository::open(repo).is_ok_and(|r| r.find_reference(name).is_ok())
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
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
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
