//! Hash commands.

use bytes::Bytes;

use super::{
    eq, float, get_hash, glob, hash_or_new, int, parse_float, scan_opts, scan_page, Ctx, R,
};
use crate::responders::redis::resp::{parse_i64, Reply};
use crate::rules::redis::format_double;

pub fn hset(c: &mut Ctx, a: &[Bytes]) -> R {
    if !a.len().is_multiple_of(2) {
        return Err(super::wrong_args(&String::from_utf8_lossy(&a[0])));
    }
    let h = hash_or_new(c.db(), &a[1])?;
    let mut added = 0;
    for fv in a[2..].chunks(2) {
        if h.insert(fv[0].clone(), fv[1].clone()).is_none() {
            added += 1;
        }
    }
    Ok(Reply::Int(added))
}

pub fn hmset(c: &mut Ctx, a: &[Bytes]) -> R {
    hset(c, a).map(|_| Reply::Ok)
}

pub fn hsetnx(c: &mut Ctx, a: &[Bytes]) -> R {
    let h = hash_or_new(c.db(), &a[1])?;
    if h.contains_key(&a[2]) {
        return Ok(Reply::Int(0));
    }
    h.insert(a[2].clone(), a[3].clone());
    Ok(Reply::Int(1))
}

pub fn hget(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(get_hash(c.db(), &a[1])?
        .and_then(|h| h.get(&a[2]).cloned())
        .map_or(Reply::Nil, Reply::Bulk))
}

pub fn hmget(c: &mut Ctx, a: &[Bytes]) -> R {
    let h = get_hash(c.db(), &a[1])?;
    Ok(Reply::Array(
        a[2..]
            .iter()
            .map(|f| {
                h.as_ref()
                    .and_then(|h| h.get(f).cloned())
                    .map_or(Reply::Nil, Reply::Bulk)
            })
            .collect(),
    ))
}

pub fn hgetall(c: &mut Ctx, a: &[Bytes]) -> R {
    let h = get_hash(c.db(), &a[1])?;
    Ok(Reply::Map(
        h.map(|h| {
            h.iter()
                .map(|(k, v)| (Reply::Bulk(k.clone()), Reply::Bulk(v.clone())))
                .collect()
        })
        .unwrap_or_default(),
    ))
}

pub fn hdel(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    let n = match get_hash(db, &a[1])? {
        Some(h) => a[2..]
            .iter()
            .filter(|f| h.shift_remove(*f).is_some())
            .count(),
        None => 0,
    };
    db.drop_if_empty(&a[1]);
    Ok(Reply::Int(n as i64))
}

pub fn hexists(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_hash(c.db(), &a[1])?.is_some_and(|h| h.contains_key(&a[2])) as i64,
    ))
}

pub fn hincrby(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = int(&a[3])?;
    let h = hash_or_new(c.db(), &a[1])?;
    let cur = match h.get(&a[2]) {
        Some(v) => parse_i64(v).ok_or_else(|| Reply::err("ERR hash value is not an integer"))?,
        None => 0,
    };
    let n = cur
        .checked_add(by)
        .ok_or_else(|| Reply::err("ERR increment or decrement would overflow"))?;
    h.insert(a[2].clone(), Bytes::from(n.to_string()));
    Ok(Reply::Int(n))
}

pub fn hincrbyfloat(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = float(&a[3])?;
    let h = hash_or_new(c.db(), &a[1])?;
    let cur = match h.get(&a[2]) {
        Some(v) => parse_float(v).ok_or_else(|| Reply::err("ERR hash value is not a float"))?,
        None => 0.0,
    };
    let n = cur + by;
    if !n.is_finite() {
        return Err(Reply::err("ERR increment would produce NaN or Infinity"));
    }
    let text = format_double(n);
    h.insert(a[2].clone(), Bytes::from(text.clone()));
    Ok(Reply::bulk(text))
}

pub fn hkeys(c: &mut Ctx, a: &[Bytes]) -> R {
    let h = get_hash(c.db(), &a[1])?;
    Ok(super::bulks(
        h.map(|h| h.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    ))
}

pub fn hvals(c: &mut Ctx, a: &[Bytes]) -> R {
    let h = get_hash(c.db(), &a[1])?;
    Ok(super::bulks(
        h.map(|h| h.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    ))
}

pub fn hlen(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_hash(c.db(), &a[1])?.map_or(0, |h| h.len() as i64),
    ))
}

pub fn hstrlen(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_hash(c.db(), &a[1])?
            .and_then(|h| h.get(&a[2]).map(|v| v.len() as i64))
            .unwrap_or(0),
    ))
}

pub fn hscan(c: &mut Ctx, a: &[Bytes]) -> R {
    let o = scan_opts(&a[2..], false)?;
    let items: Vec<(Bytes, Bytes)> = get_hash(c.db(), &a[1])?
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let (next, page) = scan_page(items, o.cursor, o.count);
    let mut out = Vec::new();
    for (k, v) in page {
        if o.pattern.as_ref().is_none_or(|p| glob(p, &k)) {
            out.push(Reply::Bulk(k));
            if !o.novalues {
                out.push(Reply::Bulk(v));
            }
        }
    }
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(out),
    ]))
}

pub fn hrandfield(c: &mut Ctx, a: &[Bytes]) -> R {
    let count = match a.get(2) {
        Some(n) => Some(int(n)?),
        None => None,
    };
    let with_values = match a.get(3) {
        Some(o) if eq(o, "withvalues") => true,
        Some(_) => return Err(super::syntax()),
        None => false,
    };
    let h = get_hash(c.db(), &a[1])?;
    let Some(h) = h.filter(|h| !h.is_empty()) else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Nil
        });
    };
    let pick = |i: usize| h.get_index(i).map(|(k, v)| (k.clone(), v.clone()));
    let Some(n) = count else {
        let i = rand::random_range(0..h.len());
        return Ok(pick(i).map_or(Reply::Nil, |(k, _)| Reply::Bulk(k)));
    };
    let idx: Vec<usize> = if n >= 0 {
        let mut all: Vec<usize> = (0..h.len()).collect();
        rand::seq::SliceRandom::shuffle(&mut all[..], &mut rand::rng());
        all.truncate(n as usize);
        all
    } else {
        let n = super::repeat_count(n)?;
        (0..n).map(|_| rand::random_range(0..h.len())).collect()
    };
    let mut out = Vec::new();
    for i in idx {
        if let Some((k, v)) = pick(i) {
            out.push(Reply::Bulk(k));
            if with_values {
                out.push(Reply::Bulk(v));
            }
        }
    }
    Ok(Reply::Array(out))
}
