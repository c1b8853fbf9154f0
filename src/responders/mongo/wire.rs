//! MongoDB wire-protocol framing: OP_MSG, legacy OP_QUERY / OP_REPLY.

use bson::{Bson, Document};

pub const OP_REPLY: i32 = 1;
pub const OP_QUERY: i32 = 2004;
pub const OP_COMPRESSED: i32 = 2012;
pub const OP_MSG: i32 = 2013;
/// The largest message accepted (maxMessageSizeBytes).
pub const MAX_MESSAGE: usize = 48_000_000;

const CHECKSUM_PRESENT: u32 = 1;
/// OP_MSG's optional checksum: CRC-32C of the message before it.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
pub const MORE_TO_COME: u32 = 2;

/// One decoded request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// OP_MSG: the body with kind-1 sequences folded in as arrays.
    Msg {
        request_id: i32,
        flags: u32,
        body: Document,
    },
    /// OP_QUERY (the legacy handshake on `admin.$cmd`).
    Query {
        request_id: i32,
        collection: String,
        query: Document,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("OP_MSG has unknown required flag bits {0:#x}")]
    Flags(u32),
    #[error("OP_MSG checksum does not match its contents")]
    Checksum,
    #[error("message length {0} is out of range")]
    Length(i64),
    #[error("unsupported opcode {0}")]
    Opcode(i32),
    #[error("invalid BSON: {0}")]
    Bson(String),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

fn i32_at(b: &[u8], at: usize) -> Result<i32, WireError> {
    b.get(at..at + 4)
        .map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(WireError::Malformed("truncated"))
}

fn read_doc(b: &[u8], at: &mut usize) -> Result<Document, WireError> {
    let len = i32_at(b, *at)?;
    if len < 5 || *at + len as usize > b.len() {
        return Err(WireError::Bson(format!(
            "document length {len} is out of range"
        )));
    }
    let slice = &b[*at..*at + len as usize];
    super::depth::check(slice)?;
    let d = Document::from_reader(&mut &slice[..]).map_err(|e| WireError::Bson(e.to_string()))?;
    *at += len as usize;
    Ok(d)
}

fn read_cstring(b: &[u8], at: &mut usize) -> Result<String, WireError> {
    let rest = b.get(*at..).ok_or(WireError::Malformed("truncated"))?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(WireError::Malformed("unterminated string"))?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    *at += end + 1;
    Ok(s)
}

/// Splits one complete message off the front of `buf`, if there is one.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32_at(buf, 0)?;
    if len < 16 || len as usize > MAX_MESSAGE {
        return Err(WireError::Length(len as i64));
    }
    Ok((buf.len() >= len as usize).then_some(len as usize))
}

/// Decodes one complete message (header included).
pub fn decode(msg: &[u8]) -> Result<Request, WireError> {
    if msg.len() < 16 {
        return Err(WireError::Length(msg.len() as i64));
    }
    let request_id = i32_at(msg, 4)?;
    let opcode = i32_at(msg, 12)?;
    match opcode {
        OP_MSG => {
            let flags = i32_at(msg, 16)? as u32;
            // The low 16 bits are flags a server must understand: mongod
            // refuses a message with one it does not know.
            let unknown = flags & 0xFFFF & !(CHECKSUM_PRESENT | MORE_TO_COME);
            if unknown != 0 {
                return Err(WireError::Flags(unknown));
            }
            let mut end = msg.len();
            if flags & CHECKSUM_PRESENT != 0 {
                end = end
                    .checked_sub(4)
                    .filter(|e| *e >= 20)
                    .ok_or(WireError::Malformed("no checksum"))?;
                let sent = u32::from_le_bytes([msg[end], msg[end + 1], msg[end + 2], msg[end + 3]]);
                if CRC32C.checksum(&msg[..end]) != sent {
                    return Err(WireError::Checksum);
                }
            }
            let b = &msg[..end];
            let mut at = 20;
            let mut body = None;
            let mut seqs: Vec<(String, Vec<Bson>)> = Vec::new();
            while at < b.len() {
                let kind = b[at];
                at += 1;
                match kind {
                    0 => {
                        if body.is_some() {
                            return Err(WireError::Malformed("two body sections"));
                        }
                        body = Some(read_doc(b, &mut at)?);
                    }
                    1 => {
                        let size = i32_at(b, at)?;
                        if size < 5 || at + size as usize > b.len() {
                            return Err(WireError::Malformed("bad section size"));
                        }
                        let stop = at + size as usize;
                        at += 4;
                        let id = read_cstring(b, &mut at)?;
                        let mut docs = Vec::new();
                        while at < stop {
                            docs.push(Bson::Document(read_doc(b, &mut at)?));
                        }
                        if at != stop {
                            return Err(WireError::Malformed("bad section size"));
                        }
                        seqs.push((id, docs));
                    }
                    _ => return Err(WireError::Malformed("unknown section kind")),
                }
            }
            let mut body = body.ok_or(WireError::Malformed("no body section"))?;
            for (id, docs) in seqs {
                body.insert(id, docs);
            }
            Ok(Request::Msg {
                request_id,
                flags,
                body,
            })
        }
        OP_QUERY => {
            let mut at = 20;
            let collection = read_cstring(msg, &mut at)?;
            at += 8;
            let mut query = read_doc(msg, &mut at)?;
            if let Some(Bson::Document(q)) = query.get("$query").or(query.get("query")) {
                if query
                    .keys()
                    .next()
                    .is_some_and(|k| k.starts_with('$') || k == "query")
                {
                    query = q.clone();
                }
            }
            Ok(Request::Query {
                request_id,
                collection,
                query,
            })
        }
        other => Err(WireError::Opcode(other)),
    }
}

