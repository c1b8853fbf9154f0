//! Streams: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XSETID, XREAD,
//! consumer groups (XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM) and XINFO, with Redis 7.2's replies and error texts. XREAD
//! and XREADGROUP with BLOCK wait in `blocking.rs` like the list pops.
//!
//! This file holds IDs, ranges and the commands on entries; `read`
//! (XREAD, XREADGROUP), `groups` (XGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM) and `info` (XINFO) the rest.

mod groups;
mod info;
mod read;

pub use groups::{xack, xautoclaim, xclaim, xgroup, xpending};
pub use info::xinfo;
pub use read::{parse_read, try_read, Read};

use bytes::Bytes;

use super::{eq, int, syntax, wrong_args, Ctx, R};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::now_ms;
use crate::responders::redis::stream::{Fields, Stream, StreamId, Trim};

pub(super) fn invalid_id() -> Reply {
    Reply::err("ERR Invalid stream ID specified as stream command argument")
}

pub(super) use super::typed::{get_stream, stream_or_new};

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `ms-seq`, or `ms` with `missing_seq` for the sequence.
pub(super) fn parse_id(b: &[u8], missing_seq: u64) -> Result<StreamId, Reply> {
    let s = std::str::from_utf8(b).map_err(|_| invalid_id())?;
    match s.split_once('-') {
        Some((ms, seq)) => Ok(StreamId {
            ms: parse_u64(ms.as_bytes()).ok_or_else(invalid_id)?,
            seq: parse_u64(seq.as_bytes()).ok_or_else(invalid_id)?,
        }),
        None => Ok(StreamId {
            ms: parse_u64(s.as_bytes()).ok_or_else(invalid_id)?,
            seq: missing_seq,
        }),
    }
}

/// A range's start: `-`, an ID, `ms` (its first), `(id` exclusive.
/// `None`: an exclusive bound past the last ID, an empty range.
pub(super) fn range_start(b: &[u8]) -> Result<Option<StreamId>, Reply> {
    if b == b"-" {
        return Ok(Some(StreamId::MIN));
    }
    if b == b"+" {
        return Ok(Some(StreamId::MAX));
    }
    match b.strip_prefix(b"(") {
        Some(rest) => Ok(parse_id(rest, 0)?.next()),
        None => parse_id(b, 0).map(Some),
    }
}

pub(super) fn range_end(b: &[u8]) -> Result<Option<StreamId>, Reply> {
    if b == b"+" {
        return Ok(Some(StreamId::MAX));
    }
    if b == b"-" {
        return Ok(Some(StreamId::MIN));
    }
    match b.strip_prefix(b"(") {
        Some(rest) => Ok(parse_id(rest, u64::MAX)?.prev()),
        None => parse_id(b, u64::MAX).map(Some),
    }
}

pub(super) fn fields_reply(f: &Fields) -> Reply {
    let mut v = Vec::with_capacity(f.len() * 2);
    for (k, val) in f {
        v.push(Reply::Bulk(k.clone()));
        v.push(Reply::Bulk(val.clone()));
    }
    Reply::Array(v)
}

pub fn entry_reply(id: StreamId, f: &Fields) -> Reply {
    Reply::Array(vec![Reply::Bulk(id.bulk()), fields_reply(f)])
}

