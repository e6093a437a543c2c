//! `gt`: drive a Gastown town from a terminal instead of curl.
//!
//! Configured by `GASTOWN_URL` (the Worker) and `GASTOWN_KEY` (its internal key); `scripts/dev`
//! prints both lines to export. Tables for people on stdout, `--json` for scripts (the API's
//! `data`, one JSON document; `watch` prints one event per line), errors on stderr. Exit codes:
//! 0 done, 1 the API refused or failed (or a wait ended without the answer), 2 bad arguments or
//! settings, 3 the API is unreachable.

mod api;
mod mayor;
mod stream;
mod table;

use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};

use api::{read, segment, Api, Error};
use shared_types::records::{
    Agent, Bead, BeadStatus, EventPage, PrimeContext, ReviewEntry, RigRecord, ShardView, Slung,
    TownEscalation, TownView, UsageAnswer, UsageSums,
};
use stream::Watched;

#[derive(Parser)]
#[command(
    name = "gt",
    version,
    about = "Drive a Gastown town: towns, rigs, slings, status, agents' streams, mail, escalations, costs, the mayor"
)]
struct Cli {
    /// The Worker's URL.
    #[arg(long, env = "GASTOWN_URL", default_value = "http://127.0.0.1:8787", global = true)]
    url: String,
    /// The Worker's internal key (INTERNAL_API_SECRET).
    #[arg(long, env = "GASTOWN_KEY", hide_env_values = true, default_value = "", global = true)]
    key: String,
    /// Print the API's data as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Towns.
    Town {
        #[command(subcommand)]
        command: TownCommand,
    },
    /// Rigs (a town's repositories).
    Rig {
        #[command(subcommand)]
        command: RigCommand,
    },
    /// Give a polecat a bead of work on a rig.
    Sling {
        rig: String,
        title: String,
        #[arg(long)]
        body: Option<String>,
        /// low, medium, high or critical.
        #[arg(long)]
        priority: Option<String>,
    },
    /// A rig's beads by status, its agents, and its latest review entries (pull request links).
    Status { rig: String },
    /// Follow an agent's events (tool calls, text, errors) until its run ends.
    Watch {
        town: String,
        agent: String,
        /// Print what is there and stop, instead of following.
        #[arg(long)]
        once: bool,
        /// Stop following after this many seconds (default: until the run ends).
        #[arg(long)]
        r#for: Option<u64>,
        /// How long to wait for an agent that has not reached its container yet.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// An agent's mail.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Escalations of a town and of its rigs.
    Escalations { town: String },
    /// What a town's agents spent: tokens and cost in total and per bead, agent, rig, model,
    /// day, convoy or run (a cost the provider did not report shows as unknown).
    Costs {
        town: String,
        /// bead, agent, rig, model, day, convoy or run.
        #[arg(long, default_value = "bead")]
        by: String,
        /// First day (YYYY-MM-DD, the town's day).
        #[arg(long)]
        from: Option<String>,
        /// Last day (YYYY-MM-DD, the town's day).
        #[arg(long)]
        to: Option<String>,
    },
    /// Talk with the town's mayor (its coordinator agent): send a message and print the reply,
    /// or print the conversation (--history).
    Mayor {
        town: String,
        /// What to say (not blank, at most 16 KiB).
        #[arg(required_unless_present = "history", conflicts_with = "history")]
        message: Option<String>,
        /// Print the conversation so far, oldest first, instead of sending.
        #[arg(long)]
        history: bool,
        /// Seconds to wait for the mayor's reply; 0: print the message's id and the session's
        /// status and return.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
}

#[derive(Subcommand)]
enum TownCommand {
    /// Create a town; prints its id.
    Create { name: String },
    /// A town and its rigs.
    Show { town: String },
}

#[derive(Subcommand)]
enum RigCommand {
    /// Add a rig (a git repository) to a town; prints its id.
    Add {
        town: String,
        name: String,
        git_url: String,
        #[arg(long, default_value = "main")]
        default_branch: String,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// The agent's undelivered mail (reading it here does not mark it delivered).
    List { rig: String, agent: String },
    /// Send mail to an agent, as another agent of the rig.
    Send {
        rig: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        body: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gt: no async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("gt: {e}");
        std::process::exit(e.exit_code());
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let api = Api::new(&cli.url, &cli.key)?;
    let json = cli.json;
    // `--json` prints the API's data as it came; the tables read it typed.
    let out = |data: &Value, table: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(data).unwrap_or_default());
        } else {
            println!("{table}");
        }
    };
    match cli.command {
        Command::Town { command: TownCommand::Create { name } } => {
            let data = api.post("/api/towns", json!({ "name": name })).await?;
            let town: TownView = read(&data)?;
            out(&data, town.id);
        }
        Command::Town { command: TownCommand::Show { town } } => {
            let town = segment("town", &town)?;
            let data = api.get(&format!("/api/towns/{town}")).await?;
            let t: TownView = read(&data)?;
            let shards: Vec<ShardView> =
                read(&api.get(&format!("/api/towns/{town}/shards")).await?)?;
            let shard_of = |rig: &str| {
                shards
                    .iter()
                    .find(|s| s.rigs.iter().any(|r| r == rig))
                    .map_or("-".to_string(), |s| s.shard.to_string())
            };
            let rigs: Vec<Vec<String>> = t
                .rigs
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.name.clone(),
                        r.git_url.clone(),
                        r.default_branch.clone(),
                        shard_of(&r.id),
                    ]
                })
                .collect();
            let rigs = table::render(&["rig", "name", "git url", "branch", "shard"], &rigs);
            let rows: Vec<Vec<String>> = shards
                .iter()
                .map(|s| {
                    vec![
                        s.shard.to_string(),
                        s.rigs.len().to_string(),
                        s.running.to_string(),
                        s.capacity.map_or("-".into(), |c| c.to_string()),
                        s.memory_bytes.map_or("-".into(), |m| format!("{} MiB", m >> 20)),
                        s.pool_ready.map_or("-".into(), |p| p.to_string()),
                        s.reported_at.clone().unwrap_or_else(|| "-".into()),
                        if s.unreachable { "unreachable" } else { "ok" }.to_string(),
                    ]
                })
                .collect();
            let shards = match rows.is_empty() {
                true => "no shard started yet (a rig is placed when it first has work)".to_string(),
                false => table::render(
                    &[
                        "shard",
                        "rigs",
                        "running",
                        "capacity",
                        "kilo memory",
                        "pool",
                        "last heartbeat",
                        "state",
                    ],
                    &rows,
                ),
            };
            out(&data, format!("town {} ({})\n\n{rigs}\n{shards}", t.name, t.id));
        }
        Command::Rig { command: RigCommand::Add { town, name, git_url, default_branch } } => {
            let body =
                json!({ "name": name, "git_url": git_url, "default_branch": default_branch });
            let data =
                api.post(&format!("/api/towns/{}/rigs", segment("town", &town)?), body).await?;
            let rig: RigRecord = read(&data)?;
            out(&data, rig.id);
        }
        Command::Sling { rig, title, body, priority } => {
            let mut req = json!({ "title": title });
            if let Some(b) = body {
                req["body"] = b.into();
            }
            if let Some(p) = priority {
                req["priority"] = p.into();
            }
            let data = api.post(&format!("/api/rigs/{}/sling", segment("rig", &rig)?), req).await?;
            let s: Slung = read(&data)?;
            out(&data, format!("bead {} hooked to {} ({})", s.bead.id, s.agent.name, s.agent.id));
        }
        Command::Status { rig } => {
            let rig = segment("rig", &rig)?;
            // A rig nobody configured is an error, not two empty tables.
            let config = api.get(&format!("/api/rigs/{rig}/config")).await?;
            let beads = api.get(&format!("/api/rigs/{rig}/beads?limit=500")).await?;
            let agents = api.get(&format!("/api/rigs/{rig}/agents")).await?;
            let reviews = api.get(&format!("/api/rigs/{rig}/review-queue?limit=20")).await?;
            let mut bead_list: Vec<Bead> = read(&beads)?;
            let order = [BeadStatus::InProgress, BeadStatus::Open, BeadStatus::Failed];
            bead_list.sort_by_key(|b| order.iter().position(|s| b.status == *s).unwrap_or(3));
            let bead_rows: Vec<Vec<String>> = bead_list
                .iter()
                .map(|b| {
                    vec![
                        b.status.as_str().into(),
                        b.id.clone(),
                        b.bead_type.as_str().into(),
                        b.title.clone(),
                        or_dash(&b.assignee_agent_id),
                    ]
                })
                .collect();
            let agent_rows: Vec<Vec<String>> = read::<Vec<Agent>>(&agents)?
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.id.clone(),
                        a.role.as_str().into(),
                        a.status.as_str().into(),
                        or_dash(&a.current_hook_bead_id),
                        or_dash(&a.last_activity_at),
                    ]
                })
                .collect();
            // The review queue: each submitted branch, how its merge or pull request went.
            let review_rows: Vec<Vec<String>> = read::<Vec<ReviewEntry>>(&reviews)?
                .iter()
                .map(|r| {
                    let outcome = r.result.as_ref().map(|o| text(&o["state"]));
                    vec![
                        r.status.as_str().into(),
                        r.bead_id.clone(),
                        r.branch.clone(),
                        or_dash(&r.pr_url),
                        or_dash(&outcome),
                    ]
                })
                .collect();
            // Where the rig's agents run: its town's shard that holds it.
            let town = config["town_id"].as_str().unwrap_or_default();
            let shards: Vec<ShardView> =
                read(&api.get(&format!("/api/towns/{}/shards", segment("town", town)?)).await?)?;
            let shard = shards.iter().find(|s| s.rigs.contains(&rig));
            let placed = match shard {
                Some(s) => format!(
                    "on shard {} of town {town}: {} of {} agents running there, {}",
                    s.shard,
                    s.running,
                    s.capacity.map_or("?".into(), |c| c.to_string()),
                    if s.unreachable { "not answering" } else { "answering" }
                ),
                None => {
                    format!("not placed on a shard of town {town} yet (placed with its first work)")
                }
            };
            out(
                &json!({ "rig": config, "beads": beads, "agents": agents, "reviews": reviews, "shard": shard }),
                format!(
                    "{}\n\n{}\n\n{}\n\nrig {rig} {placed}",
                    table::render(&["status", "bead", "type", "title", "assignee"], &bead_rows),
                    table::render(
                        &["agent", "id", "role", "status", "hooked bead", "last activity"],
                        &agent_rows
                    ),
                    table::render(
                        &["review", "bead", "branch", "pull request", "outcome"],
                        &review_rows
                    )
                ),
            );
        }
        Command::Watch { town, agent, once, r#for, wait } => {
            watch(
                &api,
                &segment("town", &town)?,
                &segment("agent", &agent)?,
                once,
                r#for,
                wait,
                json,
            )
            .await?
        }
        Command::Mail { command: MailCommand::List { rig, agent } } => {
            // Prime shows undelivered mail without delivering it (the agent's own check does).
            let data = api
                .get(&format!(
                    "/api/rigs/{}/agents/{}/prime",
                    segment("rig", &rig)?,
                    segment("agent", &agent)?
                ))
                .await?;
            let mail = read::<PrimeContext>(&data)?.undelivered_mail;
            let rows: Vec<Vec<String>> = mail
                .iter()
                .map(|m| {
                    vec![
                        m.created_at.clone(),
                        m.from_agent_id.clone(),
                        m.subject.clone(),
                        m.body.clone(),
                    ]
                })
                .collect();
            out(
                &data["undelivered_mail"],
                table::render(&["sent", "from", "subject", "body"], &rows),
            );
        }
        Command::Mail { command: MailCommand::Send { rig, from, to, subject, body } } => {
            let req = json!({ "from_agent_id": from, "to_agent_id": to, "subject": subject, "body": body });
            let sent = api.post(&format!("/api/rigs/{}/mail", segment("rig", &rig)?), req).await?;
            out(&sent, "sent".into());
        }
        Command::Escalations { town } => {
            let town = segment("town", &town)?;
            let own = api.get(&format!("/api/towns/{town}/escalations")).await?;
            let mut rows: Vec<Vec<String>> = read::<Vec<TownEscalation>>(&own)?
                .into_iter()
                .map(|e| {
                    let p = e.priority.as_str().into();
                    vec!["(town)".into(), p, e.title, e.created_at, e.id]
                })
                .collect();
            let mut all: Vec<Value> =
                list(&own).into_iter().map(|e| with(e, "rig", "(town)")).collect();
            let rigs: Vec<RigRecord> = read(&api.get(&format!("/api/towns/{town}/rigs")).await?)?;
            for rig in rigs {
                let beads = api
                    .get(&format!(
                        "/api/rigs/{}/beads?type=escalation&limit=500",
                        segment("rig", &rig.id)?
                    ))
                    .await?;
                rows.extend(read::<Vec<Bead>>(&beads)?.into_iter().map(|b| {
                    let p = b.priority.as_str().into();
                    vec![rig.name.clone(), p, b.title, b.created_at, b.id]
                }));
                all.extend(list(&beads).into_iter().map(|b| with(b, "rig", &rig.name)));
            }
            out(
                &Value::Array(all),
                table::render(&["rig", "priority", "title", "raised", "id"], &rows),
            );
        }
        Command::Costs { town, by, from, to } => {
            let mut query = format!("group_by={}", segment("by", &by)?);
            for (key, day) in [("from", from), ("to", to)] {
                if let Some(day) = day {
                    query.push_str(&format!("&{key}={}", segment(key, &day)?));
                }
            }
            let data =
                api.get(&format!("/api/towns/{}/usage?{query}", segment("town", &town)?)).await?;
            let usage: UsageAnswer = read(&data)?;
            let row = |key: String, u: &UsageSums| {
                let cost = match u.cost_usd {
                    Some(c) => format!("${c:.4}"),
                    None => format!("unknown (${:.4} known)", u.cost_usd_known),
                };
                let counts = [
                    u.calls,
                    u.input_tokens,
                    u.output_tokens,
                    u.reasoning_tokens,
                    u.cache_read_tokens,
                    u.cache_write_tokens,
                ];
                let mut row = vec![key];
                row.extend(counts.iter().map(u64::to_string));
                row.push(cost);
                row
            };
            let mut rows: Vec<Vec<String>> = usage
                .groups
                .iter()
                .flatten()
                .map(|g| row(g.key.clone().flatten().unwrap_or_else(|| "(none)".into()), g))
                .collect();
            rows.push(row("TOTAL".into(), &usage.total));
            let columns =
                [&by, "calls", "input", "output", "reasoning", "cache read", "cache write", "cost"];
            out(&data, table::render(&columns, &rows));
        }
        Command::Mayor { town, message: Some(message), wait, .. } => {
            mayor::send(&api, &segment("town", &town)?, &message, wait, json).await?
        }
        Command::Mayor { town, .. } => mayor::history(&api, &segment("town", &town)?, json).await?,
    }
    Ok(())
}

