//! Query filters: `matches` and the `$`-operators it understands, with
//! MongoDB's rules for arrays (a condition holds if any element meets it)
//! and missing fields. Updates reuse the operator matching for `$` and
//! array filters.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{bad, cmp, eq, eval, num, rank, values_at, QResult};

fn regex_of(pattern: &str, options: &str) -> QResult<regex::Regex> {
    let mut flags = String::new();
    for c in options.chars() {
        if "imsx".contains(c) {
            flags.push(c);
        }
    }
    let src = if flags.is_empty() {
        pattern.to_string()
    } else {
        format!("(?{flags}){pattern}")
    };
    regex::Regex::new(&src).map_err(|e| (51091, format!("Regular expression is invalid: {e}")))
}

fn type_matches(v: &Bson, t: &Bson) -> bool {
    let name = match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::RegularExpression(_) => "regex",
        Bson::Int32(_) => "int",
        Bson::Timestamp(_) => "timestamp",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        _ => "other",
    };
    let code = match name {
        "double" => 1,
        "string" => 2,
        "object" => 3,
        "array" => 4,
        "binData" => 5,
        "objectId" => 7,
        "bool" => 8,
        "date" => 9,
        "null" => 10,
        "regex" => 11,
        "int" => 16,
        "timestamp" => 17,
        "long" => 18,
        "decimal" => 19,
        _ => -99,
    };
    match t {
        Bson::String(s) if s == "number" => rank(v) == 2,
        Bson::String(s) => s == name,
        Bson::Array(a) => a.iter().any(|x| type_matches(v, x)),
        other => num(other).is_some_and(|n| n as i64 == code),
    }
}

/// Whether a document matches a filter.
pub fn matches(doc: &Document, filter: &Document) -> QResult<bool> {
    for (k, cond) in filter {
        let ok = match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let Bson::Array(list) = cond else {
                    return Err(bad(format!("{k} must be an array")));
                };
                let mut res = Vec::new();
                for c in list {
                    let Bson::Document(d) = c else {
                        return Err(bad(format!("{k} entries must be objects")));
                    };
                    res.push(matches(doc, d)?);
                }
                match k.as_str() {
                    "$and" => res.iter().all(|x| *x),
                    "$or" => res.iter().any(|x| *x),
                    _ => !res.iter().any(|x| *x),
                }
            }
            "$comment" => true,
            "$expr" => truthy(&eval(doc, cond)?),
            _ if k.starts_with('$') => {
                return Err(bad(format!("unknown top level operator: {k}")));
            }
            path => field_matches(doc, path, cond)?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn is_op_doc(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k.starts_with('$'))
}

