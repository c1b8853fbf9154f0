//! UDP pass-out, NAT style: one host socket per (SUT address, destination)
//! pair, forgotten after a minute without traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::stack::StackHandle;

const IDLE: Duration = Duration::from_secs(60);

/// (SUT address, address the SUT sent to) → the association's task.
type Associations = HashMap<(SocketAddr, SocketAddr), mpsc::UnboundedSender<Vec<u8>>>;

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
        if let Some(tx) = map.get(&key) {
            if tx.send(payload.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(payload);
        map.insert(key, tx);
        let this = self.clone();
        let stack = stack.clone();
        tokio::spawn(async move {
            let mut report = UdpReport::default();
            if let Err(e) = associate(rx, &stack, src, seen_dst, target, &mut report).await {
                report.error = Some(format!("{target}: {e}"));
            }
            on_end(report);
            this.assoc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
    }
}

async fn associate(
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    stack: &StackHandle,
    src: SocketAddr,
    seen_dst: SocketAddr,
    target: SocketAddr,
    report: &mut UdpReport,
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
                    report.bytes_up += p.len() as u64;
                    sock.send(&p).await?;
                }
                None => return Ok(()),
            },
            r = sock.recv(&mut buf) => if let Ok(n) = r {
                report.bytes_down += n as u64;
                stack.send_udp(seen_dst, src, &buf[..n]);
            },
            _ = tokio::time::sleep(IDLE) => return Ok(()),
        }
    }
}
