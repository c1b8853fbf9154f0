//! Values across the border between Redis and Lua, by Redis's conversion
//! tables: a command's reply becomes a Lua value for `redis.call` (RESP2
//! or, after `redis.setresp(3)`, RESP3 rules), and a script's return value
//! becomes the reply its caller gets (in the caller's protocol).

use bytes::Bytes;
use mlua::{Lua, Table, Value};

use super::super::resp::Reply;

/// How deep a returned table may nest before Redis gives up on it.
const MAX_DEPTH: usize = 1000;

/// `%.14g`, the way Lua 5.1 turns a number into a string (`tostring`,
/// concatenation, arguments of `redis.call`, cjson).
pub fn fmt_number(f: f64) -> String {
    if f.is_nan() {
        return if f.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf" } else { "inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    const P: i32 = 14;
    let sci = format!("{:.*e}", (P - 1) as usize, f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..P).contains(&exp) {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{f:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A command's reply as `redis.call` returns it. Errors are handled by the
/// caller (they raise or come back as `{err=...}`).
pub fn reply_to_lua(lua: &Lua, reply: Reply, resp3: bool) -> mlua::Result<Value> {
    Ok(match reply {
        Reply::Ok => status(lua, "OK")?,
        Reply::Simple(s) => status(lua, &s)?,
        Reply::Error(e) => error_table(lua, &e)?,
        Reply::Int(i) => Value::Number(i as f64),
        Reply::Bulk(b) => Value::String(lua.create_string(&b)?),
        Reply::Nil | Reply::NilArray | Reply::None => {
            if resp3 {
                Value::Nil
            } else {
                Value::Boolean(false)
            }
        }
        Reply::Array(items) | Reply::Push(items) => array(lua, items, resp3)?,
        Reply::Set(items) if resp3 => {
            let set = lua.create_table()?;
            for item in items {
                set.raw_set(reply_to_lua(lua, item, resp3)?, true)?;
            }
            wrapped(lua, "set", Value::Table(set))?
        }
        Reply::Set(items) => array(lua, items, resp3)?,
        Reply::Map(pairs) if resp3 => {
            let map = lua.create_table()?;
            for (k, v) in pairs {
                map.raw_set(reply_to_lua(lua, k, resp3)?, reply_to_lua(lua, v, resp3)?)?;
            }
            wrapped(lua, "map", Value::Table(map))?
        }
        Reply::Map(pairs) => {
            let t = lua.create_table_with_capacity(pairs.len() * 2, 0)?;
            let mut i = 1;
            for (k, v) in pairs {
                t.raw_seti(i, reply_to_lua(lua, k, resp3)?)?;
                t.raw_seti(i + 1, reply_to_lua(lua, v, resp3)?)?;
                i += 2;
            }
            Value::Table(t)
        }
        Reply::Double(d) if resp3 => wrapped(lua, "double", Value::Number(d))?,
        // The text a RESP2 client would read.
        Reply::Double(d) => {
            Value::String(lua.create_string(crate::rules::redis::format_double(d))?)
        }
        Reply::Bool(b) if resp3 => Value::Boolean(b),
        Reply::Bool(b) => Value::Number(if b { 1.0 } else { 0.0 }),
        Reply::Verbatim(s) if resp3 => {
            let t = lua.create_table()?;
            t.raw_set("format", "txt")?;
            t.raw_set("string", lua.create_string(&s)?)?;
            wrapped(lua, "verbatim_string", Value::Table(t))?
        }
        Reply::Verbatim(s) => Value::String(lua.create_string(&s)?),
    })
}

fn array(lua: &Lua, items: Vec<Reply>, resp3: bool) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.into_iter().enumerate() {
        t.raw_seti(i + 1, reply_to_lua(lua, item, resp3)?)?;
    }
    Ok(Value::Table(t))
}

fn wrapped(lua: &Lua, field: &str, v: Value) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set(field, v)?;
    Ok(Value::Table(t))
}

/// `{ok=...}`, a status reply in Lua.
pub fn status(lua: &Lua, s: &str) -> mlua::Result<Value> {
    wrapped(lua, "ok", Value::String(lua.create_string(s)?))
}

/// `{err=...}`, an error reply in Lua.
pub fn error_table(lua: &Lua, e: &str) -> mlua::Result<Value> {
    wrapped(lua, "err", Value::String(lua.create_string(e)?))
}

/// An argument of `redis.call`: strings as they are, numbers as integers
/// when exact and otherwise in their shortest form (Redis's
/// `fpconv_dtoa`: `0.1`, `1.5e+300`); anything else is refused.
pub fn arg_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Number(n) => Some(Bytes::from(shortest(*n))),
        _ => None,
    }
}

