//! Streams: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XSETID, XREAD,
//! consumer groups (XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM) and XINFO, with Redis 7.2's replies and error texts. XREAD
//! and XREADGROUP with BLOCK wait in `blocking.rs` like the list pops.

use bytes::Bytes;

use super::{eq, int, syntax, wrong_args, Ctx, R};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::{now_ms, Db, Value};
use crate::responders::redis::stream::{Fields, Group, Pending, Stream, StreamId, Trim};

fn invalid_id() -> Reply {
    Reply::err("ERR Invalid stream ID specified as stream command argument")
}

fn wrongtype() -> Reply {
    super::wrongtype()
}

/// The stream at `key`: `None` when absent, WRONGTYPE when not a stream.
pub fn get_stream<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a mut Stream>, Reply> {
    match db.get_mut(key) {
        None => Ok(None),
        Some(e) => match &mut e.value {
            Value::Stream(s) => Ok(Some(s)),
            _ => Err(wrongtype()),
        },
    }
}

fn stream_or_new<'a>(db: &'a mut Db, key: &Bytes) -> Result<&'a mut Stream, Reply> {
    if !db.check(key) {
        db.set(key.clone(), Value::Stream(Box::default()));
    }
    match db.map.get_mut(key).map(|e| &mut e.value) {
        Some(Value::Stream(s)) => Ok(s),
        _ => Err(wrongtype()),
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `ms-seq`, or `ms` with `missing_seq` for the sequence.
fn parse_id(b: &[u8], missing_seq: u64) -> Result<StreamId, Reply> {
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
fn range_start(b: &[u8]) -> Result<Option<StreamId>, Reply> {
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

fn range_end(b: &[u8]) -> Result<Option<StreamId>, Reply> {
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

fn fields_reply(f: &Fields) -> Reply {
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

/// XREAD's or XREADGROUP's request, with `$` already resolved to the
/// stream's last ID when the command arrived (so a blocked read waits for
/// what comes after it).
#[derive(Debug, Clone)]
pub struct Read {
    pub group: Option<(Bytes, Bytes, bool)>,
    pub count: Option<usize>,
    /// BLOCK's timeout in seconds (0: for ever); `None`: do not block.
    pub block: Option<f64>,
    pub keys: Vec<Bytes>,
    /// `None`: `>` (new entries for the group).
    pub ids: Vec<Option<StreamId>>,
}

/// Parses XREAD/XREADGROUP and resolves `$`.
pub fn parse_read(c: &mut Ctx, name: &str, a: &[Bytes]) -> Result<Read, Reply> {
    let mut i = 1;
    let mut group = None;
    let mut count = None;
    let mut block = None;
    let mut noack = false;
    let grouped = name == "xreadgroup";
    loop {
        let Some(opt) = a.get(i) else {
            return Err(syntax());
        };
        if eq(opt, "streams") {
            i += 1;
            break;
        }
        let val = a.get(i + 1).ok_or_else(syntax)?;
        if eq(opt, "count") {
            let n = int(val)?;
            count = (n > 0).then_some(n as usize);
            i += 2;
        } else if eq(opt, "block") {
            let ms = int(val)
                .map_err(|_| Reply::err("ERR timeout is not an integer or out of range"))?;
            if ms < 0 {
                return Err(Reply::err("ERR timeout is negative"));
            }
            block = Some(ms as f64 / 1000.0);
            i += 2;
        } else if grouped && eq(opt, "group") {
            let consumer = a.get(i + 2).ok_or_else(syntax)?;
            group = Some((val.clone(), consumer.clone(), false));
            i += 3;
        } else if grouped && eq(opt, "noack") {
            noack = true;
            i += 1;
        } else {
            return Err(syntax());
        }
    }
    let rest = &a[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(Reply::Error(format!(
            "ERR Unbalanced '{name}' list of streams: for each stream key an ID or '$' must be specified."
        )));
    }
    if grouped && group.is_none() {
        return Err(Reply::err("ERR Missing GROUP option for XREADGROUP"));
    }
    if let Some(g) = group.as_mut() {
        g.2 = noack;
    }
    let half = rest.len() / 2;
    let keys = rest[..half].to_vec();
    let mut ids = Vec::with_capacity(half);
    for (k, raw) in keys.iter().zip(&rest[half..]) {
        let id = if &raw[..] == b">" {
            if !grouped {
                return Err(Reply::err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."));
            }
            None
        } else if &raw[..] == b"$" {
            if grouped {
                return Err(Reply::err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."));
            }
            Some(get_stream(c.db(), k)?.map_or(StreamId::MIN, |s| s.last_id))
        } else {
            Some(parse_id(raw, 0)?)
        };
        ids.push(id);
    }
    if let Some((g, _, _)) = &group {
        for k in &keys {
            let found = get_stream(c.db(), k)?.is_some_and(|s| s.groups.contains_key(g));
            if !found {
                return Err(nogroup_read(k, g));
            }
        }
    }
    Ok(Read {
        group,
        count,
        block,
        keys,
        ids,
    })
}

fn nogroup_read(key: &Bytes, group: &Bytes) -> Reply {
    Reply::Error(format!(
        "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    ))
}

/// One try of a read: `Some` with the reply when there is something to
/// answer, `None` when a blocking read should wait.
pub fn try_read(c: &mut Ctx, r: &Read) -> Result<Option<Reply>, Reply> {
    let resp3 = c.conn.resp3;
    let now = now_ms();
    let take = r.count.unwrap_or(usize::MAX);
    let mut per_key = Vec::new();
    let mut history = false;
    for (key, id) in r.keys.iter().zip(&r.ids) {
        let entries: Vec<Reply> = match (&r.group, id) {
            (None, Some(after)) => match get_stream(c.db(), key)? {
                Some(s) => match after.next() {
                    Some(from) => s
                        .entries
                        .range(from..)
                        .take(take)
                        .map(|(id, f)| entry_reply(*id, f))
                        .collect(),
                    None => vec![],
                },
                None => vec![],
            },
            (Some((g, consumer, noack)), None) => {
                let s = get_stream(c.db(), key)?.ok_or_else(|| nogroup_read(key, g))?;
                let Stream {
                    entries, groups, ..
                } = s;
                let group = groups.get_mut(g).ok_or_else(|| nogroup_read(key, g))?;
                let fresh: Vec<(StreamId, Fields)> = match group.last_delivered.next() {
                    Some(from) => entries
                        .range(from..)
                        .take(take)
                        .map(|(id, f)| (*id, f.clone()))
                        .collect(),
                    None => vec![],
                };
                deliver(group, consumer, &fresh, *noack, now);
                fresh.iter().map(|(id, f)| entry_reply(*id, f)).collect()
            }
            (Some((g, consumer, _)), Some(after)) => {
                history = true;
                let s = get_stream(c.db(), key)?.ok_or_else(|| nogroup_read(key, g))?;
                let Stream {
                    entries, groups, ..
                } = s;
                let group = groups.get_mut(g).ok_or_else(|| nogroup_read(key, g))?;
                let cons = group.consumer(consumer, now);
                cons.seen = now;
                let ids: Vec<StreamId> = match after.next() {
                    Some(from) => cons.pending.range(from..).take(take).copied().collect(),
                    None => vec![],
                };
                ids.iter()
                    .map(|id| {
                        if let Some(p) = group.pel.get_mut(id) {
                            p.deliveries += 1;
                            p.delivered_at = now;
                        }
                        match entries.get(id) {
                            Some(f) => entry_reply(*id, f),
                            None => Reply::Array(vec![Reply::Bulk(id.bulk()), Reply::Nil]),
                        }
                    })
                    .collect()
            }
            (None, None) => vec![],
        };
        if !entries.is_empty() || history {
            per_key.push((key.clone(), entries));
        }
    }
    if per_key.is_empty() {
        return Ok(None);
    }
    Ok(Some(if resp3 {
        Reply::Map(
            per_key
                .into_iter()
                .map(|(k, e)| (Reply::Bulk(k), Reply::Array(e)))
                .collect(),
        )
    } else {
        Reply::Array(
            per_key
                .into_iter()
                .map(|(k, e)| Reply::Array(vec![Reply::Bulk(k), Reply::Array(e)]))
                .collect(),
        )
    }))
}

/// Hands new entries to a consumer: the group's position moves on, and
/// each entry goes to the PEL unless NOACK.
fn deliver(
    group: &mut Group,
    consumer: &Bytes,
    fresh: &[(StreamId, Fields)],
    noack: bool,
    now: i64,
) {
    let cons = group.consumer(consumer, now);
    cons.seen = now;
    if !fresh.is_empty() {
        cons.active = Some(now);
    }
    for (id, _) in fresh {
        group.last_delivered = *id;
        if let Some(n) = group.entries_read.as_mut() {
            *n += 1;
        }
        if noack {
            continue;
        }
        if let Some(old) = group.pel.insert(
            *id,
            Pending {
                consumer: consumer.clone(),
                delivered_at: now,
                deliveries: 1,
            },
        ) {
            if let Some(c) = group.consumers.get_mut(&old.consumer) {
                c.pending.remove(id);
            }
        }
        group.consumer(consumer, now).pending.insert(*id);
    }
}

pub fn xack(c: &mut Ctx, a: &[Bytes]) -> R {
    let ids = a[3..]
        .iter()
        .map(|b| parse_id(b, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(s) = get_stream(c.db(), &a[1])? else {
        return Ok(Reply::Int(0));
    };
    let Some(g) = s.groups.get_mut(&a[2]) else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(
        ids.iter().filter(|id| g.ack(**id)).count() as i64
    ))
}

fn needs_key() -> Reply {
    Reply::err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.")
}

fn nogroup(key: &Bytes, group: &Bytes) -> Reply {
    Reply::Error(format!(
        "NOGROUP No such consumer group '{}' for key name '{}'",
        String::from_utf8_lossy(group),
        String::from_utf8_lossy(key)
    ))
}

/// An XGROUP CREATE/SETID position: `$` or an ID, and `ENTRIESREAD n`.
fn group_position(s: &Stream, a: &[Bytes], at: usize) -> Result<(StreamId, Option<u64>), Reply> {
    let raw = &a[at];
    let id = if &raw[..] == b"$" {
        s.last_id
    } else {
        parse_id(raw, 0)?
    };
    let mut read = if &raw[..] == b"$" {
        Some(s.entries_added)
    } else if id == StreamId::MIN {
        Some(0)
    } else {
        None
    };
    let mut i = at + 1;
    while i < a.len() {
        if eq(&a[i], "entriesread") {
            let n = int(a.get(i + 1).ok_or_else(syntax)?)?;
            if n < -1 {
                return Err(Reply::err(
                    "ERR value for ENTRIESREAD must be positive or -1",
                ));
            }
            read = (n >= 0).then_some(n as u64);
            i += 2;
        } else if eq(&a[i], "mkstream") {
            i += 1;
        } else {
            return Err(syntax());
        }
    }
    Ok((id, read))
}

pub fn xgroup(c: &mut Ctx, a: &[Bytes]) -> R {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    if sub == "help" {
        return Ok(Reply::Array(
            [
                "XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CREATE <key> <groupname> <id|$> [option]",
                "CREATECONSUMER <key> <groupname> <consumer>",
                "DELCONSUMER <key> <groupname> <consumername>",
                "DESTROY <key> <groupname>",
                "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
                "HELP",
            ]
            .iter()
            .map(|l| Reply::simple(l))
            .collect(),
        ));
    }
    let arity_ok = match sub.as_str() {
        "create" => a.len() >= 5,
        "setid" => a.len() >= 5,
        "destroy" => a.len() == 4,
        "createconsumer" | "delconsumer" => a.len() == 5,
        _ => return Err(super::unknown_subcommand(&a[1], "xgroup")),
    };
    if !arity_ok {
        return Err(Reply::Error(format!(
            "ERR wrong number of arguments for 'xgroup|{sub}' command"
        )));
    }
    let (key, name) = (&a[2], &a[3]);
    let now = now_ms();
    let db = c.db();
    if sub == "create" {
        let mkstream = a[5..].iter().any(|x| eq(x, "mkstream"));
        let s = match get_stream(db, key)? {
            Some(s) => s,
            None if mkstream => stream_or_new(db, key)?,
            None => return Err(needs_key()),
        };
        let (id, read) = group_position(s, a, 4)?;
        if s.groups.contains_key(name) {
            return Err(Reply::err("BUSYGROUP Consumer Group name already exists"));
        }
        s.groups.insert(name.clone(), Group::new(id, read));
        return Ok(Reply::Ok);
    }
    let s = get_stream(db, key)?.ok_or_else(needs_key)?;
    match sub.as_str() {
        "setid" => {
            let (id, read) = group_position(s, a, 4)?;
            let g = s.groups.get_mut(name).ok_or_else(|| nogroup(key, name))?;
            g.last_delivered = id;
            g.entries_read = read;
            Ok(Reply::Ok)
        }
        "destroy" => Ok(Reply::Int(s.groups.shift_remove(name).is_some() as i64)),
        "createconsumer" => {
            let g = s.groups.get_mut(name).ok_or_else(|| nogroup(key, name))?;
            if g.consumers.contains_key(&a[4]) {
                return Ok(Reply::Int(0));
            }
            g.consumer(&a[4], now);
            Ok(Reply::Int(1))
        }
        _ => {
            let g = s.groups.get_mut(name).ok_or_else(|| nogroup(key, name))?;
            let Some(cons) = g.consumers.shift_remove(&a[4]) else {
                return Ok(Reply::Int(0));
            };
            for id in &cons.pending {
                g.pel.remove(id);
            }
            Ok(Reply::Int(cons.pending.len() as i64))
        }
    }
}

fn group_of<'a>(s: &'a mut Stream, key: &Bytes, g: &Bytes) -> Result<&'a mut Group, Reply> {
    s.groups.get_mut(g).ok_or_else(|| {
        Reply::Error(format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(g)
        ))
    })
}

pub fn xpending(c: &mut Ctx, a: &[Bytes]) -> R {
    let (key, gname) = (&a[1], &a[2]);
    let now = now_ms();
    // The extended form: [IDLE ms] start end count [consumer].
    let mut i = 3;
    let mut min_idle = None;
    if a.get(i).is_some_and(|x| eq(x, "idle")) {
        min_idle = Some(int(a.get(i + 1).ok_or_else(syntax)?)?);
        i += 2;
    }
    let extended = a.len() > 3;
    if extended && !(a.len() == i + 3 || a.len() == i + 4) {
        return Err(syntax());
    }
    let Some(s) = get_stream(c.db(), key)? else {
        return Err(Reply::Error(format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(gname)
        )));
    };
    let g = group_of(s, key, gname)?;
    if !extended {
        if g.pel.is_empty() {
            return Ok(Reply::Array(vec![
                Reply::Int(0),
                Reply::Nil,
                Reply::Nil,
                Reply::NilArray,
            ]));
        }
        let first = g.pel.keys().next().copied().unwrap_or_default();
        let last = g.pel.keys().next_back().copied().unwrap_or_default();
        let per: Vec<Reply> = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pending.is_empty())
            .map(|(name, c)| {
                Reply::Array(vec![
                    Reply::Bulk(name.clone()),
                    Reply::bulk(c.pending.len().to_string()),
                ])
            })
            .collect();
        return Ok(Reply::Array(vec![
            Reply::Int(g.pel.len() as i64),
            Reply::Bulk(first.bulk()),
            Reply::Bulk(last.bulk()),
            Reply::Array(per),
        ]));
    }
    let lo = range_start(&a[i])?;
    let hi = range_end(&a[i + 1])?;
    let count = int(&a[i + 2])?.max(0) as usize;
    let consumer = a.get(i + 3);
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(Reply::Array(vec![]));
    };
    if lo > hi {
        return Ok(Reply::Array(vec![]));
    }
    let out = g
        .pel
        .range(lo..=hi)
        .filter(|(_, p)| consumer.is_none_or(|c| *c == p.consumer))
        .filter(|(_, p)| min_idle.is_none_or(|m| now - p.delivered_at >= m))
        .take(count)
        .map(|(id, p)| {
            Reply::Array(vec![
                Reply::Bulk(id.bulk()),
                Reply::Bulk(p.consumer.clone()),
                Reply::Int((now - p.delivered_at).max(0)),
                Reply::Int(p.deliveries as i64),
            ])
        })
        .collect();
    Ok(Reply::Array(out))
}

/// Moves a pending entry to `consumer` (XCLAIM, XAUTOCLAIM).
fn claim(g: &mut Group, id: StreamId, consumer: &Bytes, delivered_at: i64, bump: bool, now: i64) {
    let Some(p) = g.pel.get_mut(&id) else { return };
    let old = std::mem::replace(&mut p.consumer, consumer.clone());
    p.delivered_at = delivered_at;
    if bump {
        p.deliveries += 1;
    }
    if let Some(c) = g.consumers.get_mut(&old) {
        c.pending.remove(&id);
    }
    let cons = g.consumer(consumer, now);
    cons.pending.insert(id);
    cons.seen = now;
    cons.active = Some(now);
}

pub fn xclaim(c: &mut Ctx, a: &[Bytes]) -> R {
    let (key, gname, consumer) = (&a[1], &a[2], &a[3]);
    let min_idle = int(&a[4])?.max(0);
    let now = now_ms();
    let mut i = 5;
    let mut ids = Vec::new();
    while let Some(Ok(id)) = a.get(i).map(|b| parse_id(b, 0)) {
        ids.push(id);
        i += 1;
    }
    let (mut delivered_at, mut retry, mut force, mut justid, mut lastid) =
        (now, None, false, false, None);
    while i < a.len() {
        let opt = &a[i];
        if eq(opt, "force") {
            force = true;
            i += 1;
        } else if eq(opt, "justid") {
            justid = true;
            i += 1;
        } else {
            let v = a.get(i + 1).ok_or_else(syntax)?;
            if eq(opt, "idle") {
                delivered_at = now - int(v)?.max(0);
            } else if eq(opt, "time") {
                delivered_at = int(v)?;
            } else if eq(opt, "retrycount") {
                retry = Some(int(v)?.max(0) as u64);
            } else if eq(opt, "lastid") {
                lastid = Some(parse_id(v, 0)?);
            } else {
                return Err(Reply::Error(format!(
                    "ERR Unrecognized XCLAIM option '{}'",
                    String::from_utf8_lossy(opt)
                )));
            }
            i += 2;
        }
    }
    if ids.is_empty() {
        return Err(invalid_id());
    }
    let Some(s) = get_stream(c.db(), key)? else {
        return Err(Reply::Error(format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(gname)
        )));
    };
    let Stream {
        entries, groups, ..
    } = s;
    let g = groups.get_mut(gname).ok_or_else(|| {
        Reply::Error(format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(gname)
        ))
    })?;
    if let Some(l) = lastid {
        if l > g.last_delivered {
            g.last_delivered = l;
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if !entries.contains_key(&id) {
            // Deleted from the stream: it leaves the PEL too.
            g.ack(id);
            continue;
        }
        match g.pel.entry(id) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                if !force {
                    continue;
                }
                slot.insert(Pending {
                    consumer: consumer.clone(),
                    delivered_at,
                    deliveries: 0,
                });
                g.consumer(consumer, now).pending.insert(id);
            }
            std::collections::btree_map::Entry::Occupied(p) => {
                if now - p.get().delivered_at < min_idle {
                    continue;
                }
            }
        }
        claim(g, id, consumer, delivered_at, !justid, now);
        if let Some(n) = retry {
            if let Some(p) = g.pel.get_mut(&id) {
                p.deliveries = n;
            }
        }
        out.push(if justid {
            Reply::Bulk(id.bulk())
        } else {
            entry_reply(id, &entries[&id])
        });
    }
    Ok(Reply::Array(out))
}

pub fn xautoclaim(c: &mut Ctx, a: &[Bytes]) -> R {
    let (key, gname, consumer) = (&a[1], &a[2], &a[3]);
    let min_idle = int(&a[4])?.max(0);
    let start = range_start(&a[5])?.unwrap_or(StreamId::MAX);
    let mut count = 100usize;
    let mut justid = false;
    let mut i = 6;
    while i < a.len() {
        if eq(&a[i], "justid") {
            justid = true;
            i += 1;
        } else if eq(&a[i], "count") {
            let n = int(a.get(i + 1).ok_or_else(syntax)?)?;
            if !(1..=(i64::MAX / 10)).contains(&n) {
                return Err(Reply::err("ERR COUNT must be > 0"));
            }
            count = n as usize;
            i += 2;
        } else {
            return Err(syntax());
        }
    }
    let now = now_ms();
    let Some(s) = get_stream(c.db(), key)? else {
        return Err(Reply::Error(format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(gname)
        )));
    };
    let Stream {
        entries, groups, ..
    } = s;
    let g = groups.get_mut(gname).ok_or_else(|| {
        Reply::Error(format!(
            "NOGROUP No such key '{}' or consumer group '{}'",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(gname)
        ))
    })?;
    // Redis looks at up to ten times COUNT entries of the PEL per call.
    let scan: Vec<StreamId> = g
        .pel
        .range(start..)
        .take(count * 10)
        .map(|(id, _)| *id)
        .collect();
    let mut claimed = Vec::new();
    let mut deleted = Vec::new();
    let mut next = StreamId::MIN;
    for (n, id) in scan.iter().enumerate() {
        if claimed.len() >= count {
            next = *id;
            break;
        }
        if n == scan.len() - 1 {
            next = g
                .pel
                .range(id.next().unwrap_or(StreamId::MAX)..)
                .next()
                .map_or(StreamId::MIN, |(i, _)| *i);
        }
        if now - g.pel[id].delivered_at < min_idle {
            continue;
        }
        match entries.get(id) {
            None => {
                g.ack(*id);
                deleted.push(Reply::Bulk(id.bulk()));
            }
            Some(f) => {
                claim(g, *id, consumer, now, !justid, now);
                claimed.push(if justid {
                    Reply::Bulk(id.bulk())
                } else {
                    entry_reply(*id, f)
                });
            }
        }
    }
    Ok(Reply::Array(vec![
        Reply::Bulk(next.bulk()),
        Reply::Array(claimed),
        Reply::Array(deleted),
    ]))
}

