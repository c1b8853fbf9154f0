//! The command table (names, arities, flags and key positions as Redis
//! declares them, so `COMMAND` and argument checks agree with a real
//! server) and the helpers every command shares: argument parsing with
//! Redis's error texts, typed access to keys, glob matching and SCAN
//! cursors.

pub mod hashes;
pub mod keys;
pub mod lists;
pub mod server;
pub mod sets;
pub mod strings;
pub mod zsets;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;

use super::resp::{parse_i64, Reply};
use super::state::{Db, Store, Value};
use super::{ConnState, RedisService};

/// Redis's glob, kept under its old name for the commands and for outside
/// callers.
pub use crate::rules::glob::redis_glob as glob;

/// A command's outcome: `Err` carries an error reply so `?` can return it.
pub type R = Result<Reply, Reply>;

/// What a synchronous command sees: the keyspace (locked), the connection
/// and the service.
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    pub conn: &'a mut ConnState,
    pub svc: &'a RedisService,
}

impl Ctx<'_> {
    pub fn db(&mut self) -> &mut Db {
        let i = self.conn.db;
        &mut self.store.dbs[i]
    }
}

pub type Handler = fn(&mut Ctx, &[Bytes]) -> R;

pub const WRITE: u16 = 1;
pub const READONLY: u16 = 2;
pub const FAST: u16 = 4;
pub const BLOCKING: u16 = 8;
pub const PUBSUB: u16 = 16;
pub const ADMIN: u16 = 32;
pub const NOSCRIPT: u16 = 64;
/// Allowed before `AUTH` (HELLO, AUTH, QUIT, RESET).
pub const NOAUTH: u16 = 128;
/// Runs in the connection's async loop (blocking, pub/sub, transactions,
/// connection state), not under the keyspace lock.
pub const SPECIAL: u16 = 256;

pub struct CmdDef {
    pub name: &'static str,
    /// Redis's arity: exact when positive, a minimum when negative
    /// (counting the command name).
    pub arity: i32,
    pub flags: u16,
    pub first_key: i32,
    /// Negative counts from the end (-1 = last argument).
    pub last_key: i32,
    pub step: i32,
    pub run: Option<Handler>,
}

impl CmdDef {
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i32;
        if self.arity >= 0 {
            n == self.arity
        } else {
            n >= -self.arity
        }
    }

    /// The key arguments of a call.
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> Vec<&'a Bytes> {
        if self.first_key <= 0 {
            return Vec::new();
        }
        let n = args.len() as i32;
        let last = if self.last_key < 0 {
            n + self.last_key
        } else {
            self.last_key
        };
        let mut out = Vec::new();
        let mut i = self.first_key;
        while i <= last && i < n {
            out.push(&args[i as usize]);
            i += self.step.max(1);
        }
        out
    }

    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (bit, name) in [
            (WRITE, "write"),
            (READONLY, "readonly"),
            (FAST, "fast"),
            (BLOCKING, "blocking"),
            (PUBSUB, "pubsub"),
            (ADMIN, "admin"),
            (NOSCRIPT, "noscript"),
            (NOAUTH, "no_auth"),
        ] {
            if self.flags & bit != 0 {
                v.push(name);
            }
        }
        v
    }
}

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, $f:expr, $l:expr, $s:expr, $run:expr) => {
        CmdDef {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            run: $run,
        }
    };
}

const W: u16 = WRITE;
const RO: u16 = READONLY;
const WF: u16 = WRITE | FAST;
const RF: u16 = READONLY | FAST;
const SP: u16 = SPECIAL;

