//! Redis's error replies, word for word, so clients that match on the text
//! (WRONGTYPE, "not an integer", "wrong number of arguments") see what a
//! real server sends. Kept apart from the command table so every command
//! file shares one wording.

use crate::responders::redis::resp::Reply;

pub fn wrongtype() -> Reply {
    Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value")
}

pub fn not_int() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}

pub fn not_float() -> Reply {
    Reply::err("ERR value is not a valid float")
}

pub fn syntax() -> Reply {
    Reply::err("ERR syntax error")
}

pub fn no_such_key() -> Reply {
    Reply::err("ERR no such key")
}

pub fn unknown_subcommand(sub: &[u8], cmd: &str) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        clip(sub),
        cmd.to_ascii_uppercase()
    ))
}

pub fn wrong_args(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

/// An argument as text for an error message (Redis clips at 128 bytes).
pub fn clip(b: &[u8]) -> String {
    let b = &b[..b.len().min(128)];
    String::from_utf8_lossy(b).into_owned()
}
