//! Pushing an agent's branch for it: the agent commits, the control server pushes.
//!
//! The push runs as the server, from the rig's clone, with the rig's forge credential; the
//! agent's checkout is only ever read by the agent's own uid. That uid packs the commits the
//! clone lacks (`git pack-objects`, reading its own checkout and the clone it borrows objects
//! from) into a pipe, and the server's `git index-pack --strict` takes them into the clone,
//! checking every object. Root never runs git in the agent's checkout, whose config and hooks
//! are the agent's to write, and never reads a file there through a path the agent could have
//! pointed elsewhere.

use std::path::Path;

use super::{GitCredential, GitError, GitManager, Owner};
use crate::process::command::pipe;

/// One push of an agent's work.
#[derive(Debug, Clone)]
pub struct BranchPush<'a> {
    pub owner: &'a Owner,
    pub rig_id: &'a str,
    pub checkout: &'a Path,
    /// What to push: a revision of the checkout (`HEAD`, or `refs/heads/<branch>`).
    pub source: &'a str,
    /// The agent's branch on the origin.
    pub branch: &'a str,
    pub git_url: &'a str,
    pub credential: Option<&'a GitCredential>,
}

/// What a push sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The commit the origin's branch now names.
    pub commit: String,
}

impl GitManager {
    /// Pushes the agent's `source` to `refs/heads/<branch>` on the origin. Never forced: when
    /// the origin's branch has commits the agent's does not, the push is refused with a message
    /// that says how to catch up. A branch the agent already pushed itself pushes nothing.
    pub async fn push_branch(&self, push: &BranchPush<'_>) -> Result<Pushed, GitError> {
        let commit = self.commit_of(push).await?;
        let repo = self.paths.repo(push.rig_id).map_err(GitError::Invalid)?;
        let rig = self.rig(push.rig_id);
        // The clone's objects and refs change: no fetch or other push of the rig meanwhile.
        let _clone = rig.lock.lock().await;
        if !has_commit(&repo, &commit) {
            self.take_commits(push, &repo, &commit).await?;
        }
        let refspec = format!("{commit}:refs/heads/{}", push.branch);
        let pushed = self
            .git_remote(
                Some(&repo),
                &["push", "--quiet", "origin", &refspec],
                push.git_url,
                push.credential,
            )
            .await;
        match pushed {
            Err(GitError::Failed(m)) if is_rejection(&m) => Err(GitError::Invalid(format!(
                "the origin's '{branch}' has commits your branch does not have: run `git fetch origin && git merge origin/{branch}`, then try again (never force-push)",
                branch = push.branch
            ))),
            Err(e) => Err(e),
            Ok(_) => Ok(Pushed { commit }),
        }
    }

    /// The commit `push.source` names in the agent's checkout, asked as the agent.
    async fn commit_of(&self, push: &BranchPush<'_>) -> Result<String, GitError> {
        let rev = format!("{}^{{commit}}", push.source);
        let found = self
            .git_as(
                Some(push.owner),
                Some(push.checkout),
                &["rev-parse", "--verify", "--quiet", &rev],
                push.git_url,
            )
            .await
            .map(|f| f.output.trim().to_string());
        match found {
            Ok(id) if is_object_id(&id) => Ok(id),
            _ => Err(GitError::Invalid(format!(
                "there is no commit on '{}' in your checkout: commit your work first",
                push.source
            ))),
        }
    }

    /// Moves the commits the clone lacks from the agent's checkout into the clone: packed by the
    /// agent's uid, everything reachable from the clone's remote-tracking refs left out, and
    /// indexed (every object checked) by the server.
    async fn take_commits(
        &self,
        push: &BranchPush<'_>,
        repo: &Path,
        commit: &str,
    ) -> Result<(), GitError> {
        let mut input = format!("{commit}\n--not\n");
        for tip in remote_tips(repo) {
            input.push_str(&tip);
            input.push('\n');
        }
        let mut pack = self.command(
            Some(push.owner),
            Some(push.checkout),
            &["pack-objects", "--revs", "--stdout", "--quiet", "--delta-base-offset"],
        );
        let mut index = self.command(None, Some(repo), &["index-pack", "--stdin", "--strict"]);
        let failed = |what: &str, detail: &str| {
            GitError::Failed(format!(
                "could not take your commits into the rig's clone: {what}: {}",
                super::scrub(detail.trim(), push.git_url)
            ))
        };
        let (packed, indexed) =
            pipe(&self.reaper, &mut pack, input.into_bytes(), &mut index, self.timeout)
                .await
                .map_err(|e| failed("git", &e.to_string()))?;
        if !packed.exit.success() {
            return Err(failed("pack-objects", &packed.output));
        }
        if !indexed.exit.success() {
            return Err(failed("index-pack", &indexed.output));
        }
        if !has_commit(repo, commit) {
            return Err(failed("index-pack", "the commit is still missing"));
        }
        Ok(())
    }
}

/// A full object id (SHA-1 or SHA-256, lowercase hex).
fn is_object_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64)
        && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn has_commit(repo: &Path, commit: &str) -> bool {
    let Ok(r) = git2::Repository::open(repo) else { return false };
    git2::Oid::from_str(commit).is_ok_and(|oid| r.find_commit(oid).is_ok())
}

/// The commits the clone's `refs/remotes/origin/*` name.
fn remote_tips(repo: &Path) -> Vec<String> {
    let Ok(r) = git2::Repository::open(repo) else { return Vec::new() };
    let Ok(refs) = r.references_glob("refs/remotes/origin/*") else { return Vec::new() };
    let mut tips: Vec<String> = refs
        .flatten()
        .filter_map(|re| re.resolve().ok()?.target())
        .map(|oid| oid.to_string())
        .collect();
    tips.sort();
    tips.dedup();
    tips
}

/// Whether git refused a push because the origin's branch moved on.
pub(super) fn is_rejection(message: &str) -> bool {
    message.contains("rejected")
        || message.contains("fetch first")
        || message.contains("non-fast-forward")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_full_lowercase_hex() {
        assert!(is_object_id(&"a".repeat(40)));
        assert!(is_object_id(&"0".repeat(64)));
        assert!(!is_object_id(&"A".repeat(40)));
        assert!(!is_object_id("HEAD"));
        assert!(!is_object_id(&"a".repeat(41)));
    }
}