/// Every command the responder knows.
pub fn table() -> &'static HashMap<&'static str, CmdDef> {
    static T: OnceLock<HashMap<&'static str, CmdDef>> = OnceLock::new();
    T.get_or_init(|| {
        use hashes as h;
        use keys as k;
        use lists as l;
        use server as s;
        use sets as st;
        use strings as sg;
        use zsets as z;
        let defs = vec![
            // connection and server
            cmd!("ping", -1, FAST | SP, 0, 0, 0, None),
            cmd!("echo", 2, FAST, 0, 0, 0, Some(s::echo)),
            cmd!("hello", -1, FAST | NOAUTH | SP, 0, 0, 0, None),
            cmd!("auth", -2, FAST | NOAUTH | SP, 0, 0, 0, None),
            cmd!("client", -2, SP, 0, 0, 0, None),
            cmd!("select", 2, FAST | SP, 0, 0, 0, None),
            cmd!("quit", -1, FAST | NOAUTH | SP, 0, 0, 0, None),
            cmd!("reset", 1, FAST | NOAUTH | SP, 0, 0, 0, None),
            cmd!("info", -1, 0, 0, 0, 0, Some(s::info)),
            cmd!("command", -1, 0, 0, 0, 0, Some(s::command)),
            cmd!("config", -2, ADMIN, 0, 0, 0, Some(s::config)),
            cmd!("time", 1, FAST, 0, 0, 0, Some(s::time)),
            cmd!("dbsize", 1, RF, 0, 0, 0, Some(s::dbsize)),
            cmd!("flushdb", -1, W, 0, 0, 0, Some(s::flushdb)),
            cmd!("flushall", -1, W, 0, 0, 0, Some(s::flushall)),
            cmd!("swapdb", 3, WF, 0, 0, 0, Some(s::swapdb)),
            cmd!("lastsave", 1, FAST, 0, 0, 0, Some(s::lastsave)),
            cmd!("save", 1, ADMIN, 0, 0, 0, Some(s::ok)),
            cmd!("bgsave", -1, ADMIN, 0, 0, 0, Some(s::bgsave)),
            cmd!("function", -2, 0, 0, 0, 0, Some(s::function)),
            cmd!("script", -2, 0, 0, 0, 0, Some(s::script)),
            cmd!("wait", 3, 0, 0, 0, 0, Some(s::wait)),
            cmd!("role", 1, FAST, 0, 0, 0, Some(s::role)),
            cmd!("memory", -2, 0, 0, 0, 0, Some(s::memory)),
            cmd!("object", -2, RO, 0, 0, 0, Some(s::object)),
            cmd!("readonly", 1, FAST, 0, 0, 0, Some(s::ok)),
            cmd!("readwrite", 1, FAST, 0, 0, 0, Some(s::ok)),
            cmd!("multi", 1, FAST | SP, 0, 0, 0, None),
            cmd!("exec", 1, SP, 0, 0, 0, None),
            cmd!("discard", 1, FAST | SP, 0, 0, 0, None),
            cmd!("watch", -2, FAST | SP, 1, -1, 1, None),
            cmd!("unwatch", 1, FAST | SP, 0, 0, 0, None),
            cmd!("subscribe", -2, PUBSUB | SP, 0, 0, 0, None),
            cmd!("psubscribe", -2, PUBSUB | SP, 0, 0, 0, None),
            cmd!("unsubscribe", -1, PUBSUB | SP, 0, 0, 0, None),
            cmd!("punsubscribe", -1, PUBSUB | SP, 0, 0, 0, None),
            cmd!("publish", 3, PUBSUB | FAST, 0, 0, 0, Some(s::publish)),
            cmd!("pubsub", -2, PUBSUB, 0, 0, 0, Some(s::pubsub)),
            // strings
            cmd!("get", 2, RF, 1, 1, 1, Some(sg::get)),
            cmd!("set", -3, W, 1, 1, 1, Some(sg::set)),
            cmd!("setnx", 3, WF, 1, 1, 1, Some(sg::setnx)),
            cmd!("setex", 4, W, 1, 1, 1, Some(sg::setex)),
            cmd!("psetex", 4, W, 1, 1, 1, Some(sg::psetex)),
            cmd!("getset", 3, WF, 1, 1, 1, Some(sg::getset)),
            cmd!("mget", -2, RF, 1, -1, 1, Some(sg::mget)),
            cmd!("mset", -3, W, 1, -1, 2, Some(sg::mset)),
            cmd!("msetnx", -3, W, 1, -1, 2, Some(sg::msetnx)),
            cmd!("incr", 2, WF, 1, 1, 1, Some(sg::incr)),
            cmd!("decr", 2, WF, 1, 1, 1, Some(sg::decr)),
            cmd!("incrby", 3, WF, 1, 1, 1, Some(sg::incrby)),
            cmd!("decrby", 3, WF, 1, 1, 1, Some(sg::decrby)),
            cmd!("incrbyfloat", 3, WF, 1, 1, 1, Some(sg::incrbyfloat)),
            cmd!("append", 3, WF, 1, 1, 1, Some(sg::append)),
            cmd!("strlen", 2, RF, 1, 1, 1, Some(sg::strlen)),
            cmd!("getrange", 4, RO, 1, 1, 1, Some(sg::getrange)),
            cmd!("substr", 4, RO, 1, 1, 1, Some(sg::getrange)),
            cmd!("setrange", 4, W, 1, 1, 1, Some(sg::setrange)),
            cmd!("getdel", 2, WF, 1, 1, 1, Some(sg::getdel)),
            cmd!("getex", -2, WF, 1, 1, 1, Some(sg::getex)),
            // keys
            cmd!("del", -2, W, 1, -1, 1, Some(k::del)),
            cmd!("unlink", -2, WF, 1, -1, 1, Some(k::del)),
            cmd!("exists", -2, RF, 1, -1, 1, Some(k::exists)),
            cmd!("touch", -2, RF, 1, -1, 1, Some(k::exists)),
            cmd!("type", 2, RF, 1, 1, 1, Some(k::type_)),
            cmd!("rename", 3, W, 1, 2, 1, Some(k::rename)),
            cmd!("renamenx", 3, WF, 1, 2, 1, Some(k::renamenx)),
            cmd!("copy", -3, W, 1, 2, 1, Some(k::copy)),
            cmd!("move", 3, WF, 1, 1, 1, Some(k::move_)),
            cmd!("expire", -3, WF, 1, 1, 1, Some(k::expire)),
            cmd!("pexpire", -3, WF, 1, 1, 1, Some(k::pexpire)),
            cmd!("expireat", -3, WF, 1, 1, 1, Some(k::expireat)),
            cmd!("pexpireat", -3, WF, 1, 1, 1, Some(k::pexpireat)),
            cmd!("ttl", 2, RF, 1, 1, 1, Some(k::ttl)),
            cmd!("pttl", 2, RF, 1, 1, 1, Some(k::pttl)),
            cmd!("expiretime", 2, RF, 1, 1, 1, Some(k::expiretime)),
            cmd!("pexpiretime", 2, RF, 1, 1, 1, Some(k::pexpiretime)),
            cmd!("persist", 2, WF, 1, 1, 1, Some(k::persist)),
            cmd!("keys", 2, RO, 0, 0, 0, Some(k::keys)),
            cmd!("scan", -2, RO, 0, 0, 0, Some(k::scan)),
            cmd!("randomkey", 1, RO, 0, 0, 0, Some(k::randomkey)),
            // hashes
            cmd!("hset", -4, WF, 1, 1, 1, Some(h::hset)),
            cmd!("hmset", -4, WF, 1, 1, 1, Some(h::hmset)),
            cmd!("hsetnx", 4, WF, 1, 1, 1, Some(h::hsetnx)),
            cmd!("hget", 3, RF, 1, 1, 1, Some(h::hget)),
            cmd!("hmget", -3, RF, 1, 1, 1, Some(h::hmget)),
            cmd!("hgetall", 2, RO, 1, 1, 1, Some(h::hgetall)),
            cmd!("hdel", -3, WF, 1, 1, 1, Some(h::hdel)),
            cmd!("hexists", 3, RF, 1, 1, 1, Some(h::hexists)),
            cmd!("hincrby", 4, WF, 1, 1, 1, Some(h::hincrby)),
            cmd!("hincrbyfloat", 4, WF, 1, 1, 1, Some(h::hincrbyfloat)),
            cmd!("hkeys", 2, RO, 1, 1, 1, Some(h::hkeys)),
            cmd!("hvals", 2, RO, 1, 1, 1, Some(h::hvals)),
            cmd!("hlen", 2, RF, 1, 1, 1, Some(h::hlen)),
            cmd!("hstrlen", 3, RF, 1, 1, 1, Some(h::hstrlen)),
            cmd!("hscan", -3, RO, 1, 1, 1, Some(h::hscan)),
            cmd!("hrandfield", -2, RO, 1, 1, 1, Some(h::hrandfield)),
            // lists
            cmd!("lpush", -3, WF, 1, 1, 1, Some(l::lpush)),
            cmd!("rpush", -3, WF, 1, 1, 1, Some(l::rpush)),
            cmd!("lpushx", -3, WF, 1, 1, 1, Some(l::lpushx)),
            cmd!("rpushx", -3, WF, 1, 1, 1, Some(l::rpushx)),
            cmd!("lpop", -2, WF, 1, 1, 1, Some(l::lpop)),
            cmd!("rpop", -2, WF, 1, 1, 1, Some(l::rpop)),
            cmd!("lrange", 4, RO, 1, 1, 1, Some(l::lrange)),
            cmd!("llen", 2, RF, 1, 1, 1, Some(l::llen)),
            cmd!("lindex", 3, RO, 1, 1, 1, Some(l::lindex)),
            cmd!("lset", 4, W, 1, 1, 1, Some(l::lset)),
            cmd!("lrem", 4, W, 1, 1, 1, Some(l::lrem)),
            cmd!("ltrim", 4, W, 1, 1, 1, Some(l::ltrim)),
            cmd!("linsert", 5, W, 1, 1, 1, Some(l::linsert)),
            cmd!("lpos", -3, RO, 1, 1, 1, Some(l::lpos)),
            cmd!("lmove", 5, W, 1, 2, 1, Some(l::lmove)),
            cmd!("rpoplpush", 3, W, 1, 2, 1, Some(l::rpoplpush)),
            cmd!("blpop", -3, W | BLOCKING | SP, 1, -2, 1, None),
            cmd!("brpop", -3, W | BLOCKING | SP, 1, -2, 1, None),
            cmd!("blmove", 6, W | BLOCKING | SP, 1, 2, 1, None),
            cmd!("brpoplpush", 4, W | BLOCKING | SP, 1, 2, 1, None),
            // sets
            cmd!("sadd", -3, WF, 1, 1, 1, Some(st::sadd)),
            cmd!("srem", -3, WF, 1, 1, 1, Some(st::srem)),
            cmd!("smembers", 2, RO, 1, 1, 1, Some(st::smembers)),
            cmd!("sismember", 3, RF, 1, 1, 1, Some(st::sismember)),
            cmd!("smismember", -3, RF, 1, 1, 1, Some(st::smismember)),
            cmd!("scard", 2, RF, 1, 1, 1, Some(st::scard)),
            cmd!("spop", -2, WF, 1, 1, 1, Some(st::spop)),
            cmd!("srandmember", -2, RO, 1, 1, 1, Some(st::srandmember)),
            cmd!("sinter", -2, RO, 1, -1, 1, Some(st::sinter)),
            cmd!("sunion", -2, RO, 1, -1, 1, Some(st::sunion)),
            cmd!("sdiff", -2, RO, 1, -1, 1, Some(st::sdiff)),
            cmd!("sinterstore", -3, W, 1, -1, 1, Some(st::sinterstore)),
            cmd!("sunionstore", -3, W, 1, -1, 1, Some(st::sunionstore)),
            cmd!("sdiffstore", -3, W, 1, -1, 1, Some(st::sdiffstore)),
            cmd!("smove", 4, WF, 1, 2, 1, Some(st::smove)),
            cmd!("sscan", -3, RO, 1, 1, 1, Some(st::sscan)),
            // sorted sets
            cmd!("zadd", -4, WF, 1, 1, 1, Some(z::zadd)),
            cmd!("zincrby", 4, WF, 1, 1, 1, Some(z::zincrby)),
            cmd!("zrem", -3, WF, 1, 1, 1, Some(z::zrem)),
            cmd!("zcard", 2, RF, 1, 1, 1, Some(z::zcard)),
            cmd!("zscore", 3, RF, 1, 1, 1, Some(z::zscore)),
            cmd!("zmscore", -3, RF, 1, 1, 1, Some(z::zmscore)),
            cmd!("zrank", -3, RF, 1, 1, 1, Some(z::zrank)),
            cmd!("zrevrank", -3, RF, 1, 1, 1, Some(z::zrevrank)),
            cmd!("zcount", 4, RF, 1, 1, 1, Some(z::zcount)),
            cmd!("zlexcount", 4, RF, 1, 1, 1, Some(z::zlexcount)),
            cmd!("zrange", -4, RO, 1, 1, 1, Some(z::zrange)),
            cmd!("zrevrange", -4, RO, 1, 1, 1, Some(z::zrevrange)),
            cmd!("zrangebyscore", -4, RO, 1, 1, 1, Some(z::zrangebyscore)),
            cmd!(
                "zrevrangebyscore",
                -4,
                RO,
                1,
                1,
                1,
                Some(z::zrevrangebyscore)
            ),
            cmd!("zrangebylex", -4, RO, 1, 1, 1, Some(z::zrangebylex)),
            cmd!("zrevrangebylex", -4, RO, 1, 1, 1, Some(z::zrevrangebylex)),
            cmd!("zpopmin", -2, WF, 1, 1, 1, Some(z::zpopmin)),
            cmd!("zpopmax", -2, WF, 1, 1, 1, Some(z::zpopmax)),
            cmd!("zremrangebyscore", 4, W, 1, 1, 1, Some(z::zremrangebyscore)),
            cmd!("zremrangebyrank", 4, W, 1, 1, 1, Some(z::zremrangebyrank)),
            cmd!("zscan", -3, RO, 1, 1, 1, Some(z::zscan)),
        ];
        defs.into_iter().map(|d| (d.name, d)).collect()
    })
}

