//! The mayor's routes: what people send it (internal key) and what its tools call (its own
//! token), their bodies, and the TownDO op each becomes ([`MayorOp`]). Everything is validated here, before
//! any object is called: a bad body is a 400 that changes nothing, and the model reads its
//! message as the tool's error.

use crate::requests::request_body;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_types::validate;

use crate::api::{self, Incoming, Plan};
use crate::body::{opt, req, Field, Kind, NON_EMPTY, STR};
use crate::db::Db;
use crate::effects::Effects;
use crate::error::ApiResult;
use crate::model::Priority;
use crate::requests::{text, Issues, Shape, Validate, MAX_TEXT, PRIORITIES};
use crate::rig::convoys::NewConvoy;
use crate::rig::mail::NewMail;
use crate::rig::sling::SlingRequest;
use crate::routes::{Endpoint, Rule};
use crate::town::object::TownObject;
use crate::town::op::{town_ops, TownOp};

/// Longest message a person may send the mayor, and longest reply kept, in bytes.
pub const MAX_MESSAGE: usize = shared_types::MAX_MAYOR_MESSAGE_BYTES;

/// What people send the mayor and read of it (internal), and the mayor's tools (its own token
/// only, under `/api/mayor/:townId/tools/`).
pub const ROUTES: &[Endpoint] = &[
    Endpoint::get("/api/towns/:townId/mayor", Rule::Internal, |r| town(r, MayorOp::Status, 200)),
    Endpoint::post("/api/towns/:townId/mayor/messages", Rule::Internal, person_message),
    Endpoint::get("/api/towns/:townId/mayor/messages", Rule::Internal, messages),
    Endpoint::get("/api/mayor/:townId/tools/rigs", Rule::Mayor, |r| {
        town(r, MayorOp::ListRigs, 200)
    }),
    Endpoint::get("/api/mayor/:townId/tools/status", Rule::Mayor, |r| {
        town(r, MayorOp::TownStatus, 200)
    }),
    Endpoint::post("/api/mayor/:townId/tools/sling", Rule::Mayor, sling),
    Endpoint::post("/api/mayor/:townId/tools/convoys", Rule::Mayor, convoy),
    Endpoint::post("/api/mayor/:townId/tools/mail", Rule::Mayor, mail_send),
    Endpoint::get("/api/mayor/:townId/tools/mail", Rule::Mayor, |r| {
        town(r, MayorOp::MailCheck, 200)
    }),
    Endpoint::post("/api/mayor/:townId/tools/escalations/resolve", Rule::Mayor, resolve),
    Endpoint::post("/api/mayor/:townId/tools/reply", Rule::Mayor, reply),
];

fn town(req: &Incoming, op: MayorOp, status: u16) -> ApiResult<Plan> {
    api::town(req.param("townId")?, &MayorCall(op), status)
}

/// Something that happened on a rig that the mayor hears of (sent by the RigDO, from its
/// outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub rig_id: String,
    pub kind: NoticeKind,
    /// The escalation bead's id, or the convoy's.
    pub ref_id: String,
    pub title: String,
    /// Escalation: `{body, priority, from_agent_id}`; convoy: `{beads}`.
    #[serde(default)]
    pub detail: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Escalation,
    ConvoyLanded,
    /// The town's use reached 80% of a daily budget (sent by the TownContainer; no rig).
    Budget,
}

/// What a mayor route asks of the town's TownDO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MayorOp {
    /// A person's message: kept, then delivered to the mayor (started if need be).
    Send {
        text: String,
    },
    Messages {
        after: i64,
        limit: i64,
    },
    Status,
    Reply {
        text: String,
    },
    ListRigs,
    TownStatus,
    Sling {
        rig_id: String,
        sling: SlingRequest,
    },
    Convoy {
        rig_id: String,
        convoy: NewConvoy,
    },
    MailSend {
        rig_id: String,
        mail: NewMail,
    },
    MailCheck,
    Resolve {
        rig_id: String,
        escalation_id: String,
        answer: String,
    },
    Notice(Notice),
}

/// A mayor op on its way to the town's TownDO (`super::ops`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MayorCall(pub MayorOp);

impl TownOp for MayorCall {
    const NAME: &'static str = "mayor";
    async fn run<D: Db, E: Effects>(
        self,
        town: &TownObject<'_, D, E>,
        key: Option<&str>,
    ) -> ApiResult<Value> {
        town.mayor_once(self.0, key).await
    }
}

town_ops!(MayorCall);

request_body! {
    /// `POST /api/towns/:townId/mayor/messages`
    #[derive(Debug, Deserialize)]
    struct PersonMessage {
        message: String = req(NON_EMPTY),
    }
}

impl Validate for PersonMessage {
    fn check(&self, i: &mut Issues) {
        i.add("message", text(&self.message, MAX_MESSAGE));
    }
}

