//! Multi-document transactions, as far as the responder fakes them: a
//! session's first write with `startTransaction` snapshots the store,
//! `abortTransaction` puts the snapshot back and `commitTransaction`
//! drops it. Only replica sets accept them, as with a real server.

use bson::{doc, Document};

use super::super::MongoService;
use super::{Call, CmdError, CmdResult};

impl MongoService {
    /// Snapshots the store when a session starts a transaction.
    pub(super) fn begin_txn(&self, body: &Document) {
        if self.spec.replica_set.is_some() && body.get_bool("startTransaction").unwrap_or(false) {
            let snap = self.lock().clone();
            self.txns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(lsid_key(body), snap);
        }
    }
}

/// `commitTransaction` and `abortTransaction`.
pub(super) fn end_txn(cx: &mut Call) -> CmdResult {
    let (svc, body) = (cx.svc, cx.body);
    if svc.spec.replica_set.is_none() {
        return Err(CmdError(
            20,
            "Transaction numbers are only allowed on a replica set member or mongos".into(),
        ));
    }
    let key = lsid_key(body);
    let snap = svc
        .txns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key);
    if cx.name == "abortTransaction" {
        if let Some(s) = snap {
            *svc.lock() = s;
        }
    }
    Ok(doc! {})
}

fn lsid_key(body: &Document) -> String {
    body.get("lsid").map(|l| format!("{l}")).unwrap_or_default()
}
