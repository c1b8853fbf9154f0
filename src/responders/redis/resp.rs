//! RESP: decoding client commands (multibulk and inline) and encoding
//! replies for RESP2 and RESP3.
//!
//! The decoder is total over its input: any byte string gives a command, a
//! "need more bytes" or a protocol error with Redis's own wording, never a
//! panic (the property tests below feed it random bytes). The limits are
//! Redis's: bulk strings up to 512 MB, inline requests and length lines up
//! to 64 KB, at most 1024×1024 arguments... by default Redis allows
//! `INT_MAX`, but a mock does not need to pre-allocate for that.

use std::io::Write;

use bytes::{Buf, Bytes, BytesMut};

use crate::rules::redis::format_double;

pub use super::encode::Encoder;

/// Redis's `proto-max-bulk-len` default.
pub const MAX_BULK_LEN: i64 = 512 * 1024 * 1024;
/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline request or length
/// line it buffers before giving up.
pub const MAX_INLINE: usize = 64 * 1024;
/// More arguments than this is refused as an invalid multibulk length.
pub const MAX_ARGS: i64 = 1024 * 1024;

/// A malformed request; the text follows `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

/// Takes the next command out of `buf` with a fresh decoder (tests and
/// the fuzz target; a connection keeps its [`Decoder`]).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    Decoder::default().decode(buf)
}

/// A connection's decoder. It remembers how far an incomplete command was
/// scanned, so a command of a million arguments arriving a read at a time
/// is scanned once, not once per read (which was quadratic in its size),
/// and a line still waiting for its end is not searched again from its
/// start.
///
/// Between calls the buffer may only grow at its end (reads append); the
/// decoder forgets its place whenever it takes a command out.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Option<Partial>,
    /// Bytes of the pending line already searched for its end.
    searched: usize,
    /// Bytes looked at, for the tests that check the work stays linear.
    #[cfg(test)]
    scanned: usize,
}

/// A multibulk command part-way through: how many arguments it has, where
/// the next one starts, and where those found so far lie.
#[derive(Debug)]
struct Partial {
    count: usize,
    pos: usize,
    spans: Vec<(usize, usize)>,
}

impl Decoder {
    /// Takes the next command out of `buf`. `Ok(None)` means more bytes
    /// are needed (nothing is consumed); an empty `Vec` is an empty request
    /// (a blank inline line or `*0`) which Redis silently skips.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let got = if buf[0] == b'*' {
            self.decode_multibulk(buf)
        } else {
            self.decode_inline(buf)
        };
        if !matches!(got, Ok(None)) {
            self.partial = None;
            self.searched = 0;
        }
        got
    }

    /// Finds the `\r\n` ending the line that starts at `from`; returns the
    /// index of `\r`. A miss remembers how far it looked.
    fn line_end(&mut self, buf: &[u8], from: usize) -> Option<usize> {
        let start = from.max(self.searched);
        let found = find_crlf(buf, start);
        #[cfg(test)]
        {
            self.scanned += found.map_or(buf.len(), |at| at + 2).saturating_sub(start);
        }
        match found {
            Some(at) => {
                self.searched = 0;
                Some(at)
            }
            None => {
                // The last byte may be a `\r` whose `\n` is still to come.
                self.searched = buf.len().saturating_sub(1).max(from);
                None
            }
        }
    }

    fn decode_multibulk(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some(end) = self.line_end(buf, 0) else {
                    if buf.len() > MAX_INLINE {
                        return Err(ProtocolError("too big mbulk count string".into()));
                    }
                    return Ok(None);
                };
                let count = match parse_i64(&buf[1..end]) {
                    Some(n) if n <= MAX_ARGS => n,
                    _ => return Err(ProtocolError("invalid multibulk length".into())),
                };
                if count <= 0 {
                    buf.advance(end + 2);
                    return Ok(Some(Vec::new()));
                }
                Partial {
                    count: count as usize,
                    pos: end + 2,
                    spans: Vec::with_capacity(count.min(1024) as usize),
                }
            }
        };
        // Find where each argument lies without copying; an incomplete
        // command keeps its place for the next read.
        while p.spans.len() < p.count {
            let pos = p.pos;
            if pos >= buf.len() {
                self.partial = Some(p);
                return Ok(None);
            }
            if buf[pos] != b'$' {
                let got = buf[pos] as char;
                return Err(ProtocolError(format!("expected '$', got '{got}'")));
            }
            let Some(line_end) = self.line_end(buf, pos) else {
                if buf.len() - pos > MAX_INLINE {
                    return Err(ProtocolError("too big bulk count string".into()));
                }
                self.partial = Some(p);
                return Ok(None);
            };
            let len = match parse_i64(&buf[pos + 1..line_end]) {
                Some(n) if (0..=MAX_BULK_LEN).contains(&n) => n as usize,
                _ => return Err(ProtocolError("invalid bulk length".into())),
            };
            let start = line_end + 2;
            // Redis skips the two bytes after the payload without looking.
            if buf.len() < start + len + 2 {
                self.partial = Some(p);
                return Ok(None);
            }
            p.spans.push((start, len));
            p.pos = start + len + 2;
        }
        let frozen = buf.split_to(p.pos).freeze();
        Ok(Some(
            p.spans
                .into_iter()
                .map(|(s, l)| frozen.slice(s..s + l))
                .collect(),
        ))
    }

    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let start = self.searched.min(buf.len());
        let found = memchr(b'\n', &buf[start..]).map(|i| start + i);
        #[cfg(test)]
        {
            self.scanned += found.map_or(buf.len(), |nl| nl + 1) - start;
        }
        let Some(nl) = found else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError("too big inline request".into()));
            }
            self.searched = buf.len();
            return Ok(None);
        };
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let args = split_args(&buf[..line_end])
            .ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
        buf.advance(nl + 1);
        Ok(Some(args.into_iter().map(Bytes::from).collect()))
    }
}

