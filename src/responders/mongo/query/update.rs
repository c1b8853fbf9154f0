//! Update documents: operators (`$set`, `$inc`, `$push`, …) with the
//! positional `$`, `$[]` and `$[name]` paths, replacements, and the seed
//! document an upsert starts from.

use std::cmp::Ordering;

use bson::{doc, Bson, Document};

use super::filter::{elem_matches, field_matches, is_op_doc, op_matches};
use super::{arith, bad, cmp, eq, get_path, matches, num, set_path, sort_cmp, unset_path, QResult};

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

#[cfg(test)]
mod tests {
    use super::*;

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
