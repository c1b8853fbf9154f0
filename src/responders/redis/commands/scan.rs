//! SCAN cursors for SCAN, HSCAN, SSCAN and ZSCAN: the hash order that keeps
//! Redis's guarantee while keys come and go, the shared option parsing
//! (MATCH, COUNT, TYPE, NOVALUES) and the paging. Kept apart because all
//! four commands, in three files, use it.

use bytes::Bytes;

use super::args::{eq, int};
use super::errors::syntax;
use crate::responders::redis::resp::Reply;

/// A key's place in SCAN order: a hash that never is 0, so cursor 0 only
/// means "start" and "done". Ordering by hash keeps the SCAN guarantee
/// (every element present for the whole iteration is returned) while
/// keys come and go between calls.
pub fn scan_hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % ((1u64 << 63) - 1) + 1
}

/// Options of SCAN and its relatives.
pub struct ScanOpts {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_: Option<Bytes>,
    pub novalues: bool,
}

pub fn scan_opts(args: &[Bytes], allow_type: bool) -> Result<ScanOpts, Reply> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("ERR invalid cursor"))?;
    let mut o = ScanOpts {
        cursor,
        pattern: None,
        count: 10,
        type_: None,
        novalues: false,
    };
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        if eq(a, "match") && i + 1 < args.len() {
            o.pattern = Some(args[i + 1].clone());
            i += 2;
        } else if eq(a, "count") && i + 1 < args.len() {
            let n = int(&args[i + 1])?;
            if n < 1 {
                return Err(syntax());
            }
            o.count = n as usize;
            i += 2;
        } else if allow_type && eq(a, "type") && i + 1 < args.len() {
            o.type_ = Some(args[i + 1].clone());
            i += 2;
        } else if !allow_type && eq(a, "novalues") {
            o.novalues = true;
            i += 1;
        } else {
            return Err(syntax());
        }
    }
    Ok(o)
}

/// One page of a SCAN over `items` (name, payload): the next cursor and
/// the page, before MATCH filtering (as Redis filters after the walk).
pub fn scan_page<T: Clone>(
    items: Vec<(Bytes, T)>,
    cursor: u64,
    count: usize,
) -> (u64, Vec<(Bytes, T)>) {
    let mut v: Vec<(u64, Bytes, T)> = items
        .into_iter()
        .map(|(k, t)| (scan_hash(&k), k, t))
        .filter(|(h, _, _)| *h >= cursor)
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut take = count.min(v.len());
    while take > 0 && take < v.len() && v[take].0 == v[take - 1].0 {
        take += 1;
    }
    let next = v.get(take).map(|x| x.0).unwrap_or(0);
    v.truncate(take);
    (next, v.into_iter().map(|(_, k, t)| (k, t)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_covers_everything() {
        let items: Vec<(Bytes, ())> = (0..100)
            .map(|i| (Bytes::from(format!("k{i}")), ()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut c = 0;
        loop {
            let (next, page) = scan_page(items.clone(), c, 7);
            seen.extend(page.into_iter().map(|(k, _)| k));
            if next == 0 {
                break;
            }
            c = next;
        }
        assert_eq!(seen.len(), 100);
    }
}
