//! One Lua 5.1 interpreter per Redis service, owned by the script thread:
//! the sandbox (Redis's libraries, the `redis` table, protected globals),
//! the compiled-script cache, and running a script or function with the
//! keyspace lock held. `redis.call` runs commands through the same table
//! and `exec_locked` as the data plane, as a client of its own (a SELECT
//! in a script does not move the caller).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, Variadic, VmState};
use sha1::{Digest, Sha1};

use super::super::commands::{self, table};
use super::super::resp::Reply;
use super::super::state::Store;
use super::super::{ConnState, RedisService, REDIS_VERSION};
use super::convert::{arg_bytes, error_table, lua_to_reply, reply_to_lua};
use super::functions::{self, Libraries, Registry};
use super::libs::{self, raise};
use super::Shared;

/// How many Lua instructions run between two looks at the kill flag and
/// the clock.
const HOOK_EVERY: u32 = 10_000;
/// Lua's own memory, at most (a share of `--memory-budget` when smaller).
const MAX_LUA_MEMORY: usize = 256 << 20;

/// What a run may do, from the command (`EVAL_RO`, `FCALL_RO`) and the
/// script's flags.
#[derive(Clone, Copy, Default)]
pub struct Limits {
    pub read_only: bool,
    pub allow_oom: bool,
}

/// The borrowed world a run works in.
pub struct Caller<'a> {
    pub svc: &'a RedisService,
    pub store: &'a mut Store,
    pub conn: &'a mut ConnState,
}

pub struct Vm {
    lua: Lua,
    /// Lua's memory limit.
    limit: usize,
    runner: Function,
    /// `EVAL` scripts by SHA1: compiled, and the body (for its flags).
    scripts: HashMap<String, (Function, Bytes)>,
    /// RESP version `redis.call` replies are converted from (`setresp`).
    resp3: Rc<Cell<bool>>,
    /// FUNCTION LOAD's libraries.
    pub libraries: Libraries,
    /// Where `redis.register_function` collects during a load.
    registry: Registry,
    /// The prelude's helpers for libraries (see prelude.lua).
    host: Table,
}

