//! SCRAM authentication over `saslStart`/`saslContinue` (and the
//! `speculativeAuthenticate` shortcut in `hello`); the conversation itself
//! lives in `scram`, this holds the command side and the per-connection
//! state it leaves behind.

use bson::{doc, Bson, Document};

use super::super::{scram, Conn, MongoService};
use super::{Call, CmdError, CmdResult};

impl MongoService {
    pub(super) fn sasl_start(&self, conn: &mut Conn, body: &Document, db: &str) -> CmdResult {
        let mech = body.get_str("mechanism").unwrap_or("");
        let payload = sasl_payload(body);
        let db = body.get_str("db").unwrap_or(db);
        let (conv, reply) = scram::Conversation::start(mech, &payload, db, &self.spec.users)
            .map_err(|m| CmdError(18, m))?;
        conn.scram = Some(conv);
        Ok(doc! {
            "conversationId": 1,
            "done": false,
            "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: reply },
            "ok": 1.0,
        })
    }

    fn sasl_continue(&self, conn: &mut Conn, body: &Document) -> CmdResult {
        let payload = sasl_payload(body);
        let Some(conv) = conn.scram.as_mut() else {
            return Err(CmdError(17, "No SASL session state found".into()));
        };
        match conv.step(&payload) {
            Ok((reply, done)) => {
                if done {
                    conn.authed = true;
                    conn.scram = None;
                }
                Ok(doc! {
                    "conversationId": 1,
                    "done": done,
                    "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: reply },
                })
            }
            Err(_) => {
                conn.scram = None;
                Err(CmdError(18, "Authentication failed.".into()))
            }
        }
    }
}

pub(super) fn sasl_start(cx: &mut Call) -> CmdResult {
    cx.svc.sasl_start(cx.conn, cx.body, &cx.db)
}

pub(super) fn sasl_continue(cx: &mut Call) -> CmdResult {
    cx.svc.sasl_continue(cx.conn, cx.body)
}

fn sasl_payload(body: &Document) -> Vec<u8> {
    match body.get("payload") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(Bson::String(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}
