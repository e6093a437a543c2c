//! scripts/build-image on a machine that lacks something: one line on stderr naming the missing
//! piece and how to get it, a failing exit status, and no hang (each run is bounded).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gastown_e2e::project::repo_root;

/// Runs scripts/build-image with `env` (and `setpriv` arguments in front, if any); bounded.
fn build_image(prefix: &[&str], env: &[(&str, &str)]) -> Output {
    let script = repo_root().join("scripts/build-image");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&script);
            c
        }
        None => Command::new(&script),
    };
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run scripts/build-image");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("scripts/build-image hung (over 120 s) with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

/// The failure has exactly one line of its own on stderr, containing every `needle`.
fn one_line(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "scripts/build-image succeeded: {err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("scripts/build-image:")).collect();
    assert_eq!(ours.len(), 1, "expected one line of scripts/build-image, got:\n{err}");
    for n in needles {
        assert!(ours[0].contains(n), "{n:?} missing from {:?}", ours[0]);
    }
}

/// A PATH with every command of this machine's PATH except `missing`.
fn path_without(dir: &Path, missing: &str) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for d in std::env::var("PATH").unwrap_or_default().split(':').filter(|d| !d.is_empty()) {
        for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name != missing && !bin.join(&name).exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), bin.join(&name));
            }
        }
    }
    bin.to_string_lossy().into_owned()
}

#[test]
fn no_podman_no_debootstrap_no_root_and_a_failed_debootstrap_each_say_so_in_one_line() {
    assert!(
        gastown_e2e::procs::is_root(),
        "run as root: the not-root case drops to nobody with setpriv"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let cache_env = cache.to_str().expect("utf-8");

    for tool in ["podman", "debootstrap"] {
        let path = path_without(&tmp.path().join(tool), tool);
        let out = build_image(&[], &[("PATH", &path), ("GASTOWN_IMAGE_CACHE", cache_env)]);
        one_line(&out, &[&format!("{tool} is missing"), "apt-get install"]);
    }

    let out = build_image(
        &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
        &[("GASTOWN_IMAGE_CACHE", cache_env)],
    );
    one_line(&out, &["needs root", "sudo"]);

    // A "mirror" on loopback that answers 404 to everything; stand-in names that do not exist
    // yet, so the debootstrap step runs.
    let mirror = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = mirror.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in mirror.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    let stand_in = format!("localhost/gastown-bad-input-{}", std::process::id());
    let out = build_image(
        &[],
        &[
            ("GASTOWN_IMAGE_CACHE", cache_env),
            ("GASTOWN_STAND_IN", &stand_in),
            ("DEBIAN_MIRROR", &format!("http://127.0.0.1:{port}/debian")),
        ],
    );
    one_line(&out, &["debootstrap of Debian bookworm", "failed", "DEBIAN_MIRROR"]);
    assert!(
        !cache.join("debian-bookworm-slim.tar").exists(),
        "a failed debootstrap leaves no tarball to reuse"
    );
}
