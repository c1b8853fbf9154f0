//! The handshake and server-information commands drivers send on every
//! new connection or when probing the server: `hello` (and the legacy
//! `isMaster`), `buildInfo`, `getParameter`, `whatsmyuri`,
//! `connectionStatus` and `serverStatus`.

use bson::{doc, oid::ObjectId, Bson, Document};

use super::super::{Conn, MongoService, MAX_WIRE_VERSION, MONGO_VERSION};
use super::{Call, CmdResult};

impl MongoService {
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
}

/// `hello`, `isMaster` and `ismaster` (the legacy two also say
/// `ismaster: true`).
pub(super) fn hello(cx: &mut Call) -> CmdResult {
    let (svc, body, db) = (cx.svc, cx.body, &cx.db);
    let mut d = svc.hello(cx.conn, cx.name != "hello");
    if let Some(Bson::Document(spec)) = body.get("speculativeAuthenticate") {
        if let Ok(r) = svc.sasl_start(cx.conn, spec, db) {
            d.insert("speculativeAuthenticate", r);
        }
    }
    if let Some(Bson::String(u)) = body.get("saslSupportedMechs") {
        if let Some((_, user)) = u.split_once('.') {
            if svc.spec.users.iter().any(|x| x.user == user) {
                d.insert("saslSupportedMechs", vec!["SCRAM-SHA-256", "SCRAM-SHA-1"]);
            }
        }
    }
    Ok(d)
}

pub(super) fn build_info(_: &mut Call) -> CmdResult {
    Ok(doc! {
        "version": MONGO_VERSION,
        "gitVersion": "meshwrap",
        "versionArray": [7, 0, 14, 0],
        "bits": 64,
        "maxBsonObjectSize": 16_777_216,
        "modules": [],
        "storageEngines": ["memory"],
        "debug": false,
        "javascriptEngine": "none",
    })
}

pub(super) fn get_parameter(cx: &mut Call) -> CmdResult {
    let body = cx.body;
    let mut d = doc! {};
    if body.contains_key("featureCompatibilityVersion")
        || matches!(body.get("getParameter"), Some(Bson::String(s)) if s == "*")
    {
        d.insert("featureCompatibilityVersion", doc! {"version": "7.0"});
    }
    Ok(d)
}

pub(super) fn whatsmyuri(_: &mut Call) -> CmdResult {
    Ok(doc! {"you": "127.0.0.1:0"})
}

pub(super) fn connection_status(_: &mut Call) -> CmdResult {
    Ok(doc! {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}})
}

pub(super) fn server_status(cx: &mut Call) -> CmdResult {
    Ok(doc! {
        "host": cx.conn.me.clone(), "version": MONGO_VERSION, "process": "mongod",
        "uptime": 1.0, "localTime": bson::DateTime::now(),
        "connections": {"current": 1, "available": 1000},
    })
}
