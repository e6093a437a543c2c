//! One `kilo serve` child process: spawning it with an isolated environment and waiting until
//! it answers. Which agents' runs it hosts is in the placement table (`agents/placements.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::oneshot;

use super::client::{Credentials, KiloClient};
use crate::git::Owner;
use crate::process::output::{capture, OutputBuffer, SharedOutput, Stream};
use crate::process::terminate::{terminate, Terminated};
use crate::process::{ExitWatch, Reaper};
use crate::sandbox::UidLease;
use crate::tools::js::{CONTROL_URL_VAR, TOOL_KEY_FILE_VAR};

/// Settings that make Kilo work offline and fail instead of retrying forever
/// (shared/reference/kilo-cli.md).
const OFFLINE_ENV: &[(&str, &str)] = &[
    ("KILO_DISABLE_AUTOUPDATE", "1"),
    ("KILO_DISABLE_MODELS_FETCH", "1"),
    ("KILO_TELEMETRY_LEVEL", "off"),
    ("KILO_NO_DAEMON", "1"),
    ("KILO_DISABLE_DEFAULT_PLUGINS", "1"),
    ("KILO_SESSION_RETRY_LIMIT", "1"),
    // Kilo's file watcher starts for every new directory (plugin loading, `git worktree list`,
    // repository scans: about 0.4 s of each first prompt in a checkout, and loading the agent
    // waits for it); nothing the server reads comes from its events. An experimental switch of
    // Kilo 7.7.7: check it on upgrades.
    ("KILO_EXPERIMENTAL_DISABLE_FILEWATCHER", "1"),
    // Kilo's session database in memory, not on disk: an agent's sessions live and die with
    // its process (a lost process is a lost run, re-dispatched with a new one), and on disk
    // SQLite's write-ahead log alone grew to 4 MB per agent before it was folded in.
    ("KILO_DB", ":memory:"),
];

/// Variables of the control server's own environment a Kilo process may see: what a program
/// needs to run and reach the network, nothing of ours (no CONTAINER_TOKEN).
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The values of [`INHERITED_ENV`] this server has.
pub fn inherited_env() -> Vec<(String, String)> {
    INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

/// Where the server keeps its files; everything here is outside every worktree.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config_file(&self) -> PathBuf {
        self.0.join("kilo.json")
    }
    fn home(&self) -> PathBuf {
        self.0.join("home")
    }
    /// The per-process tool key, readable by the process's uid alone.
    fn tool_key(&self) -> PathBuf {
        self.0.join("tool-key")
    }
    /// A working folder of the process's own, for an agent without a checkout (the mayor).
    fn scratch(&self) -> PathBuf {
        self.0.join("work")
    }
    /// Kilo leaves a 5 MB native library here per process.
    fn tmp(&self) -> PathBuf {
        self.0.join("tmp")
    }
    /// The model catalog Kilo reads instead of its bundled one (`KILO_MODELS_PATH`).
    fn models(&self) -> PathBuf {
        self.0.join("models.json")
    }
}

pub struct SpawnSpec<'a> {
    pub id: u64,
    /// `provider/model` the process's config names (the warm pool matches agents by it).
    pub model: String,
    pub kilo_bin: &'a Path,
    pub run_dir: RunDir,
    pub tools_dir: &'a Path,
    pub config: serde_json::Value,
    /// The control server's loopback URL, for the tool files.
    pub control_url: &'a str,
    /// Provider settings plus, for a process started for one agent, the request's envVars.
    /// Never an agent's identity: that is by session (tool calls) and in the checkout's config
    /// (git author).
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
    /// The uid the process runs as (`None`: the server's own; isolation is off).
    pub uid: Option<UidLease>,
    /// Agents that may join the process, by their shared environment; `None`: one agent.
    pub share_key: Option<String>,
}

