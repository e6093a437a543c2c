//! Who a Kilo process runs as, and the folders only it may enter.
//!
//! When the control server runs as root (PID 1 in the image, `scripts/dev` as root) and
//! `AGENT_ISOLATION` is not `off`, every Kilo process gets its own unprivileged uid from
//! `AGENT_UID_BASE .. AGENT_UID_BASE + AGENT_UID_COUNT`, with the same number as its only group.
//! Its private folder (HOME, TMPDIR, Kilo config, tool key) and its agent's checkout belong to
//! that uid with mode 0700. So an agent's shell can read neither another agent's files nor
//! another process's `/proc/<pid>/environ` (the kernel allows that only to the same uid or
//! root), nor the control server's.
//!
//! A uid goes back to the range only once no process of it is left: when its Kilo process has
//! exited, whatever the agent started in the background (even in a new session, out of the
//! process group) is killed first.
//!
//! The refinery's quality gates run agent-written code too (a `cargo test` of the merged tree):
//! each merge with gates leases a uid of its own from the same range, the refinery worktree is
//! lent to it for the gates ([`give`]) and taken back after ([`take_back`]), once every process
//! of that uid is gone ([`kill_uid`]); see `git/merge.rs`.
//!
//! Not root: everything runs as the server's own uid, `/health` says `isolation: "none"` and
//! the server warns at start-up.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::process::procfs;

/// Uids handed to Kilo processes. `None` inside: isolation is off.
pub struct Uids {
    range: Option<(u32, u32)>,
    used: Mutex<BTreeSet<u32>>,
}

/// One uid, held by one Kilo process (or one merge's gates). Dropping it kills what is left of
/// that uid and returns it.
pub struct UidLease {
    pub uid: u32,
    uids: Arc<Uids>,
}

impl std::fmt::Debug for UidLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UidLease({})", self.uid)
    }
}

impl Uids {
    /// Isolation by uid when we are root and it is not turned off.
    pub fn new(enabled: bool, base: u32, count: u32) -> Arc<Self> {
        let root = nix::unistd::geteuid().is_root();
        Arc::new(Self {
            range: (enabled && root && count > 0).then_some((base, base.saturating_add(count))),
            used: Mutex::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.range.is_some()
    }

    /// `/health`'s name for the isolation in force.
    pub fn mode(&self) -> &'static str {
        if self.enabled() {
            "uid"
        } else {
            "none"
        }
    }

    /// A free uid (`Ok(None)` when isolation is off). A uid that still has processes (left by
    /// a crash of ours) is skipped.
    pub fn lease(self: &Arc<Self>) -> Result<Option<UidLease>, String> {
        let Some((start, end)) = self.range else { return Ok(None) };
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let busy = processes_by_uid();
        let uid = (start..end)
            .find(|u| !used.contains(u) && !busy.contains(u))
            .ok_or_else(|| format!("all {} agent uids are in use", end - start))?;
        used.insert(uid);
        Ok(Some(UidLease { uid, uids: self.clone() }))
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        kill_uid(self.uid);
        self.uids.used.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.uid);
    }
}

/// Hands `path` (and everything under it) to `uid` (group `uid`), the top with mode 0700.
/// Without a uid it only sets the mode.
pub fn give(path: &Path, uid: Option<u32>) -> std::io::Result<()> {
    if let Some(uid) = uid {
        chown_tree(path, uid, uid)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Takes `path` (and everything under it) back from the uid it was lent to: it becomes the
/// server's own again (mode 0700 at the top). Call it only once no process of that uid is left
/// ([`kill_uid`]), so nothing can swap a folder for a symlink while we walk.
pub fn take_back(path: &Path) -> std::io::Result<()> {
    chown_tree(path, nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Symlinks are changed themselves (`lchown`), never followed. A file with more than one link
/// is left as it is: nothing we hand out makes hard links, so one is a link planted by the
/// tree's last owner, maybe to a file outside the tree that is not its own (where the kernel's
/// `fs.protected_hardlinks` is off), which the next owner must not get.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    walk(path, &mut |p, meta| {
        if !meta.is_dir() && meta.nlink() > 1 {
            return Ok(());
        }
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
    })
}

/// Calls `visit` on `path` and everything under it, without following symlinks.
fn walk(
    path: &Path,
    visit: &mut impl FnMut(&Path, &std::fs::Metadata) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    visit(path, &meta)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), visit)?;
        }
    }
    Ok(())
}