// ------------------------------------------------------------ errors

pub fn wrongtype() -> Reply {
    Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value")
}

pub fn not_int() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}

pub fn not_float() -> Reply {
    Reply::err("ERR value is not a valid float")
}

pub fn syntax() -> Reply {
    Reply::err("ERR syntax error")
}

pub fn no_such_key() -> Reply {
    Reply::err("ERR no such key")
}

pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        clip(sub),
        cmd.to_ascii_uppercase()
    ))
}

pub fn wrong_args(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

/// An argument as text for an error message (Redis clips at 128 bytes).
pub fn clip(b: &[u8]) -> String {
    let b = &b[..b.len().min(128)];
    String::from_utf8_lossy(b).into_owned()
}

// ------------------------------------------------------------ arguments

pub fn int(b: &[u8]) -> Result<i64, Reply> {
    parse_i64(b).ok_or_else(not_int)
}

/// A count that must not be negative (LPOP, SPOP, …).
pub fn positive(b: &[u8]) -> Result<usize, Reply> {
    let n = int(b)?;
    if n < 0 {
        return Err(Reply::err("ERR value is out of range, must be positive"));
    }
    Ok(n as usize)
}

/// Redis's `strtold`-based float parsing: `inf`, `-inf`, `1e3`; no NaN,
/// no surrounding blanks.
pub fn parse_float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        other => other.parse::<f64>().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

pub fn float(b: &[u8]) -> Result<f64, Reply> {
    parse_float(b).ok_or_else(not_float)
}

pub fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Redis's start/stop normalisation for LRANGE, ZRANGE, GETRANGE:
/// the inclusive index range, or `None` when empty.
pub fn range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { start + len } else { start };
    let mut e = if stop < 0 { stop + len } else { stop };
    if s < 0 {
        s = 0;
    }
    if s > e || s >= len {
        return None;
    }
    if e >= len {
        e = len - 1;
    }
    Some((s as usize, e as usize))
}

