//! Idle, request and response timeouts for every served connection.
//!
//! The appliance wraps a claimed flow in `Timed` before any responder (or
//! TLS) sees it, and hands the responder the flow's `RequestClock`. The
//! responder says where it is (`wait(partial)` before it reads, `busy()`
//! once a request is complete); `Timed` does the rest at the byte level:
//! - waiting with no request begun: the `idle` limit;
//! - part of a request in hand: `request`, counted from its first byte,
//!   so a client that trickles a byte now and then (slowloris) is cut off
//!   as surely as one that stops;
//! - answering: reads are not timed (a long poll, a blocking pop, a
//!   latency fault), but a write that stays blocked because the client
//!   reads nothing ends after `response`.
//!
//! A limit that expires fails the read or write with `TimedOut`; the
//! responder ends the connection as it would on any I/O error, and the
//! appliance puts what expired on the flow's event.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::rules::timeouts::Timeouts;

/// Which limit ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle(Duration),
    Request(Duration),
    Response(Duration),
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Expired::Idle(d) => write!(f, "closed after {d:?} idle (timeouts.idle)"),
            Expired::Request(d) => write!(
                f,
                "closed: a request was not complete within {d:?} of its first byte (timeouts.request)"
            ),
            Expired::Response(d) => write!(
                f,
                "closed: the client read none of the reply for {d:?} (timeouts.response)"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Reading,
    Busy,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    since: Instant,
    /// Requests being answered at once (HTTP/2 streams); `Busy` while
    /// any is.
    answering: u32,
    expired: Option<Expired>,
}

/// Where a connection's responder is, shared with the flow's `Timed`.
#[derive(Debug, Clone)]
pub struct RequestClock {
    limits: Timeouts,
    state: Arc<Mutex<State>>,
}

impl RequestClock {
    /// A clock for a flow whose first bytes have (`begun`) or have not
    /// arrived yet.
    pub fn new(limits: Timeouts, begun: bool) -> Self {
        let phase = if begun { Phase::Reading } else { Phase::Idle };
        RequestClock {
            limits,
            state: Arc::new(Mutex::new(State {
                phase,
                since: Instant::now(),
                answering: 0,
                expired: None,
            })),
        }
    }

    /// A clock that never expires (a responder driven directly in tests).
    pub fn unlimited() -> Self {
        RequestClock::new(Timeouts::NONE, false)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A whole request is in hand: answering it, reads are not timed.
    pub fn busy(&self) {
        let mut s = self.lock();
        s.phase = Phase::Busy;
    }

    /// The responder is about to read; `partial`: part of the next request
    /// is already buffered (its time keeps counting from its first byte).
    pub fn wait(&self, partial: bool) {
        let mut s = self.lock();
        match (partial, s.phase) {
            (true, Phase::Reading) => {}
            (true, _) => {
                s.phase = Phase::Reading;
                s.since = Instant::now();
            }
            (false, _) => {
                s.phase = Phase::Idle;
                s.since = Instant::now();
            }
        }
    }

    /// One request of several that may run at once (HTTP/2) is being
    /// answered until the guard drops; the connection is idle again when
    /// the last one ends.
    pub fn answering(&self) -> Answering {
        let mut s = self.lock();
        s.answering += 1;
        s.phase = Phase::Busy;
        Answering(self.clone())
    }

    /// The limit that ended the connection, if one did.
    pub fn expired(&self) -> Option<Expired> {
        self.lock().expired
    }

    /// Bytes arrived: an idle connection has begun a request.
    fn on_bytes(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Reading;
            s.since = Instant::now();
        }
    }

    /// When a read that waits now must give up, and what it would say.
    fn read_deadline(&self) -> Option<(Instant, Expired)> {
        let s = self.lock();
        match s.phase {
            Phase::Idle => self.limits.idle.map(|d| (s.since + d, Expired::Idle(d))),
            Phase::Reading => self
                .limits
                .request
                .map(|d| (s.since + d, Expired::Request(d))),
            Phase::Busy => None,
        }
    }

