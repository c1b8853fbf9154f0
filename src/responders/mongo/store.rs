//! Building and guarding the store: seeding it from the rules, giving
//! documents their `_id`, naming index keys, and refusing writes that
//! would break a unique index (with the key details drivers expect in
//! `writeErrors`). Kept apart from the commands because seeding, inserts,
//! updates and index builds all share it.

use std::collections::BTreeMap;

use bson::{doc, oid::ObjectId, Bson, Document};

use crate::rules::mongo::MongoSpec;

use super::query;
use super::{Coll, Index, Store};

pub(super) fn seed(spec: &MongoSpec) -> Store {
    let mut s = Store::new();
    for (ns, docs) in &spec.collections {
        let (db, c) = ns.split_once('.').unwrap_or((ns, ""));
        let coll = s
            .entry(db.to_string())
            .or_default()
            .entry(c.to_string())
            .or_default();
        for d in docs {
            coll.docs.push(with_id(d.clone()));
        }
    }
    for (ns, list) in &spec.indexes {
        let (db, c) = ns.split_once('.').unwrap_or((ns, ""));
        let coll = s
            .entry(db.to_string())
            .or_default()
            .entry(c.to_string())
            .or_default();
        for ix in list {
            coll.indexes.push(Index {
                name: ix.name.clone().unwrap_or_else(|| index_name(&ix.key)),
                key: ix.key.clone(),
                unique: ix.unique,
            });
        }
    }
    s
}

pub(super) fn with_id(d: Document) -> Document {
    if d.contains_key("_id") {
        return d;
    }
    let mut n = doc! {"_id": ObjectId::new()};
    n.extend(d);
    n
}

pub(super) fn index_name(key: &Document) -> String {
    key.iter()
        .map(|(k, v)| {
            let v = match v {
                Bson::String(s) => s.clone(),
                other => query::num(other).map_or("1".into(), |n| (n as i64).to_string()),
            };
            format!("{k}_{v}")
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// A database's collections as `$lookup` and `$unionWith` read them,
/// borrowed for the length of one pipeline (copying the database for
/// every `aggregate` grew with its size).
pub(super) struct CollectionView<'a> {
    pub(super) store: Option<&'a BTreeMap<String, Coll>>,
}

impl query::Source for CollectionView<'_> {
    fn docs(&self, coll: &str) -> Vec<Document> {
        self.store
            .and_then(|s| s.get(coll))
            .map(|c| c.docs.clone())
            .unwrap_or_default()
    }
}

/// The value of an index key for a document (one field: the value; several:
/// a document of them).
pub(super) fn index_key(d: &Document, key: &Document) -> Bson {
    let mut out = Document::new();
    for k in key.keys() {
        out.insert(k, query::get_path(d, k).unwrap_or(Bson::Null));
    }
    Bson::Document(out)
}

pub(super) fn dup_text(k: &Bson) -> String {
    match k {
        Bson::Document(d) => {
            let parts: Vec<String> = d
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Bson::String(s) => format!("\"{s}\""),
                        Bson::ObjectId(o) => format!("ObjectId('{o}')"),
                        other => other.clone().into_relaxed_extjson().to_string(),
                    };
                    format!("{k}: {v}")
                })
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// A field by dotted path, borrowed.
fn field_ref<'a>(d: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = d.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(x) => x.get(p)?,
            Bson::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Refuses a document that repeats a unique index's key.
pub(super) fn check_unique(
    coll: &Coll,
    d: &Document,
    skip: Option<usize>,
    ns: &str,
) -> Result<(), (i32, String)> {
    const NULL: Bson = Bson::Null;
    for ix in coll.indexes.iter().filter(|i| i.unique) {
        let mine: Vec<&Bson> = ix
            .key
            .keys()
            .map(|k| field_ref(d, k).unwrap_or(&NULL))
            .collect();
        let clash = coll.docs.iter().enumerate().any(|(i, o)| {
            Some(i) != skip
                && ix
                    .key
                    .keys()
                    .zip(&mine)
                    .all(|(k, m)| query::eq(field_ref(o, k).unwrap_or(&NULL), m))
        });
        if clash {
            let k = index_key(d, &ix.key);
            LAST_DUP.with(|c| *c.borrow_mut() = Some((ix.key.clone(), k.clone())));
            return Err((
                11000,
                format!(
                    "E11000 duplicate key error collection: {ns} index: {} dup key: {}",
                    ix.name,
                    dup_text(&k)
                ),
            ));
        }
    }
    Ok(())
}

thread_local! {
    /// The key pattern and value of the last duplicate-key error raised on
    /// this thread (commands run synchronously, so it belongs to the
    /// command being answered).
    pub(super) static LAST_DUP: std::cell::RefCell<Option<(Document, Bson)>> = const { std::cell::RefCell::new(None) };
}

pub(super) fn write_error(index: usize, (code, msg): (i32, String)) -> Bson {
    let mut d = doc! {"index": index as i32, "code": code, "errmsg": msg};
    if code == 11000 {
        if let Some((pattern, value)) = LAST_DUP.with(|c| c.borrow_mut().take()) {
            d.insert("keyPattern", pattern);
            d.insert("keyValue", value);
        }
    }
    Bson::Document(d)
}
