//! Sling: put new work on the next free polecat, in one atomic step.
//!
//! Creates the bead, picks the oldest idle polecat without a hook or registers a new one (named
//! from [`NAME_POOL`], then `name-2`, `name-3`, ...), and hooks the bead to it. All of it runs in
//! one synchronous sequence, so two concurrent slings never pick the same polecat.

use crate::requests::request_body;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::beads::NewBead;
use super::op::{rig_ops, to_json, RigOp};
use super::rows::AgentRow;
use super::Rig;
use crate::api::{self, FollowUp, Incoming, Plan};
use crate::body::{Kind, NON_EMPTY, STR};
use crate::db::Db;
use crate::error::ApiResult;
use crate::model::{Agent, AgentRole, BeadType, Priority, Slung};
use crate::requests::{Issues, Validate, PRIORITIES};
use crate::rig::agents::NewAgent;
use crate::routes::{Endpoint, Rule};

/// Sling (internal): a bead for the next idle polecat of the rig, hooked at once.
pub const ROUTES: &[Endpoint] = &[Endpoint::post("/api/rigs/:rigId/sling", Rule::Internal, sling)];

fn sling(req: &Incoming) -> ApiResult<Plan> {
    let rig_id = req.param("rigId")?;
    let op = Sling { rig_id: rig_id.clone(), sling: req.body()? };
    api::created(rig_id, op, FollowUp::IdentityFromSling)
}

request_body! {
    /// `POST /api/rigs/:rigId/sling` (internal): a bead for the next idle polecat.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct SlingRequest {
        pub title: String = req(NON_EMPTY),
        pub body: Option<String> = opt(STR),
        pub priority: Option<Priority> = opt(PRIORITIES),
        pub labels: Option<Vec<String>> = opt(Kind::StrArray),
        pub metadata: Option<Value> = opt(Kind::Record),
        pub convoy_id: Option<String> = opt(STR),
    }
}

impl SlingRequest {
    /// The bead sling creates: an `issue`, hooked (and so assigned) by sling itself.
    pub fn bead(&self) -> NewBead {
        NewBead {
            bead_type: BeadType::Issue,
            title: self.title.clone(),
            body: self.body.clone(),
            priority: self.priority,
            labels: self.labels.clone(),
            metadata: self.metadata.clone(),
            assignee_agent_id: None,
            convoy_id: self.convoy_id.clone(),
        }
    }
}

impl Validate for SlingRequest {
    fn check(&self, i: &mut Issues) {
        self.bead().check(i);
    }
}

/// Polecat names, handed out in this order.
pub const NAME_POOL: &[&str] = &[
    "toast", "nux", "slit", "rictus", "capable", "cheedo", "dag", "furiosa", "ace", "morsov",
    "keeper", "valkyrie",
];

/// The first name not in `taken`: the pool in order, then the pool numbered from 2.
pub fn next_name(taken: &HashSet<String>) -> String {
    (1..)
        .flat_map(|n| {
            NAME_POOL
                .iter()
                .map(move |base| if n == 1 { base.to_string() } else { format!("{base}-{n}") })
        })
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| "polecat".into())
}

/// The identity of a polecat registered by sling: unique across rigs.
pub fn polecat_identity(name: &str, rig_id: &str) -> String {
    format!("polecat/{name}@{rig_id}")
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sling {
    pub rig_id: String,
    pub sling: SlingRequest,
}

impl RigOp for Sling {
    const NAME: &'static str = "sling";
    const NEEDS_CONFIGURED_RIG: bool = true;
    const ARMS_SCHEDULER: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.sling(&self.rig_id, &self.sling)?)
    }
}

rig_ops!(Sling);

impl<D: Db> Rig<'_, D> {
    pub(super) fn sling(&self, rig_id: &str, s: &SlingRequest) -> ApiResult<Slung> {
        if let Some(convoy) = &s.convoy_id {
            self.check_convoy(convoy)?;
        }
        let bead = self.insert_bead(&s.bead())?;
        let idle: Option<AgentRow> = self.db.first(
            "SELECT * FROM agents WHERE role = 'polecat' AND status = 'idle' AND current_hook_bead_id IS NULL
             ORDER BY rowid LIMIT 1",
            vec![],
        )?;
        let (agent, created): (Agent, bool) = match idle {
            Some(a) => (a.into(), false),
            None => {
                let taken: HashSet<String> = self
                    .db
                    .query::<Name>("SELECT name FROM agents", vec![])?
                    .into_iter()
                    .map(|n| n.name)
                    .collect();
                let name = next_name(&taken);
                let identity = polecat_identity(&name, rig_id);
                (self.register_agent(&NewAgent { role: AgentRole::Polecat, name, identity })?, true)
            }
        };
        let agent = self.hook(&agent.id, &bead.id)?;
        let bead = self.bead(&bead.id)?;
        Ok(Slung { bead, agent, agent_created: created })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_pool_then_numbered() {
        let mut taken = HashSet::new();
        assert_eq!(next_name(&taken), "toast");
        for n in NAME_POOL {
            taken.insert(n.to_string());
        }
        assert_eq!(next_name(&taken), "toast-2");
        taken.insert("toast-2".into());
        assert_eq!(next_name(&taken), "nux-2");
        assert!(shared_types::validate::agent_name(&next_name(&taken)).is_ok());
    }
}
