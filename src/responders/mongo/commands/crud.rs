//! Reads and writes on documents: `insert`, `find`, `count`,
//! `distinct`, `update`, `delete` and `findAndModify`, with the filtered
//! scan (`select`) they share and update application (operators or a
//! pipeline). Every write keeps unique indexes through `store`.

use bson::{doc, Bson, Document};

use super::super::query::{self, QResult};
use super::super::store::{check_unique, with_id, write_error, CollectionView};
use super::super::{Coll, MongoService};
use super::{Call, CmdError, CmdResult};

/// The documents of a collection that match a filter, borrowed: callers
/// copy only what they answer with (a count copies nothing, a sorted
/// find with a limit copies the limit).
pub(super) fn matching<'a>(
    coll: Option<&'a Coll>,
    filter: &Document,
) -> Result<Vec<&'a Document>, CmdError> {
    let Some(coll) = coll else {
        return Ok(Vec::new());
    };
    // `{_id: scalar}` (find_one by id) compares one field.
    if let (1, Some(id)) = (filter.len(), filter.get("_id")) {
        if !matches!(
            id,
            Bson::Document(_) | Bson::Array(_) | Bson::RegularExpression(_)
        ) {
            return Ok(coll
                .docs
                .iter()
                .find(|d| d.get("_id").is_some_and(|x| query::eq(x, id)))
                .into_iter()
                .collect());
        }
    }
    let mut out = Vec::new();
    for d in &coll.docs {
        if query::matches(d, filter)? {
            out.push(d);
        }
    }
    Ok(out)
}

impl MongoService {
    pub(super) fn select(
        &self,
        db: &str,
        c: &str,
        filter: &Document,
    ) -> Result<Vec<Document>, CmdError> {
        let s = self.lock();
        let coll = s.get(db).and_then(|x| x.get(c));
        Ok(matching(coll, filter)?.into_iter().cloned().collect())
    }

    fn update(&self, db: &str, c: &str, body: &Document) -> CmdResult {
        let ups = body.get_array("updates").cloned().unwrap_or_default();
        let ordered = body.get_bool("ordered").unwrap_or(true);
        let ns = format!("{db}.{c}");
        let mut s = self.lock();
        let coll = s
            .entry(db.to_string())
            .or_default()
            .entry(c.to_string())
            .or_default();
        let (mut n, mut modified) = (0i32, 0i32);
        let mut upserted = Vec::new();
        let mut errors = Vec::new();
        for (i, u) in ups.into_iter().enumerate() {
            let Bson::Document(u) = u else { continue };
            let q = u.get_document("q").cloned().unwrap_or_default();
            let multi = u.get_bool("multi").unwrap_or(false);
            let upsert = u.get_bool("upsert").unwrap_or(false);
            let afs = array_filters(&u);
            let res = (|| -> Result<(), (i32, String)> {
                let mut hit = 0;
                for idx in 0..coll.docs.len() {
                    if !query::matches(&coll.docs[idx], &q)? {
                        continue;
                    }
                    hit += 1;
                    let mut d = coll.docs[idx].clone();
                    apply(&mut d, u.get("u"), &q, false, &afs)?;
                    if d.get("_id") != coll.docs[idx].get("_id") {
                        return Err((66, "Performing an update on the path '_id' would modify the immutable field '_id'".into()));
                    }
                    if d != coll.docs[idx] {
                        check_unique(coll, &d, Some(idx), &ns)?;
                        coll.docs[idx] = d;
                        modified += 1;
                    }
                    if !multi {
                        break;
                    }
                }
                n += hit;
                if hit == 0 && upsert {
                    let mut d = query::upsert_seed(&q);
                    apply(&mut d, u.get("u"), &q, true, &afs)?;
                    let d = with_id(d);
                    check_unique(coll, &d, None, &ns)?;
                    upserted.push(Bson::Document(doc! {"index": i as i32, "_id": d.get("_id").cloned().unwrap_or(Bson::Null)}));
                    coll.docs.push(d);
                    n += 1;
                }
                Ok(())
            })();
            if let Err(e) = res {
                errors.push(write_error(i, e));
                if ordered {
                    break;
                }
            }
        }
        let mut r = doc! {"n": n, "nModified": modified};
        if !upserted.is_empty() {
            r.insert("upserted", upserted);
        }
        if !errors.is_empty() {
            r.insert("writeErrors", errors);
        }
        Ok(r)
    }