pub fn sha1_hex(body: &[u8]) -> String {
    let digest = Sha1::digest(body);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn srand48(seed: i64) -> u64 {
    ((seed as u32 as u64) << 16) | 0x330e
}

pub(super) fn lrand48(state: &Cell<u64>) -> i64 {
    let x = (state.get().wrapping_mul(0x5_deec_e66d).wrapping_add(0xb)) & ((1 << 48) - 1);
    state.set(x);
    (x >> 17) as i64
}

impl Vm {
    pub fn new(shared: Arc<Shared>) -> mlua::Result<Vm> {
        // The debug library is for the prelude's error handler (source and
        // line of an error), as Redis loads it; it is why this is unsafe
        // in mlua's terms.
        let lua = unsafe {
            Lua::unsafe_new_with(
                StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::DEBUG,
                LuaOptions::new(),
            )
        };
        let limit = crate::budget::limit().map_or(MAX_LUA_MEMORY, |b| (b / 4).min(MAX_LUA_MEMORY));
        let _ = lua.set_memory_limit(limit);
        let resp3 = Rc::new(Cell::new(false));
        let registry: Registry = Rc::default();
        let host = super::host::table(&lua, &shared, &resp3, &registry)?;
        let prelude = include_str!("prelude.lua");
        let runner: Function = lua.load(prelude).set_name("=meshwrap").call(host.clone())?;
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| match shared.stop_message() {
                Some(msg) => Err(mlua::Error::RuntimeError(msg)),
                None => Ok(VmState::Continue),
            },
        )?;
        Ok(Vm {
            lua,
            limit,
            runner,
            scripts: HashMap::new(),
            resp3,
            libraries: Libraries::default(),
            registry,
            host,
        })
    }

    /// Compiles and caches a script body (SCRIPT LOAD, EVAL); `Err` is
    /// Redis's compile error.
    pub fn load(&mut self, body: &[u8]) -> Result<String, Reply> {
        let sha = sha1_hex(body);
        if !self.scripts.contains_key(&sha) {
            self.collect();
            let code = strip_shebang(body);
            let f = self
                .lua
                .load(code)
                .set_name("@user_script")
                .into_function()
                .map_err(|e| {
                    Reply::Error(format!(
                        "ERR Error compiling script (new function): {}",
                        lua_message(&e)
                    ))
                })?;
            // The read-only view of the globals (see prelude.lua).
            let env = self
                .host
                .raw_get::<Table>("env")
                .and_then(|env| f.set_environment(env));
            if let Err(e) = env {
                return Err(Reply::Error(format!("ERR {}", lua_message(&e))));
            }
            self.scripts
                .insert(sha.clone(), (f, Bytes::copy_from_slice(body)));
        }
        Ok(sha)
    }

    /// A full garbage collection once Lua holds half its limit: Lua 5.1
    /// does not collect when an allocation fails, so what a failed script
    /// left behind would otherwise make every later one fail too.
    fn collect(&self) {
        if self.lua.used_memory() > self.limit / 2 {
            let _ = self.lua.gc_collect();
        }
    }

    /// A cached script's body, by lowercase SHA1.
    pub fn source(&self, sha: &str) -> Option<&[u8]> {
        self.scripts.get(sha).map(|(_, body)| &body[..])
    }

    /// SCRIPT FLUSH: the cached scripts go (functions stay, as they live
    /// in an interpreter of their own in Redis).
    pub fn flush_scripts(&mut self) {
        self.scripts.clear();
        let _ = self.lua.gc_collect();
    }

    /// Runs a cached script with KEYS and ARGV set, as EVAL/EVALSHA do.
    pub fn eval(
        &mut self,
        c: Caller,
        sha: &str,
        keys: Vec<Bytes>,
        argv: Vec<Bytes>,
        limits: Limits,
        shared: &Shared,
    ) -> Reply {
        let Some(f) = self.scripts.get(sha).map(|(f, _)| f.clone()) else {
            return Reply::err(super::NOSCRIPT);
        };
        let set = || -> mlua::Result<()> {
            let (k, a) = functions::call_tables(&self.lua, &keys, &argv)?;
            let g = self.lua.globals();
            g.raw_set("KEYS", k)?;
            g.raw_set("ARGV", a)
        };
        if let Err(e) = set() {
            return Reply::Error(format!("ERR {}", lua_message(&e)));
        }
        self.run(c, f, sha, limits, shared)
    }

    /// FUNCTION LOAD: runs the library's code, which registers its
    /// functions; the library replaces one of the same name only with
    /// REPLACE, and a failed load changes nothing.
    pub fn function_load(&mut self, code: &Bytes, replace: bool, shared: &Shared) -> Reply {
        let name = match functions::metadata(code) {
            Ok(n) => n,
            Err(e) => return e,
        };
        if !replace && self.libraries.libs.contains_key(&name) {
            return Reply::Error(format!("ERR Library '{name}' already exists"));
        }
        self.collect();
        let f = match self
            .lua
            .load(strip_shebang(code))
            .set_name("@user_function")
            .into_function()
        {
            Ok(f) => f,
            Err(e) => {
                return Reply::Error(format!("ERR Error compiling function: {}", lua_message(&e)))
            }
        };
        let loaded = (|| -> mlua::Result<(bool, Value, Table)> {
            let env: Table = self.host.get::<Function>("library_env")?.call(())?;
            f.set_environment(env.clone())?;
            *self.registry.borrow_mut() = Some(Vec::new());
            shared.load_started();
            let (ok, v): (bool, Value) = self.runner.call(f)?;
            Ok((ok, v, env))
        })();
        shared.load_ended();
        let registered = self.registry.borrow_mut().take().unwrap_or_default();
        let env = match loaded {
            Ok((true, _, env)) => env,
            Ok((false, v, _)) => {
                let msg = match (shared.load_timed_out(), &v) {
                    (true, _) => "ERR FUNCTION LOAD timeout".to_string(),
                    (false, Value::Table(t)) => t
                        .raw_get::<Option<String>>("err")
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "ERR unknown error".into()),
                    (false, other) => format!("ERR {}", other.to_string().unwrap_or_default()),
                };
                return Reply::Error(format!("ERR Error registering functions: {msg}"));
            }
            Err(e) => {
                return Reply::Error(format!(
                    "ERR Error registering functions: {}",
                    lua_message(&e)
                ))
            }
        };
        if registered.is_empty() {
            return Reply::err("ERR No functions registered");
        }
        for f in &registered {
            let taken = self
                .libraries
                .libs
                .iter()
                .filter(|(lib, _)| **lib != name)
                .any(|(_, l)| l.functions.iter().any(|g| g.name == f.name));
            if taken {
                return Reply::Error(format!("ERR Function {} already exists", f.name));
            }
        }
        if let Err(e) = self
            .host
            .get::<Function>("activate")
            .and_then(|a| a.call::<()>(env))
        {
            return Reply::Error(format!("ERR {}", lua_message(&e)));
        }
        self.libraries.libs.insert(
            name.clone(),
            functions::Library {
                code: code.clone(),
                functions: registered,
            },
        );
        Reply::bulk(name)
    }

    /// FCALL and FCALL_RO.
    pub fn fcall(
        &mut self,
        c: Caller,
        name: &str,
        keys: &[Bytes],
        args: &[Bytes],
        read_only: bool,
        shared: &Shared,
    ) -> Reply {
        let Some(func) = self.libraries.find(name) else {
            return Reply::err("ERR Function not found");
        };
        let mut limits = func.limits();
        if read_only {
            if !limits.read_only {
                return Reply::err(super::WRITE_FLAG_RO);
            }
            limits.read_only = true;
        }
        if !limits.allow_oom && crate::budget::over() {
            return Reply::err(super::NO_ALLOW_OOM);
        }
        let (fname, callback) = (func.name.clone(), func.callback.clone());
        let bound = functions::call_tables(&self.lua, keys, args).and_then(|(k, a)| {
            self.host
                .get::<Function>("bind")?
                .call::<Function>((callback, k, a))
        });
        match bound {
            Ok(f) => self.run(c, f, &fname, limits, shared),
            Err(e) => Reply::Error(format!("ERR {}", lua_message(&e))),
        }
    }

    /// Runs `f` under the error handler and turns what it returns or
    /// raises into the caller's reply.
    fn run(
        &mut self,
        c: Caller,
        f: Function,
        name: &str,
        limits: Limits,
        shared: &Shared,
    ) -> Reply {
        self.resp3.set(false);
        let mut client = c.conn.script_client();
        let (svc, store) = (c.svc, c.store);
        let resp3 = self.resp3.clone();
        let redis: Table = match self.host.raw_get("redis") {
            Ok(t) => t,
            Err(e) => return Reply::Error(format!("ERR {}", lua_message(&e))),
        };
        let _ = self.lua.set_named_registry_value(libs::RAISED, Value::Nil);
        let client = std::cell::RefCell::new(&mut client);
        let store = std::cell::RefCell::new(store);
        let outcome = self.lua.scope(|scope| {
            // One body for both: `redis.call` raises a command's error,
            // `redis.pcall` returns it; errors about the call itself are
            // raised by both, as in Redis.
            let make = |raising: bool| {
                let (resp3, client, store) = (&resp3, &client, &store);
                scope.create_function(move |lua, args: Variadic<Value>| {
                    let mut store = store.borrow_mut();
                    let mut client = client.borrow_mut();
                    match call(svc, &mut store, &mut client, &args, limits, shared) {
                        Ok(Reply::Error(e)) if raising => raise(lua, error_table(lua, &e)?),
                        Ok(r) => reply_to_lua(lua, r, resp3.get()),
                        Err(e) => raise(lua, error_table(lua, &e)?),
                    }
                })
            };
            redis.raw_set("call", make(true)?)?;
            redis.raw_set("pcall", make(false)?)?;
            let (ok, v): (bool, Value) = self.runner.call(f)?;
            Ok(if ok {
                lua_to_reply(&v, resp3.get())
            } else {
                error_reply(&v, name, shared)
            })
        });
        let _ = redis.raw_set("call", Value::Nil);
        let _ = redis.raw_set("pcall", Value::Nil);
        self.collect();
        outcome.unwrap_or_else(|e| match shared.stop_message() {
            Some(msg) => Reply::Error(msg),
            None => Reply::Error(format!(
                "ERR Error running script {name}: {}",
                lua_message(&e)
            )),
        })
    }
}

