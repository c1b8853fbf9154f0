//! A service's keyspace: its databases, values with Redis's types, expiry
//! (lazy, on access, as Redis does for most keys) and the per-key versions
//! that `WATCH` compares.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};

use super::stream::Stream;
use crate::rules::redis::{RedisSpec, SeedData};

/// Milliseconds since the Unix epoch (expiry times are absolute, as in
/// Redis, so `EXPIREAT` and `PEXPIRETIME` agree with the client's clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A score with a total order (NaN never gets in: commands refuse it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// A sorted set: score by member, and members ordered by (score, member)
/// as Redis orders them.
#[derive(Debug, Clone, Default)]
pub struct ZSet {
    pub scores: HashMap<Bytes, f64>,
    pub order: BTreeSet<(Score, Bytes)>,
}

impl ZSet {
    /// Sets a member's score; true when the member is new.
    pub fn insert(&mut self, member: Bytes, score: f64) -> bool {
        // -0.0 and 0.0 are one score in Redis.
        let score = if score == 0.0 { 0.0 } else { score };
        match self.scores.insert(member.clone(), score) {
            Some(old) => {
                self.order.remove(&(Score(old), member.clone()));
                self.order.insert((Score(score), member));
                false
            }
            None => {
                self.order.insert((Score(score), member));
                true
            }
        }
    }

    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.order
                    .remove(&(Score(old), Bytes::copy_from_slice(member)));
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// 0-based rank in ascending order.
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let s = *self.scores.get(member)?;
        let key = (Score(s), Bytes::copy_from_slice(member));
        Some(self.order.range(..&key).count())
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(Bytes),
    Hash(IndexMap<Bytes, Bytes>),
    List(VecDeque<Bytes>),
    Set(IndexSet<Bytes>),
    ZSet(ZSet),
    /// Boxed: a stream's groups make it the largest type.
    Stream(Box<Stream>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// What `OBJECT ENCODING` answers, with Redis 7's thresholds.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => {
                if s.len() <= 20 && crate::responders::redis::resp::parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::Hash(h)
                if h.len() <= 128 && h.iter().all(|(k, v)| k.len() <= 64 && v.len() <= 64) =>
            {
                "listpack"
            }
            Value::Hash(_) => "hashtable",
            Value::List(l) if l.len() <= 128 => "listpack",
            Value::List(_) => "quicklist",
            Value::Set(s)
                if s.len() <= 512
                    && s.iter()
                        .all(|m| crate::responders::redis::resp::parse_i64(m).is_some()) =>
            {
                "intset"
            }
            Value::Set(s) if s.len() <= 128 => "listpack",
            Value::Set(_) => "hashtable",
            Value::ZSet(z) if z.len() <= 128 => "listpack",
            Value::ZSet(_) => "skiplist",
            Value::Stream(_) => "stream",
        }
    }

    /// A rough size for `MEMORY USAGE`.
    pub fn approx_size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Hash(h) => h.iter().map(|(k, v)| k.len() + v.len() + 16).sum(),
            Value::List(l) => l.iter().map(|v| v.len() + 11).sum(),
            Value::Set(s) => s.iter().map(|v| v.len() + 16).sum(),
            Value::ZSet(z) => z.scores.keys().map(|m| m.len() + 32).sum(),
            Value::Stream(st) => st.size(),
        }
    }

    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            // An empty stream stays (XDEL, XTRIM and MKSTREAM leave one).
            Value::Stream(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Absolute expiry in Unix milliseconds.
    pub expires: Option<i64>,
}

/// One database.
#[derive(Debug, Default)]
pub struct Db {
    pub map: HashMap<Bytes, Entry>,
}

impl Db {
    fn expired(e: &Entry, now: i64) -> bool {
        e.expires.is_some_and(|t| t <= now)
    }