fn id_or_nil(id: StreamId, set: bool) -> Reply {
    if set {
        Reply::Bulk(id.bulk())
    } else {
        Reply::Bulk(Bytes::from_static(b"0-0"))
    }
}

pub fn xinfo(c: &mut Ctx, a: &[Bytes]) -> R {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    if sub == "help" {
        return Ok(Reply::Array(
            [
                "XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CONSUMERS <key> <groupname>",
                "GROUPS <key>",
                "STREAM <key> [FULL [COUNT <count>]]",
                "HELP",
            ]
            .iter()
            .map(|l| Reply::simple(l))
            .collect(),
        ));
    }
    let want = match sub.as_str() {
        "stream" => a.len() == 3,
        "groups" => a.len() == 3,
        "consumers" => a.len() == 4,
        _ => return Err(super::unknown_subcommand(&a[1], "xinfo")),
    };
    if !want {
        if sub == "stream" && a.len() > 3 && eq(&a[3], "full") {
            return Err(Reply::err("ERR meshwrap does not answer XINFO STREAM FULL"));
        }
        return Err(Reply::Error(format!(
            "ERR wrong number of arguments for 'xinfo|{sub}' command"
        )));
    }
    let key = &a[2];
    let now = now_ms();
    let s = get_stream(c.db(), key)?.ok_or_else(super::no_such_key)?;
    let b = Reply::bulk;
    match sub.as_str() {
        "stream" => {
            let first = s
                .entries
                .iter()
                .next()
                .map_or(Reply::Nil, |(id, f)| entry_reply(*id, f));
            let last = s
                .entries
                .iter()
                .next_back()
                .map_or(Reply::Nil, |(id, f)| entry_reply(*id, f));
            Ok(Reply::Map(vec![
                (b("length"), Reply::Int(s.len() as i64)),
                (
                    b("radix-tree-keys"),
                    Reply::Int(s.len().div_ceil(100) as i64),
                ),
                (
                    b("radix-tree-nodes"),
                    Reply::Int(s.len().div_ceil(100) as i64 + 1),
                ),
                (b("last-generated-id"), Reply::Bulk(s.last_id.bulk())),
                (b("max-deleted-entry-id"), Reply::Bulk(s.max_deleted.bulk())),
                (b("entries-added"), Reply::Int(s.entries_added as i64)),
                (
                    b("recorded-first-entry-id"),
                    id_or_nil(s.first_id(), !s.is_empty()),
                ),
                (b("groups"), Reply::Int(s.groups.len() as i64)),
                (b("first-entry"), first),
                (b("last-entry"), last),
            ]))
        }
        "groups" => {
            let out = s
                .groups
                .iter()
                .map(|(name, g)| {
                    Reply::Map(vec![
                        (b("name"), Reply::Bulk(name.clone())),
                        (b("consumers"), Reply::Int(g.consumers.len() as i64)),
                        (b("pending"), Reply::Int(g.pel.len() as i64)),
                        (b("last-delivered-id"), Reply::Bulk(g.last_delivered.bulk())),
                        (
                            b("entries-read"),
                            g.entries_read.map_or(Reply::Nil, |n| Reply::Int(n as i64)),
                        ),
                        (
                            b("lag"),
                            s.lag(g).map_or(Reply::Nil, |n| Reply::Int(n as i64)),
                        ),
                    ])
                })
                .collect();
            Ok(Reply::Array(out))
        }
        _ => {
            let g = s.groups.get(&a[3]).ok_or_else(|| nogroup(key, &a[3]))?;
            let out = g
                .consumers
                .iter()
                .map(|(name, c)| {
                    Reply::Map(vec![
                        (b("name"), Reply::Bulk(name.clone())),
                        (b("pending"), Reply::Int(c.pending.len() as i64)),
                        (b("idle"), Reply::Int((now - c.seen).max(0))),
                        (
                            b("inactive"),
                            c.active
                                .map_or(Reply::Int(-1), |t| Reply::Int((now - t).max(0))),
                        ),
                    ])
                })
                .collect();
            Ok(Reply::Array(out))
        }
    }
}
