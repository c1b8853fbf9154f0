//! List commands, and the non-blocking halves of BLPOP/BRPOP/BLMOVE.

use bytes::Bytes;

use super::{eq, get_list, int, list_or_new, positive, syntax, Ctx, R};
use crate::responders::redis::resp::Reply;

fn push(c: &mut Ctx, a: &[Bytes], left: bool, only_existing: bool) -> R {
    let db = c.db();
    if only_existing && get_list(db, &a[1])?.is_none() {
        return Ok(Reply::Int(0));
    }
    let l = list_or_new(db, &a[1])?;
    for v in &a[2..] {
        if left {
            l.push_front(v.clone());
        } else {
            l.push_back(v.clone());
        }
    }
    Ok(Reply::Int(l.len() as i64))
}

pub fn lpush(c: &mut Ctx, a: &[Bytes]) -> R {
    push(c, a, true, false)
}

pub fn rpush(c: &mut Ctx, a: &[Bytes]) -> R {
    push(c, a, false, false)
}

pub fn lpushx(c: &mut Ctx, a: &[Bytes]) -> R {
    push(c, a, true, true)
}

pub fn rpushx(c: &mut Ctx, a: &[Bytes]) -> R {
    push(c, a, false, true)
}

fn pop(c: &mut Ctx, a: &[Bytes], left: bool) -> R {
    if a.len() > 3 {
        return Err(super::wrong_args(if left { "lpop" } else { "rpop" }));
    }
    let count = match a.get(2) {
        Some(n) => Some(positive(n)?),
        None => None,
    };
    let db = c.db();
    let Some(l) = get_list(db, &a[1])? else {
        return Ok(if count.is_some() {
            Reply::NilArray
        } else {
            Reply::Nil
        });
    };
    let take = |l: &mut std::collections::VecDeque<Bytes>| {
        if left {
            l.pop_front()
        } else {
            l.pop_back()
        }
    };
    let reply = match count {
        None => take(l).map_or(Reply::Nil, Reply::Bulk),
        Some(n) => {
            let mut out = Vec::new();
            for _ in 0..n {
                match take(l) {
                    Some(v) => out.push(Reply::Bulk(v)),
                    None => break,
                }
            }
            Reply::Array(out)
        }
    };
    db.drop_if_empty(&a[1]);
    Ok(reply)
}

pub fn lpop(c: &mut Ctx, a: &[Bytes]) -> R {
    pop(c, a, true)
}

pub fn rpop(c: &mut Ctx, a: &[Bytes]) -> R {
    pop(c, a, false)
}

pub fn lrange(c: &mut Ctx, a: &[Bytes]) -> R {
    let (s, e) = (int(&a[2])?, int(&a[3])?);
    let Some(l) = get_list(c.db(), &a[1])? else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(match super::range(s, e, l.len()) {
        Some((x, y)) => super::bulks(l.range(x..=y).cloned()),
        None => Reply::Array(vec![]),
    })
}

pub fn llen(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_list(c.db(), &a[1])?.map_or(0, |l| l.len() as i64),
    ))
}

fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { i + len as i64 } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

pub fn lindex(c: &mut Ctx, a: &[Bytes]) -> R {
    let i = int(&a[2])?;
    let Some(l) = get_list(c.db(), &a[1])? else {
        return Ok(Reply::Nil);
    };
    Ok(index(i, l.len())
        .and_then(|i| l.get(i).cloned())
        .map_or(Reply::Nil, Reply::Bulk))
}

pub fn lset(c: &mut Ctx, a: &[Bytes]) -> R {
    let i = int(&a[2])?;
    let Some(l) = get_list(c.db(), &a[1])? else {
        return Err(super::no_such_key());
    };
    let Some(i) = index(i, l.len()) else {
        return Err(Reply::err("ERR index out of range"));
    };
    l[i] = a[3].clone();
    Ok(Reply::Ok)
}

