//! `struct`, the binary packing library Redis loads: `pack(fmt, ...)`,
//! `unpack(fmt, s [, init])` (values, then the next position) and
//! `size(fmt)`. Format: `<` `>` `=` byte order, `!n` alignment, `x` a pad
//! byte, `b`/`B` 1-byte, `h`/`H` 2-byte, `l`/`L`/`T` 8-byte and `i`/`I[n]`
//! n-byte (default 4) integers, `f`/`d` floats, `cn` n chars (`c0`: the
//! whole string when packing, the previous value's count when unpacking),
//! `s` a zero-terminated string.

use mlua::{Lua, MultiValue, Result, Table, Value};

use super::super::convert::arg_bytes;
use super::{fail, MAX_OUT, MAX_RESULTS};

/// The widest integer the library handles.
const MAX_INT_SIZE: usize = 8;

#[derive(Clone, Copy)]
enum Item {
    Pad,
    Int { size: usize, signed: bool },
    Float,
    Double,
    Chars(usize),
    Zstr,
}

struct Format<'a> {
    fmt: &'a [u8],
    pos: usize,
    little: bool,
    align: usize,
}

impl<'a> Format<'a> {
    fn new(fmt: &'a [u8]) -> Self {
        Format {
            fmt,
            pos: 0,
            little: true,
            align: 1,
        }
    }

    fn number(&mut self, default: usize) -> usize {
        let start = self.pos;
        let mut n = 0usize;
        while let Some(d) = self.fmt.get(self.pos).filter(|c| c.is_ascii_digit()) {
            n = n.saturating_mul(10).saturating_add((d - b'0') as usize);
            self.pos += 1;
        }
        if self.pos == start {
            default
        } else {
            n
        }
    }

    /// The next item, or `None` at the end; options that only set the
    /// byte order or the alignment are consumed here.
    fn next(&mut self) -> std::result::Result<Option<Item>, String> {
        loop {
            let Some(&c) = self.fmt.get(self.pos) else {
                return Ok(None);
            };
            self.pos += 1;
            let item = match c {
                b' ' => continue,
                b'<' | b'=' => {
                    self.little = true;
                    continue;
                }
                b'>' => {
                    self.little = false;
                    continue;
                }
                b'!' => {
                    self.align = self.number(8);
                    if !self.align.is_power_of_two() {
                        return Err("alignment must be power of 2".into());
                    }
                    continue;
                }
                b'x' => Item::Pad,
                b'b' => Item::Int {
                    size: 1,
                    signed: true,
                },
                b'B' => Item::Int {
                    size: 1,
                    signed: false,
                },
                b'h' => Item::Int {
                    size: 2,
                    signed: true,
                },
                b'H' => Item::Int {
                    size: 2,
                    signed: false,
                },
                b'l' => Item::Int {
                    size: 8,
                    signed: true,
                },
                b'L' | b'T' => Item::Int {
                    size: 8,
                    signed: false,
                },
                b'i' | b'I' => {
                    let size = self.number(4);
                    if size == 0 || size > MAX_INT_SIZE {
                        return Err(format!(
                            "integral size {size} is larger than limit of {MAX_INT_SIZE}"
                        ));
                    }
                    Item::Int {
                        size,
                        signed: c == b'i',
                    }
                }
                b'f' => Item::Float,
                b'd' => Item::Double,
                b'c' => Item::Chars(self.number(1)),
                b's' => Item::Zstr,
                other => return Err(format!("invalid format option '{}'", other as char)),
            };
            return Ok(Some(item));
        }
    }

    /// Padding before an item of `size` bytes at offset `at`.
    fn pad(&self, item: Item, at: usize) -> usize {
        let size = match item {
            Item::Int { size, .. } => size,
            Item::Float => 4,
            Item::Double => 8,
            _ => 1,
        };
        let a = size.min(self.align);
        if a <= 1 || !a.is_power_of_two() {
            0
        } else {
            (a - (at & (a - 1))) & (a - 1)
        }
    }
}

pub fn open(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "pack",
        lua.create_function(|lua, (fmt, args): (mlua::LuaString, MultiValue)| {
            match pack(&fmt.as_bytes(), &args.into_vec()) {
                Ok(out) => Ok(MultiValue::from_vec(vec![Value::String(
                    lua.create_string(&out)?,
                )])),
                Err(e) => fail(lua, e),
            }
        })?,
    )?;
    t.set(
        "unpack",
        lua.create_function(
            |lua, (fmt, data, init): (mlua::LuaString, mlua::LuaString, Option<i64>)| match unpack(
                lua,
                &fmt.as_bytes(),
                &data.as_bytes(),
                init.unwrap_or(1),
            ) {
                Ok(values) => Ok(MultiValue::from_vec(values)),
                Err(Bad::Msg(m)) => fail(lua, m),
                Err(Bad::Lua(e)) => Err(e),
            },
        )?,
    )?;
    t.set(
        "size",
        lua.create_function(|lua, fmt: mlua::LuaString| {
            let bytes = fmt.as_bytes();
            let mut f = Format::new(&bytes);
            let mut total = 0usize;
            loop {
                match f.next() {
                    Ok(None) => break,
                    Ok(Some(Item::Zstr | Item::Chars(0))) => {
                        return fail(lua, "options 'c0' - 's' have undefined sizes")
                    }
                    Ok(Some(item)) => {
                        match total
                            .checked_add(f.pad(item, total))
                            .and_then(|t| t.checked_add(width(item)))
                        {
                            Some(t) => total = t,
                            None => return fail(lua, "integral size overflow"),
                        }
                    }
                    Err(e) => return fail(lua, e),
                }
            }
            Ok(MultiValue::from_vec(vec![Value::Integer(total as i64)]))
        })?,
    )?;
    Ok(t)
}

