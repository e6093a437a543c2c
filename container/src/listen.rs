//! The control server's listening socket: bound from `BIND_ADDR`/`PORT`, or inherited through
//! systemd-style socket activation (`LISTEN_FDS=1`, the socket on fd 3, `LISTEN_PID` naming this
//! process when set).
//!
//! Socket activation lets whoever starts the server hold the port from before the start until
//! after the stop, so no other process can take it in between: a supervisor that must give the
//! server's address to another program before the server runs (a local town hands it to
//! `wrangler dev`) binds the port itself and passes it down.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

/// The first inherited descriptor in the socket-activation protocol.
const FIRST_FD: RawFd = 3;

/// Whether the environment hands this process a socket: `LISTEN_FDS=1` and, if `LISTEN_PID` is
/// set, it names this process. More than one socket is refused (there is one port to serve).
pub fn inherited(
    listen_fds: Option<&str>,
    listen_pid: Option<&str>,
    own_pid: u32,
) -> Result<bool, String> {
    let Some(fds) = listen_fds else { return Ok(false) };
    if listen_pid.is_some_and(|p| p.trim() != own_pid.to_string()) {
        return Ok(false);
    }
    match fds.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("LISTEN_FDS={other}: exactly one inherited socket is supported")),
    }
}

/// The listener to serve on. The variables of the protocol are removed from the environment
/// either way, and an inherited socket is made close-on-exec, so no child (Kilo, git) inherits
/// the port or the claim to it.
pub async fn listener(configured: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let fds = std::env::var("LISTEN_FDS").ok();
    let pid = std::env::var("LISTEN_PID").ok();
    // Removed before the server spawns anything: nothing reads the environment concurrently.
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    if !inherited(fds.as_deref(), pid.as_deref(), std::process::id())? {
        return tokio::net::TcpListener::bind(configured)
            .await
            .map_err(|e| format!("cannot listen on {configured}: {e}"));
    }
    set_cloexec(FIRST_FD).map_err(|e| format!("inherited socket (fd {FIRST_FD}): {e}"))?;
    // SAFETY: the socket-activation protocol hands fd 3 to this process, which owns it from
    // here on; nothing else in the process uses fd 3 (it is taken before any file is opened by
    // the server's own code, and checked to be a listening TCP socket below).
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(FIRST_FD) };
    std_listener
        .local_addr()
        .map_err(|e| format!("fd {FIRST_FD} is not a listening TCP socket: {e}"))?;
    std_listener.set_nonblocking(true).map_err(|e| format!("inherited socket: {e}"))?;
    tokio::net::TcpListener::from_std(std_listener).map_err(|e| format!("inherited socket: {e}"))
}

fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: fd 3 is only borrowed for the two fcntl calls.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = FdFlag::from_bits_truncate(fcntl(borrowed, FcntlArg::F_GETFD)?);
    fcntl(borrowed, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::inherited;

    #[test]
    fn the_protocol_is_followed() {
        assert_eq!(inherited(None, None, 7), Ok(false));
        assert_eq!(inherited(Some("1"), None, 7), Ok(true));
        assert_eq!(inherited(Some("1"), Some("7"), 7), Ok(true));
        assert_eq!(inherited(Some("1"), Some("8"), 7), Ok(false), "meant for another process");
        assert_eq!(inherited(Some("0"), None, 7), Ok(false));
        assert!(inherited(Some("2"), None, 7).is_err());
        assert!(inherited(Some("x"), None, 7).is_err());
    }
}