pub fn lrem(c: &mut Ctx, a: &[Bytes]) -> R {
    let count = int(&a[2])?;
    let db = c.db();
    let Some(l) = get_list(db, &a[1])? else {
        return Ok(Reply::Int(0));
    };
    let limit = if count == 0 {
        usize::MAX
    } else {
        count.unsigned_abs() as usize
    };
    let mut removed = 0;
    if count >= 0 {
        let mut i = 0;
        while i < l.len() && removed < limit {
            if l[i] == a[3] {
                l.remove(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
    } else {
        let mut i = l.len();
        while i > 0 && removed < limit {
            i -= 1;
            if l[i] == a[3] {
                l.remove(i);
                removed += 1;
            }
        }
    }
    db.drop_if_empty(&a[1]);
    Ok(Reply::Int(removed as i64))
}

pub fn ltrim(c: &mut Ctx, a: &[Bytes]) -> R {
    let (s, e) = (int(&a[2])?, int(&a[3])?);
    let db = c.db();
    if let Some(l) = get_list(db, &a[1])? {
        match super::range(s, e, l.len()) {
            Some((x, y)) => {
                l.truncate(y + 1);
                l.drain(..x);
            }
            None => l.clear(),
        }
    }
    db.drop_if_empty(&a[1]);
    Ok(Reply::Ok)
}

pub fn linsert(c: &mut Ctx, a: &[Bytes]) -> R {
    let before = if eq(&a[2], "before") {
        true
    } else if eq(&a[2], "after") {
        false
    } else {
        return Err(syntax());
    };
    let Some(l) = get_list(c.db(), &a[1])? else {
        return Ok(Reply::Int(0));
    };
    let Some(p) = l.iter().position(|v| *v == a[3]) else {
        return Ok(Reply::Int(-1));
    };
    l.insert(if before { p } else { p + 1 }, a[4].clone());
    Ok(Reply::Int(l.len() as i64))
}

pub fn lpos(c: &mut Ctx, a: &[Bytes]) -> R {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return Err(syntax());
        };
        if eq(&a[i], "rank") {
            rank = int(v)?;
            if rank == 0 {
                return Err(Reply::err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
            }
        } else if eq(&a[i], "count") {
            let n = int(v)?;
            if n < 0 {
                return Err(Reply::err("ERR COUNT can't be negative"));
            }
            count = Some(n as usize);
        } else if eq(&a[i], "maxlen") {
            let n = int(v)?;
            if n < 0 {
                return Err(Reply::err("ERR MAXLEN can't be negative"));
            }
            maxlen = n as usize;
        } else {
            return Err(syntax());
        }
        i += 2;
    }
    let Some(l) = get_list(c.db(), &a[1])? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Nil
        });
    };
    let len = l.len();
    let order: Box<dyn Iterator<Item = usize>> = if rank > 0 {
        Box::new(0..len)
    } else {
        Box::new((0..len).rev())
    };
    let mut skip = rank.unsigned_abs() as usize - 1;
    let want = match count {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => 1,
    };
    let mut found = Vec::new();
    for (scanned, i) in order.enumerate() {
        if maxlen > 0 && scanned >= maxlen {
            break;
        }
        if l[i] == a[2] {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(i as i64);
            if found.len() >= want {
                break;
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found.into_iter().map(Reply::Int).collect()),
        None => found.first().map_or(Reply::Nil, |&i| Reply::Int(i)),
    })
}

fn side(b: &[u8]) -> Result<bool, Reply> {
    if eq(b, "left") {
        Ok(true)
    } else if eq(b, "right") {
        Ok(false)
    } else {
        Err(syntax())
    }
}

/// Moves one element; `None` when the source is empty or absent.
pub fn move_one(
    c: &mut Ctx,
    src: &Bytes,
    dst: &Bytes,
    from_left: bool,
    to_left: bool,
) -> Result<Option<Bytes>, Reply> {
    let db = c.db();
    if get_list(db, src)?.is_none_or(|l| l.is_empty()) {
        return Ok(None);
    }
    // The destination's type is checked before anything moves.
    get_list(db, dst)?;
    let v = get_list(db, src)?.and_then(|l| {
        if from_left {
            l.pop_front()
        } else {
            l.pop_back()
        }
    });
    let Some(v) = v else {
        return Ok(None);
    };
    db.drop_if_empty(src);
    let d = list_or_new(db, dst)?;
    if to_left {
        d.push_front(v.clone());
    } else {
        d.push_back(v.clone());
    }
    Ok(Some(v))
}

