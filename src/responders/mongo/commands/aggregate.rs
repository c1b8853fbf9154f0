//! `aggregate`: runs a pipeline over a collection (or over nothing, for
//! `aggregate: 1`), with the database's collections as `$lookup`'s source.

use bson::{doc, Bson, Document};

use super::super::query;
use super::super::store::CollectionView;
use super::{Call, CmdResult};

pub(super) fn aggregate(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let pipeline = body.get_array("pipeline").cloned().unwrap_or_default();
    let (ns, out) = {
        let s = svc.lock();
        let database = s.get(db.as_str());
        let src = CollectionView { store: database };
        match body.get(cx.name) {
            Some(Bson::String(c)) => {
                let coll = database.and_then(|d| d.get(c));
                let ns = format!("{db}.{c}");
                // A leading `$match` picks the documents before they are
                // copied; a count (the drivers' `count_documents`) copies
                // none.
                let (filter, rest) = match pipeline.first() {
                    Some(Bson::Document(st)) if st.len() == 1 && st.contains_key("$match") => {
                        match st.get("$match") {
                            Some(Bson::Document(f)) => (f.clone(), &pipeline[1..]),
                            _ => (doc! {}, &pipeline[..]),
                        }
                    }
                    _ => (doc! {}, &pipeline[..]),
                };
                let picked = super::crud::matching(coll, &filter)?;
                match counted(picked.len(), rest) {
                    Some(out) => (ns, out),
                    None => {
                        let docs = picked.into_iter().cloned().collect();
                        (ns, query::aggregate(docs, rest, &src)?)
                    }
                }
            }
            _ => (
                format!("{db}.$cmd.aggregate"),
                query::aggregate(Vec::new(), &pipeline, &src)?,
            ),
        }
    };
    Ok(svc.cursor_reply(&ns, out, body))
}

/// The answer of a pipeline that only counts what it is given
/// (`[$skip]`, `[$limit]`, then `$group` on a constant `_id` whose other
/// fields are `{$sum: 1}`, as `count_documents` sends it), computed from
/// the count alone; `None` for any other pipeline.
fn counted(n: usize, rest: &[Bson]) -> Option<Vec<Document>> {
    let mut n = n;
    let (group, before) = rest.split_last()?;
    for stage in before {
        let st = stage.as_document().filter(|d| d.len() == 1)?;
        match st.iter().next()? {
            (k, v) if k == "$skip" => n = n.saturating_sub(whole(v)?),
            (k, v) if k == "$limit" => n = n.min(whole(v).filter(|&l| l > 0)?),
            _ => return None,
        }
    }
    let g = group
        .as_document()
        .filter(|d| d.len() == 1)?
        .get_document("$group")
        .ok()?;
    let id = g.get("_id")?;
    let constant = match id {
        Bson::String(s) => !s.starts_with('$'),
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Null | Bson::Boolean(_) => true,
        _ => false,
    };
    if !constant {
        return None;
    }
    let mut out = doc! { "_id": id.clone() };
    for (k, v) in g.iter().filter(|(k, _)| *k != "_id") {
        let acc = v.as_document().filter(|d| d.len() == 1)?;
        if !matches!(acc.get("$sum"), Some(Bson::Int32(1))) {
            return None;
        }
        // `$sum` of ints is an int while it fits, as in MongoDB.
        let total = i32::try_from(n).map_or(Bson::Int64(n as i64), Bson::Int32);
        out.insert(k, total);
    }
    // `$group` over no documents gives no group.
    Some(if n == 0 { Vec::new() } else { vec![out] })
}

/// A `$skip` or `$limit` argument: a non-negative whole number.
fn whole(v: &Bson) -> Option<usize> {
    let f = query::num(v)?;
    (f >= 0.0 && f.fract() == 0.0).then_some(f as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_documents_pipelines_are_counted_without_documents() {
        let group = doc! {"$group": {"_id": 1, "n": {"$sum": 1}}};
        let got = counted(10, &[Bson::Document(group.clone())]).unwrap();
        assert_eq!(got, vec![doc! {"_id": 1, "n": 10}]);
        let got = counted(
            10,
            &[
                Bson::Document(doc! {"$skip": 3}),
                Bson::Document(doc! {"$limit": 5}),
                Bson::Document(group.clone()),
            ],
        )
        .unwrap();
        assert_eq!(got, vec![doc! {"_id": 1, "n": 5}]);
        assert_eq!(counted(0, &[Bson::Document(group)]).unwrap(), vec![]);
        // Anything else runs the pipeline.
        let by_field = doc! {"$group": {"_id": "$k", "n": {"$sum": 1}}};
        assert!(counted(10, &[Bson::Document(by_field)]).is_none());
        let summed = doc! {"$group": {"_id": null, "t": {"$sum": "$v"}}};
        assert!(counted(10, &[Bson::Document(summed)]).is_none());
        let sorted = doc! {"$sort": {"a": 1}};
        assert!(counted(10, &[Bson::Document(sorted)]).is_none());
        assert!(counted(10, &[]).is_none());
    }
}
