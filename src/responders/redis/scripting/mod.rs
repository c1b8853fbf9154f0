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
mod dump;
mod functions;
mod host;
mod libs;
mod run;
mod vm;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::commands::{eq, CmdDef};
use super::resp::Reply;
use super::state::Store;
use super::{ConnState, RedisService, ReplyMode};
use crate::responders::ServeCtx;
use run::run_now;
use vm::{Caller, Vm};

/// How long one script may run before meshwrap stops it, killable or not
/// (Redis would wait for ever, or for SHUTDOWN NOSAVE).
pub const HARD_LIMIT: Duration = Duration::from_secs(60);

const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";
const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
const WRITE_FLAG_RO: &str = "ERR Can not execute a script with write flag using *_ro command.";
const NO_ALLOW_OOM: &str =
    "OOM allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'";
const BUSY: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
/// FUNCTION LOAD's own limit for running a library's code.
const LOAD_LIMIT: Duration = Duration::from_millis(500);
const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

/// Commands Redis still runs while a script is past the busy threshold
/// (its ALLOW_BUSY flag), less WATCH, which needs the keyspace.
const ALLOW_BUSY: &[&str] = &[
    "auth", "discard", "hello", "multi", "quit", "reset", "unwatch",
];

/// The job on the script thread.
#[derive(Clone)]
struct Running {
    since: Instant,
    /// FCALL's function and command line (FUNCTION STATS, which BUSY).
    function: Option<(String, Vec<Bytes>)>,
}

/// What the data plane and the script thread share.
#[derive(Default)]
pub struct Shared {
    running: Mutex<Option<Running>>,
    kill: AtomicBool,
    wrote: AtomicBool,
    idle: Notify,
    /// Until when a FUNCTION LOAD's code may run.
    load_deadline: Mutex<Option<Instant>>,
    /// POST /reset came while a script ran: the script thread resets the
    /// service when the script ends.
    reset_pending: AtomicBool,
    /// FUNCTION STATS's counts, kept by the script thread.
    libraries: AtomicUsize,
    functions: AtomicUsize,
}

