//! The query language: BSON comparison order, filters, updates,
//! projections and the common aggregation stages.

use std::cmp::Ordering;

use bson::{doc, Bson, Document};

pub type QResult<T> = Result<T, (i32, String)>;

fn bad(msg: impl Into<String>) -> (i32, String) {
    (2, msg.into())
}

/// The rank of a type in BSON comparison order.
fn rank(b: &Bson) -> u8 {
    match b {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::MaxKey => 13,
        _ => 12,
    }
}

pub fn num(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(*i as f64),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        Bson::Decimal128(_) => None,
        _ => None,
    }
}

/// Total order over BSON values (MongoDB's comparison order).
pub fn cmp(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let x = a.as_i64().or(a.as_i32().map(i64::from)).unwrap_or(0);
            let y = b.as_i64().or(b.as_i32().map(i64::from)).unwrap_or(0);
            x.cmp(&y)
        }
        _ if ra == 2 => num(a).unwrap_or(0.0).total_cmp(&num(b).unwrap_or(0.0)),
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        (Bson::Document(x), Bson::Document(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                let o = cmp(va, vb).then_with(|| ka.cmp(kb));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (va, vb) in x.iter().zip(y.iter()) {
                let o = cmp(va, vb);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::Binary(x), Bson::Binary(y)) => x.bytes.cmp(&y.bytes),
        _ => Ordering::Equal,
    }
}

pub fn eq(a: &Bson, b: &Bson) -> bool {
    rank(a) == rank(b) && cmp(a, b) == Ordering::Equal
}

/// Values at a dotted path, traversing arrays. `None` entries stand for
/// a missing field.
pub fn values_at(doc: &Document, path: &str) -> Vec<Option<Bson>> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    match doc.get(*first) {
        Some(v) => walk(v, rest, &mut out),
        None => out.push(None),
    }
    out
}

