//! What the journal shows of a command and its reply: the arguments and a
//! one-line rendering of the reply, as `redis-cli` prints them, both
//! clipped so that a huge value or reply costs the journal a bounded
//! amount whatever the client sent. Passwords are replaced unless
//! `--no-redact` is given.

use bytes::Bytes;

use super::resp::Reply;

/// Arguments kept per command (after the command name).
const MAX_ARGS: usize = 16;
/// Bytes kept of each argument or string in a reply.
const MAX_ITEM: usize = 128;
/// Characters of the whole reply rendering.
const MAX_REPLY: usize = 1024;
/// Nested replies shown (deeper ones are `[…]`).
const MAX_DEPTH: usize = 3;
/// Elements shown per array, set, map or push.
const MAX_ELEMENTS: usize = 16;

const REDACTED: &str = "<redacted>";

fn clip(b: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&b[..b.len().min(MAX_ITEM)]).into_owned();
    if b.len() > MAX_ITEM {
        s.push('…');
    }
    s
}

/// Which arguments (0 = the first after the command) hold a secret.
fn is_secret(command: &str, args: &[Bytes], i: usize) -> bool {
    let word = |j: usize| args.get(j).map(|a| a.to_ascii_uppercase());
    match command {
        "AUTH" => true,
        // HELLO 3 AUTH user pass
        "HELLO" => {
            i >= 1 && word(i - 1).is_some_and(|w| w == b"AUTH")
                || i >= 2 && word(i - 2).is_some_and(|w| w == b"AUTH")
        }
        // CONFIG SET requirepass secret / masterauth secret
        "CONFIG" => {
            i >= 1 && word(i - 1).is_some_and(|w| w == b"REQUIREPASS" || w == b"MASTERAUTH")
        }
        _ => false,
    }
}

/// The arguments after the command name, clipped; secrets replaced when
/// `redact`.
pub fn args_preview(command: &str, args: &[Bytes], redact: bool) -> Vec<String> {
    let rest = args.get(1..).unwrap_or_default();
    let mut out: Vec<String> = rest
        .iter()
        .take(MAX_ARGS)
        .enumerate()
        .map(|(i, a)| {
            if redact && is_secret(command, rest, i) {
                REDACTED.to_string()
            } else {
                clip(a)
            }
        })
        .collect();
    if rest.len() > MAX_ARGS {
        out.push(format!("… {} more", rest.len() - MAX_ARGS));
    }
    out
}

/// The reply in one line, in `redis-cli`'s words (`"value"`, `(integer) 3`,
/// `(nil)`, `(error) ERR …`, `1) "a" 2) "b"`), at most `MAX_REPLY` chars.
pub fn reply_preview(reply: &Reply) -> String {
    let mut out = String::new();
    render(reply, 0, &mut out);
    crate::events::clip_text(&mut out, MAX_REPLY);
    out
}

fn render(r: &Reply, depth: usize, out: &mut String) {
    if out.len() > MAX_REPLY {
        return;
    }
    match r {
        Reply::Ok => out.push_str("OK"),
        Reply::Simple(s) => out.push_str(&clip(s.as_bytes())),
        Reply::Error(e) => {
            out.push_str("(error) ");
            out.push_str(&clip(e.as_bytes()));
        }
        Reply::Int(i) => out.push_str(&format!("(integer) {i}")),
        Reply::Bulk(b) => out.push_str(&format!("{:?}", clip(b))),
        Reply::Verbatim(s) => out.push_str(&format!("{:?}", clip(s.as_bytes()))),
        Reply::Nil | Reply::NilArray => out.push_str("(nil)"),
        Reply::Double(d) => out.push_str(&format!("(double) {d}")),
        Reply::Bool(b) => out.push_str(&format!("(boolean) {b}")),
        Reply::None => out.push_str("(no reply)"),
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            if items.is_empty() {
                out.push_str("(empty array)");
            } else if depth >= MAX_DEPTH {
                out.push_str("[…]");
            } else {
                list(items.iter().map(|i| (i, None)), items.len(), depth, out)
            }
        }
        Reply::Map(pairs) => {
            if pairs.is_empty() {
                out.push_str("(empty map)");
            } else if depth >= MAX_DEPTH {
                out.push_str("{…}");
            } else {
                list(
                    pairs.iter().map(|(k, v)| (k, Some(v))),
                    pairs.len(),
                    depth,
                    out,
                )
            }
        }
    }
}