    fn expire(&self, e: Expired) -> io::Error {
        self.lock().expired.get_or_insert(e);
        io::Error::new(io::ErrorKind::TimedOut, e.to_string())
    }
}

/// See `RequestClock::answering`.
pub struct Answering(RequestClock);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.answering = s.answering.saturating_sub(1);
        if s.answering == 0 && s.phase == Phase::Busy {
            s.phase = Phase::Idle;
            s.since = Instant::now();
        }
    }
}

/// A flow under its `RequestClock`'s limits.
pub struct Timed<IO> {
    inner: IO,
    clock: RequestClock,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> Timed<IO> {
    pub fn new(inner: IO, clock: RequestClock) -> Self {
        Timed {
            inner,
            clock,
            read_timer: None,
            write_timer: None,
        }
    }
}

/// Polls a timer set to `at`, (re)arming it first; true once it is due.
fn due(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> bool {
    match timer {
        Some(t) if t.deadline() == at => {}
        Some(t) => t.as_mut().reset(at),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
    timer
        .as_mut()
        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
}

impl<IO: AsyncRead + Unpin> AsyncRead for Timed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Checked before reading too: bytes that trickle in just often
        // enough to keep every read ready must not stretch the limit.
        // A reply still blocked on its way out is the `response` limit's
        // business: the client is not idle while it has not read it.
        let deadline = match this.write_timer {
            Some(_) => None,
            None => this.clock.read_deadline(),
        };
        if let Some((at, what)) = deadline {
            if Instant::now() >= at {
                this.read_timer = None;
                return Poll::Ready(Err(this.clock.expire(what)));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.clock.on_bytes();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match deadline {
                Some((at, what)) if due(&mut this.read_timer, at, cx) => {
                    this.read_timer = None;
                    Poll::Ready(Err(this.clock.expire(what)))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> Timed<IO> {
    /// A write-side poll, failed once it has stayed pending for the
    /// `response` limit.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(limit) = self.clock.limits.response else {
                    return Poll::Pending;
                };
                let at = match &self.write_timer {
                    Some(t) => t.deadline(),
                    None => Instant::now() + limit,
                };
                if due(&mut self.write_timer, at, cx) {
                    self.write_timer = None;
                    return Poll::Ready(Err(self.clock.expire(Expired::Response(limit))));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Timed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stalled(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stalled(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stalled(cx, |io, cx| io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stalled(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(idle: u64, request: u64, response: u64) -> Timeouts {
        let ms = |n| Some(Duration::from_millis(n));
        Timeouts {
            idle: ms(idle),
            request: ms(request),
            response: ms(response),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_then_request_limits() {
        let (mut client, server) = tokio::io::duplex(64);
        let clock = RequestClock::new(limits(1000, 300, 1000), false);
        let mut io = Timed::new(server, clock.clone());
        let mut buf = [0u8; 8];
        // A byte before the idle limit begins a request...
        tokio::time::sleep(Duration::from_millis(900)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        // ...which must be complete 300 ms later, however it trickles.
        clock.wait(true);
        let err = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = client.write_all(b"y").await;
            if let Err(e) = io.read(&mut buf).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            clock.expired(),
            Some(Expired::Request(Duration::from_millis(300)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn busy_reads_wait_and_idle_closes() {
        let (_client, server) = tokio::io::duplex(64);
        let clock = RequestClock::new(limits(200, 100, 1000), true);
        let mut io = Timed::new(server, clock.clone());
        let mut buf = [0u8; 8];
        let guard = clock.answering();
        let r = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
        assert!(r.is_err(), "an answering connection's read is not timed");
        drop(guard);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(clock.expired(), Some(Expired::Idle(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_nobody_reads_ends() {
        let (_client, server) = tokio::io::duplex(16);
        let clock = RequestClock::new(limits(1000, 1000, 500), true);
        clock.busy();
        let mut io = Timed::new(server, clock.clone());
        let err = io.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(clock.expired(), Some(Expired::Response(_))));
    }
}
