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
    let done = run(reaper, Command::new("sh").args(["-c", &script]), Duration::from_secs(30))
        .await
        .expect("origin");
    assert!(done.exit.success(), "{}", done.output);
    format!("file://{}", origin.display())
}

async fn sh(reaper: &Reaper, dir: &Path, script: &str) -> String {
    let done = run(
        reaper,
        Command::new("sh").arg("-c").arg(script).current_dir(dir),
        Duration::from_secs(30),
    )
    .await
    .expect("sh");
    assert!(done.exit.success(), "{script}: {}", done.output);
    done.output
}

/// The checkouts of these tests belong to the test's own uid, with HOME under the fixture.
fn owner() -> &'static Owner {
    static OWNER: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let home =
            std::env::temp_dir().join(format!("gastown-git-tests-home-{}", std::process::id()));
        std::fs::create_dir_all(&home).expect("home");
        Owner { uid: None, home }
    })
}

fn request<'a>(url: &'a str, branch: &'a str) -> WorktreeRequest<'a> {
    WorktreeRequest {
        owner: owner(),
        rig_id: "rig1",
        git_url: url,
        branch,
        default_branch: "main",
        author_name: "toast (gastown)",
        author_email: "toast@gastown.local",
        credential: None,
        merges_seen: 0,
    }
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
    let (wt, timings) =
        f.git.prepare(&request(&f.url, "polecat/toast/abc")).await.expect("prepare");
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
    // Each checkout borrows the clone's objects and keeps its own commits to itself.
    let repo = f.git.paths().repo("rig1").expect("repo");
    for wt in [&wa, &wb] {
        let alternates =
            std::fs::read_to_string(wt.join(".git/objects/info/alternates")).expect("alternates");
        assert!(alternates.trim().starts_with(repo.to_str().expect("utf8")), "{alternates}");
    }
    sh(&f.reaper, &wa, "echo a > a.txt && git add a.txt && git commit -qm a").await;
    let head_a = sh(&f.reaper, &wa, "git rev-parse HEAD").await;
    let in_b = run(
        &f.reaper,
        Command::new("git").arg("-C").arg(&wb).args(["cat-file", "-e", head_a.trim()]),
        Duration::from_secs(10),
    )
    .await
    .expect("git");
    assert!(!in_b.exit.success(), "b's checkout does not see a's unpushed commit");
    let in_clone = run(
        &f.reaper,
        Command::new("git").arg("-C").arg(&repo).args(["cat-file", "-e", head_a.trim()]),
        Duration::from_secs(10),
    )
    .await
    .expect("git");
    assert!(!in_clone.exit.success(), "the shared clone is not written by agents");
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

    // A restart that lost the folder: the branch as it was pushed is checked out again.
    sh(&f.reaper, &wt, "git push -q origin polecat/toast/abc").await;
    std::fs::remove_dir_all(&wt).expect("rm checkout");
    let restarted =
        GitManager::new(f.git.paths().clone(), f.reaper.clone(), Duration::from_secs(60));
    let (wt2, _) = restarted.prepare(&req).await.expect("after lost folder");
    assert!(
        wt2.join("work.txt").exists(),
        "the pushed branch with the agent's commit is checked out again"
    );

    // Crash that left a half-written folder that is not a worktree.
    std::fs::remove_dir_all(&wt2).expect("rm");
    std::fs::create_dir_all(wt2.join("junk")).expect("junk");
    let (wt3, _) = restarted.prepare(&req).await.expect("after junk folder");
    assert!(wt3.join("work.txt").exists());
    assert!(!wt3.join("junk").exists());
}