fn walk(b: &Bson, parts: &[&str], out: &mut Vec<Option<Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(Some(b.clone()));
        return;
    };
    match b {
        Bson::Document(d) => match d.get(*first) {
            Some(v) => walk(v, rest, out),
            None => out.push(None),
        },
        Bson::Array(a) => {
            if let Ok(i) = first.parse::<usize>() {
                if let Some(v) = a.get(i) {
                    walk(v, rest, out);
                    return;
                }
            }
            let before = out.len();
            for v in a {
                if matches!(v, Bson::Document(_)) {
                    walk(v, parts, out);
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

/// The first value at a dotted path (no array fan-out beyond the first).
pub fn get_path(doc: &Document, path: &str) -> Option<Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            Bson::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur.clone())
}

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

fn is_op_doc(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k.starts_with('$'))
}

fn field_matches(doc: &Document, path: &str, cond: &Bson) -> QResult<bool> {
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

fn eq_match(vals: &[Option<Bson>], target: &Bson) -> bool {
    if matches!(target, Bson::Null) && vals.iter().any(|v| v.is_none()) {
        return true;
    }
    any_elem(vals, |v| eq(v, target))
}

fn op_matches(vals: &[Option<Bson>], op: &str, arg: &Bson, all: &Document) -> QResult<bool> {
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
                num(v).is_some_and(|n| (n as i64) % (d as i64) == r as i64)
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

// ---------- paths for writing ----------

/// Sets a dotted path, creating documents on the way.
pub fn set_path(doc: &mut Document, path: &str, value: Bson) -> QResult<()> {
    let parts: Vec<&str> = path.split('.').collect();
    set_in_doc(doc, &parts, value)
}

fn set_in_doc(doc: &mut Document, parts: &[&str], value: Bson) -> QResult<()> {
    let (first, rest) = parts.split_first().ok_or_else(|| bad("empty path"))?;
    if rest.is_empty() {
        doc.insert(*first, value);
        return Ok(());
    }
    if !doc.contains_key(*first) {
        doc.insert(*first, Document::new());
    }
    let child = doc.get_mut(*first).ok_or_else(|| bad("path"))?;
    set_in_bson(child, rest, value, first)
}

fn set_in_bson(b: &mut Bson, parts: &[&str], value: Bson, name: &str) -> QResult<()> {
    match b {
        Bson::Document(d) => set_in_doc(d, parts, value),
        Bson::Array(a) => {
            let (first, rest) = parts.split_first().ok_or_else(|| bad("empty path"))?;
            if *first == "$[]" {
                for e in a.iter_mut() {
                    if rest.is_empty() {
                        *e = value.clone();
                    } else {
                        set_in_bson(e, rest, value.clone(), first)?;
                    }
                }
                return Ok(());
            }
            let i: usize = first.parse().map_err(|_| {
                (
                    28,
                    format!("Cannot create field '{first}' in element {{{name}: [...]}}"),
                )
            })?;
            if i > 1_000_000 {
                return Err((2, format!("can't pad array to index {i}")));
            }
            while a.len() <= i {
                a.push(Bson::Null);
            }
            if rest.is_empty() {
                a[i] = value;
                Ok(())
            } else {
                if matches!(a[i], Bson::Null) {
                    a[i] = Bson::Document(Document::new());
                }
                set_in_bson(&mut a[i], rest, value, first)
            }
        }
        other => Err((
            28,
            format!(
                "Cannot create field '{}' in element {{{name}: {other}}}",
                parts[0]
            ),
        )),
    }
}

pub fn unset_path(doc: &mut Document, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    fn go(b: &mut Document, parts: &[&str]) {
        if parts.len() == 1 {
            b.remove(parts[0]);
            return;
        }
        match b.get_mut(parts[0]) {
            Some(Bson::Document(d)) => go(d, &parts[1..]),
            Some(Bson::Array(a)) => {
                if let Ok(i) = parts[1].parse::<usize>() {
                    if parts.len() == 2 {
                        if i < a.len() {
                            a[i] = Bson::Null;
                        }
                    } else if let Some(Bson::Document(d)) = a.get_mut(i) {
                        go(d, &parts[2..]);
                    }
                }
            }
            _ => {}
        }
    }
    go(doc, &parts);
}

// ---------- updates ----------

pub fn is_operator_update(u: &Document) -> bool {
    u.keys().next().is_some_and(|k| k.starts_with('$'))
}

/// Replaces `$` in a path with the index of the first array element the
/// filter matched.
fn positional(path: &str, doc: &Document, filter: &Document) -> String {
    if !path.split('.').any(|p| p == "$") {
        return path.to_string();
    }
    let parts: Vec<&str> = path.split('.').collect();
    let pos = parts.iter().position(|p| *p == "$").unwrap_or(0);
    let prefix = parts[..pos].join(".");
    if let Some(Bson::Array(arr)) = get_path(doc, &prefix) {
        for (i, e) in arr.iter().enumerate() {
            let mut hit = false;
            for (k, cond) in filter {
                if k == &prefix {
                    let vals = vec![Some(e.clone())];
                    hit |= match cond {
                        Bson::Document(d) if d.contains_key("$elemMatch") => {
                            if let Some(Bson::Document(q)) = d.get("$elemMatch") {
                                elem_matches(e, q).unwrap_or(false)
                            } else {
                                false
                            }
                        }
                        Bson::Document(d) if is_op_doc(d) => d
                            .iter()
                            .all(|(o, a)| op_matches(&vals, o, a, d).unwrap_or(false)),
                        other => eq(e, other),
                    };
                } else if let Some(sub) = k.strip_prefix(&format!("{prefix}.")) {
                    if let Bson::Document(ed) = e {
                        hit |= field_matches(ed, sub, cond).unwrap_or(false);
                    }
                }
            }
            if hit {
                let mut p = parts.clone();
                let idx = i.to_string();
                p[pos] = &idx;
                return p.join(".");
            }
        }
    }
    path.replacen("$", "0", 1)
}

fn arith(a: &Bson, b: &Bson, mul: bool) -> QResult<Bson> {
    Ok(match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => {
            let r = if mul {
                i64::from(*x) * i64::from(*y)
            } else {
                i64::from(*x) + i64::from(*y)
            };
            i32::try_from(r).map(Bson::Int32).unwrap_or(Bson::Int64(r))
        }
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let x = num(a).unwrap_or(0.0) as i64;
            let y = num(b).unwrap_or(0.0) as i64;
            Bson::Int64(if mul {
                x.wrapping_mul(y)
            } else {
                x.wrapping_add(y)
            })
        }
        _ => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return Err((
                    14,
                    "Cannot apply $inc/$mul to a value of non-numeric type".into(),
                ));
            };
            Bson::Double(if mul { x * y } else { x + y })
        }
    })
}