    fn find_and_modify(&self, db: &str, c: &str, body: &Document) -> CmdResult {
        let q = body.get_document("query").cloned().unwrap_or_default();
        let remove = body.get_bool("remove").unwrap_or(false);
        let new = body.get_bool("new").unwrap_or(false);
        let upsert = body.get_bool("upsert").unwrap_or(false);
        let afs = array_filters(body);
        let ns = format!("{db}.{c}");
        let mut s = self.lock();
        let coll = s
            .entry(db.to_string())
            .or_default()
            .entry(c.to_string())
            .or_default();
        let mut idxs = Vec::new();
        for (i, d) in coll.docs.iter().enumerate() {
            if query::matches(d, &q)? {
                idxs.push(i);
            }
        }
        if let Ok(sort) = body.get_document("sort") {
            idxs.sort_by(|a, b| query::sort_cmp(&coll.docs[*a], &coll.docs[*b], sort));
        }
        let fields = body.get_document("fields").cloned().unwrap_or_default();
        let out = |d: &Document| query::project(d, &fields).map(Bson::Document);
        match idxs.first().copied() {
            Some(i) if remove => {
                let d = coll.docs.remove(i);
                Ok(doc! {"lastErrorObject": {"n": 1}, "value": out(&d)?})
            }
            Some(i) => {
                let old = coll.docs[i].clone();
                let mut d = old.clone();
                apply(&mut d, body.get("update"), &q, false, &afs)?;
                check_unique(coll, &d, Some(i), &ns)?;
                coll.docs[i] = d.clone();
                Ok(
                    doc! {"lastErrorObject": {"n": 1, "updatedExisting": true}, "value": out(if new { &d } else { &old })?},
                )
            }
            None if upsert && !remove => {
                let mut d = query::upsert_seed(&q);
                apply(&mut d, body.get("update"), &q, true, &afs)?;
                let d = with_id(d);
                check_unique(coll, &d, None, &ns)?;
                coll.docs.push(d.clone());
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                Ok(
                    doc! {"lastErrorObject": {"n": 1, "updatedExisting": false, "upserted": id}, "value": if new { out(&d)? } else { Bson::Null }},
                )
            }
            None => Ok(
                doc! {"lastErrorObject": {"n": 0, "updatedExisting": false}, "value": Bson::Null},
            ),
        }
    }
}

pub(super) fn insert(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let docs = body.get_array("documents").cloned().unwrap_or_default();
    let ordered = body.get_bool("ordered").unwrap_or(true);
    svc.begin_txn(body);
    let mut s = svc.lock();
    let coll = s
        .entry(db.clone())
        .or_default()
        .entry(c.clone())
        .or_default();
    let mut n = 0;
    let mut errors = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        let Bson::Document(d) = d else {
            return Err(CmdError(2, "documents must be objects".into()));
        };
        let d = with_id(d);
        match check_unique(coll, &d, None, &format!("{db}.{c}")) {
            Ok(()) => {
                coll.docs.push(d);
                n += 1;
            }
            Err(e) => {
                errors.push(write_error(i, e));
                if ordered {
                    break;
                }
            }
        }
    }
    let mut r = doc! {"n": n};
    if !errors.is_empty() {
        r.insert("writeErrors", errors);
    }
    Ok(r)
}