/// `POST …/tools/sling`: as the reference's mayor sling (`rig_id`, `title`, `body?`,
/// `metadata?`), plus `priority?`.
#[derive(Debug, Deserialize)]
struct MayorSling {
    rig_id: String,
    #[serde(flatten)]
    sling: SlingRequest,
}

/// The reference's schema of the mayor's sling: not the flattened body's own.
impl Shape for MayorSling {
    const FIELDS: &'static [Field] = &[
        req("rig_id", NON_EMPTY),
        req("title", NON_EMPTY),
        opt("body", STR),
        opt("priority", PRIORITIES),
        opt("metadata", Kind::Record),
    ];
}

impl Validate for MayorSling {
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        self.sling.check(i);
        if self.sling.convoy_id.is_some() {
            i.add("convoy_id", Err("is not taken here: use a convoy".into()));
        }
    }
}

/// `POST …/tools/convoys`
#[derive(Debug, Deserialize)]
struct MayorConvoy {
    rig_id: String,
    #[serde(flatten)]
    convoy: NewConvoy,
}

/// The reference's schema of the mayor's convoy: not the flattened body's own.
impl Shape for MayorConvoy {
    const FIELDS: &'static [Field] =
        &[req("rig_id", NON_EMPTY), req("title", NON_EMPTY), req("beads", Kind::Any)];
}

impl Validate for MayorConvoy {
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        self.convoy.check(i);
    }
}

request_body! {
    /// `POST …/tools/mail`: as the reference's (`rig_id`, `to_agent_id`, `subject`, `body`);
    /// the sender is the mayor, whatever `from_agent_id` says. The mail itself follows a rig
    /// mail's rules.
    #[derive(Debug, Deserialize)]
    struct MayorMail {
        rig_id: String = req(NON_EMPTY),
        to_agent_id: String = req(NON_EMPTY),
        subject: String = req(NON_EMPTY),
        body: String = req(NON_EMPTY),
    }
}

impl MayorMail {
    fn mail(self) -> NewMail {
        NewMail {
            from_agent_id: super::MAYOR_AGENT_ID.into(),
            to_agent_id: self.to_agent_id,
            subject: self.subject,
            body: self.body,
        }
    }
}

impl Validate for MayorMail {
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        NewMail::check_parts(&self.to_agent_id, &self.subject, &self.body, i);
    }
}

request_body! {
    /// `POST …/tools/escalations/resolve`
    #[derive(Debug, Deserialize)]
    struct Resolve {
        rig_id: String = req(NON_EMPTY),
        escalation_id: String = req(NON_EMPTY),
        answer: String = req(NON_EMPTY),
    }
}

impl Validate for Resolve {
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        i.add("escalation_id", validate::id(&self.escalation_id));
        i.add("answer", text(&self.answer, MAX_TEXT));
    }
}

request_body! {
    /// `POST …/tools/reply`
    #[derive(Debug, Deserialize)]
    struct Reply {
        text: String = req(STR),
    }
}

impl Validate for Reply {
    fn check(&self, _: &mut Issues) {}
}

/// A person's message: kept, then delivered to the mayor.
fn person_message(req: &Incoming) -> ApiResult<Plan> {
    let m: PersonMessage = req.body()?;
    town(req, MayorOp::Send { text: m.message }, 202)
}

fn messages(req: &Incoming) -> ApiResult<Plan> {
    let (after, limit) = crate::query::transcript_page(req.query)?;
    town(req, MayorOp::Messages { after, limit }, 200)
}

fn sling(req: &Incoming) -> ApiResult<Plan> {
    let s: MayorSling = req.body()?;
    town(req, MayorOp::Sling { rig_id: s.rig_id, sling: s.sling }, 201)
}

fn convoy(req: &Incoming) -> ApiResult<Plan> {
    let c: MayorConvoy = req.body()?;
    town(req, MayorOp::Convoy { rig_id: c.rig_id, convoy: c.convoy }, 201)
}

fn mail_send(req: &Incoming) -> ApiResult<Plan> {
    let m: MayorMail = req.body()?;
    let rig_id = m.rig_id.clone();
    // 200 `{"sent":true}`, as the reference's mayor mail (a rig's mail is a 201).
    town(req, MayorOp::MailSend { rig_id, mail: m.mail() }, 200)
}

fn resolve(req: &Incoming) -> ApiResult<Plan> {
    let r: Resolve = req.body()?;
    let op =
        MayorOp::Resolve { rig_id: r.rig_id, escalation_id: r.escalation_id, answer: r.answer };
    town(req, op, 200)
}

/// The text of a turn, sent by the control server when the turn ends. A reply longer than a
/// message is cut, not refused: it is the model's text.
fn reply(req: &Incoming) -> ApiResult<Plan> {
    let mut text = req.body::<Reply>()?.text;
    shared_types::text::cut_with_ellipsis(&mut text, MAX_MESSAGE);
    town(req, MayorOp::Reply { text }, 201)
}

