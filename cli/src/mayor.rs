//! `gt mayor`: a person talks with the town's mayor (its long-lived coordinator agent).
//!
//! Sending is `POST /api/towns/:town/mayor/messages` `{"message"}` (202: `messageId`,
//! `sessionStatus` active/starting/queued, `detail` when queued); the reply is read by polling
//! `GET …/mayor/messages?after=<messageId>` (oldest first; roles `person`, `mayor`, `town`) once
//! a second until the mayor's reply to it arrives (a `mayor` message whose `inReplyTo` is at
//! least the message's id) or `--wait` runs out. The conversation is the same
//! list read from the start (`--history`).

use std::time::{Duration, Instant};

use serde_json::json;
use shared_types::records::{MayorMessage, MayorSent};

use crate::api::{read, Api, Error};

/// Longest message the API takes, in bytes (UTF-8).
pub const MAX_MESSAGE_BYTES: usize = shared_types::MAX_MAYOR_MESSAGE_BYTES;
/// Messages asked for per page (the API's most).
const PAGE: usize = 500;
/// Time between two polls for the reply.
const POLL: Duration = Duration::from_secs(1);

/// A message as the API takes it (the API's own rule, `shared_types::validate::text`: not blank,
/// at most [`MAX_MESSAGE_BYTES`], no NUL). Checked before anything is sent.
pub fn check_message(message: &str) -> Result<&str, Error> {
    shared_types::validate::text(message, MAX_MESSAGE_BYTES, false).map(|()| message).map_err(|m| {
        Error::Usage(format!("the message to the mayor {m} (it is {} bytes)", message.len()))
    })
}

/// Sends `message` and, unless `wait_secs` is 0, waits (polling) for the mayor's reply and prints
/// it: its text, or with `json` the messages after the one sent, through the reply, as a JSON
/// array. With `wait_secs` 0 prints the message's id and the session's status (`json`: the
/// API's answer) and returns. A wait that ends without a reply is an error (exit 1).
pub async fn send(
    api: &Api,
    town: &str,
    message: &str,
    wait_secs: u64,
    json: bool,
) -> Result<(), Error> {
    let message = check_message(message)?;
    let path = format!("/api/towns/{town}/mayor/messages");
    let data = api.post(&path, json!({ "message": message })).await?;
    let sent: MayorSent = read(&data)?;
    let (id, status) = (sent.message_id, sent.session_status);
    let detail = sent.detail.as_deref().filter(|d| !d.is_empty());
    if wait_secs == 0 {
        if json {
            println!("{}", serde_json::to_string_pretty(&data).unwrap_or_default());
        } else {
            println!("{}", sent_line(id, &status, detail));
        }
        return Ok(());
    }
    if let Some(d) = detail {
        eprintln!("gt: the mayor's session is {status}: {d}");
    }
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let mut after = id;
    let mut seen: Vec<MayorMessage> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(no_reply(town, id, wait_secs, &status));
        }
        // Each poll is bounded by the time left, so the wait never overruns --wait.
        let page = match tokio::time::timeout(
            left,
            api.get(&format!("{path}?after={after}&limit={PAGE}")),
        )
        .await
        {
            Ok(page) => read::<Vec<MayorMessage>>(&page?)?,
            Err(_) => return Err(no_reply(town, id, wait_secs, &status)),
        };
        after = page.iter().map(|m| m.id).max().unwrap_or(after).max(after);
        let full = page.len() >= PAGE;
        seen.extend(page);
        // The reply to this message: the mayor's first reply that was given it (`inReplyTo`),
        // not the end of a turn that was already running when it was sent.
        if let Some(i) =
            seen.iter().position(|m| m.role == "mayor" && m.in_reply_to.is_none_or(|r| r >= id))
        {
            seen.truncate(i + 1);
            if json {
                println!("{}", serde_json::to_string_pretty(&seen).unwrap_or_default());
            } else {
                println!("{}", seen[i].text);
            }
            return Ok(());
        }
        if !full {
            tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

fn no_reply(town: &str, id: i64, wait_secs: u64, status: &str) -> Error {
    Error::NoAnswer(format!(
        "no reply from the mayor within {wait_secs} s to message {id} (the mayor's session was {status}); \
         the reply will show in `gt mayor {town} --history`"
    ))
}

/// What `--wait 0` prints: `message 7 sent (session active)`, plus the reason when queued.
fn sent_line(id: i64, status: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!("message {id} sent (session {status}: {d})"),
        None => format!("message {id} sent (session {status})"),
    }
}

/// Prints the whole conversation, oldest first (`json`: the messages as one JSON array).
pub async fn history(api: &Api, town: &str, json: bool) -> Result<(), Error> {
    let mut all: Vec<MayorMessage> = Vec::new();
    let mut after = 0i64;
    loop {
        let page: Vec<MayorMessage> = read(
            &api.get(&format!("/api/towns/{town}/mayor/messages?after={after}&limit={PAGE}"))
                .await?,
        )?;
        let next = page.iter().map(|m| m.id).max().unwrap_or(after);
        let done = page.len() < PAGE || next <= after;
        after = next;
        all.extend(page);
        if done {
            break;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else if all.is_empty() {
        println!("(no messages yet: `gt mayor {town} \"...\"` starts the conversation)");
    } else {
        println!("{}", transcript(&all));
    }
    Ok(())
}

/// The conversation for people: per message a line `#id  time  role`, then its text, then a
/// blank line.
pub fn transcript(messages: &[MayorMessage]) -> String {
    messages
        .iter()
        .map(|m| {
            let at = m.created_at.get(..19).unwrap_or(&m.created_at).replace('T', " ");
            format!("#{}  {at}  {}\n{}", m.id, m.role, m.text.trim_end())
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked_before_sending() {
        assert_eq!(check_message("hello").ok(), Some("hello"));
        assert!(
            check_message(&"é".repeat(MAX_MESSAGE_BYTES / 2)).is_ok(),
            "exactly the most bytes"
        );
        assert!(check_message(" ").is_err_and(|e| e.to_string().contains("must not be empty")));
        for bad in [
            String::new(),
            " \n\t ".into(),
            "x".repeat(MAX_MESSAGE_BYTES + 1),
            "é".repeat(MAX_MESSAGE_BYTES / 2 + 1),
            "a\0b".into(),
        ] {
            let e = check_message(&bad).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }

    #[test]
    fn the_conversation_reads_as_a_transcript() {
        let message = |id: i64, role: &str, text: &str, at: &str| MayorMessage {
            id,
            role: role.into(),
            text: text.into(),
            created_at: at.into(),
            in_reply_to: None,
        };
        let msgs = vec![
            message(1, "person", "hello", "2026-11-30T07:01:02.123Z"),
            message(2, "mayor", "Hi.\nWhat shall we build?\n", "2026-11-30T07:01:09.000Z"),
        ];
        assert_eq!(transcript(&msgs), "#1  2026-11-30 07:01:02  person\nhello\n\n#2  2026-11-30 07:01:09  mayor\nHi.\nWhat shall we build?");
        assert_eq!(
            sent_line(7, "queued", Some("at capacity")),
            "message 7 sent (session queued: at capacity)"
        );
        assert_eq!(sent_line(7, "active", None), "message 7 sent (session active)");
        assert_eq!(no_reply("t1", 7, 5, "starting").exit_code(), 1);
    }
}