// ------------------------------------------------------------ typed access

macro_rules! typed {
    ($get:ident, $create:ident, $variant:ident, $t:ty, $new:expr) => {
        /// The key's value if it holds this type, `None` if absent,
        /// WRONGTYPE otherwise.
        pub fn $get<'a>(db: &'a mut Db, key: &[u8]) -> Result<Option<&'a mut $t>, Reply> {
            match db.get_mut(key) {
                None => Ok(None),
                Some(e) => match &mut e.value {
                    Value::$variant(v) => Ok(Some(v)),
                    _ => Err(wrongtype()),
                },
            }
        }

        /// The key's value, created empty when absent.
        pub fn $create<'a>(db: &'a mut Db, key: &Bytes) -> Result<&'a mut $t, Reply> {
            if !db.check(key) {
                db.set(key.clone(), $new);
            }
            match db.map.get_mut(key).map(|e| &mut e.value) {
                Some(Value::$variant(v)) => Ok(v),
                _ => Err(wrongtype()),
            }
        }
    };
}

typed!(
    get_hash,
    hash_or_new,
    Hash,
    indexmap::IndexMap<Bytes, Bytes>,
    Value::Hash(Default::default())
);
typed!(
    get_list,
    list_or_new,
    List,
    std::collections::VecDeque<Bytes>,
    Value::List(Default::default())
);
typed!(
    get_set,
    set_or_new,
    Set,
    indexmap::IndexSet<Bytes>,
    Value::Set(Default::default())
);
typed!(
    get_zset,
    zset_or_new,
    ZSet,
    super::state::ZSet,
    Value::ZSet(Default::default())
);

