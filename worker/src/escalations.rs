//! Escalations: an agent (or an internal caller) asks for help on its rig, or someone raises one
//! for the whole town. A rig's escalation is a bead the town's mayor hears of; a town's is kept
//! by the TownDO.

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{self, FollowUp, Incoming, Plan};
use crate::auth::Caller;
use crate::body::{Kind, NON_EMPTY, STR};
use crate::db::Db;
use crate::effects::Effects;
use crate::error::ApiResult;
use crate::model::Priority;
use crate::requests::{
    metadata, opt_text, text, Issues, Validate, MAX_TEXT, MAX_TITLE, PRIORITIES,
};
use crate::rig::op::{rig_ops, to_json, RigOp};
use crate::rig::Rig;
use crate::routes::{Endpoint, Rule};
use crate::town::object::TownObject;
use crate::town::op::{town_ops, TownOp};

pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/escalations", Rule::Rig, on_rig),
    Endpoint::post("/api/towns/:townId/escalations", Rule::Internal, on_town),
    Endpoint::get("/api/towns/:townId/escalations", Rule::Internal, list_town),
];

fn on_rig(req: &Incoming) -> ApiResult<Plan> {
    let mut e: NewEscalation = req.body()?;
    if let Caller::Agent(claims) = &req.caller {
        // Who raised it, set here (never taken from the body): the mayor's answer goes to this
        // agent's mail.
        let mut metadata = e.metadata.take().filter(Value::is_object).unwrap_or_else(|| json!({}));
        metadata["from_agent_id"] = json!(claims.agent_id);
        e.metadata = Some(metadata);
    }
    api::created(req.param("rigId")?, CreateEscalation(e), FollowUp::None)
}

fn on_town(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &CreateTownEscalation(req.body()?), 201)
}

fn list_town(req: &Incoming) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &ListTownEscalations, 200)
}

request_body! {
    /// `POST /api/rigs/:rigId/escalations` and `POST /api/towns/:townId/escalations`
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct NewEscalation {
        pub title: String = req(NON_EMPTY),
        pub body: Option<String> = opt(STR),
        pub priority: Option<Priority> = opt(PRIORITIES),
        pub metadata: Option<Value> = opt(Kind::Record),
    }
}

impl Validate for NewEscalation {
    fn check(&self, i: &mut Issues) {
        i.add("title", text(&self.title, MAX_TITLE));
        i.add("body", opt_text(&self.body, MAX_TEXT));
        i.add("metadata", metadata(&self.metadata));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateEscalation(pub NewEscalation);

impl RigOp for CreateEscalation {
    const NAME: &'static str = "create_escalation";
    const NEEDS_CONFIGURED_RIG: bool = true;
    const NOTIFIES: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.create_escalation(&self.0)?)
    }
}

/// The mayor answers an escalation: it is closed, and `answer` is mailed (from the mayor) to
/// the agent that raised it, when an agent did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveEscalation {
    pub escalation_id: String,
    pub answer: String,
}

impl RigOp for ResolveEscalation {
    const NAME: &'static str = "resolve_escalation";
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        rig.resolve_escalation(&self.escalation_id, &self.answer)
    }
}

rig_ops!(CreateEscalation, ResolveEscalation);

/// An escalation of the whole town (kept by the TownDO).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTownEscalation(pub NewEscalation);

impl TownOp for CreateTownEscalation {
    const NAME: &'static str = "create_escalation";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        to_json(o.with_town(|t| t.create_escalation(&self.0))?)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListTownEscalations;

impl TownOp for ListTownEscalations {
    const NAME: &'static str = "list_escalations";
    async fn run<D: Db, E: Effects>(
        self,
        o: &TownObject<'_, D, E>,
        _: Option<&str>,
    ) -> ApiResult<Value> {
        to_json(o.with_town(|t| t.escalations())?)
    }
}

town_ops!(CreateTownEscalation, ListTownEscalations);
