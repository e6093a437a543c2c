//! `wrangler deploy --dry-run --outdir <dir>` succeeds offline: the [build] command runs, the
//! bundle is written and exports every Durable Object class, the bindings and vars are the ones
//! in wrangler.toml, each bound class has exactly one SQLite migration, and the [[containers]]
//! entry would build ./Dockerfile from the repository root for linux/amd64.
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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gastown_e2e::project::{repo_root as root, toml_values};

/// The [build] command may compile the Worker when its output is stale.
const DEADLINE: Duration = Duration::from_secs(600);

/// The strings of a one-line TOML array (`["A", "B"]`).
fn toml_array(value: &str) -> Vec<String> {
    assert!(
        value.starts_with('[') && value.ends_with(']'),
        "expected a one-line TOML array, got {value:?}"
    );
    value.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// Raw values (arrays not unquoted) of `key` in every `header` table.
fn toml_raw_values(text: &str, header: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && !t.contains('=') {
            inside = t == header;
        } else if inside {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == key {
                    out.push(v.split(" #").next().unwrap_or(v).trim().to_string());
                }
            }
        }
    }
    out
}

/// The names a bundle exports in its final `export{a as B, ...}` statement.
fn bundle_exports(js: &str) -> Vec<String> {
    let Some(start) = js.rfind("export{").or_else(|| js.rfind("export {")) else {
        return Vec::new();
    };
    let list = &js[start..];
    let list = &list[list.find('{').unwrap_or(0) + 1..list.find('}').unwrap_or(list.len())];
    list.split(',').filter_map(|item| item.split_whitespace().last().map(str::to_string)).collect()
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
        "wrangler.toml is missing: the deploy dry-run needs the Worker's configuration "
    );
    let wrangler = root.join("node_modules/.bin/wrangler");
    assert!(wrangler.exists(), "{} is missing: run scripts/setup", wrangler.display());
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
    let calls = std::fs::read_to_string(docker_dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let dockerfile_sent =
        std::fs::read_to_string(docker_dir.join("dockerfile")).unwrap_or_default();
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
    let files: Vec<String> = std::fs::read_dir(run.outdir.path())
        .expect("outdir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".wasm")),
        "no .wasm in the dry run's outdir: {files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with(".js") || f.ends_with(".mjs")),
        "no JavaScript entry in the dry run's outdir: {files:?}"
    );

    // Every Durable Object binding of wrangler.toml, as wrangler understood it.
    let names = toml_values(&config, "[[durable_objects.bindings]]", "name");
    let classes = toml_values(&config, "[[durable_objects.bindings]]", "class_name");
    assert!(
        names.len() >= 4 && names.len() == classes.len(),
        "unexpected DO bindings in wrangler.toml: {names:?} {classes:?}"
    );
    for (name, class) in names.iter().zip(&classes) {
        let line =
            out.lines().find(|l| l.contains(&format!("env.{name} ({class})"))).unwrap_or_else(
                || panic!("binding env.{name} ({class}) is not in the dry run's output:\n{out}"),
            );
        assert!(
            line.contains("Durable Object"),
            "env.{name} is not a Durable Object binding: {line}"
        );
    }
    assert!(
        out.contains("env.ALLOW_LOCAL_REPOS (\"false\")"),
        "the ALLOW_LOCAL_REPOS var is not \"false\" in the dry run:\n{out}"
    );

    // Every bound class is exported by the bundle and has its migration.
    let bundle = files
        .iter()
        .filter(|f| f.ends_with(".js") || f.ends_with(".mjs"))
        .map(|f| std::fs::read_to_string(run.outdir.path().join(f)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(e) = check_classes(&config, &bundle_exports(&bundle)) {
        panic!("{e}");
    }

    // The container: built from ./Dockerfile, never pushed.
    let dockerfile = root.join("Dockerfile");
    assert!(
        out.contains("The following containers are available:"),
        "no container in the dry run's output:\n{out}"
    );
    assert!(
        out.contains(&format!("({})", dockerfile.display())),
        "the container is not built from {}:\n{out}",
        dockerfile.display()
    );
    assert_eq!(
        run.calls.first().map(String::as_str),
        Some("info"),
        "wrangler's docker calls: {:?}",
        run.calls
    );
    let builds: Vec<&String> = run.calls.iter().filter(|c| c.starts_with("build ")).collect();
    assert_eq!(builds.len(), 1, "expected one image build, docker calls: {:?}", run.calls);
    assert_eq!(
        run.calls.len(),
        2,
        "a dry run must only check docker and build (no tag, push or login): {:?}",
        run.calls
    );
    let build: Vec<&str> = builds[0].split_whitespace().collect();
    assert!(
        build.windows(2).any(|w| w == ["--platform", "linux/amd64"]),
        "the image is not built for linux/amd64: {}",
        builds[0]
    );
    assert!(
        build.windows(2).any(|w| w == ["-f", "-"]),
        "the Dockerfile is not passed on stdin: {}",
        builds[0]
    );
    assert_eq!(
        build.last().copied(),
        Some(root.to_str().expect("utf-8 path")),
        "the build context is not the repository root (.dockerignore applies there): {}",
        builds[0]
    );
    let want = std::fs::read_to_string(&dockerfile).expect("read Dockerfile");
    assert!(
        run.dockerfile_sent == want,
        "wrangler sent a different Dockerfile to docker build ({} bytes, the file has {})",
        run.dockerfile_sent.len(),
        want.len()
    );
}

/// Every Durable Object class bound in wrangler.toml is exported by the bundle and created by
/// exactly one migration (SQLite storage); every migrated class is bound; migration tags are
/// unique; the container class is a bound class.
fn check_classes(config: &str, exports: &[String]) -> Result<(), String> {
    let classes = toml_values(config, "[[durable_objects.bindings]]", "class_name");
    let tags = toml_raw_values(config, "[[migrations]]", "tag");
    let mut unique_tags = tags.clone();
    unique_tags.sort();
    unique_tags.dedup();
    if unique_tags.len() != tags.len() {
        return Err(format!("duplicate migration tags: {tags:?}"));
    }
    let mut migrated: Vec<String> = toml_raw_values(config, "[[migrations]]", "new_sqlite_classes")
        .iter()
        .flat_map(|v| toml_array(v))
        .collect();
    let legacy: Vec<String> = toml_raw_values(config, "[[migrations]]", "new_classes")
        .iter()
        .flat_map(|v| toml_array(v))
        .collect();
    if !legacy.is_empty() {
        return Err(format!("classes {legacy:?} use new_classes (key-value storage); the Durable Objects use SQLite (new_sqlite_classes)"));
    }
    for class in &classes {
        if !exports.contains(class) {
            return Err(format!("the bundle does not export the Durable Object class {class} (exports: {exports:?})"));
        }
        let n = migrated.iter().filter(|c| *c == class).count();
        if n != 1 {
            return Err(format!(
                "{class} is created by {n} migrations, expected exactly one: {migrated:?}"
            ));
        }
    }
    migrated.retain(|c| !classes.contains(c));
    if !migrated.is_empty() {
        return Err(format!("migrations create classes that no binding uses: {migrated:?}"));
    }
    let container_classes = toml_values(config, "[[containers]]", "class_name");
    if container_classes.is_empty() {
        return Err("wrangler.toml has no [[containers]] entry".into());
    }
    for c in &container_classes {
        if !classes.contains(c) {
            return Err(format!(
                "the container class {c} is not a bound Durable Object class: {classes:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn class_check_rejects_broken_configs() {
    let config = std::fs::read_to_string(root().join("wrangler.toml")).expect("wrangler.toml");
    let classes = toml_values(&config, "[[durable_objects.bindings]]", "class_name");
    assert!(!classes.is_empty(), "no Durable Object bindings in wrangler.toml");
    check_classes(&config, &classes).expect("the real config with every class exported");
    let first = classes[0].clone();
    let fewer: Vec<String> = classes[1..].to_vec();
    assert!(
        check_classes(&config, &fewer).is_err(),
        "a class missing from the bundle's exports must be rejected"
    );
    let dup_tag = format!("{config}\n[[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = []\n");
    assert!(
        check_classes(&dup_tag, &classes).is_err(),
        "a duplicate migration tag must be rejected"
    );
    let twice =
        format!("{config}\n[[migrations]]\ntag = \"v99\"\nnew_sqlite_classes = [\"{first}\"]\n");
    assert!(check_classes(&twice, &classes).is_err(), "a class created twice must be rejected");
    let unbound =
        format!("{config}\n[[migrations]]\ntag = \"v99\"\nnew_sqlite_classes = [\"Ghost\"]\n");
    assert!(
        check_classes(&unbound, &classes).is_err(),
        "a migrated class without binding must be rejected"
    );
    let kv = format!("{config}\n[[migrations]]\ntag = \"v99\"\nnew_classes = [\"Ghost\"]\n");
    assert!(check_classes(&kv, &classes).is_err(), "key-value storage classes must be rejected");
    let exports =
        bundle_exports("var a=1;export{Pt as AgentIdentityDO,Ct as RigDO,Tt as default};");
    assert_eq!(exports, vec!["AgentIdentityDO", "RigDO", "default"]);
}
