//! Redis 7 functions: FUNCTION LOAD's metadata line and libraries,
//! `redis.register_function` (positional and named forms), FCALL, and the
//! replies of FUNCTION LIST. A library's code runs once at load in an
//! environment that sees only the load-time `redis` table; the same
//! environment then falls through to the full sandbox for its functions'
//! runs, as in Redis.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use indexmap::IndexMap;
use mlua::{Function, Lua, MultiValue, Table, Value};

use super::super::resp::Reply;
use super::convert::error_table;
use super::libs::raise;
use super::vm::Limits;

const BAD_NAME: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// One registered function.
#[derive(Clone)]
pub struct Func {
    pub name: String,
    pub callback: Function,
    pub flags: Vec<&'static str>,
    pub description: Option<String>,
}

impl Func {
    pub fn limits(&self) -> Limits {
        let no_writes = self.flags.contains(&"no-writes");
        Limits {
            read_only: no_writes,
            allow_oom: no_writes || self.flags.contains(&"allow-oom"),
        }
    }
}

#[derive(Clone)]
pub struct Library {
    pub code: Bytes,
    pub functions: Vec<Func>,
}

/// Every library, in load order.
#[derive(Default, Clone)]
pub struct Libraries {
    pub libs: IndexMap<String, Library>,
}

impl Libraries {
    /// A function by name, ignoring case as FCALL does.
    pub fn find(&self, name: &str) -> Option<&Func> {
        self.libs
            .values()
            .flat_map(|l| l.functions.iter())
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub fn function_count(&self) -> usize {
        self.libs.values().map(|l| l.functions.len()).sum()
    }

    /// FUNCTION LIST's reply.
    pub fn list(&self, pattern: Option<&[u8]>, with_code: bool) -> Reply {
        let mut out = Vec::new();
        for (name, lib) in &self.libs {
            if pattern.is_some_and(|p| !super::super::commands::glob(p, name.as_bytes())) {
                continue;
            }
            let functions = lib
                .functions
                .iter()
                .map(|f| {
                    Reply::Map(vec![
                        (Reply::bulk("name"), Reply::bulk(f.name.clone())),
                        (
                            Reply::bulk("description"),
                            f.description.clone().map_or(Reply::Nil, Reply::bulk),
                        ),
                        (
                            Reply::bulk("flags"),
                            Reply::Set(f.flags.iter().map(|x| Reply::simple(x)).collect()),
                        ),
                    ])
                })
                .collect();
            let mut entry = vec![
                (Reply::bulk("library_name"), Reply::bulk(name.clone())),
                (Reply::bulk("engine"), Reply::bulk("LUA")),
                (Reply::bulk("functions"), Reply::Array(functions)),
            ];
            if with_code {
                entry.push((Reply::bulk("library_code"), Reply::Bulk(lib.code.clone())));
            }
            out.push(Reply::Map(entry));
        }
        Reply::Array(out)
    }
}

/// FUNCTION STATS's reply.
pub fn stats(running: Reply, libraries: usize, functions: usize) -> Reply {
    let count = |n: usize| Reply::Int(n as i64);
    Reply::Map(vec![
        (Reply::bulk("running_script"), running),
        (
            Reply::bulk("engines"),
            Reply::Map(vec![(
                Reply::bulk("LUA"),
                Reply::Map(vec![
                    (Reply::bulk("libraries_count"), count(libraries)),
                    (Reply::bulk("functions_count"), count(functions)),
                ]),
            )]),
        ),
    ])
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The library name from `#!lua name=<name>`.
pub fn metadata(code: &[u8]) -> Result<String, Reply> {
    if !code.starts_with(b"#!") {
        return Err(Reply::err("ERR Missing library metadata"));
    }
    let Some(nl) = code.iter().position(|b| *b == b'\n') else {
        return Err(Reply::err("ERR Invalid library metadata"));
    };
    let line = String::from_utf8_lossy(&code[2..nl]);
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = if line.starts_with(' ') {
        ""
    } else {
        parts.next().unwrap_or("")
    };
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(Reply::Error(format!("ERR Engine '{engine}' not found")));
    }
    let mut name = None;
    for part in parts {
        match part.strip_prefix("name=") {
            Some(_) if name.is_some() => {
                return Err(Reply::err(
                    "ERR Invalid metadata value, name argument was given multiple times",
                ))
            }
            Some(n) => name = Some(n.to_string()),
            None => {
                return Err(Reply::Error(format!(
                    "ERR Invalid metadata value given: {part}"
                )))
            }
        }
    }
    let name = name.ok_or_else(|| Reply::err("ERR Library name was not given"))?;
    if !valid_name(&name) {
        return Err(Reply::Error(format!("ERR {BAD_NAME}")));
    }
    Ok(name)
}

/// Functions registered by the library being loaded; `None` outside a
/// load.
pub type Registry = Rc<RefCell<Option<Vec<Func>>>>;

const FLAGS: &[&str] = &[
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// `redis.register_function`, for the load-time `redis` table.
pub fn register_function(lua: &Lua, registry: Registry) -> mlua::Result<Function> {
    lua.create_function(move |lua, args: MultiValue| {
        let fail = |msg: &str| raise::<MultiValue>(lua, error_table(lua, &format!("ERR {msg}"))?);
        let args = args.into_vec();
        let (name, callback, flags, description) = match args.as_slice() {
            [Value::Table(t)] => {
                let (mut name, mut callback, mut flags, mut description) = (None, None, Vec::new(), None);
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    let Value::String(k) = k else {
                        return fail("named argument key given to redis.register_function is not a string");
                    };
                    match k.to_string_lossy().to_ascii_lowercase().as_str() {
                        "function_name" => match v {
                            Value::String(s) => name = Some(s.to_string_lossy()),
                            _ => return fail("function_name argument given to redis.register_function must be a string"),
                        },
                        "description" => match v {
                            Value::String(s) => description = Some(s.to_string_lossy()),
                            _ => return fail("description argument given to redis.register_function must be a string"),
                        },
                        "callback" => match v {
                            Value::Function(f) => callback = Some(f),
                            _ => return fail("callback argument given to redis.register_function must be a function"),
                        },
                        "flags" => {
                            let Value::Table(list) = v else {
                                return fail("flags argument to redis.register_function must be a table representing function flags");
                            };
                            for flag in list.sequence_values::<Value>() {
                                let flag = match flag? {
                                    Value::String(s) => s.to_string_lossy().to_ascii_lowercase(),
                                    _ => return fail("unknown flag given"),
                                };
                                match FLAGS.iter().find(|f| **f == flag) {
                                    Some(f) => flags.push(*f),
                                    None => return fail("unknown flag given"),
                                }
                            }
                        }
                        _ => return fail("unknown argument given to redis.register_function"),
                    }
                }
                let Some(name) = name else {
                    return fail("redis.register_function must get a function name argument");
                };
                let Some(callback) = callback else {
                    return fail("redis.register_function must get a callback argument");
                };
                (name, callback, flags, description)
            }
            [_] => return fail("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments)."),
            [n, f] => {
                let Value::String(n) = n else {
                    return fail("first argument to redis.register_function must be a string");
                };
                let Value::Function(f) = f else {
                    return fail("second argument to redis.register_function must be a function");
                };
                (n.to_string_lossy(), f.clone(), Vec::new(), None)
            }
            _ => return fail("wrong number of arguments to redis.register_function"),
        };
        if !valid_name(&name) {
            return fail(BAD_NAME);
        }
        let mut reg = registry.borrow_mut();
        let Some(list) = reg.as_mut() else {
            return fail("redis.register_function can only be called on FUNCTION LOAD command");
        };
        if list.iter().any(|f| f.name == name) {
            return fail("Function already exists in the library");
        }
        list.push(Func {
            name,
            callback,
            flags,
            description,
        });
        Ok(MultiValue::new())
    })
}

/// Keys and arguments as two Lua sequences: an FCALL callback's
/// arguments, EVAL's KEYS and ARGV.
pub fn call_tables(lua: &Lua, keys: &[Bytes], args: &[Bytes]) -> mlua::Result<(Table, Table)> {
    let seq = |items: &[Bytes]| -> mlua::Result<Table> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, b) in items.iter().enumerate() {
            t.raw_seti(i + 1, lua.create_string(b)?)?;
        }
        Ok(t)
    };
    Ok((seq(keys)?, seq(args)?))
}

