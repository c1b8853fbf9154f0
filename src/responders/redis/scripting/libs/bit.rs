//! `bit`, the LuaBitOp library Redis loads: 32-bit operations on Lua
//! numbers, results as signed 32-bit numbers.

use mlua::{Lua, Result, Table, Variadic};

/// A number as LuaBitOp reads it: rounded to the nearest integer, then
/// its low 32 bits.
fn tobit(n: f64) -> i32 {
    if !n.is_finite() {
        return 0;
    }
    let wrapped = n.round_ties_even().rem_euclid(4_294_967_296.0);
    (wrapped as u32) as i32
}

fn num(x: i32) -> f64 {
    x as f64
}

pub fn open(lua: &Lua) -> Result<Table> {
    let t = lua.create_table()?;
    t.set("tobit", lua.create_function(|_, x: f64| Ok(num(tobit(x))))?)?;
    t.set("bnot", lua.create_function(|_, x: f64| Ok(num(!tobit(x))))?)?;
    t.set(
        "bswap",
        lua.create_function(|_, x: f64| Ok(num(tobit(x).swap_bytes())))?,
    )?;
    type Fold = fn(i32, i32) -> i32;
    let folds: [(&str, Fold); 3] = [
        ("band", |a, b| a & b),
        ("bor", |a, b| a | b),
        ("bxor", |a, b| a ^ b),
    ];
    for (name, f) in folds {
        t.set(
            name,
            lua.create_function(move |_, (first, rest): (f64, Variadic<f64>)| {
                Ok(num(rest
                    .iter()
                    .fold(tobit(first), |acc, x| f(acc, tobit(*x)))))
            })?,
        )?;
    }
    type Shift = fn(i32, u32) -> i32;
    let shifts: [(&str, Shift); 5] = [
        ("lshift", |x, n| ((x as u32) << n) as i32),
        ("rshift", |x, n| ((x as u32) >> n) as i32),
        ("arshift", |x, n| x >> n),
        ("rol", |x, n| (x as u32).rotate_left(n) as i32),
        ("ror", |x, n| (x as u32).rotate_right(n) as i32),
    ];
    for (name, f) in shifts {
        t.set(
            name,
            lua.create_function(move |_, (x, n): (f64, f64)| {
                Ok(num(f(tobit(x), (tobit(n) & 31) as u32)))
            })?,
        )?;
    }
    t.set(
        "tohex",
        lua.create_function(|_, (x, n): (f64, Option<f64>)| {
            let x = tobit(x) as u32;
            let n = n.map_or(8, tobit);
            let upper = n < 0;
            let digits = n.unsigned_abs().min(8) as usize;
            let full = if upper {
                format!("{x:08X}")
            } else {
                format!("{x:08x}")
            };
            Ok(full[8 - digits..].to_string())
        })?,
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::tobit;

    #[test]
    fn numbers_wrap_to_32_bits() {
        assert_eq!(tobit(4294967295.0), -1);
        assert_eq!(tobit(4294967296.0), 0);
        assert_eq!(tobit(-1.0), -1);
        assert_eq!(tobit(2.5), 2);
        assert_eq!(tobit(3.5), 4);
        assert_eq!(tobit(f64::NAN), 0);
    }
}
