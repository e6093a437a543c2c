//! The TownContainer's container path under `wrangler dev` with containers enabled: the real
//! workerd drives podman's Docker-compatible API (`podman system service`), starts the real town
//! image with the start options the Durable Object builds, and the DO waits for the port,
//! proxies requests (a real agent start among them) and is told when the container exits
//! (stopped after SIGTERM, failed after a crash).
//!
//! Two pieces stand in for what cannot be had on this machine (README, "The container image"):
//! - wrangler builds images with `docker build --load` (buildx); scripts/podman-dev/docker
//!   (WRANGLER_DOCKER_BIN) builds this repository's Dockerfile with scripts/build-image instead;
//! - workerd starts a networking sidecar from cloudflare/proxy-everything beside every container
//!   and reaches the container's port only through it; that image is on Docker Hub, which is
//!   not reachable here. MINIFLARE_CONTAINER_EGRESS_IMAGE names a stand-in that does what workerd
//!   asks of it (scripts/podman-dev/proxy-stand-in.js), without egress interception.
//!
//! The container runs on podman's bridge network, so it cannot reach the host's loopback: the
//! agent's origin is made inside the container, and no model answers its prompt.

use std::time::Duration;

use gastown_e2e::control_server::start_request;
use gastown_e2e::podman::{podman, require_image, PodmanService};
use gastown_e2e::project::repo_root;
use gastown_e2e::wait::until as wait_for;
use gastown_e2e::wrangler::{unique_id, write_config, WranglerDev, CONTAINER_TOKEN};
use serde_json::json;

/// workerd names a DO's container `workerd-<worker>-<class>-<DO id>` and its sidecar `...-proxy`.
const CONTAINER_PREFIX: &str = "workerd-gastown-TownContainer-";

/// The names of the town containers workerd made (sidecars left out).
fn town_containers() -> Vec<String> {
    let (status, out) = podman(&["ps", "--all", "--format", "{{.Names}}"], Duration::from_secs(60));
    assert!(status.success(), "podman ps failed");
    out.lines()
        .filter(|n| n.starts_with(CONTAINER_PREFIX) && !n.ends_with("-proxy"))
        .map(str::to_string)
        .collect()
}

/// Removes every container workerd made for a TownContainer (workerd leaves them running when
/// wrangler stops): town containers first, their sidecars (whose network they use) after.
fn remove_town_containers() {
    let (_, out) = podman(&["ps", "--all", "--format", "{{.Names}}"], Duration::from_secs(60));
    let names: Vec<&str> = out.lines().filter(|n| n.starts_with(CONTAINER_PREFIX)).collect();
    for sidecars in [false, true] {
        for name in names.iter().filter(|n| n.ends_with("-proxy") == sidecars) {
            let _ = podman(&["rm", "--force", "--time", "2", name], Duration::from_secs(60));
        }
    }
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_town_containers();
    }
}

