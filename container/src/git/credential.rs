//! A forge token for one git process the control server runs for a rig (a clone, fetch or push
//! as root), never for an agent's.
//!
//! The token goes into that process's environment only: not on disk, not in argv (both of
//! which an agent could read), and not in any URL. Git asks for it through a credential helper
//! given on the command's own config (`GIT_CONFIG_*`), an inline shell function that prints it
//! from the environment, only for the origin's host. The helpers of any other config are
//! switched off first, so no `store` or `cache` helper ever keeps it. Root's processes are
//! readable by root only (`/proc/<pid>/environ`), and agents run under other uids.

use std::borrow::Cow;
use std::fmt;
use std::process::Command;

/// Prints the credential when git asks for the origin's host; says nothing otherwise (a
/// redirect to another host gets no token).
const HELPER: &str = "!f() { test \"$1\" = get || exit 0; h=; \
     while IFS= read -r l && test -n \"$l\"; do case \"$l\" in host=*) h=${l#host=};; esac; done; \
     test \"$h\" = \"$GASTOWN_GIT_HOST\" || exit 0; \
     printf 'username=%s\\npassword=%s\\n' \"$GASTOWN_GIT_USERNAME\" \"$GASTOWN_GIT_TOKEN\"; }; f";

/// A token and where git may use it.
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredential {
    /// `host[:port]` of the origin, as git names it to a helper.
    host: String,
    username: &'static str,
    token: String,
}

impl fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCredential").field("host", &self.host).finish_non_exhaustive()
    }
}

impl GitCredential {
    /// The credential for `git_url` with a token of the forge `kind` (`github_app`, `token`,
    /// `gitlab`); `None` when the URL is not http(s), where a token has no use.
    pub fn new(kind: &str, token: String, git_url: &str) -> Option<Self> {
        let host = shared_types::validate::http_host(git_url)?.to_string();
        // GitHub takes an installation or personal token as the password of `x-access-token`;
        // GitLab takes a project, group or personal token as `oauth2`'s.
        let username = if kind == "gitlab" { "oauth2" } else { "x-access-token" };
        Some(Self { host, username, token })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Gives `cmd` (a git command) the credential for its origin.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "credential.helper")
            .env("GIT_CONFIG_VALUE_0", "")
            .env("GIT_CONFIG_KEY_1", "credential.helper")
            .env("GIT_CONFIG_VALUE_1", HELPER)
            .env("GASTOWN_GIT_HOST", &self.host)
            .env("GASTOWN_GIT_USERNAME", self.username)
            .env("GASTOWN_GIT_TOKEN", &self.token);
    }
}

/// The URL git uses for `git_url`: with a forge credential, a user and password written in the
/// URL itself (a rig stored before such URLs were refused) are dropped, since git would send
/// those and never ask for the credential. Without one, the URL as it is.
pub fn origin_url<'a>(git_url: &'a str, credential: Option<&GitCredential>) -> Cow<'a, str> {
    let Some((scheme, rest)) = git_url.split_once("://").filter(|_| credential.is_some()) else {
        return Cow::Borrowed(git_url);
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => Cow::Owned(format!("{scheme}://{host}{path}")),
        None => Cow::Borrowed(git_url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `git credential fill` answers for `host` with `cred` applied. Run through the
    /// process's one reaper: a test that waited for its own child could lose the exit status to
    /// the reaper other tests start.
    fn ask(cred: &GitCredential, host: &str) -> String {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("printf 'protocol=https\\nhost=%s\\n\\n' \"$1\" | git credential fill")
            .arg("sh")
            .arg(host)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", "/nonexistent");
        cred.apply(&mut cmd);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let reaper = crate::process::Reaper::global();
        let run =
            crate::process::command::run(&reaper, &mut cmd, std::time::Duration::from_secs(30));
        runtime.expect("a runtime").block_on(run).expect("git credential fill").output
    }

    #[test]
    fn git_gets_the_token_for_the_origins_host_only() {
        let cred = GitCredential::new("token", "ghp_secret".into(), "https://github.com/o/r.git")
            .expect("https");
        let filled = ask(&cred, "github.com");
        let lines: Vec<&str> = filled.lines().collect();
        assert!(lines.contains(&"username=x-access-token"), "{filled}");
        assert!(lines.contains(&"password=ghp_secret"), "{filled}");
        assert!(!ask(&cred, "evil.example").contains("ghp_secret"));
        assert!(!format!("{cred:?}").contains("ghp_secret"));
    }

    #[test]
    fn a_forge_credential_takes_the_place_of_one_in_the_url() {
        let stored = "https://x-access-token:ghp_old@github.com/o/r.git";
        let cred = GitCredential::new("token", "t".into(), stored);
        assert_eq!(origin_url(stored, cred.as_ref()), "https://github.com/o/r.git");
        assert_eq!(origin_url(stored, None), stored, "without a forge it keeps working as it was");
        assert_eq!(
            origin_url("https://github.com/o/r.git", cred.as_ref()),
            "https://github.com/o/r.git"
        );
    }

    #[test]
    fn gitlab_tokens_go_as_oauth2_and_non_http_urls_take_none() {
        let cred = GitCredential::new("gitlab", "glpat".into(), "https://gitlab.example:8443/g/r")
            .expect("https");
        let filled = ask(&cred, "gitlab.example:8443");
        assert!(filled.contains("username=oauth2\npassword=glpat"), "{filled}");
        assert!(GitCredential::new("token", "t".into(), "file:///tmp/r.git").is_none());
        assert!(GitCredential::new("token", "t".into(), "git@github.com:o/r").is_none());
    }
}
