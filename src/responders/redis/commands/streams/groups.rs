//! Consumer groups: XGROUP, XACK, XPENDING, XCLAIM and XAUTOCLAIM.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::{eq, int, syntax, Ctx, R};
use super::{
    entry_reply, get_stream, invalid_id, nogroup_key, parse_id, range_end, range_start,
    stream_or_new,
};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::now_ms;
use crate::responders::redis::stream::{Fields, Group, Pending, Stream, StreamId};

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

pub(super) fn nogroup(key: &Bytes, group: &Bytes) -> Reply {
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
        _ => return Err(super::super::unknown_subcommand(&a[1], "xgroup")),
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
    s.groups.get_mut(g).ok_or_else(|| nogroup_key(key, g))
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
        return Err(nogroup_key(key, gname));
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

/// A stream's entries and one of its groups, or NOGROUP.
fn entries_and_group<'a>(
    c: &'a mut Ctx,
    key: &Bytes,
    gname: &Bytes,
) -> Result<(&'a BTreeMap<StreamId, Fields>, &'a mut Group), Reply> {
    let s = get_stream(c.db(), key)?.ok_or_else(|| nogroup_key(key, gname))?;
    let Stream {
        entries, groups, ..
    } = &mut **s;
    let g = groups
        .get_mut(gname)
        .ok_or_else(|| nogroup_key(key, gname))?;
    Ok((entries, g))
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
    let (entries, g) = entries_and_group(c, key, gname)?;
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
    let (entries, g) = entries_and_group(c, key, gname)?;
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
