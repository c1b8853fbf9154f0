//! `aggregate`: runs a pipeline over a collection (or over nothing, for
//! `aggregate: 1`), with the database's collections as `$lookup`'s source.

use bson::{doc, Bson};

use super::super::query;
use super::super::store::CollectionView;
use super::{Call, CmdResult};

pub(super) fn aggregate(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let pipeline = body.get_array("pipeline").cloned().unwrap_or_default();
    let (ns, docs) = match body.get(cx.name) {
        Some(Bson::String(c)) => (format!("{db}.{c}"), svc.select(db, c, &doc! {})?),
        _ => (format!("{db}.$cmd.aggregate"), Vec::new()),
    };
    let src = CollectionView {
        store: svc.lock().get(db).cloned().unwrap_or_default(),
    };
    let out = query::aggregate(docs, &pipeline, &src)?;
    Ok(svc.cursor_reply(&ns, out, body))
}
