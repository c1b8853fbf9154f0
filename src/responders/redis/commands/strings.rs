//! String commands.

use bytes::{Bytes, BytesMut};

use super::{eq, float, get_str, int, not_int, syntax, Ctx, R};
use crate::responders::redis::resp::{parse_i64, Reply};
use crate::responders::redis::state::{now_ms, Value};
use crate::rules::redis::format_double;

/// Redis's `proto-max-bulk-len`, the largest string SETRANGE/APPEND make.
const MAX_STRING: usize = 512 * 1024 * 1024;

pub fn get(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(get_str(c.db(), &a[1])?.map_or(Reply::Nil, Reply::Bulk))
}

/// An expiry option's absolute time, or the "invalid expire time" error.
fn expiry(cmd: &str, unit_ms: i64, absolute: bool, v: &[u8]) -> Result<i64, Reply> {
    let n = int(v)?;
    let bad = || Reply::Error(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(bad());
    }
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if absolute {
        Ok(ms)
    } else {
        ms.checked_add(now_ms()).ok_or_else(bad)
    }
}

pub fn set(c: &mut Ctx, a: &[Bytes]) -> R {
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    let mut exp: Option<i64> = None;
    let mut i = 3;
    while i < a.len() {
        let o = &a[i];
        let next = a.get(i + 1);
        if eq(o, "nx") && !xx {
            nx = true;
        } else if eq(o, "xx") && !nx {
            xx = true;
        } else if eq(o, "get") {
            get = true;
        } else if eq(o, "keepttl") && exp.is_none() {
            keep = true;
        } else if !keep
            && exp.is_none()
            && next.is_some()
            && ["ex", "px", "exat", "pxat"].iter().any(|k| eq(o, k))
        {
            let (unit, abs) = if eq(o, "ex") {
                (1000, false)
            } else if eq(o, "px") {
                (1, false)
            } else if eq(o, "exat") {
                (1000, true)
            } else {
                (1, true)
            };
            exp = Some(expiry(
                "set",
                unit,
                abs,
                next.map(|b| &b[..]).unwrap_or_default(),
            )?);
            i += 1;
        } else {
            return Err(syntax());
        }
        i += 1;
    }
    let db = c.db();
    let old = if get { get_str(db, &a[1])? } else { None };
    let exists = db.check(&a[1]);
    if (nx && exists) || (xx && !exists) {
        return Ok(if get {
            old.map_or(Reply::Nil, Reply::Bulk)
        } else {
            Reply::Nil
        });
    }
    let prev_ttl = if keep {
        db.get(&a[1]).and_then(|e| e.expires)
    } else {
        None
    };
    db.set(a[1].clone(), Value::Str(a[2].clone()));
    if let Some(e) = db.map.get_mut(&a[1]) {
        e.expires = exp.or(prev_ttl);
    }
    Ok(if get {
        old.map_or(Reply::Nil, Reply::Bulk)
    } else {
        Reply::Ok
    })
}

pub fn setnx(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    if db.check(&a[1]) {
        return Ok(Reply::Int(0));
    }
    db.set(a[1].clone(), Value::Str(a[2].clone()));
    Ok(Reply::Int(1))
}

fn set_with_ttl(c: &mut Ctx, a: &[Bytes], cmd: &str, unit: i64) -> R {
    let at = expiry(cmd, unit, false, &a[2])?;
    let db = c.db();
    db.set(a[1].clone(), Value::Str(a[3].clone()));
    if let Some(e) = db.map.get_mut(&a[1]) {
        e.expires = Some(at);
    }
    Ok(Reply::Ok)
}

pub fn setex(c: &mut Ctx, a: &[Bytes]) -> R {
    set_with_ttl(c, a, "setex", 1000)
}

pub fn psetex(c: &mut Ctx, a: &[Bytes]) -> R {
    set_with_ttl(c, a, "psetex", 1)
}

pub fn getset(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    let old = get_str(db, &a[1])?;
    db.set(a[1].clone(), Value::Str(a[2].clone()));
    Ok(old.map_or(Reply::Nil, Reply::Bulk))
}