/// Finds `\r\n` from `from`; returns the index of `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match memchr(b'\r', &buf[i..buf.len() - 1]) {
            Some(p) => {
                let at = i + p;
                if buf[at + 1] == b'\n' {
                    return Some(at);
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

fn memchr(c: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == c)
}

/// Redis's `string2ll`: an optional `-`, digits, no leading zeros or plus
/// sign, within i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) || (neg && digits == b"0") {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let n = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(n)?
        } else {
            v.checked_mul(10)?.checked_add(n)?
        };
    }
    Some(v)
}

/// Redis's `sdssplitargs`: words separated by blanks, `"..."` with C
/// escapes (`\n`, `\xHH`, …) and `'...'` with only `\'`. `None` when a
/// quote is unbalanced or a closing quote is followed by a non-blank.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        // A NUL ends the request, as it ends the C string Redis splits.
        if i >= n || line[i] == 0 {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok()?;
                    cur.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                    continue;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

/// A reply, encoded for the connection's protocol version at write time.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok,
    Simple(String),
    /// The whole error line without the leading `-` (`ERR ...`,
    /// `WRONGTYPE ...`).
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Nil,
    /// RESP2 `*-1`, RESP3 `_`.
    NilArray,
    Array(Vec<Reply>),
    /// RESP3 map; a flat array of pairs in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 set; an array in RESP2.
    Set(Vec<Reply>),
    /// RESP3 double; a bulk string in RESP2.
    Double(f64),
    /// RESP3 boolean; 1 or 0 in RESP2.
    Bool(bool),
    /// RESP3 push (pub/sub messages); an array in RESP2.
    Push(Vec<Reply>),
    /// RESP3 verbatim text (`txt:`); a bulk string in RESP2.
    Verbatim(String),
    /// Nothing is written (CLIENT REPLY OFF, QUIT after its +OK).
    None,
}

impl Reply {
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn simple(s: &str) -> Reply {
        Reply::Simple(s.to_string())
    }

