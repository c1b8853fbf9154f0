//! The MongoDB responder: OP_MSG (and the legacy OP_QUERY handshake) over
//! any number of connections, all sharing one in-memory store per service
//! for the whole run.
//!
//! Shape: the store sits behind one mutex per service and every command
//! runs synchronously under it, so each command is atomic. Cursors live
//! in the service too (drivers may `getMore` on another connection).

mod commands;
mod depth;
mod preview;
pub mod query;
mod responder;
pub mod scram;
mod store;
pub mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::{doc, Document};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::events::{now_rfc3339, Event, EventSink, ExchangeEvent, Outcome};
use crate::rules::mongo::{MongoFaultKind, MongoSpec};
use crate::stack::FlowHandle;

use super::ServeCtx;
use commands::error_doc;
pub use commands::COMMANDS;
pub use responder::{MongoDetail, INFO};
use store::seed;
use wire::Request;

/// What `buildInfo` reports; agrees with `MAX_WIRE_VERSION` (21 = 7.0).
pub const MONGO_VERSION: &str = "7.0.14";
pub const MAX_WIRE_VERSION: i32 = 21;

#[derive(Debug, Clone)]
struct Index {
    name: String,
    key: Document,
    unique: bool,
}

#[derive(Debug, Clone)]
struct Coll {
    docs: Vec<Document>,
    indexes: Vec<Index>,
}

impl Default for Coll {
    /// An empty collection with its `_id_` index.
    fn default() -> Self {
        Coll {
            docs: Vec::new(),
            indexes: vec![Index {
                name: "_id_".into(),
                key: doc! {"_id": 1},
                unique: true,
            }],
        }
    }
}

/// db → collection → contents.
type Store = BTreeMap<String, BTreeMap<String, Coll>>;

struct Cursor {
    ns: String,
    docs: VecDeque<Document>,
}

/// One mocked MongoDB service and its state for the whole run.
pub struct MongoService {
    name: String,
    spec: Arc<MongoSpec>,
    store: Mutex<Store>,
    cursors: Mutex<HashMap<i64, Cursor>>,
    /// Stores as they were when a session's transaction began, for abort.
    txns: Mutex<HashMap<String, Store>>,
    next_cursor: AtomicI64,
    next_conn: AtomicI64,
    events: EventSink,
    detail: bool,
    /// The faults' counters (`after`, `times`).
    faults: FaultGate,
}

/// Per-connection state.
struct Conn {
    id: i64,
    /// The address the client dialled (`host:port`), for `me`/`hosts`.
    me: String,
    authed: bool,
    scram: Option<scram::Conversation>,
}