fn width(item: Item) -> usize {
    match item {
        Item::Pad => 1,
        Item::Int { size, .. } => size,
        Item::Float => 4,
        Item::Double => 8,
        Item::Chars(n) => n,
        Item::Zstr => 0,
    }
}

fn number(v: Option<&Value>) -> std::result::Result<f64, String> {
    match v {
        Some(Value::Integer(i)) => Ok(*i as f64),
        Some(Value::Number(n)) => Ok(*n),
        Some(Value::String(s)) => s
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "bad argument to 'pack' (number expected)".to_string()),
        _ => Err("bad argument to 'pack' (number expected)".into()),
    }
}

fn pack(fmt: &[u8], args: &[Value]) -> std::result::Result<Vec<u8>, String> {
    let mut f = Format::new(fmt);
    let mut out = Vec::new();
    let mut next = args.iter();
    while let Some(item) = f.next()? {
        let pad = f.pad(item, out.len());
        out.resize(out.len() + pad, 0);
        match item {
            Item::Pad => out.push(0),
            Item::Int { size, .. } => {
                let n = number(next.next())?;
                let v = (if n < 0.0 { n as i64 as u64 } else { n as u64 }).to_le_bytes();
                if f.little {
                    out.extend_from_slice(&v[..size]);
                } else {
                    out.extend(v[..size].iter().rev());
                }
            }
            Item::Float => {
                let b = (number(next.next())? as f32).to_bits();
                out.extend_from_slice(&if f.little {
                    b.to_le_bytes()
                } else {
                    b.to_be_bytes()
                });
            }
            Item::Double => {
                let b = number(next.next())?.to_bits();
                out.extend_from_slice(&if f.little {
                    b.to_le_bytes()
                } else {
                    b.to_be_bytes()
                });
            }
            Item::Chars(n) => {
                let s = next
                    .next()
                    .and_then(arg_bytes)
                    .ok_or("bad argument to 'pack' (string expected)")?;
                let n = if n == 0 { s.len() } else { n };
                if s.len() < n {
                    return Err("string too short".into());
                }
                out.extend_from_slice(&s[..n]);
            }
            Item::Zstr => {
                let s = next
                    .next()
                    .and_then(arg_bytes)
                    .ok_or("bad argument to 'pack' (string expected)")?;
                if s.contains(&0) {
                    return Err("string contains zeros".into());
                }
                out.extend_from_slice(&s);
                out.push(0);
            }
        }
        if out.len() > MAX_OUT {
            return Err("not enough memory".into());
        }
    }
    Ok(out)
}

enum Bad {
    Msg(String),
    Lua(mlua::Error),
}

impl From<String> for Bad {
    fn from(m: String) -> Self {
        Bad::Msg(m)
    }
}

impl From<mlua::Error> for Bad {
    fn from(e: mlua::Error) -> Self {
        Bad::Lua(e)
    }
}

fn unpack(lua: &Lua, fmt: &[u8], data: &[u8], init: i64) -> std::result::Result<Vec<Value>, Bad> {
    let mut pos =
        usize::try_from(init - 1).map_err(|_| "offset must be 1 or greater".to_string())?;
    if pos > data.len() {
        return Err("offset must be 1 or greater".to_string().into());
    }
    let short = || Bad::Msg("data string too short".into());
    let mut f = Format::new(fmt);
    let mut values = Vec::new();
    while let Some(item) = f.next()? {
        if values.len() >= MAX_RESULTS {
            return Err(Bad::Msg("too many results to unpack".into()));
        }
        pos = pos
            .checked_add(f.pad(item, pos))
            .ok_or_else(|| Bad::Msg("data string too short".into()))?;
        let take = |pos: usize, n: usize| data.get(pos..pos.checked_add(n)?);
        match item {
            Item::Pad => {
                take(pos, 1).ok_or_else(short)?;
                pos += 1;
            }
            Item::Int { size, signed } => {
                let b = take(pos, size).ok_or_else(short)?;
                let mut v: u64 = 0;
                for i in 0..size {
                    let byte = if f.little { b[size - 1 - i] } else { b[i] };
                    v = v << 8 | byte as u64;
                }
                let n = if signed && size < 8 && v >> (size * 8 - 1) & 1 == 1 {
                    (v as i64 - (1i64 << (size * 8))) as f64
                } else if signed {
                    v as i64 as f64
                } else {
                    v as f64
                };
                values.push(Value::Number(n));
                pos += size;
            }
            Item::Float | Item::Double => {
                let size = width(item);
                let b = take(pos, size).ok_or_else(short)?;
                let mut raw = [0u8; 8];
                raw[..size].copy_from_slice(b);
                if !f.little {
                    raw[..size].reverse();
                }
                let n = if size == 4 {
                    f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64
                } else {
                    f64::from_le_bytes(raw)
                };
                values.push(Value::Number(n));
                pos += size;
            }
            Item::Chars(n) => {
                let n = if n == 0 {
                    match values.pop() {
                        Some(Value::Number(c)) if c >= 0.0 => c as usize,
                        Some(Value::Integer(c)) if c >= 0 => c as usize,
                        _ => return Err("format 'c0' needs a previous size".to_string().into()),
                    }
                } else {
                    n
                };
                let b = take(pos, n).ok_or_else(short)?;
                values.push(Value::String(lua.create_string(b)?));
                pos += n;
            }
            Item::Zstr => {
                let rest = data.get(pos..).unwrap_or_default();
                let end = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| Bad::Msg("unfinished string in data".into()))?;
                values.push(Value::String(lua.create_string(&rest[..end])?));
                pos += end + 1;
            }
        }
    }
    values.push(Value::Integer(pos as i64 + 1));
    Ok(values)
}
