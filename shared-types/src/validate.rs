//! Validation of everything that later becomes a path, a git argument, a ref or an environment
//! variable. Both the Worker and the container run these checks, so a request the Worker accepts
//! is one the container accepts too.
//!
//! Every function returns `Err(reason)` with a message fit for a 400 response; none of them echo
//! a value that might be a secret (URLs with credentials, environment values).

use serde::{Deserialize, Serialize};

/// One problem with one field of a request, as listed in a 400 response's `issues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationIssue {
    pub field: String,
    pub message: String,
}

impl ValidationIssue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Every problem with one request, collected so a client can fix them all at once.
#[derive(Debug, Default)]
pub struct Issues(Vec<ValidationIssue>);

impl Issues {
    /// Records `r`'s problem, if any, under `field`.
    pub fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(message) = r {
            self.0.push(ValidationIssue::new(field, message));
        }
    }

    /// The list itself, for checks that add several issues at once (`env_vars`).
    pub fn list(&mut self) -> &mut Vec<ValidationIssue> {
        &mut self.0
    }

    pub fn into_result(self) -> Result<(), Vec<ValidationIssue>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// What the validating side allows beyond the always-safe forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidationPolicy {
    /// Accept `file:///absolute/path` git URLs. Only for local development and tests: in a
    /// deployed container a local URL would let a caller read any repository on the disk.
    pub allow_local_repos: bool,
}

pub const MAX_ID_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_BRANCH_LEN: usize = 200;
pub const MAX_GIT_URL_LEN: usize = 2048;
pub const MAX_ENV_NAME_LEN: usize = 128;
pub const MAX_ENV_VALUE_LEN: usize = 32 * 1024;
pub const MAX_ENV_VARS: usize = 64;

/// Ids of towns, rigs, agents and beads: UUIDs in practice, but any short token of ASCII
/// letters, digits, `-` and `_` is accepted. Ids become path components, so `.`, `/` and
/// anything else that could climb out of a folder is refused.
pub fn id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!("must be at most {MAX_ID_LEN} characters"));
    }
    if value.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err("may contain only ASCII letters, digits, '-' and '_'".into());
    }
    Ok(())
}

/// An agent's name (`toast`, `nux-2`): the same alphabet as ids, shorter, since it appears in
/// branch names and git author names.
pub fn agent_name(value: &str) -> Result<(), String> {
    id(value)?;
    if value.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    Ok(())
}

/// A branch name, by git's ref rules (`git check-ref-format --branch`) plus our own:
/// no leading `-` (it would read as an option), ASCII only, at most [`MAX_BRANCH_LEN`] bytes.
pub fn branch(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_BRANCH_LEN {
        return Err(format!("must be at most {MAX_BRANCH_LEN} characters"));
    }
    if value.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if value == "@" || value == "HEAD" {
        return Err("must not be '@' or 'HEAD'".into());
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!("must not contain {}", describe_char(c)));
    }
    if let Some(c) =
        value.chars().find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!("must not contain '{c}'"));
    }
    if value.contains("..") {
        return Err("must not contain '..'".into());
    }
    if value.contains("@{") {
        return Err("must not contain '@{'".into());
    }
    if value.contains("//") || value.starts_with('/') || value.ends_with('/') {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    if value.ends_with('.') {
        return Err("must not end with '.'".into());
    }
    for component in value.split('/') {
        if component.starts_with('.') {
            return Err("no path component may start with '.'".into());
        }
        if component.ends_with(".lock") {
            return Err("no path component may end with '.lock'".into());
        }
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_ascii_control() {
        format!("control character U+{:04X}", c as u32)
    } else {
        "non-ASCII characters".into()
    }
}

/// The branch an agent works on: `polecat/<name>/<first 8 characters of the bead id>`.
pub fn polecat_branch(name: &str, bead_id: &str) -> String {
    let prefix: String = bead_id.chars().filter(|c| *c != '-').take(8).collect();
    format!("polecat/{name}/{prefix}")
}

/// The folder name of a branch's worktree: `/` becomes `~`. `~` can never occur in a valid
/// branch name, so the mapping is one-to-one (two branches never share a folder), and the
/// result is a single path component. Call only with a name that passed [`branch`].
pub fn branch_dir_name(branch: &str) -> String {
    branch.replace('/', "~")
}

/// The kinds of git remote we clone from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitUrlKind {
    Https,
    /// `ssh://[user@]host[:port]/path`
    Ssh,
    /// `user@host:path`, the scp-like form GitHub shows.
    ScpLike,
    /// `file:///absolute/path`, only with [`ValidationPolicy::allow_local_repos`].
    LocalFile,
    /// `http://` on a loopback host (a forge stand-in in local dev and the tests), only with
    /// [`ValidationPolicy::allow_local_repos`].
    LocalHttp,
}

