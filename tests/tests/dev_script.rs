//! `scripts/dev` itself, run exactly as the README says: a fresh `GASTOWN_DEV_DIR` with no
//! secrets made in advance, the model given through `GASTOWN_MODEL*` (the scripted model: the
//! only stand-in), a town and a rig made with the `gt` the script points at, a bead slung and
//! seen merged on the origin's `main`. Then Ctrl-C (SIGINT to the script's process group), and
//! a second start on the same folder still has the town, the rig and the merged bead; run under
//! a umask of 077 (a root shell's strict umask), it still merges a bead on a new rig. A bad
//! `--shards` count stops it before it does anything.
//!
//! Ports: the test holds the control server's port and hands it to the script as fd 3
//! (`LISTEN_FDS=1`, `CONTROL_PORT`); the Worker takes any free port (`WORKER_PORT=0`) and the
//! script prints it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step, MODEL_ID};
use gastown_e2e::origin::Origin;
use gastown_e2e::project::repo_root;
use gastown_e2e::wait::until;
use serde_json::Value;

/// The first start builds the Worker (worker-build and wasm-opt, a few minutes on 2 cores).
const START: Duration = Duration::from_secs(900);
const WORK: Duration = Duration::from_secs(300);

/// One run of `scripts/dev`, in its own process group, its output collected.
struct Dev {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

/// What the script printed once running: the Worker's URL, the internal key and the `gt` path.
struct Running {
    api: String,
    key: String,
    gt: PathBuf,
}

impl Dev {
    fn start(dir: &Path, model: &ModelServer, control: &std::net::TcpListener, umask: u32) -> Self {
        let port = control.local_addr().expect("the control server's address").port();
        let mut cmd = Command::new(repo_root().join("scripts/dev"));
        cmd.current_dir(repo_root())
            .env("GASTOWN_DEV_DIR", dir)
            .env("GASTOWN_MODEL", format!("scripted/{MODEL_ID}"))
            .env("GASTOWN_MODEL_BASE_URL", model.base_url())
            .env("GASTOWN_MODEL_API_KEY", "not-a-real-key")
            .env("WORKER_PORT", "0")
            .env("CONTROL_PORT", port.to_string())
            // Clear of the uids of every other test's control servers.
            .env("AGENT_UID_BASE", "60000")
            .env("AGENT_UID_COUNT", "64")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        gastown_e2e::control_server::pass_listener(&mut cmd, control);
        // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::libc::umask(umask as nix::libc::mode_t);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("run scripts/dev");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ] {
            let (Some(stream), sink) = (stream, output.clone()) else { continue };
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        Self { child, output }
    }

    fn output(&self) -> String {
        joined(&self.output)
    }

    /// Waits for the script's "running" how-to and reads what it says.
    async fn running(&mut self) -> Running {
        let (child, output) = (&mut self.child, &self.output);
        let found = until("scripts/dev to print that the town runs", START, async || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("scripts/dev exited ({status}) before the town ran:\n{}", joined(output));
            }
            let out = joined(output);
            let after = |prefix: &str| {
                out.lines().find_map(|l| l.trim().strip_prefix(prefix).map(str::to_string))
            };
            Some(Running {
                api: after("export GASTOWN_URL=")?,
                key: after("export GASTOWN_KEY=")?,
                gt: after("alias gt=")?.into(),
            })
        })
        .await;
        assert!(found.api.starts_with("http://127.0.0.1:"), "{}", self.output());
        found
    }

    /// Ctrl-C as a terminal sends it (to the script's process group); the script stops both
    /// processes and waits for them. Returns once it exited (bounded).
    async fn interrupt(mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT)
            .expect("SIGINT to scripts/dev");
        let status =
            until("scripts/dev to stop after Ctrl-C", Duration::from_secs(90), async || {
                self.child.try_wait().ok().flatten()
            })
            .await;
        assert_eq!(
            status.code(),
            Some(130),
            "Ctrl-C ends the script as an interrupt:\n{}",
            self.output()
        );
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            for _ in 0..400 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
    }
}

fn joined(output: &Mutex<Vec<String>>) -> String {
    output.lock().map(|l| l.join("\n")).unwrap_or_default()
}

