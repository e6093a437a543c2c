//! Runs the built Worker under `wrangler dev` with a fresh `--persist-to` folder per test.
//!
//! [`WranglerDev::start`] starts `node_modules/.bin/wrangler dev` from the repository root in its
//! own process group, on port 0 (wrangler binds a free loopback port itself and prints it in its
//! `Ready on http://127.0.0.1:PORT` line, which the harness reads: no port is chosen in advance,
//! so none can be taken by another process in between), with every file wrangler writes (state,
//! logs, config) inside a temporary folder, and waits (with a deadline) for `/health`.
//! Dropping it kills the whole process group. The Worker must be built first
//! (`scripts/build-worker`); the harness never builds it, so no test times a build.
//!
//! Each instance runs on its own copy of wrangler.toml ([`write_config`]) that watches nothing
//! of the repository: wrangler reloads the Worker when a watched source or its config file
//! changes, and a reload drops every open connection of the running test.
//!
//! Secrets are passed through `--env-file` (not the command line): the internal API key, the
//! agent JWT secret and the container token are fixed per instance and exposed for tests, and
//! `ALLOW_LOCAL_REPOS=true` lets rigs use `file://` origins.

use crate::project::repo_root;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

pub const INTERNAL_KEY: &str = "test-internal-key";
pub const JWT_SECRET: &str = "test-jwt-secret";
pub const CONTAINER_TOKEN: &str = "test-container-token";

/// How long `wrangler dev` may take to answer `/health`.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// Per-request deadline of [`WranglerDev::call`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `wrangler dev`.
pub struct WranglerDev {
    child: Option<Child>,
    /// Holds the persist folder; shared so a restarted instance can reuse it.
    dir: Arc<tempfile::TempDir>,
    pub base_url: String,
    /// This instance's output (a restarted instance on the same state writes its own file).
    log: std::path::PathBuf,
    client: reqwest::Client,
}

/// A response: status and parsed JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// `data` of a success envelope; panics with the whole reply otherwise.
    pub fn data(&self) -> &Value {
        assert_eq!(self.body["success"], json!(true), "expected success, got {self:?}");
        &self.body["data"]
    }

    /// The error message of a failure envelope; panics otherwise.
    pub fn error(&self) -> &str {
        assert_eq!(self.body["success"], json!(false), "expected an error, got {self:?}");
        self.body["error"].as_str().unwrap_or_else(|| panic!("no error message in {self:?}"))
    }
}

/// Who a request is from.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Internal,
    Key(String),
    Bearer(String),
    Container(String),
}