pub(super) fn field_matches(doc: &Document, path: &str, cond: &Bson) -> QResult<bool> {
    let vals = values_at(doc, path);
    match cond {
        Bson::Document(d) if is_op_doc(d) => {
            for (op, arg) in d {
                if !op_matches(&vals, op, arg, d)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Bson::RegularExpression(r) => {
            let re = regex_of(&r.pattern, &r.options)?;
            Ok(any_elem(
                &vals,
                |v| matches!(v, Bson::String(s) if re.is_match(s)),
            ))
        }
        _ => Ok(eq_match(&vals, cond)),
    }
}

/// Applies `f` to each value and, for arrays, to each element.
fn any_elem(vals: &[Option<Bson>], f: impl Fn(&Bson) -> bool) -> bool {
    vals.iter().flatten().any(|v| {
        f(v) || match v {
            Bson::Array(a) => a.iter().any(&f),
            _ => false,
        }
    })
}

pub(super) fn eq_match(vals: &[Option<Bson>], target: &Bson) -> bool {
    if matches!(target, Bson::Null) && vals.iter().any(|v| v.is_none()) {
        return true;
    }
    any_elem(vals, |v| eq(v, target))
}

pub(super) fn op_matches(
    vals: &[Option<Bson>],
    op: &str,
    arg: &Bson,
    all: &Document,
) -> QResult<bool> {
    let cmp_op = |want: &[Ordering]| {
        any_elem(vals, |v| {
            (rank(v) == rank(arg) || matches!(arg, Bson::MinKey | Bson::MaxKey))
                && want.contains(&cmp(v, arg))
        })
    };
    Ok(match op {
        "$eq" => eq_match(vals, arg),
        "$ne" => !eq_match(vals, arg),
        "$gt" => cmp_op(&[Ordering::Greater]),
        "$gte" => cmp_op(&[Ordering::Greater, Ordering::Equal]),
        "$lt" => cmp_op(&[Ordering::Less]),
        "$lte" => cmp_op(&[Ordering::Less, Ordering::Equal]),
        "$in" | "$nin" => {
            let Bson::Array(list) = arg else {
                return Err(bad(format!("{op} needs an array")));
            };
            let mut hit = false;
            for t in list {
                hit |= match t {
                    Bson::RegularExpression(r) => {
                        let re = regex_of(&r.pattern, &r.options)?;
                        any_elem(vals, |v| matches!(v, Bson::String(s) if re.is_match(s)))
                    }
                    _ => eq_match(vals, t),
                };
            }
            if op == "$in" {
                hit
            } else {
                !hit
            }
        }
        "$exists" => {
            let present = vals.iter().any(|v| v.is_some());
            present == truthy(arg)
        }
        "$type" => any_elem(vals, |v| type_matches(v, arg)),
        "$regex" => {
            let opts = all.get_str("$options").unwrap_or("");
            let (pat, opts) = match arg {
                Bson::String(s) => (s.clone(), opts.to_string()),
                Bson::RegularExpression(r) => (r.pattern.clone(), format!("{}{opts}", r.options)),
                _ => return Err(bad("$regex has to be a string")),
            };
            let re = regex_of(&pat, &opts)?;
            any_elem(vals, |v| matches!(v, Bson::String(s) if re.is_match(s)))
        }
        "$options" => true,
        "$mod" => {
            let Bson::Array(a) = arg else {
                return Err(bad("malformed mod, needs to be an array"));
            };
            let (Some(d), Some(r)) = (a.first().and_then(num), a.get(1).and_then(num)) else {
                return Err(bad("malformed mod, not enough elements"));
            };
            if d as i64 == 0 {
                return Err(bad("divisor cannot be 0"));
            }
            any_elem(vals, |v| {
                // i64::MIN % -1 overflows; MongoDB's remainder there is 0.
                num(v).is_some_and(|n| (n as i64).wrapping_rem(d as i64) == r as i64)
            })
        }
        "$size" => {
            let n = num(arg).unwrap_or(-1.0) as i64;
            vals.iter()
                .flatten()
                .any(|v| matches!(v, Bson::Array(a) if a.len() as i64 == n))
        }
        "$all" => {
            let Bson::Array(list) = arg else {
                return Err(bad("$all needs an array"));
            };
            !list.is_empty()
                && list.iter().all(|t| match t {
                    Bson::Document(d) if d.contains_key("$elemMatch") => op_matches(
                        vals,
                        "$elemMatch",
                        d.get("$elemMatch").unwrap_or(&Bson::Null),
                        d,
                    )
                    .unwrap_or(false),
                    _ => eq_match(vals, t),
                })
        }
        "$elemMatch" => {
            let Bson::Document(q) = arg else {
                return Err(bad("$elemMatch needs an Object"));
            };
            let mut hit = false;
            for v in vals.iter().flatten() {
                if let Bson::Array(a) = v {
                    for e in a {
                        hit |= elem_matches(e, q)?;
                    }
                }
            }
            hit
        }
        "$not" => match arg {
            Bson::Document(d) => {
                let mut all_ok = true;
                for (o, a) in d {
                    all_ok &= op_matches(vals, o, a, d)?;
                }
                !all_ok
            }
            Bson::RegularExpression(r) => {
                let re = regex_of(&r.pattern, &r.options)?;
                !any_elem(vals, |v| matches!(v, Bson::String(s) if re.is_match(s)))
            }
            _ => return Err(bad("$not needs a regex or a document")),
        },
        other => return Err(bad(format!("unknown operator: {other}"))),
    })
}

/// `$elemMatch` on one element: operators apply to it directly, field
/// names to its fields.
pub fn elem_matches(e: &Bson, q: &Document) -> QResult<bool> {
    if is_op_doc(q) && !q.keys().any(|k| k == "$and" || k == "$or" || k == "$nor") {
        let vals = vec![Some(e.clone())];
        for (op, arg) in q {
            if !op_matches(&vals, op, arg, q)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    match e {
        Bson::Document(d) => matches(d, q),
        _ => Ok(false),
    }
}

pub fn truthy(b: &Bson) -> bool {
    match b {
        Bson::Boolean(x) => *x,
        Bson::Null | Bson::Undefined => false,
        other => num(other).is_none_or(|n| n != 0.0),
    }
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn filters() {
        let d = doc! { "a": 5, "tags": ["x", "y"], "sub": { "n": "hi" }, "arr": [{ "k": 1 }, { "k": 2 }] };
        assert!(matches(&d, &doc! { "a": { "$gt": 4, "$lte": 5 } }).unwrap());
        assert!(matches(&d, &doc! { "tags": "x" }).unwrap());
        assert!(matches(&d, &doc! { "sub.n": { "$regex": "^H", "$options": "i" } }).unwrap());
        assert!(matches(&d, &doc! { "arr.k": 2 }).unwrap());
        assert!(matches(&d, &doc! { "arr": { "$elemMatch": { "k": { "$gt": 1 } } } }).unwrap());
        assert!(matches(&d, &doc! { "missing": null }).unwrap());
        assert!(!matches(&d, &doc! { "$nor": [{ "a": 5 }] }).unwrap());
        assert!(matches(&d, &doc! { "tags": { "$size": 2, "$all": ["y", "x"] } }).unwrap());
        assert!(matches(&d, &doc! { "a": { "$not": { "$gt": 10 } } }).unwrap());
    }
}
