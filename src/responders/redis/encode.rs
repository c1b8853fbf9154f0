//! Writing a reply a piece at a time (`Encoder`), for replies too large
//! to encode whole on the data plane.

use std::io::Write;

use bytes::Bytes;

use super::resp::Reply;

/// Encodes one reply a piece at a time. A reply of hundreds of megabytes
/// (`LRANGE 0 -1` of a huge list, `GET` of a 512 MB value) goes out in
/// pieces of about `limit` bytes that the connection writes one by one,
/// yielding between them: it never sits encoded whole in memory, and the
/// data plane serves other flows while it drains.
pub struct Encoder {
    resp3: bool,
    /// What is still to encode, innermost last.
    stack: Vec<Pending>,
    /// A bulk string part-way out: the payload and how much of it went.
    bulk: Option<(Bytes, usize)>,
}

enum Pending {
    One(Reply),
    Items(std::vec::IntoIter<Reply>),
    Pairs(std::vec::IntoIter<(Reply, Reply)>),
}

impl Encoder {
    pub fn new(reply: Reply, resp3: bool) -> Encoder {
        Encoder {
            resp3,
            stack: vec![Pending::One(reply)],
            bulk: None,
        }
    }

    /// Appends to `out` until it holds `limit` bytes or the reply is all
    /// out; true when it is.
    pub fn fill(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        loop {
            if let Some((b, sent)) = self.bulk.take() {
                let room = limit.saturating_sub(out.len()).max(1);
                let end = b.len().min(sent + room);
                out.extend_from_slice(&b[sent..end]);
                if end < b.len() {
                    self.bulk = Some((b, end));
                    return false;
                }
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= limit {
                return self.stack.is_empty();
            }
            let next = match self.stack.last_mut() {
                None => return true,
                Some(Pending::One(_)) => match self.stack.pop() {
                    Some(Pending::One(r)) => r,
                    _ => unreachable!("the top of the stack was a single reply"),
                },
                Some(Pending::Items(it)) => match it.next() {
                    Some(r) => r,
                    None => {
                        self.stack.pop();
                        continue;
                    }
                },
                Some(Pending::Pairs(it)) => match it.next() {
                    Some((k, v)) => {
                        self.stack.push(Pending::One(v));
                        k
                    }
                    None => {
                        self.stack.pop();
                        continue;
                    }
                },
            };
            self.start(next, out);
        }
    }

    /// Writes a reply's header (or the whole of a small one) and leaves
    /// its contents on the stack.
    fn start(&mut self, r: Reply, out: &mut Vec<u8>) {
        let resp3 = self.resp3;
        match r {
            Reply::Bulk(b) => {
                let _ = write!(out, "${}\r\n", b.len());
                self.bulk = Some((b, 0));
            }
            Reply::Array(items) => {
                let _ = write!(out, "*{}\r\n", items.len());
                self.stack.push(Pending::Items(items.into_iter()));
            }
            Reply::Set(items) | Reply::Push(items) if !resp3 => {
                let _ = write!(out, "*{}\r\n", items.len());
                self.stack.push(Pending::Items(items.into_iter()));
            }
            Reply::Set(items) => {
                let _ = write!(out, "~{}\r\n", items.len());
                self.stack.push(Pending::Items(items.into_iter()));
            }
            Reply::Push(items) => {
                let _ = write!(out, ">{}\r\n", items.len());
                self.stack.push(Pending::Items(items.into_iter()));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    let _ = write!(out, "%{}\r\n", pairs.len());
                } else {
                    let _ = write!(out, "*{}\r\n", pairs.len() * 2);
                }
                self.stack.push(Pending::Pairs(pairs.into_iter()));
            }
            small => small.encode(out, resp3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Piece by piece, a reply comes out byte for byte as `encode` writes
    /// it whole, and no piece is much past the limit.
    #[test]
    fn the_encoder_matches_encode_in_pieces() {
        let big = Bytes::from(vec![b'x'; 10_000]);
        let r = Reply::Array(vec![
            Reply::Int(1),
            Reply::Bulk(big.clone()),
            Reply::Map(vec![
                (
                    Reply::bulk("k"),
                    Reply::Set(vec![Reply::Bulk(big), Reply::Nil]),
                ),
                (Reply::Double(2.5), Reply::Push(vec![])),
            ]),
            Reply::Verbatim("txt".into()),
        ]);
        for resp3 in [false, true] {
            let mut whole = Vec::new();
            r.encode(&mut whole, resp3);
            for limit in [1, 7, 4096, 1 << 20] {
                let mut enc = Encoder::new(r.clone(), resp3);
                let mut got = Vec::new();
                let mut out = Vec::new();
                loop {
                    let done = enc.fill(&mut out, limit);
                    assert!(out.len() <= limit.max(64) + 64, "a piece of {}", out.len());
                    got.extend_from_slice(&out);
                    out.clear();
                    if done {
                        break;
                    }
                }
                assert_eq!(got, whole, "resp3 {resp3} limit {limit}");
            }
        }
    }
}
