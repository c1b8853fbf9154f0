//! What every responder's faults share: whether a fault fires for a
//! request (`FaultGate`: probability, after, times), drawing a latency from
//! its range, and holding a "hung" connection open while reading nothing
//! useful.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::rules::common::{FaultWhen, LatencySpec};

/// A delay drawn uniformly from the spec's range.
pub fn pick_latency(l: &LatencySpec) -> Duration {
    if l.max <= l.min {
        return l.min;
    }
    let span = (l.max - l.min).as_secs_f64();
    l.min + Duration::from_secs_f64(span * rand::random::<f64>())
}

/// Whether a fault with this probability fires now.
pub fn fires(probability: f64) -> bool {
    probability >= 1.0 || rand::random::<f64>() < probability
}

/// Reads and drops until the client closes (or a minute passes): a hung
/// service that still lets the client's writes through.
pub async fn drain<IO: AsyncRead + Unpin>(io: &mut IO) {
    // On the heap, only once draining starts: an array here would sit in
    // every connection's future (they await this), whether it drains or
    // not.
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Each fault's count of matching requests and of firings, for `after`
/// and `times`; one per service, zeroed by its reset.
#[derive(Debug, Default)]
pub struct FaultGate {
    seen: Vec<AtomicU64>,
    fired: Vec<AtomicU64>,
}

impl FaultGate {
    pub fn new(faults: usize) -> FaultGate {
        FaultGate {
            seen: (0..faults).map(|_| AtomicU64::new(0)).collect(),
            fired: (0..faults).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether fault `i`, whose conditions (command, key, API…) the request
    /// meets, fires for it: the first `after` such requests pass, then it
    /// fires with its probability, at most `times` times.
    pub fn admit(&self, i: usize, when: &FaultWhen) -> bool {
        let (Some(seen), Some(fired)) = (self.seen.get(i), self.fired.get(i)) else {
            return false;
        };
        if seen.fetch_add(1, Ordering::Relaxed) < when.after {
            return false;
        }
        if !fires(when.probability) {
            return false;
        }
        match when.times {
            Some(max) => fired.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }

    pub fn reset(&self) {
        for c in self.seen.iter().chain(&self.fired) {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_then_times() {
        let gate = FaultGate::new(1);
        let when = FaultWhen {
            probability: 1.0,
            times: Some(2),
            after: 1,
        };
        let fired: Vec<bool> = (0..5).map(|_| gate.admit(0, &when)).collect();
        assert_eq!(fired, [false, true, true, false, false]);
        gate.reset();
        assert!(!gate.admit(0, &when));
        assert!(gate.admit(0, &when));
        let never = FaultWhen {
            probability: 0.0,
            times: None,
            after: 0,
        };
        assert!(!(0..100).any(|_| gate.admit(0, &never)));
        assert!(!gate.admit(7, &when), "an unknown fault never fires");
    }
}
