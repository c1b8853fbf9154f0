//! `cjson`, as Redis's lua-cjson 2.1 behaves: `encode` (numbers as
//! `%.14g`, `/` escaped, an empty table is `{}`, tables with only positive
//! integer keys are arrays unless excessively sparse), `decode` (`null`
//! becomes `cjson.null`), and the configuration functions, which answer
//! with the settings lua-cjson uses by default.

use mlua::{LightUserData, Lua, MultiValue, Result, Table, Value};

use super::super::convert::fmt_number;
use super::{fail, MAX_OUT};

/// lua-cjson's default nesting limit, for encoding and decoding.
const MAX_DEPTH: usize = 1000;

/// `cjson.null`: a light userdata holding NULL, as lua-cjson has it.
pub const NULL: LightUserData = LightUserData(std::ptr::null_mut());

pub fn open(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let mut out = Vec::new();
            match encode(&v, &mut out, 0) {
                Ok(()) => lua
                    .create_string(&out)
                    .map(|s| MultiValue::from_vec(vec![Value::String(s)])),
                Err(msg) => fail(lua, msg),
            }
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            // serde_json's tree lives outside Lua's memory limit: a few
            // times the text at most.
            if s.as_bytes().len() > MAX_OUT / 8 {
                return fail(lua, "not enough memory");
            }
            match serde_json::from_slice::<serde_json::Value>(&s.as_bytes()) {
                Ok(v) => Ok(MultiValue::from_vec(vec![to_lua(lua, &v)?])),
                Err(e) => fail(lua, decode_error(&s.as_bytes(), &e)),
            }
        })?,
    )?;
    t.set("null", Value::LightUserData(NULL))?;
    t.set("_NAME", "cjson")?;
    t.set("_VERSION", "2.1.0")?;
    // The settings functions: each answers with lua-cjson's defaults,
    // which meshwrap keeps.
    let settings: [(&str, &[Value]); 7] = [
        (
            "encode_sparse_array",
            &[Value::Boolean(false), Value::Integer(2), Value::Integer(10)],
        ),
        ("encode_max_depth", &[Value::Integer(MAX_DEPTH as i64)]),
        ("decode_max_depth", &[Value::Integer(MAX_DEPTH as i64)]),
        ("encode_number_precision", &[Value::Integer(14)]),
        ("encode_keep_buffer", &[Value::Boolean(true)]),
        ("encode_invalid_numbers", &[Value::Boolean(false)]),
        ("decode_invalid_numbers", &[Value::Boolean(true)]),
    ];
    for (name, answer) in settings {
        let answer = answer.to_vec();
        t.set(
            name,
            lua.create_function(move |_, _: MultiValue| Ok(MultiValue::from_vec(answer.clone())))?,
        )?;
    }
    Ok(t)
}

fn decode_error(input: &[u8], e: &serde_json::Error) -> String {
    // serde_json counts lines and columns; lua-cjson counts characters.
    let mut offset = 0usize;
    for (i, line) in input.split(|b| *b == b'\n').enumerate() {
        if i + 1 == e.line() {
            offset += e.column().max(1);
            break;
        }
        offset += line.len() + 1;
    }
    if e.is_eof() {
        format!(
            "Expected value but found T_END at character {}",
            offset.max(1)
        )
    } else {
        format!(
            "Expected value but found invalid token at character {}",
            offset.max(1)
        )
    }
}

fn to_lua(lua: &Lua, v: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Value::LightUserData(NULL),
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Value::String(lua.create_string(s)?),
        J::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_seti(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        J::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k.as_str(), to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Encodes `v`; `Err` carries lua-cjson's message.
pub fn encode(v: &Value, out: &mut Vec<u8>, depth: usize) -> std::result::Result<(), String> {
    if out.len() > MAX_OUT {
        return Err("not enough memory".into());
    }
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => out.extend_from_slice(fmt_number(*i as f64).as_bytes()),
        Value::Number(n) => {
            if !n.is_finite() {
                return Err("Cannot serialise number: must not be NaN or Inf".into());
            }
            out.extend_from_slice(fmt_number(*n).as_bytes());
        }
        Value::String(s) => escape(&s.as_bytes(), out),
        Value::Table(t) => {
            if depth + 1 > MAX_DEPTH {
                return Err(format!(
                    "Cannot serialise, excessive nesting ({})",
                    depth + 1
                ));
            }
            encode_table(t, out, depth + 1)?;
        }
        other => {
            return Err(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            ))
        }
    }
    Ok(())
}

fn encode_table(t: &Table, out: &mut Vec<u8>, depth: usize) -> std::result::Result<(), String> {
    // Array if every key is a positive integer, and not excessively
    // sparse (lua-cjson: more than 10 and over twice the item count).
    let mut max = 0usize;
    let mut items = 0usize;
    let mut array = true;
    let mut pairs: Vec<(Value, Value)> = Vec::new();
    t.for_each(|k: Value, v: Value| {
        match &k {
            Value::Integer(i) if *i >= 1 => max = max.max(*i as usize),
            Value::Number(n) if *n >= 1.0 && n.fract() == 0.0 => max = max.max(*n as usize),
            _ => array = false,
        }
        items += 1;
        pairs.push((k, v));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if array && items > 0 {
        if max > items * 2 && max > 10 {
            return Err("Cannot serialise table: excessively sparse array".into());
        }
        out.push(b'[');
        for i in 1..=max {
            if i > 1 {
                out.push(b',');
            }
            let v = t.raw_get::<Value>(i).unwrap_or(Value::Nil);
            encode(&v, out, depth)?;
        }
        out.push(b']');
        return Ok(());
    }
    out.push(b'{');
    for (n, (k, v)) in pairs.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        match k {
            Value::String(s) => escape(&s.as_bytes(), out),
            Value::Integer(i) => escape(fmt_number(*i as f64).as_bytes(), out),
            Value::Number(f) => escape(fmt_number(*f).as_bytes(), out),
            _ => return Err("Cannot serialise table: table key must be a number or string".into()),
        }
        out.push(b':');
        encode(v, out, depth)?;
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string as lua-cjson writes it: bytes at or above 0x80 as they
/// are (UTF-8 or not), `/` and DEL escaped.
fn escape(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            0..=31 | 127 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}
