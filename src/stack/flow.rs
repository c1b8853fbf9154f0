//! `Flow`: one TCP connection accepted by the stack, seen by the rest of
//! meshwrap as a tokio `AsyncRead + AsyncWrite`.
//!
//! The stack task owns the smoltcp socket; the flow's task owns the `Flow`.
//! They meet in `FlowShared`: two bounded byte queues with wakers. The flow
//! side marks itself dirty when it changes something the stack must act on
//! (new bytes to send, room freed, shutdown, drop) and the stack task moves
//! bytes between the queues and smoltcp on its next turn.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::model::FlowId;

/// Bytes queued in each direction between the stack and a flow's task, on
/// top of smoltcp's own socket buffers.
pub(crate) const PIPE_CAP: usize = 256 * 1024;

/// Dirty flows waiting for the stack task, and the wake-up for it.
#[derive(Default)]
pub(crate) struct DirtyQueue {
    ids: Mutex<Vec<FlowId>>,
    pub(crate) notify: Notify,
}

impl DirtyQueue {
    pub(crate) fn push(&self, id: FlowId) {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        self.notify.notify_one();
    }

    pub(crate) fn take(&self, into: &mut Vec<FlowId>) {
        into.append(&mut self.ids.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

#[derive(Default)]
pub(crate) struct Pipe {
    /// SUT → flow task.
    pub(crate) inbound: VecDeque<u8>,
    /// Flow task → SUT.
    pub(crate) outbound: VecDeque<u8>,
    /// The SUT sent FIN: after `inbound` drains, reads return 0.
    pub(crate) sut_eof: bool,
    /// The connection is gone (RST from the SUT, or aborted).
    pub(crate) reset: bool,
    /// The flow task shut down its write side: FIN after `outbound` drains.
    pub(crate) app_shutdown: bool,
    /// The flow task asked for a reset (fault injection, protocol error).
    pub(crate) app_abort: bool,
    /// Reset once every byte written so far reached the SUT (a fault that
    /// cuts a response in the middle).
    pub(crate) abort_when_flushed: bool,
    /// The `Flow` was dropped.
    pub(crate) app_dropped: bool,
    /// smoltcp holds received bytes that did not fit `inbound`.
    pub(crate) inbound_blocked: bool,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    /// Whoever waits for `outbound` to drain (`FlowHandle::flushed`).
    pub(crate) flushed_waker: Option<Waker>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl Pipe {
    pub(crate) fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }
    /// Room was freed in `outbound`, or the connection ended: wakes the
    /// writer and whoever waits for the queue to drain.
    pub(crate) fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
        if let Some(w) = self.flushed_waker.take() {
            w.wake();
        }
    }
}

pub(crate) struct FlowShared {
    pub(crate) id: FlowId,
    pub(crate) pipe: Mutex<Pipe>,
    /// Set while the flow sits in the dirty queue, so it is queued once.
    pub(crate) queued: AtomicBool,
    pub(crate) dirty: Arc<DirtyQueue>,
}

impl FlowShared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn mark_dirty(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.dirty.push(self.id);
        }
    }
}

/// One accepted TCP connection. Reading gives what the SUT sent; writing
/// sends to the SUT; `shutdown` sends FIN; dropping closes gracefully.
pub struct Flow {
    shared: Arc<FlowShared>,
}

impl Flow {
    pub(crate) fn new(shared: Arc<FlowShared>) -> Self {
        Flow { shared }
    }

    pub fn id(&self) -> FlowId {
        self.shared.id
    }

    /// Resets the connection (the SUT sees ECONNRESET).
    pub fn abort(&self) {
        self.shared.lock().app_abort = true;
        self.shared.mark_dirty();
    }

    /// A handle that can reset the connection and read its byte counts
    /// from elsewhere (for example from inside an HTTP handler while the
    /// server owns the flow).
    pub fn handle(&self) -> FlowHandle {
        FlowHandle {
            shared: self.shared.clone(),
        }
    }

    /// Bytes received from and sent to the SUT so far.
    pub fn byte_counts(&self) -> (u64, u64) {
        let p = self.shared.lock();
        (p.bytes_in, p.bytes_out)
    }
}

/// Resets a flow, or reads its counters, without owning it.
#[derive(Clone)]
pub struct FlowHandle {
    shared: Arc<FlowShared>,
}

impl FlowHandle {
    /// A handle with no connection behind it, for a responder served over
    /// another transport than the stack (the fuzz targets drive responders
    /// over an in-memory pipe): a reset or a cut only sets its flags.
    pub fn detached(id: FlowId) -> FlowHandle {
        FlowHandle {
            shared: Arc::new(FlowShared {
                id,
                pipe: Mutex::new(Pipe::default()),
                queued: AtomicBool::new(false),
                dirty: Arc::new(DirtyQueue::default()),
            }),
        }
    }

    /// Resets at once; bytes not yet sent are lost.
    pub fn abort(&self) {
        self.shared.lock().app_abort = true;
        self.shared.mark_dirty();
    }

    /// Bytes received from and sent to the SUT so far.
    pub fn byte_counts(&self) -> (u64, u64) {
        let p = self.shared.lock();
        (p.bytes_in, p.bytes_out)
    }

    /// Bytes written by the flow's task that the stack has not yet handed
    /// to smoltcp.
    pub fn pending_out(&self) -> usize {
        self.shared.lock().outbound.len()
    }

    /// Bytes the flow's task has written so far, sent or still queued.
    pub fn written(&self) -> u64 {
        let p = self.shared.lock();
        p.bytes_out + p.outbound.len() as u64
    }

    /// Resolves once the stack has handed every byte written so far to
    /// smoltcp, or the connection is gone: a responder may return before
    /// its last bytes left.
    pub async fn flushed(&self) {
        std::future::poll_fn(|cx| {
            let mut p = self.shared.lock();
            if p.outbound.is_empty() || p.reset || p.app_abort {
                return Poll::Ready(());
            }
            p.flushed_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends FIN once everything written so far is sent; later writes fail.
    pub fn shutdown_write(&self) {
        self.shared.lock().app_shutdown = true;
        self.shared.mark_dirty();
    }

    /// Resets after everything written so far was delivered and acknowledged.
    pub fn abort_after_flush(&self) {
        self.shared.lock().abort_when_flushed = true;
        self.shared.mark_dirty();
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.shared.lock().app_dropped = true;
        self.shared.mark_dirty();
    }
}

impl AsyncRead for Flow {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut p = shared.lock();
        if !p.inbound.is_empty() {
            let n = p.inbound.len().min(buf.remaining());
            let (a, b) = p.inbound.as_slices();
            let from_a = n.min(a.len());
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            p.inbound.drain(..n);
            let blocked = p.inbound_blocked;
            drop(p);
            if blocked {
                shared.mark_dirty();
            }
            return Poll::Ready(Ok(()));
        }
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if p.sut_eof {
            return Poll::Ready(Ok(()));
        }
        p.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Flow {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &self.shared;
        let mut p = shared.lock();
        if p.reset || p.app_abort {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if p.app_shutdown {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = PIPE_CAP.saturating_sub(p.outbound.len());
        if room == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        p.outbound.extend(&data[..n]);
        drop(p);
        shared.mark_dirty();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes handed to the stack are sent as soon as the window allows;
        // there is no buffering to flush on this side.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut p = shared.lock();
        if !p.app_shutdown {
            p.app_shutdown = true;
            drop(p);
            shared.mark_dirty();
        }
        Poll::Ready(Ok(()))
    }
}
