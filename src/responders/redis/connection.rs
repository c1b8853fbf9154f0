//! Connection commands: PING, HELLO (protocol switch), AUTH, SELECT,
//! RESET and CLIENT. They change only the connection's own state
//! (`ConnState`), never the keyspace, which is why they run outside the
//! keyspace lock; EXEC reuses them for the few that may sit in a
//! transaction.

use bytes::Bytes;

use super::commands::{self, R};
use super::resp::{self, Reply};
use super::{ConnState, RedisService, ReplyMode, REDIS_VERSION};
use crate::responders::ServeCtx;

impl RedisService {
    /// PING: PONG, the argument, or in RESP2 subscribed mode the
    /// `["pong", msg]` array.
    pub(super) fn ping(&self, conn: &ConnState, a: &[Bytes]) -> R {
        if a.len() > 2 {
            return Err(commands::wrong_args("ping"));
        }
        if !conn.resp3 && conn.subscribed() > 0 {
            let msg = a.get(1).cloned().unwrap_or_default();
            return Ok(Reply::Array(vec![Reply::bulk("pong"), Reply::Bulk(msg)]));
        }
        Ok(a.get(1)
            .map_or(Reply::simple("PONG"), |m| Reply::Bulk(m.clone())))
    }

    /// RESET: the connection as if new (subscriptions, transaction,
    /// database, protocol, name, reply mode, authentication).
    pub(super) fn reset_conn(&self, conn: &mut ConnState) -> Reply {
        self.unsubscribe_all(conn);
        conn.subs.clear();
        conn.psubs.clear();
        conn.multi = None;
        conn.multi_error = false;
        conn.watched.clear();
        conn.db = 0;
        conn.resp3 = false;
        conn.name = None;
        conn.reply_mode = ReplyMode::On;
        conn.authed = self.spec.password.is_none();
        Reply::simple("RESET")
    }

    pub(super) fn select(&self, conn: &mut ConnState, b: &[u8]) -> Result<(), Reply> {
        let n = commands::int(b)?;
        if n < 0 || n as usize >= self.spec.databases {
            return Err(Reply::err("ERR DB index is out of range"));
        }
        conn.db = n as usize;
        Ok(())
    }

