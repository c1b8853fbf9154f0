//! Database and collection management: listing them, creating and
//! dropping collections, dropping databases.

use bson::{doc, Bson};

use super::super::{query, Coll};
use super::{Call, CmdError, CmdResult};

pub(super) fn list_databases(cx: &mut Call) -> CmdResult {
    let svc = cx.svc;
    let s = svc.lock();
    let dbs: Vec<Bson> = s
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(n, c)| {
            let size: usize = c.values().map(|x| x.docs.len() * 64).sum();
            Bson::Document(doc! {"name": n, "sizeOnDisk": size as i64, "empty": size == 0})
        })
        .collect();
    Ok(doc! {"databases": dbs, "totalSize": 0i64})
}

pub(super) fn list_collections(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let s = svc.lock();
    let filter = body.get_document("filter").cloned().unwrap_or_default();
    let mut out = Vec::new();
    if let Some(colls) = s.get(db) {
        for n in colls.keys() {
            let d = doc! {"name": n, "type": "collection", "options": {}, "info": {"readOnly": false}, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}};
            if query::matches(&d, &filter)? {
                out.push(d);
            }
        }
    }
    drop(s);
    Ok(svc.cursor_reply(&format!("{db}.$cmd.listCollections"), out, body))
}

pub(super) fn create(cx: &mut Call) -> CmdResult {
    let (svc, db) = (cx.svc, &cx.db);
    let c = cx.coll()?;
    let mut s = svc.lock();
    let colls = s.entry(db.clone()).or_default();
    if colls.contains_key(&c) {
        return Err(CmdError(48, format!("Collection {db}.{c} already exists.")));
    }
    colls.insert(c, Coll::default());
    Ok(doc! {})
}

pub(super) fn drop_collection(cx: &mut Call) -> CmdResult {
    let (svc, db) = (cx.svc, &cx.db);
    let c = cx.coll()?;
    let mut s = svc.lock();
    match s.get_mut(db).and_then(|x| x.remove(&c)) {
        Some(old) => Ok(doc! {"ns": format!("{db}.{c}"), "nIndexesWas": old.indexes.len() as i32}),
        None => Err(CmdError(26, "ns not found".into())),
    }
}

pub(super) fn drop_database(cx: &mut Call) -> CmdResult {
    let (svc, db) = (cx.svc, &cx.db);
    svc.lock().remove(db);
    Ok(doc! {"dropped": db})
}
