//! A private git host on loopback: git's own smart HTTP server (`git http-backend`, run as a
//! CGI per request) behind a check that demands the forge token, as GitHub does for a private
//! repository (401 with a Basic challenge without it). Its repositories live in a folder only
//! the test's own uid may enter, so an agent can reach them only over HTTP. Every request is
//! recorded with whether it carried the token.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine;
use tokio::io::AsyncWriteExt;

/// One request git made to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct GitRequest {
    /// The repository's name (`app` for `/git/app.git/...`).
    pub repo: String,
    /// `git-upload-pack` (clone, fetch) or `git-receive-pack` (push).
    pub service: String,
    /// The Basic user and whether its password was the token; `None` without credentials.
    pub credential: Option<(String, bool)>,
    pub status: u16,
}

/// When a token stops being taken (`None`: never).
type Expiry = Option<std::time::Instant>;

#[derive(Clone, Default)]
pub(crate) struct GitHost {
    root: Arc<Option<tempfile::TempDir>>,
    /// The tokens git (and the REST routes) take: a token forge's own, and each one an app
    /// minted, until it expires.
    tokens: Arc<Mutex<Vec<(String, Expiry)>>>,
    requests: Arc<Mutex<Vec<GitRequest>>>,
}

impl GitHost {
    pub(crate) fn new() -> Self {
        Self {
            root: Arc::new(Some(tempfile::tempdir().expect("git host root"))),
            ..Self::default()
        }
    }

    pub(crate) fn root(&self) -> &Path {
        (*self.root).as_ref().map_or(Path::new("/nonexistent"), |d| d.path())
    }

    pub(crate) fn allow(&self, token: &str) {
        self.allow_until(token, None);
    }

    /// Takes `token` until `expires` (for ever with `None`).
    pub(crate) fn allow_until(&self, token: &str, expires: Option<std::time::Instant>) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.push((token.to_string(), expires));
        }
    }

    pub(crate) fn allows(&self, token: &str) -> bool {
        let now = std::time::Instant::now();
        self.tokens.lock().is_ok_and(|t| {
            t.iter().any(|(known, until)| known == token && until.is_none_or(|u| now < u))
        })
    }

    pub(crate) fn requests(&self) -> Vec<GitRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// A bare repository `<name>.git` holding `seed`'s branches.
    pub(crate) fn add_repo(&self, name: &str, seed: &Path) -> PathBuf {
        let path = self.root().join(format!("{name}.git"));
        let out = std::process::Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(seed)
            .arg(&path)
            .output()
            .expect("git clone --bare");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        path
    }
}

fn service_of(uri: &Uri) -> String {
    let query = uri.query().unwrap_or("");
    if let Some(s) = query.split('&').find_map(|kv| kv.strip_prefix("service=")) {
        return s.to_string();
    }
    uri.path().rsplit('/').next().unwrap_or("").to_string()
}

fn credential_of(headers: &HeaderMap, host: &GitHost) -> Option<(String, bool)> {
    let basic = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(basic).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), host.allows(password)))
}

/// `/git/<repo>.git/...`: authenticated, then served by `git http-backend`.
pub(crate) async fn serve(
    State(host): State<GitHost>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let credential = credential_of(&headers, &host);
    let service = service_of(&uri);
    let response = if credential.as_ref().is_some_and(|(_, ok)| *ok) {
        backend(&host, &method, &uri, &headers, body).await
    } else {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"gastown-forge\"")
            .body(Body::from("authentication required\n"))
            .unwrap_or_default()
    };
    if let Ok(mut requests) = host.requests.lock() {
        let repo =
            uri.path().strip_prefix("/git/").and_then(|p| p.split_once(".git/")).map(|(r, _)| r);
        let repo = repo.unwrap_or("").to_string();
        let status = response.status().as_u16();
        requests.push(GitRequest { repo, service, credential, status });
    }
    response
}

async fn backend(
    host: &GitHost,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let path_info = uri.path().strip_prefix("/git").unwrap_or("/");
    let child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", host.root())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path_info)
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "agent-of-the-town")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return Response::builder().status(500).body(Body::empty()).unwrap_or_default();
    };
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
    }
    let Ok(out) = child.wait_with_output().await else {
        return Response::builder().status(500).body(Body::empty()).unwrap_or_default();
    };
    cgi_response(&out.stdout)
}

/// A CGI answer (headers, a blank line, the body) as an HTTP response.
fn cgi_response(out: &[u8]) -> Response<Body> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)));
    let Some((end, body_at)) = split else {
        return Response::builder().status(502).body(Body::empty()).unwrap_or_default();
    };
    let mut response = Response::builder().status(200);
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            response = response.status(code);
        } else {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(out[body_at..].to_vec())).unwrap_or_default()
}