/// `MAXLEN|MINID [=|~] threshold [LIMIT n]` at `a[i]`; the strategy, the
/// limit and the index after it.
fn parse_trim(a: &[Bytes], mut i: usize) -> Result<(Trim, Option<usize>, usize), Reply> {
    let by_len = eq(&a[i], "maxlen");
    i += 1;
    let mut approx = false;
    if let Some(op) = a.get(i) {
        if &op[..] == b"~" {
            approx = true;
            i += 1;
        } else if &op[..] == b"=" {
            i += 1;
        }
    }
    let threshold = a.get(i).ok_or_else(syntax)?;
    i += 1;
    let strategy = if by_len {
        let n = int(threshold)?;
        if n < 0 {
            return Err(Reply::err("ERR The MAXLEN argument must be >= 0."));
        }
        Trim::MaxLen(n as u64)
    } else {
        Trim::MinId(parse_id(threshold, 0)?)
    };
    let mut limit = None;
    if a.get(i).is_some_and(|x| eq(x, "limit")) {
        let n = int(a.get(i + 1).ok_or_else(syntax)?)?;
        if n < 0 {
            return Err(Reply::err("ERR The LIMIT argument must be >= 0."));
        }
        if !approx {
            return Err(Reply::err(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        // LIMIT 0 means no limit.
        limit = (n > 0).then_some(n as usize);
        i += 2;
    }
    Ok((strategy, limit, i))
}

/// The ID XADD gives `*` or `ms-*`, or checks an explicit one against.
fn next_id(s: &Stream, wanted: &[u8]) -> Result<StreamId, Reply> {
    let last = s.last_id;
    let smaller = || {
        Reply::err(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        )
    };
    if wanted == b"*" {
        let now = now_ms().max(0) as u64;
        return if now > last.ms {
            Ok(StreamId { ms: now, seq: 0 })
        } else {
            last.next().ok_or_else(|| {
                Reply::err(
                    "ERR The stream has exhausted the last possible ID, unable to add more items",
                )
            })
        };
    }
    if let Some(ms) = wanted.strip_suffix(b"-*") {
        let ms = parse_u64(ms).ok_or_else(invalid_id)?;
        return match ms.cmp(&last.ms) {
            std::cmp::Ordering::Less => Err(smaller()),
            std::cmp::Ordering::Equal if s.entries_added > 0 || last != StreamId::MIN => last
                .seq
                .checked_add(1)
                .map(|seq| StreamId { ms, seq })
                .ok_or_else(smaller),
            _ => Ok(StreamId {
                ms,
                seq: u64::from(ms == 0),
            }),
        };
    }
    let id = parse_id(wanted, 0)?;
    if id == StreamId::MIN {
        return Err(Reply::err(
            "ERR The ID specified in XADD must be greater than 0-0",
        ));
    }
    if id <= last {
        return Err(smaller());
    }
    Ok(id)
}

pub fn xadd(c: &mut Ctx, a: &[Bytes]) -> R {
    let key = &a[1];
    let mut i = 2;
    let mut mkstream = true;
    let mut trim = None;
    while i < a.len() {
        if eq(&a[i], "nomkstream") {
            mkstream = false;
            i += 1;
        } else if eq(&a[i], "maxlen") || eq(&a[i], "minid") {
            let (t, limit, next) = parse_trim(a, i)?;
            trim = Some((t, limit));
            i = next;
        } else {
            break;
        }
    }
    let Some(wanted) = a.get(i) else {
        return Err(wrong_args("xadd"));
    };
    let pairs = &a[i + 1..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(wrong_args("xadd"));
    }
    let db = c.db();
    if !mkstream && get_stream(db, key)?.is_none() {
        return Ok(Reply::Nil);
    }
    let s = stream_or_new(db, key)?;
    let id = next_id(s, wanted)?;
    let fields: Fields = pairs
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    s.entries.insert(id, fields);
    s.last_id = id;
    s.entries_added += 1;
    if let Some((t, limit)) = trim {
        s.trim(t, limit);
    }
    Ok(Reply::Bulk(id.bulk()))
}

pub fn xlen(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_stream(c.db(), &a[1])?.map_or(0, |s| s.len() as i64),
    ))
}

fn count_option(a: &[Bytes], i: usize) -> Result<Option<usize>, Reply> {
    match a.get(i) {
        None => Ok(None),
        Some(x) if eq(x, "count") && a.len() == i + 2 => {
            let n = int(&a[i + 1])?;
            Ok(Some(n.max(0) as usize))
        }
        Some(_) => Err(syntax()),
    }
}

fn range(c: &mut Ctx, a: &[Bytes], rev: bool) -> R {
    let (lo, hi) = if rev {
        (range_start(&a[3])?, range_end(&a[2])?)
    } else {
        (range_start(&a[2])?, range_end(&a[3])?)
    };
    let count = count_option(a, 4)?;
    let Some(s) = get_stream(c.db(), &a[1])? else {
        return Ok(Reply::Array(vec![]));
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Reply::Array(vec![]));
    };
    if lo > hi || count == Some(0) {
        return Ok(Reply::Array(vec![]));
    }
    let it = s.entries.range(lo..=hi);
    let take = count.unwrap_or(usize::MAX);
    let out: Vec<Reply> = if rev {
        it.rev()
            .take(take)
            .map(|(id, f)| entry_reply(*id, f))
            .collect()
    } else {
        it.take(take).map(|(id, f)| entry_reply(*id, f)).collect()
    };
    Ok(Reply::Array(out))
}

pub fn xrange(c: &mut Ctx, a: &[Bytes]) -> R {
    range(c, a, false)
}

pub fn xrevrange(c: &mut Ctx, a: &[Bytes]) -> R {
    range(c, a, true)
}

pub fn xdel(c: &mut Ctx, a: &[Bytes]) -> R {
    let ids = a[2..]
        .iter()
        .map(|b| parse_id(b, 0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reply::Int(
        get_stream(c.db(), &a[1])?.map_or(0, |s| s.delete(&ids) as i64),
    ))
}

pub fn xtrim(c: &mut Ctx, a: &[Bytes]) -> R {
    if !(eq(&a[2], "maxlen") || eq(&a[2], "minid")) {
        return Err(syntax());
    }
    let (t, limit, next) = parse_trim(a, 2)?;
    if next != a.len() {
        return Err(syntax());
    }
    Ok(Reply::Int(
        get_stream(c.db(), &a[1])?.map_or(0, |s| s.trim(t, limit) as i64),
    ))
}

pub fn xsetid(c: &mut Ctx, a: &[Bytes]) -> R {
    let id = parse_id(&a[2], 0)?;
    let mut added = None;
    let mut max_deleted = None;
    let mut i = 3;
    while i < a.len() {
        let v = a.get(i + 1).ok_or_else(syntax)?;
        if eq(&a[i], "entriesadded") {
            let n = int(v)?;
            if n < 0 {
                return Err(Reply::err("ERR entries_added must be positive"));
            }
            added = Some(n as u64);
        } else if eq(&a[i], "maxdeletedid") {
            max_deleted = Some(parse_id(v, 0)?);
        } else {
            return Err(syntax());
        }
        i += 2;
    }
    let Some(s) = get_stream(c.db(), &a[1])? else {
        return Err(super::no_such_key());
    };
    if id < s.entries.keys().next_back().copied().unwrap_or_default() {
        return Err(Reply::err(
            "ERR The ID specified in XSETID is smaller than the target stream top item",
        ));
    }
    if added.is_some_and(|n| n < s.len() as u64) {
        return Err(Reply::err(
            "ERR The entries_added specified in XSETID is smaller than the target stream length",
        ));
    }
    s.last_id = id;
    if let Some(n) = added {
        s.entries_added = n;
    }
    if let Some(m) = max_deleted {
        s.max_deleted = m;
    }
    Ok(Reply::Ok)
}

/// NOGROUP as XPENDING, XCLAIM and XAUTOCLAIM word it.
pub(super) fn nogroup_key(key: &Bytes, group: &Bytes) -> Reply {
    Reply::Error(format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}