pub fn lmove(c: &mut Ctx, a: &[Bytes]) -> R {
    let (from, to) = (side(&a[3])?, side(&a[4])?);
    Ok(move_one(c, &a[1], &a[2], from, to)?.map_or(Reply::Nil, Reply::Bulk))
}

pub fn rpoplpush(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(move_one(c, &a[1], &a[2], false, true)?.map_or(Reply::Nil, Reply::Bulk))
}

/// What a blocking command waits for, parsed once.
pub enum BlockOp {
    Pop {
        keys: Vec<Bytes>,
        left: bool,
    },
    /// BZPOPMIN (`max` false) and BZPOPMAX.
    ZPop {
        keys: Vec<Bytes>,
        max: bool,
    },
    /// XREAD and XREADGROUP with BLOCK.
    Read(super::streams::Read),
    Move {
        src: Bytes,
        dst: Bytes,
        from_left: bool,
        to_left: bool,
    },
}

/// Parses BLPOP/BRPOP/BLMOVE/BRPOPLPUSH: the operation and its timeout
/// in seconds (0 = forever).
pub fn parse_block(name: &str, a: &[Bytes]) -> Result<(BlockOp, f64), Reply> {
    let timeout_arg = &a[a.len() - 1];
    let t = super::parse_float(timeout_arg)
        .filter(|t| t.is_finite())
        .ok_or_else(|| Reply::err("ERR timeout is not a float or out of range"))?;
    if t < 0.0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    // As Redis: a timeout must fit a 64-bit count of milliseconds.
    if t * 1000.0 >= i64::MAX as f64 {
        return Err(Reply::err("ERR timeout is out of range"));
    }
    let op = match name {
        "blpop" | "brpop" => BlockOp::Pop {
            keys: a[1..a.len() - 1].to_vec(),
            left: name == "blpop",
        },
        "bzpopmin" | "bzpopmax" => BlockOp::ZPop {
            keys: a[1..a.len() - 1].to_vec(),
            max: name == "bzpopmax",
        },
        "blmove" => BlockOp::Move {
            src: a[1].clone(),
            dst: a[2].clone(),
            from_left: side(&a[3])?,
            to_left: side(&a[4])?,
        },
        _ => BlockOp::Move {
            src: a[1].clone(),
            dst: a[2].clone(),
            from_left: false,
            to_left: true,
        },
    };
    Ok((op, t))
}

/// One attempt at a blocking operation: the reply, or `None` to wait.
pub fn try_block(c: &mut Ctx, op: &BlockOp) -> Result<Option<Reply>, Reply> {
    match op {
        BlockOp::Pop { keys, left } => {
            for k in keys {
                let db = c.db();
                if let Some(l) = get_list(db, k)? {
                    let v = if *left { l.pop_front() } else { l.pop_back() };
                    db.drop_if_empty(k);
                    if let Some(v) = v {
                        return Ok(Some(Reply::Array(vec![
                            Reply::Bulk(k.clone()),
                            Reply::Bulk(v),
                        ])));
                    }
                }
            }
            Ok(None)
        }
        BlockOp::Move {
            src,
            dst,
            from_left,
            to_left,
        } => Ok(move_one(c, src, dst, *from_left, *to_left)?.map(Reply::Bulk)),
        BlockOp::ZPop { keys, max } => {
            for k in keys {
                if let Some((member, score)) = super::zsets::pop_one(c.db(), k, *max)? {
                    return Ok(Some(Reply::Array(vec![
                        Reply::Bulk(k.clone()),
                        Reply::Bulk(member),
                        Reply::Double(score),
                    ])));
                }
            }
            Ok(None)
        }
        BlockOp::Read(r) => super::streams::try_read(c, r),
    }
}
