//! XINFO STREAM, GROUPS and CONSUMERS.

use bytes::Bytes;

use super::super::{eq, Ctx, R};
use super::groups::nogroup;
use super::{entry_reply, get_stream};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::now_ms;

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
        _ => return Err(super::super::unknown_subcommand(&a[1], "xinfo")),
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
    let s = get_stream(c.db(), key)?.ok_or_else(super::super::no_such_key)?;
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
                    Reply::Bulk(s.first_id().bulk()),
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
