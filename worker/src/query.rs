//! Query-string filters and pagination. Unknown parameters are ignored (as the reference does);
//! known ones with bad values are a 400 naming the parameter.

use shared_types::validate;

use crate::error::{ApiError, ApiResult};
use crate::model::{AgentRole, AgentStatus, BeadStatus, BeadType, ReviewStatus};
use crate::requests::{AgentFilter, BeadFilter, EventFilter, ReviewFilter, DEFAULT_LIMIT, MAX_LIMIT};

/// Decoded `key=value` pairs; for a repeated key the last one wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        Self(form_urlencoded::parse(raw.trim_start_matches('?').as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn id(&self, key: &str) -> ApiResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => validate::id(v).map(|_| Some(v.to_string())).map_err(|m| ApiError::bad_request(format!("{key}: {m}"))),
        }
    }

    fn number(&self, key: &str, default: u32, max: u32) -> ApiResult<u32> {
        let Some(v) = self.get(key) else { return Ok(default) };
        let n: u32 = v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{key}: must be a non-negative integer")))?;
        if n > max {
            return Err(ApiError::bad_request(format!("{key}: must be at most {max}")));
        }
        Ok(n)
    }

    fn page(&self) -> ApiResult<(u32, u32)> {
        let limit = self.number("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
        if limit == 0 {
            return Err(ApiError::bad_request("limit: must be at least 1"));
        }
        Ok((limit, self.number("offset", 0, 1_000_000)?))
    }
}

fn role(v: &str) -> ApiResult<AgentRole> {
    serde_json::from_value(serde_json::Value::String(v.into()))
        .map_err(|_| ApiError::bad_request("role: unknown value, expected one of mayor, polecat, refinery, witness"))
}

pub fn bead_filter(raw: &str) -> ApiResult<BeadFilter> {
    let q = Query::parse(raw);
    let (limit, offset) = q.page()?;
    Ok(BeadFilter {
        status: q.get("status").map(|v| BeadStatus::parse("status", v)).transpose()?,
        bead_type: q.get("type").map(|v| BeadType::parse("type", v)).transpose()?,
        assignee_agent_id: q.id("assignee_agent_id")?,
        convoy_id: q.id("convoy_id")?,
        limit,
        offset,
    })
}

pub fn agent_filter(raw: &str) -> ApiResult<AgentFilter> {
    let q = Query::parse(raw);
    Ok(AgentFilter {
        role: q.get("role").map(role).transpose()?,
        status: q.get("status").map(|v| AgentStatus::parse("status", v)).transpose()?,
    })
}

pub fn review_filter(raw: &str) -> ApiResult<ReviewFilter> {
    let q = Query::parse(raw);
    let (limit, offset) = q.page()?;
    Ok(ReviewFilter { status: q.get("status").map(|v| ReviewStatus::parse("status", v)).transpose()?, limit, offset })
}

pub fn event_filter(raw: &str, bead_id: Option<String>) -> ApiResult<EventFilter> {
    let q = Query::parse(raw);
    let (limit, offset) = q.page()?;
    Ok(EventFilter { bead_id: bead_id.map_or_else(|| q.id("bead_id"), |b| Ok(Some(b)))?, limit, offset })
}

/// `?after=&limit=` of an agent's kept events.
pub fn agent_event_query(raw: &str, agent_id: String) -> ApiResult<crate::agent_events::EventQuery> {
    use crate::agent_events::{DEFAULT_LIMIT as EVENTS_DEFAULT, MAX_LIMIT as EVENTS_MAX};
    let q = Query::parse(raw);
    let limit = q.number("limit", EVENTS_DEFAULT, EVENTS_MAX)?;
    if limit == 0 {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    Ok(crate::agent_events::EventQuery { agent_id, after: i64::from(q.number("after", 0, u32::MAX)?), limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bead_filters_and_defaults() {
        let f = bead_filter("status=open&type=merge_request&assignee_agent_id=a-1&limit=5&offset=10&x=y").expect("ok");
        assert_eq!(f.status, Some(BeadStatus::Open));
        assert_eq!(f.bead_type, Some(BeadType::MergeRequest));
        assert_eq!(f.assignee_agent_id.as_deref(), Some("a-1"));
        assert_eq!((f.limit, f.offset), (5, 10));
        let d = bead_filter("").expect("ok");
        assert_eq!((d.limit, d.offset, d.status), (DEFAULT_LIMIT, 0, None));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (q, key) in [
            ("status=done", "status"),
            ("limit=-1", "limit"),
            ("limit=0", "limit"),
            ("limit=9999", "limit"),
            ("offset=abc", "offset"),
            ("convoy_id=..%2Fx", "convoy_id"),
        ] {
            let e = bead_filter(q).expect_err(q);
            assert!(e.public_message().starts_with(key), "{q}: {e:?}");
        }
        assert!(agent_filter("role=king").is_err());
        assert_eq!(agent_filter("role=polecat&status=idle").expect("ok").role, Some(AgentRole::Polecat));
    }
}