/// Follows an agent: its live stream (the WebSocket through the Worker) until its run ends or
/// `for_secs` pass; with `once`, or when the container does not know the agent at all (404),
/// the events the Worker kept (`GET /api/towns/:town/agents/:agent/events`).
async fn watch(
    api: &Api,
    town: &str,
    agent: &str,
    once: bool,
    for_secs: Option<u64>,
    wait_secs: u64,
    json: bool,
) -> Result<(), Error> {
    let deadline = for_secs.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let print = |e: &Watched| {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            println!("{}", event_line(e));
        }
    };
    // A freshly slung bead's agent reaches the container a moment later: wait for it (bounded).
    let started_by = std::time::Instant::now() + Duration::from_secs(wait_secs);
    let mut said = false;
    if !once {
        loop {
            match stream::follow(api, town, agent, deadline, print).await {
                Err(Error::Api { status: 404, message }) => {
                    let first: EventPage = read(
                        &api.get(&format!("/api/towns/{town}/agents/{agent}/events?limit=1"))
                            .await?,
                    )?;
                    if !first.events.is_empty() {
                        break;
                    }
                    // Neither the container nor the Worker's kept events know it (yet).
                    if std::time::Instant::now() >= started_by {
                        return Err(Error::Api { status: 404, message });
                    }
                    if !said {
                        eprintln!("gt: waiting up to {wait_secs} s for {agent} to start");
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }
    kept_events(api, town, agent, once, deadline, json).await
}

/// Pages the events the Worker kept, a line each, until a status event `exited` or `failed`,
/// `deadline`, or (`once`) the end of what is there.
async fn kept_events(
    api: &Api,
    town: &str,
    agent: &str,
    once: bool,
    deadline: Option<std::time::Instant>,
    json: bool,
) -> Result<(), Error> {
    let mut after = 0i64;
    loop {
        let page: EventPage = read(
            &api.get(&format!("/api/towns/{town}/agents/{agent}/events?after={after}&limit=500"))
                .await?,
        )?;
        let empty = page.events.is_empty();
        let mut ended = false;
        for e in page.events.into_iter().map(Watched::from) {
            if json {
                println!("{}", serde_json::to_string(&e).unwrap_or_default());
            } else {
                println!("{}", event_line(&e));
            }
            ended |= e.kind == "status"
                && matches!(e.data["status"].as_str(), Some("exited" | "failed"));
        }
        after = page.next_after;
        if once || ended || deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(());
        }
        if empty {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One event for people: `time  kind  what`. Each kind's `data` is the control server's own
/// shape for it, read field by field.
fn event_line(e: &Watched) -> String {
    let d = &e.data;
    let what = match e.kind.as_str() {
        "tool_call" => format!(
            "{} {}{}",
            text(&d["tool"]),
            text(&d["state"]),
            d["exit"].as_i64().map(|x| format!(" (exit {x})")).unwrap_or_default()
        ),
        "text" => text(&d["text"]),
        "error" => format!("{} ({})", text(&d["message"]), text(&d["source"])),
        "status" => text(&d["status"]),
        "supervisor" => format!("{} {}", text(&d["action"]), text(&d["detail"])),
        "usage" => match shared_types::UsageReport::deserialize(d) {
            Ok(u) => format!(
                "{}: {} in, {} out, {}",
                u.model,
                u.tokens.input_tokens,
                u.tokens.output_tokens,
                u.cost_usd.map_or("cost unknown".into(), |c| format!("${c:.4}"))
            ),
            Err(_) => d.to_string(),
        },
        _ => d.to_string(),
    };
    let time = e.at.get(11..19).unwrap_or("");
    format!("{time}  {:<10}  {}", e.kind, what.replace('\n', " "))
}

fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn with(mut v: Value, key: &str, value: &str) -> Value {
    v[key] = value.into();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_lines() {
        let watched = |at: &str, kind: &str, data: Value| Watched {
            at: at.into(),
            kind: kind.into(),
            data,
            agent_id: "a1".into(),
            id: 1,
        };
        let data = json!({ "tool": "bash", "state": "completed", "exit": 0 });
        let e = watched("2026-11-30T07:01:02.000Z", "tool_call", data);
        assert_eq!(event_line(&e), "07:01:02  tool_call   bash completed (exit 0)");
        let t = watched("x", "text", json!({ "text": "all\ndone" }));
        assert_eq!(event_line(&t), "  text        all done");
        let usage = json!({ "messageId": "m1", "model": "p/m", "inputTokens": 10,
            "outputTokens": 2, "reasoningTokens": 0, "cacheReadTokens": 0, "cacheWriteTokens": 0,
            "costUsd": null });
        let u = watched("2026-11-30T07:01:03.000Z", "usage", usage);
        assert_eq!(event_line(&u), "07:01:03  usage       p/m: 10 in, 2 out, cost unknown");
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["gt", "--json", "sling", "r1", "Fix it", "--priority", "high"])
                .expect("parses");
        assert!(
            cli.json
                && matches!(cli.command, Command::Sling { ref priority, .. } if priority.as_deref() == Some("high"))
        );
        assert!(Cli::try_parse_from(["gt", "sling", "r1"]).is_err(), "a sling needs a title");
        let cli =
            Cli::try_parse_from(["gt", "mayor", "t1", "hello", "--wait", "0"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Mayor { ref message, wait: 0, history: false, .. } if message.as_deref() == Some("hello"))
        );
        assert!(matches!(
            Cli::try_parse_from(["gt", "mayor", "t1", "--history"]).map(|c| c.command),
            Ok(Command::Mayor { message: None, history: true, wait: 120, .. })
        ));
        assert!(Cli::try_parse_from(["gt", "mayor", "t1"]).is_err(), "a message or --history");
        assert!(Cli::try_parse_from(["gt", "mayor", "t1", "hi", "--history"]).is_err(), "not both");
    }
}
