//! The events file's writer: a thread of its own behind a bounded queue.
//!
//! Events are recorded on the data-plane thread. Writing them there would
//! let whoever reads `--events` stall every flow and DNS: a pipe whose
//! reader stopped (a paused log shipper, a stalled `jq`) blocks `write`.
//! So the data plane only hands the formatted line over; when the queue is
//! full the line is dropped and counted, never waited for. At exit the
//! queue gets a bounded time to drain (a second: the sidecar must be gone
//! within two of SIGTERM).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

/// Lines waiting for the writer, at most; `queue_bytes` bounds their size.
const QUEUE_LINES: usize = 16 * 1024;
/// Bytes waiting for the writer by default (`--events-queue`).
pub const DEFAULT_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// How long the exit waits for the queue to reach the file.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(1);

/// What the writer thread shares with the recording side.
#[derive(Default)]
struct Shared {
    queued_bytes: AtomicUsize,
    queued_lines: AtomicUsize,
    /// Lines that never reached the file: the queue was full, the file
    /// failed, or the exit's drain ran out of time.
    dropped: AtomicU64,
    /// The first write error; the thread stops writing after it.
    error: Mutex<Option<String>>,
}

/// The recording side of the events file.
pub(super) struct LineWriter {
    tx: SyncSender<Arc<str>>,
    /// Bytes that may wait in the queue (large exchanges make long lines).
    queue_bytes: usize,
    /// The file and the queue's far end, until the thread is started.
    unstarted: Option<(File, Receiver<Arc<str>>)>,
    done: Option<Receiver<()>>,
    shared: Arc<Shared>,
}

/// What became of the lines once the writer stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriterReport {
    /// Lines that never reached the events file.
    pub dropped: u64,
    /// Why writing stopped, if it failed.
    pub error: Option<String>,
}

impl LineWriter {
    /// The queue, without its thread: lines pushed wait in it until
    /// `start` (the jail is forked with no other thread alive).
    pub(super) fn new(file: File, queue_bytes: usize) -> LineWriter {
        let (tx, rx) = mpsc::sync_channel::<Arc<str>>(QUEUE_LINES);
        LineWriter {
            tx,
            queue_bytes,
            unstarted: Some((file, rx)),
            done: None,
            shared: Arc::new(Shared::default()),
        }
    }

    /// Starts the thread that writes the lines (once; later calls do
    /// nothing).
    pub(super) fn start(&mut self) -> std::io::Result<()> {
        let Some((file, rx)) = self.unstarted.take() else {
            return Ok(());
        };
        let (done_tx, done) = mpsc::sync_channel(1);
        let theirs = self.shared.clone();
        // Signals are for the signal thread, which forwards them to the
        // jail: this thread is born with every signal blocked (a thread
        // inherits its creator's mask), whoever starts it and when.
        let mut before = SigSet::empty();
        let _ = pthread_sigmask(
            SigmaskHow::SIG_BLOCK,
            Some(&SigSet::all()),
            Some(&mut before),
        );
        let spawned = std::thread::Builder::new()
            .name("meshwrap-events".into())
            .spawn(move || {
                write_lines(BufWriter::new(file), rx, &theirs);
                let _ = done_tx.send(());
            });
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
        spawned?;
        self.done = Some(done);
        Ok(())
    }

    /// Queues one line (without its newline); never blocks.
    pub(super) fn push(&self, line: Arc<str>) {
        let s = &self.shared;
        let len = line.len() + 1;
        let queued = s.queued_bytes.load(Ordering::Relaxed);
        // A line longer than the whole queue still goes when it is empty.
        if queued > 0 && queued + len > self.queue_bytes {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        s.queued_bytes.fetch_add(len, Ordering::Relaxed);
        s.queued_lines.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            s.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            s.queued_lines.fetch_sub(1, Ordering::Relaxed);
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far.
    pub(super) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Closes the queue and waits (at most `DRAIN_AT_EXIT`) for what is in
    /// it to be written; what is still queued then counts as dropped.
    pub(super) fn close(mut self) -> WriterReport {
        if let Err(e) = self.start() {
            tracing::warn!("cannot start the events writer: {e}");
        }
        let LineWriter {
            tx, done, shared, ..
        } = self;
        // Dropping the sender ends the queue: the thread writes what is in
        // it, then says so.
        drop(tx);
        let drained = done.is_none_or(|d| d.recv_timeout(DRAIN_AT_EXIT).is_ok());
        if !drained {
            // The line the thread holds, and those behind it.
            let left = shared.queued_lines.load(Ordering::Relaxed) + 1;
            shared.dropped.fetch_add(left as u64, Ordering::Relaxed);
        }
        report(&shared)
    }
}

/// What became of the lines, as `shared` counts them.
fn report(shared: &Shared) -> WriterReport {
    WriterReport {
        dropped: shared.dropped.load(Ordering::Relaxed),
        error: shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    }
}

/// The writer thread: each line flushed as it comes, so a test or
/// `tail -f` sees it at once. After a write error the rest is discarded
/// (and counted).
fn write_lines(mut w: impl Write, rx: Receiver<Arc<str>>, shared: &Shared) {
    let mut failed = false;
    for line in rx {
        shared
            .queued_bytes
            .fetch_sub(line.len() + 1, Ordering::Relaxed);
        shared.queued_lines.fetch_sub(1, Ordering::Relaxed);
        if failed {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let res = w
            .write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .and_then(|_| w.flush());
        if let Err(e) = res {
            tracing::warn!("cannot write the events file: {e}");
            *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn started(w: File) -> LineWriter {
        let mut writer = LineWriter::new(w, DEFAULT_QUEUE_BYTES);
        writer.start().expect("start");
        writer
    }

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        (File::from(r), File::from(w))
    }

    #[test]
    fn lines_reach_the_file_in_order() {
        let (mut r, w) = pipe();
        let writer = started(w);
        for i in 0..100 {
            writer.push(Arc::from(format!("{{\"n\":{i}}}")));
        }
        assert_eq!(writer.close(), WriterReport::default());
        let mut out = String::new();
        r.read_to_string(&mut out).expect("read");
        let want: String = (0..100).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn a_reader_that_stops_costs_lines_not_waits() {
        // Nobody reads the pipe: its buffer fills, the writer thread blocks
        // in write, the queue fills behind it. Every push still returns.
        let (_r, w) = pipe();
        let writer = started(w);
        let line: Arc<str> = Arc::from("x".repeat(1000));
        let n = 40_000u64;
        for _ in 0..n {
            writer.push(line.clone());
        }
        assert!(writer.dropped() > 0, "nothing was dropped");
        let report = writer.close();
        // The pipe holds 64 KiB (65 lines): every other line is counted,
        // those the queue refused and those still in it at exit.
        assert!(report.dropped >= n - 100, "{report:?}");
        assert!(report.dropped < n, "{report:?}");
    }

    #[test]
    fn a_closed_reader_is_an_error_and_the_rest_is_counted() {
        let (r, w) = pipe();
        drop(r);
        let writer = started(w);
        for _ in 0..10 {
            writer.push(Arc::from("{}"));
        }
        let report = writer.close();
        assert_eq!(report.dropped, 10);
        assert!(report.error.is_some_and(|e| e.contains("pipe")), "no error");
    }
}