impl MongoService {
    pub fn new(name: &str, spec: Arc<MongoSpec>, events: EventSink, journal: bool) -> Self {
        MongoService {
            name: name.to_string(),
            store: Mutex::new(seed(&spec)),
            faults: FaultGate::new(spec.faults.len()),
            spec,
            cursors: Mutex::new(HashMap::new()),
            txns: Mutex::new(HashMap::new()),
            next_cursor: AtomicI64::new(1_000_001),
            next_conn: AtomicI64::new(1),
            events,
            detail: journal,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts the store back to its seeds.
    pub fn reset(&self) {
        *self.lock() = seed(&self.spec);
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.txns.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.faults.reset();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first fault that fires for this command, if any.
    fn pick_fault(&self, body: &Document) -> Option<MongoFaultKind> {
        if self.spec.faults.is_empty() {
            return None;
        }
        let cmd = body.keys().next()?;
        let db = body.get_str("$db").unwrap_or("admin");
        let ns = body.get_str(cmd).ok().map(|c| format!("{db}.{c}"));
        self.spec.faults.iter().enumerate().find_map(|(i, f)| {
            let cmd_ok =
                f.commands.is_empty() || f.commands.iter().any(|c| c.eq_ignore_ascii_case(cmd));
            let coll_ok = match (&f.collection, &ns) {
                (None, _) => true,
                (Some(g), Some(ns)) => crate::rules::glob::redis_glob(g.as_bytes(), ns.as_bytes()),
                (Some(_), None) => false,
            };
            (cmd_ok && coll_ok && self.faults.admit(i, &f.when)).then(|| f.kind.clone())
        })
    }

    fn record(&self, ctx: &ServeCtx, body: Option<&Document>, reply: &Document, started: Instant) {
        let command = body
            .and_then(|b| b.keys().next().cloned())
            .unwrap_or_else(|| "(protocol)".into());
        let code = if reply.get("ok").and_then(query::num) == Some(0.0) {
            Some(reply.get_i32("code").unwrap_or(-1))
        } else {
            reply
                .get_array("writeErrors")
                .ok()
                .and_then(|w| w.first())
                .and_then(|w| w.as_document())
                .and_then(|w| w.get_i32("code").ok())
        };
        if !self.detail && !self.events.wants_detail() {
            self.events
                .count(&INFO, &self.name, &command, code.is_some());
            return;
        }
        let db = body
            .and_then(|b| b.get_str("$db").ok())
            .unwrap_or("admin")
            .to_string();
        let collection = body
            .and_then(|b| b.get_str(&command).ok())
            .filter(|_| {
                !matches!(
                    command.as_str(),
                    "saslStart" | "saslContinue" | "hello" | "isMaster" | "ismaster"
                )
            })
            .map(|c| format!("{db}.{c}"));
        let filter = body
            .and_then(|b| {
                b.get("filter")
                    .or(b.get("query"))
                    .or_else(|| {
                        b.get_array("updates")
                            .or(b.get_array("deletes"))
                            .ok()
                            .and_then(|a| a.first())
                            .and_then(|x| x.as_document())
                            .and_then(|x| x.get("q"))
                    })
                    .cloned()
            })
            .map(|f| {
                let mut s = f.into_relaxed_extjson().to_string();
                crate::events::clip_text(&mut s, 200);
                s
            });
        let n = |k: &str| reply.get(k).and_then(query::num).map(|x| x as u64);
        let error = if reply.get("ok").and_then(query::num) == Some(0.0) {
            reply.get_str("errmsg").ok().map(String::from)
        } else {
            reply
                .get_array("writeErrors")
                .ok()
                .and_then(|w| w.first())
                .and_then(|w| w.as_document())
                .and_then(|w| w.get_str("errmsg").ok())
                .map(String::from)
        };
        let redact = self.events.redacts();
        let detail = MongoDetail {
            command: command.clone(),
            db,
            collection,
            filter,
            request: body.map(|b| preview::document(b, redact)),
            reply: preview::document(reply, redact),
            matched: n("n"),
            modified: n("nModified"),
            error_code: code,
        };
        self.events.record(Event::Exchange(ExchangeEvent {
            time: now_rfc3339(),
            flow_id: ctx.meta.id,
            service: self.name.clone(),
            protocol: &INFO,
            operation: command,
            outcome: if code.is_some() {
                Outcome::Error
            } else {
                Outcome::Ok
            },
            error,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: Arc::new(detail),
        }));
    }
}

use super::faults::{drain, pick_latency, FaultGate};

/// Serves one connection until it closes.
pub async fn serve<IO>(svc: Arc<MongoService>, mut io: IO, ctx: ServeCtx, flow: FlowHandle)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let me = format!(
        "{}:{}",
        ctx.meta
            .host
            .clone()
            .unwrap_or_else(|| ctx.meta.dst.ip().to_string()),
        ctx.meta.dst.port()
    );
    let mut conn = Conn {
        id: svc.next_conn.fetch_add(1, Ordering::Relaxed),
        me,
        authed: svc.spec.users.is_empty(),
        scram: None,
    };
    let mut buf = BytesMut::new();
    let mut out: Vec<u8> = Vec::new();
    let mut next_id: i32 = 1;
    'conn: loop {
        loop {
            let len = match wire::frame(&buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    // A broken frame cannot be skipped: close this connection.
                    svc.record(&ctx, None, &error_doc(2, &e.to_string()), Instant::now());
                    let _ = io.write_all(&out).await;
                    let _ = io.shutdown().await;
                    break 'conn;
                }
            };
            let msg = buf.split_to(len);
            ctx.clock.busy();
            let started = Instant::now();
            let response_to = i32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
            next_id = next_id.wrapping_add(1);
            match wire::decode(&msg) {
                Ok(Request::Msg { flags, body, .. }) => {
                    let reply = match svc.pick_fault(&body) {
                        None => svc.run(&mut conn, &body),
                        Some(MongoFaultKind::Latency(l)) => {
                            tokio::time::sleep(pick_latency(&l)).await;
                            svc.run(&mut conn, &body)
                        }
                        Some(MongoFaultKind::Error(e)) => error_doc(e.code, &e.message),
                        Some(kind) => {
                            svc.record(&ctx, Some(&body), &error_doc(-1, kind.label()), started);
                            let _ = io.write_all(&out).await;
                            let _ = io.flush().await;
                            if kind == MongoFaultKind::Reset {
                                flow.abort_after_flush();
                            }
                            drain(&mut io).await;
                            break 'conn;
                        }
                    };
                    svc.record(&ctx, Some(&body), &reply, started);
                    if flags & wire::MORE_TO_COME == 0 {
                        wire::encode_msg(&mut out, next_id, response_to, &reply);
                    }
                }
                Ok(Request::Query {
                    collection, query, ..
                }) => {
                    let reply = if collection.ends_with(".$cmd") {
                        let mut q = query.clone();
                        if !q.contains_key("$db") {
                            let db = collection.trim_end_matches(".$cmd").to_string();
                            q.insert("$db", db);
                        }
                        let r = svc.run(&mut conn, &q);
                        svc.record(&ctx, Some(&q), &r, started);
                        r
                    } else {
                        let r = doc! {"$err": "OP_QUERY is only supported for commands", "code": 5739101, "ok": 0.0};
                        svc.record(&ctx, None, &r, started);
                        r
                    };
                    wire::encode_reply(&mut out, next_id, response_to, &reply);
                }
                Err(e) => {
                    // A well-framed message with bad contents gets an error
                    // reply; the connection stays usable.
                    let reply = error_doc(2, &e.to_string());
                    svc.record(&ctx, None, &reply, started);
                    wire::encode_msg(&mut out, next_id, response_to, &reply);
                }
            }
        }
        if !out.is_empty() && io.write_all(&out).await.is_err() {
            break;
        }
        crate::io::buffers::written(&mut out);
        crate::io::buffers::before_read(&mut buf);
        ctx.clock.wait(!buf.is_empty());
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let _ = buf.remaining();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> MongoService {
        let mut spec = MongoSpec::default();
        spec.collections.insert(
            "app.users".into(),
            vec![doc! {"_id": 1, "name": "a"}, doc! {"_id": 2, "name": "b"}],
        );
        MongoService::new("db", Arc::new(spec), EventSink::default(), false)
    }

    fn conn() -> Conn {
        Conn {
            id: 1,
            me: "mongo.test:27017".into(),
            authed: true,
            scram: None,
        }
    }

    #[test]
    fn commands_cursors_and_reset() {
        let svc = service();
        let mut c = conn();
        let r = svc.run(
            &mut c,
            &doc! {"insert": "users", "documents": [{"_id": 3}], "$db": "app"},
        );
        assert_eq!(r.get_i32("n").unwrap(), 1);
        let r = svc.run(
            &mut c,
            &doc! {"insert": "users", "documents": [{"_id": 3}], "$db": "app"},
        );
        let we = r.get_array("writeErrors").unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(we.get_i32("code").unwrap(), 11000);
        assert_eq!(we.get_document("keyValue").unwrap(), &doc! {"_id": 3});
        let r = svc.run(
            &mut c,
            &doc! {"find": "users", "batchSize": 1, "$db": "app"},
        );
        let cur = r.get_document("cursor").unwrap();
        let id = cur.get_i64("id").unwrap();
        assert_ne!(id, 0);
        let r = svc.run(
            &mut c,
            &doc! {"getMore": id, "collection": "users", "batchSize": 5, "$db": "app"},
        );
        let cur = r.get_document("cursor").unwrap();
        assert_eq!(cur.get_array("nextBatch").unwrap().len(), 2);
        assert_eq!(cur.get_i64("id").unwrap(), 0);
        let r = svc.run(
            &mut c,
            &doc! {"getMore": id, "collection": "users", "$db": "app"},
        );
        assert_eq!(r.get_i32("code").unwrap(), 43);
        let r = svc.run(&mut c, &doc! {"frob": 1, "$db": "app"});
        assert_eq!(r.get_str("errmsg").unwrap(), "no such command: 'frob'");
        assert_eq!(r.get_str("codeName").unwrap(), "CommandNotFound");
        svc.reset();
        let r = svc.run(&mut c, &doc! {"count": "users", "$db": "app"});
        assert_eq!(r.get_i32("n").unwrap(), 2);
    }

    #[test]
    fn hello_standalone_and_replica_set() {
        let svc = service();
        let h = svc.run(&mut conn(), &doc! {"hello": 1, "$db": "admin"});
        assert!(h.get_bool("isWritablePrimary").unwrap());
        assert!(!h.contains_key("setName") && !h.contains_key("topologyVersion"));
        assert_eq!(h.get_i32("maxWireVersion").unwrap(), MAX_WIRE_VERSION);
        let spec = MongoSpec {
            replica_set: Some("rs0".into()),
            ..Default::default()
        };
        let rs = MongoService::new("db", Arc::new(spec), EventSink::default(), false);
        let h = rs.run(&mut conn(), &doc! {"isMaster": 1, "$db": "admin"});
        assert_eq!(h.get_str("setName").unwrap(), "rs0");
        assert_eq!(h.get_str("me").unwrap(), "mongo.test:27017");
        assert!(h.get_bool("ismaster").unwrap());
    }
}