/// A failed run's reply: Redis's `-<err> script: <name>, on <source>:<line>.`
fn error_reply(v: &Value, name: &str, shared: &Shared) -> Reply {
    let stop = shared.stop_message();
    match v {
        Value::Table(t) => {
            let msg = match (stop, t.raw_get::<Value>("err")) {
                (Some(m), _) => m,
                (None, Ok(Value::String(s))) => s.to_string_lossy(),
                (None, _) => "ERR unknown error".to_string(),
            };
            let source = t.raw_get::<Option<String>>("source").ok().flatten();
            let line = t.raw_get::<Option<i64>>("line").ok().flatten();
            match (source, line) {
                (Some(s), Some(l)) => Reply::Error(format!("{msg} script: {name}, on {s}:{l}.")),
                _ => Reply::Error(msg),
            }
        }
        _ if stop.is_some() => Reply::Error(stop.unwrap_or_default()),
        Value::String(s) => {
            let text = s.to_string_lossy();
            let clipped: String = text.chars().take(100).collect();
            Reply::Error(format!("ERR Error running script {name}, {clipped}"))
        }
        _ => Reply::Error(format!(
            "ERR Error running script {name}, execution failure"
        )),
    }
}

/// One `redis.call`/`redis.pcall`: `Ok` is the command's reply (an error
/// reply included), `Err` an error about the call itself, raised even by
/// `pcall` when Redis raises it.
fn call(
    svc: &RedisService,
    store: &mut Store,
    client: &mut ConnState,
    args: &[Value],
    limits: Limits,
    shared: &Shared,
) -> Result<Reply, String> {
    if args.is_empty() {
        return Err("ERR Please specify at least one argument for this redis lib call".into());
    }
    let mut argv = Vec::with_capacity(args.len());
    for a in args {
        match arg_bytes(a) {
            Some(b) => argv.push(b),
            None => {
                return Err(
                    "ERR Lua redis lib command arguments must be strings or integers".into(),
                )
            }
        }
    }
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
    let Some(def) = table().get(name.as_str()) else {
        return Ok(Reply::err("ERR Unknown Redis command called from script"));
    };
    if !def.arity_ok(argv.len()) {
        return Ok(Reply::err(
            "ERR Wrong number of args calling Redis command from script",
        ));
    }
    if def.flags & commands::NOSCRIPT != 0 {
        return Ok(Reply::err(
            "ERR This Redis command is not allowed from script",
        ));
    }
    if def.flags & commands::WRITE != 0 && limits.read_only {
        return Ok(Reply::err(
            "ERR Write commands are not allowed from read-only scripts.",
        ));
    }
    if def.flags & commands::DENYOOM != 0 && !limits.allow_oom && crate::budget::over() {
        return Ok(Reply::err(
            "OOM command not allowed when used memory > 'maxmemory'.",
        ));
    }
    let reply = svc.exec_locked(store, client, def, &argv);
    if def.flags & commands::WRITE != 0 && !reply.is_error() {
        shared.wrote();
    }
    Ok(reply)
}

