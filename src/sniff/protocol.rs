//! What the sniffer classified a flow as: one variant per detector. It
//! travels with the flow (events, the responder's `speaks`), and only the
//! detectors and the responders of those protocols name its variants.

use serde::Serialize;

/// The application protocol a flow was classified as from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A TLS ClientHello; `sni` is the server name if the client sent one.
    Tls { sni: Option<String> },
    /// HTTP/1.x request line; `host` from the Host header if seen.
    Http1 { host: Option<String> },
    /// The HTTP/2 connection preface (prior knowledge, h2c).
    Http2,
    /// Redis RESP (array or inline command).
    Resp,
    /// A Kafka request header.
    Kafka,
    /// A MongoDB wire-protocol message.
    Mongo,
    /// DNS over TCP.
    Dns,
    /// Bytes that match none of the above.
    Unknown,
    /// The client sent nothing before the sniff timeout (server speaks
    /// first, e.g. SMTP, MySQL) or closed without sending.
    None,
}

impl Protocol {
    /// Short label for events, metrics and the summary.
    pub fn label(&self) -> &'static str {
        match self {
            Protocol::Tls { .. } => "tls",
            Protocol::Http1 { .. } => "http1",
            Protocol::Http2 => "http2",
            Protocol::Resp => "resp",
            Protocol::Kafka => "kafka",
            Protocol::Mongo => "mongo",
            Protocol::Dns => "dns",
            Protocol::Unknown => "unknown",
            Protocol::None => "none",
        }
    }

    /// A hostname the protocol itself carries (SNI, Host header).
    pub fn hostname(&self) -> Option<&str> {
        match self {
            Protocol::Tls { sni } => sni.as_deref(),
            Protocol::Http1 { host } => host.as_deref(),
            _ => None,
        }
    }
}
