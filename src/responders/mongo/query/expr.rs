//! Aggregation expressions (`$field` references and operators such as
//! `$add` or `$cond`), evaluated against one document; `$expr` filters,
//! computed projections and pipeline stages evaluate through here.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::filter::is_op_doc;
use super::{arith, bad, cmp, eq, num, truthy, values_at, QResult};

/// Evaluates an aggregation expression against a document.
pub fn eval(doc: &Document, e: &Bson) -> QResult<Bson> {
    match e {
        Bson::String(s) if s.starts_with("$$ROOT") => Ok(Bson::Document(doc.clone())),
        Bson::String(s) if s.starts_with('$') => {
            let vals: Vec<Bson> = values_at(doc, &s[1..]).into_iter().flatten().collect();
            Ok(match vals.len() {
                0 => Bson::Undefined,
                1 if !s[1..].contains('.') => vals.into_iter().next().unwrap_or(Bson::Null),
                1 => vals.into_iter().next().unwrap_or(Bson::Null),
                _ => Bson::Array(vals),
            })
        }
        Bson::Array(a) => Ok(Bson::Array(
            a.iter()
                .map(|x| eval(doc, x))
                .collect::<QResult<Vec<_>>>()?,
        )),
        Bson::Document(d) if is_op_doc(d) && d.len() == 1 => {
            let (op, arg) = d.iter().next().ok_or_else(|| bad("empty"))?;
            let args = |a: &Bson| -> QResult<Vec<Bson>> {
                match a {
                    Bson::Array(l) => l.iter().map(|x| eval(doc, x)).collect(),
                    other => Ok(vec![eval(doc, other)?]),
                }
            };
            let v = args(arg)?;
            let n = |i: usize| v.get(i).and_then(num);
            Ok(match op.as_str() {
                "$literal" => arg.clone(),
                "$add" | "$sum" => {
                    let mut acc = Bson::Int32(0);
                    for x in &v {
                        let x = match x {
                            Bson::Array(a) => a
                                .iter()
                                .filter(|y| num(y).is_some())
                                .try_fold(Bson::Int32(0), |s, y| arith(&s, y, false))?,
                            other if num(other).is_some() => other.clone(),
                            _ => continue,
                        };
                        acc = arith(&acc, &x, false)?;
                    }
                    acc
                }
                "$multiply" => {
                    let mut acc = Bson::Int32(1);
                    for x in &v {
                        acc = arith(&acc, x, true)?;
                    }
                    acc
                }
                "$subtract" => match (v.first(), v.get(1)) {
                    (Some(a), Some(b)) => arith(a, &arith(b, &Bson::Int32(-1), true)?, false)?,
                    _ => Bson::Null,
                },
                "$divide" => match (n(0), n(1)) {
                    (Some(a), Some(b)) if b != 0.0 => Bson::Double(a / b),
                    _ => Bson::Null,
                },
                "$concat" => {
                    let mut s = String::new();
                    for x in &v {
                        match x {
                            Bson::String(t) => s.push_str(t),
                            _ => return Ok(Bson::Null),
                        }
                    }
                    Bson::String(s)
                }
                "$toUpper" | "$toLower" => match v.first() {
                    Some(Bson::String(s)) => Bson::String(if op == "$toUpper" {
                        s.to_uppercase()
                    } else {
                        s.to_lowercase()
                    }),
                    _ => Bson::String(String::new()),
                },
                "$size" => match v.first() {
                    Some(Bson::Array(a)) => Bson::Int32(a.len() as i32),
                    _ => return Err((17124, "The argument to $size must be an array".into())),
                },
                "$ifNull" => v
                    .iter()
                    .find(|x| !matches!(x, Bson::Null | Bson::Undefined))
                    .cloned()
                    .unwrap_or(Bson::Null),
                "$cond" => {
                    let (c, t, f) = match arg {
                        Bson::Document(cd) => (
                            eval(doc, cd.get("if").unwrap_or(&Bson::Null))?,
                            cd.get("then").cloned().unwrap_or(Bson::Null),
                            cd.get("else").cloned().unwrap_or(Bson::Null),
                        ),
                        _ => (
                            v.first().cloned().unwrap_or(Bson::Null),
                            arg.as_array()
                                .and_then(|a| a.get(1))
                                .cloned()
                                .unwrap_or(Bson::Null),
                            arg.as_array()
                                .and_then(|a| a.get(2))
                                .cloned()
                                .unwrap_or(Bson::Null),
                        ),
                    };
                    eval(doc, if truthy(&c) { &t } else { &f })?
                }
                "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
                    let a = v.first().cloned().unwrap_or(Bson::Null);
                    let b = v.get(1).cloned().unwrap_or(Bson::Null);
                    let o = cmp(&a, &b);
                    match op.as_str() {
                        "$eq" => Bson::Boolean(o == Ordering::Equal),
                        "$ne" => Bson::Boolean(o != Ordering::Equal),
                        "$gt" => Bson::Boolean(o == Ordering::Greater),
                        "$gte" => Bson::Boolean(o != Ordering::Less),
                        "$lt" => Bson::Boolean(o == Ordering::Less),
                        "$lte" => Bson::Boolean(o != Ordering::Greater),
                        _ => Bson::Int32(o as i32),
                    }
                }
                "$and" => Bson::Boolean(v.iter().all(truthy)),
                "$or" => Bson::Boolean(v.iter().any(truthy)),
                "$not" => Bson::Boolean(!v.first().is_some_and(truthy)),
                "$in" => match v.get(1) {
                    Some(Bson::Array(a)) => {
                        Bson::Boolean(a.iter().any(|x| eq(x, v.first().unwrap_or(&Bson::Null))))
                    }
                    _ => return Err(bad("$in requires an array as a second argument")),
                },
                other => return Err((168, format!("Unrecognized expression '{other}'"))),
            })
        }
        Bson::Document(d) => {
            let mut out = Document::new();
            for (k, v) in d {
                let r = eval(doc, v)?;
                if !matches!(r, Bson::Undefined) {
                    out.insert(k, r);
                }
            }
            Ok(Bson::Document(out))
        }
        other => Ok(other.clone()),
    }
}
