//! The scripting commands as the script thread runs them, with the
//! keyspace lock held: EVAL and its forms, SCRIPT (but KILL), FCALL and
//! FUNCTION (but KILL and STATS, which the data plane answers while a
//! script runs).

use std::sync::Arc;

use bytes::Bytes;

use super::super::commands::{eq, unknown_subcommand};
use super::super::resp::Reply;
use super::vm::{Caller, Limits, Vm};
use super::Shared;

/// EVAL's and FCALL's `numkeys` split of the arguments after it.
fn split_keys(a: &[Bytes], numkeys_err: &str) -> Result<(Vec<Bytes>, Vec<Bytes>), Reply> {
    let n: i64 = std::str::from_utf8(&a[2])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Reply::err(numkeys_err))?;
    if n < 0 {
        return Err(Reply::err("ERR Number of keys can't be negative"));
    }
    let rest = &a[3..];
    if n as usize > rest.len() {
        return Err(Reply::err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let (k, v) = rest.split_at(n as usize);
    Ok((k.to_vec(), v.to_vec()))
}

/// The flags of a script's `#!lua flags=...` line (`None`: no shebang,
/// Redis's compatibility mode).
fn shebang_flags(body: &[u8]) -> Result<Option<Limits>, Reply> {
    if !body.starts_with(b"#!") {
        return Ok(None);
    }
    let Some(nl) = body.iter().position(|b| *b == b'\n') else {
        return Err(Reply::err("ERR Invalid script shebang"));
    };
    let line = String::from_utf8_lossy(&body[..nl]);
    let mut parts = line.split(' ').filter(|p| !p.is_empty());
    let engine = parts.next().unwrap_or("#!");
    if !engine.eq_ignore_ascii_case("#!lua") {
        return Err(Reply::Error(format!(
            "ERR Unexpected engine in script shebang: {engine}"
        )));
    }
    let mut limits = Limits::default();
    for part in parts {
        let Some(flags) = part.strip_prefix("flags=") else {
            return Err(Reply::Error(format!(
                "ERR Unknown lua shebang option: {part}"
            )));
        };
        for flag in flags.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => {
                    limits.read_only = true;
                    limits.allow_oom = true;
                }
                "allow-oom" => limits.allow_oom = true,
                "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => {
                    return Err(Reply::Error(format!(
                        "ERR Unexpected flag in script shebang: {other}"
                    )))
                }
            }
        }
    }
    Ok(Some(limits))
}

/// A scripting command, run on the script thread with the keyspace lock.
pub fn run_now(vm: &mut Vm, c: Caller, name: &str, a: &[Bytes], shared: &Arc<Shared>) -> Reply {
    match name {
        "eval" | "eval_ro" | "evalsha" | "evalsha_ro" => {
            let (keys, argv) = match split_keys(a, "ERR value is not an integer or out of range") {
                Ok(x) => x,
                Err(e) => return e,
            };
            let read_only = name.ends_with("_ro");
            let sha = if name.starts_with("evalsha") {
                String::from_utf8_lossy(&a[1]).to_ascii_lowercase()
            } else {
                match vm.load(&a[1]) {
                    Ok(sha) => sha,
                    Err(e) => return e,
                }
            };
            let flags = match vm.source(&sha).map(shebang_flags) {
                None => return Reply::err(super::NOSCRIPT),
                Some(Err(e)) => return e,
                Some(Ok(f)) => f,
            };
            let mut limits = flags.unwrap_or_default();
            if read_only {
                if flags.is_some() && !limits.read_only {
                    return Reply::err(super::WRITE_FLAG_RO);
                }
                limits.read_only = true;
            }
            if flags.is_some() && !limits.allow_oom && crate::budget::over() {
                return Reply::err(super::NO_ALLOW_OOM);
            }
            vm.eval(c, &sha, keys, argv, limits, shared)
        }
        "fcall" | "fcall_ro" => {
            let (keys, argv) = match split_keys(a, "ERR Bad number of keys provided") {
                Ok(x) => x,
                Err(e) => return e,
            };
            let function = String::from_utf8_lossy(&a[1]).into_owned();
            vm.fcall(c, &function, &keys, &argv, name == "fcall_ro", shared)
        }
        "function" => function_now(vm, a, shared),
        "script" => script_now(vm, a),
        other => Reply::Error(format!("ERR unknown command '{other}'")),
    }
}

