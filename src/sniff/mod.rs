//! Classifying a flow from the first bytes the client sends.
//!
//! `classify` is pure and total: any byte string gives an answer, never a
//! panic, so it can be fed straight from the network (see the property
//! tests below, which feed it random and TLS-shaped bytes).

mod peek;
mod protocol;
mod tls;

pub use peek::{sniff_stream, Rewind};
pub use protocol::Protocol;

/// TLS parameters of a flow, for events.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsInfo {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub version: Option<String>,
    /// True when meshwrap terminated the TLS session (a mocked service);
    /// false when the bytes were passed through untouched.
    pub intercepted: bool,
}

/// Reads a passed-through TLS session's parameters from the first bytes of
/// each side (the ClientHello's SNI, the ServerHello's version and ALPN).
pub fn tls_passthrough_info(client_first: &[u8], server_first: &[u8]) -> Option<TlsInfo> {
    let Sniff::Done(Protocol::Tls { sni }) = classify(client_first, true) else {
        return None;
    };
    let (version, alpn) = tls::parse_server_hello(server_first).unwrap_or((None, None));
    Some(TlsInfo {
        sni,
        alpn,
        version,
        intercepted: false,
    })
}

/// How many bytes the sniffer may ask for before it must decide.
pub const MAX_SNIFF_BYTES: usize = 16 * 1024;

/// How long to wait for a client's first bytes before deciding the protocol
/// is server-speaks-first.
pub const SNIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// The sniffer's answer for the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    Done(Protocol),
    /// The bytes are a plausible prefix of something; read more (up to
    /// `MAX_SNIFF_BYTES`) and ask again.
    NeedMore,
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
/// Commands a Redis client may send inline (without RESP framing).
const RESP_INLINE: &[&str] = &[
    "PING", "AUTH", "HELLO", "INFO", "SELECT", "QUIT", "GET", "SET", "KEYS", "DEL", "EXISTS",
    "ECHO", "CLIENT", "COMMAND", "MONITOR", "FLUSHALL", "FLUSHDB", "DBSIZE",
];

/// Classifies the first bytes of a flow. With `eof` set (the client closed
/// or the sniff timeout passed), never answers `NeedMore`.
pub fn classify(buf: &[u8], eof: bool) -> Sniff {
    let res = classify_inner(buf);
    match res {
        Sniff::NeedMore if eof || buf.len() >= MAX_SNIFF_BYTES => Sniff::Done(fallback(buf)),
        other => other,
    }
}

/// The best guess when no more bytes will come.
fn fallback(buf: &[u8]) -> Protocol {
    if buf.is_empty() {
        return Protocol::None;
    }
    if buf[0] == 0x16 {
        return Protocol::Tls { sni: None };
    }
    if let Some(m) = http_method(buf) {
        if m {
            return Protocol::Http1 { host: None };
        }
    }
    Protocol::Unknown
}

fn classify_inner(buf: &[u8]) -> Sniff {
    if buf.is_empty() {
        return Sniff::NeedMore;
    }
    // TLS handshake record, ClientHello.
    if buf[0] == 0x16 {
        return tls::sniff_client_hello(buf);
    }
    // HTTP/2 prior knowledge.
    let n = buf.len().min(HTTP2_PREFACE.len());
    if buf[..n] == HTTP2_PREFACE[..n] {
        return if n == HTTP2_PREFACE.len() {
            Sniff::Done(Protocol::Http2)
        } else {
            Sniff::NeedMore
        };
    }
    match http_method(buf) {
        Some(true) => return http1(buf),
        Some(false) => return Sniff::NeedMore,
        None => {}
    }
    if let Some(s) = mongo(buf) {
        return s;
    }
    if let Some(s) = kafka(buf) {
        return s;
    }
    if let Some(s) = resp(buf) {
        return s;
    }
    Sniff::Done(Protocol::Unknown)
}

/// `Some(true)`: starts with an HTTP method and a space; `Some(false)`: a
/// prefix of one; `None`: not HTTP.
fn http_method(buf: &[u8]) -> Option<bool> {
    for m in HTTP_METHODS {
        let m = m.as_bytes();
        if buf.len() > m.len() {
            if buf.starts_with(m) && buf[m.len()] == b' ' {
                return Some(true);
            }
        } else if m.starts_with(buf) {
            return Some(false);
        }
    }
    None
}

fn http1(buf: &[u8]) -> Sniff {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Sniff::NeedMore;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let host = head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("host")
            .then(|| strip_port(v.trim()))
    });
    Sniff::Done(Protocol::Http1 { host })
}

