//! The mayor's routes: what people send it (internal key) and what its tools call (its own
//! token), their bodies, and the TownDO op each becomes. Everything is validated here, before
//! any object is called: a bad body is a 400 that changes nothing, and the model reads its
//! message as the tool's error.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared_types::validate;

use crate::body::{opt, req, Field, Kind, NON_EMPTY, STR};
use crate::error::ApiResult;
use crate::model::Priority;
use crate::requests::{
    parse_body, text, Issues, NewConvoy, NewMail, SlingRequest, Validate, MAX_TEXT, MAX_TITLE,
    PRIORITIES,
};

/// Longest message a person may send the mayor, and longest reply kept, in bytes.
pub const MAX_MESSAGE: usize = shared_types::MAX_MAYOR_MESSAGE_BYTES;

/// The routes under `/api/mayor/:townId/tools/` (the mayor's token only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MayorTool {
    /// `GET rigs`
    ListRigs,
    /// `GET status`
    TownStatus,
    /// `POST sling`
    Sling,
    /// `POST convoys`
    Convoy,
    /// `POST mail`
    MailSend,
    /// `GET mail`
    MailCheck,
    /// `POST escalations/resolve`
    Resolve,
    /// `POST reply`: the text of a turn, sent by the control server when the turn ends.
    Reply,
}

impl MayorTool {
    /// `(method is POST, path under tools/)` to the tool; `None` for an unknown path.
    pub fn parse(post: bool, rest: &[&str]) -> Option<Self> {
        Some(match (post, rest) {
            (false, ["rigs"]) => Self::ListRigs,
            (false, ["status"]) => Self::TownStatus,
            (true, ["sling"]) => Self::Sling,
            (true, ["convoys"]) => Self::Convoy,
            (true, ["mail"]) => Self::MailSend,
            (false, ["mail"]) => Self::MailCheck,
            (true, ["escalations", "resolve"]) => Self::Resolve,
            (true, ["reply"]) => Self::Reply,
            _ => return None,
        })
    }
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
}

/// What a mayor route asks of the town's TownDO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
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

/// `POST /api/towns/:townId/mayor/messages`
#[derive(Debug, Deserialize)]
struct PersonMessage {
    message: String,
}

impl Validate for PersonMessage {
    const FIELDS: &'static [Field] = &[req("message", NON_EMPTY)];
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

impl Validate for MayorSling {
    const FIELDS: &'static [Field] = &[
        req("rig_id", NON_EMPTY),
        req("title", NON_EMPTY),
        opt("body", STR),
        opt("priority", PRIORITIES),
        opt("metadata", Kind::Record),
    ];
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

impl Validate for MayorConvoy {
    const FIELDS: &'static [Field] =
        &[req("rig_id", NON_EMPTY), req("title", NON_EMPTY), req("beads", Kind::Any)];
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        self.convoy.check(i);
    }
}

/// `POST …/tools/mail`: as the reference's (`rig_id`, `to_agent_id`, `subject`, `body`); the
/// sender is the mayor, whatever `from_agent_id` says.
#[derive(Debug, Deserialize)]
struct MayorMail {
    rig_id: String,
    to_agent_id: String,
    subject: String,
    body: String,
}

impl Validate for MayorMail {
    const FIELDS: &'static [Field] = &[
        req("rig_id", NON_EMPTY),
        req("to_agent_id", NON_EMPTY),
        req("subject", NON_EMPTY),
        req("body", NON_EMPTY),
    ];
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        i.add("to_agent_id", validate::id(&self.to_agent_id));
        i.add("subject", text(&self.subject, MAX_TITLE));
        i.add("body", text(&self.body, MAX_TEXT));
    }
}

/// `POST …/tools/escalations/resolve`
#[derive(Debug, Deserialize)]
struct Resolve {
    rig_id: String,
    escalation_id: String,
    answer: String,
}

impl Validate for Resolve {
    const FIELDS: &'static [Field] =
        &[req("rig_id", NON_EMPTY), req("escalation_id", NON_EMPTY), req("answer", NON_EMPTY)];
    fn check(&self, i: &mut Issues) {
        i.add("rig_id", validate::id(&self.rig_id));
        i.add("escalation_id", validate::id(&self.escalation_id));
        i.add("answer", text(&self.answer, MAX_TEXT));
    }
}

/// `POST …/tools/reply`
#[derive(Debug, Deserialize)]
struct Reply {
    text: String,
}

impl Validate for Reply {
    const FIELDS: &'static [Field] = &[req("text", STR)];
    fn check(&self, _: &mut Issues) {}
}