#[tokio::test]
async fn a_start_that_has_seen_a_newer_merge_never_reuses_an_older_fetch() {
    let f = fixture().await;
    let git = GitManager::new(f.git.paths().clone(), f.reaper.clone(), Duration::from_secs(60))
        .with_fetch_reuse(Duration::from_secs(3600));
    let start = |branch, merges_seen| WorktreeRequest { merges_seen, ..request(&f.url, branch) };
    git.prepare(&start("polecat/a/1", 1)).await.expect("first start");
    // A pull request merged on the forge: the origin moved behind the control server's back.
    let origin = Path::new(f.url.trim_start_matches("file://"));
    sh(&f.reaper, origin, "echo merged > merged.txt && git add merged.txt && git -c user.name=t -c user.email=t@t commit -qm merged").await;

    let (same, _) = git.prepare(&start("polecat/b/2", 1)).await.expect("second start");
    assert!(
        !same.join("merged.txt").exists(),
        "a start that knows of no new merge reuses the fetch"
    );
    let (after, _) = git.prepare(&start("polecat/c/3", 2)).await.expect("third start");
    assert!(after.join("merged.txt").exists(), "a start after the merge branches from it");
    // That fetch serves every start that has seen as many merges, and fewer.
    sh(&f.reaper, origin, "echo later > later.txt && git add later.txt && git -c user.name=t -c user.email=t@t commit -qm later").await;
    let (older, _) = git.prepare(&start("polecat/d/4", 1)).await.expect("fourth start");
    assert!(older.join("merged.txt").exists() && !older.join("later.txt").exists());
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
    let leftovers: Vec<_> = std::fs::read_dir(rig.parent().expect("parent"))
        .expect("rig dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.iter().all(|n| n != "repo" && !n.to_string_lossy().starts_with(".repo-clone")),
        "{leftovers:?}"
    );
}

#[test]
fn scrub_removes_credentials_from_git_output() {
    let url = "https://user:s3cret@example.com/o/r.git";
    let text = format!(
        "fatal: repository '{url}' not found; also https://x:tok@host/p and https://plain.host/p"
    );
    let clean = scrub(&text, url);
    assert!(!clean.contains("s3cret") && !clean.contains("tok@"), "{clean}");
    assert!(clean.contains("https://***@example.com/o/r.git"));
    assert!(clean.contains("https://plain.host/p"));
}

/// A bare origin (pushes to `main` must be accepted) and a helper to commit on one of its
/// branches from a scratch clone.
async fn bare_fixture() -> Fixture {
    let f = fixture().await;
    let bare = f._tmp.path().join("bare.git");
    let src = f.url.trim_start_matches("file://").to_string();
    sh(&f.reaper, f._tmp.path(), &format!("git clone -q --bare '{src}' '{}'", bare.display()))
        .await;
    Fixture { url: format!("file://{}", bare.display()), ..f }
}

async fn commit_on(f: &Fixture, branch: &str, file: &str, content: &str) {
    let scratch = f._tmp.path().join(format!("scratch-{}", branch.replace('/', "-")));
    let url = &f.url;
    let script = format!(
        "set -e; rm -rf '{s}'; git clone -q '{url}' '{s}'; cd '{s}'; (git checkout -q {branch} 2>/dev/null || git checkout -q -b {branch}); \
         echo {content} > {file}; git add {file}; git -c user.name=t -c user.email=t@t commit -q -m 'write {file}'; git push -q origin {branch}",
        s = scratch.display()
    );
    sh(&f.reaper, f._tmp.path(), &script).await;
}

fn job<'a>(f: &'a Fixture, branch: &'a str, gates: &'a [shared_types::MergeGate]) -> MergeJob<'a> {
    MergeJob {
        rig_id: "rig1",
        git_url: &f.url,
        default_branch: "main",
        branch,
        message: "Merge it (bead b1)",
        gates,
        delete_branch: true,
        gate_uid: None,
        credential: None,
    }
}

async fn origin_git(f: &Fixture, args: &str) -> String {
    sh(
        &f.reaper,
        f._tmp.path(),
        &format!("git -C '{}' {args}", f.url.trim_start_matches("file://")),
    )
    .await
    .trim()
    .to_string()
}

#[tokio::test]
async fn a_clean_branch_is_merged_pushed_and_deleted() {
    let f = bare_fixture().await;
    commit_on(&f, "polecat/a/1", "a.txt", "a").await;
    let out = f.git.merge(&job(&f, "polecat/a/1", &[])).await;
    assert_eq!(out.state, shared_types::MergeState::Merged, "{out:?}");
    let head = origin_git(&f, "rev-parse main").await;
    assert_eq!(out.commit.as_deref(), Some(head.as_str()));
    assert_eq!(
        origin_git(&f, "log -1 '--format=%an|%s' main").await,
        "Gastown Refinery|Merge it (bead b1)"
    );
    assert_eq!(
        origin_git(&f, "rev-list --count --merges main").await,
        "1",
        "--no-ff: a merge commit"
    );
    assert_eq!(
        origin_git(&f, "branch --list polecat/a/1").await,
        "",
        "the merged branch is deleted"
    );
}

