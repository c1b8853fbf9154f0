//! SIGINT, SIGTERM and SIGHUP are taken by a thread of their own, not by
//! the async runtime: the data plane is one thread, and whatever it is busy
//! with must not delay a Ctrl-C or a SIGTERM.
//!
//! The signals are blocked in the thread that builds the runtime (every
//! thread it starts inherits the mask), and the signal thread takes them
//! with sigwait(2).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use tokio::sync::Notify;

const CAUGHT: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// How long the runtime gets to stop once asked, before the process exits
/// without it: long enough for the drain and the exit summary.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(2);

/// Stop signals this close together are one request, not an insistence.
const ONE_REQUEST: Duration = Duration::from_secs(1);

/// Blocks the caught signals in the calling thread and everything it
/// starts from now on, and starts the thread that takes them.
fn spawn(on_signal: impl FnMut(Signal) + Send + 'static) -> Result<()> {
    let mut set = SigSet::empty();
    CAUGHT.iter().for_each(|s| set.add(*s));
    set.thread_block().context("cannot block signals")?;
    let mut on_signal = on_signal;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                on_signal(sig);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// `meshwrap -- CMD`: each signal goes to the jail's init, which passes it
/// on to the SUT; meshwrap itself exits when the SUT does. A second SIGINT
/// or SIGTERM while the SUT still runs (it ignored or outlived the first)
/// kills the jail, as a container runtime does past its grace period and
/// as a second Ctrl-C does in most tools.
pub(super) fn forward_to(init: Pid) -> Result<()> {
    let mut asked_to_stop: Option<(Signal, std::time::Instant)> = None;
    spawn(move |sig| {
        let stops = matches!(sig, Signal::SIGINT | Signal::SIGTERM);
        match asked_to_stop {
            // A second within `ONE_REQUEST` is the same request sent twice
            // (one Ctrl-C reaches meshwrap from the terminal and again from
            // a wrapper that forwards it, as npm does): passed on again.
            Some((first, at)) if stops && at.elapsed() >= ONE_REQUEST => {
                eprintln!(
                    "meshwrap: {sig} after {first}, and the SUT is still running: killing the jail"
                );
                let _ = kill(init, Signal::SIGKILL);
            }
            _ => {
                if stops && asked_to_stop.is_none() {
                    asked_to_stop = Some((sig, std::time::Instant::now()));
                }
                let _ = kill(init, sig);
            }
        }
    })
}

/// The sidecar: the first signal asks the runtime to stop (`stop` is
/// notified); if the process is still there `STOP_GRACE` later, the data
/// plane is stuck, and the signal thread ends the process itself.
pub(super) fn stop_on_signal(stop: Arc<Notify>) -> Result<()> {
    let mut asked = false;
    spawn(move |sig| {
        if asked {
            return;
        }
        asked = true;
        stop.notify_one();
        std::thread::spawn(move || {
            std::thread::sleep(STOP_GRACE);
            eprintln!(
                "meshwrap: still stopping {} s after {sig}; exiting without the final report",
                STOP_GRACE.as_secs()
            );
            std::process::exit(0);
        });
    })
}

/// Once the SUT has exited, meshwrap must follow: if `done` is not set
/// `STOP_GRACE` from now (the data plane is stuck), `cleanup` runs and the
/// process exits with the SUT's `code`, without the exit summary.
pub(super) fn exit_unless_done(
    done: Arc<std::sync::atomic::AtomicBool>,
    code: i32,
    cleanup: impl FnOnce() + Send + 'static,
) {
    std::thread::spawn(move || {
        std::thread::sleep(STOP_GRACE);
        if !done.load(std::sync::atomic::Ordering::Acquire) {
            cleanup();
            eprintln!(
                "meshwrap: the SUT exited {} s ago and the data plane is still busy; \
                 exiting without the exit summary",
                STOP_GRACE.as_secs()
            );
            std::process::exit(code);
        }
    });
}
