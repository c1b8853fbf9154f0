//! FUNCTION DUMP and RESTORE in Redis's own payload: each library's code
//! as an RDB `FUNCTION2` record, then the RDB version (2 bytes) and a
//! CRC64 of all before it (8 bytes), both little-endian, as DUMP writes
//! any value. Strings are written plain; RESTORE reads plain ones (a
//! payload whose strings a real server compressed with LZF is refused).

use bytes::Bytes;

use super::super::resp::Reply;
use super::vm::Vm;
use super::Shared;

/// RDB_OPCODE_FUNCTION2.
const FUNCTION2: u8 = 245;
/// The RDB version Redis 7.2 writes.
const RDB_VERSION: u16 = 11;
const CRC: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

fn bad() -> Reply {
    Reply::err("ERR DUMP payload version or checksum are wrong")
}

fn write_len(out: &mut Vec<u8>, n: usize) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&((n as u16) | 0x4000).to_be_bytes());
    } else if n <= u32::MAX as usize {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
}

pub fn dump(libs: &super::functions::Libraries) -> Bytes {
    let mut out = Vec::new();
    for lib in libs.libs.values() {
        out.push(FUNCTION2);
        write_len(&mut out, lib.code.len());
        out.extend_from_slice(&lib.code);
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(out)
}

/// The libraries' code in a payload.
pub fn parse(payload: &[u8]) -> Result<Vec<Bytes>, Reply> {
    if payload.len() < 10 {
        return Err(bad());
    }
    let (body, crc) = payload.split_at(payload.len() - 8);
    let version = u16::from_le_bytes([body[body.len() - 2], body[body.len() - 1]]);
    let want = u64::from_le_bytes(crc.try_into().map_err(|_| bad())?);
    if version > RDB_VERSION || CRC.checksum(body) != want {
        return Err(bad());
    }
    let mut rest = &body[..body.len() - 2];
    let mut codes = Vec::new();
    while let Some((&op, tail)) = rest.split_first() {
        if op != FUNCTION2 {
            return Err(Reply::err("ERR given type is not a function"));
        }
        let (len, tail) = read_len(tail).ok_or_else(bad)?;
        if tail.len() < len {
            return Err(bad());
        }
        codes.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
    }
    Ok(codes)
}

fn read_len(b: &[u8]) -> Option<(usize, &[u8])> {
    let first = *b.first()?;
    match first >> 6 {
        0 => Some(((first & 0x3f) as usize, &b[1..])),
        1 => Some((
            (((first & 0x3f) as usize) << 8) | *b.get(1)? as usize,
            b.get(2..)?,
        )),
        _ if first == 0x80 => Some((
            u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize,
            b.get(5..)?,
        )),
        _ if first == 0x81 => Some((
            u64::from_be_bytes(b.get(1..9)?.try_into().ok()?) as usize,
            b.get(9..)?,
        )),
        // An encoded (integer or LZF) string.
        _ => None,
    }
}

/// Loads every library of a payload under a RESTORE policy; on any
/// failure the libraries are left as they were.
pub fn restore(vm: &mut Vm, codes: Vec<Bytes>, policy: &str, shared: &Shared) -> Reply {
    let before = vm.libraries.clone();
    if policy == "flush" {
        vm.libraries.libs.clear();
    }
    for code in codes {
        if policy == "append" {
            if let Ok(name) = super::functions::metadata(&code) {
                if vm.libraries.libs.contains_key(&name) {
                    vm.libraries = before;
                    return Reply::Error(format!("ERR Library {name} already exists"));
                }
            }
        }
        let r = vm.function_load(&code, policy != "append", shared);
        if r.is_error() {
            vm.libraries = before;
            return r;
        }
    }
    Reply::Ok
}

#[cfg(test)]
mod tests {
    use super::{parse, read_len, write_len};

    #[test]
    fn lengths_round_trip_in_rdb_encoding() {
        for n in [0usize, 63, 64, 16383, 16384, 70000] {
            let mut out = Vec::new();
            write_len(&mut out, n);
            assert_eq!(read_len(&out).map(|(n, _)| n), Some(n));
        }
    }

    #[test]
    fn a_payload_with_a_bad_checksum_is_refused() {
        assert!(parse(b"\xf5\x01x\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00").is_err());
    }
}