    /// The reply type for events.
    pub fn label(&self) -> &'static str {
        match self {
            Reply::Ok | Reply::Simple(_) => "simple",
            Reply::Error(_) => "error",
            Reply::Int(_) => "integer",
            Reply::Bulk(_) | Reply::Verbatim(_) => "bulk",
            Reply::Nil | Reply::NilArray => "nil",
            Reply::Array(_) => "array",
            Reply::Map(_) => "map",
            Reply::Set(_) => "set",
            Reply::Double(_) => "double",
            Reply::Bool(_) => "boolean",
            Reply::Push(_) => "push",
            Reply::None => "none",
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding for RESP2 (`resp3 == false`) or RESP3.
    pub fn encode(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Ok => out.extend_from_slice(b"+OK\r\n"),
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => line(out, b'-', s.as_bytes()),
            Reply::Int(n) => {
                let _ = write!(out, ":{n}\r\n");
            }
            Reply::Bulk(b) => bulk(out, b),
            Reply::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::NilArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                let _ = write!(out, "*{}\r\n", items.len());
                for i in items {
                    i.encode(out, resp3);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    let _ = write!(out, "%{}\r\n", pairs.len());
                } else {
                    let _ = write!(out, "*{}\r\n", pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
            Reply::Set(items) | Reply::Push(items) => {
                let tag = match (self, resp3) {
                    (Reply::Set(_), true) => '~',
                    (Reply::Push(_), true) => '>',
                    _ => '*',
                };
                let _ = write!(out, "{tag}{}\r\n", items.len());
                for i in items {
                    i.encode(out, resp3);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if resp3 {
                    line(out, b',', s.as_bytes());
                } else {
                    bulk(out, s.as_bytes());
                }
            }
            Reply::Bool(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Reply::Bool(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Reply::Verbatim(s) if resp3 => {
                let _ = write!(out, "={}\r\ntxt:", s.len() + 4);
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(s) => bulk(out, s.as_bytes()),
            Reply::None => {}
        }
    }
}

fn line(out: &mut Vec<u8>, tag: u8, s: &[u8]) {
    out.push(tag);
    // A simple string or error must not carry a line break.
    out.extend(
        s.iter()
            .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
    );
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    let _ = write!(out, "${}\r\n", b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dec(s: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        decode(&mut BytesMut::from(s))
    }

    #[test]
    fn multibulk_and_partial() {
        let mut b = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI"[..]);
        let cmd = decode(&mut b).unwrap().unwrap();
        assert_eq!(cmd, vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(decode(&mut b).unwrap(), None);
        b.extend_from_slice(b"NG\r\n");
        assert_eq!(decode(&mut b).unwrap().unwrap(), vec![Bytes::from("PING")]);
        assert!(b.is_empty());
    }

    /// A command of 100,000 arguments arriving 1,000 bytes a read is
    /// scanned about once (it was scanned from its start on every read).
    #[test]
    fn a_command_in_pieces_is_scanned_once() {
        let mut cmd = Vec::new();
        let _ = write!(cmd, "*100001\r\n$5\r\nRPUSH\r\n");
        for i in 0..100_000 {
            bulk(&mut cmd, format!("v{i}").as_bytes());
        }
        let mut d = Decoder::default();
        let mut b = BytesMut::new();
        let mut got = None;
        for piece in cmd.chunks(1000) {
            b.extend_from_slice(piece);
            if let Some(a) = d.decode(&mut b).unwrap() {
                got = Some(a);
            }
        }
        let got = got.expect("the whole command");
        assert_eq!(got.len(), 100_001);
        assert_eq!(got[100_000], Bytes::from("v99999"));
        assert!(b.is_empty());
        assert!(
            d.scanned < 2 * cmd.len(),
            "scanned {} bytes of a {}-byte command",
            d.scanned,
            cmd.len()
        );
    }

    /// An inline request sent a byte at a time is searched once.
    #[test]
    fn an_inline_request_in_pieces_is_searched_once() {
        let line = format!("SET k {}\r\n", "x".repeat(30_000));
        let mut d = Decoder::default();
        let mut b = BytesMut::new();
        let mut got = None;
        for c in line.as_bytes() {
            b.extend_from_slice(&[*c]);
            if let Some(a) = d.decode(&mut b).unwrap() {
                got = Some(a);
            }
        }
        assert_eq!(got.unwrap().len(), 3);
        assert!(d.scanned <= line.len(), "scanned {}", d.scanned);
    }

    #[test]
    fn inline_with_quotes() {
        let cmd = dec(b"SET k \"a b\\x41\" 'c\\'d'\r\n").unwrap().unwrap();
        assert_eq!(cmd[2], Bytes::from("a bA"));
        assert_eq!(cmd[3], Bytes::from("c'd"));
        assert!(dec(b"SET \"k\r\n").is_err());
        assert_eq!(dec(b"\r\n").unwrap().unwrap().len(), 0);
        assert_eq!(dec(b"\x00\x01 a\n").unwrap().unwrap().len(), 0);
        assert_eq!(
            dec(b"ab\x00cd\n").unwrap().unwrap(),
            vec![Bytes::from("ab")]
        );
    }

    #[test]
    fn errors_match_redis() {
        assert_eq!(
            dec(b"*x\r\n").unwrap_err().to_string(),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            dec(b"*1\r\n$999999999999\r\n").unwrap_err().to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            dec(b"*1\r\n:1\r\n").unwrap_err().to_string(),
            "Protocol error: expected '$', got ':'"
        );
        assert!(dec(&vec![b'a'; MAX_INLINE + 1]).is_err());
    }

    #[test]
    fn encodes_both_protocols() {
        let r = Reply::Map(vec![(Reply::bulk("a"), Reply::Double(1.5))]);
        let mut v2 = Vec::new();
        r.encode(&mut v2, false);
        assert_eq!(v2, b"*2\r\n$1\r\na\r\n$3\r\n1.5\r\n");
        let mut v3 = Vec::new();
        r.encode(&mut v3, true);
        assert_eq!(v3, b"%1\r\n$1\r\na\r\n,1.5\r\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut b = BytesMut::from(&bytes[..]);
            // Drain commands until an error or a need for more bytes; each
            // success must consume something.
            loop {
                let before = b.len();
                match decode(&mut b) {
                    Ok(Some(_)) => prop_assert!(b.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn resp_shaped_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                    Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"GET".to_vec()),
                    Just(b"\"".to_vec()), Just(b"'".to_vec()), Just(b"\\x4".to_vec()),
                    Just(b"99999999999999999999".to_vec()), Just(b" ".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..5),
                ], 0..40)
        ) {
            let bytes: Vec<u8> = parts.concat();
            let mut b = BytesMut::from(&bytes[..]);
            loop {
                let before = b.len();
                match decode(&mut b) {
                    Ok(Some(_)) => prop_assert!(b.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn roundtrip_multibulk(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..6)) {
            let mut enc = Vec::new();
            let _ = write!(enc, "*{}\r\n", args.len());
            for a in &args { bulk(&mut enc, a); }
            let got = dec(&enc).unwrap().unwrap();
            prop_assert_eq!(got.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), args);
        }
    }
}
