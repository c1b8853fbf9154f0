//! Sorted-set commands.

use bytes::Bytes;

use super::{
    eq, get_zset, glob, int, parse_float, scan_opts, scan_page, syntax, zset_or_new, Ctx, R,
};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::{Db, ZSet};

pub fn zadd(c: &mut Ctx, a: &[Bytes]) -> R {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < a.len() {
        let o = &a[i];
        if eq(o, "nx") {
            nx = true;
        } else if eq(o, "xx") {
            xx = true;
        } else if eq(o, "gt") {
            gt = true;
        } else if eq(o, "lt") {
            lt = true;
        } else if eq(o, "ch") {
            ch = true;
        } else if eq(o, "incr") {
            incr = true;
        } else {
            break;
        }
        i += 1;
    }
    let rest = &a[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(syntax());
    }
    if nx && xx {
        return Err(Reply::err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(Reply::err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if incr && rest.len() > 2 {
        return Err(Reply::err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let pairs: Vec<(f64, Bytes)> = rest
        .chunks(2)
        .map(|p| {
            parse_float(&p[0])
                .map(|s| (s, p[1].clone()))
                .ok_or_else(super::not_float)
        })
        .collect::<Result<_, _>>()?;
    let db = c.db();
    if xx && get_zset(db, &a[1])?.is_none() {
        return Ok(if incr { Reply::Nil } else { Reply::Int(0) });
    }
    let z = zset_or_new(db, &a[1])?;
    let (mut added, mut changed) = (0, 0);
    let mut last = None;
    for (score, member) in pairs {
        let cur = z.scores.get(&member).copied();
        let new = match (cur, incr) {
            (Some(c), true) => c + score,
            _ => score,
        };
        if new.is_nan() {
            return Err(Reply::err("ERR resulting score is not a number (NaN)"));
        }
        let allowed = match cur {
            None => !xx,
            Some(c) => !nx && (!gt || new > c) && (!lt || new < c),
        };
        if !allowed {
            continue;
        }
        last = Some(new);
        if cur.is_none() {
            added += 1;
        } else if cur != Some(new) {
            changed += 1;
        }
        z.insert(member, new);
    }
    db.drop_if_empty(&a[1]);
    if incr {
        return Ok(last.map_or(Reply::Nil, Reply::Double));
    }
    Ok(Reply::Int(if ch { added + changed } else { added }))
}

pub fn zincrby(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = super::float(&a[2])?;
    let z = zset_or_new(c.db(), &a[1])?;
    let new = z.scores.get(&a[3]).copied().unwrap_or(0.0) + by;
    if new.is_nan() {
        return Err(Reply::err("ERR resulting score is not a number (NaN)"));
    }
    z.insert(a[3].clone(), new);
    Ok(Reply::Double(new))
}

pub fn zrem(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    let n = match get_zset(db, &a[1])? {
        Some(z) => a[2..].iter().filter(|m| z.remove(m)).count(),
        None => 0,
    };
    db.drop_if_empty(&a[1]);
    Ok(Reply::Int(n as i64))
}

pub fn zcard(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_zset(c.db(), &a[1])?.map_or(0, |z| z.len() as i64),
    ))
}

pub fn zscore(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(get_zset(c.db(), &a[1])?
        .and_then(|z| z.scores.get(&a[2]).copied())
        .map_or(Reply::Nil, Reply::Double))
}

pub fn zmscore(c: &mut Ctx, a: &[Bytes]) -> R {
    let z = get_zset(c.db(), &a[1])?;
    Ok(Reply::Array(
        a[2..]
            .iter()
            .map(|m| {
                z.as_ref()
                    .and_then(|z| z.scores.get(m).copied())
                    .map_or(Reply::Nil, Reply::Double)
            })
            .collect(),
    ))
}

fn rank(c: &mut Ctx, a: &[Bytes], rev: bool) -> R {
    let with_score = match a.get(3) {
        Some(o) if eq(o, "withscore") && a.len() == 4 => true,
        Some(_) => return Err(syntax()),
        None => false,
    };
    let Some(z) = get_zset(c.db(), &a[1])? else {
        return Ok(if with_score {
            Reply::NilArray
        } else {
            Reply::Nil
        });
    };
    let Some(r) = z.rank(&a[2]) else {
        return Ok(if with_score {
            Reply::NilArray
        } else {
            Reply::Nil
        });
    };
    let r = if rev { z.len() - 1 - r } else { r } as i64;
    if with_score {
        let s = z.scores.get(&a[2]).copied().unwrap_or_default();
        return Ok(Reply::Array(vec![Reply::Int(r), Reply::Double(s)]));
    }
    Ok(Reply::Int(r))
}

pub fn zrank(c: &mut Ctx, a: &[Bytes]) -> R {
    rank(c, a, false)
}

pub fn zrevrank(c: &mut Ctx, a: &[Bytes]) -> R {
    rank(c, a, true)
}

/// A score bound: value and whether it is exclusive.
#[derive(Clone, Copy)]
struct ScoreBound(f64, bool);

fn score_bound(b: &[u8]) -> Result<ScoreBound, Reply> {
    let bad = || Reply::err("ERR min or max is not a float");
    if let Some(rest) = b.strip_prefix(b"(") {
        return parse_float(rest)
            .map(|f| ScoreBound(f, true))
            .ok_or_else(bad);
    }
    parse_float(b).map(|f| ScoreBound(f, false)).ok_or_else(bad)
}

impl ScoreBound {
    fn above_min(&self, s: f64) -> bool {
        if self.1 {
            s > self.0
        } else {
            s >= self.0
        }
    }
    fn below_max(&self, s: f64) -> bool {
        if self.1 {
            s < self.0
        } else {
            s <= self.0
        }
    }
}

#[derive(Clone)]
enum LexBound {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

fn lex_bound(b: &Bytes) -> Result<LexBound, Reply> {
    match b.first() {
        Some(b'-') if b.len() == 1 => Ok(LexBound::Min),
        Some(b'+') if b.len() == 1 => Ok(LexBound::Max),
        Some(b'[') => Ok(LexBound::Incl(b.slice(1..))),
        Some(b'(') => Ok(LexBound::Excl(b.slice(1..))),
        _ => Err(Reply::err("ERR min or max not valid string range item")),
    }
}

fn lex_above_min(min: &LexBound, m: &[u8]) -> bool {
    match min {
        LexBound::Min => true,
        LexBound::Max => false,
        LexBound::Incl(v) => m >= &v[..],
        LexBound::Excl(v) => m > &v[..],
    }
}

fn lex_below_max(max: &LexBound, m: &[u8]) -> bool {
    match max {
        LexBound::Min => false,
        LexBound::Max => true,
        LexBound::Incl(v) => m <= &v[..],
        LexBound::Excl(v) => m < &v[..],
    }
}

enum By {
    Index(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

/// The members a range selects, in the order asked for.
fn select(z: &ZSet, by: &By, rev: bool, limit: Option<(i64, i64)>) -> Vec<(Bytes, f64)> {
    let ordered: Vec<(Bytes, f64)> = if rev {
        z.order
            .iter()
            .rev()
            .map(|(s, m)| (m.clone(), s.0))
            .collect()
    } else {
        z.order.iter().map(|(s, m)| (m.clone(), s.0)).collect()
    };
    let picked: Vec<(Bytes, f64)> = match by {
        By::Index(s, e) => match super::range(*s, *e, ordered.len()) {
            Some((x, y)) => ordered[x..=y].to_vec(),
            None => Vec::new(),
        },
        By::Score(min, max) => ordered
            .into_iter()
            .filter(|(_, s)| min.above_min(*s) && max.below_max(*s))
            .collect(),
        By::Lex(min, max) => ordered
            .into_iter()
            .filter(|(m, _)| lex_above_min(min, m) && lex_below_max(max, m))
            .collect(),
    };
    match limit {
        Some((off, count)) if off >= 0 => {
            let it = picked.into_iter().skip(off as usize);
            if count < 0 {
                it.collect()
            } else {
                it.take(count as usize).collect()
            }
        }
        Some(_) => Vec::new(),
        None => picked,
    }
}

/// Members (and scores) as Redis replies: a flat list in RESP2, pairs in
/// RESP3.
fn with_scores(items: Vec<(Bytes, f64)>, scores: bool, resp3: bool) -> Reply {
    if !scores {
        return super::bulks(items.into_iter().map(|(m, _)| m));
    }
    if resp3 {
        return Reply::Array(
            items
                .into_iter()
                .map(|(m, s)| Reply::Array(vec![Reply::Bulk(m), Reply::Double(s)]))
                .collect(),
        );
    }
    let mut out = Vec::new();
    for (m, s) in items {
        out.push(Reply::Bulk(m));
        out.push(Reply::Double(s));
    }
    Reply::Array(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Index,
    Score,
    Lex,
}

/// The shared body of ZRANGE and its older forms. `rev` swaps the order
/// and, for score and lex ranges, the meaning of the two bounds.
fn range_cmd(c: &mut Ctx, a: &[Bytes], mut kind: Kind, mut rev: bool, modern: bool) -> R {
    let mut scores = false;
    let mut limit = None;
    let mut i = 4;
    while i < a.len() {
        let o = &a[i];
        if eq(o, "withscores") {
            scores = true;
        } else if eq(o, "limit") && i + 2 < a.len() {
            limit = Some((int(&a[i + 1])?, int(&a[i + 2])?));
            i += 2;
        } else if modern && eq(o, "byscore") {
            kind = Kind::Score;
        } else if modern && eq(o, "bylex") {
            kind = Kind::Lex;
        } else if modern && eq(o, "rev") {
            rev = true;
        } else {
            return Err(syntax());
        }
        i += 1;
    }
    if limit.is_some() && kind == Kind::Index {
        return Err(Reply::err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if scores && kind == Kind::Lex {
        return Err(Reply::err(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let (lo, hi) = if rev && kind != Kind::Index {
        (&a[3], &a[2])
    } else {
        (&a[2], &a[3])
    };
    let by = match kind {
        Kind::Index => By::Index(int(&a[2])?, int(&a[3])?),
        Kind::Score => By::Score(score_bound(lo)?, score_bound(hi)?),
        Kind::Lex => By::Lex(lex_bound(lo)?, lex_bound(hi)?),
    };
    let resp3 = c.conn.resp3;
    let Some(z) = get_zset(c.db(), &a[1])? else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(with_scores(select(z, &by, rev, limit), scores, resp3))
}

pub fn zrange(c: &mut Ctx, a: &[Bytes]) -> R {
    range_cmd(c, a, Kind::Index, false, true)
}

pub fn zrevrange(c: &mut Ctx, a: &[Bytes]) -> R {
    range_cmd(c, a, Kind::Index, true, false)
}

pub fn zrangebyscore(c: &mut Ctx, a: &[Bytes]) -> R {
    range_cmd(c, a, Kind::Score, false, false)
}

pub fn zrevrangebyscore(c: &mut Ctx, a: &[Bytes]) -> R {
    range_cmd(c, a, Kind::Score, true, false)
}

pub fn zrangebylex(c: &mut Ctx, a: &[Bytes]) -> R {
    range_cmd(c, a, Kind::Lex, false, false)
}

pub fn zrevrangebylex(c: &mut Ctx, a: &[Bytes]) -> R {
    range_cmd(c, a, Kind::Lex, true, false)
}

pub fn zcount(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = By::Score(score_bound(&a[2])?, score_bound(&a[3])?);
    Ok(Reply::Int(
        get_zset(c.db(), &a[1])?.map_or(0, |z| select(z, &by, false, None).len() as i64),
    ))
}

pub fn zlexcount(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = By::Lex(lex_bound(&a[2])?, lex_bound(&a[3])?);
    Ok(Reply::Int(
        get_zset(c.db(), &a[1])?.map_or(0, |z| select(z, &by, false, None).len() as i64),
    ))
}

fn pop(c: &mut Ctx, a: &[Bytes], max: bool) -> R {
    if a.len() > 3 {
        return Err(syntax());
    }
    let count = match a.get(2) {
        Some(n) => Some(super::positive(n)?),
        None => None,
    };
    let resp3 = c.conn.resp3;
    let db = c.db();
    let mut out = Vec::new();
    if let Some(z) = get_zset(db, &a[1])? {
        for _ in 0..count.unwrap_or(1) {
            let first = if max {
                z.order.iter().next_back()
            } else {
                z.order.iter().next()
            };
            let Some((s, m)) = first.cloned() else {
                break;
            };
            z.remove(&m);
            out.push((m, s.0));
        }
    }
    db.drop_if_empty(&a[1]);
    if count.is_none() {
        // One pop is always a flat [member, score].
        return Ok(with_scores(out, true, false));
    }
    Ok(with_scores(out, true, resp3))
}

/// Takes the lowest (or highest) member of a sorted set, for BZPOPMIN and
/// BZPOPMAX; `None` when the key holds none.
pub fn pop_one(db: &mut Db, key: &Bytes, max: bool) -> Result<Option<(Bytes, f64)>, Reply> {
    let Some(z) = get_zset(db, key)? else {
        return Ok(None);
    };
    let first = if max {
        z.order.iter().next_back()
    } else {
        z.order.iter().next()
    };
    let Some((s, m)) = first.cloned() else {
        return Ok(None);
    };
    z.remove(&m);
    db.drop_if_empty(key);
    Ok(Some((m, s.0)))
}

pub fn zpopmin(c: &mut Ctx, a: &[Bytes]) -> R {
    pop(c, a, false)
}

pub fn zpopmax(c: &mut Ctx, a: &[Bytes]) -> R {
    pop(c, a, true)
}

pub fn zremrangebyscore(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = By::Score(score_bound(&a[2])?, score_bound(&a[3])?);
    remove_selected(c, &a[1], by)
}

pub fn zremrangebyrank(c: &mut Ctx, a: &[Bytes]) -> R {
    let by = By::Index(int(&a[2])?, int(&a[3])?);
    remove_selected(c, &a[1], by)
}

fn remove_selected(c: &mut Ctx, key: &Bytes, by: By) -> R {
    let db = c.db();
    let n = match get_zset(db, key)? {
        Some(z) => {
            let gone = select(z, &by, false, None);
            for (m, _) in &gone {
                z.remove(m);
            }
            gone.len()
        }
        None => 0,
    };
    db.drop_if_empty(key);
    Ok(Reply::Int(n as i64))
}

pub fn zscan(c: &mut Ctx, a: &[Bytes]) -> R {
    let o = scan_opts(&a[2..], false)?;
    let items: Vec<(Bytes, f64)> = get_zset(c.db(), &a[1])?
        .map(|z| z.scores.iter().map(|(m, s)| (m.clone(), *s)).collect())
        .unwrap_or_default();
    let (next, page) = scan_page(items, o.cursor, o.count);
    let mut out = Vec::new();
    for (m, s) in page {
        if o.pattern.as_ref().is_none_or(|p| glob(p, &m)) {
            out.push(Reply::Bulk(m));
            out.push(Reply::bulk(crate::rules::redis::format_double(s)));
        }
    }
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(out),
    ]))
}