/// The test instance's wrangler.toml ([`write_config`]) with containers enabled on `engine`.
fn wrangler_config(dir: &std::path::Path, engine: &str) -> std::path::PathBuf {
    write_config(
        &dir.join("wrangler.toml"),
        &[(
            "enable_containers = false",
            format!("enable_containers = true\ncontainer_engine = \"{engine}\""),
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_town_container_do_starts_the_image_proxies_a_start_and_sees_the_exit() {
    assert!(gastown_e2e::procs::is_root(), "rootful podman: run as root");
    require_image();
    let stand_in = "localhost/gastown-stand-in/proxy-everything:dev";
    let (exists, _) = podman(&["image", "exists", stand_in], Duration::from_secs(60));
    assert!(exists.success(), "{stand_in} is missing: run scripts/build-image (scripts/test does)");
    remove_town_containers();
    let _cleanup = Cleanup;
    let service = PodmanService::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = wrangler_config(tmp.path(), &service.url());
    let docker = repo_root().join("scripts/podman-dev/docker").display().to_string();
    let api_url = "http://127.0.0.1:9/unreachable-from-the-bridge-network";
    let dev = WranglerDev::start_with_config(
        &config,
        &[("GASTOWN_API_URL", api_url)],
        &[("WRANGLER_DOCKER_BIN", docker.as_str()), ("MINIFLARE_CONTAINER_EGRESS_IMAGE", stand_in)],
    )
    .await;
    let town = unique_id("img");

    // The first request makes the DO start the container and wait for its port.
    let health = dev.get(&format!("/api/towns/{town}/container/health")).await;
    assert_eq!(
        (health.status, &health.body["status"], &health.body["isolation"]),
        (200, &json!("ok"), &json!("uid")),
        "{health:?}\n{}",
        dev.output()
    );
    let first = town_containers();
    assert_eq!(first.len(), 1, "one town container: {first:?}");
    let ctr = first[0].clone();

    // The DO's start options arrived: the container's environment has what the Worker passes
    // (container.rs's PASSED_ENV, built as a plain JS object because workers-rs's
    // ContainerStartupOptions conversion drops it), and the control server read them.
    let (_, env) = podman(&["exec", &ctr, "env"], Duration::from_secs(60));
    for var in [
        format!("CONTAINER_TOKEN={CONTAINER_TOKEN}"),
        format!("GASTOWN_API_URL={api_url}"),
        "ALLOW_LOCAL_REPOS=true".into(),
        "PORT=8080".into(),
    ] {
        assert!(
            env.lines().any(|l| l == var),
            "{var} is not in the container's environment:\n{env}"
        );
    }
    let (_, logs) = podman(&["logs", &ctr], Duration::from_secs(60));
    let listening = logs
        .lines()
        .find(|l| l.contains("control server listening"))
        .unwrap_or_else(|| panic!("no listening line in:\n{logs}"));
    let listening: serde_json::Value = serde_json::from_str(listening).expect("JSON log line");
    assert_eq!(
        (
            &listening["fields"]["port"],
            &listening["fields"]["token"],
            &listening["fields"]["local_repos"]
        ),
        (&json!(8080), &json!(true), &json!(true)),
        "{listening}"
    );
    // PID 1 of the container is the image's entrypoint.
    let (_, pid1) = podman(
        &["exec", &ctr, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline"],
        Duration::from_secs(60),
    );
    assert_eq!(pid1.trim(), "/usr/local/bin/gastown-container", "PID 1");

    // A start through the DO: the control server (which requires the container token the DO
    // adds and the container received) clones an origin made inside the container and starts
    // the image's Kilo under an agent uid.
    let (made, _) = podman(
        &[
            "exec", &ctr, "sh", "-c",
            "set -e; o=/srv/origin.git; s=$(mktemp -d); git init -q --bare -b main $o; git -C $s init -q -b main; \
             echo hi > $s/README.md; git -C $s add README.md; git -C $s -c user.name=seed -c user.email=seed@test commit -qm initial; \
             git -C $s push -q $o main; git -C $o config core.sharedRepository 0777; chmod -R a+rwX $o",
        ],
        Duration::from_secs(60),
    );
    assert!(made.success(), "could not make the origin inside the container");
    let start = start_request(
        "a1",
        "rig-1",
        "toast",
        "polecat/toast/aaaa1111",
        "file:///srv/origin.git",
        "Say hello.",
    );
    let started = dev.post(&format!("/api/towns/{town}/container/agents/start"), start).await;
    assert_eq!((started.status, &started.body["agentId"]), (201, &json!("a1")), "{started:?}");
    let status = wait_for("the agent's Kilo process", Duration::from_secs(120), async || {
        let s = dev.get(&format!("/api/towns/{town}/container/agents/a1/status")).await;
        (s.status == 200 && s.body["pid"].as_u64().is_some()).then_some(s.body)
    })
    .await;
    let pid = status["pid"].as_u64().expect("pid").to_string();
    let (_, owner) = podman(
        &[
            "exec",
            &ctr,
            "sh",
            "-c",
            &format!("stat -c %u /proc/{pid}; tr '\\0' '\\n' </proc/{pid}/cmdline | head -n 1"),
        ],
        Duration::from_secs(60),
    );
    let owner: Vec<&str> = owner.lines().collect();
    assert!(
        owner
            .first()
            .and_then(|u| u.parse::<u32>().ok())
            .is_some_and(|u| (20_000..21_000).contains(&u)),
        "the agent's Kilo runs under an agent uid: {owner:?}"
    );
    assert_eq!(
        owner.get(1).copied(),
        Some("/opt/kilo/node_modules/@kilocode/cli-linux-x64/bin/kilo"),
        "the image's Kilo (argv[0]; its exe link is closed to root without CAP_SYS_PTRACE)"
    );
    let unknown = dev.get(&format!("/api/towns/{town}/container/agents/nobody/status")).await;
    assert_eq!(unknown.status, 404, "the control server's own answer passes through: {unknown:?}");

    // The container stops (SIGTERM, as Cloudflare stops it): the server drains and exits 0,
    // and the DO, watching the container, records that it stopped.
    let (stopped, _) = podman(&["stop", "--time", "60", &ctr], Duration::from_secs(120));
    assert!(stopped.success(), "podman stop {ctr}");
    let (_, code) =
        podman(&["inspect", "--format", "{{.State.ExitCode}}", &ctr], Duration::from_secs(60));
    assert_eq!(code.trim(), "0", "the control server's exit code after SIGTERM");
    wait_for("the DO to be told the container stopped", Duration::from_secs(60), async || {
        dev.output().contains("town container: stopped").then_some(())
    })
    .await;

    // The next request starts a fresh container. workerd first removes the old sidecar, which
    // podman (unlike Docker) refuses while the stopped container still uses its network
    // namespace ("has dependent containers"); the stopped container is removed here, as Docker
    // would let workerd do.
    let (removed, _) = podman(&["rm", &ctr], Duration::from_secs(60));
    assert!(removed.success(), "podman rm {ctr}");
    let again = dev.get(&format!("/api/towns/{town}/container/health")).await;
    assert_eq!(
        (again.status, &again.body["status"]),
        (200, &json!("ok")),
        "{again:?}\n{}",
        dev.output()
    );
    assert_eq!(dev.output().matches("town container: starting").count(), 2, "{}", dev.output());
    let (_, running) =
        podman(&["inspect", "--format", "{{.State.Running}}", &ctr], Duration::from_secs(60));
    assert_eq!(running.trim(), "true", "a fresh container of the same DO runs");

    // A crash (the server killed, exit 137) is reported to the DO as a failure, not a stop.
    assert_eq!(dev.output().matches("town container: failed").count(), 0, "{}", dev.output());
    let (killed, _) = podman(&["kill", "--signal", "KILL", &ctr], Duration::from_secs(60));
    assert!(killed.success(), "podman kill {ctr}");
    wait_for("the DO to be told the container failed", Duration::from_secs(60), async || {
        dev.output().lines().find(|l| l.contains("town container: failed")).map(str::to_string)
    })
    .await;
    assert_eq!(dev.output().matches("town container: stopped").count(), 1, "{}", dev.output());
    drop(dev);
    drop(service);
}
