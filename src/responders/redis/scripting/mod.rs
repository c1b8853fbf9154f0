//! Lua scripting as Redis 7 has it: EVAL, EVALSHA, their `_RO` forms and
//! SCRIPT LOAD/EXISTS/FLUSH/KILL, with Redis's libraries, error texts and
//! conversions.
//!
//! Shape: scripts run on a thread of their own per service (the Lua
//! interpreter lives there), holding the keyspace lock, so the data plane
//! keeps serving DNS and the other protocols whatever a script does. While
//! a script runs, every Redis command of the service first waits for it
//! (`wait_turn`), as on a real server; past `busy-reply-threshold` the
//! waiters get Redis's BUSY error instead, and SCRIPT KILL stops a script
//! that has not written. A script that runs `HARD_LIMIT` is stopped
//! whatever it did, so no script holds the service for good.

mod convert;
mod libs;
mod vm;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::commands::{eq, unknown_subcommand, CmdDef};
use super::resp::Reply;
use super::state::Store;
use super::{ConnState, RedisService, ReplyMode};
use crate::responders::ServeCtx;
use vm::{Caller, Limits, Vm};

/// How long one script may run before meshwrap stops it, killable or not
/// (Redis would wait for ever, or for SHUTDOWN NOSAVE).
pub const HARD_LIMIT: Duration = Duration::from_secs(60);

const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";
const BUSY: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

/// Commands Redis still runs while a script is past the busy threshold
/// (its ALLOW_BUSY flag), less WATCH, which needs the keyspace.
const ALLOW_BUSY: &[&str] = &[
    "auth", "discard", "hello", "multi", "quit", "reset", "unwatch",
];

/// What the data plane and the script thread share.
#[derive(Default)]
pub struct Shared {
    /// When the running job started; `None` when the thread is idle.
    running: Mutex<Option<Instant>>,
    kill: AtomicBool,
    wrote: AtomicBool,
    idle: Notify,
}

impl Shared {
    fn since(&self) -> Option<Instant> {
        *self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the running script must stop now, if it must.
    pub fn stop_message(&self) -> Option<String> {
        if self.kill.load(Ordering::Relaxed) {
            return Some(KILLED.to_string());
        }
        let since = self.since()?;
        (since.elapsed() > HARD_LIMIT).then(|| {
            format!(
                "ERR Script stopped by meshwrap after {} seconds, the longest one script may run",
                HARD_LIMIT.as_secs()
            )
        })
    }

    pub fn stopping(&self) -> bool {
        self.stop_message().is_some()
    }

    pub fn wrote(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    fn start(&self) {
        self.kill.store(false, Ordering::Relaxed);
        self.wrote.store(false, Ordering::Relaxed);
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn finish(&self) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.idle.notify_waiters();
    }
}

type Work = Box<dyn FnOnce(&mut Vm, Caller, &Arc<Shared>) -> Reply + Send>;

struct Job {
    svc: Arc<RedisService>,
    conn: ConnState,
    work: Work,
    done: oneshot::Sender<(ConnState, Reply)>,
}

/// A service's scripting: the shared state and the thread, started with
/// the first script.
#[derive(Default)]
pub struct Scripts {
    shared: Arc<Shared>,
    worker: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Scripts {
    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        let mut w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let shared = self.shared.clone();
            std::thread::Builder::new()
                .name("redis-scripts".into())
                .spawn(move || worker(rx, shared))
                .ok()?;
            *w = Some(tx);
        }
        w.clone()
    }

    /// Waits while a script runs, without a limit (a blocked pop's
    /// re-check, which must not take the keyspace lock meanwhile).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.since().is_none() {
                return;
            }
            notified.await;
        }
    }
}

/// The script thread: one job at a time, each with the keyspace lock.
fn worker(rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    let mut vm: Option<Vm> = None;
    while let Ok(mut job) = rx.recv() {
        let reply = {
            let svc = job.svc.clone();
            let mut store = svc.lock();
            if vm.is_none() {
                match Vm::new(shared.clone()) {
                    Ok(v) => vm = Some(v),
                    Err(e) => tracing::warn!("redis scripting: the Lua interpreter failed: {e}"),
                }
            }
            match vm.as_mut() {
                Some(v) => {
                    let caller = Caller {
                        svc: &svc,
                        store: &mut store,
                        conn: &mut job.conn,
                    };
                    let work = job.work;
                    match std::panic::catch_unwind(AssertUnwindSafe(|| work(v, caller, &shared))) {
                        Ok(r) => r,
                        Err(_) => {
                            // The interpreter may be half-way through
                            // something: start a new one next time.
                            vm = None;
                            Reply::err("ERR internal error in the script engine")
                        }
                    }
                }
                None => Reply::err("ERR the script engine could not start"),
            }
        };
        shared.finish();
        let _ = job.done.send((job.conn, reply));
    }
}

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

impl ConnState {
    /// The client a script's `redis.call` runs as: the caller's database,
    /// RESP2, its own SELECT.
    fn script_client(&self) -> ConnState {
        ConnState {
            id: self.id,
            db: self.db,
            resp3: false,
            authed: true,
            name: self.name.clone(),
            lib: self.lib.clone(),
            multi: None,
            multi_error: false,
            watched: Vec::new(),
            subs: Default::default(),
            psubs: Default::default(),
            push: self.push.clone(),
            reply_mode: ReplyMode::On,
            addr: self.addr.clone(),
        }
    }
}