    /// Drops the key if its time has come; true if it is (still) there.
    pub fn check(&mut self, key: &[u8]) -> bool {
        let now = now_ms();
        match self.map.get(key) {
            Some(e) if Self::expired(e, now) => {
                self.map.remove(key);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Option<&Entry> {
        if self.check(key) {
            self.map.get(key)
        } else {
            None
        }
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        if self.check(key) {
            self.map.get_mut(key)
        } else {
            None
        }
    }

    /// Sets a value and clears any TTL (as SET does).
    pub fn set(&mut self, key: Bytes, value: Value) {
        let entry = Entry {
            value,
            expires: None,
        };
        match self.map.get_mut(&key) {
            Some(e) => *e = entry,
            None => {
                self.map.insert(own(&key), entry);
            }
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        if self.check(key) {
            self.map.remove(key)
        } else {
            None
        }
    }

    /// Removes a collection left empty by a command (Redis never keeps an
    /// empty hash, list, set or sorted set).
    pub fn drop_if_empty(&mut self, key: &[u8]) {
        if self
            .map
            .get(key)
            .is_some_and(|e| e.value.is_empty_collection())
        {
            self.map.remove(key);
        }
    }

    /// Live keys (expired ones are purged first).
    pub fn purge(&mut self) {
        let now = now_ms();
        self.map.retain(|_, e| !Self::expired(e, now));
    }

    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    pub fn len(&mut self) -> usize {
        self.purge();
        self.map.len()
    }

    pub fn expires_count(&self) -> usize {
        self.map.values().filter(|e| e.expires.is_some()).count()
    }
}

/// The most keys whose last write `WATCH` remembers one by one.
const MAX_VERSIONS: usize = 65_536;

/// A key as a map keeps it: its own few bytes. A key straight from a
/// command is a slice of the buffer the command was read into, and
/// keeping it would keep that whole buffer (a megabyte, for a key sent
/// with a large value) for as long as the key lives.
pub fn own(key: &Bytes) -> Bytes {
    Bytes::copy_from_slice(key)
}

/// All databases of a service, plus what `WATCH` needs.
#[derive(Debug)]
pub struct Store {
    pub dbs: Vec<Db>,
    /// Bumped on every write; a key's version is the value at its last
    /// write, a database's flush version the value at its last flush.
    seq: u64,
    versions: HashMap<(usize, Bytes), u64>,
    /// The version of every key `versions` no longer holds.
    forgotten: u64,
    flushed: Vec<u64>,
    /// Writes since start, for `INFO persistence`.
    pub dirty: u64,
}

impl Store {
    pub fn new(spec: &RedisSpec) -> Store {
        let mut s = Store {
            dbs: (0..spec.databases).map(|_| Db::default()).collect(),
            seq: 0,
            versions: HashMap::new(),
            forgotten: 0,
            flushed: vec![0; spec.databases],
            dirty: 0,
        };
        s.seed(spec);
        s
    }

    /// Loads the rules' `seed:` (also used by a reset).
    pub fn seed(&mut self, spec: &RedisSpec) {
        let now = now_ms();
        for (&db, keys) in &spec.seed {
            let Some(d) = self.dbs.get_mut(db) else {
                continue;
            };
            for (k, v) in keys {
                let b = |s: &String| Bytes::copy_from_slice(s.as_bytes());
                let value = match &v.data {
                    SeedData::String(s) => Value::Str(b(s)),
                    SeedData::Hash(h) => Value::Hash(h.iter().map(|(f, v)| (b(f), b(v))).collect()),
                    SeedData::List(l) => Value::List(l.iter().map(b).collect()),
                    SeedData::Set(s) => Value::Set(s.iter().map(b).collect()),
                    SeedData::ZSet(z) => {
                        let mut zs = ZSet::default();
                        for (m, s) in z {
                            zs.insert(b(m), *s);
                        }
                        Value::ZSet(zs)
                    }
                };
                d.map.insert(
                    b(k),
                    Entry {
                        value,
                        expires: v.ttl.map(|t| now + t.as_millis() as i64),
                    },
                );
            }
        }
    }

    /// Records a write to a key (for `WATCH`). Past `MAX_VERSIONS`
    /// remembered keys they are forgotten at once and every key's version
    /// becomes the current one: a transaction watching across that
    /// moment aborts (as if its keys had changed) and is retried, which
    /// beats a table that grows with every key ever written.
    pub fn touch(&mut self, db: usize, key: &Bytes) {
        self.seq += 1;
        self.dirty += 1;
        if self.versions.len() >= MAX_VERSIONS && !self.versions.contains_key(&(db, key.clone())) {
            self.versions.clear();
            self.forgotten = self.seq;
        }
        self.versions.insert((db, own(key)), self.seq);
    }

    /// Records a flush of a database (every watched key in it changes).
    pub fn touch_db(&mut self, db: usize) {
        self.seq += 1;
        self.dirty += 1;
        if let Some(f) = self.flushed.get_mut(db) {
            *f = self.seq;
        }
    }

    /// The version a `WATCH` remembers; it changes on any write to the
    /// key or flush of its database.
    pub fn version(&self, db: usize, key: &Bytes) -> u64 {
        let k = self
            .versions
            .get(&(db, key.clone()))
            .copied()
            .unwrap_or(self.forgotten);
        k.max(self.flushed.get(db).copied().unwrap_or(0))
    }
}
