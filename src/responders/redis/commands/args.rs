//! Argument parsing shared by the commands: integers, counts and floats
//! with Redis's rules and error replies, case-blind option names, the
//! start/stop range normalisation, and the bulk-array reply. Separate from
//! the command table so the table file stays a table.

use bytes::Bytes;

use super::errors::{not_float, not_int};
use crate::responders::redis::resp::{parse_i64, Reply};

pub fn int(b: &[u8]) -> Result<i64, Reply> {
    parse_i64(b).ok_or_else(not_int)
}

/// A count that must not be negative (LPOP, SPOP, …).
pub fn positive(b: &[u8]) -> Result<usize, Reply> {
    let n = int(b)?;
    if n < 0 {
        return Err(Reply::err("ERR value is out of range, must be positive"));
    }
    Ok(n as usize)
}

/// Redis's `strtold`-based float parsing: `inf`, `-inf`, `1e3`; no NaN,
/// no surrounding blanks.
pub fn parse_float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        other => other.parse::<f64>().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

pub fn float(b: &[u8]) -> Result<f64, Reply> {
    parse_float(b).ok_or_else(not_float)
}

pub fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Redis's start/stop normalisation for LRANGE, ZRANGE, GETRANGE:
/// the inclusive index range, or `None` when empty.
pub fn range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { start + len } else { start };
    let mut e = if stop < 0 { stop + len } else { stop };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

/// A reply of bulk strings.
pub fn bulks<I: IntoIterator<Item = Bytes>>(it: I) -> Reply {
    Reply::Array(it.into_iter().map(Reply::Bulk).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range(0, -1, 3), Some((0, 2)));
        assert_eq!(range(-100, 100, 3), Some((0, 2)));
        assert_eq!(range(2, 1, 3), None);
        assert_eq!(range(5, 10, 3), None);
    }
}
