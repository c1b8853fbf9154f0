//! Memory that comes back when flows end. Each flow has two 1 MiB socket
//! buffers (the receive size fixes the TCP window scale at creation, so
//! they cannot start small and grow); what makes them cheap is where they
//! come from and where they go.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::StackStats;

/// Makes every flow's buffers pages of their own, mapped zeroed from the
/// kernel, touched only as far as data reaches, and unmapped when the flow
/// ends. glibc otherwise raises its mmap threshold past 1 MiB after the
/// first such buffer is freed, and serves the next ones from the heap:
/// zeroed by hand (every page touched: 2 MiB resident per flow) and never
/// given back (three rounds of 1,500 connections: 3 GB kept). A fixed
/// threshold turns that off. Called once, before the data plane starts.
pub fn map_flow_buffers_lazily() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; glibc takes
    // its own locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// How often the trimmer looks at the flows that ended.
const TRIM_EVERY: Duration = Duration::from_secs(2);
/// Flows that must have ended since the last trim for the next one.
const TRIM_AFTER_ENDED: u64 = 256;
/// While flows keep ending, a trim at most this often.
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// The smaller allocations of flows (responders' buffers, tasks) come
/// from the heap, which glibc gives back only from its top: after a burst
/// of flows ends, most of it stays resident. A thread of its own (the
/// trim walks the heap; the data plane must not) returns the free pages
/// once many flows have ended: when no more have for a while (their tasks
/// free what they hold a little after the stack lets them go), or every
/// `TRIM_AT_MOST_EVERY` while they keep ending. It stops with the stack.
pub(super) fn spawn_trimmer(stats: Weak<StackStats>) {
    let _ = std::thread::Builder::new()
        .name("meshwrap-trim".into())
        .spawn(move || {
            let (mut trimmed_at, mut last) = (0u64, 0u64);
            let mut last_trim = Instant::now();
            loop {
                std::thread::sleep(TRIM_EVERY);
                let Some(stats) = stats.upgrade() else { return };
                let ended = stats.flows_ended.load(Ordering::Relaxed);
                let settled = ended == last;
                last = ended;
                if ended - trimmed_at >= TRIM_AFTER_ENDED
                    && (settled || last_trim.elapsed() >= TRIM_AT_MOST_EVERY)
                {
                    trim_heap();
                    (trimmed_at, last_trim) = (ended, Instant::now());
                }
            }
        });
}

/// Gives the heap's free pages back to the kernel.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
