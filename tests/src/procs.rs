//! Looking at this machine's processes through /proc, and signalling them.

pub use nix::sys::signal::Signal::{SIGKILL, SIGTERM};

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub state: char,
    pub cmdline: String,
}

/// Every live (non-zombie) process.
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split(' ');
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse().ok()?;
            let pgrp = f.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            Some(Proc { pid, ppid, pgrp, state, cmdline })
        })
        .filter(|p| p.state != 'Z')
        .collect()
}

/// Live processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.pgrp == pgid).collect()
}

/// Live processes whose command line contains `needle`.
pub fn with_cmdline(needle: &str) -> Vec<Proc> {
    processes().into_iter().filter(|p| p.cmdline.contains(needle)).collect()
}

/// The real uid of a process (`/proc/<pid>/status`), `None` once it is gone.
pub fn uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// Whether this test process runs as root.
pub fn is_root() -> bool {
    uid(std::process::id()) == Some(0)
}

/// Whether `pid` is a live process.
pub fn alive(pid: i32) -> bool {
    processes().iter().any(|p| p.pid == pid)
}

/// A `kB` field (`VmRSS:`, `Pss:`) of `/proc/<pid>/<file>`, in KiB; 0 when unreadable.
pub fn kib_field(pid: i32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The process's resident set, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    kib_field(pid, "status", "VmRSS:")
}

/// The resident sets of `parent`'s children (a control server's Kilo processes), in MiB.
pub fn children_rss_mib(parent: i32) -> u64 {
    processes().into_iter().filter(|p| p.ppid == parent).map(|p| rss_kib(p.pid)).sum::<u64>() / 1024
}

/// The process's proportional set (shared pages divided among their users), in KiB.
pub fn pss_kib(pid: i32) -> u64 {
    kib_field(pid, "smaps_rollup", "Pss:")
}

/// The process's CPU time (user + system), in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the stat line, 12 and 13 after the name.
    tick(11) + tick(12)
}
