//! The `mongo:` part of a service: replica-set mode, users, seeded
//! collections (extended JSON documents) and indexes. Seeds are converted
//! to BSON while deserializing, so their errors carry the YAML position.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::OneOrMany;
use super::common::{FaultAction, FaultWhen, LatencySpec};
use super::timeouts::TimeoutsSpec;

/// A service's MongoDB responder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "RawMongo")]
pub struct MongoSpec {
    /// Answer `hello` as the primary of a one-node replica set of this name.
    pub replica_set: Option<String>,
    pub users: Vec<MongoUser>,
    /// `db.collection` → documents present at start.
    pub collections: BTreeMap<String, Vec<bson::Document>>,
    /// `db.collection` → indexes present at start.
    pub indexes: BTreeMap<String, Vec<MongoIndex>>,
    /// Faults, tried in order for every command; the first that fires wins.
    pub faults: Vec<MongoFault>,
    /// Idle, request and response limits (see `rules::timeouts`).
    pub timeouts: TimeoutsSpec,
}

/// For the listed commands (all when empty) on collections matching
/// `collection` (a glob on `db.collection`), do one thing.
#[derive(Debug, Clone)]
pub struct MongoFault {
    pub when: FaultWhen,
    pub commands: Vec<String>,
    pub collection: Option<String>,
    pub kind: MongoFaultKind,
}

/// MongoDB's own fault answer: `ok: 0` with this code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct MongoFaultError {
    pub code: i32,
    pub message: String,
}

pub type MongoFaultKind = FaultAction<MongoFaultError>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultError {
    code: i32,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default, alias = "command")]
    commands: OneOrMany<String>,
    #[serde(default)]
    collection: Option<String>,
    #[serde(default)]
    latency: Option<LatencySpec>,
    #[serde(default)]
    error: Option<RawFaultError>,
    #[serde(default)]
    reset: Option<bool>,
    #[serde(default)]
    hang: Option<bool>,
}

