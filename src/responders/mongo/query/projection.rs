//! Sort specifications and projections, used by `find`, `findAndModify`
//! and the `$sort` and `$project` stages alike.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{cmp, eval, get_path, num, set_path, truthy, unset_path, values_at, QResult};

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