fn header(out: &mut Vec<u8>, request_id: i32, response_to: i32, opcode: i32) -> usize {
    let start = out.len();
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&opcode.to_le_bytes());
    start
}

fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Appends an OP_MSG reply.
pub fn encode_msg(out: &mut Vec<u8>, request_id: i32, response_to: i32, doc: &Document) {
    let start = header(out, request_id, response_to, OP_MSG);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    let _ = doc.to_writer(&mut *out);
    finish(out, start);
}

/// Appends an OP_REPLY (answer to OP_QUERY).
pub fn encode_reply(out: &mut Vec<u8>, request_id: i32, response_to: i32, doc: &Document) {
    let start = header(out, request_id, response_to, OP_REPLY);
    out.extend_from_slice(&8i32.to_le_bytes()); // AwaitCapable
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&1i32.to_le_bytes());
    let _ = doc.to_writer(&mut *out);
    finish(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use proptest::prelude::*;

    fn msg(body: &Document, seq: Option<(&str, Vec<Document>)>, checksum: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let start = header(&mut out, 7, 0, OP_MSG);
        out.extend_from_slice(&(if checksum { 1u32 } else { 0 }).to_le_bytes());
        out.push(0);
        body.to_writer(&mut out).unwrap();
        if let Some((id, docs)) = seq {
            out.push(1);
            let s = out.len();
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(id.as_bytes());
            out.push(0);
            for d in docs {
                d.to_writer(&mut out).unwrap();
            }
            let n = (out.len() - s) as i32;
            out[s..s + 4].copy_from_slice(&n.to_le_bytes());
        }
        if checksum {
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        finish(&mut out, start);
        if checksum {
            // The CRC-32C of everything before it, as drivers send it.
            let end = out.len() - 4;
            let crc = CRC32C.checksum(&out[start..end]);
            out[end..].copy_from_slice(&crc.to_le_bytes());
        }
        out
    }

    #[test]
    fn op_msg_with_sequence_and_checksum() {
        let m = msg(
            &doc! {"insert": "c", "$db": "app"},
            Some(("documents", vec![doc! {"a": 1}, doc! {"a": 2}])),
            true,
        );
        assert_eq!(frame(&m).unwrap(), Some(m.len()));
        let Request::Msg { body, .. } = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(body.get_array("documents").unwrap().len(), 2);
    }

    #[test]
    fn checksum_and_required_flags_are_checked() {
        let body = doc! {"ping": 1, "$db": "admin"};
        let mut m = msg(&body, None, true);
        let last = m.len() - 1;
        m[last] ^= 1;
        assert_eq!(decode(&m).err(), Some(WireError::Checksum));
        let mut m = msg(&body, None, false);
        m[16] |= 1 << 5;
        assert_eq!(decode(&m).err(), Some(WireError::Flags(1 << 5)));
        // exhaustAllowed (bit 16) is optional: accepted.
        let mut m = msg(&body, None, false);
        m[18] |= 1;
        assert!(decode(&m).is_ok());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some(n)) = frame(&bytes) {
                let _ = decode(&bytes[..n]);
            }
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(i in 0usize..60, v in any::<u8>()) {
            let mut m = msg(&doc! {"find": "c", "filter": {"x": 1}, "$db": "d"}, Some(("documents", vec![doc! {"a": 1}])), false);
            let i = i % m.len();
            m[i] = v;
            if let Ok(Some(n)) = frame(&m) {
                let _ = decode(&m[..n]);
            }
        }
    }
}
