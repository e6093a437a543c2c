//! Property tests of the validators both sides apply before anything touches a disk, a process
//! or a database: every input gets an answer (accepted, or an error message), never a panic,
//! and whatever is accepted keeps the invariants the rest of the code relies on.

use proptest::prelude::*;
use shared_types::validate::{self, ValidationPolicy};

/// Strings with the characters that matter to these checks (path, ref and URL syntax, control
/// characters, non-ASCII) well represented.
fn tricky() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a", "Z", "0", "-", "_", ".", "..", "/", "//", "~", "^", ":", "?", "*", "[", "\\", " ",
        "@", "@{", ".lock", "\u{1b}", "\0", "\n", "é", "ext::", "--", "file://", "https://",
        "ssh://", "git@", "%2e", "\u{202e}",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![tricky(), ".{0,80}"]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn accepted_ids_are_single_safe_path_components(s in any_text()) {
        if validate::id(&s).is_ok() {
            prop_assert!(!s.is_empty() && !s.starts_with('-'));
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{s:?}");
        }
        let _ = validate::agent_name(&s);
    }

    #[test]
    fn accepted_branches_follow_git_ref_rules(s in any_text()) {
        if validate::branch(&s).is_ok() {
            prop_assert!(!s.starts_with('-') && !s.contains("..") && !s.contains("@{") && !s.ends_with(".lock") && !s.ends_with('/'), "{s:?}");
            prop_assert!(s.chars().all(|c| c.is_ascii() && !c.is_ascii_control() && !" ~^:?*[\\".contains(c)), "{s:?}");
            // Its folder name is one path component.
            let dir = validate::branch_dir_name(&s);
            prop_assert!(!dir.contains('/') && dir != "." && dir != "..", "{dir:?}");
        }
    }

    #[test]
    fn accepted_git_urls_cannot_run_commands(s in any_text(), local in any::<bool>()) {
        if validate::git_url(&s, ValidationPolicy { allow_local_repos: local }).is_ok() {
            prop_assert!(!s.starts_with('-') && !s.contains("ext::") && !s.chars().any(char::is_control), "{s:?}");
            if !local {
                prop_assert!(!s.starts_with("file:"), "{s:?}");
            }
        }
        // Redaction never panics and never keeps a password.
        let shown = validate::redact_url(&s);
        if let Some(rest) = s.strip_prefix("https://") {
            if let Some((cred, _)) = rest.split_once('@') {
                if cred.contains(':') && !cred.contains('/') && cred.len() > 1 {
                    prop_assert!(!shown.contains(cred), "{shown:?} shows {cred:?}");
                }
            }
        }
    }

    #[test]
    fn env_names_and_texts_answer(name in any_text(), value in any_text(), max in 0usize..64, empty in any::<bool>()) {
        if validate::env_name(&name).is_ok() {
            prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{name:?}");
        }
        let _ = validate::env_var_allowed(&name);
        if validate::text(&value, max, empty).is_ok() {
            prop_assert!(value.len() <= max);
        }
        let _ = validate::model(&value);
    }
}