fn gt(run: &Running, args: &[&str]) -> String {
    let o = Command::new(&run.gt)
        .args(args)
        .env("GASTOWN_URL", &run.api)
        .env("GASTOWN_KEY", &run.key)
        .output()
        .expect("run gt");
    assert!(
        o.status.success(),
        "gt {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn on_main(origin: &Origin, file: &str) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(&origin.path)
        .args(["cat-file", "-e", &format!("main:{file}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Slings a bead whose script writes `file`, and waits until it is merged on the origin's
/// `main` and closed; returns its id.
async fn sling_and_merge(
    run: &Running,
    model: &ModelServer,
    rig: &str,
    origin: &Origin,
    file: &str,
) -> String {
    model.set_script(file, commit_then_done(file, "from-dev"));
    let slung = gt(run, &["sling", rig, &format!("Write {file}"), "--body", &marker(file)]);
    let bead = slung
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no bead id in {slung:?}"))
        .to_string();
    until(&format!("{file} merged on the origin's main"), WORK, async || {
        on_main(origin, file).then_some(())
    })
    .await;
    until(&format!("bead {bead} closed"), WORK, async || {
        let status: Value = serde_json::from_str(&gt(run, &["--json", "status", rig])).ok()?;
        status["beads"]
            .as_array()?
            .iter()
            .any(|b| b["id"] == bead && b["status"] == "closed")
            .then_some(())
    })
    .await;
    bead
}

/// The umask of the process group's processes other than the script's shell (wrangler's).
fn umask_of_group(pgid_file: &Path) -> String {
    let pgid = std::fs::read_to_string(pgid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pgid_file.display()));
    let pid = pgid.trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|u| u.trim().to_string())
        .expect("a Umask line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_dev_runs_a_town_from_a_fresh_folder_and_keeps_it() {
    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model server");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Agents' uids must be able to enter the folders above the workspace (enter, not list).
    gastown_e2e::set_mode(tmp.path(), 0o711);
    let dir = tmp.path().join("town");
    let control =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind the control server's port");
    let origin = Origin::new();

    // First run: nothing in the folder yet, so the script makes the secrets.
    let mut dev = Dev::start(&dir, &model, &control, 0o022);
    let run = dev.running().await;
    assert!(dir.join("secrets.env").exists(), "the first run made the secrets");
    assert_eq!(
        umask_of_group(&dir.join("wrangler.pgid")),
        "0022",
        "the secrets' umask stays with the secrets file"
    );
    let town = gt(&run, &["town", "create", "dev"]);
    let rig = gt(&run, &["rig", "add", &town, "app", &origin.url()]);
    let bead = sling_and_merge(&run, &model, &rig, &origin, "first.txt").await;
    dev.interrupt().await;
    for pgid in ["control.pgid", "wrangler.pgid"] {
        assert!(!dir.join(pgid).exists(), "{pgid} left behind: its processes were not stopped");
    }

    // Second run on the same folder, from a shell with a umask of 077: the town, the rig and
    // the merged bead are still there, and a new rig's clone is open to the agents' uids.
    let mut dev = Dev::start(&dir, &model, &control, 0o077);
    let run = dev.running().await;
    let shown = gt(&run, &["town", "show", &town]);
    assert!(shown.contains("town dev") && shown.contains(&rig), "{shown}");
    let status: Value =
        serde_json::from_str(&gt(&run, &["--json", "status", &rig])).expect("--json is JSON");
    assert!(
        status["beads"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["id"] == bead && b["status"] == "closed")),
        "{status}"
    );
    let second = Origin::new();
    let rig2 = gt(&run, &["rig", "add", &town, "second", &second.url()]);
    sling_and_merge(&run, &model, &rig2, &second, "second.txt").await;
    dev.interrupt().await;
}

/// A shard count that is not 1 to 50, or an unknown argument, stops the script before it does
/// anything: exit 2, a message, no folder made.
#[test]
fn scripts_dev_refuses_a_bad_shard_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [&["--shards", "0"][..], &["--shards", "51"], &["--shards", "x"], &["--frob"]] {
        let dev_dir = dir.path().join("dev");
        let out = Command::new(repo_root().join("scripts/dev"))
            .args(args)
            .env("GASTOWN_DEV_DIR", &dev_dir)
            .output()
            .expect("run scripts/dev");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--shards"), "{args:?}: {stderr}");
        assert!(!dev_dir.exists(), "{args:?}: nothing made");
    }
}
