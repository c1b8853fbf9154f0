//! Reading a flow's first bytes to classify it, then handing the flow on
//! with those bytes put back in front.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{classify, Sniff, MAX_SNIFF_BYTES, SNIFF_TIMEOUT};
use crate::model::Protocol;

/// An I/O object with already-read bytes replayed before the rest.
pub struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads until the sniffer decides, the client closes, or `SNIFF_TIMEOUT`
/// passes (server-speaks-first protocols), and returns the verdict with
/// the flow rewound to its first byte.
pub async fn sniff_stream<T: AsyncRead + Unpin>(mut io: T) -> (Protocol, Rewind<T>) {
    let mut buf = Vec::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let protocol = loop {
        // Read straight into `buf` (a chunk array here would sit in the
        // future of every flow, for the flow's whole life).
        let room = (MAX_SNIFF_BYTES - buf.len()).min(4096);
        let read =
            tokio::time::timeout_at(deadline, (&mut io).take(room as u64).read_buf(&mut buf)).await;
        let eof = matches!(read, Ok(Ok(0)) | Ok(Err(_)) | Err(_));
        match classify(&buf, eof) {
            Sniff::Done(p) => break p,
            Sniff::NeedMore => continue,
        }
    };
    (protocol, Rewind::new(buf, io))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn replays_prefix() {
        let data: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\nrest";
        let (p, mut r) = sniff_stream(data).await;
        assert_eq!(
            p,
            Protocol::Http1 {
                host: Some("a.test".into())
            }
        );
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, data);
    }
}