impl RedisService {
    /// Every command's turn while a script runs: wait for it to end, or
    /// past `busy-reply-threshold` answer BUSY (except the commands Redis
    /// lets through then).
    pub(super) async fn wait_turn(
        &self,
        def: Option<&CmdDef>,
        args: &[Bytes],
    ) -> Result<(), Reply> {
        loop {
            let notified = self.scripts.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(since) = self.scripts.shared.since() else {
                return Ok(());
            };
            let threshold = self.busy_threshold();
            let elapsed = since.elapsed();
            if threshold.is_some_and(|t| elapsed >= t) {
                let allowed = def.is_some_and(|d| {
                    ALLOW_BUSY.contains(&d.name)
                        || (d.name == "script" && args.get(1).is_some_and(|s| eq(s, "kill")))
                        || (d.name == "shutdown" && args.get(1).is_some_and(|s| eq(s, "nosave")))
                });
                return if allowed {
                    Ok(())
                } else {
                    Err(Reply::err(BUSY))
                };
            }
            match threshold {
                Some(t) => {
                    let _ = tokio::time::timeout(t - elapsed, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// `busy-reply-threshold` (alias `lua-time-limit`); 0 means never.
    fn busy_threshold(&self) -> Option<Duration> {
        let cfg = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let ms = cfg
            .iter()
            .find(|(k, _)| k == "busy-reply-threshold")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(5000);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Runs `work` on the script thread with the keyspace lock, the
    /// connection lent to it meanwhile.
    async fn on_script_thread(self: &Arc<Self>, conn: &mut ConnState, work: Work) -> Reply {
        let Some(sender) = self.scripts.sender() else {
            return Reply::err("ERR the script engine could not start");
        };
        let placeholder = conn.script_client();
        let lent = std::mem::replace(conn, placeholder);
        let (done, back) = oneshot::channel();
        self.scripts.shared.start();
        let job = Job {
            svc: self.clone(),
            conn: lent,
            work,
            done,
        };
        if let Err(mpsc::SendError(job)) = sender.send(job) {
            self.scripts.shared.finish();
            *conn = job.conn;
            return Reply::err("ERR the script engine stopped");
        }
        match back.await {
            Ok((c, reply)) => {
                *conn = c;
                reply
            }
            Err(_) => Reply::err("ERR the script engine stopped"),
        }
    }

    /// EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT, from the data
    /// plane: SCRIPT KILL is answered here (the script thread is busy with
    /// the script), the rest runs on the script thread.
    pub(super) async fn scripting(
        self: &Arc<Self>,
        conn: &mut ConnState,
        def: &CmdDef,
        a: &[Bytes],
    ) -> Reply {
        if def.name == "script" && eq(&a[1], "kill") && a.len() == 2 {
            return self.script_kill();
        }
        let name = def.name;
        let args = a.to_vec();
        let work: Work = Box::new(move |vm, c, shared| run_now(vm, c, name, &args, shared));
        self.on_script_thread(conn, work).await
    }

    /// EXEC of a transaction that holds scripting commands: all of it on
    /// the script thread, one critical section as ever.
    pub(super) async fn exec_on_script_thread(
        self: &Arc<Self>,
        conn: &mut ConnState,
        ctx: &ServeCtx,
    ) -> Reply {
        let ctx = ctx.clone();
        let work: Work = Box::new(move |vm, c, shared| {
            let svc = c.svc;
            let mut run =
                |store: &mut Store, conn: &mut ConnState, def: &CmdDef, args: &[Bytes]| {
                    let caller = Caller { svc, store, conn };
                    run_now(vm, caller, def.name, args, shared)
                };
            svc.exec_in(c.store, c.conn, &ctx, Some(&mut run))
                .unwrap_or_else(|e| e)
        });
        self.on_script_thread(conn, work).await
    }

    fn script_kill(&self) -> Reply {
        let shared = &self.scripts.shared;
        if shared.since().is_none() {
            Reply::err("NOTBUSY No scripts in execution right now.")
        } else if shared.wrote.load(Ordering::Relaxed) {
            Reply::err(UNKILLABLE)
        } else {
            shared.kill.store(true, Ordering::Relaxed);
            Reply::Ok
        }
    }
}

/// A scripting command, run on the script thread with the keyspace lock.
fn run_now(vm: &mut Vm, c: Caller, name: &str, a: &[Bytes], shared: &Arc<Shared>) -> Reply {
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
                None => return Reply::err("NOSCRIPT No matching script. Please use EVAL."),
                Some(Err(e)) => return e,
                Some(Ok(f)) => f,
            };
            let mut limits = flags.unwrap_or_default();
            if read_only {
                if flags.is_some() && !limits.read_only {
                    return Reply::err(
                        "ERR Can not execute a script with write flag using *_ro command.",
                    );
                }
                limits.read_only = true;
            }
            if flags.is_some() && !limits.allow_oom && crate::budget::over() {
                return Reply::err("OOM allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'");
            }
            vm.eval(c, &sha, keys, argv, limits, shared)
        }
        "script" => script_now(vm, a, shared),
        other => Reply::Error(format!("ERR unknown command '{other}'")),
    }
}

/// SCRIPT's subcommands but KILL.
fn script_now(vm: &mut Vm, a: &[Bytes], shared: &Arc<Shared>) -> Reply {
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
            match vm.reset(shared.clone()) {
                Ok(()) => Reply::Ok,
                Err(e) => Reply::Error(format!("ERR {e}")),
            }
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
