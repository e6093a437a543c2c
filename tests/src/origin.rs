//! Local origin repositories for agents to clone from and push to.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Origin {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Origin {
    /// A bare repository whose `main` has one commit with a README.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let seed = dir.path().join("seed");
        let path = dir.path().join("origin.git");
        std::fs::create_dir_all(&seed).expect("seed dir");
        git(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("README.md"), "# test repo\n").expect("readme");
        git(&seed, &["add", "README.md"]);
        git(
            &seed,
            &[
                "-c",
                "user.name=seed",
                "-c",
                "user.email=seed@test",
                "commit",
                "-q",
                "-m",
                "initial",
            ],
        );
        let out = Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&seed)
            .arg(&path)
            .output()
            .expect("clone");
        assert!(out.status.success());
        // Agents push here under their own uids, as to any remote that accepts them: every uid
        // may write, and what one writes the next may extend.
        git(&path, &["config", "core.sharedRepository", "0777"]);
        crate::set_mode(dir.path(), 0o755);
        let out = Command::new("chmod").args(["-R", "a+rwX"]).arg(&path).output().expect("chmod");
        assert!(out.status.success());
        Self { path, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// The origin's branches.
    pub fn branches(&self) -> Vec<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args(["for-each-ref", "--format=%(refname:short)", "refs/heads/"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// `git log` of a branch in the origin: `<author name>|<subject>` per commit, or None.
    pub fn log(&self, branch: &str) -> Option<Vec<String>> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args(["log", "--format=%an|%ae|%s", branch, "--"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }
}

impl Default for Origin {
    fn default() -> Self {
        Self::new()
    }
}
