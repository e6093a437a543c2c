//! A loopback TCP proxy a test can cut: stands for the network between the control server and
//! the Worker (the parts on either side are the real ones).
//!
//! - [`CuttableProxy::cut`]: every open connection is dropped and new ones are closed at once,
//!   as when the Worker cannot be reached.
//! - [`CuttableProxy::drop_next_reply_to`]: the next request whose request line contains a
//!   needle reaches the Worker, but its reply is thrown away and the connection closed, as when
//!   an answer is lost on the way back after the work was done.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

#[derive(Default)]
struct Shared {
    down: AtomicBool,
    drop_reply_to: Mutex<Option<String>>,
    dropped: AtomicUsize,
    refused: AtomicUsize,
    open: Mutex<Vec<AbortHandle>>,
}

pub struct CuttableProxy {
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.down.load(Ordering::SeqCst) {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let conn = tokio::spawn(relay(client, target, s.clone()));
                let mut open = lock(&s.open);
                open.retain(|h| !h.is_finished());
                open.push(conn.abort_handle());
            }
        });
        Self { url, shared, task }
    }

    /// The Worker becomes unreachable: open connections are dropped, new ones closed.
    pub fn cut(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        for h in lock(&self.shared.open).drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    /// The next request whose request line contains `needle` is delivered; its reply is lost.
    pub fn drop_next_reply_to(&self, needle: &str) {
        *lock(&self.shared.drop_reply_to) = Some(needle.to_string());
    }

    /// Replies thrown away so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Connections closed at once while cut.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Relays one connection. HTTP/1.1 requests on a connection are sequential, so the first
/// bytes from the Worker after a request containing the needle are that request's reply: they
/// are thrown away and the connection closed.
async fn relay(mut client: TcpStream, target: SocketAddr, s: Arc<Shared>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut lose_reply = false;
    loop {
        tokio::select! {
            r = client.read(&mut up) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                {
                    let mut needle = lock(&s.drop_reply_to);
                    let text = String::from_utf8_lossy(&up[..n]);
                    if needle.as_deref().is_some_and(|x| text.lines().next().is_some_and(|l| l.contains(x))) {
                        *needle = None;
                        lose_reply = true;
                    }
                }
                if server.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            r = server.read(&mut down) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if lose_reply {
                    s.dropped.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