/// `api.test:8080` → `api.test`; `[::1]:80` → `::1`.
fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => host.to_string(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// MongoDB: a 16-byte header, little-endian length and a known opcode.
fn mongo(buf: &[u8]) -> Option<Sniff> {
    if buf.len() < 16 {
        // Plausible only if the little-endian length so far is sane.
        return None;
    }
    let len = i32::from_le_bytes(buf[0..4].try_into().ok()?);
    let response_to = i32::from_le_bytes(buf[8..12].try_into().ok()?);
    let opcode = i32::from_le_bytes(buf[12..16].try_into().ok()?);
    let known = matches!(opcode, 2013 | 2004 | 2012);
    (known && (16..=48_000_000).contains(&len) && response_to == 0)
        .then_some(Sniff::Done(Protocol::Mongo))
}

/// Kafka: big-endian size, then api_key, api_version, correlation id and a
/// nullable client id string.
fn kafka(buf: &[u8]) -> Option<Sniff> {
    if buf.len() < 14 {
        return None;
    }
    let size = i32::from_be_bytes(buf[0..4].try_into().ok()?);
    let api_key = i16::from_be_bytes(buf[4..6].try_into().ok()?);
    let api_version = i16::from_be_bytes(buf[6..8].try_into().ok()?);
    let client_id_len = i16::from_be_bytes(buf[12..14].try_into().ok()?);
    let plausible = (10..=100 * 1024 * 1024).contains(&size)
        && (0..=100).contains(&api_key)
        && (0..=30).contains(&api_version)
        && client_id_len >= -1
        && i32::from(client_id_len) <= size - 10;
    plausible.then_some(Sniff::Done(Protocol::Kafka))
}

/// Redis: a RESP array of bulk strings, or an inline command line.
fn resp(buf: &[u8]) -> Option<Sniff> {
    if buf[0] == b'*' {
        let digits = buf[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return (buf.len() == 1).then_some(Sniff::NeedMore);
        }
        let rest = &buf[1 + digits..];
        if rest.is_empty() || rest == b"\r" || rest == b"\r\n" {
            return Some(Sniff::NeedMore);
        }
        return rest
            .starts_with(b"\r\n$")
            .then_some(Sniff::Done(Protocol::Resp));
    }
    let line_end = buf.iter().position(|&c| c == b'\n');
    let word_end = buf
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .unwrap_or(buf.len());
    let word = std::str::from_utf8(&buf[..word_end]).ok()?;
    if RESP_INLINE.iter().any(|c| c.eq_ignore_ascii_case(word)) {
        return Some(if line_end.is_some() {
            Sniff::Done(Protocol::Resp)
        } else {
            Sniff::NeedMore
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http1_with_host() {
        let s = classify(
            b"GET / HTTP/1.1\r\nHost: api.test:8080\r\nAccept: */*\r\n\r\n",
            false,
        );
        assert_eq!(
            s,
            Sniff::Done(Protocol::Http1 {
                host: Some("api.test".into())
            })
        );
        assert_eq!(classify(b"GE", false), Sniff::NeedMore);
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n", true),
            Sniff::Done(Protocol::Http1 { host: None })
        );
    }

    #[test]
    fn http2_preface() {
        assert_eq!(classify(HTTP2_PREFACE, false), Sniff::Done(Protocol::Http2));
        assert_eq!(classify(&HTTP2_PREFACE[..5], false), Sniff::NeedMore);
    }

    #[test]
    fn resp_forms() {
        assert_eq!(
            classify(b"*1\r\n$4\r\nPING\r\n", false),
            Sniff::Done(Protocol::Resp)
        );
        assert_eq!(classify(b"PING\r\n", false), Sniff::Done(Protocol::Resp));
        assert_eq!(classify(b"*", false), Sniff::NeedMore);
    }

    #[test]
    fn mongo_and_kafka_headers() {
        let mut m = Vec::new();
        m.extend_from_slice(&100i32.to_le_bytes());
        m.extend_from_slice(&1i32.to_le_bytes());
        m.extend_from_slice(&0i32.to_le_bytes());
        m.extend_from_slice(&2013i32.to_le_bytes());
        assert_eq!(classify(&m, false), Sniff::Done(Protocol::Mongo));
        // ApiVersions v3, correlation 1, client id "rdkafka".
        let mut k = Vec::new();
        k.extend_from_slice(&20i32.to_be_bytes());
        k.extend_from_slice(&18i16.to_be_bytes());
        k.extend_from_slice(&3i16.to_be_bytes());
        k.extend_from_slice(&1i32.to_be_bytes());
        k.extend_from_slice(&7i16.to_be_bytes());
        k.extend_from_slice(b"rdkafka");
        assert_eq!(classify(&k, false), Sniff::Done(Protocol::Kafka));
    }

    #[test]
    fn empty_and_eof() {
        assert_eq!(classify(b"", true), Sniff::Done(Protocol::None));
        assert_eq!(
            classify(b"\x00\x01garbage", true),
            Sniff::Done(Protocol::Unknown)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600), eof: bool) {
            let r = classify(&buf, eof);
            if eof { prop_assert!(matches!(r, Sniff::Done(_))); }
        }

        #[test]
        fn tls_prefixes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut buf = vec![0x16, 0x03, 0x01];
            buf.extend(tail);
            let _ = classify(&buf, false);
            let _ = classify(&buf, true);
        }
    }
}
