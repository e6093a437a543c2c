//! Random tokens and constant-time comparison of secrets.

use subtle::ConstantTimeEq;

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails when the OS has no entropy source at all; a fixed token would be a
    // silent security hole, so refuse to go on.
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("no operating-system randomness: {e}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time that does not depend on where the inputs differ.
pub fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Erases the values of `names` from this process's original environment block, the memory
/// `/proc/<pid>/environ` shows (removing a variable with `std::env` does not touch it), then
/// removes the variables. Call once at start-up, after the settings are read and before any
/// thread exists. Returns how many values were erased.
///
/// The block's bounds are `env_start`/`env_end` of `/proc/self/stat`; it is rewritten through
/// `/proc/self/mem`, so no raw pointer is dereferenced here.
pub fn erase_from_environ(names: &[&str]) -> std::io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let (Some(start), Some(end)) = (field(50), field(51)) else {
        return Err(std::io::Error::other("no env_start/env_end in /proc/self/stat"));
    };
    if end <= start || end - start > 16 * 1024 * 1024 {
        return Err(std::io::Error::other("implausible environment bounds"));
    }
    let mut mem = std::fs::OpenOptions::new().read(true).write(true).open("/proc/self/mem")?;
    let mut block = vec![0u8; (end - start) as usize];
    mem.seek(SeekFrom::Start(start))?;
    mem.read_exact(&mut block)?;
    let mut erased = 0;
    let mut offset = 0;
    for entry in block.clone().split(|b| *b == 0) {
        let value_at = names
            .iter()
            .find_map(|n| entry.starts_with(format!("{n}=").as_bytes()).then_some(n.len() + 1));
        if let Some(v) = value_at {
            block[offset + v..offset + entry.len()].fill(b'x');
            erased += 1;
        }
        offset += entry.len() + 1;
    }
    if erased > 0 {
        mem.seek(SeekFrom::Start(start))?;
        mem.write_all(&block)?;
    }
    for name in names {
        std::env::remove_var(name);
    }
    Ok(erased)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn comparison() {
        assert!(equal("abc", "abc"));
        assert!(!equal("abc", "abd"));
        assert!(!equal("abc", "abcd"));
        assert!(!equal("", "a"));
    }
}
