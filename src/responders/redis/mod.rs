//! The Redis responder: RESP2 and RESP3 over any number of connections,
//! all sharing one keyspace per service for the whole run.
//!
//! Shape: the keyspace sits behind one mutex per service and every
//! ordinary command runs synchronously under it, so commands are atomic
//! as in Redis and a transaction's EXEC is one critical section.
//! Connection-level commands (HELLO, AUTH, SELECT, MULTI/EXEC, pub/sub)
//! and blocking pops run in the connection's own loop. Blocked clients
//! wait on a `Notify` that every successful write wakes, and re-check.
//!
//! This file holds the service, the connection state and loop (`serve`)
//! and event recording; the rest is split by concern: `dispatch` (checks,
//! faults and the way through the `commands` table), `connection`,
//! `transactions`, `pubsub` and `blocking`.

mod blocking;
pub mod commands;
mod connection;
mod dispatch;
mod encode;
mod journal;
mod pubsub;
pub mod resp;
mod responder;
mod scripting;
pub mod state;
pub mod stream;
mod transactions;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use indexmap::IndexSet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::events::{now_rfc3339, Event, EventSink, ExchangeEvent};
use crate::io::buffers;
use crate::rules::redis::RedisSpec;
use crate::stack::FlowHandle;

use super::ServeCtx;
use commands::{lists::BlockOp, table};
use pubsub::PubSub;
use resp::Reply;
pub use responder::{RedisDetail, INFO};
use state::Store;

