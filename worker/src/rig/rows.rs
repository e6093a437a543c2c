//! Rows as SQLite returns them, and their conversion to API records. JSON columns are stored
//! as text; a stored value that fails to parse is returned as `null` rather than failing the
//! whole request.

use serde::Deserialize;
use serde_json::Value;

use crate::model::{
    Agent, AgentRole, AgentStatus, Bead, BeadEvent, BeadStatus, BeadType, EventKind, Mail,
    Priority, ReviewEntry, ReviewStatus,
};

fn json_text(s: &str) -> Value {
    crate::json::parse(s).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
pub struct BeadRow {
    id: String,
    #[serde(rename = "type")]
    bead_type: BeadType,
    status: BeadStatus,
    title: String,
    body: Option<String>,
    assignee_agent_id: Option<String>,
    convoy_id: Option<String>,
    molecule_id: Option<String>,
    priority: Priority,
    labels: String,
    metadata: String,
    created_at: String,
    updated_at: String,
    closed_at: Option<String>,
}

impl From<BeadRow> for Bead {
    fn from(r: BeadRow) -> Self {
        Bead {
            id: r.id,
            bead_type: r.bead_type,
            status: r.status,
            title: r.title,
            body: r.body,
            assignee_agent_id: r.assignee_agent_id,
            convoy_id: r.convoy_id,
            molecule_id: r.molecule_id,
            priority: r.priority,
            labels: crate::json::from_text(&r.labels).unwrap_or_default(),
            metadata: json_text(&r.metadata),
            created_at: r.created_at,
            updated_at: r.updated_at,
            closed_at: r.closed_at,
        }
    }
}

#[derive(Deserialize)]
pub struct AgentRow {
    id: String,
    role: AgentRole,
    name: String,
    identity: String,
    status: AgentStatus,
    current_hook_bead_id: Option<String>,
    last_activity_at: Option<String>,
    checkpoint: Option<String>,
    created_at: String,
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        Agent {
            id: r.id,
            role: r.role,
            name: r.name,
            identity: r.identity,
            cloud_agent_session_id: None,
            status: r.status,
            current_hook_bead_id: r.current_hook_bead_id,
            last_activity_at: r.last_activity_at,
            checkpoint: r.checkpoint.as_deref().map(json_text),
            created_at: r.created_at,
        }
    }
}

#[derive(Deserialize)]
pub struct MailRow {
    id: String,
    from_agent_id: String,
    to_agent_id: String,
    subject: String,
    body: String,
    delivered: i64,
    created_at: String,
    delivered_at: Option<String>,
}

impl From<MailRow> for Mail {
    fn from(r: MailRow) -> Self {
        Mail {
            id: r.id,
            from_agent_id: r.from_agent_id,
            to_agent_id: r.to_agent_id,
            subject: r.subject,
            body: r.body,
            delivered: r.delivered != 0,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

#[derive(Deserialize)]
pub struct ReviewRow {
    id: String,
    agent_id: String,
    bead_id: String,
    branch: String,
    pr_url: Option<String>,
    status: ReviewStatus,
    summary: Option<String>,
    created_at: String,
    processed_at: Option<String>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    pr_number: Option<i64>,
}

impl From<ReviewRow> for ReviewEntry {
    fn from(r: ReviewRow) -> Self {
        ReviewEntry {
            id: r.id,
            agent_id: r.agent_id,
            bead_id: r.bead_id,
            branch: r.branch,
            pr_url: r.pr_url,
            status: r.status,
            summary: r.summary,
            created_at: r.created_at,
            processed_at: r.processed_at,
            result: r.result.as_deref().map(json_text),
            pr_number: r.pr_number.and_then(|n| u64::try_from(n).ok()),
        }
    }
}

#[derive(Deserialize)]
pub struct EventRow {
    id: String,
    bead_id: Option<String>,
    agent_id: Option<String>,
    kind: EventKind,
    data: String,
    created_at: String,
}

impl From<EventRow> for BeadEvent {
    fn from(r: EventRow) -> Self {
        BeadEvent {
            id: r.id,
            bead_id: r.bead_id,
            agent_id: r.agent_id,
            kind: r.kind,
            data: json_text(&r.data),
            created_at: r.created_at,
        }
    }
}
