//! Mail between agents of a rig. Mail stays undelivered until the recipient checks it.

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::validate;

use super::op::{rig_ops, to_json, RigOp};
use super::rows::MailRow;
use super::Rig;
use crate::api::{self, Incoming, Plan};
use crate::auth::check_body_agent;
use crate::body::NON_EMPTY;
use crate::db::Db;
use crate::error::ApiResult;
use crate::model::{EventKind, Mail};
use crate::params;
use crate::requests::{text, Issues, Validate, MAX_TEXT, MAX_TITLE};
use crate::routes::{Endpoint, Rule};

/// Mail between a rig's agents: the reference's routes.
pub const ROUTES: &[Endpoint] = &[
    Endpoint::post("/api/rigs/:rigId/mail", Rule::Rig, send),
    Endpoint::get("/api/rigs/:rigId/agents/:agentId/mail", Rule::RigAgent, check),
];

fn send(req: &Incoming) -> ApiResult<Plan> {
    let mail: NewMail = req.body()?;
    check_body_agent(&req.caller, "from_agent_id", &mail.from_agent_id)?;
    api::ack(req.param("rigId")?, SendMail(mail), 201, "sent")
}

fn check(req: &Incoming) -> ApiResult<Plan> {
    api::rig(req.param("rigId")?, CheckMail { agent_id: req.param("agentId")? })
}

request_body! {
    /// `POST /api/rigs/:rigId/mail`
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewMail {
        pub from_agent_id: String = req(NON_EMPTY),
        pub to_agent_id: String = req(NON_EMPTY),
        pub subject: String = req(NON_EMPTY),
        pub body: String = req(NON_EMPTY),
    }
}

impl Validate for NewMail {
    fn check(&self, i: &mut Issues) {
        i.add("from_agent_id", validate::id(&self.from_agent_id));
        Self::check_parts(&self.to_agent_id, &self.subject, &self.body, i);
    }
}

impl NewMail {
    /// The rules of a mail's recipient, subject and body, wherever it is sent from. A body of
    /// blanks is accepted, as the reference's `min(1)` does.
    pub(crate) fn check_parts(to_agent_id: &str, subject: &str, body: &str, i: &mut Issues) {
        i.add("to_agent_id", validate::id(to_agent_id));
        i.add("subject", text(subject, MAX_TITLE));
        i.add("body", validate::text(body, MAX_TEXT, true));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendMail(pub NewMail);

impl RigOp for SendMail {
    const NAME: &'static str = "send_mail";
    const NEEDS_CONFIGURED_RIG: bool = true;
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.send_mail(&self.0)?)
    }
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckMail {
    pub agent_id: String,
}

impl RigOp for CheckMail {
    const NAME: &'static str = "check_mail";
    fn run_proof(&self) -> Option<&str> {
        Some(&self.agent_id)
    }
    fn run<D: Db>(self, rig: &Rig<'_, D>) -> ApiResult<Value> {
        to_json(rig.check_mail(&self.agent_id)?)
    }
}

rig_ops!(SendMail, CheckMail);

impl<D: Db> Rig<'_, D> {
    pub(super) fn send_mail(&self, m: &NewMail) -> ApiResult<Mail> {
        // The town's mayor is in no rig; it mails through its own route (`crate::mayor`).
        if m.from_agent_id != crate::mayor::MAYOR_AGENT_ID {
            self.agent(&m.from_agent_id)?;
        }
        self.agent(&m.to_agent_id)?;
        let id = (self.new_id)();
        self.db.exec(
            "INSERT INTO mail (id, from_agent_id, to_agent_id, subject, body, delivered, created_at)
             VALUES (?, ?, ?, ?, ?, 0, ?)",
            params![&id, &m.from_agent_id, &m.to_agent_id, &m.subject, &m.body, &self.now],
        )?;
        self.log(
            None,
            Some(&m.from_agent_id),
            EventKind::MailSent,
            json!({ "mail_id": id, "to_agent_id": m.to_agent_id }),
        )?;
        self.db
            .first::<MailRow>("SELECT * FROM mail WHERE id = ?", params![&id])?
            .map(Into::into)
            .ok_or_else(|| crate::error::ApiError::not_found("mail"))
    }

    pub(super) fn undelivered_mail(&self, agent_id: &str) -> ApiResult<Vec<Mail>> {
        let rows = self.db.query::<MailRow>(
            "SELECT * FROM mail WHERE to_agent_id = ? AND delivered = 0 ORDER BY rowid",
            params![agent_id],
        )?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Returns the agent's undelivered mail and marks exactly that mail delivered (both in one
    /// synchronous step, so mail sent concurrently is either returned now or next time). The
    /// rows are returned as they were read (`delivered: false`), as the reference does.
    pub(super) fn check_mail(&self, agent_id: &str) -> ApiResult<Vec<Mail>> {
        self.agent(agent_id)?;
        let mail = self.undelivered_mail(agent_id)?;
        self.db.exec(
            "UPDATE mail SET delivered = 1, delivered_at = ? WHERE to_agent_id = ? AND delivered = 0",
            params![&self.now, agent_id],
        )?;
        Ok(mail)
    }
}
