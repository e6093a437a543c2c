//! One request to a forge's REST API, read the same way for GitHub and GitLab: a 2xx is its
//! JSON, a pause the forge asks for (`Retry-After`, an exhausted rate limit) is
//! [`ForgeError::Paced`], what may work later (unreachable, a 5xx) is [`ForgeError::Later`],
//! and anything else is refused with the forge's own words.
//!
//! Reads are conditional when the caller keeps [`Validators`]: a GET whose last answer came
//! with an `ETag` is sent with `If-None-Match`, and a 304 (which GitHub does not count against
//! the rate limit) is read as that last answer.

use serde_json::Value;

use crate::effects::{Effects, Inbound, Outbound};
use crate::routes::Method;

/// A forge answer that is not what the step needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeError {
    /// Worth trying again later (unreachable, a 5xx).
    Later(String),
    /// The forge asks for no request before `until_ms` (a rate limit, `Retry-After`).
    Paced { until_ms: i64, why: String },
    /// Will not work as asked (refused, not found): the entry fails with this.
    Refused(String),
}

impl ForgeError {
    /// The HTTP status a refusal names (`HTTP 405: …`), to tell "not now" from "never".
    pub fn refused_with(&self, status: u16) -> bool {
        matches!(self, Self::Refused(m) if m.starts_with(&format!("HTTP {status}:")))
    }
}

/// When a refusing forge allows the next request: after `Retry-After` seconds, or, with no
/// requests left (GitHub's `X-RateLimit-Remaining: 0`, GitLab's `RateLimit-Remaining: 0`), at
/// the matching reset (epoch seconds). At most an hour away; `None` when the answer says
/// nothing of it.
pub fn paced_until_ms(answer: &Inbound, now_ms: i64) -> Option<i64> {
    const HOUR_MS: i64 = 3600 * 1000;
    if let Some(secs) = answer.header("retry-after").and_then(|v| v.trim().parse::<i64>().ok()) {
        return Some(now_ms + (secs * 1000).clamp(0, HOUR_MS));
    }
    for (remaining, reset) in
        [("x-ratelimit-remaining", "x-ratelimit-reset"), ("ratelimit-remaining", "ratelimit-reset")]
    {
        if answer.header(remaining).map(str::trim) == Some("0") {
            let reset = answer.header(reset)?.trim().parse::<i64>().ok()?;
            return Some((reset * 1000).clamp(now_ms, now_ms + HOUR_MS));
        }
    }
    None
}

/// What a forge's client calls with: the platform, the API root, the rig's token, the
/// repository, and the kept answers for conditional reads (if any).
pub struct Api<'a, E: Effects> {
    pub fx: &'a E,
    pub api_url: &'a str,
    pub token: &'a str,
    pub repo: &'a super::pulls::Repo,
    pub validators: Option<&'a dyn Validators>,
}

/// The last answer of each GET that carried an `ETag`, by URL, for conditional reads. Stored
/// by the caller (the RigDO keeps them in its SQL storage, bounded).
pub trait Validators {
    /// The `ETag` and body of the last answer to `url`.
    fn last(&self, url: &str) -> Option<(String, String)>;
    /// Keeps an answer to `url`.
    fn keep(&self, url: &str, etag: &str, body: &str);
}

/// Sends `method url` with `headers` (they hold the credential: never logged) and reads the
/// answer as the module says; a GET is conditional when `validators` are given.
pub async fn call<E: Effects>(
    fx: &E,
    validators: Option<&dyn Validators>,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
) -> Result<Value, ForgeError> {
    let mut headers = headers;
    if body.is_some() {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let validators = validators.filter(|_| method == Method::Get);
    let last = validators.and_then(|v| v.last(&url));
    if let Some((etag, _)) = &last {
        headers.push(("if-none-match".into(), etag.clone()));
    }
    let req = Outbound { method, url, headers, body: body.map(|b| b.to_string()) };
    let mut answer = fx
        .http(&req)
        .await
        .map_err(|e| ForgeError::Later(format!("the forge is unreachable: {e}")))?;
    match (answer.status, &last, validators, answer.header("etag")) {
        (304, Some((_, body)), _, _) => {
            answer.status = 200;
            answer.body = body.clone();
        }
        (200, _, Some(v), Some(etag)) => v.keep(&req.url, etag, &answer.body),
        _ => {}
    }
    let parsed: Value = crate::json::parse(&answer.body).unwrap_or(Value::Null);
    let message = || message_of(&parsed);
    let why = || format!("HTTP {}: {}", answer.status, message());
    match answer.status {
        200..=299 => Ok(parsed),
        403 | 429 => match paced_until_ms(&answer, fx.now_ms()) {
            Some(until_ms) => Err(ForgeError::Paced { until_ms, why: why() }),
            // "API rate limit exceeded ..." without the headers that say for how long.
            None if answer.status == 429 || message().contains("rate limit") => {
                Err(ForgeError::Later(why()))
            }
            None => Err(ForgeError::Refused(why())),
        },
        500..=599 => Err(ForgeError::Later(why())),
        _ => Err(ForgeError::Refused(why())),
    }
}

/// The forge's error text: GitHub's `message`, GitLab's `message` (a string, a list or a map
/// of field errors) or `error`.
fn message_of(answer: &Value) -> String {
    match (&answer["message"], &answer["error"]) {
        (Value::String(m), _) => m.clone(),
        (Value::Null, Value::String(e)) => e.clone(),
        (Value::Null, _) => "no message".into(),
        (other, _) => other.to_string(),
    }
}

/// A value in a query string or a path segment, percent-encoded (`/` too).
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_forge_says_how_long_to_wait() {
        let now = 1_000_000;
        let answer = |headers: &[(&str, &str)]| Inbound {
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Inbound::new(403, "{}")
        };
        assert_eq!(paced_until_ms(&answer(&[("retry-after", "60")]), now), Some(now + 60_000));
        let reset = &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1100")];
        assert_eq!(paced_until_ms(&answer(reset), now), Some(1_100_000));
        let far = &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "99999999")];
        assert_eq!(paced_until_ms(&answer(far), now), Some(now + 3_600_000), "an hour at most");
        let left = &[("x-ratelimit-remaining", "12"), ("x-ratelimit-reset", "1100")];
        assert_eq!(paced_until_ms(&answer(left), now), None);
        assert_eq!(paced_until_ms(&answer(&[]), now), None);
        // GitLab's names for the same.
        let gitlab = &[("ratelimit-remaining", "0"), ("ratelimit-reset", "1100")];
        assert_eq!(paced_until_ms(&answer(gitlab), now), Some(1_100_000));
    }
}
