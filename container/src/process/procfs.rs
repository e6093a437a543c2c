//! This machine's processes, read from /proc.

/// The ids of the processes in /proc now.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// The first value of a `/proc/<pid>/status` line (`Uid`: the real uid, `VmRSS`: kB), or
/// `None` for a process that is gone or a field it does not have.
pub fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
    value.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        assert!(pids().contains(&me));
        assert!(status_field(me, "VmRSS")
            .and_then(|kb| kb.parse::<u64>().ok())
            .is_some_and(|kb| kb > 0));
        assert_eq!(status_field(me, "Uid"), Some(nix::unistd::getuid().as_raw().to_string()));
        assert_eq!(status_field(me, "NoSuchField"), None);
    }
}
