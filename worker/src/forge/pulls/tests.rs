use super::*;

fn open_pr() -> Snapshot {
    Snapshot {
        open: true,
        merged: false,
        merge_commit: None,
        mergeable: Some(true),
        head_sha: "abc".into(),
        checks: vec![Check {
            name: "ci".into(),
            conclusion: Some("success".into()),
            summary: String::new(),
        }],
        reviews: Vec::new(),
        comments: Vec::new(),
    }
}

fn review(user: &str, state: &str, body: &str) -> Review {
    Review { user: user.into(), state: state.into(), body: body.into(), commit: "abc".into() }
}

fn state_of(step: &Step) -> Option<MergeState> {
    match step {
        Step::Done { state, .. } => Some(*state),
        _ => None,
    }
}

#[test]
fn repositories_are_named_from_https_urls() {
    let repo = |owner: &str, name: &str| {
        Some(Repo { owner: owner.into(), name: name.into(), path: format!("{owner}/{name}") })
    };
    assert_eq!(Repo::of("https://github.com/org/app.git"), repo("org", "app"));
    assert_eq!(Repo::of("https://ghe.example/org/app"), repo("org", "app"));
    assert_eq!(Repo::of("http://127.0.0.1:9/git/app.git"), repo("git", "app"));
    let nested = Repo::of("https://gitlab.example/group/sub/app.git").expect("a GitLab subgroup");
    assert_eq!((nested.owner.as_str(), nested.path.as_str()), ("sub", "group/sub/app"));
    assert_eq!(Repo::of("https://gitlab.example/group/../app.git"), None);
    assert_eq!(Repo::of("git@github.com:org/app.git"), None);
    assert_eq!(Repo::of("https://github.com/app"), None);
}

#[test]
fn a_green_approved_pull_request_is_merged_only_when_the_rig_says_so() {
    let s = MergeSettings { require_review: 1, ..MergeSettings::default() };
    assert_eq!(decide(&open_pr(), &s, "main"), Step::Wait, "no approval yet");
    let approved = Snapshot { reviews: vec![review("ann", "APPROVED", "")], ..open_pr() };
    assert_eq!(decide(&approved, &s, "main"), Step::Merge { sha: "abc".into() });
    let by_hand = MergeSettings { auto_merge: false, ..s.clone() };
    assert_eq!(decide(&approved, &by_hand, "main"), Step::Wait, "a person merges");
    let computing = Snapshot { mergeable: None, ..approved.clone() };
    assert_eq!(decide(&computing, &s, "main"), Step::Wait, "mergeability not known yet");
    let running = Snapshot {
        checks: vec![Check { name: "ci".into(), conclusion: None, summary: String::new() }],
        ..approved
    };
    assert_eq!(decide(&running, &s, "main"), Step::Wait, "checks still running");
}

#[test]
fn failed_checks_requested_changes_and_conflicts_send_the_work_back() {
    let s = MergeSettings::default();
    let failing = Snapshot {
        checks: vec![
            Check {
                name: "lint".into(),
                conclusion: Some("success".into()),
                summary: String::new(),
            },
            Check {
                name: "test".into(),
                conclusion: Some("failure".into()),
                summary: "2 tests failed".into(),
            },
        ],
        ..open_pr()
    };
    let Step::Done { state, detail, output, .. } = decide(&failing, &s, "main") else { panic!() };
    assert_eq!(state, MergeState::ChecksFailed);
    assert!(detail.contains("`test` (failure)") && !detail.contains("lint"), "{detail}");
    assert_eq!(output.as_deref(), Some("test: 2 tests failed"));

    let asked = Snapshot {
        reviews: vec![
            review("ann", "APPROVED", ""),
            review("bob", "CHANGES_REQUESTED", "rename x"),
        ],
        comments: vec!["src/a.rs: use a constant".into()],
        ..open_pr()
    };
    let Step::Done { state, output, .. } = decide(&asked, &s, "main") else { panic!() };
    assert_eq!(state, MergeState::ChangesRequested);
    assert_eq!(output.as_deref(), Some("bob: rename x\nsrc/a.rs: use a constant"));
    // A later approval by the same reviewer settles it; a comment-only review does not.
    let settled = Snapshot {
        reviews: vec![
            review("bob", "CHANGES_REQUESTED", "rename x"),
            review("bob", "COMMENTED", "looking"),
            review("bob", "APPROVED", "thanks"),
        ],
        ..open_pr()
    };
    assert_eq!(decide(&settled, &s, "main"), Step::Merge { sha: "abc".into() });

    // Changes asked on an earlier head wait for the reviewer's next word on this one.
    let answered = Snapshot { head_sha: "def".into(), ..asked };
    assert_eq!(decide(&answered, &s, "main"), Step::Wait, "not sent back, not merged either");

    let conflicting = Snapshot { mergeable: Some(false), ..open_pr() };
    assert_eq!(state_of(&decide(&conflicting, &s, "main")), Some(MergeState::Conflict));
}

#[test]
fn merged_by_anyone_or_closed_ends_it() {
    let s = MergeSettings::default();
    let merged =
        Snapshot { open: false, merged: true, merge_commit: Some("m1".into()), ..open_pr() };
    let Step::Done { state, commit, .. } = decide(&merged, &s, "main") else { panic!() };
    assert_eq!((state, commit.as_deref()), (MergeState::Merged, Some("m1")));
    let closed = Snapshot { open: false, ..open_pr() };
    assert_eq!(state_of(&decide(&closed, &s, "main")), Some(MergeState::Closed));
}