/// A git remote URL. Refused: transports that run commands (`ext::`, `fd::`), anything that
/// looks like an option, whitespace or control characters, plain `http`, `git://`, and local
/// paths unless the policy allows them. The error never contains the URL (it may carry a token).
pub fn git_url(value: &str, policy: ValidationPolicy) -> Result<GitUrlKind, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_GIT_URL_LEN {
        return Err(format!("must be at most {MAX_GIT_URL_LEN} characters"));
    }
    if value.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    if value.contains("::") {
        return Err("remote helper transports ('<transport>::<address>') are not allowed".into());
    }
    if let Some(rest) = value.strip_prefix("https://") {
        let host = authority_host(rest);
        return if host.is_empty() {
            Err("https URL has no host".into())
        } else {
            Ok(GitUrlKind::Https)
        };
    }
    if let Some(rest) = value.strip_prefix("http://") {
        if !policy.allow_local_repos || !is_loopback(authority_host(rest)) {
            return Err("http:// is only allowed to a loopback host on a local server".into());
        }
        return Ok(GitUrlKind::LocalHttp);
    }
    if let Some(rest) = value.strip_prefix("ssh://") {
        let host = authority_host(rest);
        if host.is_empty() || host.starts_with('-') {
            return Err("ssh URL has no valid host".into());
        }
        return Ok(GitUrlKind::Ssh);
    }
    if let Some(path) = value.strip_prefix("file://") {
        if !policy.allow_local_repos {
            return Err("local repositories (file://) are not allowed on this server".into());
        }
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err("file:// URL must hold an absolute path without '..'".into());
        }
        return Ok(GitUrlKind::LocalFile);
    }
    if value.contains("://") {
        return Err("only https://, ssh:// and user@host:path URLs are allowed".into());
    }
    // scp-like: user@host:path, where host has no '/' and path is not empty.
    if let Some((user_host, path)) = value.split_once(':') {
        if let Some((user, host)) = user_host.split_once('@') {
            let host_ok = !host.is_empty()
                && !host.starts_with('-')
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let user_ok = !user.is_empty()
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if host_ok && user_ok && !path.is_empty() && !path.starts_with('-') {
                return Ok(GitUrlKind::ScpLike);
            }
        }
    }
    Err("must be an https://, ssh:// or user@host:path git URL".into())
}

/// The host of `[userinfo@]host[:port]/path`.
fn authority_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.split(':').next().unwrap_or("")
}

fn is_loopback(host: &str) -> bool {
    // 127.0.0.0/8, written as four decimal numbers.
    let parts: Vec<&str> = host.split('.').collect();
    host == "localhost"
        || (parts.len() == 4
            && parts[0] == "127"
            && parts.iter().all(|p| p.parse::<u8>().is_ok() && !p.is_empty()))
}

/// `host[:port]` of an `http(s)://` URL, as git names it to a credential helper; `None` for
/// other URLs.
pub fn http_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host_port.is_empty()).then_some(host_port)
}

/// The URL with any `user:password@` removed, for logs and error messages.
pub fn redact_url(value: &str) -> String {
    if let Some((scheme, rest)) = value.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://***@{host}{path}");
        }
    }
    value.to_string()
}

/// Environment variable names: POSIX portable names, `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("environment variable name must not be empty".into());
    }
    if name.len() > MAX_ENV_NAME_LEN {
        return Err(format!(
            "environment variable names must be at most {MAX_ENV_NAME_LEN} characters"
        ));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("'{name}' is not a valid environment variable name"));
    }
    Ok(())
}

/// Variables a request may not set, because they would change which code the agent process
/// loads, where it keeps its state, or which identity it has.
const RESERVED_ENV_NAMES: &[&str] = &[
    "BASH_ENV",
    "ENV",
    "PROMPT_COMMAND",
    "IFS",
    "SHELL",
    "PATH",
    "HOME",
    "TMPDIR",
    "NODE_OPTIONS",
    "NODE_PATH",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_CONFIG",
    "GIT_EXEC_PATH",
    "GASTOWN_AGENT_ID",
    "GASTOWN_RIG_ID",
    "GASTOWN_TOWN_ID",
    "GASTOWN_API_URL",
];
const RESERVED_ENV_PREFIXES: &[&str] =
    &["LD_", "DYLD_", "XDG_", "BUN_", "KILO_", "OPENCODE_", "GIT_CONFIG_", "GASTOWN_CONTROL_"];

