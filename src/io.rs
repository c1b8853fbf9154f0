//! The one byte-stream type every stage above the stack hands around: a
//! flow as the sniffer, TLS, the responders and the admin API see it.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (a flow, a flow behind TLS, a socket).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An owned stream of any concrete type, for code that takes every kind
/// of flow through one signature (the `Responder` trait).
pub type BoxIo = Box<dyn Io + 'static>;

/// A connection's read and write buffers start small, grow with what it
/// sends, and go back to small when it is idle: ten thousand idle
/// connections must not each keep what one large request once needed.
pub mod buffers {
    use bytes::BytesMut;

    /// Room made before each read.
    pub const READ_ROOM: usize = 4096;
    /// An empty buffer larger than this is let go before waiting.
    pub const KEEP_IDLE: usize = 64 * 1024;

    /// Makes room to read into, first letting go of a large empty buffer.
    pub fn before_read(buf: &mut BytesMut) {
        if buf.is_empty() && buf.capacity() > KEEP_IDLE {
            *buf = BytesMut::new();
        }
        buf.reserve(READ_ROOM);
    }

    /// Empties a written buffer, letting go of it when it grew large.
    pub fn written(out: &mut Vec<u8>) {
        out.clear();
        if out.capacity() > KEEP_IDLE {
            *out = Vec::new();
        }
    }
}
