//! The process's memory budget (`--memory-budget`): what the SUT makes
//! meshwrap hold (bodies in flight, keyspaces, topics, collections,
//! journals) stops growing at a limit the user chose, and each protocol
//! says so the way its real server does (Redis `-OOM`, HTTP 413 and 503,
//! Kafka dropping its oldest records, MongoDB `ExceededMemoryLimit`),
//! instead of the kernel's OOM killer ending the run.
//!
//! What is measured is the process's resident memory, the number the OOM
//! killer and a pod's limit look at: it counts everything, and reading it
//! costs one small read of `/proc/self/statm`. A thread of its own reads
//! it every `SAMPLE_EVERY` (`SAMPLE_NEAR` past 80% of the budget), so the
//! data plane only loads an atomic; when the process is over, the thread
//! first gives freed heap back to the kernel (memory a deleted key or an
//! ended flow left) before the protocols refuse anything.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the resident size is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How often past 80% of the budget.
const SAMPLE_NEAR: Duration = Duration::from_millis(5);
/// Over budget, a trim at most this often (it walks the heap).
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(1);

struct Budget {
    limit: usize,
    resident: AtomicUsize,
    /// Bytes promised to data on its way in (request bodies being read):
    /// the resident size does not show them yet, and without this every
    /// concurrent request would see the whole room.
    reserved: AtomicUsize,
    over: AtomicBool,
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// The default budget: half of what the process may use, which is the
/// cgroup's `memory.max` when one is set (a container, a pod) and the
/// machine's memory otherwise.
pub fn default_limit() -> usize {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        })
        .map_or(usize::MAX, |kib| kib.saturating_mul(1024));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    machine.min(cgroup) / 2
}

/// Sets the budget and starts the thread that watches it. Called once,
/// after the jail is forked (the fork must find no other thread) and with
/// signals blocked (the thread inherits the mask).
pub fn start(limit: usize) {
    if BUDGET
        .set(Budget {
            limit,
            resident: AtomicUsize::new(resident()),
            reserved: AtomicUsize::new(0),
            over: AtomicBool::new(false),
        })
        .is_err()
    {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("meshwrap-budget".into())
        .spawn(|| {
            let Some(b) = BUDGET.get() else { return };
            let mut trimmed = Instant::now()
                .checked_sub(TRIM_AT_MOST_EVERY)
                .unwrap_or_else(Instant::now);
            loop {
                // Near the limit, more often: a fast writer must not run
                // far past it between two reads.
                let near = b.resident.load(Ordering::Relaxed) > b.limit / 10 * 8;
                std::thread::sleep(if near { SAMPLE_NEAR } else { SAMPLE_EVERY });
                let mut now = resident();
                if now > b.limit && trimmed.elapsed() >= TRIM_AT_MOST_EVERY {
                    crate::stack::trim_heap();
                    trimmed = Instant::now();
                    now = resident();
                }
                b.resident.store(now, Ordering::Relaxed);
                b.over.store(now > b.limit, Ordering::Relaxed);
            }
        });
}

/// The budget, if one was started (a run and the sidecar; not unit tests).
pub fn limit() -> Option<usize> {
    BUDGET.get().map(|b| b.limit)
}

/// The resident size last read (0 without a budget).
pub fn used() -> usize {
    BUDGET
        .get()
        .map_or(0, |b| b.resident.load(Ordering::Relaxed))
}

/// Whether the process is past its budget: what grows memory for the SUT
/// is refused until it is back under.
pub fn over() -> bool {
    BUDGET.get().is_some_and(|b| b.over.load(Ordering::Relaxed))
}

/// How much may still be taken (`usize::MAX` without a budget): the
/// budget less the resident size and what is reserved.
pub fn room() -> usize {
    BUDGET.get().map_or(usize::MAX, |b| {
        b.limit
            .saturating_sub(b.resident.load(Ordering::Relaxed))
            .saturating_sub(b.reserved.load(Ordering::Relaxed))
    })
}

/// Room promised to data still arriving, given back when dropped.
#[derive(Debug)]
pub struct Reservation(usize);

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = BUDGET.get() {
            b.reserved.fetch_sub(self.0, Ordering::Relaxed);
        }
    }
}

/// Reserves `bytes` if there is room for them (always, without a budget).
/// The data plane is the only caller, so checking and then adding cannot
/// race with another reservation.
pub fn reserve(bytes: usize) -> Option<Reservation> {
    let Some(b) = BUDGET.get() else {
        return Some(Reservation(0));
    };
    if bytes > room() {
        return None;
    }
    b.reserved.fetch_add(bytes, Ordering::Relaxed);
    Some(Reservation(bytes))
}

/// The budget as the messages name it (`256 MiB`).
pub fn describe(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The process's resident size in bytes, from `/proc/self/statm`.
fn resident() -> usize {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.saturating_mul(usize::try_from(page).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read() {
        let r = resident();
        assert!(r > 1 << 20, "{r}");
        assert!(default_limit() > 0);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(describe(64 << 20), "64 MiB");
        assert_eq!(describe(2 << 30), "2 GiB");
        assert_eq!(describe(1000), "1000 bytes");
    }
}
