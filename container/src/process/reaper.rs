//! Spawning and reaping of every child process of the control server.
//!
//! In the container the control server is PID 1: every orphaned grandchild (a shell command an
//! agent left behind when its Kilo process died) is re-parented to it and must be reaped, or it
//! stays a zombie forever. Outside a container we make ourselves a "child subreaper" so the same
//! happens in development and tests.
//!
//! Reaping with `waitpid(-1)` would steal exit statuses from any other code that waits for its
//! own child (tokio's process driver, `std::process::Command::output`). So this module owns all
//! waiting: children are spawned through [`Reaper::spawn`], which registers the pid while
//! holding the same lock the reaping loop takes, so a child that exits at once cannot be reaped
//! before it is registered. Nothing else in the process may wait for a child, and there is
//! exactly one reaper per process ([`Reaper::global`]).

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How a process ended. `code()` follows the shell's convention (128 + signal number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// A child's exit, observable by any number of waiters.
#[derive(Debug, Clone)]
pub struct ExitWatch(watch::Receiver<Option<Exit>>);

impl ExitWatch {
    /// Waits for the exit. Returns `None` only if the reaper itself went away.
    pub async fn wait(&mut self) -> Option<Exit> {
        self.0.wait_for(Option::is_some).await.ok().and_then(|e| *e)
    }

    /// The exit, if it has happened.
    pub fn now(&self) -> Option<Exit> {
        *self.0.borrow()
    }
}

/// A spawned child: its pid (also its process group id) and its exit.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub exit: ExitWatch,
    pub child: std::process::Child,
}

#[derive(Debug, Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, watch::Sender<Option<Exit>>>>,
}

impl Reaper {
    /// The process's one reaper (two would steal each other's exits). Started on first use:
    /// a thread that sleeps in `waitid(WNOWAIT)` until some child has ended, then reaps every
    /// ended child under the registration lock.
    pub fn global() -> Arc<Self> {
        static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();
        REAPER
            .get_or_init(|| {
                #[cfg(target_os = "linux")]
                if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                    tracing::warn!(error = %e, "could not become a child subreaper; orphans go to init");
                }
                let reaper = Arc::new(Self::default());
                let r = reaper.clone();
                let started = std::thread::Builder::new().name("reaper".into()).spawn(move || r.run());
                if let Err(e) = started {
                    tracing::error!(error = %e, "could not start the reaper thread");
                }
                reaper
            })
            .clone()
    }

    fn run(&self) {
        loop {
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => self.reap(),
                // No children at the moment: look again shortly.
                Err(Errno::ECHILD) => std::thread::sleep(Duration::from_millis(20)),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waitid failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Spawns `cmd` in its own process group (so a stop can signal the agent and everything it
    /// started) and registers it for reaping.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<Spawned> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = watch::channel(None);
        waiting.insert(pid as i32, tx);
        Ok(Spawned { pid, exit: ExitWatch(rx), child })
    }

    /// Reaps every child that has ended. Registered children get their exit delivered; others
    /// (orphans re-parented to us) are just collected.
    fn reap(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: each iteration collects one zombie, and there are finitely many.
        for _ in 0..100_000 {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            };
            match waiting.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(Some(exit));
                }
                None => tracing::debug!(pid = pid.as_raw(), ?exit, "reaped an orphaned process"),
            }
        }
    }
}
