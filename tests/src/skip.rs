//! A test that cannot run here (it needs root, say) says so instead of passing in silence.
//!
//! libtest has no "skipped" outcome: a test that returns early counts as passed. So a skip is
//! recorded outside it: printed, and written as one line to the file named by
//! `GASTOWN_SKIP_LOG`, which `scripts/test` reads to print the skips and its
//! `N passed, N failed, N skipped` line. Under `CI=true` a skip is a failure: CI runs as root
//! with everything installed, so a test that cannot run there is a broken test.

use std::io::Write;

/// Records that the test `name` is skipped for `reason`; under `CI=true` it panics instead.
/// The caller returns right after.
pub fn skip(name: &str, reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} cannot run here ({reason}), and CI allows no skipped test");
    }
    eprintln!("SKIPPED {name}: {reason}");
    if let Some(path) = std::env::var_os("GASTOWN_SKIP_LOG") {
        // One short line per write, appended: lines of tests running at once never interleave.
        let line = format!("{name}: {}\n", reason.replace('\n', " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!(
                "cannot record the skip of {name} in {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// Skips `name` unless the test runs as root; true when it may go on.
pub fn needs_root(name: &str, why: &str) -> bool {
    if crate::procs::is_root() {
        return true;
    }
    skip(name, &format!("needs root: {why}"));
    false
}