/// Expands `$[]` and `$[name]` (with `arrayFilters`) into concrete paths.
fn expand_paths(doc: &Document, path: &str, afs: &[Document]) -> QResult<Vec<String>> {
    if !path.contains("$[") {
        return Ok(vec![path.to_string()]);
    }
    let mut prefixes: Vec<String> = vec![String::new()];
    for part in path.split('.') {
        let mut next = Vec::new();
        for pre in &prefixes {
            let join = |s: &str| {
                if pre.is_empty() {
                    s.to_string()
                } else {
                    format!("{pre}.{s}")
                }
            };
            if let Some(ident) = part.strip_prefix("$[").and_then(|r| r.strip_suffix(']')) {
                let Some(Bson::Array(arr)) = get_path(doc, pre) else {
                    return Err((2, format!("The path '{pre}' must exist in the document in order to apply array updates.")));
                };
                let filters: Vec<&Document> = afs
                    .iter()
                    .filter(|f| {
                        f.keys()
                            .next()
                            .is_some_and(|k| k == ident || k.starts_with(&format!("{ident}.")))
                    })
                    .collect();
                if !ident.is_empty() && filters.is_empty() {
                    return Err((
                        2,
                        format!("No array filter found for identifier '{ident}' in path '{path}'"),
                    ));
                }
                for (i, e) in arr.iter().enumerate() {
                    let wrapped = doc! { ident: e.clone() };
                    let mut ok = true;
                    for f in &filters {
                        ok &= matches(&wrapped, f)?;
                    }
                    if ok {
                        next.push(join(&i.to_string()));
                    }
                }
            } else {
                next.push(join(part));
            }
        }
        prefixes = next;
    }
    Ok(prefixes)
}