/// A person's message to the mayor.
pub fn person_message(body: &[u8]) -> ApiResult<MayorOp> {
    let m: PersonMessage = parse_body(body)?;
    Ok(MayorOp::Send { text: m.message })
}

/// The op of a mayor tool route and its success status.
pub fn tool_op(tool: MayorTool, body: &[u8]) -> ApiResult<(MayorOp, u16)> {
    Ok(match tool {
        MayorTool::ListRigs => (MayorOp::ListRigs, 200),
        MayorTool::TownStatus => (MayorOp::TownStatus, 200),
        MayorTool::MailCheck => (MayorOp::MailCheck, 200),
        MayorTool::Sling => {
            let s: MayorSling = parse_body(body)?;
            (MayorOp::Sling { rig_id: s.rig_id, sling: s.sling }, 201)
        }
        MayorTool::Convoy => {
            let c: MayorConvoy = parse_body(body)?;
            (MayorOp::Convoy { rig_id: c.rig_id, convoy: c.convoy }, 201)
        }
        MayorTool::MailSend => {
            let m: MayorMail = parse_body(body)?;
            let mail = NewMail {
                from_agent_id: super::MAYOR_AGENT_ID.into(),
                to_agent_id: m.to_agent_id,
                subject: m.subject,
                body: m.body,
            };
            // 200 `{"sent":true}`, as the reference's mayor mail (a rig's mail is a 201).
            (MayorOp::MailSend { rig_id: m.rig_id, mail }, 200)
        }
        MayorTool::Resolve => {
            let r: Resolve = parse_body(body)?;
            (
                MayorOp::Resolve {
                    rig_id: r.rig_id,
                    escalation_id: r.escalation_id,
                    answer: r.answer,
                },
                200,
            )
        }
        MayorTool::Reply => {
            let r: Reply = parse_body(body)?;
            // A reply longer than a message is cut, not refused: it is the model's text.
            let mut text = r.text;
            shared_types::text::cut_with_ellipsis(&mut text, MAX_MESSAGE);
            (MayorOp::Reply { text }, 201)
        }
    })
}

/// A priority's name, for notices.
pub fn priority_name(p: Option<Priority>) -> &'static str {
    p.unwrap_or(Priority::Medium).as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(tool: MayorTool, body: &str) -> u16 {
        tool_op(tool, body.as_bytes()).map_or_else(|e| e.status(), |(_, s)| s)
    }

    #[test]
    fn tool_bodies_are_checked_before_anything_is_called() {
        assert_eq!(status(MayorTool::Sling, r#"{"rig_id":"r1","title":"add a.txt"}"#), 201);
        assert_eq!(status(MayorTool::Sling, r#"{"rig_id":"r1"}"#), 400);
        assert_eq!(status(MayorTool::Sling, r#"{"rig_id":"../r","title":"t"}"#), 400);
        assert_eq!(
            status(MayorTool::Sling, r#"{"rig_id":"r1","title":"t","priority":"urgent"}"#),
            400
        );
        assert_eq!(
            status(
                MayorTool::Convoy,
                r#"{"rig_id":"r1","title":"c","beads":[{"title":"a"},{"title":"b","body":"x"}]}"#
            ),
            201
        );
        for bad in [
            r#"{"rig_id":"r1","title":"c","beads":[]}"#,
            r#"{"rig_id":"r1","title":"c","beads":[{"body":"no title"}]}"#,
            r#"{"rig_id":"r1","title":"c","beads":"a"}"#,
        ] {
            assert_eq!(status(MayorTool::Convoy, bad), 400, "{bad}");
        }
        let (op, _) = tool_op(
            MayorTool::MailSend,
            br#"{"rig_id":"r1","to_agent_id":"a1","subject":"s","body":"b","from_agent_id":"a9"}"#,
        )
        .expect("mail");
        assert!(
            matches!(op, MayorOp::MailSend { mail, .. } if mail.from_agent_id == "mayor"),
            "the sender is the mayor"
        );
        assert_eq!(status(MayorTool::Resolve, r#"{"rig_id":"r1","escalation_id":"e1"}"#), 400);
        assert!(matches!(person_message(br#"{"message":"   "}"#), Err(e) if e.status() == 400));
        assert!(matches!(
            person_message(br#"{"message":"add three files"}"#),
            Ok(MayorOp::Send { .. })
        ));
    }

    #[test]
    fn tool_paths() {
        assert_eq!(MayorTool::parse(true, &["escalations", "resolve"]), Some(MayorTool::Resolve));
        assert_eq!(MayorTool::parse(false, &["mail"]), Some(MayorTool::MailCheck));
        assert_eq!(MayorTool::parse(true, &["rigs"]), None);
        assert_eq!(MayorTool::parse(false, &["nope"]), None);
    }
}
