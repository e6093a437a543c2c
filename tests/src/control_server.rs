//! Runs the real `gastown-container` binary (built by `scripts/test` before the tests) with its
//! own workspace, and talks to it over HTTP. The server binds port 0 itself and logs the port it
//! got (read from its "control server listening" line), or serves on a listener the test bound
//! and passes down by socket activation ([`Options::listener`]); never on a port picked and
//! released in advance.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs;
use crate::project::repo_root;

/// The control server binary: `$GASTOWN_CONTAINER_BIN` or `target/debug/gastown-container`.
pub fn container_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GASTOWN_CONTAINER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug/gastown-container");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p gastown-container` (scripts/test does)",
        bin.display()
    );
    bin
}

/// The real Kilo CLI binary installed by scripts/setup (package.json pins 7.7.7).
pub fn kilo_bin() -> PathBuf {
    let bin = repo_root().join("node_modules/@kilocode/cli-linux-x64/bin/kilo");
    assert!(bin.exists(), "{} is missing: run scripts/setup", bin.display());
    bin
}

pub struct ControlServer {
    child: Option<Child>,
    pub base: String,
    port: u16,
    pub token: Option<String>,
    pub workspace: PathBuf,
    /// The exact environment and wrapper it runs with (a restart uses them again).
    env: BTreeMap<String, String>,
    wrapper: Vec<String>,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Settings of a test control server; `env` overrides or adds variables.
pub struct Options {
    pub token: Option<String>,
    pub env: BTreeMap<String, String>,
    /// A socket the test bound and holds, to be served by socket activation.
    pub listener: Option<std::net::TcpListener>,
    /// A command the server is started through (its path is appended), e.g. to give it a
    /// mount namespace of its own.
    pub wrapper: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: Some("test-container-token".into()),
            env: BTreeMap::new(),
            listener: None,
            wrapper: Vec::new(),
        }
    }
}

impl Options {
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Start the server through `wrapper` (its path is appended to it).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Serve on `listener` (passed as fd 3 with `LISTEN_FDS=1`): for a server whose address
    /// another process must be given before the server starts.
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }
}

/// Hands `listener` to the child as fd 3 (the socket-activation protocol).
pub fn pass_listener(cmd: &mut Command, listener: &std::net::TcpListener) {
    cmd.env("LISTEN_FDS", "1");
    hand_over_listener(cmd, listener);
}

/// Makes `listener` the child's fd 3, without the `LISTEN_FDS` variable (for `podman run
/// --preserve-fds 1`, which passes fd 3 on to the container's process).
pub fn hand_over_listener(cmd: &mut Command, listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are made (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec on the copy; when the socket already was fd 3 it is set.
            if nix::libc::fcntl(3, nix::libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns the server with exactly `env` (behind `wrapper`, if any) and waits (up to 30 s) for
/// its "listening" log line; its log lines go to `logs`. Returns the child and its port.
fn launch(
    env: &BTreeMap<String, String>,
    wrapper: &[String],
    listener: Option<&std::net::TcpListener>,
    logs: &Arc<Mutex<Vec<String>>>,
) -> (Child, u16) {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(container_bin());
            c
        }
        None => Command::new(container_bin()),
    };
    cmd.env_clear().envs(env).stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
    if let Some(listener) = listener {
        pass_listener(&mut cmd, listener);
    }
    let mut child = cmd.spawn().expect("spawn gastown-container");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"] == "control server listening" {
                    if let (Some(tx), Some(port)) = (tx.take(), v["fields"]["port"].as_u64()) {
                        let _ = tx.send(port as u16);
                    }
                }
            }
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => (child, port),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "control server did not start; logs:\n{}",
                logs.lock().map(|l| l.join("\n")).unwrap_or_default()
            );
        }
    }
}

const UIDS_PER_SERVER: u32 = 32;

/// A uid range no other server started by any test process now uses: by test process id and a
/// counter of the servers it started (a test binary starts far fewer than 100 at once).
fn uid_base() -> u32 {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
    100_000 + ((std::process::id() % 100_000) * 100 + n) * UIDS_PER_SERVER
}

