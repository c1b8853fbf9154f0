//! Generic key commands: existence, types, renames, expiry, iteration.

use bytes::Bytes;

use super::{eq, glob, int, no_such_key, scan_opts, scan_page, syntax, Ctx, R};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::{now_ms, own};

pub fn del(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    Ok(Reply::Int(
        a[1..].iter().filter(|k| db.remove(k).is_some()).count() as i64,
    ))
}

pub fn exists(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    Ok(Reply::Int(
        a[1..].iter().filter(|k| db.check(k)).count() as i64
    ))
}

pub fn type_(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::simple(
        c.db().get(&a[1]).map_or("none", |e| e.value.type_name()),
    ))
}

fn do_rename(c: &mut Ctx, a: &[Bytes], nx: bool) -> R {
    let db = c.db();
    if !db.check(&a[1]) {
        return Err(no_such_key());
    }
    if a[1] == a[2] {
        return Ok(if nx { Reply::Int(0) } else { Reply::Ok });
    }
    if nx && db.check(&a[2]) {
        return Ok(Reply::Int(0));
    }
    if let Some(e) = db.map.remove(&a[1]) {
        db.map.insert(own(&a[2]), e);
    }
    Ok(if nx { Reply::Int(1) } else { Reply::Ok })
}

pub fn rename(c: &mut Ctx, a: &[Bytes]) -> R {
    do_rename(c, a, false)
}

pub fn renamenx(c: &mut Ctx, a: &[Bytes]) -> R {
    do_rename(c, a, true)
}

fn db_index(c: &Ctx, b: &[u8]) -> Result<usize, Reply> {
    let n = int(b)?;
    if n < 0 || n as usize >= c.store.dbs.len() {
        return Err(Reply::err("ERR DB index is out of range"));
    }
    Ok(n as usize)
}

pub fn copy(c: &mut Ctx, a: &[Bytes]) -> R {
    let mut dst_db = c.conn.db;
    let mut replace = false;
    let mut i = 3;
    while i < a.len() {
        if eq(&a[i], "replace") {
            replace = true;
            i += 1;
        } else if eq(&a[i], "db") && i + 1 < a.len() {
            dst_db = db_index(c, &a[i + 1])?;
            i += 2;
        } else {
            return Err(syntax());
        }
    }
    let src_db = c.conn.db;
    if src_db == dst_db && a[1] == a[2] {
        return Err(Reply::err(
            "ERR source and destination objects are the same",
        ));
    }
    let Some(entry) = c.store.dbs[src_db].get(&a[1]).cloned() else {
        return Ok(Reply::Int(0));
    };
    let dst = &mut c.store.dbs[dst_db];
    if dst.check(&a[2]) && !replace {
        return Ok(Reply::Int(0));
    }
    dst.map.insert(own(&a[2]), entry);
    c.store.touch(dst_db, &a[2]);
    Ok(Reply::Int(1))
}

pub fn move_(c: &mut Ctx, a: &[Bytes]) -> R {
    let to = db_index(c, &a[2])?;
    let from = c.conn.db;
    if to == from {
        return Err(Reply::err(
            "ERR source and destination objects are the same",
        ));
    }
    if !c.store.dbs[from].check(&a[1]) || c.store.dbs[to].check(&a[1]) {
        return Ok(Reply::Int(0));
    }
    if let Some(e) = c.store.dbs[from].map.remove(&a[1]) {
        c.store.dbs[to].map.insert(own(&a[1]), e);
        c.store.touch(to, &a[1]);
    }
    Ok(Reply::Int(1))
}