#[tokio::test]
async fn a_conflict_changes_nothing_and_names_the_files() {
    let f = bare_fixture().await;
    commit_on(&f, "polecat/a/1", "same.txt", "a").await;
    commit_on(&f, "polecat/b/2", "same.txt", "b").await;
    assert_eq!(
        f.git.merge(&job(&f, "polecat/a/1", &[])).await.state,
        shared_types::MergeState::Merged
    );
    let before = origin_git(&f, "rev-parse main").await;
    let out = f.git.merge(&job(&f, "polecat/b/2", &[])).await;
    assert_eq!(out.state, shared_types::MergeState::Conflict, "{out:?}");
    assert!(out.detail.as_deref().is_some_and(|d| d.contains("same.txt")), "{out:?}");
    assert_eq!(origin_git(&f, "rev-parse main").await, before, "main is untouched");
    assert_ne!(
        origin_git(&f, "branch --list polecat/b/2").await,
        "",
        "the branch stays for the rework"
    );
    // The refinery worktree is clean for the next merge.
    commit_on(&f, "polecat/c/3", "c.txt", "c").await;
    assert_eq!(
        f.git.merge(&job(&f, "polecat/c/3", &[])).await.state,
        shared_types::MergeState::Merged
    );
}

#[tokio::test]
async fn a_failed_gate_keeps_its_output_and_pushes_nothing() {
    let f = bare_fixture().await;
    commit_on(&f, "polecat/a/1", "bad.txt", "x").await;
    let gates = [
        shared_types::MergeGate { command: "test -e README.md".into(), timeout_secs: 10 },
        shared_types::MergeGate { command: "if [ -e bad.txt ]; then echo found bad.txt; echo \"token=$CONTAINER_TOKEN\"; exit 4; fi".into(), timeout_secs: 10 },
    ];
    std::env::set_var("CONTAINER_TOKEN", "server-secret");
    let before = origin_git(&f, "rev-parse main").await;
    let out = f.git.merge(&job(&f, "polecat/a/1", &gates)).await;
    assert_eq!(out.state, shared_types::MergeState::GateFailed, "{out:?}");
    assert!(out.detail.as_deref().is_some_and(|d| d.contains("exit 4")), "{out:?}");
    let output = out.output.unwrap_or_default();
    assert!(output.contains("found bad.txt"), "{output}");
    assert!(
        !output.contains("server-secret"),
        "gates do not see the server's environment: {output}"
    );
    assert_eq!(origin_git(&f, "rev-parse main").await, before);
    // A gate that runs over its deadline fails too.
    let slow = [shared_types::MergeGate { command: "sleep 30".into(), timeout_secs: 1 }];
    let out = f.git.merge(&job(&f, "polecat/a/1", &slow)).await;
    assert_eq!(out.state, shared_types::MergeState::GateFailed, "{out:?}");
}

#[tokio::test]
async fn a_missing_branch_fails_clearly() {
    let f = bare_fixture().await;
    let out = f.git.merge(&job(&f, "polecat/none/1", &[])).await;
    assert_eq!(out.state, shared_types::MergeState::Failed);
    assert!(out.detail.as_deref().is_some_and(|d| d.contains("not found")), "{out:?}");
}

