//! The Redis responder: RESP2 and RESP3 over any number of connections,
//! all sharing one keyspace per service for the whole run.
//!
//! Shape: the keyspace sits behind one mutex per service and every
//! ordinary command runs synchronously under it, so commands are atomic
//! as in Redis and a transaction's EXEC is one critical section.
//! Connection-level commands (HELLO, AUTH, SELECT, MULTI/EXEC, pub/sub)
//! and blocking pops run in the connection's own loop. Blocked clients
//! wait on a `Notify` that every successful write wakes, and re-check.

pub mod commands;
pub mod resp;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::events::{now_rfc3339, Event, EventSink, RedisEvent};
use crate::rules::redis::{RedisFaultKind, RedisSpec};
use crate::stack::FlowHandle;

use super::ServeCtx;
use commands::{lists::BlockOp, table, CmdDef, Ctx, R};
use resp::Reply;
use state::Store;

/// The version the responder claims in HELLO and INFO.
pub const REDIS_VERSION: &str = "7.2.4";

/// Subscribers of one channel or pattern, by client id.
type Subscribers = HashMap<u64, mpsc::UnboundedSender<Reply>>;

#[derive(Default)]
struct PubSub {
    channels: HashMap<Bytes, Subscribers>,
    patterns: HashMap<Bytes, Subscribers>,
}

/// Counters for INFO.
#[derive(Default)]
pub struct Stats {
    pub connected: u64,
    pub blocked: u64,
    pub connections: u64,
    pub commands: u64,
    pub hits: u64,
    pub misses: u64,
    pub channels: u64,
    pub patterns: u64,
    pub pubsub_clients: u64,
}

/// One mocked Redis service and its state for the whole run.
pub struct RedisService {
    name: String,
    spec: Arc<RedisSpec>,
    store: Mutex<Store>,
    pub(crate) config: Mutex<Vec<(String, String)>>,
    pubsub: Mutex<PubSub>,
    /// Woken after every successful write, for blocked pops.
    written: Notify,
    events: EventSink,
    /// Build full events (an events file is written or `expect:` entries
    /// name this service); otherwise only count.
    detail: bool,
    next_client: AtomicU64,
    connected: AtomicU64,
    blocked: AtomicU64,
    connections: AtomicU64,
    commands: AtomicU64,
    pub started_ms: i64,
    pub run_id: String,
    pub port: u16,
}

