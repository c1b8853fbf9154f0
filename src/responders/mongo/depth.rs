//! How deeply a BSON document nests, measured without recursion before
//! it is decoded: the `bson` crate decodes nested documents recursively,
//! so one message nested a few thousand levels deep would overflow the
//! data plane's stack and abort the whole appliance.

use super::wire::WireError;

/// mongod refuses commands nested deeper than this
/// (`BSONDepth::kDefaultMaxAllowableDepth`).
pub const MAX_DEPTH: usize = 200;

/// Checks that `doc` (one whole BSON document) nests at most `MAX_DEPTH`
/// levels. Lengths are only walked, never trusted for allocation; a
/// malformed document is left for the decoder to reject.
pub fn check(doc: &[u8]) -> Result<(), WireError> {
    // The end offsets of the documents we are inside, innermost last.
    let mut ends: Vec<usize> = Vec::new();
    let mut at = 0usize;
    let len = |at: usize| -> Option<usize> {
        let s = doc.get(at..at + 4)?;
        usize::try_from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok()
    };
    let Some(first) = len(0) else {
        return Ok(());
    };
    ends.push(first.min(doc.len()));
    at += 4;
    while let Some(&end) = ends.last() {
        if at + 1 >= end {
            // The document's trailing NUL.
            ends.pop();
            at = end;
            continue;
        }
        let kind = doc[at];
        at += 1;
        // The element's name.
        let Some(nul) = doc
            .get(at..end)
            .and_then(|s| s.iter().position(|&c| c == 0))
        else {
            return Ok(());
        };
        at += nul + 1;
        let skip = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => 8,
            0x02 | 0x0D | 0x0E => 4 + len(at).unwrap_or(0),
            0x03 | 0x04 => {
                let Some(inner) = len(at) else { return Ok(()) };
                if inner < 5 {
                    return Ok(());
                }
                ends.push((at + inner).min(end));
                if ends.len() > MAX_DEPTH {
                    return Err(WireError::Bson(format!(
                        "BSONObj exceeds maximum nested object depth: {MAX_DEPTH}"
                    )));
                }
                at += 4;
                continue;
            }
            0x05 => 5 + len(at).unwrap_or(0),
            0x06 | 0x0A | 0x7F | 0xFF => 0,
            0x07 => 12,
            0x08 => 1,
            0x0B => {
                // Two C strings: pattern and options.
                let mut n = 0;
                for _ in 0..2 {
                    match doc
                        .get(at + n..end)
                        .and_then(|s| s.iter().position(|&c| c == 0))
                    {
                        Some(p) => n += p + 1,
                        None => return Ok(()),
                    }
                }
                n
            }
            0x0C => 4 + len(at).unwrap_or(0) + 12,
            // Code with scope: its scope document is walked as a nested one
            // after the code string.
            0x0F => {
                let Some(code) = len(at + 4) else {
                    return Ok(());
                };
                at += 8 + code;
                let Some(inner) = len(at) else { return Ok(()) };
                if inner < 5 {
                    return Ok(());
                }
                ends.push((at + inner).min(end));
                if ends.len() > MAX_DEPTH {
                    return Err(WireError::Bson(format!(
                        "BSONObj exceeds maximum nested object depth: {MAX_DEPTH}"
                    )));
                }
                at += 4;
                continue;
            }
            0x10 => 4,
            0x13 => 16,
            _ => return Ok(()),
        };
        at = at.saturating_add(skip);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{a: {a: … {} … }}`, `depth` documents in all, built as bytes (the
    /// bson crate itself would recurse).
    fn nested(depth: usize) -> Vec<u8> {
        let mut doc = vec![5, 0, 0, 0, 0];
        for _ in 1..depth {
            let mut outer = Vec::with_capacity(doc.len() + 8);
            let len = (4 + 1 + 2 + doc.len() + 1) as i32;
            outer.extend_from_slice(&len.to_le_bytes());
            outer.extend_from_slice(&[0x03, b'a', 0]);
            outer.extend_from_slice(&doc);
            outer.push(0);
            doc = outer;
        }
        doc
    }

    #[test]
    fn depth_limit() {
        assert!(check(&nested(MAX_DEPTH)).is_ok());
        assert!(check(&nested(MAX_DEPTH + 1)).is_err());
        assert!(check(&nested(5000)).is_err());
        let ok = bson::to_vec(&bson::doc! { "find": "c", "filter": { "a": { "$in": [1, "x", { "b": [ { "c": 1 } ] }] } }, "$db": "app" }).unwrap();
        assert!(check(&ok).is_ok());
        assert!(bson::Document::from_reader(&mut &nested(MAX_DEPTH)[..]).is_ok());
    }

    #[test]
    fn never_panics_on_garbage() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = check(&bytes);
        }
        let _ = check(&[255, 255, 255, 127, 3, 0, 255, 255, 255, 127]);
    }
}
