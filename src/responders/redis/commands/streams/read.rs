//! XREAD and XREADGROUP: parsing (with `$` resolved as the command
//! arrives), one try of the read, and delivery into a group's PEL.

use bytes::Bytes;

use super::super::{eq, int, syntax, Ctx};
use super::{entry_reply, get_stream, parse_id};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::now_ms;
use crate::responders::redis::stream::{Fields, Group, Pending, Stream, StreamId};

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
                } = &mut **s;
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
                } = &mut **s;
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
