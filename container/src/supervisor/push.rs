//! Pushing an agent's work for it: `gt_done` and `gt_checkpoint` push its branch, the drain its
//! uncommitted work as a WIP commit. The agent commits; the push runs as the server, with the
//! rig's forge credential, which no agent ever holds (`git/push.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use super::Supervisor;
use crate::agents::{Agent, AgentSpec};
use crate::error::{Error, Result};
use crate::git::{BranchPush, GitCredential, Owner, Pushed};

/// Where an agent's work is pushed from and to.
struct Target {
    owner: Owner,
    checkout: PathBuf,
    spec: Arc<AgentSpec>,
    credential: Option<GitCredential>,
    branch_ref: String,
}

impl Target {
    fn push<'a>(&'a self, source: &'a str) -> BranchPush<'a> {
        BranchPush {
            owner: &self.owner,
            rig_id: &self.spec.rig_id,
            checkout: &self.checkout,
            source,
            branch: &self.spec.branch,
            git_url: &self.spec.git_url,
            credential: self.credential.as_ref(),
        }
    }
}

impl Supervisor {
    /// Pushes the agent's branch (its commits; uncommitted changes stay in the checkout).
    /// A refused push (nothing committed, the origin moved on) is a 400 whose message says what
    /// to do; it never forces.
    pub async fn push_branch_of(&self, agent: &Agent) -> Result<Pushed> {
        let target = self.push_target(agent).await?;
        self.git.push_branch(&target.push(&target.branch_ref)).await.map_err(Error::from)
    }

    /// Commits the agent's uncommitted work as a WIP commit ("WIP: saved by gastown `when`")
    /// and pushes its checkout's `HEAD` to its branch; whether a WIP commit was made.
    pub async fn save_work_of(&self, agent: &Agent, when: &str) -> Result<bool> {
        let target = self.push_target(agent).await?;
        self.git.save_work(&target.push("HEAD"), when).await.map_err(Error::from)
    }

    async fn push_target(&self, agent: &Agent) -> Result<Target> {
        let spec = agent.spec();
        let run = self.registry.placed(agent);
        let (server, workdir) = run.map(|p| (p.server, p.workdir)).unwrap_or_default();
        let server =
            server.ok_or_else(|| Error::Conflict("the agent has no running process".into()))?;
        let checkout =
            workdir.ok_or_else(|| Error::Conflict("the agent has no checkout".into()))?;
        let credential = self.credential(Some(&spec.town_id), &spec.rig_id, &spec.git_url).await?;
        Ok(Target {
            owner: server.owner.clone(),
            checkout,
            branch_ref: format!("refs/heads/{}", spec.branch),
            spec,
            credential,
        })
    }
}
