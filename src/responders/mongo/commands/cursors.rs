//! Cursors: the first batch every query-like command answers with, the
//! rest kept in the service (drivers may `getMore` on another
//! connection), `getMore` and `killCursors`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bson::{doc, Bson, Document};

use super::super::{query, Cursor, MongoService};
use super::{Call, CmdError, CmdResult};

const DEFAULT_BATCH: usize = 101;

impl MongoService {
    /// A cursor reply: the first batch now, the rest kept for getMore.
    pub(super) fn cursor_reply(&self, ns: &str, docs: Vec<Document>, body: &Document) -> Document {
        let batch = body
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get("batchSize"))
            .or(body.get("batchSize"))
            .and_then(query::num)
            .map_or(DEFAULT_BATCH, |n| n as usize);
        let single = body.get_bool("singleBatch").unwrap_or(false);
        let mut rest: VecDeque<Document> = docs.into();
        let first: Vec<Document> = rest.drain(..batch.min(rest.len())).collect();
        let id = if rest.is_empty() || single {
            0i64
        } else {
            let id = self.next_cursor.fetch_add(1, Ordering::Relaxed);
            self.cursors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    id,
                    Cursor {
                        ns: ns.to_string(),
                        docs: rest,
                    },
                );
            id
        };
        doc! {"cursor": {"firstBatch": first, "id": id, "ns": ns}}
    }
}

pub(super) fn get_more(cx: &mut Call) -> CmdResult {
    let (svc, body) = (cx.svc, cx.body);
    let id = match body.get("getMore") {
        Some(Bson::Int64(i)) => *i,
        Some(other) => query::num(other).unwrap_or(0.0) as i64,
        None => 0,
    };
    let batch = body
        .get("batchSize")
        .and_then(query::num)
        .filter(|n| *n > 0.0)
        .map_or(usize::MAX, |n| n as usize);
    let mut cursors = svc.cursors.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cur) = cursors.get_mut(&id) else {
        return Err(CmdError(43, format!("cursor id {id} not found")));
    };
    let take = batch.min(cur.docs.len());
    let next: Vec<Document> = cur.docs.drain(..take).collect();
    let ns = cur.ns.clone();
    let id = if cur.docs.is_empty() {
        cursors.remove(&id);
        0
    } else {
        id
    };
    Ok(doc! {"cursor": {"nextBatch": next, "id": id, "ns": ns}})
}

pub(super) fn kill_cursors(cx: &mut Call) -> CmdResult {
    let (svc, body) = (cx.svc, cx.body);
    let ids = body.get_array("cursors").cloned().unwrap_or_default();
    let mut cursors = svc.cursors.lock().unwrap_or_else(|e| e.into_inner());
    let (mut killed, mut missing) = (Vec::new(), Vec::new());
    for id in ids {
        let n = match &id {
            Bson::Int64(i) => *i,
            other => query::num(other).unwrap_or(0.0) as i64,
        };
        if cursors.remove(&n).is_some() {
            killed.push(Bson::Int64(n));
        } else {
            missing.push(Bson::Int64(n));
        }
    }
    Ok(
        doc! {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": []},
    )
}
