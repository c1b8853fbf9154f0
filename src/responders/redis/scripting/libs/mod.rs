//! The libraries Redis gives scripts beside Lua's own: `cjson`, `cmsgpack`,
//! `bit` and `struct`, written in Rust against their documented behaviour.
//!
//! Errors meant for the script (bad JSON, a bad format string, a failed
//! `redis.call`) are raised with `raise`: mlua can only raise a Rust error
//! (a userdata), so the Lua value Redis would raise (a message, an error
//! table) is parked in the registry, and the prelude's error handler and
//! `pcall` take it back in its place. The functions stay C functions to
//! Lua, so a `return redis.call(...)` keeps the script's frame (and line)
//! for the error, as in Redis.

pub mod bit;
pub mod cjson;
pub mod cmsgpack;
pub mod structlib;

use mlua::{IntoLua, Lua, MultiValue, Result, Value};

/// A bound on one encoded result (cjson, cmsgpack, struct): tables that
/// repeat one big string many times would otherwise grow outside Lua's
/// memory limit.
pub const MAX_OUT: usize = 256 << 20;

/// At most this many values from one unpack (Lua 5.1's C stack limit,
/// LUAI_MAXCSTACK): each is a Lua stack slot.
pub const MAX_RESULTS: usize = 8000;

/// Where a raised value waits for the handler.
pub const RAISED: &str = "meshwrap.raised";

/// The Rust error that stands for a value parked under `RAISED`.
#[derive(Debug, thiserror::Error)]
#[error("meshwrap: raised")]
pub struct Raised;

/// Raises `v` in the script, as `error(v)` would.
pub fn raise<T>(lua: &Lua, v: impl IntoLua) -> Result<T> {
    let v = v.into_lua(lua)?;
    lua.set_named_registry_value(RAISED, v)?;
    Err(mlua::Error::external(Raised))
}

/// A script-facing error message, raised as a plain string (what
/// `luaL_error` in a C library raises).
pub fn fail(lua: &Lua, msg: impl AsRef<str>) -> Result<MultiValue> {
    raise(lua, Value::String(lua.create_string(msg.as_ref())?))
}

/// Every library, by the global name Redis gives it.
pub fn open_all(lua: &Lua) -> Result<Vec<(&'static str, mlua::Table)>> {
    Ok(vec![
        ("bit", bit::open(lua)?),
        ("cjson", cjson::open(lua)?),
        ("cmsgpack", cmsgpack::open(lua)?),
        ("struct", structlib::open(lua)?),
    ])
}
