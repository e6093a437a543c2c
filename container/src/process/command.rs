//! Short-lived commands (git clone, fetch, worktree add) run to completion through the reaper,
//! with a deadline and bounded output.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{ChildStderr, ChildStdout};

use super::output::{capture, OutputBuffer, Stream};
use super::reaper::{Exit, Reaper};
use super::terminate::terminate;

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    pub exit: Exit,
    /// The tail of stdout and stderr, interleaved as read.
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} did not finish within {after:?}")]
    Timeout { program: String, after: Duration },
    #[error("{program} ended without an exit status")]
    Lost { program: String },
}

/// Runs `cmd` with stdin closed, waits at most `timeout`, kills its process group if it runs
/// over. Output is kept up to 64 KiB.
pub async fn run(
    reaper: &Reaper,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<Finished, CommandError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut spawned = reaper
        .spawn(cmd)
        .map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    let buffer = Arc::new(Mutex::new(OutputBuffer::new(64 * 1024)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(2);
    if let Some(out) = spawned.child.stdout.take().and_then(|o| ChildStdout::from_std(o).ok()) {
        let tx = done_tx.clone();
        capture(out, Stream::Stdout, buffer.clone(), move |_, _| {}, Some(tx));
    }
    if let Some(err) = spawned.child.stderr.take().and_then(|e| ChildStderr::from_std(e).ok()) {
        capture(err, Stream::Stderr, buffer.clone(), move |_, _| {}, Some(done_tx.clone()));
    }
    drop(done_tx);
    let exit = match tokio::time::timeout(timeout, spawned.exit.wait()).await {
        Ok(Some(exit)) => exit,
        Ok(None) => return Err(CommandError::Lost { program }),
        Err(_) => {
            terminate(spawned.pid, &mut spawned.exit, Signal::SIGKILL, Duration::ZERO).await;
            return Err(CommandError::Timeout { program, after: timeout });
        }
    };
    // Let the readers drain what the process wrote before it exited (bounded: pipes close when
    // the last writer, possibly a grandchild, goes away).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while done_rx.recv().await.is_some() {}
    })
    .await;
    let output = buffer.lock().unwrap_or_else(|p| p.into_inner()).tail(200);
    Ok(Finished { exit, output })
}
