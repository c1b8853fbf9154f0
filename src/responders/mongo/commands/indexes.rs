//! Index management: `createIndexes` (refusing a unique index the data
//! already breaks), `listIndexes` and `dropIndexes`/`deleteIndexes`.
//! Indexes only name keys and enforce uniqueness; nothing is sped up.

use bson::{doc, Bson, Document};

use super::super::query;
use super::super::store::{dup_text, index_key, index_name};
use super::super::Index;
use super::{Call, CmdError, CmdResult};

pub(super) fn create_indexes(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let list = body.get_array("indexes").cloned().unwrap_or_default();
    let mut s = svc.lock();
    let colls = s.entry(db.clone()).or_default();
    let created = !colls.contains_key(&c);
    let coll = colls.entry(c.clone()).or_default();
    let before = coll.indexes.len() as i32;
    for ix in list {
        let Bson::Document(ix) = ix else { continue };
        let key = ix
            .get_document("key")
            .map_err(|_| CmdError(2, "index needs a key".into()))?
            .clone();
        let name = ix
            .get_str("name")
            .map(String::from)
            .unwrap_or_else(|_| index_name(&key));
        if coll.indexes.iter().any(|i| i.name == name) {
            continue;
        }
        let new = Index {
            name,
            key,
            unique: ix.get_bool("unique").unwrap_or(false),
        };
        if new.unique {
            let mut seen: Vec<Bson> = Vec::new();
            for d in &coll.docs {
                let k = index_key(d, &new.key);
                if seen.iter().any(|x| query::eq(x, &k)) {
                    return Err(CmdError(
                        11000,
                        format!(
                            "E11000 duplicate key error collection: {db}.{c} index: {} dup key: {}",
                            new.name,
                            dup_text(&k)
                        ),
                    ));
                }
                seen.push(k);
            }
        }
        coll.indexes.push(new);
    }
    Ok(doc! {
        "createdCollectionAutomatically": created,
        "numIndexesBefore": before,
        "numIndexesAfter": coll.indexes.len() as i32,
    })
}

pub(super) fn list_indexes(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let s = svc.lock();
    let Some(coll) = s.get(db).and_then(|x| x.get(&c)) else {
        return Err(CmdError(26, format!("ns does not exist: {db}.{c}")));
    };
    let list: Vec<Document> = coll
        .indexes
        .iter()
        .map(|i| {
            let mut d = doc! {"v": 2, "key": i.key.clone(), "name": i.name.clone()};
            if i.unique && i.name != "_id_" {
                d.insert("unique", true);
            }
            d
        })
        .collect();
    drop(s);
    Ok(svc.cursor_reply(&format!("{db}.{c}"), list, body))
}

/// `dropIndexes` and `deleteIndexes`.
pub(super) fn drop_indexes(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let c = cx.coll()?;
    let mut s = svc.lock();
    let Some(coll) = s.get_mut(db).and_then(|x| x.get_mut(&c)) else {
        return Err(CmdError(26, format!("ns not found {db}.{c}")));
    };
    let was = coll.indexes.len() as i32;
    match body.get("index") {
        Some(Bson::String(s)) if s == "*" => coll.indexes.retain(|i| i.name == "_id_"),
        Some(Bson::String(s)) => {
            if !coll.indexes.iter().any(|i| &i.name == s) {
                return Err(CmdError(27, format!("index not found with name [{s}]")));
            }
            coll.indexes.retain(|i| &i.name != s);
        }
        Some(Bson::Document(k)) => coll.indexes.retain(|i| &i.key != k || i.name == "_id_"),
        _ => {}
    }
    Ok(doc! {"nIndexesWas": was})
}