/// A running (or exited) `kilo serve`.
pub struct KiloServer {
    pub id: u64,
    pub pid: u32,
    pub client: KiloClient,
    /// Proves a tool call comes from this process: only this process's uid can read the file
    /// that holds it.
    pub tool_key: String,
    pub model: String,
    /// Agents that may join this server, by their shared environment; `None`: dedicated.
    pub share_key: Option<String>,
    pub exit: ExitWatch,
    pub output: SharedOutput,
    run_dir: RunDir,
    /// Who the agents' checkouts belong to: this process's uid and HOME.
    pub owner: Owner,
    /// Held while the process lives; given back (after killing what is left of the uid) by
    /// [`Self::clean_up`].
    uid: Mutex<Option<UidLease>>,
    /// Set when this server was asked to stop, so its exit is not read as a crash.
    stopping: std::sync::atomic::AtomicBool,
}

/// Timings of [`KiloServer::spawn`], for the start-latency benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnTimings {
    pub spawn: Duration,
    pub ready: Duration,
}

impl KiloServer {
    /// The process's own working folder (0700, its uid's), where an agent without a checkout
    /// works.
    pub fn scratch_dir(&self) -> PathBuf {
        self.run_dir.scratch()
    }

    /// Spawns `kilo serve --port 0` in its own process group, reads the port it chose from its
    /// first lines of output, then polls its health until it answers or `ready_timeout` passes.
    /// On failure the process is killed and the error carries the tail of its output.
    pub async fn spawn(
        reaper: &Reaper,
        http: reqwest::Client,
        spec: SpawnSpec<'_>,
    ) -> Result<(Arc<Self>, SpawnTimings), String> {
        let t0 = Instant::now();
        let run = spec.run_dir.clone();
        for dir in [
            run.home(),
            run.tmp(),
            run.scratch(),
            run.0.join("xdg/config"),
            run.0.join("xdg/data"),
            run.0.join("xdg/state"),
            run.0.join("xdg/cache"),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let config = serde_json::to_vec_pretty(&spec.config).map_err(|e| e.to_string())?;
        std::fs::write(run.config_file(), config)
            .map_err(|e| format!("cannot write the Kilo config: {e}"))?;
        let own_catalog = !super::config::needs_catalog(&spec.config);
        if own_catalog {
            std::fs::write(run.models(), "{}")
                .map_err(|e| format!("cannot write the model catalog: {e}"))?;
        }
        let tool_key = crate::secret::random_token();
        std::fs::write(run.tool_key(), &tool_key)
            .map_err(|e| format!("cannot write the tool key: {e}"))?;
        let credentials = Credentials::random();
        let uid = spec.uid.as_ref().map(|l| l.uid);
        // Everything in the folder becomes the process's own; the folder is closed to others.
        crate::sandbox::give(&run.0, uid)
            .map_err(|e| format!("cannot hand {} to the agent uid: {e}", run.0.display()))?;

        let mut cmd = Command::new(spec.kilo_bin);
        cmd.args(["serve", "--port", "0", "--hostname", "127.0.0.1"])
            .current_dir(&run.0)
            .env_clear()
            .envs(inherited_env());
        cmd.env("HOME", run.home())
            .env("TMPDIR", run.tmp())
            .env("XDG_CONFIG_HOME", run.0.join("xdg/config"))
            .env("XDG_DATA_HOME", run.0.join("xdg/data"))
            .env("XDG_STATE_HOME", run.0.join("xdg/state"))
            .env("XDG_CACHE_HOME", run.0.join("xdg/cache"))
            .env("KILO_CONFIG", run.config_file())
            .env("KILO_CONFIG_DIR", spec.tools_dir)
            .env(CONTROL_URL_VAR, spec.control_url)
            .env(TOOL_KEY_FILE_VAR, run.tool_key())
            .env("KILO_SERVER_USERNAME", &credentials.username)
            .env("KILO_SERVER_PASSWORD", &credentials.password)
            .envs(OFFLINE_ENV.iter().copied())
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if own_catalog {
            // Every provider the process may use is defined in its config, with its models: Kilo
            // then needs none of its bundled catalog, which it otherwise converts and checks in
            // full for every new directory (about 0.5 s of each first prompt in a checkout).
            cmd.env("KILO_MODELS_PATH", run.models());
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        }

        let mut spawned = reaper
            .spawn(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", spec.kilo_bin.display()))?;
        let output: SharedOutput = Arc::new(Mutex::new(OutputBuffer::new(256 * 1024)));
        let (port_tx, port_rx) = oneshot::channel::<u16>();
        let mut port_tx = Some(port_tx);
        if let Some(out) = spawned.child.stdout.take().and_then(|o| ChildStdout::from_std(o).ok()) {
            capture(
                out,
                Stream::Stdout,
                output.clone(),
                move |_, line| {
                    if let Some(port) = listening_port(line) {
                        if let Some(tx) = port_tx.take() {
                            let _ = tx.send(port);
                        }
                    }
                },
                None,
            );
        }
        if let Some(err) = spawned.child.stderr.take().and_then(|e| ChildStderr::from_std(e).ok()) {
            capture(err, Stream::Stderr, output.clone(), |_, _| {}, None);
        }
        let spawn_time = t0.elapsed();

        let deadline = tokio::time::Instant::now() + spec.ready_timeout;
        let fail = |why: String, output: &SharedOutput| {
            let tail = output.lock().unwrap_or_else(|p| p.into_inner()).tail(20);
            if tail.is_empty() {
                why
            } else {
                format!("{why}; kilo output:\n{tail}")
            }
        };
        let mut exit = spawned.exit.clone();
        let port = tokio::select! {
            port = tokio::time::timeout_at(deadline, port_rx) => match port {
                Ok(Ok(port)) => port,
                _ => {
                    terminate(spawned.pid, &mut spawned.exit, Signal::SIGKILL, Duration::ZERO).await;
                    return Err(fail(format!("kilo did not report its port within {:?}", spec.ready_timeout), &output));
                }
            },
            e = exit.wait() => {
                return Err(fail(format!("kilo exited during start-up with code {}", e.map_or(-1, |e| e.code())), &output));
            }
        };
        let client = KiloClient::new(http, port, credentials);
        // Bounded by the deadline: each check takes at most a second.
        loop {
            if client.healthy().await {
                break;
            }
            if let Some(e) = spawned.exit.now() {
                return Err(fail(
                    format!("kilo exited during start-up with code {}", e.code()),
                    &output,
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                terminate(spawned.pid, &mut spawned.exit, Signal::SIGKILL, Duration::ZERO).await;
                return Err(fail(
                    format!("kilo did not become healthy within {:?}", spec.ready_timeout),
                    &output,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let timings = SpawnTimings { spawn: spawn_time, ready: t0.elapsed() - spawn_time };
        let server = Arc::new(Self {
            id: spec.id,
            pid: spawned.pid,
            client,
            tool_key,
            model: spec.model,
            share_key: spec.share_key,
            exit: spawned.exit,
            output,
            owner: Owner { uid, home: run.home() },
            uid: Mutex::new(spec.uid),
            run_dir: run,
            stopping: Default::default(),
        });
        Ok((server, timings))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the process group: `signal`, then SIGKILL after `grace`. Safe to call twice.
    pub async fn stop(&self, signal: Signal, grace: Duration) -> Terminated {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut exit = self.exit.clone();
        terminate(self.pid, &mut exit, signal, grace).await
    }

    /// Removes the exited process's private folder (HOME, TMPDIR with the 5 MB native library
    /// Kilo leaves there, config): nothing in it is used after the process is gone.
    /// Then kills whatever the process's uid still runs and gives the uid back.
    pub fn clean_up(&self) {
        let _ = std::fs::remove_dir_all(&self.run_dir.0);
        drop(self.uid.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    pub fn output_tail(&self, lines: usize) -> String {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).tail(lines)
    }

    pub fn output_lines(&self, lines: usize) -> Vec<String> {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).tail_lines(lines)
    }
}

/// The port in Kilo's `kilo server listening on http://127.0.0.1:PORT` line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = line.split("listening on http://").nth(1)?;
    let port = rest.rsplit(':').next()?.trim().trim_end_matches('/');
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_from_the_readiness_line() {
        assert_eq!(listening_port("kilo server listening on http://127.0.0.1:40811"), Some(40811));
        assert_eq!(listening_port("kilo server listening on http://127.0.0.1:4096/"), Some(4096));
        assert_eq!(
            listening_port("Warning: KILO_SERVER_PASSWORD is not set; server is unsecured."),
            None
        );
    }
}