impl Shared {
    fn running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the running job started (every command asks: no clone).
    fn since(&self) -> Option<Instant> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.since)
    }

    pub fn load_started(&self) {
        *self.load_deadline.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + LOAD_LIMIT);
    }

    pub fn load_ended(&self) {
        *self.load_deadline.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn load_timed_out(&self) -> bool {
        self.load_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| Instant::now() > d)
    }

    /// Why the running script must stop now, if it must.
    pub fn stop_message(&self) -> Option<String> {
        if self.kill.load(Ordering::Relaxed) {
            return Some(KILLED.to_string());
        }
        if self.load_timed_out() {
            return Some("ERR FUNCTION LOAD timeout".to_string());
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

    fn start(&self, function: Option<(String, Vec<Bytes>)>) {
        self.kill.store(false, Ordering::Relaxed);
        self.wrote.store(false, Ordering::Relaxed);
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            since: Instant::now(),
            function,
        });
    }

    /// The BUSY error for what runs now.
    fn busy(&self) -> Reply {
        match self.running() {
            Some(Running {
                function: Some(_), ..
            }) => Reply::err(BUSY_FUNCTION),
            _ => Reply::err(BUSY),
        }
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

    /// Forgets every script and library: the thread (and its interpreter)
    /// ends once its queue is empty, and the next script starts anew.
    pub fn reset(&self) {
        *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A reset while a script runs cannot take the keyspace lock (the
    /// control API shares the data plane's thread): the script is killed
    /// and the script thread resets the service when it ends. `false`
    /// when no script runs and the caller may reset at once.
    pub fn reset_later(&self) -> bool {
        if self.shared.since().is_none() {
            return false;
        }
        self.shared.reset_pending.store(true, Ordering::Relaxed);
        self.shared.kill.store(true, Ordering::Relaxed);
        true
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
        // The service is idle again when the job ends, even by a panic
        // outside the guarded run: otherwise every command would wait.
        let idle = Finish(&shared);
        let svc = job.svc.clone();
        let reply = {
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
        if shared.reset_pending.swap(false, Ordering::Relaxed) {
            // POST /reset came while this job ran (see `reset_later`).
            svc.reset_now();
            vm = None;
        }
        if let Some(v) = vm.as_ref() {
            shared
                .libraries
                .store(v.libraries.libs.len(), Ordering::Relaxed);
            shared
                .functions
                .store(v.libraries.function_count(), Ordering::Relaxed);
        }
        drop(idle);
        let _ = job.done.send((job.conn, reply));
    }
}

/// Marks the script thread idle when dropped.
struct Finish<'a>(&'a Shared);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
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
                let sub = |name: &str| args.get(1).is_some_and(|s| eq(s, name));
                let allowed = def.is_some_and(|d| {
                    ALLOW_BUSY.contains(&d.name)
                        || (d.name == "script" && sub("kill"))
                        || (d.name == "function" && (sub("kill") || sub("stats")))
                });
                return if allowed {
                    Ok(())
                } else {
                    Err(self.scripts.shared.busy())
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
    async fn on_script_thread(
        self: &Arc<Self>,
        conn: &mut ConnState,
        work: Work,
        function: Option<(String, Vec<Bytes>)>,
    ) -> Reply {
        let Some(sender) = self.scripts.sender() else {
            return Reply::err("ERR the script engine could not start");
        };
        let placeholder = conn.script_client();
        let lent = std::mem::replace(conn, placeholder);
        let (done, back) = oneshot::channel();
        self.scripts.shared.start(function);
        let job = Job {
            svc: self.clone(),
            conn: lent,
            work,
            done,
        };
        if let Err(mpsc::SendError(job)) = sender.send(job) {
            // The thread is gone: the next script starts a new one.
            self.scripts.reset();
            self.scripts.shared.finish();
            *conn = job.conn;
            return Reply::err("ERR the script engine stopped");
        }
        match back.await {
            Ok((c, reply)) => {
                *conn = c;
                reply
            }
            // The thread died with the job (the connection keeps the
            // script client's state in place of its own).
            Err(_) => {
                self.scripts.reset();
                Reply::err("ERR the script engine stopped")
            }
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
        let sub = |name: &str| a.len() == 2 && eq(&a[1], name);
        match def.name {
            "script" if sub("kill") => return self.kill(false),
            "function" if sub("kill") => return self.kill(true),
            "function" if sub("stats") => return self.function_stats(),
            _ => {}
        }
        let function = def
            .name
            .starts_with("fcall")
            .then(|| (String::from_utf8_lossy(&a[1]).into_owned(), a.to_vec()));
        let name = def.name;
        let args = a.to_vec();
        let work: Work = Box::new(move |vm, c, shared| run_now(vm, c, name, &args, shared));
        self.on_script_thread(conn, work, function).await
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
        self.on_script_thread(conn, work, None).await
    }

    /// SCRIPT KILL (`function` false) and FUNCTION KILL: each kills only
    /// its own kind, and answers BUSY for the other.
    fn kill(&self, function: bool) -> Reply {
        let shared = &self.scripts.shared;
        let Some(running) = shared.running() else {
            return Reply::err("NOTBUSY No scripts in execution right now.");
        };
        if running.function.is_some() != function {
            shared.busy()
        } else if shared.wrote.load(Ordering::Relaxed) {
            Reply::err(UNKILLABLE)
        } else {
            shared.kill.store(true, Ordering::Relaxed);
            Reply::Ok
        }
    }

    /// FUNCTION STATS, answered on the data plane even while a function
    /// runs (during an EVAL, Redis answers BUSY).
    fn function_stats(&self) -> Reply {
        let shared = &self.scripts.shared;
        let running = match shared.running() {
            None => Reply::Nil,
            Some(Running {
                since,
                function: Some((name, argv)),
            }) => Reply::Map(vec![
                (Reply::bulk("name"), Reply::bulk(name)),
                (
                    Reply::bulk("command"),
                    Reply::Array(argv.into_iter().map(Reply::Bulk).collect()),
                ),
                (
                    Reply::bulk("duration_ms"),
                    Reply::Int(since.elapsed().as_millis() as i64),
                ),
            ]),
            Some(_) => return shared.busy(),
        };
        functions::stats(
            running,
            shared.libraries.load(Ordering::Relaxed),
            shared.functions.load(Ordering::Relaxed),
        )
    }
}