fn list<'a>(
    items: impl Iterator<Item = (&'a Reply, Option<&'a Reply>)>,
    len: usize,
    depth: usize,
    out: &mut String,
) {
    if depth > 0 {
        out.push('[');
    }
    for (n, (item, value)) in items.take(MAX_ELEMENTS).enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{}) ", n + 1));
        render(item, depth + 1, out);
        if let Some(v) = value {
            out.push_str(" => ");
            render(v, depth + 1, out);
        }
    }
    if len > MAX_ELEMENTS {
        out.push_str(&format!(" … {} more", len - MAX_ELEMENTS));
    }
    if depth > 0 {
        out.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|a| Bytes::from(a.to_string())).collect()
    }

    #[test]
    fn secrets_are_redacted_and_kept_on_request() {
        let a = args(&["HELLO", "3", "AUTH", "alice", "s3cret", "SETNAME", "x"]);
        assert_eq!(
            args_preview("HELLO", &a, true),
            ["3", "AUTH", REDACTED, REDACTED, "SETNAME", "x"]
        );
        assert_eq!(args_preview("HELLO", &a, false)[3], "s3cret");
        let a = args(&["AUTH", "pw"]);
        assert_eq!(args_preview("AUTH", &a, true), [REDACTED]);
        let a = args(&["CONFIG", "SET", "requirepass", "pw"]);
        assert_eq!(
            args_preview("CONFIG", &a, true),
            ["SET", "requirepass", REDACTED]
        );
        let a = args(&["SET", "k", "v"]);
        assert_eq!(args_preview("SET", &a, true), ["k", "v"]);
    }

    #[test]
    fn big_commands_and_replies_are_clipped() {
        let mut a = vec![Bytes::from("RPUSH"), Bytes::from(vec![b'x'; 10_000])];
        a.extend((0..100).map(|i| Bytes::from(i.to_string())));
        let p = args_preview("RPUSH", &a, true);
        assert_eq!(p.len(), MAX_ARGS + 1);
        assert_eq!(p[0].chars().count(), MAX_ITEM + 1);
        assert_eq!(p[MAX_ARGS], "… 85 more");

        let mut deep = Reply::Int(1);
        for _ in 0..10_000 {
            deep = Reply::Array(vec![deep]);
        }
        assert_eq!(reply_preview(&deep), "1) [1) [1) […]]]");
        let wide = Reply::Array(
            (0..100_000)
                .map(|_| Reply::bulk(vec![b'y'; 1000]))
                .collect(),
        );
        assert!(reply_preview(&wide).chars().count() <= MAX_REPLY + 1);
    }

    #[test]
    fn replies_read_like_redis_cli() {
        assert_eq!(reply_preview(&Reply::bulk("v")), "\"v\"");
        assert_eq!(reply_preview(&Reply::Int(3)), "(integer) 3");
        assert_eq!(reply_preview(&Reply::Nil), "(nil)");
        assert_eq!(
            reply_preview(&Reply::Array(vec![Reply::bulk("a"), Reply::bulk("b")])),
            "1) \"a\" 2) \"b\""
        );
        assert_eq!(
            reply_preview(&Reply::Map(vec![(Reply::bulk("f"), Reply::Int(1))])),
            "1) \"f\" => (integer) 1"
        );
        assert_eq!(reply_preview(&Reply::err("ERR x")), "(error) ERR x");
    }
}
