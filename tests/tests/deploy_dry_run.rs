//! `wrangler deploy --dry-run --outdir <dir>` succeeds offline: the [build] command runs, the
//! bundle is written, the Durable Object bindings and vars are the ones in wrangler.toml, and
//! the [[containers]] entry would build ./Dockerfile from the repository root for linux/amd64.
//!
//! With a Dockerfile-based [[containers]] entry, wrangler 4.86's dry-run calls `docker info`
//! and then really builds the image (`docker build --load -t <name>:<tag> --platform linux/amd64
//! --provenance=false -f - <context>`, Dockerfile on stdin); it has no flag to skip that, and
//! without a Docker engine it stops with "The Docker CLI could not be launched". These
//! machines have no Docker engine, so the test points WRANGLER_DOCKER_BIN at a stand-in that
//! answers `info`, records the `build` call and its stdin, and refuses anything else (tag,
//! push, login): the test checks what wrangler would hand to Docker; building the image itself
//! is left to a machine with Docker (tests/tests/dockerfile.rs checks the Dockerfile's content).
//! No Cloudflare account is used: a dry run makes no API call.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The [build] command may compile the Worker when its output is stale.
const DEADLINE: Duration = Duration::from_secs(600);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Values of `key` in every `header` table of a TOML text (arrays of tables).
fn toml_values(text: &str, header: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == header;
        } else if inside {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == key {
                    out.push(v.split(" #").next().unwrap_or(v).trim().trim_matches('"').to_string());
                }
            }
        }
    }
    out
}

const FAKE_DOCKER: &str = r#"#!/bin/sh
# Stand-in for the Docker CLI during `wrangler deploy --dry-run` (no Docker engine here).
printf '%s\n' "$*" >> "$FAKE_DOCKER_DIR/calls"
case "$1" in
  info) exit 0 ;;
  build) cat > "$FAKE_DOCKER_DIR/dockerfile"; exit 0 ;;
  *) echo "fake docker: refusing: $*" >&2; exit 1 ;;
esac
"#;

struct DryRun {
    output: String,
    calls: Vec<String>,
    dockerfile_sent: String,
    outdir: tempfile::TempDir,
}

fn dry_run() -> DryRun {
    let root = root();
    assert!(
        root.join("wrangler.toml").exists(),
        "wrangler.toml is missing: the deploy dry-run needs the Worker's configuration (issue 4 adds it)"
    );
    let wrangler = root.join("node_modules/.bin/wrangler");
    assert!(wrangler.exists(), "{} is missing: run scripts/setup (npm ci)", wrangler.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let docker_dir = tmp.path().join("docker");
    std::fs::create_dir_all(&docker_dir).expect("mkdir");
    let docker = docker_dir.join("docker");
    std::fs::write(&docker, FAKE_DOCKER).expect("write fake docker");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let outdir = tempfile::tempdir().expect("tempdir");

    let mut cmd = Command::new(&wrangler);
    cmd.args(["deploy", "--dry-run", "--outdir"])
        .arg(outdir.path())
        .current_dir(&root)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .env("WRANGLER_LOG_PATH", tmp.path().join("logs"))
        .env("WRANGLER_DOCKER_BIN", &docker)
        .env("FAKE_DOCKER_DIR", &docker_dir)
        .env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0")
        // No account: a dry run must not need one.
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env_remove("CLOUDFLARE_ACCOUNT_ID")
        .env_remove("CLOUDFLARE_API_KEY")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start wrangler");
    // Read both pipes on threads so a full pipe cannot stall wrangler.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wrangler deploy --dry-run took more than {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!("{}\n{}", out_t.join().expect("stdout"), err_t.join().expect("stderr"));
    eprintln!("wrangler deploy --dry-run took {:?}:\n{output}", start.elapsed());
    assert!(status.success(), "wrangler deploy --dry-run failed ({status}):\n{output}");
    let calls = std::fs::read_to_string(docker_dir.join("calls")).unwrap_or_default().lines().map(str::to_string).collect();
    let dockerfile_sent = std::fs::read_to_string(docker_dir.join("dockerfile")).unwrap_or_default();
    DryRun { output, calls, dockerfile_sent, outdir }
}

#[test]
fn deploy_dry_run_builds_the_worker_and_names_bindings_and_container() {
    let root = root();
    let config = std::fs::read_to_string(root.join("wrangler.toml")).unwrap_or_default();
    let run = dry_run();
    let out = &run.output;
    assert!(out.contains("--dry-run: exiting now."), "the dry run did not reach its end:\n{out}");

    // The bundle: the [build] command's output, bundled by wrangler.
    let files: Vec<String> = std::fs::read_dir(run.outdir.path()).expect("outdir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(files.iter().any(|f| f.ends_with(".wasm")), "no .wasm in the dry run's outdir: {files:?}");
    assert!(files.iter().any(|f| f.ends_with(".js") || f.ends_with(".mjs")), "no JavaScript entry in the dry run's outdir: {files:?}");

    // Every Durable Object binding of wrangler.toml, as wrangler understood it.
    let names = toml_values(&config, "[[durable_objects.bindings]]", "name");
    let classes = toml_values(&config, "[[durable_objects.bindings]]", "class_name");
    assert!(names.len() >= 4 && names.len() == classes.len(), "unexpected DO bindings in wrangler.toml: {names:?} {classes:?}");
    for (name, class) in names.iter().zip(&classes) {
        let line = out.lines().find(|l| l.contains(&format!("env.{name} ({class})"))).unwrap_or_else(|| panic!("binding env.{name} ({class}) is not in the dry run's output:\n{out}"));
        assert!(line.contains("Durable Object"), "env.{name} is not a Durable Object binding: {line}");
    }
    assert!(out.contains("env.ALLOW_LOCAL_REPOS (\"false\")"), "the ALLOW_LOCAL_REPOS var is not \"false\" in the dry run:\n{out}");

    // The container: built from ./Dockerfile, never pushed.
    let dockerfile = root.join("Dockerfile");
    assert!(out.contains("The following containers are available:"), "no container in the dry run's output:\n{out}");
    assert!(out.contains(&format!("({})", dockerfile.display())), "the container is not built from {}:\n{out}", dockerfile.display());
    assert_eq!(run.calls.first().map(String::as_str), Some("info"), "wrangler's docker calls: {:?}", run.calls);
    let builds: Vec<&String> = run.calls.iter().filter(|c| c.starts_with("build ")).collect();
    assert_eq!(builds.len(), 1, "expected one image build, docker calls: {:?}", run.calls);
    assert_eq!(run.calls.len(), 2, "a dry run must only check docker and build (no tag, push or login): {:?}", run.calls);
    let build: Vec<&str> = builds[0].split_whitespace().collect();
    assert!(build.windows(2).any(|w| w == ["--platform", "linux/amd64"]), "the image is not built for linux/amd64: {}", builds[0]);
    assert!(build.windows(2).any(|w| w == ["-f", "-"]), "the Dockerfile is not passed on stdin: {}", builds[0]);
    assert_eq!(build.last().copied(), Some(root.to_str().expect("utf-8 path")), "the build context is not the repository root (.dockerignore applies there): {}", builds[0]);
    let want = std::fs::read_to_string(&dockerfile).expect("read Dockerfile");
    assert!(run.dockerfile_sent == want, "wrangler sent a different Dockerfile to docker build ({} bytes, the file has {})", run.dockerfile_sent.len(), want.len());
}