pub(super) fn find(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let filter = body.get_document("filter").cloned().unwrap_or_default();
    let skip = body.get("skip").and_then(query::num).unwrap_or(0.0) as usize;
    let limit = body.get("limit").and_then(query::num).unwrap_or(0.0) as i64;
    // Matched and sorted by reference; only the answer is copied.
    let mut docs: Vec<Document> = {
        let s = svc.lock();
        let mut refs = matching(s.get(db.as_str()).and_then(|x| x.get(&c)), &filter)?;
        if let Ok(sort) = body.get_document("sort") {
            refs.sort_by(|a, b| query::sort_cmp(a, b, sort));
        }
        let take = if limit == 0 {
            usize::MAX
        } else {
            limit.unsigned_abs() as usize
        };
        refs.into_iter().skip(skip).take(take).cloned().collect()
    };
    if let Ok(p) = body.get_document("projection") {
        docs = docs
            .iter()
            .map(|d| query::project(d, p))
            .collect::<QResult<_>>()?;
    }
    let single = body.get_bool("singleBatch").unwrap_or(false) || limit < 0;
    let mut b = body.clone();
    if single {
        b.insert("singleBatch", true);
    }
    Ok(svc.cursor_reply(&format!("{db}.{c}"), docs, &b))
}

pub(super) fn count(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let filter = body.get_document("query").cloned().unwrap_or_default();
    let matched = {
        let s = svc.lock();
        matching(s.get(db.as_str()).and_then(|x| x.get(&c)), &filter)?.len()
    };
    let skip = body.get("skip").and_then(query::num).unwrap_or(0.0) as usize;
    let limit = body.get("limit").and_then(query::num).unwrap_or(0.0) as usize;
    let mut n = matched.saturating_sub(skip);
    if limit > 0 {
        n = n.min(limit);
    }
    Ok(doc! {"n": n as i32})
}

pub(super) fn distinct(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let key = body
        .get_str("key")
        .map_err(|_| CmdError(2, "distinct needs a key".into()))?;
    let filter = body.get_document("query").cloned().unwrap_or_default();
    let mut vals: Vec<Bson> = Vec::new();
    for d in svc.select(db, &c, &filter)? {
        for v in query::values_at(&d, key).into_iter().flatten() {
            let items = match v {
                Bson::Array(a) => a,
                x => vec![x],
            };
            for x in items {
                if !vals.iter().any(|y| query::eq(y, &x)) {
                    vals.push(x);
                }
            }
        }
    }
    vals.sort_by(query::cmp);
    Ok(doc! {"values": vals})
}

pub(super) fn update(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    svc.begin_txn(body);
    svc.update(db, &c, body)
}

pub(super) fn delete(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    svc.begin_txn(body);
    let dels = body.get_array("deletes").cloned().unwrap_or_default();
    let mut s = svc.lock();
    let mut n = 0;
    if let Some(coll) = s.get_mut(db).and_then(|x| x.get_mut(&c)) {
        for d in dels {
            let Bson::Document(d) = d else { continue };
            let q = d.get_document("q").cloned().unwrap_or_default();
            let limit = d.get("limit").and_then(query::num).unwrap_or(0.0) as usize;
            let mut keep = Vec::with_capacity(coll.docs.len());
            let mut removed = 0;
            for doc in coll.docs.drain(..) {
                if (limit == 0 || removed < limit) && query::matches(&doc, &q)? {
                    removed += 1;
                } else {
                    keep.push(doc);
                }
            }
            coll.docs = keep;
            n += removed;
        }
    }
    Ok(doc! {"n": n as i32})
}

/// `findAndModify` and `findandmodify`.
pub(super) fn find_and_modify(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    svc.begin_txn(body);
    svc.find_and_modify(db, &c, body)
}

fn array_filters(d: &Document) -> Vec<Document> {
    d.get_array("arrayFilters")
        .map(|a| a.iter().filter_map(|x| x.as_document().cloned()).collect())
        .unwrap_or_default()
}

fn apply(
    d: &mut Document,
    u: Option<&Bson>,
    q: &Document,
    insert: bool,
    afs: &[Document],
) -> Result<(), (i32, String)> {
    match u {
        Some(Bson::Document(u)) => query::apply_update(d, u, q, insert, afs),
        Some(Bson::Array(pipeline)) => {
            let src = CollectionView { store: None };
            let out = query::aggregate(vec![d.clone()], pipeline, &src)?;
            if let Some(n) = out.into_iter().next() {
                *d = n;
            }
            Ok(())
        }
        _ => Err((9, "update must be an object or a pipeline".into())),
    }
}
