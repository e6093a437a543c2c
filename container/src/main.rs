//! gastown-container: the town container's control server.
//!
//! ```text
//! gastown-container                    serve (settings from the environment, see config.rs)
//! gastown-container write-tools DIR    write the Gastown tool files for Kilo into DIR
//! gastown-container print-env          list the environment variables the server reads
//! ```

mod agents;
mod boot;
mod capacity;
mod clock;
mod config;
mod error;
mod event_log;
mod forge;
mod git;
mod heartbeat;
mod http;
mod kilo;
mod listen;
mod locks;
mod process;
mod sandbox;
mod secret;
mod supervisor;
mod tools;
mod usage_spool;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::git::{GitManager, WorkspacePaths};
use crate::process::Reaper;
use crate::supervisor::Supervisor;

/// The longest a pooled HTTP connection may sit idle and still be reused. The servers we call
/// close idle keep-alive connections (workerd after about 5 s, Bun's `kilo serve` after 10 s),
/// and a request sent on a connection at the moment it is closed fails.
pub const IDLE_CONNECTION_REUSE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => serve(),
        Some("write-tools") => match args.get(1) {
            Some(dir) => match tools::js::write_tools(&PathBuf::from(dir)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the tool files: {e}");
                    ExitCode::FAILURE
                }
            },
            None => usage(),
        },
        Some("print-env") => {
            for name in config::ENV_VARS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Some(_) => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: gastown-container [write-tools DIR | print-env]");
    ExitCode::from(2)
}

fn serve() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Modes of what the server creates never depend on who started it: a umask of 077 (a shell
    // that wrote a secret) would make the rig clones unreadable to the agents' uids. Every folder
    // an agent must reach also gets its mode set explicitly (`git/paths.rs`, `sandbox.rs`).
    let inherited = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if inherited.bits() != 0o022 {
        tracing::info!(inherited = format!("{:03o}", inherited.bits()), "umask set to 022");
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(2);
        }
    };
    // The settings are read: the secrets leave the environment, and the memory that
    // /proc/<pid>/environ shows, before any thread or child exists.
    match secret::erase_from_environ(config::SECRET_VARS) {
        Ok(n) => tracing::debug!(erased = n, "secrets erased from the environment"),
        Err(e) => tracing::warn!(error = %e, "could not erase the secrets from /proc/self/environ"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "control server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    // First, before any child exists: the process's one reaper.
    let reaper = Reaper::global();
    let paths = WorkspacePaths::new(&config.workspace_root)
        .map_err(|e| format!("workspace {}: {e}", config.workspace_root.display()))?;
    let tools_dir = match &config.tools_dir {
        Some(dir) => dir.clone(),
        None => paths.run_dir("tools").map_err(|e| format!("tools folder: {e}"))?,
    };
    // Refreshed at every start, so the files always match this binary's definitions.
    tools::js::write_tools(&tools_dir)
        .map_err(|e| format!("cannot write the tool files to {}: {e}", tools_dir.display()))?;

    let listener = listen::listener(config.listen).await?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let git = GitManager::new(paths, reaper.clone(), config.git_timeout);
    let config = Arc::new(config);
    let supervisor = Supervisor::new(
        config.clone(),
        reaper,
        git,
        tools_dir.clone(),
        format!("http://127.0.0.1:{port}"),
    )
    .map_err(|e| e.to_string())?;
    if supervisor.uids.enabled() {
        sandbox::open_paths(&config.workspace_root, &tools_dir)?;
        // Agents' checkouts belong to their uids; the server (root) still reads them with git2.
        // SAFETY: set once, before any thread of ours uses git2.
        unsafe { git2::opts::set_verify_owner_validation(false) }
            .map_err(|e| format!("git2: {}", e.message()))?;
        tracing::info!(
            first_uid = config.agent_uid_base,
            uids = config.agent_uid_count,
            "agents are isolated: each Kilo process runs under its own uid"
        );
    } else {
        tracing::warn!(
            isolation = supervisor.uids.mode(),
            "agents are NOT isolated: every Kilo process runs as this server's uid, so an agent can read other agents' files and \
             processes and this server's environment (run the server as root, as in the container image, to isolate them)"
        );
    }
    heartbeat::spawn(supervisor.clone());
    supervisor.forward_mayor_replies();
    event_log::spawn(supervisor.clone());
    // Fills the warm pool now when WARM_POOL_MODEL says which model; otherwise after the first start.
    supervisor.refill_pool();
    tracing::info!(
        port,
        workspace = %config.workspace_root.display(),
        agents_per_server = config.agents_per_server,
        token = config.container_token.is_some(),
        local_repos = config.allow_local_repos,
        "control server listening"
    );

    if config.container_token.is_none() {
        tracing::warn!(
            "CONTAINER_TOKEN is not set: every route is open to anyone who can reach this port"
        );
    }
    let app = http::router(supervisor.clone());
    let shutdown = {
        let supervisor = supervisor.clone();
        async move {
            wait_for_shutdown_signal().await;
            tracing::info!("shutdown requested: stopping agents");
            supervisor.shutdown().await;
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string())?;
    tracing::info!("control server stopped");
    Ok(())
}

async fn wait_for_shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; the server will only stop when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