/// `Err` when a request may not set `name` (see [`RESERVED_ENV_NAMES`]). The message names the
/// variable, never its value. Names are compared case-insensitively.
pub fn env_var_allowed(name: &str) -> Result<(), String> {
    env_name(name)?;
    let upper = name.to_ascii_uppercase();
    let reserved = RESERVED_ENV_NAMES.contains(&upper.as_str())
        || RESERVED_ENV_PREFIXES.iter().any(|p| upper.starts_with(p));
    if reserved {
        return Err(format!("'{name}' may not be set: it would change how the agent process runs"));
    }
    Ok(())
}

/// Checks every entry of a request's `envVars`; issues are reported under `envVars.<NAME>`.
pub fn env_vars<'a>(
    vars: impl IntoIterator<Item = (&'a String, &'a String)>,
    issues: &mut Vec<ValidationIssue>,
) {
    let mut count = 0;
    for (name, value) in vars {
        count += 1;
        let field =
            || format!("envVars.{}", if env_name(name).is_ok() { name.as_str() } else { "?" });
        if let Err(e) = env_var_allowed(name) {
            issues.push(ValidationIssue::new(field(), e));
        }
        if value.len() > MAX_ENV_VALUE_LEN {
            issues.push(ValidationIssue::new(
                field(),
                format!("value must be at most {MAX_ENV_VALUE_LEN} bytes"),
            ));
        }
        if value.contains('\0') {
            issues.push(ValidationIssue::new(field(), "value must not contain NUL"));
        }
    }
    if count > MAX_ENV_VARS {
        issues.push(ValidationIssue::new("envVars", format!("at most {MAX_ENV_VARS} variables")));
    }
}

/// Free text (a prompt, a system prompt) of at most `max` bytes with no NUL.
pub fn text(value: &str, max: usize, allow_empty: bool) -> Result<(), String> {
    if !allow_empty && value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} bytes"));
    }
    if value.contains('\0') {
        return Err("must not contain NUL".into());
    }
    Ok(())
}