#[cfg(test)]
mod tests {
    use super::metadata;
    use crate::responders::redis::resp::Reply;

    fn err(code: &str) -> String {
        match metadata(code.as_bytes()) {
            Err(Reply::Error(e)) => e,
            other => panic!("{code:?}: {other:?}"),
        }
    }

    #[test]
    fn metadata_lines_as_redis_reads_them() {
        assert_eq!(
            metadata(b"#!lua name=mylib\nreturn 1").ok(),
            Some("mylib".into())
        );
        assert_eq!(metadata(b"#!LUA name=x_1\n").ok(), Some("x_1".into()));
        assert_eq!(err("return 1"), "ERR Missing library metadata");
        assert_eq!(err("#!lua name=x"), "ERR Invalid library metadata");
        assert_eq!(err("#!lua\n"), "ERR Library name was not given");
        assert_eq!(err("#!js name=x\n"), "ERR Engine 'js' not found");
        assert_eq!(err("#! name=x\n"), "ERR Engine '' not found");
        assert_eq!(
            err("#!lua name=x name=y\n"),
            "ERR Invalid metadata value, name argument was given multiple times"
        );
        assert_eq!(
            err("#!lua flags=no-writes name=x\n"),
            "ERR Invalid metadata value given: flags=no-writes"
        );
        assert!(err("#!lua name=a-b\n").starts_with("ERR Library names can only contain"));
    }
}
