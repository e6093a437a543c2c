//! The dashboard page at `/` (`dashboard.html`, plain HTML/CSS/JS compiled into the Worker:
//! nothing is fetched from elsewhere at run time) and the check of a live stream's ticket
//! before it is passed on.
//!
//! The page holds no secret: the internal key is typed into it once and kept in the tab's
//! sessionStorage (the JS variable `API_KEY`). It calls the JSON API with that key and opens an
//! agent's live stream with a one-shot ticket. Its mayor panel is a chat with the town's mayor
//! (`…/mayor/messages`: sent with a form, read by polling `?after=` the last id shown).

/// The page.
pub const HTML: &str = include_str!("dashboard.html");

/// Its Content-Security-Policy: its own inline script and style, requests to this origin only
/// (HTTP and WebSocket), no frames, no forms posted elsewhere.
pub const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; \
     connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A stream ticket as given in the query: 1 to 128 letters, digits, `-` or `_`.
pub fn ticket(t: &str) -> Result<&str, String> {
    if t.is_empty() {
        return Err(
            "ticket: required (POST .../stream-ticket first, then open the stream with ?ticket=)"
                .into(),
        );
    }
    if t.len() > 128 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err("ticket: must be 1 to 128 letters, digits, '-' or '_'".into());
    }
    Ok(t)
}

/// The agent of a forwarded ticket request (`/agents/:id/stream-ticket`).
pub fn ticket_request_agent(path: &str) -> Option<&str> {
    path.strip_prefix("/agents/")?
        .strip_suffix("/stream-ticket")
        .filter(|a| !a.is_empty() && !a.contains('/'))
}

/// How long a ticket is valid, as the control server's.
pub const TICKET_TTL_MS: i64 = 60_000;
/// Most outstanding history tickets a TownContainer keeps (the oldest go first).
pub const MAX_HISTORY_TICKETS: usize = 100;

/// A ticket the TownContainer issued itself, for an agent its control server no longer knows
/// but whose kept events it has: the stream then replays that history and closes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistoryTicket {
    pub ticket: String,
    pub agent: String,
    pub expires_ms: i64,
}

/// Adds a ticket, dropping expired ones and the oldest beyond [`MAX_HISTORY_TICKETS`].
pub fn add_history_ticket(list: &mut Vec<HistoryTicket>, t: HistoryTicket, now_ms: i64) {
    list.retain(|x| x.expires_ms > now_ms);
    while list.len() >= MAX_HISTORY_TICKETS {
        list.remove(0);
    }
    list.push(t);
}

/// Takes `ticket` out of the list if it is there (`None`: not a history ticket). `Some(Err)`:
/// it was one, now spent, but not valid for `agent` now.
pub fn redeem_history_ticket(
    list: &mut Vec<HistoryTicket>,
    ticket: &str,
    agent: &str,
    now_ms: i64,
) -> Option<Result<(), &'static str>> {
    let i = list.iter().position(|x| x.ticket == ticket)?;
    let t = list.remove(i);
    Some(if t.agent != agent {
        Err("this stream ticket was issued for another agent")
    } else if t.expires_ms <= now_ms {
        Err("this stream ticket has expired (tickets are valid for 60 s)")
    } else {
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_tickets_are_one_shot_bound_and_expire() {
        assert_eq!(ticket_request_agent("/agents/a1/stream-ticket"), Some("a1"));
        assert_eq!(ticket_request_agent("/agents/a1/stop"), None);
        assert_eq!(ticket_request_agent("/agents//stream-ticket"), None);
        let mut l = Vec::new();
        let t =
            |s: &str, exp| HistoryTicket { ticket: s.into(), agent: "a1".into(), expires_ms: exp };
        add_history_ticket(&mut l, t("x", 100), 0);
        add_history_ticket(&mut l, t("y", 100), 0);
        add_history_ticket(&mut l, t("z", 50), 0);
        assert_eq!(
            redeem_history_ticket(&mut l, "nope", "a1", 10),
            None,
            "not a history ticket: the control server's"
        );
        assert_eq!(redeem_history_ticket(&mut l, "x", "a1", 10), Some(Ok(())));
        assert_eq!(redeem_history_ticket(&mut l, "x", "a1", 10), None, "spent");
        assert_eq!(
            redeem_history_ticket(&mut l, "y", "a2", 10),
            Some(Err("this stream ticket was issued for another agent"))
        );
        assert!(
            matches!(redeem_history_ticket(&mut l, "z", "a1", 60), Some(Err(e)) if e.contains("expired"))
        );
        for i in 0..(MAX_HISTORY_TICKETS + 5) {
            add_history_ticket(&mut l, t(&format!("t{i}"), 1_000), 0);
        }
        assert_eq!(l.len(), MAX_HISTORY_TICKETS);
        add_history_ticket(&mut l, t("late", 5_000), 2_000);
        assert_eq!(l.len(), 1, "expired ones go first");
    }

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
    fn the_mayor_panel_sets_text_only_and_polls_its_own_route() {
        let start = HTML.find("// ---- mayor:").expect("the mayor panel's script");
        let end = start + HTML[start..].find("// ---- start ----").expect("its end");
        let js = &HTML[start..end];
        // What the mayor and people wrote is shown as text: never parsed as HTML.
        for bad in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"] {
            assert!(!js.contains(bad), "{bad} in the mayor panel");
        }
        assert!(js.contains("textContent") && js.contains("/messages?after="));
        assert!(
            HTML.contains("id=\"mayor-log\"")
                && HTML.contains("id=\"mayor-input\"")
                && HTML.contains("id=\"mayor-send\"")
        );
        let limit = format!("const MAYOR_MAX_BYTES = {};", shared_types::MAX_MAYOR_MESSAGE_BYTES);
        assert!(
            js.contains(&limit) || HTML.contains(&limit),
            "the page checks the API's message limit"
        );
    }

    #[test]
    fn tickets_are_checked_before_they_are_passed_on() {
        assert_eq!(ticket("abc-DEF_123"), Ok("abc-DEF_123"));
        assert!(ticket("").is_err());
        assert!(ticket("a&b=c").is_err());
        assert!(ticket(&"a".repeat(129)).is_err());
    }
}
