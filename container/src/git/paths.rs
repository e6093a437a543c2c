//! Paths under `WORKSPACE_ROOT`, each checked to stay inside it after symlinks are resolved.
//! Ids are validated before they get here; this is the second wall, for a symlink planted in
//! the workspace or a validation bug.

use std::path::{Component, Path, PathBuf};

/// The folders on an agent's way to its checkout and to the rig's clone (the workspace,
/// `rigs/`, `rigs/<rig>`, `worktrees/`): every uid may enter them, none may list them.
pub const TRAVERSABLE: u32 = 0o711;
/// A process's run folder: its owner's bits; `sandbox::give` makes it its uid's alone (0700).
const PRIVATE: u32 = 0o700;

#[derive(Debug, Clone)]
pub struct WorkspacePaths {
    root: PathBuf,
}

impl WorkspacePaths {
    /// Creates the root if needed and remembers its canonical form.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        crate::sandbox::at_least(&root, TRAVERSABLE)?;
        Ok(Self { root })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rigs/<rig>/repo`
    pub fn repo(&self, rig_id: &str) -> Result<PathBuf, String> {
        Ok(self.rig_dir(rig_id)?.join("repo"))
    }

    /// `rigs/<rig>/worktrees/<dir_name>`
    pub fn worktree(&self, rig_id: &str, dir_name: &str) -> Result<PathBuf, String> {
        single_component(dir_name)?;
        let worktrees = self.rig_dir(rig_id)?.join("worktrees");
        self.ensure_dir_inside(&worktrees, TRAVERSABLE)?;
        Ok(worktrees.join(dir_name))
    }

    /// `rigs/<rig>/refinery`: the refinery's worktree, detached on the default branch.
    pub fn refinery(&self, rig_id: &str) -> Result<PathBuf, String> {
        Ok(self.rig_dir(rig_id)?.join("refinery"))
    }

    /// A private folder for one supervised process's HOME, TMPDIR and Kilo config:
    /// `run/<name>` (outside every worktree, so an agent never commits it).
    pub fn run_dir(&self, name: &str) -> Result<PathBuf, String> {
        single_component(name)?;
        let dir = self.root.join("run").join(name);
        self.ensure_dir_inside(&dir, PRIVATE)?;
        Ok(dir)
    }

    fn rig_dir(&self, rig_id: &str) -> Result<PathBuf, String> {
        single_component(rig_id)?;
        self.ensure_dir_inside(&self.root.join("rigs"), TRAVERSABLE)?;
        let dir = self.root.join("rigs").join(rig_id);
        self.ensure_dir_inside(&dir, TRAVERSABLE)?;
        Ok(dir)
    }

    /// Creates `dir`, checks that its resolved form is under the root, and gives it at least
    /// the permission bits `mode` (set explicitly: whatever umask the server inherited).
    fn ensure_dir_inside(&self, dir: &Path, mode: u32) -> Result<(), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let resolved =
            dir.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        if !resolved.starts_with(&self.root) {
            return Err(format!("{} resolves outside the workspace", dir.display()));
        }
        crate::sandbox::at_least(&resolved, mode)
            .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))
    }
}

/// A name that is exactly one normal path component.
fn single_component(name: &str) -> Result<(), String> {
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err(format!("'{name}' is not a single path component")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = WorkspacePaths::new(tmp.path()).expect("root");
        let repo = p.repo("rig1").expect("repo path");
        assert!(repo.starts_with(p.root()));
        assert!(repo.ends_with("rigs/rig1/repo"));
        let wt = p.worktree("rig1", "polecat~toast~abc").expect("worktree path");
        assert!(wt.ends_with("rigs/rig1/worktrees/polecat~toast~abc"));
        for bad in ["..", "../x", "a/b", "/etc", ""] {
            assert!(p.repo(bad).is_err(), "{bad}");
            assert!(p.worktree("rig1", bad).is_err(), "{bad}");
            assert!(p.run_dir(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_way_to_a_checkout_is_enterable_by_every_uid() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("ws");
        std::fs::create_dir(&root).expect("root");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let p = WorkspacePaths::new(&root).expect("root");
        p.worktree("rig1", "b").expect("worktree path");
        let mode = |rel: &str| {
            std::fs::metadata(root.join(rel)).expect("meta").permissions().mode() & 0o777
        };
        assert_eq!(mode(""), 0o711);
        for dir in ["rigs", "rigs/rig1", "rigs/rig1/worktrees"] {
            assert_eq!(mode(dir) & 0o711, 0o711, "{dir}");
        }
    }

    #[test]
    fn a_symlink_out_of_the_workspace_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        let p = WorkspacePaths::new(tmp.path()).expect("root");
        std::fs::create_dir_all(tmp.path().join("rigs")).expect("rigs");
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("rigs/evil")).expect("symlink");
        let err = p.repo("evil").expect_err("escapes");
        assert!(err.contains("outside the workspace"), "{err}");
    }
}
