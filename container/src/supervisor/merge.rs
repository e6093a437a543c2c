//! `POST /rigs/:rig/merges` and `GET /rigs/:rig/merges/:review`: the refinery's merge jobs.
//!
//! A merge can take as long as the rig's gates, so it runs in the background and the RigDO
//! polls it. Jobs are named by their review entry: starting a job that exists answers with it
//! (a retried request never merges twice), and one merge runs at a time per rig. After a
//! merge the polecat's worktree and local branch are removed, unless an agent works there.
//! Finished jobs are kept (bounded) until the RigDO has read them; a container restart
//! forgets them and the RigDO starts the merge again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use shared_types::{MergeRequest, MergeState, MergeStatus};

use super::Supervisor;
use crate::error::{Error, Result};
use crate::git::{MergeJob, MergeOutcome};

/// Finished jobs kept for their status.
const KEEP_FINISHED: usize = 512;
/// How long a merged branch's worktree waits for a run that finished its work to end.
const ENDING_RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
pub struct MergeJobs {
    jobs: Mutex<Jobs>,
    /// One merge at a time per rig.
    rig_locks: crate::locks::KeyedLocks,
}

#[derive(Default)]
struct Jobs {
    by_key: HashMap<(String, String), MergeStatus>,
    finished: VecDeque<(String, String)>,
}

impl MergeJobs {
    fn get(&self, key: &(String, String)) -> Option<MergeStatus> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).by_key.get(key).cloned()
    }

    /// Inserts a running job unless one exists; returns the existing one otherwise.
    fn claim(&self, key: (String, String)) -> Option<MergeStatus> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = jobs.by_key.get(&key) {
            return Some(existing.clone());
        }
        let status = MergeStatus {
            review_id: key.1.clone(),
            state: MergeState::Running,
            commit: None,
            detail: None,
            output: None,
        };
        jobs.by_key.insert(key, status);
        None
    }

    fn finish(&self, key: (String, String), status: MergeStatus) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.by_key.insert(key.clone(), status);
        jobs.finished.push_back(key);
        while jobs.finished.len() > KEEP_FINISHED {
            if let Some(old) = jobs.finished.pop_front() {
                jobs.by_key.remove(&old);
            }
        }
    }
}

impl Supervisor {
    /// Starts the merge of a reviewed branch (or answers with the job already under that
    /// review id). Returns at once; the job's state is `running` until it ends.
    pub fn start_merge(
        self: &Arc<Self>,
        rig_id: &str,
        request: MergeRequest,
    ) -> Result<MergeStatus> {
        if self.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        shared_types::validate::id(rig_id).map_err(|m| Error::bad_request(format!("rigId {m}")))?;
        request.validate(self.config.validation_policy()).map_err(Error::invalid)?;
        let key = (rig_id.to_string(), request.review_id.clone());
        if let Some(existing) = self.merges.claim(key.clone()) {
            return Ok(existing);
        }
        tracing::info!(rig = rig_id, review = %request.review_id, branch = %request.branch, "merge requested");
        let answer = MergeStatus {
            review_id: request.review_id.clone(),
            state: MergeState::Running,
            commit: None,
            detail: None,
            output: None,
        };
        let this = self.clone();
        let rig_id = rig_id.to_string();
        tokio::spawn(async move {
            let lock = this.merges.rig_locks.get(&rig_id);
            let _one_at_a_time = lock.lock().await;
            // The gates run agent-written code: under a uid of their own when agents are
            // isolated, held for the whole merge (a push rejected because the branch moved
            // runs them again). Giving it back kills whatever the gates left running.
            let gate_uid = if request.gates.is_empty() { Ok(None) } else { this.uids.lease() };
            let credential = this
                .credential(request.town_id.as_deref(), &rig_id, &request.git_url)
                .await
                .map_err(|e| e.to_string());
            let outcome = match (&gate_uid, &credential) {
                (Ok(lease), Ok(credential)) => {
                    let job = MergeJob {
                        rig_id: &rig_id,
                        git_url: &request.git_url,
                        default_branch: &request.default_branch,
                        branch: &request.branch,
                        message: &request.message,
                        gates: &request.gates,
                        delete_branch: request.delete_branch,
                        gate_uid: lease.as_ref().map(|l| l.uid),
                        credential: credential.as_ref(),
                    };
                    this.git.merge(&job).await
                }
                (Err(e), _) => MergeOutcome {
                    state: MergeState::Failed,
                    commit: None,
                    detail: Some(format!("no uid for the gates: {e}")),
                    output: None,
                },
                (_, Err(e)) => MergeOutcome {
                    state: MergeState::Failed,
                    commit: None,
                    detail: Some(e.clone()),
                    output: None,
                },
            };
            drop(gate_uid);
            drop(_one_at_a_time);
            tracing::info!(rig = %rig_id, review = %request.review_id, state = ?outcome.state, detail = outcome.detail.as_deref().unwrap_or(""), "merge finished");
            let merged = outcome.state == MergeState::Merged;
            let status = MergeStatus {
                review_id: request.review_id.clone(),
                state: outcome.state,
                commit: outcome.commit,
                detail: outcome.detail,
                output: outcome.output,
            };
            this.merges.finish(key, status);
            if merged {
                this.remove_merged_worktree(&rig_id, &request.branch).await;
            }
        });
        Ok(answer)
    }

    pub fn merge_status(&self, rig_id: &str, review_id: &str) -> Result<MergeStatus> {
        self.merges
            .get(&(rig_id.to_string(), review_id.to_string()))
            .ok_or_else(|| Error::NotFound(format!("no merge for review {review_id}")))
    }

    /// `POST /rigs/:rig/worktrees/remove`: the RigDO gave up on a branch (its bead escalated),
    /// so its worktree and local branch go, as after a merge. Returns at once.
    pub fn abandon_branch(self: &Arc<Self>, rig_id: &str, branch: &str) -> Result<()> {
        shared_types::validate::id(rig_id).map_err(|m| Error::bad_request(format!("rigId {m}")))?;
        shared_types::validate::branch(branch)
            .map_err(|m| Error::bad_request(format!("branch {m}")))?;
        let (this, rig_id, branch) = (self.clone(), rig_id.to_string(), branch.to_string());
        tokio::spawn(async move { this.remove_merged_worktree(&rig_id, &branch).await });
        Ok(())
    }

    /// The merged (or abandoned) branch's worktree goes, unless an agent is at work on that branch (a new run
    /// on the same branch: rework after the merge, say). A run that finished its work and is
    /// still ending (its last turn) is waited for, bounded.
    async fn remove_merged_worktree(&self, rig_id: &str, branch: &str) {
        let on_branch = |a: &crate::agents::Agent| {
            let s = a.lock();
            s.status.is_active() && s.spec.rig_id == rig_id && s.spec.branch == branch
        };
        let deadline = tokio::time::Instant::now() + ENDING_RUN_WAIT;
        loop {
            let runs: Vec<_> = self.registry.all().into_iter().filter(|a| on_branch(a)).collect();
            if runs.iter().any(|a| !a.lock().work_done) {
                return;
            }
            if runs.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    rig = rig_id,
                    branch,
                    "a finished run on the merged branch did not end; its worktree stays"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        if let Err(e) = self.git.remove_worktree(rig_id, branch).await {
            tracing::warn!(rig = rig_id, branch, error = %e, "could not remove the merged branch's worktree");
        }
    }
}