    pub(super) fn hello(&self, conn: &mut ConnState, a: &[Bytes]) -> R {
        let mut proto = if conn.resp3 { 3 } else { 2 };
        if let Some(v) = a.get(1) {
            let n = resp::parse_i64(v).ok_or_else(|| {
                Reply::err("ERR Protocol version is not an integer or out of range")
            })?;
            if n != 2 && n != 3 {
                return Err(Reply::err("NOPROTO unsupported protocol version"));
            }
            proto = n;
        }
        let mut i = 2;
        let mut setname = None;
        while i < a.len() {
            if commands::eq(&a[i], "auth") && i + 2 < a.len() {
                self.check_password(&a[i + 1], &a[i + 2])?;
                conn.authed = true;
                i += 3;
            } else if commands::eq(&a[i], "setname") && i + 1 < a.len() {
                setname = Some(a[i + 1].clone());
                i += 2;
            } else {
                return Err(Reply::Error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    commands::clip(&a[i])
                )));
            }
        }
        if !conn.authed {
            return Err(Reply::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
        }
        if let Some(n) = setname {
            conn.name = Some(n);
        }
        conn.resp3 = proto == 3;
        Ok(Reply::Map(vec![
            (Reply::bulk("server"), Reply::bulk("redis")),
            (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
            (Reply::bulk("proto"), Reply::Int(proto)),
            (Reply::bulk("id"), Reply::Int(conn.id as i64)),
            (Reply::bulk("mode"), Reply::bulk("standalone")),
            (Reply::bulk("role"), Reply::bulk("master")),
            (Reply::bulk("modules"), Reply::Array(vec![])),
        ]))
    }

    fn check_password(&self, user: &[u8], pass: &[u8]) -> Result<(), Reply> {
        let wrong = || Reply::err("WRONGPASS invalid username-password pair or user is disabled.");
        if user != b"default" {
            return Err(wrong());
        }
        match &self.spec.password {
            None => Ok(()),
            Some(p) if p.as_bytes() == pass => Ok(()),
            Some(_) => Err(wrong()),
        }
    }

    pub(super) fn auth(&self, conn: &mut ConnState, a: &[Bytes]) -> R {
        match a.len() {
            2 => {
                if self.spec.password.is_none() {
                    return Err(Reply::err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"));
                }
                self.check_password(b"default", &a[1])?;
            }
            3 => self.check_password(&a[1], &a[2])?,
            _ => return Err(commands::syntax()),
        }
        conn.authed = true;
        Ok(Reply::Ok)
    }

    pub(super) fn client(&self, conn: &mut ConnState, a: &[Bytes], ctx: &ServeCtx) -> R {
        let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
        let need = |n: usize| -> Result<(), Reply> {
            if a.len() != n {
                return Err(commands::wrong_args(&format!("client|{sub}")));
            }
            Ok(())
        };
        match sub.as_str() {
            "setname" => {
                need(3)?;
                if a[2].iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                    return Err(Reply::err(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    ));
                }
                conn.name = (!a[2].is_empty()).then(|| a[2].clone());
                Ok(Reply::Ok)
            }
            "getname" => {
                need(2)?;
                Ok(conn.name.clone().map_or(Reply::Nil, Reply::Bulk))
            }
            "id" => {
                need(2)?;
                Ok(Reply::Int(conn.id as i64))
            }
            "setinfo" => {
                need(4)?;
                if commands::eq(&a[2], "lib-name") {
                    conn.lib.0 = Some(a[3].clone());
                } else if commands::eq(&a[2], "lib-ver") {
                    conn.lib.1 = Some(a[3].clone());
                } else {
                    return Err(Reply::Error(format!(
                        "ERR Unrecognized option '{}'",
                        commands::clip(&a[2])
                    )));
                }
                Ok(Reply::Ok)
            }
            "info" => {
                need(2)?;
                Ok(Reply::Verbatim(self.client_line(conn, ctx) + "\n"))
            }
            "list" => Ok(Reply::Verbatim(self.client_line(conn, ctx) + "\n")),
            "reply" => {
                need(3)?;
                conn.reply_mode = if commands::eq(&a[2], "on") {
                    ReplyMode::On
                } else if commands::eq(&a[2], "off") {
                    ReplyMode::Off
                } else if commands::eq(&a[2], "skip") {
                    ReplyMode::Skip
                } else {
                    return Err(commands::syntax());
                };
                // ON is acknowledged; OFF and SKIP are silent from here.
                Ok(if conn.reply_mode == ReplyMode::On {
                    Reply::Ok
                } else {
                    Reply::None
                })
            }
            "unblock" => Ok(Reply::Int(0)),
            "kill" => Err(Reply::err("ERR No such client")),
            "no-evict" | "no-touch" | "pause" | "unpause" | "tracking" | "caching" => Ok(Reply::Ok),
            "trackinginfo" => Ok(Reply::Map(vec![
                (Reply::bulk("flags"), Reply::Set(vec![Reply::simple("off")])),
                (Reply::bulk("redirect"), Reply::Int(-1)),
                (Reply::bulk("prefixes"), Reply::Array(vec![])),
            ])),
            "getredir" => Ok(Reply::Int(-1)),
            "help" => Ok(commands::bulks(
                [
                    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GETNAME",
                    "ID",
                    "INFO",
                    "LIST",
                    "REPLY (ON|OFF|SKIP)",
                    "SETINFO <option> <value>",
                    "SETNAME <name>",
                ]
                .into_iter()
                .map(|s: &'static str| Bytes::from_static(s.as_bytes())),
            )),
            _ => Err(commands::unknown_subcommand(&a[1], "client")),
        }
    }

    fn client_line(&self, conn: &ConnState, ctx: &ServeCtx) -> String {
        let s = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .unwrap_or_default()
        };
        format!(
            "id={} addr={} laddr={} fd=8 name={} age=0 idle=0 flags=N db={} sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user=default redir=-1 resp={} lib-name={} lib-ver={}",
            conn.id,
            conn.addr,
            ctx.meta.dst,
            s(&conn.name),
            conn.db,
            conn.subs.len(),
            conn.psubs.len(),
            conn.multi.as_ref().map_or(-1, |q| q.len() as i64),
            if conn.resp3 { 3 } else { 2 },
            s(&conn.lib.0),
            s(&conn.lib.1),
        )
    }
}
