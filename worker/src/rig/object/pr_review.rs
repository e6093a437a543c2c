//! The refinery's step for a rig whose merge strategy is `pr`: the oldest pending entry gets a
//! pull request (a merge request on GitLab) on the rig's forge (the bead's earlier one, for a rework: the polecat pushed to
//! the same branch), and the running entry's pull request is read at most every `PR_POLL_MS`
//! and acted on ([`pulls::decide`]): merged over REST when approved and green, or finished as a
//! merge would be (merged, sent back for rework, returned when closed). One entry at a time
//! per rig, as with the container's merges. A forge that asks for a pause (`Retry-After`, an
//! exhausted rate limit) gets no request from the rig until then.

use serde::Deserialize;
use shared_types::{MergeState, MergeStatus};

use super::RigObject;
use crate::db::Db;
use crate::effects::Effects;
use crate::error::ApiResult;
use crate::forge::pulls::{self, Forge, Repo, Step};
use crate::forge::rest::ForgeError;
use crate::forge::ForgeToken;
use crate::model::{ReviewEntry, RigConfig};
use crate::rig::pulls::KeptAnswers;
use crate::scheduler::Settings;
use crate::shards::ShardRef;
use crate::town::op::TownCall;

/// How long after a branch was submitted a pull request without any check is still not merged
/// (its checks may not have started yet).
const CHECKS_SETTLE_MS: i64 = 60_000;

/// The object's counter: no forge request before this time (ms), as the forge asked.
const PACED_UNTIL: &str = "forge_paced_until";

/// The rig's forge token, as the TownDO answers it.
#[derive(Deserialize)]
struct Issued {
    kind: String,
    api_url: String,
    token: String,
}