/// A string key's bytes, `None` if absent, WRONGTYPE otherwise.
pub fn get_str(db: &mut Db, key: &[u8]) -> Result<Option<Bytes>, Reply> {
    match db.get(key) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Str(s) => Ok(Some(s.clone())),
            _ => Err(wrongtype()),
        },
    }
}

/// A reply of bulk strings.
pub fn bulks<I: IntoIterator<Item = Bytes>>(it: I) -> Reply {
    Reply::Array(it.into_iter().map(Reply::Bulk).collect())
}

// ------------------------------------------------------------ SCAN cursors

/// A key's place in SCAN order: a hash that never is 0, so cursor 0 only
/// means "start" and "done". Ordering by hash keeps the SCAN guarantee
/// (every element present for the whole iteration is returned) while
/// keys come and go between calls.
pub fn scan_hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % ((1u64 << 63) - 1) + 1
}

/// Options of SCAN and its relatives.
pub struct ScanOpts {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_: Option<Bytes>,
    pub novalues: bool,
}

pub fn scan_opts(args: &[Bytes], allow_type: bool) -> Result<ScanOpts, Reply> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("ERR invalid cursor"))?;
    let mut o = ScanOpts {
        cursor,
        pattern: None,
        count: 10,
        type_: None,
        novalues: false,
    };
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        if eq(a, "match") && i + 1 < args.len() {
            o.pattern = Some(args[i + 1].clone());
            i += 2;
        } else if eq(a, "count") && i + 1 < args.len() {
            let n = int(&args[i + 1])?;
            if n < 1 {
                return Err(syntax());
            }
            o.count = n as usize;
            i += 2;
        } else if allow_type && eq(a, "type") && i + 1 < args.len() {
            o.type_ = Some(args[i + 1].clone());
            i += 2;
        } else if !allow_type && eq(a, "novalues") {
            o.novalues = true;
            i += 1;
        } else {
            return Err(syntax());
        }
    }
    Ok(o)
}