/// The version the responder claims in HELLO and INFO.
pub const REDIS_VERSION: &str = "7.2.4";

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
    /// The faults' counters (`after`, `times`).
    faults: FaultGate,
    /// Lua scripting: the script thread and what it shares with the
    /// connections.
    scripts: scripting::Scripts,
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
        let faults = FaultGate::new(spec.faults.len());
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
            faults,
            scripts: scripting::Scripts::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts the keyspace back to its seed, and forgets scripts and
    /// function libraries. While a script runs, that happens when it ends
    /// (it is killed), on the script thread.
    pub fn reset(&self) {
        if !self.scripts.reset_later() {
            self.reset_now();
            self.scripts.reset();
        }
    }

    fn reset_now(&self) {
        let mut s = self.lock();
        *s = Store::new(&self.spec);
        self.faults.reset();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pubsub(&self) -> std::sync::MutexGuard<'_, PubSub> {
        self.pubsub.lock().unwrap_or_else(|e| e.into_inner())
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

/// Error replies a client asks for on purpose, to learn what the server
/// supports, and goes on without: redis-py's `CLIENT MAINT_NOTIFICATIONS`
/// (Redis 8.2 and later only) and a `HELLO` for a protocol the server does
/// not speak (`NOPROTO`, the client stays on RESP2).
fn is_probe(command: &str, first_arg: Option<&Bytes>, error: &str) -> bool {
    match command {
        "CLIENT" => first_arg.is_some_and(|a| a.eq_ignore_ascii_case(b"maint_notifications")),
        "HELLO" => error.starts_with("NOPROTO"),
        _ => false,
    }
}

/// Serves one connection until the client is done.
pub async fn serve<IO>(svc: Arc<RedisService>, mut io: IO, ctx: ServeCtx, flow: FlowHandle)
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
    let mut buf = BytesMut::new();
    let mut decoder = resp::Decoder::default();
    let mut out: Vec<u8> = Vec::new();
    'conn: loop {
        loop {
            let args = match decoder.decode(&mut buf) {
                Ok(Some(a)) if a.is_empty() => continue,
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(e) => {
                    // Redis answers a malformed request and closes only
                    // this connection.
                    let reply = Reply::Error(format!("ERR {e}"));
                    svc.record(&conn, &ctx, "(protocol)", &[], &reply, Instant::now(), None);
                    reply.encode(&mut out, conn.resp3);
                    let _ = io.write_all(&out).await;
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    break 'conn;
                }
            };
            ctx.clock.busy();
            let started = Instant::now();
            let outcome = svc.run(&mut conn, &args, &ctx, started).await;
            match outcome {
                Outcome::Reply(r) => {
                    if !emit(&mut conn, &mut out, r, &mut io).await {
                        break 'conn;
                    }
                }
                Outcome::Many(rs) => {
                    for r in rs {
                        if !emit(&mut conn, &mut out, r, &mut io).await {
                            break 'conn;
                        }
                    }
                }
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
                    svc.record(&conn, &ctx, &name, &args, &reply, started, None);
                    if !emit(&mut conn, &mut out, reply, &mut io).await {
                        break 'conn;
                    }
                }
                Outcome::Reset => {
                    let _ = io.write_all(&out).await;
                    let _ = io.flush().await;
                    flow.abort_after_flush();
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
            if out.len() >= OUT_PIECE {
                if io.write_all(&out).await.is_err() {
                    break 'conn;
                }
                out.clear();
            }
        }
        if !out.is_empty() && io.write_all(&out).await.is_err() {
            break;
        }
        buffers::written(&mut out);
        buffers::before_read(&mut buf);
        // A subscriber waits for messages, not requests: Redis's idle
        // `timeout` spares it too.
        if conn.subscribed() > 0 && buf.is_empty() {
            ctx.clock.busy();
        } else {
            ctx.clock.wait(!buf.is_empty());
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

/// About how much of the replies is encoded before it is written.
const OUT_PIECE: usize = 64 * 1024;

/// Sends a reply unless CLIENT REPLY says otherwise. A small reply joins
/// `out`, so pipelined replies leave together; a large one is written
/// piece by piece as it is encoded, yielding between pieces so that one
/// client's huge reply never holds up the data plane. False when the
/// client is gone.
async fn emit<IO: AsyncWrite + Unpin>(
    conn: &mut ConnState,
    out: &mut Vec<u8>,
    r: Reply,
    io: &mut IO,
) -> bool {
    match conn.reply_mode {
        ReplyMode::On => {}
        ReplyMode::Off => return true,
        ReplyMode::Skip => {
            conn.reply_mode = ReplyMode::On;
            return true;
        }
    }
    let mut enc = resp::Encoder::new(r, conn.resp3);
    while !enc.fill(out, OUT_PIECE) {
        if !out.is_empty() {
            if io.write_all(out).await.is_err() {
                return false;
            }
            out.clear();
        }
        tokio::task::yield_now().await;
    }
    true
}

use super::faults::{drain, FaultGate};

impl RedisService {
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

    /// Records one command: a full event when events are written or
    /// expectations need them, a count otherwise.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        conn: &ConnState,
        ctx: &ServeCtx,
        command: &str,
        args: &[Bytes],
        reply: &Reply,
        started: Instant,
        fault: Option<&'static str>,
    ) {
        let command = command.to_ascii_uppercase();
        let key = args.get(1);
        let error = match reply {
            Reply::Error(e) => Some(e.clone()),
            _ => None,
        };
        let outcome = match &error {
            None => crate::events::Outcome::Ok,
            Some(e) if is_probe(&command, key, e) => crate::events::Outcome::Handshake,
            Some(_) => crate::events::Outcome::Error,
        };
        if !self.detail && !self.events.wants_detail() {
            self.events.count(
                &INFO,
                &self.name,
                &command,
                outcome == crate::events::Outcome::Error,
            );
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
        let detail = RedisDetail {
            command: command.clone(),
            key,
            db: conn.db,
            reply: reply.label(),
            args: journal::args_preview(&command, args, self.events.redacts()),
            reply_text: journal::reply_preview(reply),
            fault,
        };
        self.events.record(Event::Exchange(ExchangeEvent {
            time: now_rfc3339(),
            flow_id: ctx.meta.id,
            service: self.name.clone(),
            protocol: &INFO,
            operation: command,
            outcome,
            error,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: Arc::new(detail),
        }));
    }
}