impl<D: Db, E: Effects> RigObject<'_, D, E> {
    pub(super) async fn review_by_pull_request(
        &self,
        at: &ShardRef,
        config: &RigConfig,
    ) -> ApiResult<()> {
        if self.fx.now_ms() < self.fx.counter(PACED_UNTIL).await {
            // The forge asked for a pause (a rate limit): no request before then.
            return Ok(());
        }
        if let Some(entry) = self.with_rig(|r| r.running_review())? {
            let poll_ms = Settings::from_lookup(|k| self.fx.var(k)).pr_poll_ms;
            let last = self.with_rig(|r| r.polled_ms(&entry.id))?;
            if last.is_none_or(|at| self.fx.now_ms() - at >= poll_ms) {
                self.follow_pull_request(at, config, &entry).await?;
            }
            return Ok(());
        }
        if let Some(entry) = self.with_rig(|r| r.next_review())? {
            if self.with_rig(|r| r.start_review(&entry))? {
                self.follow_pull_request(at, config, &entry).await?;
            }
        }
        Ok(())
    }

    /// One look at the entry's pull request (opened first when it has none), and the step it
    /// calls for. What the forge refuses fails the entry with the forge's words; what may work
    /// later (unreachable, rate-limited) waits for the next poll.
    async fn follow_pull_request(
        &self,
        at: &ShardRef,
        config: &RigConfig,
        entry: &ReviewEntry,
    ) -> ApiResult<()> {
        self.with_rig(|r| r.mark_polled(&entry.id, self.fx.now_ms()))?;
        match self.pull_request_step(at, config, entry).await {
            Ok(None) => Ok(()),
            Ok(Some(status)) => self.apply_merge(at, config, entry, &status).await,
            Err(ForgeError::Later(why)) => {
                self.fx.log_error(&format!("refinery: pull request of {} waits: {why}", entry.id));
                Ok(())
            }
            Err(ForgeError::Paced { until_ms, why }) => {
                self.fx.set_counter(PACED_UNTIL, until_ms).await;
                let secs = (until_ms - self.fx.now_ms()).max(0) / 1000;
                self.fx.log_error(&format!(
                    "refinery: the forge asks for a pause of {secs} s ({why}); pull request of {} waits",
                    entry.id
                ));
                Ok(())
            }
            Err(ForgeError::Refused(why)) => {
                let failed = outcome(entry, MergeState::Failed, None, why, None);
                self.apply_merge(at, config, entry, &failed).await
            }
        }
    }

    /// The entry's outcome once its pull request is over (`None`: not yet).
    async fn pull_request_step(
        &self,
        at: &ShardRef,
        config: &RigConfig,
        entry: &ReviewEntry,
    ) -> Result<Option<MergeStatus>, ForgeError> {
        let issued = self.forge_token(at, config).await?;
        let repo = Repo::of(&config.git_url).ok_or_else(|| {
            ForgeError::Refused("the rig's git_url names no repository (https://host/owner/name) a pull request can be opened on".into())
        })?;
        let kept = KeptAnswers { db: self.db, now_ms: self.fx.now_ms() };
        let forge =
            Forge::new(&issued.kind, self.fx, &issued.api_url, &issued.token, &repo, Some(&kept));
        let number = self.pull_request_number(&forge, config, entry).await?;
        let snapshot = forge.snapshot(number).await?;
        match pulls::decide(&snapshot, &config.merge, &config.default_branch) {
            Step::Wait => Ok(None),
            Step::Merge { .. } if snapshot.checks.is_empty() && self.checks_may_come(entry)? => {
                Ok(None)
            }
            Step::Merge { sha } => {
                let method = config.merge.merge_method.as_str();
                Ok(forge.merge(number, &sha, method).await?.map(|commit| {
                    outcome(
                        entry,
                        MergeState::Merged,
                        Some(commit),
                        "merged by the refinery".into(),
                        None,
                    )
                }))
            }
            Step::Done { state, commit, detail, output } => {
                Ok(Some(outcome(entry, state, commit, detail, output)))
            }
        }
    }

    /// Whether a head with no checks reported yet is too new to merge: a forge starts its
    /// checks some seconds after a push, and a merge before them would skip them. Within
    /// [`CHECKS_SETTLE_MS`] of the entry, the next read is set for when that time is up.
    fn checks_may_come(&self, entry: &ReviewEntry) -> Result<bool, ForgeError> {
        let since = crate::time::millis_from_iso(&entry.created_at).unwrap_or(0);
        let left = since + CHECKS_SETTLE_MS - self.fx.now_ms();
        if left <= 0 {
            return Ok(false);
        }
        let poll_ms = Settings::from_lookup(|k| self.fx.var(k)).pr_poll_ms;
        let read_at = self.fx.now_ms() + left - poll_ms;
        self.with_rig(|r| r.mark_polled(&entry.id, read_at))
            .map_err(|e| ForgeError::Later(e.to_string()))?;
        Ok(true)
    }

    /// The entry's pull request: its own, the bead's earlier one (a rework), or a new one.
    async fn pull_request_number(
        &self,
        forge: &Forge<'_, E>,
        config: &RigConfig,
        entry: &ReviewEntry,
    ) -> Result<u64, ForgeError> {
        if let Some(number) = entry.pr_number {
            return Ok(number);
        }
        let stored = |e: crate::error::ApiError| ForgeError::Later(e.to_string());
        let (number, url) = match self
            .with_rig(|r| r.pull_request_of(&entry.bead_id))
            .map_err(stored)?
        {
            Some(known) => known,
            None => {
                let bead = self.with_rig(|r| r.bead(&entry.bead_id)).map_err(stored)?;
                let title =
                    bead.title.lines().next().unwrap_or("").chars().take(200).collect::<String>();
                let body = format!(
                    "{}\n\nBead `{}`, worked by Gastown agent `{}`.",
                    entry.summary.as_deref().unwrap_or("(no summary)"),
                    bead.id,
                    entry.agent_id
                );
                let pr = forge.open(&entry.branch, &config.default_branch, &title, &body).await?;
                (pr.number, pr.url)
            }
        };
        self.with_rig(|r| r.record_pull_request(&entry.id, &entry.bead_id, number, &url))
            .map_err(stored)?;
        Ok(number)
    }

    /// The rig's forge token, from the TownDO (which mints a GitHub App's when it must).
    async fn forge_token(&self, at: &ShardRef, config: &RigConfig) -> Result<Issued, ForgeError> {
        let op = TownCall::of(&ForgeToken { rig_id: config.rig_id.clone() })
            .map_err(|e| ForgeError::Refused(e.to_string()))?;
        let issued = match self.fx.town(&at.town, &op).await {
            Ok(v) => crate::json::decode::<Issued>(v).map_err(|_| {
                ForgeError::Later("the town's forge token answer is malformed".into())
            })?,
            Err(e) if e.status() == 404 => {
                return Err(ForgeError::Refused(format!(
                    "{} (PUT /api/towns/{}/forge)",
                    e.public_message(),
                    at.town
                )))
            }
            Err(e) => return Err(ForgeError::Later(e.public_message().to_string())),
        };
        Ok(issued)
    }
}

fn outcome(
    entry: &ReviewEntry,
    state: MergeState,
    commit: Option<String>,
    detail: String,
    output: Option<String>,
) -> MergeStatus {
    MergeStatus { review_id: entry.id.clone(), state, commit, detail: Some(detail), output }
}