pub fn mget(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    Ok(Reply::Array(
        a[1..]
            .iter()
            .map(|k| match db.get(k).map(|e| &e.value) {
                Some(Value::Str(s)) => Reply::Bulk(s.clone()),
                _ => Reply::Nil,
            })
            .collect(),
    ))
}

pub fn mset(c: &mut Ctx, a: &[Bytes]) -> R {
    if a.len().is_multiple_of(2) {
        return Err(super::wrong_args(&String::from_utf8_lossy(&a[0])));
    }
    let db = c.db();
    for kv in a[1..].chunks(2) {
        db.set(kv[0].clone(), Value::Str(kv[1].clone()));
    }
    Ok(Reply::Ok)
}

pub fn msetnx(c: &mut Ctx, a: &[Bytes]) -> R {
    if a.len().is_multiple_of(2) {
        return Err(super::wrong_args("msetnx"));
    }
    let db = c.db();
    if a[1..].chunks(2).any(|kv| db.check(&kv[0])) {
        return Ok(Reply::Int(0));
    }
    for kv in a[1..].chunks(2) {
        db.set(kv[0].clone(), Value::Str(kv[1].clone()));
    }
    Ok(Reply::Int(1))
}

/// Adds to an integer string, keeping the key's TTL.
fn incr_by(c: &mut Ctx, key: &Bytes, by: i64) -> R {
    let db = c.db();
    let cur = match get_str(db, key)? {
        Some(s) => parse_i64(&s).ok_or_else(not_int)?,
        None => 0,
    };
    let n = cur
        .checked_add(by)
        .ok_or_else(|| Reply::err("ERR increment or decrement would overflow"))?;
    put_keep_ttl(c, key, Bytes::from(n.to_string()));
    Ok(Reply::Int(n))
}

/// Changes a string's bytes in place, keeping its TTL, and gives its new
/// length. The stored bytes are edited where they lie when nothing else
/// holds them (a reply still being written may, and then they are copied
/// once), and they grow by doubling: building a large value a piece at a
/// time costs the pieces, not a copy of the whole value per call. The
/// caller has checked the key holds a string, if anything.
fn edit_str(c: &mut Ctx, key: &Bytes, edit: impl FnOnce(&mut BytesMut)) -> usize {
    let taken = match c.db().get_mut(key) {
        Some(e) => match &mut e.value {
            Value::Str(s) => std::mem::take(s),
            _ => Bytes::new(),
        },
        None => Bytes::new(),
    };
    let edited = edit_bytes(taken, edit);
    let len = edited.len();
    put_keep_ttl(c, key, edited);
    len
}

/// Edits bytes where they lie when nothing else holds them.
fn edit_bytes(b: Bytes, edit: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = b
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    edit(&mut b);
    b.freeze()
}

/// Replaces a string's bytes without touching its TTL.
fn put_keep_ttl(c: &mut Ctx, key: &Bytes, v: Bytes) {
    let db = c.db();
    match db.get_mut(key) {
        Some(e) => e.value = Value::Str(v),
        None => db.set(key.clone(), Value::Str(v)),
    }
}

pub fn incr(c: &mut Ctx, a: &[Bytes]) -> R {
    incr_by(c, &a[1], 1)
}

pub fn decr(c: &mut Ctx, a: &[Bytes]) -> R {
    incr_by(c, &a[1], -1)
}

pub fn incrby(c: &mut Ctx, a: &[Bytes]) -> R {
    incr_by(c, &a[1], int(&a[2])?)
}

pub fn decrby(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = int(&a[2])?;
    let by = by
        .checked_neg()
        .ok_or_else(|| Reply::err("ERR decrement would overflow"))?;
    incr_by(c, &a[1], by)
}

pub fn incrbyfloat(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = float(&a[2])?;
    let db = c.db();
    let cur = match get_str(db, &a[1])? {
        Some(s) => super::parse_float(&s).ok_or_else(super::not_float)?,
        None => 0.0,
    };
    let n = cur + by;
    if !n.is_finite() {
        return Err(Reply::err("ERR increment would produce NaN or Infinity"));
    }
    let text = format_double(n);
    put_keep_ttl(c, &a[1], Bytes::from(text.clone()));
    Ok(Reply::bulk(text))
}

