//! `cmsgpack`, as Redis's lua-cmsgpack behaves: `pack(...)` concatenates
//! one MessagePack object per argument (integral numbers as the smallest
//! integer type, other numbers as float 32 when exact, else float 64;
//! strings as str; tables as arrays when their keys are exactly 1..n, else
//! maps; nesting past 16 packs nil), `unpack` returns every object,
//! `unpack_one` and `unpack_limit` return the next offset first.

use mlua::{Lua, MultiValue, Result, Table, Value};
use rmp::encode;
use rmp::Marker;

use super::{fail, MAX_OUT, MAX_RESULTS};

/// lua-cmsgpack's LUACMSGPACK_MAX_NESTING.
const MAX_NESTING: usize = 16;

pub fn open(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "pack",
        lua.create_function(|lua, args: MultiValue| {
            if args.is_empty() {
                return fail(lua, "MessagePack pack needs input.");
            }
            let mut out = Vec::new();
            for v in args.iter() {
                if !pack(v, &mut out, 0) {
                    return fail(lua, "not enough memory");
                }
            }
            Ok(MultiValue::from_vec(vec![Value::String(
                lua.create_string(&out)?,
            )]))
        })?,
    )?;
    t.set(
        "unpack",
        lua.create_function(|lua, s: mlua::LuaString| unpack(lua, &s.as_bytes(), 0, 0, false))?,
    )?;
    t.set(
        "unpack_one",
        lua.create_function(|lua, (s, offset): (mlua::LuaString, Option<i64>)| {
            unpack(lua, &s.as_bytes(), 1, offset.unwrap_or(0), true)
        })?,
    )?;
    t.set(
        "unpack_limit",
        lua.create_function(
            |lua, (s, limit, offset): (mlua::LuaString, i64, Option<i64>)| {
                unpack(
                    lua,
                    &s.as_bytes(),
                    limit.max(0) as usize,
                    offset.unwrap_or(0),
                    true,
                )
            },
        )?,
    )?;
    t.set("_NAME", "cmsgpack")?;
    t.set("_VERSION", "lua-cmsgpack 0.4.0")?;
    Ok(t)
}

/// Packs `v`; `false` once the output passes `MAX_OUT` (shared
/// references can make a small table pack huge).
fn pack(v: &Value, out: &mut Vec<u8>, depth: usize) -> bool {
    if out.len() > MAX_OUT {
        return false;
    }
    // Writing to a Vec cannot fail.
    let _ = match v {
        Value::Boolean(b) => encode::write_bool(out, *b).map_err(|_| ()),
        Value::Integer(i) => pack_int(out, *i),
        Value::Number(n) if n.fract() == 0.0 && *n >= -9.2e18 && *n <= 1.8e19 => {
            if *n >= 0.0 {
                encode::write_uint(out, *n as u64)
                    .map(|_| ())
                    .map_err(|_| ())
            } else {
                pack_int(out, *n as i64)
            }
        }
        Value::Number(n) if (*n as f32) as f64 == *n => {
            encode::write_f32(out, *n as f32).map_err(|_| ())
        }
        Value::Number(n) => encode::write_f64(out, *n).map_err(|_| ()),
        Value::String(s) => {
            let b = s.as_bytes();
            let _ = encode::write_str_len(out, b.len() as u32);
            out.extend_from_slice(&b);
            Ok(())
        }
        Value::Table(t) if depth < MAX_NESTING => {
            if !pack_table(t, out, depth + 1) {
                return false;
            }
            Ok(())
        }
        _ => encode::write_nil(out).map_err(|_| ()),
    };
    out.len() <= MAX_OUT
}

fn pack_int(out: &mut Vec<u8>, i: i64) -> std::result::Result<(), ()> {
    if i >= 0 {
        encode::write_uint(out, i as u64)
            .map(|_| ())
            .map_err(|_| ())
    } else {
        encode::write_sint(out, i).map(|_| ()).map_err(|_| ())
    }
}

fn pack_table(t: &Table, out: &mut Vec<u8>, depth: usize) -> bool {
    let mut pairs: Vec<(Value, Value)> = Vec::new();
    let mut max = 0i64;
    let mut all_positive = true;
    let _ = t.for_each(|k: Value, v: Value| {
        match &k {
            Value::Integer(i) if *i >= 1 => max = max.max(*i),
            Value::Number(n) if *n >= 1.0 && n.fract() == 0.0 => max = max.max(*n as i64),
            _ => all_positive = false,
        }
        pairs.push((k, v));
        Ok(())
    });
    if all_positive && max as usize == pairs.len() {
        let _ = encode::write_array_len(out, pairs.len() as u32);
        for i in 1..=max {
            let v = t.raw_get::<Value>(i).unwrap_or(Value::Nil);
            if !pack(&v, out, depth) {
                return false;
            }
        }
    } else {
        let _ = encode::write_map_len(out, pairs.len() as u32);
        for (k, v) in &pairs {
            if !pack(k, out, depth) || !pack(v, out, depth) {
                return false;
            }
        }
    }
    true
}