impl RedisService {
    pub fn new(
        name: &str,
        spec: Arc<RedisSpec>,
        events: EventSink,
        port: u16,
        journal: bool,
    ) -> Self {
        let config =
            commands::server::default_config(spec.databases, spec.password.as_deref(), port);
        RedisService {
            name: name.to_string(),
            store: Mutex::new(Store::new(&spec)),
            config: Mutex::new(config),
            pubsub: Mutex::new(PubSub::default()),
            written: Notify::new(),
            detail: journal,
            events,
            spec,
            next_client: AtomicU64::new(1),
            connected: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            started_ms: state::now_ms(),
            run_id: uuid::Uuid::new_v4().simple().to_string() + "00000000",
            port,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts the keyspace back to its seed.
    pub fn reset(&self) {
        let mut s = self.lock();
        *s = Store::new(&self.spec);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pubsub(&self) -> std::sync::MutexGuard<'_, PubSub> {
        self.pubsub.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> Stats {
        let ps = self.pubsub();
        let mut clients: std::collections::HashSet<u64> = Default::default();
        for subs in ps.channels.values().chain(ps.patterns.values()) {
            clients.extend(subs.keys());
        }
        Stats {
            connected: self.connected.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            hits: 0,
            misses: 0,
            channels: ps.channels.len() as u64,
            patterns: ps.patterns.len() as u64,
            pubsub_clients: clients.len() as u64,
        }
    }

    /// Delivers a message; returns how many subscriptions received it.
    pub fn publish(&self, channel: &Bytes, msg: &Bytes) -> usize {
        let ps = self.pubsub();
        let mut n = 0;
        if let Some(subs) = ps.channels.get(channel) {
            for tx in subs.values() {
                let m = Reply::Push(vec![
                    Reply::bulk("message"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(msg.clone()),
                ]);
                if tx.send(m).is_ok() {
                    n += 1;
                }
            }
        }
        for (pat, subs) in &ps.patterns {
            if commands::glob(pat, channel) {
                for tx in subs.values() {
                    let m = Reply::Push(vec![
                        Reply::bulk("pmessage"),
                        Reply::Bulk(pat.clone()),
                        Reply::Bulk(channel.clone()),
                        Reply::Bulk(msg.clone()),
                    ]);
                    if tx.send(m).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    pub fn pubsub_channels(&self) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self.pubsub().channels.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn pubsub_numsub(&self, chans: &[Bytes]) -> Vec<(Bytes, usize)> {
        let ps = self.pubsub();
        chans
            .iter()
            .map(|c| (c.clone(), ps.channels.get(c).map_or(0, |s| s.len())))
            .collect()
    }

    pub fn pubsub_numpat(&self) -> usize {
        self.pubsub().patterns.len()
    }
}

/// What CLIENT REPLY set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// Skip the next reply only.
    Skip,
}

/// One connection's state.
pub struct ConnState {
    pub id: u64,
    pub db: usize,
    pub resp3: bool,
    authed: bool,
    name: Option<Bytes>,
    lib: (Option<Bytes>, Option<Bytes>),
    multi: Option<Vec<Vec<Bytes>>>,
    /// A command queued in MULTI was refused: EXEC must abort.
    multi_error: bool,
    watched: Vec<(usize, Bytes, u64)>,
    subs: IndexSet<Bytes>,
    psubs: IndexSet<Bytes>,
    push: mpsc::UnboundedSender<Reply>,
    reply_mode: ReplyMode,
    addr: String,
}

impl ConnState {
    fn subscribed(&self) -> usize {
        self.subs.len() + self.psubs.len()
    }
}

/// What the connection loop does after a command.
enum Outcome {
    Reply(Reply),
    /// Several replies (SUBSCRIBE with several channels).
    Many(Vec<Reply>),
    /// Write the reply, then close (QUIT).
    Close(Reply),
    /// Wait for a list push (or the deadline).
    Block(BlockOp, Option<tokio::time::Instant>),
    /// Reset the connection (a fault).
    Reset,
    /// Stop answering (a fault).
    Hang,
}

/// Serves one connection until the client is done.
pub async fn serve<IO>(svc: Arc<RedisService>, mut io: IO, ctx: ServeCtx, handle: FlowHandle)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut conn = ConnState {
        id: svc.next_client.fetch_add(1, Ordering::Relaxed),
        db: 0,
        resp3: false,
        authed: svc.spec.password.is_none(),
        name: None,
        lib: (None, None),
        multi: None,
        multi_error: false,
        watched: Vec::new(),
        subs: IndexSet::new(),
        psubs: IndexSet::new(),
        push: tx,
        reply_mode: ReplyMode::On,
        addr: ctx.meta.src.to_string(),
    };
    svc.connected.fetch_add(1, Ordering::Relaxed);
    svc.connections.fetch_add(1, Ordering::Relaxed);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    'conn: loop {
        loop {
            let args = match resp::decode(&mut buf) {
                Ok(Some(a)) if a.is_empty() => continue,
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(e) => {
                    // Redis answers a malformed request and closes only
                    // this connection.
                    let reply = Reply::Error(format!("ERR {e}"));
                    svc.record(
                        &conn,
                        &ctx,
                        "(protocol)",
                        None,
                        &reply,
                        Instant::now(),
                        None,
                    );
                    reply.encode(&mut out, conn.resp3);
                    let _ = io.write_all(&out).await;
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    break 'conn;
                }
            };
            let started = Instant::now();
            let outcome = svc.run(&mut conn, &args, &ctx, started).await;
            match outcome {
                Outcome::Reply(r) => emit(&mut conn, &mut out, &r),
                Outcome::Many(rs) => rs.iter().for_each(|r| emit(&mut conn, &mut out, r)),
                Outcome::Close(r) => {
                    r.encode(&mut out, conn.resp3);
                    let _ = io.write_all(&out).await;
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    break 'conn;
                }
                Outcome::Block(op, deadline) => {
                    // Earlier pipelined replies go out before the wait.
                    if !out.is_empty() {
                        if io.write_all(&out).await.is_err() {
                            break 'conn;
                        }
                        out.clear();
                    }
                    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
                    let Some(reply) = svc
                        .wait_block(&mut conn, &mut io, &mut buf, &op, deadline)
                        .await
                    else {
                        break 'conn;
                    };
                    let key = args.get(1).cloned();
                    svc.record(&conn, &ctx, &name, key.as_ref(), &reply, started, None);
                    emit(&mut conn, &mut out, &reply);
                }
                Outcome::Reset => {
                    let _ = io.write_all(&out).await;
                    let _ = io.flush().await;
                    handle.abort_after_flush();
                    drain(&mut io).await;
                    break 'conn;
                }
                Outcome::Hang => {
                    let _ = io.write_all(&out).await;
                    let _ = io.flush().await;
                    drain(&mut io).await;
                    break 'conn;
                }
            }
            // A long pipeline is answered in pieces, not buffered whole.
            if out.len() >= 64 * 1024 {
                if io.write_all(&out).await.is_err() {
                    break 'conn;
                }
                out.clear();
            }
        }
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        tokio::select! {
            n = io.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Some(m) = rx.recv() => {
                m.encode(&mut out, conn.resp3);
                while let Ok(m) = rx.try_recv() {
                    m.encode(&mut out, conn.resp3);
                }
            }
        }
    }
    svc.unsubscribe_all(&conn);
    svc.connected.fetch_sub(1, Ordering::Relaxed);
}

/// Encodes a reply unless CLIENT REPLY says otherwise.
fn emit(conn: &mut ConnState, out: &mut Vec<u8>, r: &Reply) {
    match conn.reply_mode {
        ReplyMode::On => r.encode(out, conn.resp3),
        ReplyMode::Off => {}
        ReplyMode::Skip => conn.reply_mode = ReplyMode::On,
    }
}

/// Reads and drops until the client closes (or a minute passes).
async fn drain<IO: AsyncRead + Unpin>(io: &mut IO) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

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
    async fn run(
        &self,
        conn: &mut ConnState,
        args: &[Bytes],
        ctx: &ServeCtx,
        started: Instant,
    ) -> Outcome {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let lower = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let key = args.get(1);
        let def = table().get(lower.as_str());
        let early = |r: Reply| Outcome::Reply(r);
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
            self.record(conn, ctx, &lower, key, &r, started, None);
            return early(r);
        };
        let check = if !def.arity_ok(args.len()) {
            Some(commands::wrong_args(&lower))
        } else if !conn.authed && def.flags & commands::NOAUTH == 0 {
            Some(Reply::err("NOAUTH Authentication required."))
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
            self.record(conn, ctx, def.name, key, &r, started, None);
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
                RedisFaultKind::Latency(l) => tokio::time::sleep(pick_latency(l)).await,
                RedisFaultKind::Error(e) => {
                    let r = Reply::Error(e.clone());
                    self.record(conn, ctx, def.name, key, &r, started, fault_label);
                    return early(r);
                }
                RedisFaultKind::Reset => {
                    self.record(conn, ctx, def.name, key, &Reply::None, started, fault_label);
                    return Outcome::Reset;
                }
                RedisFaultKind::Hang => {
                    self.record(conn, ctx, def.name, key, &Reply::None, started, fault_label);
                    return Outcome::Hang;
                }
            }
        }
        let outcome = if def.flags & commands::SPECIAL != 0 {
            self.special(conn, def, args, ctx)
        } else {
            Outcome::Reply(self.run_sync(conn, def, args))
        };
        match &outcome {
            Outcome::Reply(r) | Outcome::Close(r) => {
                self.record(conn, ctx, def.name, key, r, started, fault_label)
            }
            Outcome::Many(rs) => {
                if let Some(r) = rs.first() {
                    self.record(conn, ctx, def.name, key, r, started, fault_label)
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
        self.spec.faults.iter().find_map(|f| {
            let cmd_ok = f.commands.is_empty() || f.commands.contains(&upper);
            let key_ok = match &f.key {
                None => true,
                Some(g) => def
                    .keys(args)
                    .first()
                    .is_some_and(|k| commands::glob(g.as_bytes(), k)),
            };
            let fires = f.probability >= 1.0 || rand::random::<f64>() < f.probability;
            (cmd_ok && key_ok && fires).then_some(&f.kind)
        })
    }

    /// Runs an ordinary command under the keyspace lock.
    fn run_sync(&self, conn: &mut ConnState, def: &CmdDef, args: &[Bytes]) -> Reply {
        let mut store = self.lock();
        self.exec_locked(&mut store, conn, def, args)
    }

    /// Runs a command with the lock held (also EXEC's body).
    fn exec_locked(
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

    fn special_in_exec(
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
            "blpop" | "brpop" | "blmove" | "brpoplpush" => {
                // A transaction never blocks: it answers as if timed out.
                let (op, _) = commands::lists::parse_block(def.name, args)?;
                let got = commands::lists::try_block(
                    &mut Ctx {
                        store,
                        conn,
                        svc: self,
                    },
                    &op,
                )?;
                Ok(got.unwrap_or(match op {
                    BlockOp::Pop { .. } => Reply::NilArray,
                    BlockOp::Move { .. } => Reply::Nil,
                }))
            }
            "client" | "hello" | "auth" => match self.special(conn, def, args, &dummy_ctx()) {
                Outcome::Reply(r) => Ok(r),
                _ => Ok(Reply::Ok),
            },
            other => Err(Reply::Error(format!(
                "ERR Command not allowed inside a transaction: '{other}'"
            ))),
        }
    }

    fn select(&self, conn: &mut ConnState, b: &[u8]) -> Result<(), Reply> {
        let n = commands::int(b)?;
        if n < 0 || n as usize >= self.spec.databases {
            return Err(Reply::err("ERR DB index is out of range"));
        }
        conn.db = n as usize;
        Ok(())
    }

    /// Connection-level commands, transactions, pub/sub and the first try
    /// of a blocking pop.
    fn special(&self, conn: &mut ConnState, def: &CmdDef, a: &[Bytes], ctx: &ServeCtx) -> Outcome {
        let r = |x: R| Outcome::Reply(x.unwrap_or_else(|e| e));
        match def.name {
            "ping" => {
                if a.len() > 2 {
                    return r(Err(commands::wrong_args("ping")));
                }
                if !conn.resp3 && conn.subscribed() > 0 {
                    let msg = a.get(1).cloned().unwrap_or_default();
                    return r(Ok(Reply::Array(vec![
                        Reply::bulk("pong"),
                        Reply::Bulk(msg),
                    ])));
                }
                r(Ok(a.get(1).map_or(Reply::simple("PONG"), |m| {
                    Reply::Bulk(m.clone())
                })))
            }
            "hello" => r(self.hello(conn, a)),
            "auth" => r(self.auth(conn, a)),
            "client" => r(self.client(conn, a, ctx)),
            "select" => r(self.select(conn, &a[1]).map(|_| Reply::Ok)),
            "quit" => Outcome::Close(Reply::Ok),
            "reset" => {
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
                r(Ok(Reply::simple("RESET")))
            }
            "multi" => {
                if conn.multi.is_some() {
                    return r(Err(Reply::err("ERR MULTI calls can not be nested")));
                }
                conn.multi = Some(Vec::new());
                conn.multi_error = false;
                r(Ok(Reply::Ok))
            }
            "discard" => {
                if conn.multi.take().is_none() {
                    return r(Err(Reply::err("ERR DISCARD without MULTI")));
                }
                conn.watched.clear();
                r(Ok(Reply::Ok))
            }
            "exec" => r(self.exec(conn, ctx)),
            "watch" => {
                if conn.multi.is_some() {
                    return r(Err(Reply::err("ERR WATCH inside MULTI is not allowed")));
                }
                let store = self.lock();
                for k in &a[1..] {
                    let v = store.version(conn.db, k);
                    conn.watched.push((conn.db, k.clone(), v));
                }
                r(Ok(Reply::Ok))
            }
            "unwatch" => {
                conn.watched.clear();
                r(Ok(Reply::Ok))
            }
            "subscribe" | "psubscribe" => {
                Outcome::Many(self.subscribe(conn, &a[1..], def.name == "psubscribe"))
            }
            "unsubscribe" | "punsubscribe" => {
                Outcome::Many(self.unsubscribe(conn, &a[1..], def.name == "punsubscribe"))
            }
            "blpop" | "brpop" | "blmove" | "brpoplpush" => {
                let (op, timeout) = match commands::lists::parse_block(def.name, a) {
                    Ok(x) => x,
                    Err(e) => return r(Err(e)),
                };
                let mut store = self.lock();
                match commands::lists::try_block(
                    &mut Ctx {
                        store: &mut store,
                        conn,
                        svc: self,
                    },
                    &op,
                ) {
                    Ok(Some(reply)) => {
                        let db = conn.db;
                        for k in def.keys(a) {
                            store.touch(db, k);
                        }
                        r(Ok(reply))
                    }
                    Ok(None) => {
                        let deadline = (timeout > 0.0).then(|| {
                            tokio::time::Instant::now() + Duration::from_secs_f64(timeout)
                        });
                        Outcome::Block(op, deadline)
                    }
                    Err(e) => r(Err(e)),
                }
            }
            other => r(Err(Reply::Error(format!("ERR unknown command '{other}'")))),
        }
    }

    fn hello(&self, conn: &mut ConnState, a: &[Bytes]) -> R {
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

    fn auth(&self, conn: &mut ConnState, a: &[Bytes]) -> R {
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

    fn client(&self, conn: &mut ConnState, a: &[Bytes], ctx: &ServeCtx) -> R {
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

    fn exec(&self, conn: &mut ConnState, ctx: &ServeCtx) -> R {
        let Some(queue) = conn.multi.take() else {
            return Err(Reply::err("ERR EXEC without MULTI"));
        };
        let watched = std::mem::take(&mut conn.watched);
        if std::mem::take(&mut conn.multi_error) {
            return Err(Reply::err(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        let mut store = self.lock();
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
            let r = self.exec_locked(&mut store, conn, def, args);
            self.record(conn, ctx, def.name, args.get(1), &r, started, None);
            replies.push(r);
        }
        Ok(Reply::Array(replies))
    }

    fn subscribe(&self, conn: &mut ConnState, chans: &[Bytes], pattern: bool) -> Vec<Reply> {
        let mut ps = self.pubsub();
        let kind = if pattern { "psubscribe" } else { "subscribe" };
        let mut out = Vec::new();
        for ch in chans {
            let map = if pattern {
                &mut ps.patterns
            } else {
                &mut ps.channels
            };
            map.entry(ch.clone())
                .or_default()
                .insert(conn.id, conn.push.clone());
            if pattern {
                conn.psubs.insert(ch.clone());
            } else {
                conn.subs.insert(ch.clone());
            }
            out.push(Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Bulk(ch.clone()),
                Reply::Int(conn.subscribed() as i64),
            ]));
        }
        out
    }

    fn unsubscribe(&self, conn: &mut ConnState, chans: &[Bytes], pattern: bool) -> Vec<Reply> {
        let mut ps = self.pubsub();
        let kind = if pattern {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let targets: Vec<Bytes> = if chans.is_empty() {
            let mine = if pattern { &conn.psubs } else { &conn.subs };
            mine.iter().cloned().collect()
        } else {
            chans.to_vec()
        };
        let mut out = Vec::new();
        for ch in &targets {
            let map = if pattern {
                &mut ps.patterns
            } else {
                &mut ps.channels
            };
            if let Some(subs) = map.get_mut(ch) {
                subs.remove(&conn.id);
                if subs.is_empty() {
                    map.remove(ch);
                }
            }
            if pattern {
                conn.psubs.shift_remove(ch);
            } else {
                conn.subs.shift_remove(ch);
            }
            out.push(Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Bulk(ch.clone()),
                Reply::Int(conn.subscribed() as i64),
            ]));
        }
        if out.is_empty() {
            out.push(Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Nil,
                Reply::Int(conn.subscribed() as i64),
            ]));
        }
        out
    }

    fn unsubscribe_all(&self, conn: &ConnState) {
        let mut ps = self.pubsub();
        let PubSub { channels, patterns } = &mut *ps;
        for (set, map) in [(&conn.subs, channels), (&conn.psubs, patterns)] {
            for ch in set {
                if let Some(subs) = map.get_mut(ch) {
                    subs.remove(&conn.id);
                    if subs.is_empty() {
                        map.remove(ch);
                    }
                }
            }
        }
    }

    /// Waits for a blocked pop to succeed or time out; `None` when the
    /// client went away. Bytes the client sends meanwhile are kept for
    /// after the reply, as Redis does.
    async fn wait_block<IO: AsyncRead + Unpin>(
        &self,
        conn: &mut ConnState,
        io: &mut IO,
        buf: &mut BytesMut,
        op: &BlockOp,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Reply> {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        let timed_out = match op {
            BlockOp::Pop { .. } => Reply::NilArray,
            BlockOp::Move { .. } => Reply::Nil,
        };
        let result = loop {
            let notified = self.written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut store = self.lock();
                match commands::lists::try_block(
                    &mut Ctx {
                        store: &mut store,
                        conn,
                        svc: self,
                    },
                    op,
                ) {
                    Ok(Some(r)) => {
                        let db = conn.db;
                        let keys: Vec<Bytes> = match op {
                            BlockOp::Pop { keys, .. } => keys.clone(),
                            BlockOp::Move { src, dst, .. } => vec![src.clone(), dst.clone()],
                        };
                        for k in &keys {
                            store.touch(db, k);
                        }
                        break Some(r);
                    }
                    Ok(None) => {}
                    Err(e) => break Some(e),
                }
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = sleep => break Some(timed_out),
                n = io.read_buf(buf) => match n {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {}
                },
            }
        };
        self.blocked.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Records one command: a full event when events are written or
    /// expectations need them, a count otherwise.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        conn: &ConnState,
        ctx: &ServeCtx,
        command: &str,
        key: Option<&Bytes>,
        reply: &Reply,
        started: Instant,
        fault: Option<&'static str>,
    ) {
        let command = command.to_ascii_uppercase();
        let error = match reply {
            Reply::Error(e) => Some(e.clone()),
            _ => None,
        };
        if !self.detail && !self.events.wants_detail() {
            self.events
                .count_redis(&self.name, &command, error.is_some());
            return;
        }
        // Connection chatter has no key.
        let key = key
            .filter(|_| {
                table()
                    .get(command.to_ascii_lowercase().as_str())
                    .is_some_and(|d| d.first_key > 0)
            })
            .map(|k| commands::clip(k));
        self.events.record(Event::Redis(RedisEvent {
            time: now_rfc3339(),
            flow_id: ctx.meta.id,
            service: self.name.clone(),
            command,
            key,
            db: conn.db,
            reply: reply.label(),
            error,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            fault,
        }));
    }
}

fn pick_latency(l: &crate::rules::http::LatencySpec) -> Duration {
    if l.max <= l.min {
        return l.min;
    }
    let span = (l.max - l.min).as_secs_f64();
    l.min + Duration::from_secs_f64(span * rand::random::<f64>())
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
        upstream: super::Upstream::None,
    }
}