/// Applies an update (operators or a replacement) to a document.
/// `insert` is true for the document an upsert creates.
pub fn apply_update(
    doc: &mut Document,
    update: &Document,
    filter: &Document,
    insert: bool,
    array_filters: &[Document],
) -> QResult<()> {
    if !is_operator_update(update) {
        let id = doc.get("_id").cloned();
        *doc = update.clone();
        if let Some(id) = id {
            if !doc.contains_key("_id") {
                let mut d = doc! {"_id": id};
                d.extend(doc.clone());
                *doc = d;
            }
        }
        return Ok(());
    }
    for (op, spec) in update {
        let Bson::Document(fields) = spec else {
            return Err((
                9,
                format!(
                    "Modifiers operate on fields but we found type {} instead",
                    spec.element_type() as u8
                ),
            ));
        };
        let mut work = Vec::new();
        for (path, arg) in fields {
            let path = positional(path, doc, filter);
            for p in expand_paths(doc, &path, array_filters)? {
                work.push((p, arg));
            }
        }
        for (path, arg) in work {
            let cur = get_path(doc, &path);
            match op.as_str() {
                "$set" => set_path(doc, &path, arg.clone())?,
                "$setOnInsert" => {
                    if insert {
                        set_path(doc, &path, arg.clone())?
                    }
                }
                "$unset" => unset_path(doc, &path),
                "$inc" | "$mul" => {
                    let base = cur.unwrap_or(if op == "$inc" {
                        Bson::Int32(0)
                    } else {
                        match arg {
                            Bson::Double(_) => Bson::Double(0.0),
                            _ => Bson::Int32(0),
                        }
                    });
                    let v = if op == "$mul" && num(&base) == Some(0.0) {
                        arith(&base, arg, true)?
                    } else {
                        arith(&base, arg, op == "$mul")?
                    };
                    set_path(doc, &path, v)?
                }
                "$min" | "$max" => {
                    let replace = match &cur {
                        None => true,
                        Some(c) => {
                            let o = cmp(arg, c);
                            (op == "$min" && o == Ordering::Less)
                                || (op == "$max" && o == Ordering::Greater)
                        }
                    };
                    if replace {
                        set_path(doc, &path, arg.clone())?
                    }
                }
                "$rename" => {
                    let Bson::String(to) = arg else {
                        return Err(bad("$rename target must be a string"));
                    };
                    if let Some(v) = cur {
                        unset_path(doc, &path);
                        set_path(doc, to, v)?;
                    }
                }
                "$currentDate" => set_path(doc, &path, Bson::DateTime(bson::DateTime::now()))?,
                "$push" | "$addToSet" => {
                    let mut arr = match cur {
                        None => Vec::new(),
                        Some(Bson::Array(a)) => a,
                        Some(_) => {
                            return Err((
                                2,
                                format!("The field '{path}' must be an array but is of a different type"),
                            ))
                        }
                    };
                    let (items, modifiers) = match arg {
                        Bson::Document(d) if d.contains_key("$each") => match d.get("$each") {
                            Some(Bson::Array(e)) => (e.clone(), Some(d)),
                            _ => return Err(bad("$each must be an array")),
                        },
                        other => (vec![other.clone()], None),
                    };
                    if op == "$addToSet" {
                        for it in items {
                            if !arr.iter().any(|x| eq(x, &it)) {
                                arr.push(it);
                            }
                        }
                    } else {
                        let pos = modifiers
                            .and_then(|m| m.get("$position"))
                            .and_then(num)
                            .map(|p| {
                                if p < 0.0 {
                                    arr.len().saturating_sub((-p) as usize)
                                } else {
                                    (p as usize).min(arr.len())
                                }
                            })
                            .unwrap_or(arr.len());
                        for (k, it) in items.into_iter().enumerate() {
                            arr.insert(pos + k, it);
                        }
                        if let Some(m) = modifiers {
                            if let Some(s) = m.get("$sort") {
                                match s {
                                    Bson::Document(spec) => {
                                        let spec = spec.clone();
                                        arr.sort_by(|a, b| match (a, b) {
                                            (Bson::Document(x), Bson::Document(y)) => {
                                                sort_cmp(x, y, &spec)
                                            }
                                            _ => cmp(a, b),
                                        })
                                    }
                                    other => {
                                        let desc = num(other).unwrap_or(1.0) < 0.0;
                                        arr.sort_by(|a, b| {
                                            let o = cmp(a, b);
                                            if desc {
                                                o.reverse()
                                            } else {
                                                o
                                            }
                                        })
                                    }
                                }
                            }
                            if let Some(n) = m.get("$slice").and_then(num) {
                                let n = n as i64;
                                if n >= 0 {
                                    arr.truncate(n as usize);
                                } else {
                                    let keep = (-n) as usize;
                                    if arr.len() > keep {
                                        arr.drain(..arr.len() - keep);
                                    }
                                }
                            }
                        }
                    }
                    set_path(doc, &path, Bson::Array(arr))?
                }
                "$pull" | "$pullAll" => {
                    if let Some(Bson::Array(mut arr)) = cur {
                        if op == "$pullAll" {
                            let Bson::Array(list) = arg else {
                                return Err(bad("$pullAll requires an array argument"));
                            };
                            arr.retain(|x| !list.iter().any(|y| eq(x, y)));
                        } else {
                            let mut keep = Vec::new();
                            for x in arr {
                                let hit = match arg {
                                    Bson::Document(q) => elem_matches(&x, q)?,
                                    other => eq(&x, other),
                                };
                                if !hit {
                                    keep.push(x);
                                }
                            }
                            arr = keep;
                        }
                        set_path(doc, &path, Bson::Array(arr))?
                    }
                }
                "$pop" => {
                    if let Some(Bson::Array(mut arr)) = cur {
                        if num(arg).unwrap_or(1.0) < 0.0 {
                            if !arr.is_empty() {
                                arr.remove(0);
                            }
                        } else {
                            arr.pop();
                        }
                        set_path(doc, &path, Bson::Array(arr))?
                    }
                }
                other => {
                    return Err((9, format!("Unknown modifier: {other}. Expected a valid update modifier or pipeline-style update specified as an array")))
                }
            }
        }
    }
    Ok(())
}

/// The fields of a filter's equality conditions, for an upsert's new
/// document.
pub fn upsert_seed(filter: &Document) -> Document {
    let mut d = Document::new();
    for (k, v) in filter {
        if k.starts_with('$') {
            if k == "$and" {
                if let Bson::Array(list) = v {
                    for x in list {
                        if let Bson::Document(x) = x {
                            d.extend(upsert_seed(x));
                        }
                    }
                }
            }
            continue;
        }
        match v {
            Bson::Document(op) if is_op_doc(op) => {
                if let Some(e) = op.get("$eq") {
                    let _ = set_path(&mut d, k, e.clone());
                }
            }
            other => {
                let _ = set_path(&mut d, k, other.clone());
            }
        }
    }
    d
}

// ---------- sort and projection ----------

