//! Running one command: the checks Redis makes first (known name, arity,
//! AUTH, RESP2 subscribed mode, MULTI queueing), configured faults, then
//! dispatch through the `CmdDef` table in `commands`: a command with a
//! handler runs under the keyspace lock, a `SPECIAL` one goes by name to
//! the connection, transaction, pub/sub or blocking code. Kept apart from
//! the connection loop, which only hands commands in and writes outcomes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::commands::{self, table, CmdDef, Ctx, R};
use super::resp::Reply;
use super::state::Store;
use super::{ConnState, Outcome, RedisService};
use crate::responders::faults::pick_latency;
use crate::responders::ServeCtx;
use crate::rules::redis::RedisFaultKind;

/// Commands a RESP2 client in subscribed mode may send.
const SUBSCRIBED_OK: &[&str] = &[
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];
/// Commands that run at once inside MULTI instead of being queued.
const MULTI_NOW: &[&str] = &["exec", "discard", "multi", "watch", "quit", "reset"];

impl RedisService {
    /// Runs one command (checks, faults, dispatch) and records it.
    pub(super) async fn run(
        self: &Arc<Self>,
        conn: &mut ConnState,
        args: &[Bytes],
        ctx: &ServeCtx,
        started: Instant,
    ) -> Outcome {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let lower = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let def = table().get(lower.as_str());
        let early = |r: Reply| Outcome::Reply(r);
        // While a script runs, commands wait for it (or get BUSY, which
        // also dooms a transaction being queued, as Redis's refusals do).
        if let Err(mut r) = self.wait_turn(def, args).await {
            if conn.multi.is_some() {
                if def.is_some_and(|d| d.name == "exec") {
                    // Redis's execCommandAbort: the transaction goes.
                    conn.multi = None;
                    conn.multi_error = false;
                    conn.watched.clear();
                    if let Reply::Error(e) = &r {
                        r = Reply::Error(format!(
                            "EXECABORT Transaction discarded because of: {e}"
                        ));
                    }
                } else {
                    conn.multi_error = true;
                }
            }
            self.record(
                conn,
                ctx,
                def.map_or(lower.as_str(), |d| d.name),
                args,
                &r,
                started,
                None,
            );
            return early(r);
        }
        let Some(def) = def else {
            if conn.multi.is_some() {
                conn.multi_error = true;
            }
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with: ",
                commands::clip(&args[0])
            );
            for a in &args[1..] {
                msg.push_str(&format!("'{}' ", commands::clip(a)));
            }
            let r = Reply::Error(msg);
            self.record(conn, ctx, &lower, args, &r, started, None);
            return early(r);
        };
        let check = if !def.arity_ok(args.len()) {
            Some(commands::wrong_args(&lower))
        } else if !conn.authed && def.flags & commands::NOAUTH == 0 {
            Some(Reply::err("NOAUTH Authentication required."))
        } else if def.flags & commands::DENYOOM != 0 && crate::budget::over() {
            Some(Reply::err(
                "OOM command not allowed when used memory > 'maxmemory'.",
            ))
        } else if !conn.resp3 && conn.subscribed() > 0 && !SUBSCRIBED_OK.contains(&def.name) {
            Some(Reply::Error(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                def.name
            )))
        } else {
            None
        };
        if let Some(r) = check {
            if conn.multi.is_some() {
                conn.multi_error = true;
            }
            self.record(conn, ctx, def.name, args, &r, started, None);
            return early(r);
        }
        if let Some(q) = conn.multi.as_mut() {
            if !MULTI_NOW.contains(&def.name) {
                // Recorded when EXEC runs it, so a transaction's commands
                // count once each.
                q.push(args.to_vec());
                return early(Reply::simple("QUEUED"));
            }
        }
        let mut fault_label = None;
        if let Some(f) = self.pick_fault(def, args) {
            fault_label = Some(f.label());
            match f {
                RedisFaultKind::Latency(l) => {
                    tokio::time::sleep(pick_latency(l)).await;
                    // A script may have started meanwhile: take the turn
                    // again, or the keyspace lock below would block the
                    // data plane until the script ends.
                    if let Err(r) = self.wait_turn(Some(def), args).await {
                        self.record(conn, ctx, def.name, args, &r, started, fault_label);
                        return early(r);
                    }
                }
                RedisFaultKind::Error(e) => {
                    let r = Reply::Error(e.clone());
                    self.record(conn, ctx, def.name, args, &r, started, fault_label);
                    return early(r);
                }
                RedisFaultKind::Reset | RedisFaultKind::Hang => {
                    let reset = matches!(f, RedisFaultKind::Reset);
                    self.record(
                        conn,
                        ctx,
                        def.name,
                        args,
                        &Reply::None,
                        started,
                        fault_label,
                    );
                    return if reset { Outcome::Reset } else { Outcome::Hang };
                }
            }
        }
        let outcome = if def.flags & commands::SCRIPTING != 0 {
            Outcome::Reply(self.scripting(conn, def, args).await)
        } else if def.name == "exec" && queues_scripts(conn) {
            Outcome::Reply(self.exec_on_script_thread(conn, ctx).await)
        } else if def.flags & commands::SPECIAL != 0 {
            self.special(conn, def, args, ctx)
        } else {
            Outcome::Reply(self.run_sync(conn, def, args))
        };
        match &outcome {
            Outcome::Reply(r) | Outcome::Close(r) => {
                self.record(conn, ctx, def.name, args, r, started, fault_label)
            }
            Outcome::Many(rs) => {
                if let Some(r) = rs.first() {
                    self.record(conn, ctx, def.name, args, r, started, fault_label)
                }
            }
            // Recorded when the wait ends.
            Outcome::Block(..) => {}
            Outcome::Reset | Outcome::Hang => {}
        }
        outcome
    }

    /// The first fault that applies to this command and fires.
    fn pick_fault(&self, def: &CmdDef, args: &[Bytes]) -> Option<&RedisFaultKind> {
        let upper = def.name.to_ascii_uppercase();
        self.spec.faults.iter().enumerate().find_map(|(i, f)| {
            let cmd_ok = f.commands.is_empty() || f.commands.contains(&upper);
            let key_ok = match &f.key {
                None => true,
                Some(g) => def
                    .keys(args)
                    .first()
                    .is_some_and(|k| commands::glob(g.as_bytes(), k)),
            };
            (cmd_ok && key_ok && self.faults.admit(i, &f.when)).then_some(&f.kind)
        })
    }

    /// Runs an ordinary command under the keyspace lock.
    fn run_sync(&self, conn: &mut ConnState, def: &CmdDef, args: &[Bytes]) -> Reply {
        let mut store = self.lock();
        self.exec_locked(&mut store, conn, def, args)
    }

    /// Runs a command with the lock held (also EXEC's body).
    pub(super) fn exec_locked(
        &self,
        store: &mut Store,
        conn: &mut ConnState,
        def: &CmdDef,
        args: &[Bytes],
    ) -> Reply {
        let res: R = match def.run {
            Some(f) => f(
                &mut Ctx {
                    store,
                    conn,
                    svc: self,
                },
                args,
            ),
            // Inside EXEC: the connection commands that make sense there.
            None => self.special_in_exec(store, conn, def, args),
        };
        let reply = res.unwrap_or_else(|e| e);
        if def.flags & commands::WRITE != 0 && !reply.is_error() {
            let db = conn.db;
            for k in def.keys(args) {
                store.dbs[db].drop_if_empty(k);
                store.touch(db, k);
            }
            if self.blocked.load(Ordering::Relaxed) > 0 {
                self.written.notify_waiters();
            }
        }
        reply
    }

    /// The `SPECIAL` commands of the table, by name: connection state,
    /// transactions, pub/sub and the first try of a blocking pop.
    pub(super) fn special(
        &self,
        conn: &mut ConnState,
        def: &CmdDef,
        a: &[Bytes],
        ctx: &ServeCtx,
    ) -> Outcome {
        let r = |x: R| Outcome::Reply(x.unwrap_or_else(|e| e));
        match def.name {
            // connection.rs
            "ping" => r(self.ping(conn, a)),
            "hello" => r(self.hello(conn, a)),
            "auth" => r(self.auth(conn, a)),
            "client" => r(self.client(conn, a, ctx)),
            "select" => r(self.select(conn, &a[1]).map(|_| Reply::Ok)),
            "quit" => Outcome::Close(Reply::Ok),
            "reset" => r(Ok(self.reset_conn(conn))),
            // transactions.rs
            "multi" => r(self.multi(conn)),
            "discard" => r(self.discard(conn)),
            "exec" => r(self.exec(conn, ctx)),
            "watch" => r(self.watch(conn, &a[1..])),
            "unwatch" => r(self.unwatch(conn)),
            // pubsub.rs
            "subscribe" | "psubscribe" => {
                Outcome::Many(self.subscribe(conn, &a[1..], def.name == "psubscribe"))
            }
            "unsubscribe" | "punsubscribe" => {
                Outcome::Many(self.unsubscribe(conn, &a[1..], def.name == "punsubscribe"))
            }
            // blocking.rs
            "blpop" | "brpop" | "blmove" | "brpoplpush" | "bzpopmin" | "bzpopmax" | "xread"
            | "xreadgroup" => self.start_block(conn, def, a),
            other => r(Err(Reply::Error(format!("ERR unknown command '{other}'")))),
        }
    }
}

/// A transaction with a scripting command in it runs on the script thread.
fn queues_scripts(conn: &ConnState) -> bool {
    conn.multi.as_ref().is_some_and(|q| {
        q.iter().any(|args| {
            let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
            table()
                .get(name.as_str())
                .is_some_and(|d| d.flags & commands::SCRIPTING != 0)
        })
    })
}
