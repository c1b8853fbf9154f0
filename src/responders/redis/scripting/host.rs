//! The Rust side of the sandbox, as the prelude sees it (`host`): the
//! libraries, `redis.sha1hex`, `log`, `setresp`, `set_repl`,
//! `acl_check_cmd`, `register_function`, Redis's `math.random`, and the
//! raised-value and stop checks. `redis.call`/`pcall` are not here: they
//! borrow the keyspace, so `vm.rs` makes them for each run.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use mlua::{Lua, MultiValue, Table, Value, Variadic};

use super::super::commands::table as commands;
use super::super::REDIS_VERSION;
use super::convert::arg_bytes;
use super::functions::{self, Registry};
use super::libs::{self, fail};
use super::vm::{lrand48, sha1_hex, srand48, version_num};
use super::Shared;

pub fn table(
    lua: &Lua,
    shared: &Arc<Shared>,
    resp3: &Rc<Cell<bool>>,
    registry: &Registry,
) -> mlua::Result<Table> {
    // Redis's rand48 state for `math.random`: one sequence for the
    // service's whole run, as in Redis 7 (only `math.randomseed` resets it).
    let rand = Rc::new(Cell::new(srand48(0)));
    let host = lua.create_table()?;
    host.set(
        "take_raised",
        lua.create_function(|lua, ()| {
            let v: Value = lua.named_registry_value(libs::RAISED)?;
            lua.set_named_registry_value(libs::RAISED, Value::Nil)?;
            Ok(v)
        })?,
    )?;
    let libs_table = lua.create_table()?;
    for (name, lib) in libs::open_all(lua)? {
        libs_table.set(name, lib)?;
    }
    host.set("libs", libs_table)?;
    host.set("version", REDIS_VERSION)?;
    host.set("version_num", version_num())?;
    host.set(
        "sha1hex",
        lua.create_function(|lua, args: MultiValue| match args.iter().next() {
            Some(v) if args.len() == 1 => match arg_bytes(v) {
                Some(b) => Ok(MultiValue::from_vec(vec![Value::String(
                    lua.create_string(sha1_hex(&b))?,
                )])),
                None => fail(lua, "wrong number of arguments"),
            },
            _ => fail(lua, "wrong number of arguments"),
        })?,
    )?;
    host.set(
        "log",
        lua.create_function(|lua, args: MultiValue| {
            let args = args.into_vec();
            if args.len() < 2 {
                return fail(lua, "redis.log() requires two arguments or more.");
            }
            let level = match &args[0] {
                Value::Integer(i) => *i,
                Value::Number(n) => *n as i64,
                _ => return fail(lua, "First argument must be a number (log level)."),
            };
            if !(0..=3).contains(&level) {
                return fail(lua, "Invalid debug level.");
            }
            let text: Vec<String> = args[1..]
                .iter()
                .filter_map(arg_bytes)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect();
            tracing::debug!(target: "meshwrap::redis::script", level, "{}", text.join(" "));
            Ok(MultiValue::new())
        })?,
    )?;
    let r = resp3.clone();
    host.set(
        "setresp",
        lua.create_function(move |lua, args: MultiValue| {
            if args.len() != 1 {
                return fail(lua, "redis.setresp() requires one argument.");
            }
            match args.iter().next() {
                Some(Value::Integer(2)) => r.set(false),
                Some(Value::Integer(3)) => r.set(true),
                _ => return fail(lua, "RESP version must be 2 or 3."),
            }
            Ok(MultiValue::new())
        })?,
    )?;
    host.set(
        "set_repl",
        lua.create_function(|lua, args: MultiValue| match args.iter().next() {
            Some(Value::Integer(0..=3)) if args.len() == 1 => Ok(MultiValue::new()),
            Some(_) if args.len() == 1 => fail(
                lua,
                "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.",
            ),
            _ => fail(lua, "redis.set_repl() requires one argument."),
        })?,
    )?;
    host.set(
        "acl_check_cmd",
        lua.create_function(|lua, args: MultiValue| {
            let name = args
                .iter()
                .next()
                .and_then(arg_bytes)
                .map(|b| String::from_utf8_lossy(&b).to_ascii_lowercase());
            match name {
                Some(n) if commands().contains_key(n.as_str()) => {
                    Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
                }
                Some(_) => fail(lua, "Invalid command passed to redis.acl_check_cmd()"),
                None => fail(
                    lua,
                    "Please specify at least one argument for this redis lib call",
                ),
            }
        })?,
    )?;
    host.set(
        "register_function",
        functions::register_function(lua, registry.clone())?,
    )?;
    let st = rand.clone();
    host.set(
        "random",
        lua.create_function(move |lua, args: Variadic<f64>| {
            let max = i32::MAX as i64;
            let r = (lrand48(&st) % max) as f64 / max as f64;
            let v = match args.as_slice() {
                [] => r,
                [u] if *u >= 1.0 => (r * u.floor()).floor() + 1.0,
                [l, u] if l.floor() <= u.floor() => {
                    (r * (u.floor() - l.floor() + 1.0)).floor() + l.floor()
                }
                [_] | [_, _] => {
                    return fail(lua, "bad argument #1 to 'random' (interval is empty)")
                }
                _ => return fail(lua, "wrong number of arguments"),
            };
            Ok(MultiValue::from_vec(vec![Value::Number(v)]))
        })?,
    )?;
    let st = rand.clone();
    host.set(
        "randomseed",
        lua.create_function(move |_, seed: f64| {
            st.set(srand48(seed as i64));
            Ok(MultiValue::new())
        })?,
    )?;
    let s = shared.clone();
    host.set(
        "stopping",
        lua.create_function(move |_, ()| Ok(s.stopping()))?,
    )?;
    Ok(host)
}