pub fn sort_cmp(a: &Document, b: &Document, spec: &Document) -> Ordering {
    for (k, dir) in spec {
        let desc = num(dir).unwrap_or(1.0) < 0.0;
        let pick = |d: &Document| {
            let vals: Vec<Bson> = values_at(d, k)
                .into_iter()
                .map(|v| v.unwrap_or(Bson::Null))
                .flat_map(|v| match v {
                    Bson::Array(a) if !a.is_empty() => a,
                    other => vec![other],
                })
                .collect();
            let it = vals.into_iter();
            if desc { it.max_by(cmp) } else { it.min_by(cmp) }.unwrap_or(Bson::Null)
        };
        let o = cmp(&pick(a), &pick(b));
        let o = if desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

pub fn project(doc: &Document, proj: &Document) -> QResult<Document> {
    if proj.is_empty() {
        return Ok(doc.clone());
    }
    let mut include = None;
    for (k, v) in proj {
        if k == "_id" {
            continue;
        }
        let inc = match v {
            Bson::Document(_) | Bson::String(_) => true,
            other => truthy(other),
        };
        if include.is_some_and(|i| i != inc) {
            return Err((
                31254,
                format!("Cannot do exclusion on field {k} in inclusion projection"),
            ));
        }
        include = Some(inc);
    }
    let id_on = proj.get("_id").is_none_or(truthy);
    if include == Some(true) {
        let mut out = Document::new();
        if id_on {
            if let Some(id) = doc.get("_id") {
                out.insert("_id", id.clone());
            }
        }
        for (k, v) in proj {
            if k == "_id" {
                continue;
            }
            match v {
                Bson::Document(_) | Bson::String(_) => {
                    let val = eval(doc, v)?;
                    if !matches!(val, Bson::Undefined) {
                        set_path(&mut out, k, val)?;
                    }
                }
                _ => {
                    if let Some(val) = get_path(doc, k) {
                        set_path(&mut out, k, val)?;
                    }
                }
            }
        }
        Ok(out)
    } else {
        let mut out = doc.clone();
        for (k, _) in proj {
            if k != "_id" {
                unset_path(&mut out, k);
            }
        }
        if !id_on {
            out.remove("_id");
        }
        Ok(out)
    }
}

// ---------- aggregation ----------

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

/// Looks a collection up for `$lookup`.
pub trait Source {
    fn docs(&self, coll: &str) -> Vec<Document>;
}

pub fn aggregate(
    mut docs: Vec<Document>,
    pipeline: &[Bson],
    src: &dyn Source,
) -> QResult<Vec<Document>> {
    for stage in pipeline {
        let Bson::Document(st) = stage else {
            return Err(bad(
                "Each element of the 'pipeline' array must be an object",
            ));
        };
        let Some((name, arg)) = st.iter().next() else {
            return Err(bad("empty stage"));
        };
        docs = match name.as_str() {
            "$match" => {
                let f = arg
                    .as_document()
                    .ok_or_else(|| bad("$match needs an object"))?;
                let mut out = Vec::new();
                for d in docs {
                    if matches(&d, f)? {
                        out.push(d);
                    }
                }
                out
            }
            "$project" => {
                let p = arg
                    .as_document()
                    .ok_or_else(|| bad("$project needs an object"))?;
                docs.iter().map(|d| project(d, p)).collect::<QResult<_>>()?
            }
            "$addFields" | "$set" => {
                let p = arg
                    .as_document()
                    .ok_or_else(|| bad("$addFields needs an object"))?;
                let mut out = Vec::new();
                for mut d in docs {
                    for (k, e) in p {
                        let v = eval(&d, e)?;
                        set_path(&mut d, k, v)?;
                    }
                    out.push(d);
                }
                out
            }
            "$unset" => {
                let fields: Vec<String> = match arg {
                    Bson::String(s) => vec![s.clone()],
                    Bson::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect(),
                    _ => return Err(bad("$unset needs a string or an array")),
                };
                docs.into_iter()
                    .map(|mut d| {
                        fields.iter().for_each(|f| unset_path(&mut d, f));
                        d
                    })
                    .collect()
            }
            "$sort" => {
                let s = arg
                    .as_document()
                    .ok_or_else(|| bad("$sort needs an object"))?;
                docs.sort_by(|a, b| sort_cmp(a, b, s));
                docs
            }
            "$skip" => docs
                .into_iter()
                .skip(num(arg).unwrap_or(0.0) as usize)
                .collect(),
            "$limit" => docs
                .into_iter()
                .take(num(arg).unwrap_or(0.0) as usize)
                .collect(),
            "$count" => {
                let f = arg.as_str().ok_or_else(|| bad("$count needs a string"))?;
                if docs.is_empty() {
                    vec![]
                } else {
                    vec![doc! { f: docs.len() as i32 }]
                }
            }
            "$unwind" => {
                let (path, keep_empty, idx) = match arg {
                    Bson::String(s) => (s.clone(), false, None),
                    Bson::Document(d) => (
                        d.get_str("path")
                            .map_err(|_| bad("$unwind needs a path"))?
                            .to_string(),
                        d.get_bool("preserveNullAndEmptyArrays").unwrap_or(false),
                        d.get_str("includeArrayIndex").ok().map(String::from),
                    ),
                    _ => return Err(bad("$unwind needs a path")),
                };
                let field = path.trim_start_matches('$').to_string();
                let mut out = Vec::new();
                for d in docs {
                    match get_path(&d, &field) {
                        Some(Bson::Array(a)) if !a.is_empty() => {
                            for (i, e) in a.into_iter().enumerate() {
                                let mut n = d.clone();
                                set_path(&mut n, &field, e)?;
                                if let Some(ix) = &idx {
                                    n.insert(ix.clone(), i as i64);
                                }
                                out.push(n);
                            }
                        }
                        Some(Bson::Array(_)) | None | Some(Bson::Null) => {
                            if keep_empty {
                                out.push(d)
                            }
                        }
                        Some(_) => out.push(d),
                    }
                }
                out
            }
            "$group" => group(
                docs,
                arg.as_document()
                    .ok_or_else(|| bad("$group needs an object"))?,
            )?,
            "$sortByCount" => {
                let g = doc! { "_id": arg.clone(), "count": { "$sum": 1 } };
                let mut out = group(docs, &g)?;
                out.sort_by(|a, b| {
                    cmp(
                        b.get("count").unwrap_or(&Bson::Null),
                        a.get("count").unwrap_or(&Bson::Null),
                    )
                });
                out
            }
            "$replaceRoot" | "$replaceWith" => {
                let e = match arg {
                    Bson::Document(d) if name == "$replaceRoot" => {
                        d.get("newRoot").cloned().unwrap_or(Bson::Null)
                    }
                    other => other.clone(),
                };
                let mut out = Vec::new();
                for d in docs {
                    match eval(&d, &e)? {
                        Bson::Document(n) => out.push(n),
                        _ => {
                            return Err((
                                40228,
                                "'newRoot' expression must evaluate to an object".into(),
                            ))
                        }
                    }
                }
                out
            }
            "$lookup" => {
                let l = arg
                    .as_document()
                    .ok_or_else(|| bad("$lookup needs an object"))?;
                let from = l.get_str("from").map_err(|_| bad("$lookup needs from"))?;
                let local = l.get_str("localField").unwrap_or("");
                let foreign = l.get_str("foreignField").unwrap_or("");
                let as_ = l.get_str("as").map_err(|_| bad("$lookup needs as"))?;
                let other = src.docs(from);
                let mut out = Vec::new();
                for mut d in docs {
                    let mine: Vec<Bson> = values_at(&d, local)
                        .into_iter()
                        .map(|v| v.unwrap_or(Bson::Null))
                        .flat_map(|v| match v {
                            Bson::Array(a) => a,
                            x => vec![x],
                        })
                        .collect();
                    let hits: Vec<Bson> = other
                        .iter()
                        .filter(|o| {
                            let theirs = values_at(o, foreign);
                            mine.iter().any(|m| eq_match(&theirs, m))
                        })
                        .map(|o| Bson::Document(o.clone()))
                        .collect();
                    set_path(&mut d, as_, Bson::Array(hits))?;
                    out.push(d);
                }
                out
            }
            "$facet" => {
                let f = arg
                    .as_document()
                    .ok_or_else(|| bad("$facet needs an object"))?;
                let mut out = Document::new();
                for (k, p) in f {
                    let p = p
                        .as_array()
                        .ok_or_else(|| bad("$facet pipelines are arrays"))?;
                    let r = aggregate(docs.clone(), p, src)?;
                    out.insert(k, r.into_iter().map(Bson::Document).collect::<Vec<_>>());
                }
                vec![out]
            }
            other => {
                return Err((
                    40324,
                    format!("Unrecognized pipeline stage name: '{other}'"),
                ));
            }
        };
    }
    Ok(docs)
}

fn group(docs: Vec<Document>, spec: &Document) -> QResult<Vec<Document>> {
    let id_expr = spec.get("_id").cloned().unwrap_or(Bson::Null);
    let mut groups: Vec<(Bson, Vec<Document>)> = Vec::new();
    for d in docs {
        let mut key = eval(&d, &id_expr)?;
        if matches!(key, Bson::Undefined) {
            key = Bson::Null;
        }
        match groups.iter_mut().find(|(k, _)| eq(k, &key)) {
            Some((_, v)) => v.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let mut g = doc! { "_id": key };
        for (field, acc) in spec {
            if field == "_id" {
                continue;
            }
            let Some((op, e)) = acc.as_document().and_then(|a| a.iter().next()) else {
                return Err((
                    40234,
                    format!("The field '{field}' must be an accumulator object"),
                ));
            };
            let vals: Vec<Bson> = members
                .iter()
                .map(|d| eval(d, e))
                .collect::<QResult<Vec<_>>>()?;
            let defined = || {
                vals.iter()
                    .filter(|v| !matches!(v, Bson::Undefined | Bson::Null))
            };
            let v = match op.as_str() {
                "$sum" => {
                    let mut acc = Bson::Int32(0);
                    for v in &vals {
                        if num(v).is_some() {
                            acc = arith(&acc, v, false)?;
                        }
                    }
                    acc
                }
                "$avg" => {
                    let ns: Vec<f64> = vals.iter().filter_map(num).collect();
                    if ns.is_empty() {
                        Bson::Null
                    } else {
                        Bson::Double(ns.iter().sum::<f64>() / ns.len() as f64)
                    }
                }
                "$min" => defined()
                    .min_by(|a, b| cmp(a, b))
                    .cloned()
                    .unwrap_or(Bson::Null),
                "$max" => defined()
                    .max_by(|a, b| cmp(a, b))
                    .cloned()
                    .unwrap_or(Bson::Null),
                "$first" => vals.first().cloned().unwrap_or(Bson::Null),
                "$last" => vals.last().cloned().unwrap_or(Bson::Null),
                "$push" => Bson::Array(
                    vals.iter()
                        .filter(|v| !matches!(v, Bson::Undefined))
                        .cloned()
                        .collect(),
                ),
                "$addToSet" => {
                    let mut set: Vec<Bson> = Vec::new();
                    for v in vals.iter().filter(|v| !matches!(v, Bson::Undefined)) {
                        if !set.iter().any(|x| eq(x, v)) {
                            set.push(v.clone());
                        }
                    }
                    Bson::Array(set)
                }
                "$count" => Bson::Int32(vals.len() as i32),
                other => return Err((15952, format!("unknown group operator '{other}'"))),
            };
            let v = if matches!(v, Bson::Undefined) {
                Bson::Null
            } else {
                v
            };
            g.insert(field, v);
        }
        out.push(g);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn updates() {
        let mut d = doc! { "_id": 1, "n": 1, "l": [1, 2, 3] };
        apply_update(
            &mut d,
            &doc! { "$inc": { "n": 2 }, "$push": { "l": { "$each": [9], "$position": 0 } }, "$set": { "x.y": true } },
            &doc! {},
            false,
            &[],
        )
        .unwrap();
        assert_eq!(
            d,
            doc! { "_id": 1, "n": 3, "l": [9, 1, 2, 3], "x": { "y": true } }
        );
        apply_update(
            &mut d,
            &doc! { "$pull": { "l": { "$gte": 3 } } },
            &doc! {},
            false,
            &[],
        )
        .unwrap();
        assert_eq!(
            d.get_array("l").unwrap(),
            &vec![Bson::Int32(1), Bson::Int32(2)]
        );
        let mut g = doc! { "g": [{ "s": 80 }, { "s": 95 }], "h": [1, 2] };
        apply_update(
            &mut g,
            &doc! { "$inc": { "g.$[big].s": 1, "h.$[]": 10 } },
            &doc! {},
            false,
            &[doc! { "big.s": { "$gte": 90 } }],
        )
        .unwrap();
        assert_eq!(g, doc! { "g": [{ "s": 80 }, { "s": 96 }], "h": [11, 12] });
    }
}