impl<'de> Deserialize<'de> for MongoFault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawFault::deserialize(d)?;
        let when =
            FaultWhen::new(r.probability, r.times, r.after).map_err(serde::de::Error::custom)?;
        let error = r.error.map(|e| MongoFaultError {
            code: e.code,
            message: e
                .message
                .unwrap_or_else(|| format!("injected fault (code {})", e.code)),
        });
        let kind = FaultAction::one(
            r.latency,
            error,
            r.reset == Some(true),
            r.hang == Some(true),
            "`latency`, `error`, `reset`, `hang`",
        )
        .map_err(serde::de::Error::custom)?;
        Ok(MongoFault {
            when,
            commands: r.commands.0,
            collection: r.collection,
            kind,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoUser {
    pub user: String,
    pub password: String,
    #[serde(default = "admin")]
    pub db: String,
}

fn admin() -> String {
    "admin".into()
}

#[derive(Debug, Clone)]
pub struct MongoIndex {
    pub key: bson::Document,
    pub unique: bool,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    key: serde_json::Value,
    #[serde(default)]
    unique: bool,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMongo {
    #[serde(default)]
    replica_set: Option<String>,
    #[serde(default)]
    users: Vec<MongoUser>,
    #[serde(default)]
    collections: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(default)]
    indexes: BTreeMap<String, Vec<RawIndex>>,
    #[serde(default, alias = "fault")]
    faults: OneOrMany<MongoFault>,
    #[serde(default)]
    timeouts: TimeoutsSpec,
}

fn check_ns(ns: &str) -> Result<(), String> {
    match ns.split_once('.') {
        Some((db, coll)) if !db.is_empty() && !coll.is_empty() => Ok(()),
        _ => Err(format!(
            "`{ns}` must be `database.collection` (for example `app.users`)"
        )),
    }
}

/// Converts one extended-JSON value to a BSON document.
pub fn to_document(v: serde_json::Value) -> Result<bson::Document, String> {
    match bson::Bson::try_from(v) {
        Ok(bson::Bson::Document(d)) => Ok(d),
        Ok(other) => Err(format!("expected a document, found {other}")),
        Err(e) => Err(format!("invalid extended JSON: {e}")),
    }
}

impl crate::rules::ProtocolRules for MongoSpec {
    const KEY: &'static str = "mongo";
    const TITLE: &'static str = "MongoDB";
    const EXPECT_FIELDS: &'static [&'static str] = &["command", "collection", "key"];

    /// `command` (any case) and a glob on the `db.collection` it names
    /// (`collection`, or `key` as for Redis).
    fn expect(
        &self,
        e: &crate::rules::ExpectSpec,
    ) -> Result<
        std::sync::Arc<dyn crate::rules::expect::ExpectMatcher>,
        crate::rules::expect::ExpectError,
    > {
        let (key, collection) = (e.str_field("key")?, e.str_field("collection")?);
        if key.is_some() && collection.is_some() {
            return Err(crate::rules::expect::ExpectError {
                field: "collection".into(),
                message: "`key` and `collection` mean the same for MongoDB: give one".into(),
            });
        }
        Ok(std::sync::Arc::new(crate::rules::expect::CommandMatcher {
            command: e.str_field("command")?.map(|c| c.to_ascii_uppercase()),
            key: key.or(collection),
            key_field: "collection",
        }))
    }
}

impl TryFrom<RawMongo> for MongoSpec {
    type Error = String;
    fn try_from(r: RawMongo) -> Result<Self, String> {
        let mut collections = BTreeMap::new();
        for (ns, docs) in r.collections {
            check_ns(&ns)?;
            let mut out = Vec::new();
            for (i, d) in docs.into_iter().enumerate() {
                out.push(to_document(d).map_err(|e| format!("collections.{ns}[{i}]: {e}"))?);
            }
            collections.insert(ns, out);
        }
        let mut indexes = BTreeMap::new();
        for (ns, list) in r.indexes {
            check_ns(&ns)?;
            let mut out = Vec::new();
            for (i, ix) in list.into_iter().enumerate() {
                let key = to_document(ix.key).map_err(|e| format!("indexes.{ns}[{i}].key: {e}"))?;
                if key.is_empty() {
                    return Err(format!("indexes.{ns}[{i}].key is empty"));
                }
                out.push(MongoIndex {
                    key,
                    unique: ix.unique,
                    name: ix.name,
                });
            }
            indexes.insert(ns, out);
        }
        if let Some(rs) = &r.replica_set {
            if rs.is_empty() {
                return Err("`replica_set` must not be empty".into());
            }
        }
        Ok(MongoSpec {
            replica_set: r.replica_set,
            users: r.users,
            collections,
            indexes,
            faults: r.faults.0,
            timeouts: r.timeouts,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_seeds_and_expectations() {
        let set = crate::rules::RuleSet::from_text(
            "services:\n  - name: m\n    match: { port: 27017 }\n    mongo:\n      replica_set: rs0\n      collections: { \"app.u\": [ { _id: { $oid: \"65a1b2c3d4e5f60718293a4b\" }, n: 1 } ] }\n      indexes: { \"app.u\": [ { key: { n: 1 }, unique: true } ] }\nexpect:\n  - { service: m, command: insert, collection: app.u }\n",
        )
        .unwrap();
        assert_eq!(set.services[0].action.label(), "mongo");
        assert_eq!(
            set.expects[0]
                .matcher
                .as_ref()
                .map(|m| m.target())
                .as_deref(),
            Some(" / INSERT key app.u")
        );
        let spec = set.services[0].action.mock().unwrap().clone().into_any();
        let spec = spec.downcast::<super::MongoSpec>().unwrap();
        assert!(matches!(
            spec.collections["app.u"][0].get("_id"),
            Some(bson::Bson::ObjectId(_))
        ));
        let err = crate::rules::RuleSet::from_text(
            "services:\n  - name: m\n    match: { port: 1 }\n    mongo: { colections: {} }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(":4:") && err.contains("colections"), "{err}");
        let err = crate::rules::RuleSet::from_text(
            "services:\n  - name: m\n    match: { port: 1 }\n    mongo: { collections: { nodot: [] } }\n",
        )
        .unwrap_err().to_string();
        assert!(err.contains("database.collection"), "{err}");
    }
}
