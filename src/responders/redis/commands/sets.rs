//! Set commands.

use bytes::Bytes;
use indexmap::IndexSet;
use rand::seq::SliceRandom;

use super::{get_set, glob, int, positive, scan_opts, scan_page, set_or_new, Ctx, R};
use crate::responders::redis::resp::Reply;
use crate::responders::redis::state::Value;

fn set_reply(members: impl IntoIterator<Item = Bytes>) -> Reply {
    Reply::Set(members.into_iter().map(Reply::Bulk).collect())
}

pub fn sadd(c: &mut Ctx, a: &[Bytes]) -> R {
    let s = set_or_new(c.db(), &a[1])?;
    Ok(Reply::Int(
        a[2..].iter().filter(|m| s.insert((*m).clone())).count() as i64,
    ))
}

pub fn srem(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    let n = match get_set(db, &a[1])? {
        Some(s) => a[2..].iter().filter(|m| s.shift_remove(*m)).count(),
        None => 0,
    };
    db.drop_if_empty(&a[1]);
    Ok(Reply::Int(n as i64))
}

pub fn smembers(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(set_reply(
        get_set(c.db(), &a[1])?
            .map(|s| s.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    ))
}

pub fn sismember(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_set(c.db(), &a[1])?.is_some_and(|s| s.contains(&a[2])) as i64,
    ))
}

pub fn smismember(c: &mut Ctx, a: &[Bytes]) -> R {
    let s = get_set(c.db(), &a[1])?;
    Ok(Reply::Array(
        a[2..]
            .iter()
            .map(|m| Reply::Int(s.as_ref().is_some_and(|s| s.contains(m)) as i64))
            .collect(),
    ))
}

pub fn scard(c: &mut Ctx, a: &[Bytes]) -> R {
    Ok(Reply::Int(
        get_set(c.db(), &a[1])?.map_or(0, |s| s.len() as i64),
    ))
}

pub fn spop(c: &mut Ctx, a: &[Bytes]) -> R {
    if a.len() > 3 {
        return Err(super::syntax());
    }
    let count = match a.get(2) {
        Some(n) => Some(positive(n)?),
        None => None,
    };
    let db = c.db();
    let Some(s) = get_set(db, &a[1])? else {
        return Ok(if count.is_some() {
            Reply::Set(vec![])
        } else {
            Reply::Nil
        });
    };
    let mut popped = Vec::new();
    for _ in 0..count.unwrap_or(1) {
        if s.is_empty() {
            break;
        }
        let i = rand::random_range(0..s.len());
        if let Some(m) = s.swap_remove_index(i) {
            popped.push(m);
        }
    }
    db.drop_if_empty(&a[1]);
    Ok(match count {
        Some(_) => set_reply(popped),
        None => popped.pop().map_or(Reply::Nil, Reply::Bulk),
    })
}

pub fn srandmember(c: &mut Ctx, a: &[Bytes]) -> R {
    if a.len() > 3 {
        return Err(super::syntax());
    }
    let count = match a.get(2) {
        Some(n) => Some(int(n)?),
        None => None,
    };
    let s = get_set(c.db(), &a[1])?;
    let members: Vec<Bytes> = s.map(|s| s.iter().cloned().collect()).unwrap_or_default();
    let Some(n) = count else {
        if members.is_empty() {
            return Ok(Reply::Nil);
        }
        return Ok(Reply::Bulk(
            members[rand::random_range(0..members.len())].clone(),
        ));
    };
    if members.is_empty() {
        return Ok(Reply::Array(vec![]));
    }
    let picked: Vec<Bytes> = if n >= 0 {
        let mut m = members;
        m.shuffle(&mut rand::rng());
        m.truncate(n as usize);
        m
    } else {
        let n = super::repeat_count(n)?;
        (0..n)
            .map(|_| members[rand::random_range(0..members.len())].clone())
            .collect()
    };
    Ok(super::bulks(picked))
}

/// The sets at `keys` (absent keys are empty sets).
fn sets_of(c: &mut Ctx, keys: &[Bytes]) -> Result<Vec<IndexSet<Bytes>>, Reply> {
    let db = c.db();
    keys.iter()
        .map(|k| Ok(get_set(db, k)?.map(|s| s.clone()).unwrap_or_default()))
        .collect()
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

fn combine(sets: Vec<IndexSet<Bytes>>, op: Op) -> IndexSet<Bytes> {
    let mut it = sets.into_iter();
    let Some(mut acc) = it.next() else {
        return IndexSet::new();
    };
    for s in it {
        match op {
            Op::Inter => acc.retain(|m| s.contains(m)),
            Op::Union => acc.extend(s),
            Op::Diff => acc.retain(|m| !s.contains(m)),
        }
    }
    acc
}

fn read_op(c: &mut Ctx, a: &[Bytes], op: Op) -> R {
    let sets = sets_of(c, &a[1..])?;
    Ok(set_reply(combine(sets, op)))
}

fn store_op(c: &mut Ctx, a: &[Bytes], op: Op) -> R {
    let sets = sets_of(c, &a[2..])?;
    let out = combine(sets, op);
    let n = out.len();
    let db = c.db();
    if out.is_empty() {
        db.remove(&a[1]);
    } else {
        db.set(a[1].clone(), Value::Set(out));
    }
    Ok(Reply::Int(n as i64))
}

pub fn sinter(c: &mut Ctx, a: &[Bytes]) -> R {
    read_op(c, a, Op::Inter)
}

pub fn sunion(c: &mut Ctx, a: &[Bytes]) -> R {
    read_op(c, a, Op::Union)
}

pub fn sdiff(c: &mut Ctx, a: &[Bytes]) -> R {
    read_op(c, a, Op::Diff)
}

pub fn sinterstore(c: &mut Ctx, a: &[Bytes]) -> R {
    store_op(c, a, Op::Inter)
}

pub fn sunionstore(c: &mut Ctx, a: &[Bytes]) -> R {
    store_op(c, a, Op::Union)
}

pub fn sdiffstore(c: &mut Ctx, a: &[Bytes]) -> R {
    store_op(c, a, Op::Diff)
}

pub fn smove(c: &mut Ctx, a: &[Bytes]) -> R {
    let db = c.db();
    let Some(src) = get_set(db, &a[1])? else {
        return Ok(Reply::Int(0));
    };
    let present = src.contains(&a[3]);
    get_set(db, &a[2])?;
    if !present {
        return Ok(Reply::Int(0));
    }
    if let Some(s) = get_set(db, &a[1])? {
        s.shift_remove(&a[3]);
    }
    db.drop_if_empty(&a[1]);
    set_or_new(db, &a[2])?.insert(a[3].clone());
    Ok(Reply::Int(1))
}

pub fn sscan(c: &mut Ctx, a: &[Bytes]) -> R {
    let o = scan_opts(&a[2..], false)?;
    let items: Vec<(Bytes, ())> = get_set(c.db(), &a[1])?
        .map(|s| s.iter().map(|m| (m.clone(), ())).collect())
        .unwrap_or_default();
    let (next, page) = scan_page(items, o.cursor, o.count);
    let out = page
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| o.pattern.as_ref().is_none_or(|p| glob(p, m)));
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        super::bulks(out),
    ]))
}