/// Adds the permission bits `extra` to `path`'s mode.
fn add_mode(path: &Path, meta: &std::fs::Metadata, extra: u32) -> std::io::Result<()> {
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode((meta.permissions().mode() & 0o777) | extra),
    )
}

/// Gives `path` at least the permission bits `mode` (adds the missing ones, removes none).
pub fn at_least(path: &Path, mode: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & mode == mode {
        return Ok(());
    }
    add_mode(path, &meta, mode)
}

/// Makes `dir` enterable (not listable) by every uid: mode 0711, for the folders an agent's
/// path goes through (the workspace root, `run/`).
fn traversable(dir: &Path) -> std::io::Result<()> {
    at_least(dir, 0o711)
}

/// Repairs the modes of a workspace made by an earlier run (maybe under a umask of 077, which
/// left `rigs/` and the clones closed to the agents' uids): every folder on an agent's way to
/// its checkout becomes enterable, and each rig's clone readable. Returns what it repaired.
pub fn repair_rigs(workspace: &Path) -> std::io::Result<Vec<String>> {
    let mut repaired = Vec::new();
    let rigs = workspace.join("rigs");
    let open = |dir: &Path, repaired: &mut Vec<String>| -> std::io::Result<()> {
        let mode = std::fs::symlink_metadata(dir)?.permissions().mode();
        if mode & 0o711 != 0o711 {
            traversable(dir)?;
            repaired.push(format!("{} (was {:o})", dir.display(), mode & 0o777));
        }
        Ok(())
    };
    if !rigs.is_dir() {
        return Ok(repaired);
    }
    open(&rigs, &mut repaired)?;
    for entry in std::fs::read_dir(&rigs)? {
        let rig = entry?.path();
        if !std::fs::symlink_metadata(&rig)?.is_dir() {
            continue;
        }
        open(&rig, &mut repaired)?;
        let worktrees = rig.join("worktrees");
        if worktrees.is_dir() {
            open(&worktrees, &mut repaired)?;
        }
        let repo = rig.join("repo");
        if std::fs::symlink_metadata(&repo)
            .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o005 != 0o005)
        {
            readable_tree(&repo)?;
            repaired.push(format!("{} (made readable)", repo.display()));
        }
    }
    Ok(repaired)
}

/// Opens the way to the agents' folders for their uids: every folder above the workspace must
/// be enterable by others (refused with a clear message if not; it is not ours to change), the
/// workspace and `run/` become enterable but not listable (0711), and the tool files readable.
pub fn open_paths(workspace: &Path, tools: &Path) -> Result<(), String> {
    let root =
        workspace.canonicalize().map_err(|e| format!("workspace {}: {e}", workspace.display()))?;
    for dir in root.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) is not enterable by the agents' uids, so they cannot reach the workspace {}: make it 0711 or more open, or set AGENT_ISOLATION=off",
                dir.display(),
                mode & 0o777,
                root.display()
            ));
        }
    }
    let fail = |dir: &Path, e: std::io::Error| {
        format!("cannot open {} to the agents' uids: {e}", dir.display())
    };
    traversable(&root).map_err(|e| fail(&root, e))?;
    let run = root.join("run");
    std::fs::create_dir_all(&run).map_err(|e| fail(&run, e))?;
    traversable(&run).map_err(|e| fail(&run, e))?;
    for repaired in repair_rigs(&root).map_err(|e| fail(&root.join("rigs"), e))? {
        tracing::warn!(path = %repaired, "opened to the agents' uids (left closed by an earlier run)");
    }
    readable_tree(tools).map_err(|e| fail(tools, e))
}

/// Adds read (and, on folders, enter) permission for everyone under `path`.
pub fn readable_tree(path: &Path) -> std::io::Result<()> {
    walk(path, &mut |p, meta| {
        if meta.file_type().is_symlink() {
            Ok(())
        } else {
            add_mode(p, meta, if meta.is_dir() { 0o555 } else { 0o444 })
        }
    })
}

