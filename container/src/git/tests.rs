use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// An origin repository with one commit on `main`, made with the git CLI through the reaper
/// (nothing in this process may wait for a child behind the reaper's back).
async fn origin(reaper: &Reaper, dir: &Path) -> String {
    let origin = dir.join("origin");
    let script = format!(
        "set -e; git init -q -b main '{o}'; cd '{o}'; echo hello > README.md; git add README.md; \
         git -c user.name=t -c user.email=t@t commit -q -m init",
        o = origin.display()
    );
    let done = run(reaper, Command::new("sh").args(["-c", &script]), Duration::from_secs(30)).await.expect("origin");
    assert!(done.exit.success(), "{}", done.output);
    format!("file://{}", origin.display())
}

async fn sh(reaper: &Reaper, dir: &Path, script: &str) -> String {
    let done = run(reaper, Command::new("sh").arg("-c").arg(script).current_dir(dir), Duration::from_secs(30)).await.expect("sh");
    assert!(done.exit.success(), "{script}: {}", done.output);
    done.output
}

fn request<'a>(url: &'a str, branch: &'a str) -> WorktreeRequest<'a> {
    WorktreeRequest { rig_id: "rig1", git_url: url, branch, default_branch: "main", author_name: "toast (gastown)", author_email: "toast@gastown.local" }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    reaper: Arc<Reaper>,
    git: GitManager,
    url: String,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let reaper = Reaper::global();
    let url = origin(&reaper, tmp.path()).await;
    let paths = WorkspacePaths::new(&tmp.path().join("ws")).expect("workspace");
    let git = GitManager::new(paths, reaper.clone(), Duration::from_secs(60));
    Fixture { _tmp: tmp, reaper, git, url }
}

#[tokio::test]
async fn prepare_clones_and_checks_out_the_branch_from_default() {
    let f = fixture().await;
    let (wt, timings) = f.git.prepare(&request(&f.url, "polecat/toast/abc")).await.expect("prepare");
    assert!(timings.cloned);
    assert!(wt.join("README.md").exists());
    assert!(wt.ends_with("rigs/rig1/worktrees/polecat~toast~abc"));
    let head = sh(&f.reaper, &wt, "git rev-parse --abbrev-ref HEAD").await;
    assert_eq!(head.trim(), "polecat/toast/abc");
    let who = sh(&f.reaper, &wt, "git config user.name; git config user.email").await;
    assert_eq!(who.trim(), "toast (gastown)\ntoast@gastown.local");
    // The identity is the worktree's own: the shared clone has none.
    let repo = f.git.paths().repo("rig1").expect("repo");
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(&repo).args(["config", "user.name"]);
    let shared = run(&f.reaper, &mut cmd, Duration::from_secs(10)).await.expect("run");
    assert!(!shared.exit.success() || !shared.output.contains("toast"));
}

#[tokio::test]
async fn two_agents_on_one_rig_share_one_clone_even_when_concurrent() {
    let f = fixture().await;
    let (ra, rb) = (request(&f.url, "polecat/a/1"), request(&f.url, "polecat/b/2"));
    let (a, b) = tokio::join!(f.git.prepare(&ra), f.git.prepare(&rb));
    let (wa, ta) = a.expect("a");
    let (wb, tb) = b.expect("b");
    assert_ne!(wa, wb);
    assert_eq!(u8::from(ta.cloned) + u8::from(tb.cloned), 1, "cloned exactly once");
    let list = sh(&f.reaper, &f.git.paths().repo("rig1").expect("repo"), "git worktree list --porcelain | grep -c '^worktree'").await;
    assert_eq!(list.trim(), "3", "the clone plus two worktrees");
}

#[tokio::test]
async fn prepare_is_idempotent_after_crashes() {
    let f = fixture().await;
    let req = request(&f.url, "polecat/toast/abc");
    let (wt, _) = f.git.prepare(&req).await.expect("first");
    sh(&f.reaper, &wt, "echo work > work.txt && git add work.txt && git -c user.name=t -c user.email=t@t commit -q -m work").await;

    // Same call again: reused as is.
    let (again, t) = f.git.prepare(&req).await.expect("second");
    assert_eq!(again, wt);
    assert!(!t.cloned);

    // Crash that lost the folder: branch and .git/worktrees entry are left behind.
    std::fs::remove_dir_all(&wt).expect("rm worktree");
    let (wt2, _) = f.git.prepare(&req).await.expect("after lost folder");
    assert!(wt2.join("work.txt").exists(), "the branch with the agent's commit is checked out again");

    // Crash that left a half-written folder that is not a worktree.
    std::fs::remove_dir_all(&wt2).expect("rm");
    std::fs::create_dir_all(wt2.join("junk")).expect("junk");
    let (wt3, _) = f.git.prepare(&req).await.expect("after junk folder");
    assert!(wt3.join("work.txt").exists());
    assert!(!wt3.join("junk").exists());
}

#[tokio::test]
async fn a_broken_clone_is_replaced() {
    let f = fixture().await;
    let repo = f.git.paths().repo("rig1").expect("repo");
    std::fs::create_dir_all(repo.join("half")).expect("half clone");
    let (wt, t) = f.git.prepare(&request(&f.url, "b1")).await.expect("prepare");
    assert!(t.cloned);
    assert!(wt.join("README.md").exists());
}

#[tokio::test]
async fn a_missing_default_branch_is_invalid() {
    let f = fixture().await;
    let mut req = request(&f.url, "b1");
    req.default_branch = "nope";
    match f.git.prepare(&req).await {
        Err(GitError::Invalid(m)) => assert!(m.contains("nope"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_origin_fails_without_leaving_a_clone() {
    let f = fixture().await;
    let url = "file:///nonexistent/origin.git";
    let err = f.git.prepare(&request(url, "b1")).await.expect_err("no origin");
    assert!(matches!(err, GitError::Failed(_)), "{err:?}");
    let rig = f.git.paths().repo("rig1").expect("repo");
    assert!(!rig.exists());
    let leftovers: Vec<_> = std::fs::read_dir(rig.parent().expect("parent")).expect("rig dir").flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.iter().all(|n| n != "repo" && !n.to_string_lossy().starts_with(".repo-clone")), "{leftovers:?}");
}

#[test]
fn scrub_removes_credentials_from_git_output() {
    let url = "https://user:s3cret@example.com/o/r.git";
    let text = format!("fatal: repository '{url}' not found; also https://x:tok@host/p and https://plain.host/p");
    let clean = scrub(&text, url);
    assert!(!clean.contains("s3cret") && !clean.contains("tok@"), "{clean}");
    assert!(clean.contains("https://***@example.com/o/r.git"));
    assert!(clean.contains("https://plain.host/p"));
}
