//! How many agents this container can run at once.
//!
//! A `kilo serve` process holds 400-700 MB (shared/reference/kilo-cli.md), so a container runs
//! out of memory long before it runs out of anything else. The cap is `MAX_AGENTS` when set;
//! otherwise the container's memory limit (its cgroup's, else the machine's) less a reserve for
//! the control server, git and the gates, divided by the memory one agent takes: the measured
//! average of the Kilo processes running now, or `AGENT_MEMORY_BYTES` while there are none or
//! they are still small (a process grows during its first turn). Agents sharing a process
//! (`AGENTS_PER_SERVER` > 1) count for their share of it. A start past the cap is refused with
//! 429, and the RigDO keeps the bead queued until a later pass.

use std::path::Path;

/// The container's memory limit in bytes: cgroup v2 `memory.max`, cgroup v1
/// `memory.limit_in_bytes`, else the machine's `MemTotal`.
pub fn memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).ok();
    let v2 = read("/sys/fs/cgroup/memory.max").and_then(|s| parse_limit(&s));
    let v1 = || read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(|s| parse_limit(&s));
    let total = || read("/proc/meminfo").and_then(|s| meminfo_total(&s));
    v2.or_else(v1).or_else(total)
}

/// A cgroup limit file's value: a byte count, or `None` for "max" and the v1 "unlimited" value
/// (a page-rounded `i64::MAX`).
pub fn parse_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < (1 << 60)).then_some(n)
}

fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of a process in bytes (`VmRSS`), if it still exists.
pub fn rss(pid: u32) -> Option<u64> {
    let kb: u64 = crate::process::procfs::status_field(pid as i32, "VmRSS")?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory per agent: the larger of the configured figure and the measured average over the
/// running Kilo processes (`(rss, agents on it)`), so a cap is never raised by processes that
/// have not yet grown into their first turn.
pub fn per_agent(configured: u64, samples: &[(u64, usize)]) -> u64 {
    let (bytes, agents) = samples.iter().fold((0u64, 0usize), |(b, a), (rss, n)| (b + rss, a + n));
    let measured = if agents == 0 { 0 } else { bytes / agents as u64 };
    configured.max(measured).max(1)
}

/// The number of agents that fit: at least one, so a small container still works.
pub fn agents_that_fit(
    limit: Option<u64>,
    reserve: u64,
    per_agent: u64,
    fixed: Option<usize>,
) -> usize {
    if let Some(n) = fixed {
        return n.max(1);
    }
    let Some(limit) = limit else { return usize::MAX };
    (limit.saturating_sub(reserve) / per_agent.max(1)).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn limits_are_read_from_cgroup_files() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("4294967296\n"), Some(4 * 1024 * MIB));
        assert_eq!(parse_limit("9223372036854771712"), None, "cgroup v1 unlimited");
        assert_eq!(
            meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
    }

    #[test]
    fn the_cap_follows_memory_and_the_measured_agents() {
        // 4 GiB container, 512 MiB reserve, 700 MiB per agent: 5 agents.
        assert_eq!(agents_that_fit(Some(4096 * MIB), 512 * MIB, 700 * MIB, None), 5);
        // Measured agents larger than the estimate lower the cap; smaller ones do not raise it.
        assert_eq!(per_agent(700 * MIB, &[(900 * MIB, 1), (1100 * MIB, 1)]), 1000 * MIB);
        assert_eq!(per_agent(700 * MIB, &[(300 * MIB, 1)]), 700 * MIB);
        // A shared process counts for its agents' shares.
        assert_eq!(per_agent(100 * MIB, &[(1200 * MIB, 8)]), 150 * MIB);
        assert_eq!(agents_that_fit(Some(4096 * MIB), 512 * MIB, 1000 * MIB, None), 3);
        // A fixed cap wins; a tiny container still runs one agent.
        assert_eq!(agents_that_fit(Some(4096 * MIB), 0, MIB, Some(2)), 2);
        assert_eq!(agents_that_fit(Some(256 * MIB), 512 * MIB, 700 * MIB, None), 1);
        assert_eq!(agents_that_fit(None, 0, MIB, None), usize::MAX);
    }
}
