//! The town image run for real with podman (through `scripts/podman`, which sets the flags
//! podman needs on these machines). The image is built by `scripts/build-image` (scripts/test
//! runs it before the tests); the harness never builds it, so no test times a build.
//!
//! [`TownImage::run`] starts the image's entrypoint (the control server as PID 1) attached, on
//! the host's network, serving a socket the test bound and holds (passed as fd 3 with
//! `--preserve-fds 1` and `LISTEN_FDS=1`): the Worker can be given the control server's address
//! before the container starts, and no port is picked and released in advance. Its JSON log lines
//! arrive on the attached stdout. Dropping it removes the container.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::project::repo_root;

/// The image the tests run: `$GASTOWN_IMAGE` or scripts/build-image's default tag.
pub fn image() -> String {
    std::env::var("GASTOWN_IMAGE").unwrap_or_else(|_| "localhost/gastown-town:dev".into())
}

/// `scripts/podman args...` (bounded by `within`): its status and stdout.
pub fn podman(args: &[&str], within: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(repo_root().join("scripts/podman"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/podman");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for podman") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("podman {args:?} did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        eprintln!("podman {args:?}: {status}: {err}");
    }
    (status, out)
}

/// Asserts the image exists, with the way to build it.
pub fn require_image() -> String {
    let name = image();
    let (status, _) = podman(&["image", "exists", &name], Duration::from_secs(60));
    assert!(
        status.success(),
        "the image {name} is missing: run scripts/build-image (scripts/test does)"
    );
    name
}

/// A running container of the town image.
pub struct TownImage {
    pub name: String,
    child: Option<Child>,
    /// The control server's log lines (JSON), as they arrived.
    logs: Arc<Mutex<Vec<String>>>,
}

impl TownImage {
    /// Runs the image's entrypoint with `env` (`-e K=V`) and `mounts` (host path, mounted at the
    /// same path), serving `listener`; waits (up to 60 s) for the "control server listening" line.
    pub fn run(
        listener: &std::net::TcpListener,
        env: &[(&str, &str)],
        mounts: &[&std::path::Path],
    ) -> Self {
        let image = require_image();
        let name = format!("gastown-test-{}-{}", std::process::id(), crate::wrangler::now_secs());
        let mut cmd = Command::new(repo_root().join("scripts/podman"));
        cmd.args([
            "run",
            "--rm",
            "--name",
            &name,
            "--network=host",
            "--preserve-fds=1",
            "--env",
            "LISTEN_FDS=1",
        ]);
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        for m in mounts {
            cmd.arg("--volume").arg(format!("{0}:{0}", m.display()));
        }
        cmd.arg(&image).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        crate::control_server::hand_over_listener(&mut cmd, listener);
        let mut child = cmd.spawn().expect("start podman run");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["fields"]["message"] == "control server listening" {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(v["fields"]["port"].as_u64());
                    }
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut me = Self { name, child: Some(child), logs };
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => panic!("the control server in {} did not log \"control server listening\" within 60 s; logs:\n{}", me.name, me.logs().join("\n")),
        };
        let ours = listener.local_addr().map(|a| u64::from(a.port())).ok();
        assert_eq!(port, ours, "the control server in the image serves the socket it was given");
        if let Some(Ok(Some(status))) = me.child.as_mut().map(Child::try_wait) {
            panic!("podman run exited at once ({status}); logs:\n{}", me.logs().join("\n"));
        }
        me
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `podman exec` in the container (bounded): status and stdout.
    pub fn exec(&self, args: &[&str]) -> (ExitStatus, String) {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        podman(&all, Duration::from_secs(60))
    }

    /// `podman stop --time grace`: SIGTERM (the image's STOPSIGNAL), then SIGKILL once `grace`
    /// has passed. Returns the exit status of the control server (podman run's), waited for
    /// with a bound of `grace` plus a minute.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        let secs = grace.as_secs().to_string();
        let (status, _) =
            podman(&["stop", "--time", &secs, &self.name], grace + Duration::from_secs(60));
        assert!(status.success(), "podman stop {} failed", self.name);
        let mut child = self.child.take().expect("the container was running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait for podman run") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "podman run did not return within 60 s of podman stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TownImage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = podman(&["rm", "--force", "--time", "5", &self.name], Duration::from_secs(60));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// podman's Docker-compatible API (`podman system service`) on a socket of its own, for
/// `wrangler dev` with containers (workerd talks to the socket directly). Stopped on drop.
pub struct PodmanService {
    child: Option<Child>,
    pub socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl PodmanService {
    /// Starts the service and waits (up to 30 s) for its socket.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("gastown-podman-").tempdir().expect("temp dir");
        let socket = dir.path().join("podman.sock");
        let child = Command::new(repo_root().join("scripts/podman"))
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start podman system service");
        let mut me = Self { child: Some(child), socket, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.socket.exists() {
            if let Some(Ok(Some(status))) = me.child.as_mut().map(Child::try_wait) {
                panic!("podman system service exited at once: {status}");
            }
            assert!(Instant::now() < deadline, "podman system service made no socket within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    /// The socket as a Docker host URL (`unix:///...`).
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::procs::signal(child.id() as i32, crate::procs::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
