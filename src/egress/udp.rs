//! UDP pass-out, NAT style: one host socket per (SUT address, destination)
//! pair, forgotten after a minute without traffic. Bounded as a NAT's
//! table is: at most `MAX_ASSOCIATIONS` sockets (the one used the longest
//! ago makes room for a new one), at most `QUEUE` datagrams waiting for
//! each (more are dropped, as a full socket buffer drops them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::stack::StackHandle;

const IDLE: Duration = Duration::from_secs(60);
/// Host sockets kept for UDP pass-out at most (a SUT sending from 28k
/// source ports once held 12k of them).
const MAX_ASSOCIATIONS: usize = 1024;
/// Datagrams waiting for one association's host socket, at most.
const QUEUE: usize = 256;

/// Orders associations by use, for the one to close when the table is
/// full: a datagram through one takes the next number.
static USE: AtomicU64 = AtomicU64::new(0);

/// (SUT address, address the SUT sent to) → the association's task.
type Associations = HashMap<(SocketAddr, SocketAddr), Association>;

struct Association {
    tx: mpsc::Sender<Vec<u8>>,
    end: Arc<Ending>,
}

/// What an association carried so far, and whom to tell when it ends:
/// its task after a minute idle, or `close_all` when meshwrap stops,
/// whichever comes first (a run is usually shorter than the minute).
struct Ending {
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// `USE` at its last datagram from the SUT.
    last_used: AtomicU64,
    on_end: Mutex<Option<OnEnd>>,
}

impl Ending {
    fn touch(&self) {
        self.last_used
            .store(USE.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    fn report(&self, error: Option<String>) {
        let on_end = self.on_end.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = on_end {
            f(UdpReport {
                bytes_up: self.bytes_up.load(Ordering::Relaxed),
                bytes_down: self.bytes_down.load(Ordering::Relaxed),
                error,
            });
        }
    }
}

/// What one association carried, reported when it expires.
#[derive(Debug, Default)]
pub struct UdpReport {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub error: Option<String>,
}

/// Called once per association when it ends.
pub type OnEnd = Box<dyn FnOnce(UdpReport) + Send>;

#[derive(Clone, Default)]
pub struct UdpNat {
    assoc: Arc<Mutex<Associations>>,
}

impl UdpNat {
    /// Sends `payload` from the SUT's `src` towards `target` on the host
    /// side; replies come back into the jail as if from `seen_dst`.
    /// `on_end` runs when the association this datagram opens ends (it is
    /// dropped unused when the datagram joins an existing association).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        stack: &StackHandle,
        src: SocketAddr,
        seen_dst: SocketAddr,
        target: SocketAddr,
        payload: Vec<u8>,
        on_end: OnEnd,
    ) {
        let key = (src, seen_dst);
        let mut map = self.assoc.lock().unwrap_or_else(|e| e.into_inner());
        let payload = match map.get(&key) {
            Some(a) => {
                a.end.touch();
                match a.tx.try_send(payload) {
                    // Full: dropped, as a full socket buffer drops it.
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => return,
                    Err(mpsc::error::TrySendError::Closed(p)) => p,
                }
            }
            None => payload,
        };
        // An ended association's entry is replaced, not made room for.
        let evicted = if map.len() >= MAX_ASSOCIATIONS && !map.contains_key(&key) {
            let oldest = map
                .iter()
                .min_by_key(|(_, a)| a.end.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k);
            oldest.and_then(|k| map.remove(&k))
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(payload);
        let end = Arc::new(Ending {
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            on_end: Mutex::new(Some(on_end)),
        });
        end.touch();
        map.insert(
            key,
            Association {
                tx,
                end: end.clone(),
            },
        );
        drop(map);
        if let Some(old) = evicted {
            // Its task ends when `old.tx` is dropped; the report is made
            // here, with the reason.
            old.end.report(Some(format!(
                "closed to make room: at most {MAX_ASSOCIATIONS} UDP associations are kept"
            )));
        }
        let this = self.clone();
        let stack = stack.clone();
        tokio::spawn(async move {
            let error = associate(rx, &stack, src, seen_dst, target, &end)
                .await
                .err()
                .map(|e| format!("{target}: {e}"));
            end.report(error);
            let mut map = this.assoc.lock().unwrap_or_else(|e| e.into_inner());
            // A datagram after the end may have opened a new association.
            if map.get(&key).is_some_and(|a| Arc::ptr_eq(&a.end, &end)) {
                map.remove(&key);
            }
        });
    }

    /// Ends every association, reporting what each carried (meshwrap is
    /// stopping: their events would otherwise be lost).
    pub fn close_all(&self) {
        let open: Vec<Association> = self
            .assoc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, a)| a)
            .collect();
        for a in open {
            a.end.report(None);
        }
    }
}

async fn associate(
    mut rx: mpsc::Receiver<Vec<u8>>,
    stack: &StackHandle,
    src: SocketAddr,
    seen_dst: SocketAddr,
    target: SocketAddr,
    counts: &Ending,
) -> std::io::Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(target).await?;
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(p) => {
                    counts.bytes_up.fetch_add(p.len() as u64, Ordering::Relaxed);
                    sock.send(&p).await?;
                }
                None => return Ok(()),
            },
            r = sock.recv(&mut buf) => if let Ok(n) = r {
                counts.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                stack.send_udp(seen_dst, src, &buf[..n]);
            },
            _ = tokio::time::sleep(IDLE) => return Ok(()),
        }
    }
}
