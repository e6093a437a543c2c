//! Bounded capture of a child's stdout and stderr.
//!
//! A child that writes without end must not grow our memory: the buffer keeps the most recent
//! lines up to a byte budget, and a single line is cut at [`MAX_LINE`] bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

pub const MAX_LINE: usize = 4096;

#[derive(Debug)]
pub struct OutputBuffer {
    lines: VecDeque<(Stream, String)>,
    bytes: usize,
    budget: usize,
    dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl OutputBuffer {
    pub fn new(budget: usize) -> Self {
        Self { lines: VecDeque::new(), bytes: 0, budget, dropped: 0 }
    }

    pub fn push(&mut self, stream: Stream, mut line: String) {
        shared_types::text::cut_with_ellipsis(&mut line, MAX_LINE);
        self.bytes += line.len();
        self.lines.push_back((stream, line));
        while self.bytes > self.budget {
            let Some((_, old)) = self.lines.pop_front() else { break };
            self.bytes -= old.len();
            self.dropped += 1;
        }
    }

    /// The last `n` lines, oldest first, one string.
    pub fn tail(&self, n: usize) -> String {
        self.tail_lines(n).join("\n")
    }

    /// The last `n` lines, oldest first.
    pub fn tail_lines(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).map(|(_, l)| l.clone()).collect()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

pub type SharedOutput = Arc<Mutex<OutputBuffer>>;

/// Reads `reader` line by line into `buffer` until EOF, calling `on_line` for each line.
/// `done` is dropped at EOF, so a holder of its receiver learns when all output is in.
pub fn capture<R, F>(
    reader: R,
    stream: Stream,
    buffer: SharedOutput,
    mut on_line: F,
    done: Option<tokio::sync::mpsc::Sender<()>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    F: FnMut(Stream, &str) + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            // Read at most a little more than one line's budget per step, so a newline-free flood
            // is chunked instead of buffered whole.
            match (&mut reader).take((MAX_LINE * 2) as u64).read_until(b'\n', &mut raw).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).trim_end_matches(['\n', '\r']).to_string();
            on_line(stream, &line);
            buffer.lock().unwrap_or_else(|p| p.into_inner()).push(stream, line);
        }
        drop(done);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_within_budget() {
        let mut b = OutputBuffer::new(10);
        for l in ["aaaa", "bbbb", "cccc"] {
            b.push(Stream::Stdout, l.into());
        }
        assert_eq!(b.tail(10), "bbbb\ncccc");
        assert_eq!(b.dropped(), 1);
        assert!(b.bytes() <= 10);
    }

    #[test]
    fn cuts_long_lines() {
        let mut b = OutputBuffer::new(1 << 20);
        b.push(Stream::Stderr, "é".repeat(MAX_LINE));
        assert!(b.tail(1).len() <= MAX_LINE + '…'.len_utf8());
    }
}