/// A model reference `provider/model` (Kilo's `-m` form) or a bare model name.
pub fn model(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 256 {
        return Err("must be 1 to 256 characters".into());
    }
    if value.starts_with('-') || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not start with '-' or contain whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: ValidationPolicy = ValidationPolicy { allow_local_repos: true };
    const REMOTE: ValidationPolicy = ValidationPolicy { allow_local_repos: false };

    #[test]
    fn ids_refuse_traversal_and_options() {
        for ok in ["rig-1", "0b6a9a2e-7c1d-4f43-9a55-0a0c1f9f2f10", "a_b"] {
            assert!(id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../etc", "a/b", "a.b", "-rf", "a b", "é", "a\0b", &"x".repeat(129)]
        {
            assert!(id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn branches_follow_git_ref_rules() {
        for ok in ["main", "polecat/toast/abcd1234", "feature/x-1_2", "v1.2"] {
            assert!(branch(ok).is_ok(), "{ok}");
        }
        let bad = [
            "", "-main", "a..b", "../x", "a/../b", "/a", "a/", "a//b", "a.lock", "a/b.lock", ".a",
            "a/.b", "a.", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a@{1}", "@",
            "HEAD", "a\nb", "a\u{7f}", "brünch",
        ];
        for b in bad {
            assert!(branch(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn polecat_branch_uses_bead_prefix() {
        let b = polecat_branch("toast", "0b6a9a2e-7c1d-4f43-9a55-0a0c1f9f2f10");
        assert_eq!(b, "polecat/toast/0b6a9a2e");
        assert!(branch(&b).is_ok());
        assert_eq!(polecat_branch("nux", "ab-cd"), "polecat/nux/abcd");
    }

    #[test]
    fn branch_dir_names_are_one_component_and_distinct() {
        let a = branch_dir_name("polecat/a-b/c");
        let b = branch_dir_name("polecat/a/b-c");
        assert_ne!(a, b);
        assert!(!a.contains('/'));
        assert_eq!(a, "polecat~a-b~c");
    }

    #[test]
    fn git_urls() {
        assert_eq!(git_url("https://github.com/o/r.git", REMOTE), Ok(GitUrlKind::Https));
        assert_eq!(
            git_url("https://x-access-token:abc@github.com/o/r.git", REMOTE),
            Ok(GitUrlKind::Https)
        );
        assert_eq!(git_url("ssh://git@github.com:22/o/r.git", REMOTE), Ok(GitUrlKind::Ssh));
        assert_eq!(git_url("git@github.com:o/r.git", REMOTE), Ok(GitUrlKind::ScpLike));
        assert_eq!(git_url("file:///tmp/origin.git", LOCAL), Ok(GitUrlKind::LocalFile));
        for bad in [
            "",
            "ext::sh -c touch% /tmp/pwned",
            "ext::foo",
            "fd::3",
            "-uhttps://x",
            "--upload-pack=x",
            "http://github.com/o/r",
            "git://github.com/o/r",
            "https://",
            "https:///path",
            "ssh://-oProxyCommand=x/r",
            "git@-oProxy:x",
            "https://github.com/o/r\n",
            "https://git hub.com/r",
            "/tmp/origin.git",
            "file:///tmp/../etc",
            "file://relative/path",
            "foo",
            "a@b:-x",
        ] {
            assert!(git_url(bad, LOCAL).is_err(), "{bad:?}");
        }
        assert!(git_url("file:///tmp/origin.git", REMOTE).is_err());
        for local in ["http://127.0.0.1:9/o/r.git", "http://localhost/r"] {
            assert_eq!(git_url(local, LOCAL), Ok(GitUrlKind::LocalHttp), "{local}");
            assert!(git_url(local, REMOTE).is_err(), "{local}");
        }
        for not_loopback in ["http://127.evil.example/r", "http://10.0.0.1/r", "http://[::2]/r"] {
            assert!(git_url(not_loopback, LOCAL).is_err(), "{not_loopback}");
        }
    }

    #[test]
    fn http_hosts_are_named_as_git_names_them() {
        assert_eq!(http_host("https://github.com/o/r.git"), Some("github.com"));
        assert_eq!(http_host("http://u:p@127.0.0.1:8080/r"), Some("127.0.0.1:8080"));
        assert_eq!(http_host("file:///tmp/r"), None);
        assert_eq!(http_host("git@github.com:o/r"), None);
    }

    #[test]
    fn git_url_errors_never_echo_the_url() {
        let secret = "https://user:s3cr3t@github.com/o/r\n";
        let err = git_url(secret, REMOTE).unwrap_err();
        assert!(!err.contains("s3cr3t"));
    }

    #[test]
    fn redaction_removes_credentials() {
        assert_eq!(redact_url("https://user:tok@github.com/o/r"), "https://***@github.com/o/r");
        assert_eq!(redact_url("https://github.com/o/r"), "https://github.com/o/r");
        assert_eq!(redact_url("git@github.com:o/r"), "git@github.com:o/r");
    }

    #[test]
    fn env_names_and_reserved_variables() {
        for ok in [
            "GITHUB_TOKEN",
            "_X",
            "a1",
            "GASTOWN_SESSION_TOKEN",
            "GIT_AUTHOR_NAME",
            "GIT_CONFIGURE",
        ] {
            assert!(env_var_allowed(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "A=B",
            "LD_PRELOAD",
            "ld_preload",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "PATH",
            "HOME",
            "NODE_OPTIONS",
            "BUN_JSC_X",
            "KILO_CONFIG",
            "OPENCODE_CONFIG",
            "XDG_CONFIG_HOME",
            "GASTOWN_AGENT_ID",
            "GASTOWN_CONTROL_SECRET",
            "BASH_ENV",
            "GIT_DIR",
            "GIT_CONFIG",
            "GIT_CONFIG_GLOBAL",
        ] {
            assert!(env_var_allowed(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_var_issues_never_contain_values() {
        let mut issues = Vec::new();
        let vars = [("LD_PRELOAD".to_string(), "/tmp/evil-secret.so".to_string())];
        env_vars(vars.iter().map(|(k, v)| (k, v)), &mut issues);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "envVars.LD_PRELOAD");
        assert!(!issues[0].message.contains("evil-secret"));
    }

    #[test]
    fn text_and_model() {
        assert!(text("hi", 10, false).is_ok());
        assert!(text("   ", 10, false).is_err());
        assert!(text("", 10, true).is_ok());
        assert!(text(&"x".repeat(11), 10, false).is_err());
        assert!(model("kilo/anthropic/claude").is_ok());
        assert!(model("-m").is_err());
        assert!(model("a b").is_err());
    }
}
