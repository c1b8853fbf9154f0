//! The MongoDB responder: OP_MSG (and the legacy OP_QUERY handshake) over
//! any number of connections, all sharing one in-memory store per service
//! for the whole run.
//!
//! Shape: the store sits behind one mutex per service and every command
//! runs synchronously under it, so each command is atomic. Cursors live
//! in the service too (drivers may `getMore` on another connection).

pub mod query;
pub mod scram;
pub mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::{doc, oid::ObjectId, Bson, Document};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::events::{now_rfc3339, Event, EventSink, MongoEvent};
use crate::rules::mongo::{MongoFaultKind, MongoSpec};
use crate::stack::FlowHandle;

use super::ServeCtx;
use query::QResult;
use wire::Request;

/// What `buildInfo` reports; agrees with `MAX_WIRE_VERSION` (21 = 7.0).
pub const MONGO_VERSION: &str = "7.0.14";
pub const MAX_WIRE_VERSION: i32 = 21;
const DEFAULT_BATCH: usize = 101;

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
}

fn seed(spec: &MongoSpec) -> Store {
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

fn with_id(d: Document) -> Document {
    if d.contains_key("_id") {
        return d;
    }
    let mut n = doc! {"_id": ObjectId::new()};
    n.extend(d);
    n
}

fn index_name(key: &Document) -> String {
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

/// The commands the responder answers (anything else is `unknown` in
/// metrics, so labels stay bounded).
pub const COMMANDS: &[&str] = &[
    "hello",
    "isMaster",
    "ismaster",
    "ping",
    "endSessions",
    "killSessions",
    "logout",
    "refreshSessions",
    "commitTransaction",
    "abortTransaction",
    "buildInfo",
    "buildinfo",
    "getParameter",
    "whatsmyuri",
    "connectionStatus",
    "saslStart",
    "saslContinue",
    "serverStatus",
    "listDatabases",
    "listCollections",
    "create",
    "drop",
    "dropDatabase",
    "insert",
    "find",
    "getMore",
    "killCursors",
    "count",
    "distinct",
    "aggregate",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "createIndexes",
    "listIndexes",
    "dropIndexes",
    "deleteIndexes",
];

/// A command failure: `ok: 0` with a code.
#[derive(Debug)]
struct CmdError(i32, String);

impl From<(i32, String)> for CmdError {
    fn from((c, m): (i32, String)) -> Self {
        CmdError(c, m)
    }
}

type CmdResult = Result<Document, CmdError>;

fn code_name(code: i32) -> &'static str {
    match code {
        2 => "BadValue",
        9 => "FailedToParse",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        18 => "AuthenticationFailed",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        28 => "PathNotViable",
        43 => "CursorNotFound",
        48 => "NamespaceExists",
        59 => "CommandNotFound",
        11000 => "DuplicateKey",
        40324 => "Location40324",
        _ => "Location",
    }
}

fn error_doc(code: i32, msg: &str) -> Document {
    doc! {"ok": 0.0, "errmsg": msg, "code": code, "codeName": code_name(code)}
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
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hello(&self, conn: &Conn, legacy: bool) -> Document {
        let mut d = doc! {
            "helloOk": true,
            "isWritablePrimary": true,
        };
        if legacy {
            d.insert("ismaster", true);
        }
        if let Some(rs) = &self.spec.replica_set {
            d.insert("setName", rs.clone());
            d.insert("setVersion", 1);
            d.insert("hosts", vec![Bson::String(conn.me.clone())]);
            d.insert("primary", conn.me.clone());
            d.insert("me", conn.me.clone());
            d.insert("secondary", false);
            d.insert(
                "electionId",
                ObjectId::parse_str("7fffffff0000000000000001").unwrap_or_else(|_| ObjectId::new()),
            );
            let ts = bson::Timestamp {
                time: 1,
                increment: 1,
            };
            d.insert(
                "lastWrite",
                doc! {"lastWriteDate": bson::DateTime::now(), "opTime": {"ts": ts, "t": 1i64}},
            );
        }
        d.extend(doc! {
            "maxBsonObjectSize": 16_777_216,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": bson::DateTime::now(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": false,
            "ok": 1.0,
        });
        d
    }

    /// Runs one command and returns its reply document.
    fn run(&self, conn: &mut Conn, body: &Document) -> Document {
        let Some((name, _)) = body.iter().next() else {
            return error_doc(59, "no such command: ''");
        };
        let name = name.clone();
        LAST_DUP.with(|c| c.borrow_mut().take());
        match self.command(conn, &name, body) {
            Ok(mut d) => {
                if !d.contains_key("ok") {
                    d.insert("ok", 1.0);
                }
                d
            }
            Err(CmdError(code, msg)) => error_doc(code, &msg),
        }
    }

    fn command(&self, conn: &mut Conn, name: &str, body: &Document) -> CmdResult {
        let db = body.get_str("$db").unwrap_or("admin").to_string();
        let coll_name = || -> Result<String, CmdError> {
            body.get_str(name)
                .map(String::from)
                .map_err(|_| CmdError(2, format!("collection name has invalid type for {name}")))
        };
        // Authentication comes first when users are configured.
        let open = matches!(
            name,
            "hello"
                | "isMaster"
                | "ismaster"
                | "ping"
                | "buildInfo"
                | "buildinfo"
                | "saslStart"
                | "saslContinue"
                | "endSessions"
                | "logout"
                | "getnonce"
                | "connectionStatus"
        );
        if !conn.authed && !open {
            return Err(CmdError(
                13,
                format!("Command {name} requires authentication"),
            ));
        }
        match name {
            "hello" | "isMaster" | "ismaster" => {
                let mut d = self.hello(conn, name != "hello");
                if let Some(Bson::Document(spec)) = body.get("speculativeAuthenticate") {
                    if let Ok(r) = self.sasl_start(conn, spec, &db) {
                        d.insert("speculativeAuthenticate", r);
                    }
                }
                if let Some(Bson::String(u)) = body.get("saslSupportedMechs") {
                    if let Some((_, user)) = u.split_once('.') {
                        if self.spec.users.iter().any(|x| x.user == user) {
                            d.insert("saslSupportedMechs", vec!["SCRAM-SHA-256", "SCRAM-SHA-1"]);
                        }
                    }
                }
                Ok(d)
            }
            "ping" | "endSessions" | "killSessions" | "logout" | "refreshSessions" => Ok(doc! {}),
            "commitTransaction" | "abortTransaction" => {
                if self.spec.replica_set.is_none() {
                    return Err(CmdError(
                        20,
                        "Transaction numbers are only allowed on a replica set member or mongos"
                            .into(),
                    ));
                }
                let key = lsid_key(body);
                let snap = self
                    .txns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                if name == "abortTransaction" {
                    if let Some(s) = snap {
                        *self.lock() = s;
                    }
                }
                Ok(doc! {})
            }
            "buildInfo" | "buildinfo" => Ok(doc! {
                "version": MONGO_VERSION,
                "gitVersion": "meshwrap",
                "versionArray": [7, 0, 14, 0],
                "bits": 64,
                "maxBsonObjectSize": 16_777_216,
                "modules": [],
                "storageEngines": ["memory"],
                "debug": false,
                "javascriptEngine": "none",
            }),
            "getParameter" => {
                let mut d = doc! {};
                if body.contains_key("featureCompatibilityVersion")
                    || matches!(body.get("getParameter"), Some(Bson::String(s)) if s == "*")
                {
                    d.insert("featureCompatibilityVersion", doc! {"version": "7.0"});
                }
                Ok(d)
            }
            "whatsmyuri" => Ok(doc! {"you": "127.0.0.1:0"}),
            "connectionStatus" => {
                Ok(doc! {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}})
            }
            "saslStart" => self.sasl_start(conn, body, &db),
            "saslContinue" => self.sasl_continue(conn, body),
            "serverStatus" => Ok(doc! {
                "host": conn.me.clone(), "version": MONGO_VERSION, "process": "mongod",
                "uptime": 1.0, "localTime": bson::DateTime::now(),
                "connections": {"current": 1, "available": 1000},
            }),
            "listDatabases" => {
                let s = self.lock();
                let dbs: Vec<Bson> = s
                    .iter()
                    .filter(|(_, c)| !c.is_empty())
                    .map(|(n, c)| {
                        let size: usize = c.values().map(|x| x.docs.len() * 64).sum();
                        Bson::Document(
                            doc! {"name": n, "sizeOnDisk": size as i64, "empty": size == 0},
                        )
                    })
                    .collect();
                Ok(doc! {"databases": dbs, "totalSize": 0i64})
            }
            "listCollections" => {
                let s = self.lock();
                let filter = body.get_document("filter").cloned().unwrap_or_default();
                let mut out = Vec::new();
                if let Some(colls) = s.get(&db) {
                    for n in colls.keys() {
                        let d = doc! {"name": n, "type": "collection", "options": {}, "info": {"readOnly": false}, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}};
                        if query::matches(&d, &filter)? {
                            out.push(d);
                        }
                    }
                }
                drop(s);
                Ok(self.cursor_reply(&format!("{db}.$cmd.listCollections"), out, body))
            }
            "create" => {
                let c = coll_name()?;
                let mut s = self.lock();
                let colls = s.entry(db.clone()).or_default();
                if colls.contains_key(&c) {
                    return Err(CmdError(48, format!("Collection {db}.{c} already exists.")));
                }
                colls.insert(c, Coll::default());
                Ok(doc! {})
            }
            "drop" => {
                let c = coll_name()?;
                let mut s = self.lock();
                match s.get_mut(&db).and_then(|x| x.remove(&c)) {
                    Some(old) => Ok(
                        doc! {"ns": format!("{db}.{c}"), "nIndexesWas": old.indexes.len() as i32},
                    ),
                    None => Err(CmdError(26, "ns not found".into())),
                }
            }
            "dropDatabase" => {
                self.lock().remove(&db);
                Ok(doc! {"dropped": db})
            }
            "insert" => {
                let c = coll_name()?;
                let docs = body.get_array("documents").cloned().unwrap_or_default();
                let ordered = body.get_bool("ordered").unwrap_or(true);
                self.begin_txn(body);
                let mut s = self.lock();
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
            "find" => {
                let c = coll_name()?;
                let filter = body.get_document("filter").cloned().unwrap_or_default();
                let mut docs = self.select(&db, &c, &filter)?;
                if let Ok(sort) = body.get_document("sort") {
                    docs.sort_by(|a, b| query::sort_cmp(a, b, sort));
                }
                let skip = body.get("skip").and_then(query::num).unwrap_or(0.0) as usize;
                let limit = body.get("limit").and_then(query::num).unwrap_or(0.0) as i64;
                let mut docs: Vec<Document> = docs.into_iter().skip(skip).collect();
                if limit != 0 {
                    docs.truncate(limit.unsigned_abs() as usize);
                }
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
                Ok(self.cursor_reply(&format!("{db}.{c}"), docs, &b))
            }
            "getMore" => {
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
                let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
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
            "killCursors" => {
                let ids = body.get_array("cursors").cloned().unwrap_or_default();
                let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
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
            "count" => {
                let c = coll_name()?;
                let filter = body.get_document("query").cloned().unwrap_or_default();
                let docs = self.select(&db, &c, &filter)?;
                let skip = body.get("skip").and_then(query::num).unwrap_or(0.0) as usize;
                let limit = body.get("limit").and_then(query::num).unwrap_or(0.0) as usize;
                let mut n = docs.len().saturating_sub(skip);
                if limit > 0 {
                    n = n.min(limit);
                }
                Ok(doc! {"n": n as i32})
            }
            "distinct" => {
                let c = coll_name()?;
                let key = body
                    .get_str("key")
                    .map_err(|_| CmdError(2, "distinct needs a key".into()))?;
                let filter = body.get_document("query").cloned().unwrap_or_default();
                let mut vals: Vec<Bson> = Vec::new();
                for d in self.select(&db, &c, &filter)? {
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
            "aggregate" => {
                let pipeline = body.get_array("pipeline").cloned().unwrap_or_default();
                let (ns, docs) = match body.get(name) {
                    Some(Bson::String(c)) => (format!("{db}.{c}"), self.select(&db, c, &doc! {})?),
                    _ => (format!("{db}.$cmd.aggregate"), Vec::new()),
                };
                let src = Snapshot {
                    store: self.lock().get(&db).cloned().unwrap_or_default(),
                };
                let out = query::aggregate(docs, &pipeline, &src)?;
                Ok(self.cursor_reply(&ns, out, body))
            }
            "update" => {
                let c = coll_name()?;
                self.begin_txn(body);
                self.update(&db, &c, body)
            }
            "delete" => {
                let c = coll_name()?;
                self.begin_txn(body);
                let dels = body.get_array("deletes").cloned().unwrap_or_default();
                let mut s = self.lock();
                let mut n = 0;
                if let Some(coll) = s.get_mut(&db).and_then(|x| x.get_mut(&c)) {
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
            "findAndModify" | "findandmodify" => {
                let c = coll_name()?;
                self.begin_txn(body);
                self.find_and_modify(&db, &c, body)
            }
            "createIndexes" => {
                let c = coll_name()?;
                let list = body.get_array("indexes").cloned().unwrap_or_default();
                let mut s = self.lock();
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
            "listIndexes" => {
                let c = coll_name()?;
                let s = self.lock();
                let Some(coll) = s.get(&db).and_then(|x| x.get(&c)) else {
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
                Ok(self.cursor_reply(&format!("{db}.{c}"), list, body))
            }
            "dropIndexes" | "deleteIndexes" => {
                let c = coll_name()?;
                let mut s = self.lock();
                let Some(coll) = s.get_mut(&db).and_then(|x| x.get_mut(&c)) else {
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
                    Some(Bson::Document(k)) => {
                        coll.indexes.retain(|i| &i.key != k || i.name == "_id_")
                    }
                    _ => {}
                }
                Ok(doc! {"nIndexesWas": was})
            }
            other => Err(CmdError(59, format!("no such command: '{other}'"))),
        }
    }

    /// Snapshots the store when a session starts a transaction.
    fn begin_txn(&self, body: &Document) {
        if self.spec.replica_set.is_some() && body.get_bool("startTransaction").unwrap_or(false) {
            let snap = self.lock().clone();
            self.txns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(lsid_key(body), snap);
        }
    }

    fn select(&self, db: &str, c: &str, filter: &Document) -> Result<Vec<Document>, CmdError> {
        let s = self.lock();
        let mut out = Vec::new();
        if let Some(coll) = s.get(db).and_then(|x| x.get(c)) {
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
                        .cloned()
                        .into_iter()
                        .collect());
                }
            }
            for d in &coll.docs {
                if query::matches(d, filter)? {
                    out.push(d.clone());
                }
            }
        }
        Ok(out)
    }

    /// A cursor reply: the first batch now, the rest kept for getMore.
    fn cursor_reply(&self, ns: &str, docs: Vec<Document>, body: &Document) -> Document {
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

    fn sasl_start(&self, conn: &mut Conn, body: &Document, db: &str) -> CmdResult {
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

    /// The first fault that fires for this command, if any.
    fn pick_fault(&self, body: &Document) -> Option<MongoFaultKind> {
        if self.spec.faults.is_empty() {
            return None;
        }
        let cmd = body.keys().next()?;
        let db = body.get_str("$db").unwrap_or("admin");
        let ns = body.get_str(cmd).ok().map(|c| format!("{db}.{c}"));
        self.spec.faults.iter().find_map(|f| {
            let cmd_ok =
                f.commands.is_empty() || f.commands.iter().any(|c| c.eq_ignore_ascii_case(cmd));
            let coll_ok = match (&f.collection, &ns) {
                (None, _) => true,
                (Some(g), Some(ns)) => {
                    crate::responders::redis::commands::glob(g.as_bytes(), ns.as_bytes())
                }
                (Some(_), None) => false,
            };
            (cmd_ok && coll_ok && rand::random::<f64>() < f.probability).then(|| f.kind.clone())
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
                .count_mongo(&self.name, &command, code.is_some());
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
                if s.len() > 200 {
                    let mut cut = 200;
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    s.truncate(cut);
                    s.push('…');
                }
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
        self.events.record(Event::Mongo(MongoEvent {
            time: now_rfc3339(),
            flow_id: ctx.meta.id,
            service: self.name.clone(),
            command,
            db,
            collection,
            filter,
            matched: n("n"),
            modified: n("nModified"),
            error_code: code,
            error,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        }));
    }
}

fn sasl_payload(body: &Document) -> Vec<u8> {
    match body.get("payload") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(Bson::String(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

fn lsid_key(body: &Document) -> String {
    body.get("lsid").map(|l| format!("{l}")).unwrap_or_default()
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
            let src = Snapshot {
                store: BTreeMap::new(),
            };
            let out = query::aggregate(vec![d.clone()], pipeline, &src)?;
            if let Some(n) = out.into_iter().next() {
                *d = n;
            }
            Ok(())
        }
        _ => Err((9, "update must be an object or a pipeline".into())),
    }
}

struct Snapshot {
    store: BTreeMap<String, Coll>,
}

impl query::Source for Snapshot {
    fn docs(&self, coll: &str) -> Vec<Document> {
        self.store
            .get(coll)
            .map(|c| c.docs.clone())
            .unwrap_or_default()
    }
}

/// The value of an index key for a document (one field: the value; several:
/// a document of them).
fn index_key(d: &Document, key: &Document) -> Bson {
    let mut out = Document::new();
    for k in key.keys() {
        out.insert(k, query::get_path(d, k).unwrap_or(Bson::Null));
    }
    Bson::Document(out)
}

fn dup_text(k: &Bson) -> String {
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
fn check_unique(
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
    static LAST_DUP: std::cell::RefCell<Option<(Document, Bson)>> = const { std::cell::RefCell::new(None) };
}

fn write_error(index: usize, (code, msg): (i32, String)) -> Bson {
    let mut d = doc! {"index": index as i32, "code": code, "errmsg": msg};
    if code == 11000 {
        if let Some((pattern, value)) = LAST_DUP.with(|c| c.borrow_mut().take()) {
            d.insert("keyPattern", pattern);
            d.insert("keyValue", value);
        }
    }
    Bson::Document(d)
}

fn pick_latency(l: &crate::rules::http::LatencySpec) -> std::time::Duration {
    if l.max <= l.min {
        return l.min;
    }
    let span = (l.max - l.min).as_secs_f64();
    l.min + std::time::Duration::from_secs_f64(span * rand::random::<f64>())
}

/// Reads and drops until the client closes (or a minute passes).
async fn drain<IO: AsyncRead + Unpin>(io: &mut IO) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Serves one connection until it closes.
pub async fn serve<IO>(svc: Arc<MongoService>, mut io: IO, ctx: ServeCtx, handle: FlowHandle)
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
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
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
                        Some(MongoFaultKind::Error { code, message }) => error_doc(code, &message),
                        Some(kind) => {
                            svc.record(&ctx, Some(&body), &error_doc(-1, kind.label()), started);
                            let _ = io.write_all(&out).await;
                            let _ = io.flush().await;
                            if kind == MongoFaultKind::Reset {
                                handle.abort_after_flush();
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
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        buf.reserve(4096);
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
