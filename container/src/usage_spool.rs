//! Usage not yet kept by the Worker, on disk: each finished model call's usage is appended here
//! as it is read from Kilo, and taken out once a batch holding it was accepted
//! (`event_log.rs`). A control server killed before it sent its last batch sends what is left
//! when it starts again; the Worker counts each call once by its message id, so a report sent
//! twice (accepted, then killed before it was taken out) costs nothing.
//!
//! One JSON line per call in `<WORKSPACE_ROOT>/.usage-spool.jsonl`, readable by the server's
//! user only; bounded to [`MAX_LINES`] (the oldest go first, with a warning).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shared_types::UsageReport;

/// Calls kept at most while the Worker cannot be reached.
const MAX_LINES: usize = 20_000;

/// One call's usage, with where it belongs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spooled {
    pub town_id: String,
    pub rig_id: String,
    pub agent_id: String,
    pub at: String,
    pub report: UsageReport,
}

#[derive(Debug)]
pub struct UsageSpool {
    path: PathBuf,
    lock: Mutex<()>,
}

impl UsageSpool {
    pub fn new(workspace_root: &std::path::Path) -> Self {
        Self { path: workspace_root.join(".usage-spool.jsonl"), lock: Mutex::new(()) }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one call (a failure is logged: the call is then only in the agent's events).
    pub fn add(&self, s: &Spooled) {
        let _g = self.guard();
        let Ok(mut line) = serde_json::to_string(s) else { return };
        line.push('\n');
        let written = open_private(&self.path, true).and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "usage not spooled");
        }
    }

    /// Every call not yet taken out, oldest first (malformed lines are skipped).
    pub fn pending(&self) -> Vec<Spooled> {
        let _g = self.guard();
        self.read()
    }

    fn read(&self) -> Vec<Spooled> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Takes out the calls whose message ids the Worker accepted; keeps the newest
    /// [`MAX_LINES`] of the rest.
    pub fn settle(&self, kept: &HashSet<String>) {
        let _g = self.guard();
        let all = self.read();
        let mut left: Vec<&Spooled> =
            all.iter().filter(|s| !kept.contains(&s.report.message_id)).collect();
        if left.len() == all.len() && all.len() <= MAX_LINES {
            return;
        }
        if left.len() > MAX_LINES {
            tracing::warn!(
                dropped = left.len() - MAX_LINES,
                "usage spool full: the oldest calls are dropped"
            );
            left.drain(..left.len() - MAX_LINES);
        }
        let text: String =
            left.iter().filter_map(|s| serde_json::to_string(s).ok()).map(|l| l + "\n").collect();
        let tmp = self.path.with_extension("jsonl.tmp");
        let written = open_private(&tmp, false)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "usage spool not rewritten");
        }
    }
}

fn open_private(path: &std::path::Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_types::Tokens;

    fn call(id: &str) -> Spooled {
        Spooled {
            town_id: "t".into(),
            rig_id: "r".into(),
            agent_id: "a".into(),
            at: "2026-12-07T10:00:00.000Z".into(),
            report: UsageReport {
                message_id: id.into(),
                model: "p/m".into(),
                bead_id: None,
                dispatch_id: None,
                convoy_id: None,
                tokens: Tokens { input_tokens: 10, ..Tokens::default() },
                cost_usd: None,
            },
        }
    }

    #[test]
    fn calls_stay_until_the_worker_kept_them_and_survive_a_new_spool() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = UsageSpool::new(dir.path());
        spool.add(&call("m1"));
        spool.add(&call("m2"));
        spool.add(&call("m3"));
        spool.settle(&["m2".to_string()].into_iter().collect());
        // A new server on the same workspace finds what was not kept.
        let again = UsageSpool::new(dir.path());
        let left: Vec<String> = again.pending().into_iter().map(|s| s.report.message_id).collect();
        assert_eq!(left, ["m1", "m3"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(".usage-spool.jsonl"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        again.settle(&["m1".to_string(), "m3".to_string()].into_iter().collect());
        assert!(again.pending().is_empty());
    }
}