fn shortest(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.2e18 {
        return (n as i64).to_string();
    }
    let a = n.abs();
    if n.is_finite() && !(1e-6..1e21).contains(&a) {
        // Rust writes `1.5e300`; C's style is `1.5e+300`.
        let s = format!("{n:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{n}")
    }
}

/// A script's return value as its caller gets it. `resp3` is whether the
/// script called `redis.setresp(3)`: it decides only how booleans go out
/// (the caller's protocol decides the wire form of the rest).
pub fn lua_to_reply(v: &Value, resp3: bool) -> Reply {
    to_reply(v, resp3, 0)
}

/// Status and error texts go out on one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn to_reply(v: &Value, resp3: bool, depth: usize) -> Reply {
    if depth > MAX_DEPTH {
        return Reply::err("ERR reached lua stack limit");
    }
    match v {
        Value::Nil => Reply::Nil,
        Value::Boolean(true) if resp3 => Reply::Bool(true),
        Value::Boolean(true) => Reply::Int(1),
        Value::Boolean(false) if resp3 => Reply::Bool(false),
        Value::Boolean(false) => Reply::Nil,
        Value::Integer(i) => Reply::Int(*i),
        // A C cast: toward zero (3.99 -> 3), and the minimum when out of
        // range or NaN.
        Value::Number(n) if n.is_finite() && n.abs() < 9.2e18 => Reply::Int(n.trunc() as i64),
        Value::Number(_) => Reply::Int(i64::MIN),
        Value::String(s) => Reply::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) => table_reply(t, resp3, depth),
        _ => Reply::Nil,
    }
}

fn table_reply(t: &Table, resp3: bool, depth: usize) -> Reply {
    if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
        return Reply::Error(one_line(&e.to_string_lossy()));
    }
    if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
        return Reply::Simple(one_line(&s.to_string_lossy()));
    }
    match t.raw_get::<Value>("double") {
        Ok(Value::Number(d)) => return Reply::Double(d),
        Ok(Value::Integer(i)) => return Reply::Double(i as f64),
        _ => {}
    }
    if let Ok(Value::String(b)) = t.raw_get::<Value>("big_number") {
        return Reply::Bulk(Bytes::from(one_line(&b.to_string_lossy())));
    }
    if let Ok(Value::Table(v)) = t.raw_get::<Value>("verbatim_string") {
        if let (Ok(Value::String(_)), Ok(Value::String(text))) =
            (v.raw_get::<Value>("format"), v.raw_get::<Value>("string"))
        {
            return Reply::Verbatim(text.to_string_lossy());
        }
    }
    {
        if let Ok(Value::Table(m)) = t.raw_get::<Value>("map") {
            let mut pairs = Vec::new();
            let _ = m.for_each(|k: Value, v: Value| {
                pairs.push((
                    to_reply(&k, resp3, depth + 1),
                    to_reply(&v, resp3, depth + 1),
                ));
                Ok(())
            });
            return Reply::Map(pairs);
        }
        if let Ok(Value::Table(s)) = t.raw_get::<Value>("set") {
            let mut items = Vec::new();
            let _ = s.for_each(|k: Value, _: Value| {
                items.push(to_reply(&k, resp3, depth + 1));
                Ok(())
            });
            return Reply::Set(items);
        }
    }
    // An array up to the first nil, as Redis reads it.
    let mut items = Vec::new();
    let mut i = 1;
    loop {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(to_reply(&v, resp3, depth + 1)),
        }
        i += 1;
    }
    Reply::Array(items)
}

#[cfg(test)]
mod tests {
    use super::fmt_number;

    #[test]
    fn numbers_print_as_lua_prints_them() {
        assert_eq!(fmt_number(10.0), "10");
        assert_eq!(fmt_number(1.5), "1.5");
        assert_eq!(fmt_number(-0.25), "-0.25");
        assert_eq!(fmt_number(1e15), "1e+15");
        assert_eq!(fmt_number(123456789012345.0), "1.2345678901234e+14");
        assert_eq!(fmt_number(12345678901234.0), "12345678901234");
        assert_eq!(fmt_number(0.0001), "0.0001");
        assert_eq!(fmt_number(0.00001), "1e-05");
        assert_eq!(fmt_number(1.0 / 3.0), "0.33333333333333");
        assert_eq!(fmt_number(f64::INFINITY), "inf");
    }
}