/// One page of a SCAN over `items` (name, payload): the next cursor and
/// the page, before MATCH filtering (as Redis filters after the walk).
pub fn scan_page<T: Clone>(
    items: Vec<(Bytes, T)>,
    cursor: u64,
    count: usize,
) -> (u64, Vec<(Bytes, T)>) {
    let mut v: Vec<(u64, Bytes, T)> = items
        .into_iter()
        .map(|(k, t)| (scan_hash(&k), k, t))
        .filter(|(h, _, _)| *h >= cursor)
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut take = count.min(v.len());
    while take > 0 && take < v.len() && v[take].0 == v[take - 1].0 {
        take += 1;
    }
    let next = v.get(take).map(|x| x.0).unwrap_or(0);
    v.truncate(take);
    (next, v.into_iter().map(|(_, k, t)| (k, t)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range(0, -1, 3), Some((0, 2)));
        assert_eq!(range(-100, 100, 3), Some((0, 2)));
        assert_eq!(range(2, 1, 3), None);
        assert_eq!(range(5, 10, 3), None);
    }

    #[test]
    fn scan_covers_everything() {
        let items: Vec<(Bytes, ())> = (0..100)
            .map(|i| (Bytes::from(format!("k{i}")), ()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut c = 0;
        loop {
            let (next, page) = scan_page(items.clone(), c, 7);
            seen.extend(page.into_iter().map(|(k, _)| k));
            if next == 0 {
                break;
            }
            c = next;
        }
        assert_eq!(seen.len(), 100);
    }
}
