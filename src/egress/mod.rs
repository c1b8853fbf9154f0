//! Flows no responder answers: passed out to their real destination from
//! the host namespace, or refused.

mod udp;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

pub use udp::{OnEnd, UdpNat, UdpReport};

/// How long a pass-out connect may take before the SUT's SYN is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an upstream connect failed, in the terms the SUT should see.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    #[error("{0} is unreachable: {1}")]
    Unreachable(SocketAddr, io::Error),
    #[error("connect to {0} timed out")]
    TimedOut(SocketAddr),
    #[error("connect to {0} failed: {1}")]
    Other(SocketAddr, io::Error),
}

/// Connects to `target` from the host namespace.
pub async fn connect(target: SocketAddr) -> Result<TcpStream, ConnectError> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ConnectError::Other(target, e))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target)).await {
        Err(_) => Err(ConnectError::TimedOut(target)),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectError::Refused(target),
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EADDRNOTAVAIL) => {
                ConnectError::Unreachable(target, e)
            }
            Some(libc::ETIMEDOUT) => ConnectError::TimedOut(target),
            _ => ConnectError::Other(target, e),
        }),
    }
}

/// Connects to the host's loopback at `target`, which is what the jail's
/// gateway (`host.meshwrap.internal`) stands for. The name has an IPv4
/// and an IPv6 address, and a client that tries one family and does not
/// fall back fails against a server bound to the other only (most
/// development servers listen on 127.0.0.1 alone): so when one loopback
/// refuses, the other is tried before the SUT is told it was refused.
/// Returns the stream and the address that answered.
pub async fn connect_host_loopback(
    target: SocketAddr,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    match connect(target).await {
        Ok(s) => Ok((s, target)),
        Err(ConnectError::Refused(_)) if target.ip().is_loopback() => {
            let other = match target.ip() {
                IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            };
            let other = SocketAddr::new(other, target.port());
            match connect(other).await {
                Ok(s) => Ok((s, other)),
                // The SUT dialled `target`: its refusal is the answer.
                Err(_) => Err(ConnectError::Refused(target)),
            }
        }
        Err(e) => Err(e),
    }
}

/// What a finished pass-out flow carried.
#[derive(Debug, Default)]
pub struct SpliceReport {
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The first bytes the SUT sent (for the sniffer), at most `SNIFF_BYTES`.
    pub first_bytes: Vec<u8>,
    /// The first bytes the upstream sent (a TLS ServerHello, say).
    pub first_reply_bytes: Vec<u8>,
    pub error: Option<String>,
}

const SNIFF_BYTES: usize = crate::sniff::MAX_SNIFF_BYTES;

/// Copies both ways until both sides are done, honouring half-close: EOF
/// from one side becomes a FIN (shutdown) towards the other.
pub async fn splice<F>(flow: F, upstream: TcpStream) -> SpliceReport
where
    F: AsyncRead + AsyncWrite + Unpin,
{
    let mut tap = Tap {
        inner: flow,
        first: Vec::new(),
    };
    let mut upstream = Tap {
        inner: upstream,
        first: Vec::new(),
    };
    let res =
        tokio::io::copy_bidirectional_with_sizes(&mut tap, &mut upstream, 256 * 1024, 256 * 1024)
            .await;
    let mut report = SpliceReport {
        first_bytes: std::mem::take(&mut tap.first),
        first_reply_bytes: std::mem::take(&mut upstream.first),
        ..Default::default()
    };
    match res {
        Ok((up, down)) => {
            report.bytes_up = up;
            report.bytes_down = down;
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// Records the first bytes read through it.
struct Tap<F> {
    inner: F,
    first: Vec<u8>,
}

impl<F: AsyncRead + Unpin> AsyncRead for Tap<F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.first.len() < SNIFF_BYTES {
            let new = &buf.filled()[before..];
            let take = new.len().min(SNIFF_BYTES - self.first.len());
            let chunk = new[..take].to_vec();
            self.first.extend_from_slice(&chunk);
        }
        res
    }
}

impl<F: AsyncWrite + Unpin> AsyncWrite for Tap<F> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
