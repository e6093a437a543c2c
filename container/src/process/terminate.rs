//! Stopping a process and everything it started.
//!
//! Each supervised child leads its own process group, so one `killpg` reaches the child and
//! the commands it runs. A program may still move a descendant into a group of its own (a
//! detached child); those are found by walking `/proc` from the child's pid before the first
//! signal, and their groups are signalled too.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::time::{sleep, Instant};

use super::reaper::{Exit, ExitWatch};

/// How long to wait, after SIGKILL, for the kernel to finish the processes off.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// The outcome of [`terminate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminated {
    pub exit: Option<Exit>,
    /// SIGKILL was needed because the grace period ran out.
    pub killed: bool,
}

/// Sends `first` to the process group `pgid` (and the groups of detached descendants), waits up
/// to `grace` for all of them to be gone, then SIGKILLs whatever is left and waits for that.
/// With `first == SIGKILL` there is no grace period. Returns the leader's exit, if it was seen.
///
/// Edge cases: a group that is already empty returns at once; a leader that exits while its
/// children ignore SIGTERM still gets its children killed after the grace period.
pub async fn terminate(
    pgid: u32,
    exit: &mut ExitWatch,
    first: Signal,
    grace: Duration,
) -> Terminated {
    let mut groups = descendant_groups(pgid);
    groups.insert(pgid as i32);
    signal_groups(&groups, first);
    let grace = if first == Signal::SIGKILL { Duration::ZERO } else { grace };
    let mut killed = false;
    if !wait_until_gone(&groups, grace).await {
        // Descendants may have forked since the first snapshot.
        groups.extend(descendant_groups(pgid));
        signal_groups(&groups, Signal::SIGKILL);
        killed = first != Signal::SIGKILL;
        if !wait_until_gone(&groups, KILL_WAIT).await {
            tracing::warn!(pgid, "processes survived SIGKILL (uninterruptible sleep?)");
        }
    }
    // The leader is gone; its exit arrives with the reaper's next pass (at most about a second).
    let exit = tokio::time::timeout(Duration::from_secs(3), exit.wait()).await.ok().flatten();
    Terminated { exit, killed }
}

fn signal_groups(groups: &BTreeSet<i32>, sig: Signal) {
    // Never our own group (or init's): a descendant could have joined it.
    let own = nix::unistd::getpgrp().as_raw();
    for &g in groups.iter().filter(|&&g| g > 1 && g != own) {
        match killpg(Pid::from_raw(g), sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = g, signal = %sig, error = %e, "could not signal process group")
            }
        }
    }
}

/// True once none of the groups has a live process (zombies awaiting the reaper do not count).
async fn wait_until_gone(groups: &BTreeSet<i32>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if groups.iter().all(|&g| !group_alive(g)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Whether any non-zombie process is in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if kill(Pid::from_raw(-pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    // kill(2) counts zombies; look closer so a not-yet-reaped leader does not keep us waiting.
    processes().into_iter().any(|p| p.pgrp == pgid && p.state != 'Z')
}

#[derive(Debug, Clone, Copy)]
struct ProcInfo {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    state: char,
}

/// Every process visible in /proc with its parent, group and state.
fn processes() -> Vec<ProcInfo> {
    super::procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may contain spaces and parentheses: parse after the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            Some(ProcInfo { pid, ppid, pgrp, state })
        })
        .collect()
}

/// Process groups of all live descendants of `root`.
fn descendant_groups(root: u32) -> BTreeSet<i32> {
    let procs = processes();
    let mut frontier = vec![root as i32];
    let mut seen = BTreeSet::new();
    let mut groups = BTreeSet::new();
    // Bounded by the number of processes: each pid is expanded once.
    while let Some(parent) = frontier.pop() {
        if !seen.insert(parent) {
            continue;
        }
        for p in procs.iter().filter(|p| p.ppid == parent) {
            groups.insert(p.pgrp);
            frontier.push(p.pid);
        }
    }
    groups
}
