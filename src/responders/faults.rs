//! What every responder's faults share: drawing a latency from its range
//! and holding a "hung" connection open while reading nothing useful.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::rules::common::LatencySpec;

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
    let mut sink = [0u8; 4096];
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