/// SCRIPT's subcommands but KILL.
fn script_now(vm: &mut Vm, a: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    let arity_ok = match sub.as_str() {
        "load" | "debug" => a.len() == 3,
        "exists" => a.len() >= 3,
        "flush" => a.len() <= 3,
        "kill" | "help" => a.len() == 2,
        _ => true,
    };
    if !arity_ok {
        return Reply::Error(format!(
            "ERR wrong number of arguments for 'script|{sub}' command"
        ));
    }
    match sub.as_str() {
        // Inside a transaction: nothing else runs then.
        "kill" => Reply::err("NOTBUSY No scripts in execution right now."),
        "load" => match vm.load(&a[2]) {
            Ok(sha) => Reply::bulk(sha),
            Err(e) => e,
        },
        "exists" => Reply::Array(
            a[2..]
                .iter()
                .map(|s| {
                    let sha = String::from_utf8_lossy(s).to_ascii_lowercase();
                    Reply::Int(vm.source(&sha).is_some() as i64)
                })
                .collect(),
        ),
        "flush" => {
            if a.len() == 3 && !eq(&a[2], "sync") && !eq(&a[2], "async") {
                return Reply::err("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
            }
            vm.flush_scripts();
            Reply::Ok
        }
            "debug" => {
            if eq(&a[2], "no") {
                Reply::Ok
            } else if eq(&a[2], "yes") || eq(&a[2], "sync") {
                Reply::err("ERR meshwrap does not run the Lua debugger")
            } else {
                Reply::err("ERR Use SCRIPT DEBUG YES/SYNC/NO")
            }
        }
        "help" => Reply::Array(
            [
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "DEBUG (YES|SYNC|NO)",
                "    Set the debug mode for subsequent scripts executed.",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the scripts cache.",
                "    * SYNC: Synchronously flush the scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|l| Reply::simple(l))
            .collect(),
        ),
        _ => unknown_subcommand(&a[1], "script"),
    }
}

/// FUNCTION's subcommands but KILL and STATS (answered on the data plane;
/// inside a transaction nothing else runs, so they are answered here).
fn function_now(vm: &mut Vm, a: &[Bytes], shared: &Arc<Shared>) -> Reply {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    let wrong = || {
        Reply::Error(format!(
            "ERR wrong number of arguments for 'function|{sub}' command"
        ))
    };
    match sub.as_str() {
        "load" => {
            let mut replace = false;
            let mut code = None;
            for (i, arg) in a.iter().enumerate().skip(2) {
                if eq(arg, "replace") {
                    replace = true;
                } else if i == a.len() - 1 {
                    code = Some(arg.clone());
                } else {
                    return Reply::Error(format!(
                        "ERR Unknown option given: {}",
                        String::from_utf8_lossy(arg)
                    ));
                }
            }
            match code {
                Some(code) => vm.function_load(&code, replace, shared),
                None => Reply::err("ERR Function code is missing"),
            }
        }
        "delete" if a.len() == 3 => {
            let name = String::from_utf8_lossy(&a[2]).into_owned();
            match vm.libraries.libs.shift_remove(&name) {
                Some(_) => Reply::Ok,
                None => Reply::err("ERR Library not found"),
            }
        }
        "flush" if a.len() <= 3 => {
            if a.len() == 3 && !eq(&a[2], "sync") && !eq(&a[2], "async") {
                return Reply::err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
            }
            vm.libraries.libs.clear();
            Reply::Ok
        }
        "list" => {
            let mut with_code = false;
            let mut pattern = None;
            let mut i = 2;
            while i < a.len() {
                if eq(&a[i], "withcode") {
                    with_code = true;
                } else if eq(&a[i], "libraryname") {
                    let Some(p) = a.get(i + 1) else {
                        return Reply::err("ERR library name argument was not given");
                    };
                    pattern = Some(p.clone());
                    i += 1;
                } else {
                    return Reply::Error(format!(
                        "ERR Unknown argument {}",
                        String::from_utf8_lossy(&a[i])
                    ));
                }
                i += 1;
            }
            vm.libraries.list(pattern.as_deref(), with_code)
        }
        "dump" if a.len() == 2 => Reply::Bulk(super::dump::dump(&vm.libraries)),
        "restore" if a.len() == 3 || a.len() == 4 => {
            let policy = a.get(3).map_or("append".to_string(), |p| {
                String::from_utf8_lossy(p).to_ascii_lowercase()
            });
            if !matches!(policy.as_str(), "append" | "replace" | "flush") {
                return Reply::err(
                    "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                );
            }
            let codes = match super::dump::parse(&a[2]) {
                Ok(c) => c,
                Err(e) => return e,
            };
            super::dump::restore(vm, codes, &policy, shared)
        }
        "kill" if a.len() == 2 => Reply::err("NOTBUSY No scripts in execution right now."),
        "stats" if a.len() == 2 => super::functions::stats(
            Reply::Nil,
            vm.libraries.libs.len(),
            vm.libraries.function_count(),
        ),
        "help" if a.len() == 2 => Reply::Array(
            [
                "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "LOAD [REPLACE] <FUNCTION CODE>",
                "    Create a new library with the given library name and code.",
                "DELETE <LIBRARY NAME>",
                "    Delete the given library.",
                "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
                "    Return general information on all the libraries.",
                "FLUSH [ASYNC|SYNC]",
                "    Delete all the libraries.",
                "KILL",
                "    Kill the current running function.",
                "STATS",
                "    Return information about the current function running.",
                "DUMP",
                "    Return a serialized payload representing the current libraries.",
                "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
                "    Restore the libraries represented by the given payload.",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|l| Reply::simple(l))
            .collect(),
        ),
        "delete" | "flush" | "dump" | "restore" | "kill" | "stats" | "help" => wrong(),
        _ => unknown_subcommand(&a[1], "function"),
    }
}
