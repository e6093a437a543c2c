//! Query-string filters and pagination. Unknown parameters are ignored and the first of a
//! repeated key counts (as the reference does); known ones with bad values are a 400: the
//! reference's messages on its two list routes, a message naming the parameter elsewhere.

use shared_types::validate;

use crate::error::{ApiError, ApiResult};
use crate::model::{AgentRole, AgentStatus, BeadStatus, BeadType, ReviewStatus};
use crate::requests::{DEFAULT_BEAD_LIMIT, DEFAULT_LIMIT, MAX_LIMIT};
use crate::rig::agents::AgentFilter;
use crate::rig::beads::BeadFilter;
use crate::rig::events::EventFilter;
use crate::rig::review::ReviewFilter;

/// Decoded `key=value` pairs; for a repeated key the first one counts.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        Self(form_urlencoded::parse(raw.trim_start_matches('?').as_bytes()).into_owned().collect())
    }

    /// The value as sent, empty included.
    fn raw(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A non-empty value.
    fn get(&self, key: &str) -> Option<&str> {
        self.raw(key).filter(|v| !v.is_empty())
    }

    fn id(&self, key: &str) -> ApiResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => validate::id(v)
                .map(|_| Some(v.to_string()))
                .map_err(|m| ApiError::bad_request(format!("{key}: {m}"))),
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
    crate::json::decode(serde_json::Value::String(v.into())).map_err(|_| {
        ApiError::bad_request(
            "role: unknown value, expected one of mayor, polecat, refinery, witness",
        )
    })
}

/// `?status&type&assignee_agent_id&convoy_id&limit&offset` of the bead list, checked in the
/// reference's order: limit and offset (non-negative integers; empty is 0, and `limit=0` is an
/// empty page), then status and type (present means valid, empty is not).
pub fn bead_filter(raw: &str) -> ApiResult<BeadFilter> {
    let q = Query::parse(raw);
    let number = |key: &str, default: u32| match q.raw(key) {
        None => Some(default),
        Some("") => Some(0),
        Some(v) => v.parse::<u32>().ok(),
    };
    let (Some(limit), Some(offset)) = (number("limit", DEFAULT_BEAD_LIMIT), number("offset", 0))
    else {
        return Err(ApiError::bad_request("limit and offset must be non-negative integers"));
    };
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit: must be at most {MAX_LIMIT}")));
    }
    let filter = || ApiError::bad_request("Invalid status or type filter");
    Ok(BeadFilter {
        status: q
            .raw("status")
            .map(|v| BeadStatus::parse("status", v).map_err(|_| filter()))
            .transpose()?,
        bead_type: q
            .raw("type")
            .map(|v| BeadType::parse("type", v).map_err(|_| filter()))
            .transpose()?,
        assignee_agent_id: q.id("assignee_agent_id")?,
        convoy_id: q.id("convoy_id")?,
        limit,
        offset,
    })
}

pub fn agent_filter(raw: &str) -> ApiResult<AgentFilter> {
    let q = Query::parse(raw);
    let filter = || ApiError::bad_request("Invalid role or status filter");
    Ok(AgentFilter {
        role: q.raw("role").map(|v| role(v).map_err(|_| filter())).transpose()?,
        status: q
            .raw("status")
            .map(|v| AgentStatus::parse("status", v).map_err(|_| filter()))
            .transpose()?,
    })
}

pub fn review_filter(raw: &str) -> ApiResult<ReviewFilter> {
    let q = Query::parse(raw);
    let (limit, offset) = q.page()?;
    Ok(ReviewFilter {
        status: q
            .get("status")
            .map(|v| ReviewStatus::parse("status", v).map_err(ApiError::bad_request))
            .transpose()?,
        limit,
        offset,
    })
}

pub fn event_filter(raw: &str, bead_id: Option<String>) -> ApiResult<EventFilter> {
    let q = Query::parse(raw);
    let (limit, offset) = q.page()?;
    Ok(EventFilter {
        bead_id: bead_id.map_or_else(|| q.id("bead_id"), |b| Ok(Some(b)))?,
        limit,
        offset,
    })
}

/// `?after=&limit=` of an agent's kept events.
pub fn agent_event_query(
    raw: &str,
    agent_id: String,
) -> ApiResult<crate::agent_events::EventQuery> {
    use crate::agent_events::{DEFAULT_LIMIT as EVENTS_DEFAULT, MAX_LIMIT as EVENTS_MAX};
    let q = Query::parse(raw);
    let limit = q.number("limit", EVENTS_DEFAULT, EVENTS_MAX)?;
    if limit == 0 {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    Ok(crate::agent_events::EventQuery {
        agent_id,
        after: i64::from(q.number("after", 0, u32::MAX)?),
        limit,
    })
}

/// `?after&limit` of the mayor's transcript: `(after, limit)`, 100 by default, at most 500.
pub fn transcript_page(raw: &str) -> ApiResult<(i64, i64)> {
    let q = Query::parse(raw);
    let limit = q.number("limit", DEFAULT_BEAD_LIMIT, MAX_LIMIT)?;
    if limit == 0 {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    Ok((i64::from(q.number("after", 0, u32::MAX)?), i64::from(limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bead_filters_and_defaults() {
        let f = bead_filter(
            "status=open&type=merge_request&assignee_agent_id=a-1&limit=5&offset=10&x=y",
        )
        .expect("ok");
        assert_eq!(f.status, Some(BeadStatus::Open));
        assert_eq!(f.bead_type, Some(BeadType::MergeRequest));
        assert_eq!(f.assignee_agent_id.as_deref(), Some("a-1"));
        assert_eq!((f.limit, f.offset), (5, 10));
        let d = bead_filter("").expect("ok");
        assert_eq!((d.limit, d.offset, d.status), (DEFAULT_BEAD_LIMIT, 0, None));
        assert_eq!(bead_filter("limit=0").map(|f| f.limit), Ok(0));
        assert_eq!(bead_filter("limit=").map(|f| f.limit), Ok(0));
        assert_eq!(
            bead_filter("limit=3&limit=7").map(|f| f.limit),
            Ok(3),
            "the first value counts"
        );
    }

    #[test]
    fn reference_messages_in_reference_order() {
        let msg = |q: &str| bead_filter(q).expect_err(q).public_message().to_string();
        for q in ["limit=-1", "offset=abc", "limit=1.5", "status=bogus&limit=x"] {
            assert_eq!(msg(q), "limit and offset must be non-negative integers", "{q}");
        }
        for q in ["status=done", "type=epic", "status=", "type="] {
            assert_eq!(msg(q), "Invalid status or type filter", "{q}");
        }
        for q in ["role=king", "status=sleeping", "role="] {
            assert_eq!(
                agent_filter(q).expect_err(q).public_message(),
                "Invalid role or status filter",
                "{q}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (q, key) in [("limit=9999", "limit"), ("convoy_id=..%2Fx", "convoy_id")] {
            let e = bead_filter(q).expect_err(q);
            assert!(e.public_message().starts_with(key), "{q}: {e:?}");
        }
        assert!(agent_filter("role=king").is_err());
        assert_eq!(
            agent_filter("role=polecat&status=idle").expect("ok").role,
            Some(AgentRole::Polecat)
        );
    }
}