/// A priority's name, for notices.
pub fn priority_name(p: Option<Priority>) -> &'static str {
    p.unwrap_or(Priority::Medium).as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::plan_for;
    use crate::auth::Caller;
    use crate::routes::Method;

    fn tool(method: Method, tool: &str, body: &str) -> ApiResult<Plan> {
        plan_for(method, &format!("/api/mayor/t1/tools/{tool}"), Caller::Internal, body)
    }

    /// The mayor op and status a plan sends to the TownDO.
    fn mayor_op(plan: &ApiResult<Plan>) -> Option<(MayorOp, u16)> {
        let Ok(Plan::Town { op, status, .. }) = plan else { return None };
        Some((op.args::<MayorCall>()?.ok()?.0, *status))
    }

    fn status(tool_path: &str, body: &str) -> u16 {
        match tool(Method::Post, tool_path, body) {
            Ok(Plan::Town { status, .. }) => status,
            Ok(other) => panic!("{other:?}"),
            Err(e) => e.status(),
        }
    }

    #[test]
    fn tool_bodies_are_checked_before_anything_is_called() {
        assert_eq!(status("sling", r#"{"rig_id":"r1","title":"add a.txt"}"#), 201);
        assert_eq!(status("sling", r#"{"rig_id":"r1"}"#), 400);
        assert_eq!(status("sling", r#"{"rig_id":"../r","title":"t"}"#), 400);
        assert_eq!(status("sling", r#"{"rig_id":"r1","title":"t","priority":"urgent"}"#), 400);
        assert_eq!(
            status(
                "convoys",
                r#"{"rig_id":"r1","title":"c","beads":[{"title":"a"},{"title":"b","body":"x"}]}"#
            ),
            201
        );
        for bad in [
            r#"{"rig_id":"r1","title":"c","beads":[]}"#,
            r#"{"rig_id":"r1","title":"c","beads":[{"body":"no title"}]}"#,
            r#"{"rig_id":"r1","title":"c","beads":"a"}"#,
        ] {
            assert_eq!(status("convoys", bad), 400, "{bad}");
        }
        let mail = tool(
            Method::Post,
            "mail",
            r#"{"rig_id":"r1","to_agent_id":"a1","subject":"s","body":"b","from_agent_id":"a9"}"#,
        );
        assert!(
            matches!(mayor_op(&mail), Some((MayorOp::MailSend { ref mail, .. }, 200)) if mail.from_agent_id == "mayor"),
            "the sender is the mayor: {mail:?}"
        );
        assert_eq!(status("escalations/resolve", r#"{"rig_id":"r1","escalation_id":"e1"}"#), 400);
        let send = |body: &str| {
            plan_for(Method::Post, "/api/towns/t1/mayor/messages", Caller::Internal, body)
        };
        assert!(matches!(send(r#"{"message":"   "}"#), Err(e) if e.status() == 400));
        assert!(matches!(
            mayor_op(&send(r#"{"message":"add three files"}"#)),
            Some((MayorOp::Send { .. }, 202))
        ));
    }

    #[test]
    fn mayor_mail_follows_a_rig_mails_rules() {
        for (subject, body) in
            [("s", "   "), ("s", "ok"), ("s", ""), ("", "b"), ("  ", "b"), ("s", "a\0")]
        {
            let rig_mail = json!({"from_agent_id": "a1", "to_agent_id": "a2", "subject": subject, "body": body});
            let rig = plan_for(
                Method::Post,
                "/api/rigs/r1/mail",
                Caller::Internal,
                &rig_mail.to_string(),
            );
            let mayor_mail =
                json!({"rig_id": "r1", "to_agent_id": "a2", "subject": subject, "body": body});
            let mayor = tool(Method::Post, "mail", &mayor_mail.to_string());
            assert_eq!(rig.is_ok(), mayor.is_ok(), "{subject:?} {body:?}: {rig:?} / {mayor:?}");
        }
    }

    #[test]
    fn tool_paths() {
        let resolve = tool(
            Method::Post,
            "escalations/resolve",
            r#"{"rig_id":"r1","escalation_id":"e1","answer":"a"}"#,
        );
        assert!(matches!(mayor_op(&resolve), Some((MayorOp::Resolve { .. }, 200))));
        assert!(matches!(
            mayor_op(&tool(Method::Get, "mail", "")),
            Some((MayorOp::MailCheck, 200))
        ));
        assert_eq!(tool(Method::Post, "rigs", "").map_err(|e| e.status()).map(|_| ()), Err(404));
        assert_eq!(tool(Method::Get, "nope", "").map_err(|e| e.status()).map(|_| ()), Err(404));
    }
}