/// EXPIRE and friends: `unit_ms` per unit, `absolute` for the *AT forms.
fn do_expire(c: &mut Ctx, a: &[Bytes], cmd: &str, unit_ms: i64, absolute: bool) -> R {
    let n = int(&a[2])?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in &a[3..] {
        if eq(o, "nx") {
            nx = true;
        } else if eq(o, "xx") {
            xx = true;
        } else if eq(o, "gt") {
            gt = true;
        } else if eq(o, "lt") {
            lt = true;
        } else {
            return Err(Reply::Error(format!(
                "ERR Unsupported option {}",
                super::clip(o)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Reply::err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let bad = || Reply::Error(format!("ERR invalid expire time in '{cmd}' command"));
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(now_ms()).ok_or_else(bad)?
    };
    let db = c.db();
    let Some(e) = db.get_mut(&a[1]) else {
        return Ok(Reply::Int(0));
    };
    let cur = e.expires;
    let ok = match cur {
        None => !(xx || gt),
        Some(t) => !nx && (!gt || at > t) && (!lt || at < t),
    };
    if !ok {
        return Ok(Reply::Int(0));
    }
    if at <= now_ms() {
        db.remove(&a[1]);
    } else {
        e.expires = Some(at);
    }
    Ok(Reply::Int(1))
}

pub fn expire(c: &mut Ctx, a: &[Bytes]) -> R {
    do_expire(c, a, "expire", 1000, false)
}

pub fn pexpire(c: &mut Ctx, a: &[Bytes]) -> R {
    do_expire(c, a, "pexpire", 1, false)
}

pub fn expireat(c: &mut Ctx, a: &[Bytes]) -> R {
    do_expire(c, a, "expireat", 1000, true)
}

pub fn pexpireat(c: &mut Ctx, a: &[Bytes]) -> R {
    do_expire(c, a, "pexpireat", 1, true)
}

/// -2 when absent, -1 without expiry, else the remaining time.
fn remaining(c: &mut Ctx, key: &[u8], ms: bool, absolute: bool) -> R {
    let Some(e) = c.db().get(key) else {
        return Ok(Reply::Int(-2));
    };
    let Some(t) = e.expires else {
        return Ok(Reply::Int(-1));
    };
    Ok(Reply::Int(match (ms, absolute) {
        (true, true) => t,
        (false, true) => t / 1000,
        (true, false) => (t - now_ms()).max(0),
        (false, false) => ((t - now_ms()).max(0) + 500) / 1000,
    }))
}

pub fn ttl(c: &mut Ctx, a: &[Bytes]) -> R {
    remaining(c, &a[1], false, false)
}

pub fn pttl(c: &mut Ctx, a: &[Bytes]) -> R {
    remaining(c, &a[1], true, false)
}

pub fn expiretime(c: &mut Ctx, a: &[Bytes]) -> R {
    remaining(c, &a[1], false, true)
}

pub fn pexpiretime(c: &mut Ctx, a: &[Bytes]) -> R {
    remaining(c, &a[1], true, true)
}

pub fn persist(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(match c.db().get_mut(&a[1]) {
        Some(e) if e.expires.is_some() => {
            e.expires = None;
            1
        }
        _ => 0,
    }))
}

pub fn keys(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    db.purge();
    let mut ks: Vec<Bytes> = db.map.keys().filter(|k| glob(&a[1], k)).cloned().collect();
    ks.sort();
    Ok(super::bulks(ks))
}

pub fn scan(c: &mut Ctx, a: &[Bytes]) -> R {
    let o = scan_opts(&a[1..], true)?;
    let db = c.db();
    db.purge();
    let items: Vec<(Bytes, &'static str)> = db
        .map
        .iter()
        .map(|(k, e)| (k.clone(), e.value.type_name()))
        .collect();
    let (next, page) = scan_page(items, o.cursor, o.count);
    let keys = page
        .into_iter()
        .filter(|(k, t)| {
            o.pattern.as_ref().is_none_or(|p| glob(p, k))
                && o.type_.as_ref().is_none_or(|ty| eq(ty, t))
        })
        .map(|(k, _)| k);
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        super::bulks(keys),
    ]))
}

pub fn randomkey(c: &mut Ctx, _a: &[Bytes]) -> R {
    let db = c.db();
    db.purge();
    if db.map.is_empty() {
        return Ok(Reply::Nil);
    }
    let i = rand::random_range(0..db.map.len());
    Ok(db
        .map
        .keys()
        .nth(i)
        .cloned()
        .map_or(Reply::Nil, Reply::Bulk))
}