/// Redis's `#!lua flags=...` line is not Lua: it is dropped before
/// compiling, and its newline kept so line numbers stay as written.
fn strip_shebang(body: &[u8]) -> &[u8] {
    if body.starts_with(b"#!") {
        match body.iter().position(|b| *b == b'\n') {
            Some(nl) => &body[nl..],
            None => b"",
        }
    } else {
        body
    }
}

/// An mlua error as Lua would print it (no "runtime error:" or
/// "syntax error:" wrapping).
pub fn lua_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => m.clone(),
        mlua::Error::CallbackError { cause, .. } => lua_message(cause),
        other => other.to_string(),
    }
}

pub(super) fn version_num() -> i64 {
    REDIS_VERSION
        .split('.')
        .fold(0, |acc, part| acc * 256 + part.parse::<i64>().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::{lrand48, sha1_hex, srand48, version_num};
    use std::cell::Cell;

    #[test]
    fn sha1_of_a_script_is_lowercase_hex() {
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    #[test]
    fn rand48_follows_the_libc_sequence() {
        // drand48's first value after srand48(0): 0x1e2b_e58b_1dfb >> 17.
        let s = Cell::new(srand48(0));
        let first = lrand48(&s);
        assert_eq!(
            first,
            ((0x5_deec_e66d_u64 * 0x330e + 0xb) & ((1 << 48) - 1)) as i64 >> 17
        );
    }

    #[test]
    fn version_number_is_hex_per_part() {
        assert_eq!(version_num(), 0x070204);
    }
}
