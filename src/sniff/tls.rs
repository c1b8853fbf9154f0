//! Just enough of a TLS ClientHello parser to find the SNI. Every read is
//! bounds-checked; a malformed hello is reported as TLS without a name.

use super::Sniff;
use crate::model::Protocol;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

pub(super) fn sniff_client_hello(buf: &[u8]) -> Sniff {
    if buf.len() < 5 {
        // 0x16 then version major 3 is the only plausible start.
        return if buf.len() < 2 || buf[1] == 0x03 {
            Sniff::NeedMore
        } else {
            Sniff::Done(Protocol::Unknown)
        };
    }
    if buf[1] != 0x03 {
        return Sniff::Done(Protocol::Unknown);
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    // The ClientHello may span records; we only look at the first, which
    // holds the SNI for every client seen in practice.
    let available = buf.len() - 5;
    let body = &buf[5..5 + available.min(record_len)];
    if body.first().is_some_and(|&t| t != 0x01) {
        return Sniff::Done(Protocol::Unknown);
    }
    match parse_hello(body) {
        Some(sni) => Sniff::Done(Protocol::Tls { sni }),
        None if available < record_len => Sniff::NeedMore,
        None => Sniff::Done(Protocol::Tls { sni: None }),
    }
}

/// `Some(sni)` once the extensions were read (SNI may be absent); `None`
/// if the hello is cut short.
fn parse_hello(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { buf: body, pos: 0 };
    let _msg_type = r.u8()?;
    let _len = r.u24()?;
    let _version = r.take(2)?;
    let _random = r.take(32)?;
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let comp = usize::from(r.u8()?);
    r.take(comp)?;
    if r.pos == body.len() {
        return Some(None);
    }
    let ext_total = r.u16()?;
    let exts = r.take(ext_total)?;
    let mut e = Reader { buf: exts, pos: 0 };
    while e.pos < exts.len() {
        let kind = e.u16()?;
        let len = e.u16()?;
        let data = e.take(len)?;
        if kind == 0 {
            let mut s = Reader { buf: data, pos: 0 };
            let _list = s.u16()?;
            while s.pos < data.len() {
                let name_type = s.u8()?;
                let n = s.u16()?;
                let name = s.take(n)?;
                if name_type == 0 {
                    return Some(
                        std::str::from_utf8(name)
                            .ok()
                            .map(|s| s.to_ascii_lowercase()),
                    );
                }
            }
        }
    }
    Some(None)
}

/// What the server's first flight says: the negotiated version and ALPN.
pub(super) fn parse_server_hello(buf: &[u8]) -> Option<(Option<String>, Option<String>)> {
    if buf.len() < 5 || buf[0] != 0x16 {
        return None;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    let body = buf.get(5..5 + record_len.min(buf.len() - 5))?;
    let mut r = Reader { buf: body, pos: 0 };
    if r.u8()? != 0x02 {
        return None;
    }
    let _len = r.u24()?;
    let legacy = r.take(2)?;
    let mut version = Some(u16::from_be_bytes([legacy[0], legacy[1]]));
    let _random = r.take(32)?;
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let _suite = r.take(2)?;
    let _comp = r.u8()?;
    let mut alpn = None;
    if r.pos < body.len() {
        let total = r.u16()?;
        let exts = r.take(total)?;
        let mut e = Reader { buf: exts, pos: 0 };
        while e.pos < exts.len() {
            let kind = e.u16()?;
            let len = e.u16()?;
            let data = e.take(len)?;
            match kind {
                43 if data.len() == 2 => version = Some(u16::from_be_bytes([data[0], data[1]])),
                16 if data.len() >= 3 => {
                    let n = usize::from(data[2]);
                    alpn = data
                        .get(3..3 + n)
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                }
                _ => {}
            }
        }
    }
    Some((version.map(version_name), alpn))
}

pub(super) fn version_name(v: u16) -> String {
    match v {
        0x0304 => "TLSv1.3".into(),
        0x0303 => "TLSv1.2".into(),
        0x0302 => "TLSv1.1".into(),
        0x0301 => "TLSv1.0".into(),
        other => format!("0x{other:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with SNI `api.pay.test`.
    fn hello(sni: &str) -> Vec<u8> {
        let mut ext = Vec::new();
        let name = sni.as_bytes();
        let mut sni_ext = Vec::new();
        sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        ext.extend(sni_ext);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&[0x13, 0x01]);
        body.push(1);
        body.push(0);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn finds_sni() {
        let h = hello("API.pay.test");
        assert_eq!(
            sniff_client_hello(&h),
            Sniff::Done(Protocol::Tls {
                sni: Some("api.pay.test".into())
            })
        );
        assert_eq!(sniff_client_hello(&h[..20]), Sniff::NeedMore);
        for i in 0..h.len() {
            let _ = sniff_client_hello(&h[..i]);
        }
    }
}
