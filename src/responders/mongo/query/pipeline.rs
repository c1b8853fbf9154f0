//! Aggregation pipelines: the common stages, `$group` accumulators and
//! `$lookup` through a `Source` the caller supplies (the responder's store
//! stays outside the query language).

use bson::{doc, Bson, Document};

use super::filter::eq_match;
use super::{
    arith, bad, cmp, eq, eval, get_path, matches, num, project, set_path, sort_cmp, unset_path,
    values_at, QResult,
};

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
