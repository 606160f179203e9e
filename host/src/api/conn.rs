//! One client connection's time limits: a connection that is idle, or that never finishes its request's headers, is closed.
//!
//! A connection is always in one of three phases, kept in its [`Exchange`]: reading a
//! request's headers (from the connection's start, or from a request's first byte), answering
//! a request (the handler has it and bounds its body itself, `body_read_timeout`), or idle
//! between requests. The first and last have a deadline (`header_read_timeout`,
//! `idle_timeout`); [`Exchange::expired`] resolves when it passes, and the connection is
//! dropped. The service marks the answering phase; [`Timed`], the stream hyper reads through,
//! marks a request's first byte.
//!
//! hyper answers a request whose head is too large itself (414 for a target over 64 KiB, 431),
//! with no body. Those answers are written while the connection reads headers, and [`Timed`]
//! gives them Alertmanager's JSON error body like every other error of the API.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The timeouts of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the connection's start, or a request's first byte, to the end of its headers.
    pub header_read: Duration,
    /// Between two requests of a keep-alive connection.
    pub idle: Duration,
}

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
/// No deadline: a request is being answered.
const NEVER: u64 = u64::MAX;

/// A connection's phase and its deadline, shared by the service, the stream and the watchdog.
pub struct Exchange {
    timeouts: Timeouts,
    opened: Instant,
    phase: AtomicU8,
    /// Milliseconds after `opened`, or [`NEVER`].
    deadline_ms: AtomicU64,
    changed: Notify,
}

impl Exchange {
    /// A new connection: its first request's headers are due within `header_read`.
    pub fn new(timeouts: Timeouts) -> Arc<Exchange> {
        let exchange = Exchange {
            timeouts,
            opened: Instant::now(),
            phase: AtomicU8::new(HEAD),
            deadline_ms: AtomicU64::new(NEVER),
            changed: Notify::new(),
        };
        exchange.enter(HEAD, timeouts.header_read);
        Arc::new(exchange)
    }

    fn enter(&self, phase: u8, within: Duration) {
        let deadline = if phase == BUSY { NEVER } else { u64::try_from((self.opened.elapsed() + within).as_millis()).unwrap_or(NEVER - 1) };
        self.phase.store(phase, Ordering::Relaxed);
        self.deadline_ms.store(deadline, Ordering::Relaxed);
        // Answering has no deadline: the watchdog may sleep on to the old one and find none.
        if phase != BUSY {
            self.changed.notify_one();
        }
    }

    /// A request's headers are in: the handler has it.
    pub fn started(&self) {
        self.enter(BUSY, Duration::ZERO);
    }

    /// Its response is ready: the connection is idle until the next request's first byte.
    pub fn answered(&self) {
        self.enter(IDLE, self.timeouts.idle);
    }

    /// Bytes arrived: an idle connection is now reading a request's headers.
    fn bytes_arrived(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(HEAD, self.timeouts.header_read);
        }
    }

    fn reading_headers(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == HEAD
    }

    /// Resolves once the connection has been idle, or reading headers, past its deadline.
    pub async fn expired(&self) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let deadline = self.deadline_ms.load(Ordering::Relaxed);
            if deadline == NEVER {
                changed.await;
                continue;
            }
            let at = self.opened + Duration::from_millis(deadline);
            if Instant::now() >= at {
                return if self.phase.load(Ordering::Relaxed) == IDLE { "idle_timeout" } else { "header_read_timeout" };
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = changed => {}
            }
        }
    }
}

/// The stream hyper reads and writes a connection through: it tells the [`Exchange`] when a
/// request's first byte arrives, and gives hyper's own error answers a JSON body.
pub struct Timed<S> {
    inner: S,
    exchange: Arc<Exchange>,
    /// An error answer in place of hyper's, not yet all written.
    answer: Vec<u8>,
}

impl<S> Timed<S> {
    /// `inner`, reporting to `exchange`.
    pub fn new(inner: S, exchange: Arc<Exchange>) -> Timed<S> {
        Timed { inner, exchange, answer: Vec::new() }
    }
}

/// Alertmanager's JSON error answer for the status of hyper's bodiless answer `head`
/// (`HTTP/1.1 414 URI Too Long\r\n...`), or `None` if `head` is not one.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    let status: u16 = std::str::from_utf8(head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?).ok()?.parse().ok()?;
    // Only statuses whose every answer means the same: a pipelined answer of the API's own that
    // is still being written when the next request's first byte arrives could start a write here
    // too, and a 400's message must stay the API's.
    let (reason, message) = match status {
        414 => ("URI Too Long", "the request target is over 65534 bytes"),
        431 => ("Request Header Fields Too Large", "the request's headers are too large"),
        _ => return None,
    };
    let body = serde_json::json!({ "code": status, "message": message }).to_string();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    Some([head.into_bytes(), body.into_bytes()].concat())
}

impl<S: AsyncWrite + Unpin> Timed<S> {
    /// Write what is left of a replaced answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.answer.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.answer))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.answer.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// While headers are read, whatever hyper writes is its own error answer: take `len` bytes
    /// starting with `head` as written, and write the JSON answer instead.
    fn replaced(&mut self, cx: &mut Context<'_>, head: &[u8], len: usize) -> Option<Poll<io::Result<usize>>> {
        if !self.exchange.reading_headers() || !self.answer.is_empty() {
            return None;
        }
        self.answer = json_answer(head)?;
        Some(match self.poll_answer(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Kept until flushed: hyper flushes, then shuts the connection down.
            _ => Poll::Ready(Ok(len)),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.exchange.bytes_arrived();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_answer(cx))?;
        if let Some(done) = this.replaced(cx, buf, buf.len()) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_answer(cx))?;
        let head = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if let Some(done) = this.replaced(cx, head, bufs.iter().map(|b| b.len()).sum()) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_answers_get_a_json_body() {
        let answer = String::from_utf8(json_answer(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n") && head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], 414);
        assert!(json_answer(b"not a status line").is_none());
        assert!(json_answer(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_none(), "a 400 may be the API's own, with its message");
    }
}