/// Decodes up to `limit` objects (0: all) from `offset`; with
/// `with_offset` the next offset (-1 at the end) comes first, as
/// `unpack_one` and `unpack_limit` return it.
fn unpack(
    lua: &Lua,
    data: &[u8],
    limit: usize,
    offset: i64,
    with_offset: bool,
) -> Result<MultiValue> {
    if offset < 0 || offset as usize > data.len() {
        return fail(lua, "Start offset greater than input length.");
    }
    let mut cur = Cursor {
        data,
        pos: offset as usize,
    };
    let mut values = Vec::new();
    while cur.pos < data.len() && (limit == 0 || values.len() < limit) {
        if values.len() >= MAX_RESULTS {
            return fail(lua, "too many results to unpack");
        }
        match cur.value(lua, 0) {
            Ok(v) => values.push(v),
            Err(Bad::Lua(e)) => return Err(e),
            Err(Bad::Missing) => return fail(lua, "Missing bytes in input."),
            Err(Bad::Format) => return fail(lua, "Bad data format in input."),
        }
    }
    if with_offset {
        let next = if cur.pos >= data.len() {
            -1
        } else {
            cur.pos as i64
        };
        values.insert(0, Value::Integer(next));
    }
    Ok(MultiValue::from_vec(values))
}

enum Bad {
    Missing,
    Format,
    Lua(mlua::Error),
}

impl From<mlua::Error> for Bad {
    fn from(e: mlua::Error) -> Self {
        Bad::Lua(e)
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], Bad> {
        let end = self.pos.checked_add(n).ok_or(Bad::Missing)?;
        let s = self.data.get(self.pos..end).ok_or(Bad::Missing)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> std::result::Result<u64, Bad> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | *b as u64))
    }

    fn value(&mut self, lua: &Lua, depth: usize) -> std::result::Result<Value, Bad> {
        // Deeper than any packer writes: refuse rather than recurse.
        if depth > 1000 {
            return Err(Bad::Format);
        }
        let marker = Marker::from_u8(self.take(1)?[0]);
        Ok(match marker {
            Marker::FixPos(n) => Value::Integer(n as i64),
            Marker::FixNeg(n) => Value::Integer(n as i64),
            Marker::Null => Value::Nil,
            Marker::True => Value::Boolean(true),
            Marker::False => Value::Boolean(false),
            Marker::U8 => Value::Integer(self.be(1)? as i64),
            Marker::U16 => Value::Integer(self.be(2)? as i64),
            Marker::U32 => Value::Integer(self.be(4)? as i64),
            Marker::U64 => Value::Number(self.be(8)? as f64),
            Marker::I8 => Value::Integer(self.be(1)? as u8 as i8 as i64),
            Marker::I16 => Value::Integer(self.be(2)? as u16 as i16 as i64),
            Marker::I32 => Value::Integer(self.be(4)? as u32 as i32 as i64),
            Marker::I64 => Value::Number(self.be(8)? as i64 as f64),
            Marker::F32 => Value::Number(f32::from_bits(self.be(4)? as u32) as f64),
            Marker::F64 => Value::Number(f64::from_bits(self.be(8)?)),
            Marker::FixStr(n) => self.string(lua, n as usize)?,
            Marker::Str8 | Marker::Bin8 => {
                let n = self.be(1)? as usize;
                self.string(lua, n)?
            }
            Marker::Str16 | Marker::Bin16 => {
                let n = self.be(2)? as usize;
                self.string(lua, n)?
            }
            Marker::Str32 | Marker::Bin32 => {
                let n = self.be(4)? as usize;
                self.string(lua, n)?
            }
            Marker::FixArray(n) => self.array(lua, n as usize, depth)?,
            Marker::Array16 => {
                let n = self.be(2)? as usize;
                self.array(lua, n, depth)?
            }
            Marker::Array32 => {
                let n = self.be(4)? as usize;
                self.array(lua, n, depth)?
            }
            Marker::FixMap(n) => self.map(lua, n as usize, depth)?,
            Marker::Map16 => {
                let n = self.be(2)? as usize;
                self.map(lua, n, depth)?
            }
            Marker::Map32 => {
                let n = self.be(4)? as usize;
                self.map(lua, n, depth)?
            }
            _ => return Err(Bad::Format),
        })
    }

    fn string(&mut self, lua: &Lua, n: usize) -> std::result::Result<Value, Bad> {
        let bytes = self.take(n)?;
        Ok(Value::String(lua.create_string(bytes)?))
    }

    fn array(&mut self, lua: &Lua, n: usize, depth: usize) -> std::result::Result<Value, Bad> {
        // Each element takes at least a byte: a count beyond what is left
        // is short input, found before allocating for it.
        if n > self.data.len() - self.pos {
            return Err(Bad::Missing);
        }
        let t = lua.create_table_with_capacity(n, 0)?;
        for i in 1..=n {
            let v = self.value(lua, depth + 1)?;
            t.raw_seti(i, v)?;
        }
        Ok(Value::Table(t))
    }

    fn map(&mut self, lua: &Lua, n: usize, depth: usize) -> std::result::Result<Value, Bad> {
        if n.saturating_mul(2) > self.data.len() - self.pos {
            return Err(Bad::Missing);
        }
        let t = lua.create_table_with_capacity(0, n)?;
        for _ in 0..n {
            let k = self.value(lua, depth + 1)?;
            let v = self.value(lua, depth + 1)?;
            if !matches!(k, Value::Nil) {
                t.raw_set(k, v)?;
            }
        }
        Ok(Value::Table(t))
    }
}