impl ControlServer {
    /// The pids of the warm pool's ready processes (`/health`'s `pool.pids`).
    pub async fn pooled_pids(&self) -> Vec<i32> {
        let (_, health) = self.get("/health").await;
        health["pool"]["pids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .map(|p| p as i32)
            .collect()
    }

    /// Starts the server and waits (up to 30 s) for its "listening" log line.
    pub fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Run as root, the server gives each Kilo process its own uid; those must be able to
        // enter the folders above the workspace (enter, not list).
        crate::set_mode(dir.path(), 0o711);
        let workspace = dir.path().join("workspace");
        let mut env: BTreeMap<String, String> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("PORT", "0".into()),
            ("BIND_ADDR", "127.0.0.1".into()),
            ("WORKSPACE_ROOT", workspace.display().to_string()),
            ("KILO_BIN", kilo_bin().display().to_string()),
            ("ALLOW_LOCAL_REPOS", "true".into()),
            ("HEARTBEAT_INTERVAL_MS", "500".into()),
            // No warm pool unless a test asks for one (`WARM_POOL_SIZE`): most tests count the
            // server's Kilo processes, and an idle one per server would slow a 2-core machine.
            ("WARM_POOL_SIZE", "0".into()),
            // Servers of one test binary run at once on this machine: each hands out its own
            // uids, never another's (a uid given back is swept of its processes).
            ("AGENT_UID_BASE", uid_base().to_string()),
            ("AGENT_UID_COUNT", UIDS_PER_SERVER.to_string()),
            ("LOG", "info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(t) = &options.token {
            env.insert("CONTAINER_TOKEN".into(), t.clone());
        }
        env.extend(options.env.clone());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (child, port) = launch(&env, &options.wrapper, options.listener.as_ref(), &logs);
        if let Some(listener) = &options.listener {
            let ours = listener.local_addr().map(|a| a.port()).ok();
            assert_eq!(Some(port), ours, "the control server serves the socket it was given");
        }
        let http = crate::http_client(Duration::from_secs(180));
        Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            port,
            token: options.token,
            workspace,
            env,
            wrapper: options.wrapper,
            logs,
            http,
            _dir: dir,
        }
    }

    /// Kills the server and every process under it with SIGKILL, as when its container dies:
    /// nothing gets to clean up. The workspace stays.
    pub fn kill_all(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        kill_tree(child.id() as i32);
        let _ = child.wait();
    }

    /// Starts the server again after [`Self::kill_all`]: same settings, workspace and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart follows kill_all");
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .expect("bind the control server's port again");
        let (child, port) = launch(&self.env, &self.wrapper, Some(&listener), &self.logs);
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("x-container-token", t);
        }
        r
    }

    /// Sends a request with the container token; returns status and JSON body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.expect("request to control server");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// A raw request builder without the token, for auth tests.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Polls the agent's status until `pred` holds or `timeout` passes; returns the last status.
    pub async fn wait_status(
        &self,
        agent: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, v) = self.get(&format!("/agents/{agent}/status")).await;
            if pred(&v) || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// All events of an agent (follows `nextAfter` until no more).
    pub async fn events(&self, agent: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        for _ in 0..100 {
            let (status, page) = self.get(&format!("/agents/{agent}/events?after={after}")).await;
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            after = page["nextAfter"].as_u64().unwrap_or(after);
            all.extend(events);
        }
        all
    }

    /// Sends SIGTERM and waits (bounded) for the server to exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        procs::signal(child.id() as i32, procs::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // It did not stop in time: nothing of it may outlive the test (its Kilo processes
        // would otherwise be left running, each in its own process group).
        kill_tree(child.id() as i32);
        let _ = child.wait();
        None
    }
}

/// SIGKILLs `root` and every process under it, children first (parents would otherwise be
/// gone before their children are found).
fn kill_tree(root: i32) {
    let all = procs::processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    for pid in tree.iter().rev() {
        procs::signal(*pid, procs::SIGKILL);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(30));
        }
    }
}

/// A start request for agent `id` on `rig`, working on `branch` of `git_url`.
pub fn start_request(
    id: &str,
    rig: &str,
    name: &str,
    branch: &str,
    git_url: &str,
    prompt: &str,
) -> Value {
    json!({
        "agentId": id, "rigId": rig, "townId": "town1", "role": "polecat", "name": name,
        "identity": format!("{name}@{rig}"), "prompt": prompt, "model": "scripted/scripted-model",
        "systemPrompt": format!("You are {name}, a Gastown polecat."), "gitUrl": git_url,
        "branch": branch, "defaultBranch": "main",
    })
}

/// Whether `path` exists under the server's workspace.
pub fn exists_in(workspace: &Path, rel: &str) -> bool {
    workspace.join(rel).exists()
}
