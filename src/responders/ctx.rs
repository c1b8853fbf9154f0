//! What a responder is told about the flow it serves.

use std::net::SocketAddr;

use super::deadline::RequestClock;
use crate::model::FlowMeta;

/// Where a responder may forward what it does not answer itself.
#[derive(Debug, Clone)]
pub enum Upstream {
    Addr(SocketAddr),
    /// Resolve this name on the host at use.
    Name(String, u16),
    None,
}

/// What a responder knows about the flow it serves.
#[derive(Debug, Clone)]
pub struct ServeCtx {
    pub meta: FlowMeta,
    pub upstream: Upstream,
    /// Set when meshwrap terminated TLS for this flow: forwarding to the
    /// real destination then speaks TLS too, to this server name.
    pub tls_server_name: Option<String>,
    /// The flow's idle/request/response limits: the responder says when
    /// it waits for a request and when it answers one.
    pub clock: RequestClock,
}