impl WranglerDev {
    /// Starts on a fresh, empty state folder.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("gastown-wrangler-").tempdir().expect("temp dir");
        Self::start_in(Arc::new(dir)).await
    }

    /// Starts on a fresh state folder with extra Worker env vars (`CONTAINER_URL`, ...).
    pub async fn start_with_env(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new().prefix("gastown-wrangler-").tempdir().expect("temp dir");
        Self::launch(Arc::new(dir), extra).await
    }

    /// Starts on `dir`'s state (the same folder a previous instance used).
    pub async fn start_in(dir: Arc<tempfile::TempDir>) -> Self {
        Self::launch(dir, &[]).await
    }

    /// Starts with another wrangler config (`-c config`) and extra variables in wrangler's own
    /// environment (`process_env`, e.g. `WRANGLER_DOCKER_BIN`), besides the Worker's `extra`.
    pub async fn start_with_config(
        config: &std::path::Path,
        extra: &[(&str, &str)],
        process_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("gastown-wrangler-").tempdir().expect("temp dir");
        Self::launch_with(Arc::new(dir), extra, Some(config), process_env).await
    }

    async fn launch(dir: Arc<tempfile::TempDir>, extra: &[(&str, &str)]) -> Self {
        Self::launch_with(dir, extra, None, &[]).await
    }

    async fn launch_with(
        dir: Arc<tempfile::TempDir>,
        extra: &[(&str, &str)],
        config: Option<&std::path::Path>,
        process_env: &[(&str, &str)],
    ) -> Self {
        let root = repo_root();
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(wrangler.exists(), "{} is missing: run scripts/setup", wrangler.display());
        assert!(
            root.join("build/worker/shim.mjs").exists(),
            "the Worker is not built: run scripts/build-worker first"
        );
        let d = dir.path();
        // The Worker's storage holds the forge credentials: as in `scripts/dev`, no agent's uid
        // on this machine may read it (a temporary folder is made 0755 under a 022 umask).
        crate::set_mode(d, 0o700);
        let env_file = d.join("worker.env");
        let mut vars = format!(
            "INTERNAL_API_SECRET={INTERNAL_KEY}\nGASTOWN_JWT_SECRET={JWT_SECRET}\nCONTAINER_TOKEN={CONTAINER_TOKEN}\nALLOW_LOCAL_REPOS=true\n"
        );
        for (k, v) in extra {
            vars.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(&env_file, vars).expect("write env file");
        static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = d.join(format!("wrangler-{n}.out"));
        let config = match config {
            Some(c) => c.to_path_buf(),
            None => write_config(&d.join(format!("wrangler-{n}.toml")), &[]),
        };
        let log = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&log_path)
            .expect("log file");
        let mut cmd = Command::new(&wrangler);
        cmd.current_dir(&root)
            .args(["dev", "--ip", "127.0.0.1", "--port", "0", "--inspector-port", "0"])
            .arg("-c")
            .arg(&config)
            .arg("--persist-to")
            .arg(d.join("state"))
            .arg("--env-file")
            .arg(&env_file)
            .arg("--show-interactive-dev-session=false")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("XDG_CONFIG_HOME", d.join("xdg"))
            .env("WRANGLER_LOG_PATH", d.join("logs"))
            .env("GASTOWN_WORKER_PREBUILT", "1")
            .env("NO_COLOR", "1")
            .envs(process_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn wrangler dev");
        let client = crate::http_client(REQUEST_TIMEOUT);
        let mut dev =
            Self { child: Some(child), dir, base_url: String::new(), log: log_path, client };
        dev.wait_ready().await;
        dev
    }

    /// Waits (bounded) for this instance's `Ready on` line, then for `/health` on that port.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if self.base_url.is_empty() {
                if let Some(port) = ready_port(&self.output()) {
                    self.base_url = format!("http://127.0.0.1:{port}");
                }
            }
            if !self.base_url.is_empty() {
                if let Ok(r) = self
                    .client
                    .get(format!("{}/health", self.base_url))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    if r.status().as_u16() == 200 {
                        return;
                    }
                }
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let out = self.output();
                self.kill();
                panic!("wrangler dev did not become ready (exit: {exited:?}); output:\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The process group of this wrangler dev (node and its workerd processes).
    pub fn process_group(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// What this wrangler dev printed so far (its request log included).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The state folder, to restart on the same state with [`WranglerDev::start_in`].
    pub fn state_dir(&self) -> Arc<tempfile::TempDir> {
        self.dir.clone()
    }

    /// Stops the process group and waits for it.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            // The group id is the child's pid (process_group(0)); node and workerd are in it.
            let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            let _ = child.wait();
        }
    }

    /// Sends a request; `body` is sent as JSON when it is not `Value::Null`.
    pub async fn call(&self, method: Method, path: &str, auth: &Auth, body: Value) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base_url));
        req = match auth {
            Auth::None => req,
            Auth::Internal => req.header("X-Internal-API-Key", INTERNAL_KEY),
            Auth::Key(k) => req.header("X-Internal-API-Key", k),
            Auth::Bearer(t) => req.header("Authorization", format!("Bearer {t}")),
            Auth::Container(t) => req.header("X-Container-Token", t),
        };
        if !body.is_null() {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Sends a request with exactly the given headers.
    pub async fn call_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base_url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Sends a raw body (for malformed-input tests).
    pub async fn call_raw(&self, method: Method, path: &str, auth: &Auth, body: Vec<u8>) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base_url));
        if let Auth::Internal = auth {
            req = req.header("X-Internal-API-Key", INTERNAL_KEY);
        }
        if let Auth::Bearer(t) = auth {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.send(req.header("content-type", "application/json").body(body)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let started = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let out = self.output();
                let tail: String = out
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("request to wrangler dev failed after {:?}: {e:?}\nlast lines of its output:\n{tail}", started.elapsed())
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, &Auth::Internal, Value::Null).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, &Auth::Internal, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, &Auth::Internal, body).await
    }

    /// A bead of a rig, as the API shows it.
    /// A new town `name` with one rig `app` on `git_url`: `(town id, rig id)`.
    pub async fn town_and_rig(&self, name: &str, git_url: &str) -> (String, String) {
        let town = self.post("/api/towns", json!({ "name": name })).await;
        let town = town.data()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no town id: {town:?}"))
            .to_string();
        let rig = self
            .post(&format!("/api/towns/{town}/rigs"), json!({ "name": "app", "git_url": git_url }))
            .await;
        let rig =
            rig.data()["id"].as_str().unwrap_or_else(|| panic!("no rig id: {rig:?}")).to_string();
        (town, rig)
    }

    /// A fresh rig configured as a town configures it (work can be created only on such a rig),
    /// for tests of the API alone: its origin is a placeholder nothing clones, since no agent
    /// is dispatched without `GASTOWN_MODEL`.
    pub async fn configured_rig(&self) -> String {
        let rig = unique_id("rig");
        let config = serde_json::json!({ "town_id": unique_id("town"), "git_url": "https://example.com/placeholder.git" });
        let r = self
            .call(Method::PUT, &format!("/api/rigs/{rig}/config"), &Auth::Internal, config)
            .await;
        assert_eq!(r.status, 200, "configuring {rig}: {r:?}");
        rig
    }

    pub async fn bead(&self, rig: &str, id: &str) -> Value {
        self.get(&format!("/api/rigs/{rig}/beads/{id}")).await.data().clone()
    }

    /// When each kind of event first happened to the bead, in ms of the day (`iso_ms_of_day`).
    pub async fn bead_event_times(&self, rig: &str, bead: &str) -> HashMap<String, i64> {
        let events = self.get(&format!("/api/rigs/{rig}/beads/{bead}/events?limit=100")).await;
        let mut first = HashMap::new();
        for e in events.data().as_array().into_iter().flatten() {
            let kind = e["kind"].as_str().unwrap_or("").to_string();
            first.entry(kind).or_insert_with(|| iso_ms_of_day(&e["created_at"]));
        }
        first
    }

    /// Waits (polling every 100 ms, up to `within`) until the rig's convoy has landed; the
    /// convoy. Panics if it stops being open without landing.
    pub async fn landed_convoy(&self, rig: &str, convoy: &str, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let c = self.get(&format!("/api/rigs/{rig}/convoys/{convoy}")).await;
            if c.data()["status"] == "landed" {
                return c.data().clone();
            }
            assert!(
                c.data()["status"] == "open" && std::time::Instant::now() < deadline,
                "the convoy did not land: {c:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The bead once it has settled (closed or failed), waiting up to `within`.
    pub async fn settled_bead(&self, rig: &str, id: &str, within: Duration) -> Value {
        crate::wait::until("the bead to settle (closed or failed)", within, async || {
            let b = self.bead(rig, id).await;
            (b["status"] == "closed" || b["status"] == "failed").then_some(b)
        })
        .await
    }
}

impl Drop for WranglerDev {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The repository's wrangler.toml as a test instance runs it, written to `path` (a file no
/// other instance uses: wrangler watches its config file and reloads when it changes): every
/// path made absolute (the copy lives outside the repository), `replace`'s edits made (each
/// `(from, to)` must be found), and the build's watch list an empty folder beside the copy.
///
/// The harness runs the Worker built before the tests (the build command is a no-op under
/// `GASTOWN_WORKER_PREBUILT=1`), so there is nothing to watch. The repository's watch list
/// (worker/src, shared-types/src) would make any source file saved while a test runs trigger
/// that no-op build and then a reload of the Worker, which drops every open connection: a
/// live stream ends in a TCP reset without its close frame, a request in flight fails.
pub fn write_config(path: &std::path::Path, replace: &[(&str, String)]) -> std::path::PathBuf {
    let root = repo_root();
    let mut out = std::fs::read_to_string(root.join("wrangler.toml")).expect("wrangler.toml");
    let r = |p: &str| root.join(p).display().to_string();
    // wrangler joins `watch_dir` to the config's folder, even an absolute one: a relative name.
    let unwatched = "unwatched";
    std::fs::create_dir_all(path.parent().expect("a config file's folder").join(unwatched))
        .expect("the empty watched folder");
    let own = [
        ("main = \"build/worker/shim.mjs\"", format!("main = \"{}\"", r("build/worker/shim.mjs"))),
        (
            "command = \"scripts/build-worker\"",
            format!("command = \"{}\"", r("scripts/build-worker")),
        ),
        (
            "watch_dir = [\"worker/src\", \"shared-types/src\"]",
            format!("watch_dir = \"{unwatched}\""),
        ),
        ("image = \"./Dockerfile\"", format!("image = \"{}\"", r("Dockerfile"))),
    ];
    for (from, to) in own.iter().chain(replace) {
        assert!(out.contains(from), "wrangler.toml no longer has {from:?}: update the harness");
        out = out.replacen(from, to, 1);
    }
    std::fs::write(path, out).expect("write wrangler config");
    path.to_path_buf()
}

/// The port in wrangler's `[wrangler:info] Ready on http://127.0.0.1:PORT` line.
fn ready_port(output: &str) -> Option<u16> {
    output.lines().find_map(|line| line.split("Ready on http://127.0.0.1:").nth(1)).and_then(
        |rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        },
    )
}

/// Milliseconds within the day of a Worker timestamp (`YYYY-MM-DDTHH:MM:SS.mmmZ`): enough for
/// differences between events less than a day apart (benchmarks).
pub fn iso_ms_of_day(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or("");
    let part = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    ((part(11, 13) * 60 + part(14, 16)) * 60 + part(17, 19)) * 1000 + part(20, 23)
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs an HS256 agent token by hand (independently of the Worker's JWT code).
pub fn sign_jwt(header: &Value, claims: &Value, secret: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{h}.{p}").as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

/// A valid agent token for `agent_id` in `rig_id`, issued now, expiring in an hour.
pub fn agent_token(agent_id: &str, rig_id: &str) -> String {
    let now = now_secs();
    sign_jwt(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"agentId": agent_id, "rigId": rig_id, "townId": "town-1", "userId": "user-1", "iat": now, "exp": now + 3600}),
        JWT_SECRET,
    )
}

/// A fresh id for a test rig (so tests sharing an instance never share a rig).
pub fn unique_id(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{t:x}-{n}")
}

#[cfg(test)]
mod tests {
    use crate::project::repo_root;

    #[test]
    fn a_test_instance_watches_nothing_of_the_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::write_config(
            &dir.path().join("wrangler-0.toml"),
            &[("enable_containers = false", "enable_containers = true".into())],
        );
        let text = std::fs::read_to_string(&path).expect("the written config");
        let config: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(config["build"]["watch_dir"].as_str(), Some("unwatched"));
        let unwatched = dir.path().join("unwatched").read_dir().expect("the watched folder");
        assert_eq!(unwatched.count(), 0, "the watched folder is empty");
        let root = |p: &str| repo_root().join(p).display().to_string();
        assert_eq!(config["main"].as_str(), Some(root("build/worker/shim.mjs").as_str()));
        assert_eq!(
            config["build"]["command"].as_str(),
            Some(root("scripts/build-worker").as_str())
        );
        assert_eq!(config["containers"][0]["image"].as_str(), Some(root("Dockerfile").as_str()));
        assert_eq!(config["dev"]["enable_containers"].as_bool(), Some(true));
    }
}
