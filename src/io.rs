//! The one byte-stream type every stage above the stack hands around: a
//! flow as the sniffer, TLS, the responders and the admin API see it.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (a flow, a flow behind TLS, a socket).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An owned stream of any concrete type, for code that takes every kind
/// of flow through one signature (the `Responder` trait).
pub type BoxIo = Box<dyn Io + 'static>;