/// Another merge lands on main while this one runs its gates: the push is rejected, the merge
/// is done again on the new main, and both changes end on main.
#[tokio::test]
async fn a_push_rejected_because_main_moved_is_merged_again() {
    let f = bare_fixture().await;
    commit_on(&f, "polecat/a/1", "a.txt", "a").await;
    let t = f._tmp.path().display().to_string();
    let mover = format!(
        "if [ ! -e '{t}/moved' ]; then touch '{t}/moved' && git clone -q '{url}' '{t}/mover' && cd '{t}/mover' && echo m > m.txt && \
         git add m.txt && git -c user.name=t -c user.email=t@t commit -qm mover && git push -q origin main; fi",
        url = f.url
    );
    let gates = [shared_types::MergeGate { command: mover, timeout_secs: 30 }];
    let out = f.git.merge(&job(&f, "polecat/a/1", &gates)).await;
    assert_eq!(out.state, shared_types::MergeState::Merged, "{out:?}");
    let files = origin_git(&f, "ls-tree --name-only main").await;
    assert!(files.contains("a.txt") && files.contains("m.txt"), "{files}");
}

/// Processes whose command line contains `needle` and that still run (not zombies).
fn running_with(needle: &str) -> Vec<i32> {
    crate::process::procfs::pids()
        .into_iter()
        .filter(|pid| {
            !matches!(
                crate::process::procfs::status_field(*pid, "State").as_deref(),
                None | Some("Z" | "X")
            )
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Run as root with a gate uid (what the supervisor does when agents are isolated), the gates
/// run under that uid with no other group: agent-written code in a gate can neither read a
/// root-only file nor write outside the worktree nor signal the server, and what it leaves
/// running is killed with the gates. A gate that points the worktree's `.git` elsewhere does not
/// outlive its merge. A normal gate still reads the merged tree, runs git and writes build
/// output, and the merge is pushed; the worktree is root's again afterwards.
#[tokio::test]
async fn gates_run_under_the_merge_uid() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !gastown_e2e::skip::needs_root(
        "git::tests::gates_run_under_the_merge_uid",
        "gates run under their own uid only when the server is root",
    ) {
        return;
    }
    let f = bare_fixture().await;
    // The gate uid must be able to enter the folders above the workspace, as in the image.
    std::fs::set_permissions(f._tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let uids = crate::sandbox::Uids::new(true, 3_100_000, 4);
    let lease = uids.lease().expect("lease").expect("a uid");
    let ws = f.git.paths().root().to_path_buf();
    let secret = ws.join("root-secret");
    std::fs::write(&secret, "root-only-secret").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let outside = ws.join("rigs/rig1/written-by-a-gate");
    let tag = format!("gastown-gate-leftover-{}", std::process::id());
    commit_on(&f, "polecat/a/1", "a.txt", "a").await;

    let probe = format!(
        "echo uid=$(id -u) groups=$(id -G); \
         if cat '{secret}' 2>/dev/null; then echo READ; else echo denied-read; fi; \
         if touch '{outside}' 2>/dev/null; then echo WROTE; else echo denied-write; fi; \
         if kill -0 {me} 2>/dev/null; then echo SIGNALLED; else echo denied-signal; fi; \
         (setsid sh -c 'sleep 300; echo {tag}' > /dev/null 2>&1 &); \
         rm -f .git && echo 'gitdir: /nowhere' > .git; exit 3",
        secret = secret.display(),
        outside = outside.display(),
        me = std::process::id()
    );
    let gates = [shared_types::MergeGate { command: probe, timeout_secs: 30 }];
    let before = origin_git(&f, "rev-parse main").await;
    let out = f
        .git
        .merge(&MergeJob { gate_uid: Some(lease.uid), ..job(&f, "polecat/a/1", &gates) })
        .await;
    assert_eq!(out.state, shared_types::MergeState::GateFailed, "{out:?}");
    let output = out.output.unwrap_or_default();
    assert!(output.contains(&format!("uid={u} groups={u}\n", u = lease.uid)), "{output}");
    for denied in ["denied-read", "denied-write", "denied-signal"] {
        assert!(output.contains(denied), "{denied}: {output}");
    }
    assert!(
        !output.contains("root-only-secret")
            && !output.contains("READ")
            && !output.contains("WROTE")
            && !output.contains("SIGNALLED"),
        "{output}"
    );
    assert!(!outside.exists());
    assert!(running_with(&tag).is_empty(), "what the gate left running is killed with the gates");
    assert_eq!(origin_git(&f, "rev-parse main").await, before);

    let gates = [shared_types::MergeGate {
        command: "test -f a.txt && git diff --stat HEAD~1 | grep -q a.txt && git status --short && mkdir -p target && echo built > target/out \
                  && test \"$(stat -c %u .)\" = \"$(id -u)\" && touch \"$HOME/cache\" \"$TMPDIR/t\""
            .into(),
        timeout_secs: 30,
    }];
    let out = f
        .git
        .merge(&MergeJob { gate_uid: Some(lease.uid), ..job(&f, "polecat/a/1", &gates) })
        .await;
    assert_eq!(out.state, shared_types::MergeState::Merged, "{out:?}");
    assert_eq!(out.commit.as_deref(), Some(origin_git(&f, "rev-parse main").await.as_str()));
    assert!(origin_git(&f, "ls-tree --name-only main").await.contains("a.txt"));
    let refinery = f.git.paths().refinery("rig1").expect("refinery");
    for path in [
        refinery.clone(),
        refinery.join(".git"),
        refinery.join("a.txt"),
        refinery.join("target/out"),
    ] {
        assert_eq!(
            std::fs::symlink_metadata(&path).expect("meta").uid(),
            0,
            "{} is root's again",
            path.display()
        );
    }
    assert!(
        !ws.join(format!("run/gates-{}", lease.uid)).exists(),
        "the gates' HOME goes with the merge"
    );
}

fn branch_push<'a>(
    f: &'a Fixture,
    checkout: &'a Path,
    branch: &'a str,
) -> (String, BranchPush<'a>) {
    let source = format!("refs/heads/{branch}");
    let push = BranchPush {
        owner: owner(),
        rig_id: "rig1",
        checkout,
        source: "",
        branch,
        git_url: &f.url,
        credential: None,
    };
    (source, push)
}

#[tokio::test]
async fn an_agents_commits_are_pushed_for_it_through_the_rigs_clone() {
    let f = bare_fixture().await;
    let branch = "polecat/toast/p1";
    let (checkout, _) = f.git.prepare(&request(&f.url, branch)).await.expect("prepare");
    let (source, push) = branch_push(&f, &checkout, branch);
    let push = BranchPush { source: &source, ..push };

    let first = f.git.push_branch(&push).await;
    assert!(first.is_ok(), "a new branch equal to main is pushed: {first:?}");
    sh(&f.reaper, &checkout, "echo work > w.txt && git add w.txt && git commit -qm work").await;
    let pushed = f.git.push_branch(&push).await.expect("pushed");
    assert_eq!(origin_git(&f, &format!("rev-parse {branch}")).await, pushed.commit);
    assert_eq!(origin_git(&f, &format!("show {branch}:w.txt")).await, "work");
    // Pushed already: nothing to send, and no error.
    assert_eq!(f.git.push_branch(&push).await.expect("again").commit, pushed.commit);
    // The agent fetches from the rig's clone, and pushes (where it can) to the origin.
    let remotes =
        sh(&f.reaper, &checkout, "git remote get-url origin; git remote get-url --push origin")
            .await;
    let repo = f.git.paths().repo("rig1").expect("repo");
    assert_eq!(
        remotes.lines().collect::<Vec<_>>(),
        [repo.to_string_lossy().as_ref(), f.url.as_str()]
    );
}

#[tokio::test]
async fn a_push_behind_the_origin_is_refused_with_how_to_catch_up() {
    let f = bare_fixture().await;
    let branch = "polecat/toast/p2";
    let (checkout, _) = f.git.prepare(&request(&f.url, branch)).await.expect("prepare");
    commit_on(&f, branch, "theirs.txt", "theirs").await;
    sh(&f.reaper, &checkout, "echo mine > mine.txt && git add mine.txt && git commit -qm mine")
        .await;
    let (source, push) = branch_push(&f, &checkout, branch);
    let push = BranchPush { source: &source, ..push };
    match f.git.push_branch(&push).await {
        Err(GitError::Invalid(m)) => {
            assert!(m.contains("git fetch origin && git merge origin/polecat/toast/p2"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let missing = BranchPush { source: "refs/heads/nothing-here", ..push };
    assert!(
        matches!(f.git.push_branch(&missing).await, Err(GitError::Invalid(m)) if m.contains("commit your work first"))
    );
}
