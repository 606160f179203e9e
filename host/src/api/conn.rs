//! One client connection's time limits: a connection that is idle, or that never finishes its request's headers, is closed.
//!
//! A connection is always in one of three phases, kept in its [`Exchange`]: reading a
//! request's headers (from the connection's start, or from a request's first byte), answering
//! a request (the handler has it and bounds its body itself, `body_read_timeout`), or idle
//! between requests. The first and last have a deadline (`header_read_timeout`,
//! `idle_timeout`); [`Exchange::expired`] resolves when it passes, and the connection is
//! dropped. The service marks the answering phase; [`Timed`], the stream hyper reads through,
//! marks a request's first byte.

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

/// The stream hyper reads a connection through: it tells the [`Exchange`] when a request's
/// first byte arrives.
pub struct Timed<S> {
    inner: S,
    exchange: Arc<Exchange>,
}

impl<S> Timed<S> {
    /// `inner`, reporting to `exchange`.
    pub fn new(inner: S, exchange: Arc<Exchange>) -> Timed<S> {
        Timed { inner, exchange }
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
