//! Short-lived commands (git clone, fetch, worktree add) run to completion through the reaper,
//! with a deadline and bounded output.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::output::{capture, OutputBuffer, Stream};
use super::reaper::{Exit, Reaper, Spawned};
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
    let program = program_of(cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut spawned = reaper
        .spawn(cmd)
        .map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    let output = Captured::start(&mut spawned);
    let deadline = tokio::time::Instant::now() + timeout;
    let exit = wait(&mut spawned, deadline, &program, timeout).await?;
    Ok(Finished { exit, output: output.finish().await })
}

/// Runs `from | to`: `input` is written to `from`'s stdin, and `from`'s stdout is `to`'s stdin.
/// Both share one deadline; past it, both process groups are killed. `from`'s stderr and `to`'s
/// stdout and stderr are kept. The data never passes through this process: it hands data from
/// a process of one uid to a process of another without either reading the other's files.
pub async fn pipe(
    reaper: &Reaper,
    from: &mut Command,
    input: Vec<u8>,
    to: &mut Command,
    timeout: Duration,
) -> Result<(Finished, Finished), CommandError> {
    let (first_program, second_program) = (program_of(from), program_of(to));
    from.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut first = reaper
        .spawn(from)
        .map_err(|source| CommandError::Spawn { program: first_program.clone(), source })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let Some(stream) = first.child.stdout.take() else {
        terminate(first.pid, &mut first.exit, Signal::SIGKILL, Duration::ZERO).await;
        return Err(CommandError::Lost { program: first_program });
    };
    to.stdin(Stdio::from(stream)).stdout(Stdio::piped()).stderr(Stdio::piped());
    let spawned = reaper.spawn(to);
    // The command kept our copy of the pipe's read end: closed now, so `from` sees the pipe
    // break if `to` goes away.
    to.stdin(Stdio::null());
    let mut second = match spawned {
        Ok(second) => second,
        Err(source) => {
            terminate(first.pid, &mut first.exit, Signal::SIGKILL, Duration::ZERO).await;
            return Err(CommandError::Spawn { program: second_program, source });
        }
    };
    if let Some(stdin) = first.child.stdin.take().and_then(|i| ChildStdin::from_std(i).ok()) {
        tokio::spawn(async move {
            let mut stdin = stdin;
            // A producer that stops reading early ends the write with an error; its exit
            // status says what happened.
            let _ = stdin.write_all(&input).await;
        });
    }
    let first_output = Captured::start(&mut first);
    let second_output = Captured::start(&mut second);
    let first_exit = wait(&mut first, deadline, &first_program, timeout).await;
    let second_exit = match first_exit {
        Ok(_) => wait(&mut second, deadline, &second_program, timeout).await,
        Err(_) => {
            terminate(second.pid, &mut second.exit, Signal::SIGKILL, Duration::ZERO).await;
            Err(CommandError::Lost { program: second_program })
        }
    };
    let first = Finished { exit: first_exit?, output: first_output.finish().await };
    let second = Finished { exit: second_exit?, output: second_output.finish().await };
    Ok((first, second))
}

fn program_of(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// The exit of `spawned`, or its process group killed at `deadline`.
async fn wait(
    spawned: &mut Spawned,
    deadline: tokio::time::Instant,
    program: &str,
    timeout: Duration,
) -> Result<Exit, CommandError> {
    match tokio::time::timeout_at(deadline, spawned.exit.wait()).await {
        Ok(Some(exit)) => Ok(exit),
        Ok(None) => Err(CommandError::Lost { program: program.to_string() }),
        Err(_) => {
            terminate(spawned.pid, &mut spawned.exit, Signal::SIGKILL, Duration::ZERO).await;
            Err(CommandError::Timeout { program: program.to_string(), after: timeout })
        }
    }
}

/// The output a process writes to the pipes it was given, read as it comes.
struct Captured {
    buffer: Arc<Mutex<OutputBuffer>>,
    done: tokio::sync::mpsc::Receiver<()>,
}

impl Captured {
    fn start(spawned: &mut Spawned) -> Self {
        let buffer = Arc::new(Mutex::new(OutputBuffer::new(64 * 1024)));
        let (done_tx, done) = tokio::sync::mpsc::channel::<()>(2);
        if let Some(out) = spawned.child.stdout.take().and_then(|o| ChildStdout::from_std(o).ok()) {
            capture(out, Stream::Stdout, buffer.clone(), |_, _| {}, Some(done_tx.clone()));
        }
        if let Some(err) = spawned.child.stderr.take().and_then(|e| ChildStderr::from_std(e).ok()) {
            capture(err, Stream::Stderr, buffer.clone(), |_, _| {}, Some(done_tx));
        }
        Self { buffer, done }
    }

    /// What was read, once the readers have drained what the process wrote before it exited
    /// (bounded: pipes close when the last writer, possibly a grandchild, goes away).
    async fn finish(mut self) -> String {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.done.recv().await.is_some() {}
        })
        .await;
        self.buffer.lock().unwrap_or_else(|p| p.into_inner()).tail(200)
    }
}
