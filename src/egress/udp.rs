//! UDP pass-out, NAT style: one host socket per (SUT address, destination)
//! pair, forgotten after a minute without traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::stack::StackHandle;

const IDLE: Duration = Duration::from_secs(60);

/// (SUT address, address the SUT sent to) → the association's task.
type Associations = HashMap<(SocketAddr, SocketAddr), Association>;

struct Association {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    end: Arc<Ending>,
}

/// What an association carried so far, and whom to tell when it ends:
/// its task after a minute idle, or `close_all` when meshwrap stops,
/// whichever comes first (a run is usually shorter than the minute).
struct Ending {
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    on_end: Mutex<Option<OnEnd>>,
}

impl Ending {
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
            Some(a) => match a.tx.send(payload) {
                Ok(()) => return,
                Err(mpsc::error::SendError(p)) => p,
            },
            None => payload,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(payload);
        let end = Arc::new(Ending {
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            on_end: Mutex::new(Some(on_end)),
        });
        map.insert(
            key,
            Association {
                tx,
                end: end.clone(),
            },
        );
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
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
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
