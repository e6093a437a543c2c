//! The dashboard page at `/` (`dashboard.html`, plain HTML/CSS/JS compiled into the Worker:
//! nothing is fetched from elsewhere at run time) and the check of a live stream's ticket
//! before it is passed on.
//!
//! The page holds no secret: the internal key is typed into it once and kept in the tab's
//! sessionStorage (the JS variable `API_KEY`). It calls the JSON API with that key and opens an
//! agent's live stream with a one-shot ticket.

/// The page.
pub const HTML: &str = include_str!("dashboard.html");

/// Its Content-Security-Policy: its own inline script and style, requests to this origin only
/// (HTTP and WebSocket), no frames, no forms posted elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; \
     connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A stream ticket as given in the query: 1 to 128 letters, digits, `-` or `_`.
pub fn ticket(t: &str) -> Result<&str, String> {
    if t.is_empty() {
        return Err("ticket: required (POST .../stream-ticket first, then open the stream with ?ticket=)".into());
    }
    if t.len() > 128 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err("ticket: must be 1 to 128 letters, digits, '-' or '_'".into());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_holds_no_secret_and_keeps_the_reference_markers() {
        assert!(HTML.contains("<title>Gastown Dashboard</title>"));
        assert!(HTML.contains("API_KEY"));
        assert!(HTML.contains("sessionStorage"));
        // Nothing from elsewhere: no absolute URL is loaded.
        // The key lives in sessionStorage only (this tab), never in localStorage.
        for bad in ["src=\"http", "href=\"http", "@import", "localStorage"] {
            assert!(!HTML.contains(bad), "{bad}");
        }
    }

    #[test]
    fn tickets_are_checked_before_they_are_passed_on() {
        assert_eq!(ticket("abc-DEF_123"), Ok("abc-DEF_123"));
        assert!(ticket("").is_err());
        assert!(ticket("a&b=c").is_err());
        assert!(ticket(&"a".repeat(129)).is_err());
    }
}
