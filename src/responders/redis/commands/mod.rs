//! The command table (names, arities, flags and key positions as Redis
//! declares them, so `COMMAND` and argument checks agree with a real
//! server), the context a command runs in, and re-exports of the helpers
//! every command shares: Redis's error texts (`errors`), argument parsing
//! (`args`), typed access to keys (`typed`), SCAN cursors (`scan`) and
//! glob matching (`rules::glob`).

pub mod args;
pub mod errors;
pub mod hashes;
pub mod keys;
pub mod lists;
pub mod scan;
pub mod server;
pub mod sets;
pub mod streams;
pub mod strings;
pub mod typed;
pub mod zsets;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;

use super::resp::Reply;
use super::state::{Db, Store};
use super::{ConnState, RedisService};

pub use args::{bulks, eq, float, int, parse_float, positive, range};
pub use errors::{
    clip, no_such_key, not_float, not_int, syntax, unknown_subcommand, wrong_args, wrongtype,
};
pub use scan::{scan_hash, scan_opts, scan_page, ScanOpts};
pub use typed::{
    get_hash, get_list, get_set, get_str, get_zset, hash_or_new, list_or_new, set_or_new,
    zset_or_new,
};

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
/// Refused while the process is past `--memory-budget` (Redis's
/// `denyoom`: the commands that may make the keyspace bigger).
pub const DENYOOM: u16 = 512;
/// Runs on the service's script thread (EVAL, SCRIPT, FCALL, FUNCTION):
/// see `scripting`.
pub const SCRIPTING: u16 = 1024;

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
            (DENYOOM, "denyoom"),
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
        use streams as xs;
        use strings as sg;
        use zsets as z;
        let defs = vec![
            // connection and server
            cmd!("ping", -1, FAST | SP, 0, 0, 0, None),
            cmd!("echo", 2, FAST, 0, 0, 0, Some(s::echo)),
            cmd!("hello", -1, FAST | NOAUTH | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("auth", -2, FAST | NOAUTH | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("client", -2, SP, 0, 0, 0, None),
            cmd!("select", 2, FAST | SP, 0, 0, 0, None),
            cmd!("quit", -1, FAST | NOAUTH | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("reset", 1, FAST | NOAUTH | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("info", -1, 0, 0, 0, 0, Some(s::info)),
            cmd!("command", -1, 0, 0, 0, 0, Some(s::command)),
            cmd!("config", -2, ADMIN | NOSCRIPT, 0, 0, 0, Some(s::config)),
            cmd!("time", 1, FAST, 0, 0, 0, Some(s::time)),
            cmd!("dbsize", 1, RF, 0, 0, 0, Some(s::dbsize)),
            cmd!("flushdb", -1, W, 0, 0, 0, Some(s::flushdb)),
            cmd!("flushall", -1, W, 0, 0, 0, Some(s::flushall)),
            cmd!("swapdb", 3, WF, 0, 0, 0, Some(s::swapdb)),
            cmd!("lastsave", 1, FAST, 0, 0, 0, Some(s::lastsave)),
            cmd!("save", 1, ADMIN | NOSCRIPT, 0, 0, 0, Some(s::ok)),
            cmd!("bgsave", -1, ADMIN | NOSCRIPT, 0, 0, 0, Some(s::bgsave)),
            cmd!("function", -2, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("fcall", -3, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("fcall_ro", -3, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("script", -2, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("eval", -3, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("evalsha", -3, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("eval_ro", -3, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("evalsha_ro", -3, NOSCRIPT | SCRIPTING, 0, 0, 0, None),
            cmd!("wait", 3, 0, 0, 0, 0, Some(s::wait)),
            cmd!("role", 1, FAST, 0, 0, 0, Some(s::role)),
            cmd!("memory", -2, 0, 0, 0, 0, Some(s::memory)),
            cmd!("object", -2, RO, 0, 0, 0, Some(s::object)),
            cmd!("readonly", 1, FAST, 0, 0, 0, Some(s::ok)),
            cmd!("readwrite", 1, FAST, 0, 0, 0, Some(s::ok)),
            cmd!("multi", 1, FAST | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("exec", 1, SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("discard", 1, FAST | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("watch", -2, FAST | SP | NOSCRIPT, 1, -1, 1, None),
            cmd!("unwatch", 1, FAST | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("subscribe", -2, PUBSUB | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("psubscribe", -2, PUBSUB | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("unsubscribe", -1, PUBSUB | SP | NOSCRIPT, 0, 0, 0, None),
            cmd!("punsubscribe", -1, PUBSUB | SP | NOSCRIPT, 0, 0, 0, None),
            // streams
            cmd!("xadd", -5, W | DENYOOM, 1, 1, 1, Some(xs::xadd)),
            cmd!("xlen", 2, RF, 1, 1, 1, Some(xs::xlen)),
            cmd!("xrange", -4, RO, 1, 1, 1, Some(xs::xrange)),
            cmd!("xrevrange", -4, RO, 1, 1, 1, Some(xs::xrevrange)),
            cmd!("xdel", -3, WF, 1, 1, 1, Some(xs::xdel)),
            cmd!("xtrim", -4, W, 1, 1, 1, Some(xs::xtrim)),
            cmd!("xsetid", -3, WF | DENYOOM, 1, 1, 1, Some(xs::xsetid)),
            cmd!("xread", -4, RO | BLOCKING | SP, 0, 0, 0, None),
            cmd!("xreadgroup", -7, W | BLOCKING | SP, 0, 0, 0, None),
            cmd!("xgroup", -2, W | DENYOOM, 2, 2, 1, Some(xs::xgroup)),
            cmd!("xack", -4, WF, 1, 1, 1, Some(xs::xack)),
            cmd!("xpending", -3, RO, 1, 1, 1, Some(xs::xpending)),
            cmd!("xclaim", -6, WF, 1, 1, 1, Some(xs::xclaim)),
            cmd!("xautoclaim", -6, WF, 1, 1, 1, Some(xs::xautoclaim)),
            cmd!("xinfo", -2, RO, 2, 2, 1, Some(xs::xinfo)),
            cmd!("publish", 3, PUBSUB | FAST, 0, 0, 0, Some(s::publish)),
            cmd!("pubsub", -2, PUBSUB, 0, 0, 0, Some(s::pubsub)),
            // strings
            cmd!("get", 2, RF, 1, 1, 1, Some(sg::get)),
            cmd!("set", -3, W | DENYOOM, 1, 1, 1, Some(sg::set)),
            cmd!("setnx", 3, WF | DENYOOM, 1, 1, 1, Some(sg::setnx)),
            cmd!("setex", 4, W | DENYOOM, 1, 1, 1, Some(sg::setex)),
            cmd!("psetex", 4, W | DENYOOM, 1, 1, 1, Some(sg::psetex)),
            cmd!("getset", 3, WF | DENYOOM, 1, 1, 1, Some(sg::getset)),
            cmd!("mget", -2, RF, 1, -1, 1, Some(sg::mget)),
            cmd!("mset", -3, W | DENYOOM, 1, -1, 2, Some(sg::mset)),
            cmd!("msetnx", -3, W | DENYOOM, 1, -1, 2, Some(sg::msetnx)),
            cmd!("incr", 2, WF | DENYOOM, 1, 1, 1, Some(sg::incr)),
            cmd!("decr", 2, WF | DENYOOM, 1, 1, 1, Some(sg::decr)),
            cmd!("incrby", 3, WF | DENYOOM, 1, 1, 1, Some(sg::incrby)),
            cmd!("decrby", 3, WF | DENYOOM, 1, 1, 1, Some(sg::decrby)),
            cmd!(
                "incrbyfloat",
                3,
                WF | DENYOOM,
                1,
                1,
                1,
                Some(sg::incrbyfloat)
            ),
            cmd!("append", 3, WF | DENYOOM, 1, 1, 1, Some(sg::append)),
            cmd!("strlen", 2, RF, 1, 1, 1, Some(sg::strlen)),
            cmd!("getrange", 4, RO, 1, 1, 1, Some(sg::getrange)),
            cmd!("substr", 4, RO, 1, 1, 1, Some(sg::getrange)),
            cmd!("setrange", 4, W | DENYOOM, 1, 1, 1, Some(sg::setrange)),
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
            cmd!("copy", -3, W | DENYOOM, 1, 2, 1, Some(k::copy)),
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
            cmd!("hset", -4, WF | DENYOOM, 1, 1, 1, Some(h::hset)),
            cmd!("hmset", -4, WF | DENYOOM, 1, 1, 1, Some(h::hmset)),
            cmd!("hsetnx", 4, WF | DENYOOM, 1, 1, 1, Some(h::hsetnx)),
            cmd!("hget", 3, RF, 1, 1, 1, Some(h::hget)),
            cmd!("hmget", -3, RF, 1, 1, 1, Some(h::hmget)),
            cmd!("hgetall", 2, RO, 1, 1, 1, Some(h::hgetall)),
            cmd!("hdel", -3, WF, 1, 1, 1, Some(h::hdel)),
            cmd!("hexists", 3, RF, 1, 1, 1, Some(h::hexists)),
            cmd!("hincrby", 4, WF | DENYOOM, 1, 1, 1, Some(h::hincrby)),
            cmd!(
                "hincrbyfloat",
                4,
                WF | DENYOOM,
                1,
                1,
                1,
                Some(h::hincrbyfloat)
            ),
            cmd!("hkeys", 2, RO, 1, 1, 1, Some(h::hkeys)),
            cmd!("hvals", 2, RO, 1, 1, 1, Some(h::hvals)),
            cmd!("hlen", 2, RF, 1, 1, 1, Some(h::hlen)),
            cmd!("hstrlen", 3, RF, 1, 1, 1, Some(h::hstrlen)),
            cmd!("hscan", -3, RO, 1, 1, 1, Some(h::hscan)),
            cmd!("hrandfield", -2, RO, 1, 1, 1, Some(h::hrandfield)),
            // lists
            cmd!("lpush", -3, WF | DENYOOM, 1, 1, 1, Some(l::lpush)),
            cmd!("rpush", -3, WF | DENYOOM, 1, 1, 1, Some(l::rpush)),
            cmd!("lpushx", -3, WF | DENYOOM, 1, 1, 1, Some(l::lpushx)),
            cmd!("rpushx", -3, WF | DENYOOM, 1, 1, 1, Some(l::rpushx)),
            cmd!("lpop", -2, WF, 1, 1, 1, Some(l::lpop)),
            cmd!("rpop", -2, WF, 1, 1, 1, Some(l::rpop)),
            cmd!("lrange", 4, RO, 1, 1, 1, Some(l::lrange)),
            cmd!("llen", 2, RF, 1, 1, 1, Some(l::llen)),
            cmd!("lindex", 3, RO, 1, 1, 1, Some(l::lindex)),
            cmd!("lset", 4, W | DENYOOM, 1, 1, 1, Some(l::lset)),
            cmd!("lrem", 4, W, 1, 1, 1, Some(l::lrem)),
            cmd!("ltrim", 4, W, 1, 1, 1, Some(l::ltrim)),
            cmd!("linsert", 5, W | DENYOOM, 1, 1, 1, Some(l::linsert)),
            cmd!("lpos", -3, RO, 1, 1, 1, Some(l::lpos)),
            cmd!("lmove", 5, W | DENYOOM, 1, 2, 1, Some(l::lmove)),
            cmd!("rpoplpush", 3, W | DENYOOM, 1, 2, 1, Some(l::rpoplpush)),
            cmd!("blpop", -3, W | BLOCKING | SP, 1, -2, 1, None),
            cmd!("bzpopmin", -3, W | BLOCKING | SP, 1, -2, 1, None),
            cmd!("bzpopmax", -3, W | BLOCKING | SP, 1, -2, 1, None),
            cmd!("brpop", -3, W | BLOCKING | SP, 1, -2, 1, None),
            cmd!("blmove", 6, W | DENYOOM | BLOCKING | SP, 1, 2, 1, None),
            cmd!("brpoplpush", 4, W | DENYOOM | BLOCKING | SP, 1, 2, 1, None),
            // sets
            cmd!("sadd", -3, WF | DENYOOM, 1, 1, 1, Some(st::sadd)),
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
            cmd!(
                "sinterstore",
                -3,
                W | DENYOOM,
                1,
                -1,
                1,
                Some(st::sinterstore)
            ),
            cmd!(
                "sunionstore",
                -3,
                W | DENYOOM,
                1,
                -1,
                1,
                Some(st::sunionstore)
            ),
            cmd!(
                "sdiffstore",
                -3,
                W | DENYOOM,
                1,
                -1,
                1,
                Some(st::sdiffstore)
            ),
            cmd!("smove", 4, WF, 1, 2, 1, Some(st::smove)),
            cmd!("sscan", -3, RO, 1, 1, 1, Some(st::sscan)),
            // sorted sets
            cmd!("zadd", -4, WF | DENYOOM, 1, 1, 1, Some(z::zadd)),
            cmd!("zincrby", 4, WF | DENYOOM, 1, 1, 1, Some(z::zincrby)),
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

/// The most elements a reply that repeats picks (SRANDMEMBER and
/// HRANDFIELD with a negative count) may have: the data plane is one
/// thread, and a count a client chooses must not make it build gigabytes.
pub const MAX_REPEAT_REPLY: u64 = 1 << 20;

/// A negative count's number of picks, refused as Redis refuses it when it
/// is below `-LONG_MAX/2`, and above `MAX_REPEAT_REPLY`.
pub fn repeat_count(n: i64) -> Result<u64, Reply> {
    if n < -(i64::MAX / 2) {
        return Err(Reply::err("ERR value is out of range"));
    }
    let n = n.unsigned_abs();
    if n > MAX_REPEAT_REPLY {
        return Err(Reply::Error(format!(
            "ERR count {n} is over meshwrap's limit of {MAX_REPEAT_REPLY} elements for one reply"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    /// `expect:` entries are checked against the rules' list of command
    /// names; it must name exactly the commands this table answers.
    #[test]
    fn the_rules_know_every_command_of_the_table() {
        let mut table: Vec<&str> = super::table().keys().copied().collect();
        table.sort_unstable();
        let mut rules = crate::rules::redis_commands::COMMANDS.to_vec();
        rules.sort_unstable();
        assert_eq!(table, rules);
    }
}
