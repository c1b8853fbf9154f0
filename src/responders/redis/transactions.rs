//! Transactions: MULTI, DISCARD, WATCH, UNWATCH and EXEC. Queued commands
//! run in EXEC under one hold of the keyspace lock (one critical section,
//! as in Redis), after the WATCHed keys' versions are compared; the
//! connection commands that may sit in a transaction are answered here
//! without leaving the lock.

use std::time::Instant;

use bytes::Bytes;

use super::commands::{self, table, CmdDef, R};
use super::resp::Reply;
use super::state::Store;
use super::{ConnState, Outcome, RedisService};
use crate::responders::ServeCtx;

/// Runs a queued scripting command inside EXEC, on the script thread.
pub(super) type ScriptRunner<'a> =
    dyn FnMut(&mut Store, &mut ConnState, &CmdDef, &[Bytes]) -> Reply + 'a;

impl RedisService {
    pub(super) fn multi(&self, conn: &mut ConnState) -> R {
        if conn.multi.is_some() {
            return Err(Reply::err("ERR MULTI calls can not be nested"));
        }
        conn.multi = Some(Vec::new());
        conn.multi_error = false;
        Ok(Reply::Ok)
    }

    pub(super) fn discard(&self, conn: &mut ConnState) -> R {
        if conn.multi.take().is_none() {
            return Err(Reply::err("ERR DISCARD without MULTI"));
        }
        conn.watched.clear();
        Ok(Reply::Ok)
    }

    /// WATCH: remembers each key's version for EXEC to compare.
    pub(super) fn watch(&self, conn: &mut ConnState, keys: &[Bytes]) -> R {
        if conn.multi.is_some() {
            return Err(Reply::err("ERR WATCH inside MULTI is not allowed"));
        }
        let store = self.lock();
        for k in keys {
            let v = store.version(conn.db, k);
            conn.watched.push((conn.db, k.clone(), v));
        }
        Ok(Reply::Ok)
    }

    pub(super) fn unwatch(&self, conn: &mut ConnState) -> R {
        conn.watched.clear();
        Ok(Reply::Ok)
    }

    pub(super) fn exec(&self, conn: &mut ConnState, ctx: &ServeCtx) -> R {
        let mut store = self.lock();
        self.exec_in(&mut store, conn, ctx, None)
    }

    /// EXEC with the lock held. Queued scripting commands (EVAL, SCRIPT,
    /// FCALL…) go to `script`, given when EXEC itself runs on the script
    /// thread (see `scripting`).
    pub(super) fn exec_in(
        &self,
        store: &mut Store,
        conn: &mut ConnState,
        ctx: &ServeCtx,
        mut script: Option<&mut ScriptRunner>,
    ) -> R {
        let Some(queue) = conn.multi.take() else {
            return Err(Reply::err("ERR EXEC without MULTI"));
        };
        let watched = std::mem::take(&mut conn.watched);
        if std::mem::take(&mut conn.multi_error) {
            return Err(Reply::err(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        if watched.iter().any(|(db, k, v)| store.version(*db, k) != *v) {
            return Ok(Reply::NilArray);
        }
        let mut replies = Vec::with_capacity(queue.len());
        for args in &queue {
            let started = Instant::now();
            let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
            let Some(def) = table().get(name.as_str()) else {
                continue;
            };
            let r = match script.as_deref_mut() {
                Some(run) if def.flags & commands::SCRIPTING != 0 => run(store, conn, def, args),
                _ => self.exec_locked(store, conn, def, args),
            };
            self.record(conn, ctx, def.name, args, &r, started, None);
            replies.push(r);
        }
        Ok(Reply::Array(replies))
    }

    /// A `SPECIAL` command queued in MULTI, run by EXEC with the lock held:
    /// the connection commands that make sense there; blocking pops answer
    /// at once.
    pub(super) fn special_in_exec(
        &self,
        store: &mut Store,
        conn: &mut ConnState,
        def: &CmdDef,
        args: &[Bytes],
    ) -> R {
        match def.name {
            "ping" => Ok(args
                .get(1)
                .map_or(Reply::simple("PONG"), |a| Reply::Bulk(a.clone()))),
            "select" => self.select(conn, &args[1]).map(|_| Reply::Ok),
            "blpop" | "brpop" | "blmove" | "brpoplpush" | "bzpopmin" | "bzpopmax" | "xread"
            | "xreadgroup" => self.block_in_exec(store, conn, def, args),
            "client" | "hello" | "auth" => match self.special(conn, def, args, &dummy_ctx()) {
                Outcome::Reply(r) => Ok(r),
                _ => Ok(Reply::Ok),
            },
            other => Err(Reply::Error(format!(
                "ERR Command not allowed inside a transaction: '{other}'"
            ))),
        }
    }
}

/// A context for connection commands run inside EXEC, where the flow's
/// addresses only feed CLIENT INFO.
fn dummy_ctx() -> ServeCtx {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    ServeCtx {
        tls_server_name: None,
        meta: crate::model::FlowMeta {
            id: 0,
            transport: crate::model::Transport::Tcp,
            src: any,
            dst: any,
            host: None,
        },
        upstream: crate::responders::Upstream::None,
        clock: crate::responders::deadline::RequestClock::unlimited(),
    }
}