pub fn append(c: &mut Ctx, a: &[Bytes]) -> R {
    let cur = get_str(c.db(), &a[1])?.map_or(0, |s| s.len());
    if cur + a[2].len() > MAX_STRING {
        return Err(Reply::err(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    let len = edit_str(c, &a[1], |b| b.extend_from_slice(&a[2]));
    Ok(Reply::Int(len as i64))
}

pub fn strlen(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_str(c.db(), &a[1])?.map_or(0, |s| s.len() as i64),
    ))
}

pub fn getrange(c: &mut Ctx, a: &[Bytes]) -> R {
    let (start, end) = (int(&a[2])?, int(&a[3])?);
    let s = get_str(c.db(), &a[1])?.unwrap_or_default();
    // GETRANGE on an empty string, or with both ends negative past the
    // start, is empty (Redis special-cases these).
    if s.is_empty() || (start < 0 && end < 0 && start > end) {
        return Ok(Reply::bulk(Bytes::new()));
    }
    Ok(match super::range(start, end, s.len()) {
        Some((x, y)) => Reply::Bulk(s.slice(x..=y)),
        None => Reply::bulk(Bytes::new()),
    })
}

pub fn setrange(c: &mut Ctx, a: &[Bytes]) -> R {
    let off = int(&a[2])?;
    if off < 0 {
        return Err(Reply::err("ERR offset is out of range"));
    }
    let off = off as usize;
    let cur = get_str(c.db(), &a[1])?.map(|s| s.len());
    if a[3].is_empty() {
        return Ok(Reply::Int(cur.unwrap_or(0) as i64));
    }
    if off + a[3].len() > MAX_STRING {
        return Err(Reply::err(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    let end = off + a[3].len();
    let len = edit_str(c, &a[1], |v| {
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off..end].copy_from_slice(&a[3]);
    });
    Ok(Reply::Int(len as i64))
}

pub fn getdel(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    let v = get_str(db, &a[1])?;
    if v.is_some() {
        db.remove(&a[1]);
    }
    Ok(v.map_or(Reply::Nil, Reply::Bulk))
}

pub fn getex(c: &mut Ctx, a: &[Bytes]) -> R {
    let mut exp: Option<Option<i64>> = None;
    let mut i = 2;
    while i < a.len() {
        let o = &a[i];
        if eq(o, "persist") && exp.is_none() {
            exp = Some(None);
            i += 1;
        } else if exp.is_none()
            && i + 1 < a.len()
            && ["ex", "px", "exat", "pxat"].iter().any(|k| eq(o, k))
        {
            let (unit, abs) = if eq(o, "ex") {
                (1000, false)
            } else if eq(o, "px") {
                (1, false)
            } else if eq(o, "exat") {
                (1000, true)
            } else {
                (1, true)
            };
            exp = Some(Some(expiry("getex", unit, abs, &a[i + 1])?));
            i += 2;
        } else {
            return Err(syntax());
        }
    }
    let db = c.db();
    let v = get_str(db, &a[1])?;
    if v.is_some() {
        if let (Some(e), Some(t)) = (db.get_mut(&a[1]), exp) {
            e.expires = t;
        }
    }
    Ok(v.map_or(Reply::Nil, Reply::Bulk))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10,000 appends move the value a handful of times (it doubles), not
    /// once per append; a value someone else still holds is copied, not
    /// changed under them.
    #[test]
    fn appends_edit_the_value_in_place() {
        let mut v = Bytes::new();
        let mut moves = 0;
        let mut last = std::ptr::null();
        for _ in 0..10_000 {
            v = edit_bytes(v, |b| b.extend_from_slice(&[b'x'; 100]));
            if v.as_ptr() != last {
                moves += 1;
                last = v.as_ptr();
            }
        }
        assert_eq!(v.len(), 1_000_000);
        assert!(moves < 30, "the value moved {moves} times");

        let held = v.clone();
        let v = edit_bytes(v, |b| b[0] = b'y');
        assert_eq!(held[0], b'x');
        assert_eq!(v[0], b'y');
    }
}