/// The real uids of every process now (read from `/proc/<pid>/status`).
fn processes_by_uid() -> BTreeSet<u32> {
    pids_with_uid(|_| true).into_iter().map(|(_, uid)| uid).collect()
}

fn pids_with_uid(filter: impl Fn(u32) -> bool) -> Vec<(i32, u32)> {
    procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            let uid = procfs::status_field(pid, "Uid")?.parse().ok()?;
            filter(uid).then_some((pid, uid))
        })
        .collect()
}

/// SIGKILLs every process of `uid`, a few rounds (a process can fork while we look). True
/// when none is left alive (a killed process waiting to be reaped, a zombie, runs nothing).
pub fn kill_uid(uid: u32) -> bool {
    for _ in 0..10 {
        let alive: Vec<i32> = pids_with_uid(|u| u == uid)
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|pid| {
                !matches!(procfs::status_field(*pid, "State").as_deref(), None | Some("Z" | "X"))
            })
            .collect();
        if alive.is_empty() {
            return true;
        }
        for pid in alive {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_hands_out_no_uid() {
        let uids = Uids::new(false, 20_000, 10);
        assert!(!uids.enabled());
        assert_eq!(uids.mode(), "none");
        assert!(uids.lease().expect("no error").is_none());
    }

    #[test]
    fn leases_are_distinct_and_come_back() {
        let uids = Uids::new(true, 3_000_000, 2);
        if !uids.enabled()
            && !gastown_e2e::skip::needs_root(
                "sandbox::tests::leases_are_distinct_and_come_back",
                "uids are handed out only by a root server",
            )
        {
            return;
        }
        let a = uids.lease().expect("a").expect("uid");
        let b = uids.lease().expect("b").expect("uid");
        assert_ne!(a.uid, b.uid);
        assert!(uids.lease().is_err(), "the range is exhausted");
        let freed = a.uid;
        drop(a);
        assert_eq!(uids.lease().expect("again").expect("uid").uid, freed);
    }

    #[test]
    fn give_sets_owner_and_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("home");
        std::fs::create_dir_all(dir.join("sub")).expect("dirs");
        std::fs::write(dir.join("sub/f"), "x").expect("file");
        let root = nix::unistd::geteuid().is_root();
        give(&dir, root.then_some(3_000_001)).expect("give");
        let meta = std::fs::metadata(&dir).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        if root {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(dir.join("sub/f")).expect("meta").uid(), 3_000_001);
        }
    }

    #[test]
    fn a_workspace_closed_by_an_earlier_run_is_opened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rig = tmp.path().join("rigs/r1");
        for dir in ["rigs/r1/worktrees", "rigs/r1/repo/.git/objects"] {
            std::fs::create_dir_all(tmp.path().join(dir)).expect("dirs");
        }
        std::fs::write(rig.join("repo/.git/objects/pack"), "x").expect("file");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        set(&rig.join("repo/.git/objects/pack"), 0o600);
        for dir in [
            "rigs/r1/repo/.git/objects",
            "rigs/r1/repo/.git",
            "rigs/r1/repo",
            "rigs/r1/worktrees",
            "rigs/r1",
            "rigs",
        ] {
            set(&tmp.path().join(dir), 0o700);
        }

        let repaired = repair_rigs(tmp.path()).expect("repair");
        assert_eq!(repaired.len(), 4, "{repaired:?}");
        for dir in ["rigs", "rigs/r1", "rigs/r1/worktrees"] {
            assert_eq!(mode(&tmp.path().join(dir)), 0o711, "{dir}");
        }
        assert_eq!(mode(&rig.join("repo/.git/objects")), 0o755);
        assert_eq!(mode(&rig.join("repo/.git/objects/pack")), 0o644);
        assert!(repair_rigs(tmp.path()).expect("again").is_empty(), "nothing left to repair");
        assert!(repair_rigs(&tmp.path().join("none")).expect("no rigs yet").is_empty());
    }
}
