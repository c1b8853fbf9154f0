//! What `meshwrap -- CMD` and `meshwrap sidecar` share once they hold a
//! TUN: the flags about rules, events and the admin API, the appliance
//! built from them, serving the TUN, and the summary and expectations at
//! the end. Only the front door (a jail, or a pod's prepared TUN) differs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::appliance::{Appliance, ApplianceConfig};
use crate::control::AdminAddr;
use crate::events::EventSink;
use crate::model::JailNet;
use crate::rules::{RuleSet, Unmatched};
use crate::stack::{Stack, StackHandle};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Rule file (YAML); repeat to merge several, in order.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// What happens to connections no rule claims [default: refuse, or the
    /// rules file's `unmatched:`]. The flag wins over the file.
    #[arg(long, value_enum, value_name = "MODE")]
    pub unmatched: Option<Unmatched>,
    /// Write one JSON object per event (flows, DNS answers, requests,
    /// reloads, notices) to FILE, to `stderr`, or to an open file
    /// descriptor (`fd:3`, e.g. with `3>events.jsonl`); `-` is stdout,
    /// for the sidecar only (a run's stdout is the SUT's).
    #[arg(long, value_name = "FILE|stderr|fd:N", value_parser = EventsTarget::parse)]
    pub events: Option<EventsTarget>,
    /// How much of --events may wait for a slow reader (bytes, or with K,
    /// M or G); past it lines are dropped and counted, never waited for.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub events_queue: usize,
    /// How much memory meshwrap may hold (bytes, or with K, M or G)
    /// [default: half of the cgroup's limit, or of the machine's memory].
    /// Past it, what the SUT sends to be kept is refused the way each real
    /// server refuses it (Redis OOM, HTTP 413/503, Kafka drops its oldest
    /// records, MongoDB ExceededMemoryLimit) rather than the kernel's OOM
    /// killer ending the run.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<usize>,
    /// Do not print the summary table on exit (failed expectations are
    /// still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep the interception CA in DIR and reuse it across runs (created
    /// on first use, key mode 0600). Without it each run has its own CA.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Serve the admin API (metrics, health, flows, events, journal,
    /// verify, reset, rules) on ADDR: 127.0.0.1:9901, [::1]:9901,
    /// 0.0.0.0:9901 or unix:/path.sock. Off by default; never reachable
    /// through the TUN.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// A file holding the bearer token that mutating admin calls need;
    /// required when --admin is not loopback or a unix socket, unless
    /// --admin-read-only.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve only the admin API's read-only calls (GET: health, metrics,
    /// flows, events, requests, rules); PUT and POST answer 403. Allows a
    /// non-loopback --admin without a token, e.g. a pod port for probes
    /// and Prometheus.
    #[arg(long)]
    pub admin_read_only: bool,
    /// Reload the --rules files when they change on disk (each reload or
    /// rejection is an event; running flows keep their rules).
    #[arg(long)]
    pub watch: bool,
    /// Do not keep a journal of requests in memory (expectations and the
    /// admin API's /requests then see none; events are still written).
    #[arg(long)]
    pub no_journal: bool,
    /// Record the secrets the SUT sends as they are: by default the values
    /// of credential headers (Authorization, Cookie, X-Api-Key…) and of
    /// query, form and JSON fields named like password, secret, token or
    /// api_key are replaced by [redacted] in events, the journal and the
    /// summary.
    #[arg(long)]
    pub no_redact: bool,
    /// Do not check the rules' `expect:` entries at exit (they otherwise
    /// make meshwrap exit 1 when unmet, even if the command succeeded).
    #[arg(long)]
    pub no_verify: bool,
    /// More logging on stderr (-v info, -vv debug, -vvv trace). MESHWRAP_LOG
    /// takes a tracing filter and wins over this.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The admin API as the flags ask for it.
pub(super) struct AdminPlan {
    addr: AdminAddr,
    token: Option<String>,
    read_only: bool,
    /// What `POST /reload` reads again.
    rule_files: Vec<PathBuf>,
}

/// Takes descriptor `n` for meshwrap alone: a copy that is closed on exec,
/// and `n` itself closed, so the SUT does not inherit the events stream.
fn take_fd(n: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd};
    // SAFETY: only asks the kernel whether `n` is open; an fd that is not
    // makes fcntl fail with EBADF, which is the answer.
    let open = nix::fcntl::fcntl(
        unsafe { BorrowedFd::borrow_raw(n) },
        nix::fcntl::FcntlArg::F_GETFD,
    );
    if open.is_err() {
        bail!("--events fd:{n}: descriptor {n} is not open (give it with `{n}>FILE`)");
    }
    // SAFETY: `n` is open (checked above); it is ours from here on.
    let given = unsafe { std::os::fd::OwnedFd::from_raw_fd(n) };
    let copy = given
        .try_clone()
        .with_context(|| format!("cannot take descriptor {n}"))?;
    drop(given);
    Ok(copy)
}

/// What is loaded before a front door exists: rules, the events sink and
/// the interception CA.
pub(super) struct Loaded {
    pub rules: RuleSet,
    pub events: EventSink,
    pub ca: crate::tls::Ca,
}

/// Where `--events` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsTarget {
    File(PathBuf),
    Stdout,
    Stderr,
    Fd(i32),
}

impl EventsTarget {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "-" => EventsTarget::Stdout,
            "stderr" => EventsTarget::Stderr,
            _ => match s.strip_prefix("fd:") {
                Some(n) => match n.parse::<i32>() {
                    Ok(fd) if fd >= 3 => EventsTarget::Fd(fd),
                    Ok(_) => {
                        return Err(
                            "fd:0, fd:1 and fd:2 are stdin, stdout and stderr: use `stderr`, \
                             or a descriptor from 3 up (`3>events.jsonl`)"
                                .into(),
                        )
                    }
                    Err(_) => return Err(format!("`{n}` is not a file descriptor number")),
                },
                None => EventsTarget::File(PathBuf::from(s)),
            },
        })
    }
}

/// A size on the command line: bytes, or a number with K, M or G
/// (powers of 1024), e.g. `64K`, `16M`.
fn parse_size(s: &str) -> Result<usize, String> {
    let invalid =
        || format!("`{s}` is not a size: a number of bytes, or with K, M or G (64K, 16M)");
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(invalid()),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .ok_or_else(invalid)
}

impl ServeArgs {
    /// `in_run`: the SUT owns stdout, so `-` is refused there.
    pub(super) fn load(&self, in_run: bool) -> Result<Loaded> {
        let rules = RuleSet::load(&self.rules)?;
        let events = match &self.events {
            Some(EventsTarget::Stdout) if in_run => bail!(
                "--events -: stdout is the SUT's in a run; write the events to a file, to \
                 `--events stderr`, or to a descriptor (`--events fd:3 3>events.jsonl`)"
            ),
            Some(EventsTarget::Stdout) => EventSink::with_fd(
                std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("cannot write events to stdout")?,
                self.events_queue,
            ),
            Some(EventsTarget::Stderr) => EventSink::with_fd(
                std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("cannot write events to stderr")?,
                self.events_queue,
            ),
            Some(EventsTarget::Fd(n)) => EventSink::with_fd(take_fd(*n)?, self.events_queue),
            Some(EventsTarget::File(p)) => EventSink::with_file(p, self.events_queue)
                .with_context(|| format!("cannot write events to {}", p.display()))?,
            None => EventSink::new(),
        };
        if self.no_journal {
            events.disable_journal();
        }
        if self.no_redact {
            events.keep_secrets();
        }
        let ca = match &self.ca_dir {
            Some(dir) => crate::tls::Ca::persistent(dir),
            None => crate::tls::Ca::ephemeral(),
        }
        .context("cannot set up the interception CA")?;
        Ok(Loaded { rules, events, ca })
    }

    /// Checks the admin flags (and reads the token) before anything starts.
    pub(super) fn admin_plan(&self) -> Result<Option<AdminPlan>> {
        let Some(addr) = &self.admin else {
            return Ok(None);
        };
        let token = read_token(self.admin_token_file.as_deref())?;
        if !addr.is_local() && token.is_none() && !self.admin_read_only {
            bail!("--admin {addr} is reachable from other machines: give --admin-token-file so mutating calls need a bearer token, or --admin-read-only");
        }
        Ok(Some(AdminPlan {
            addr: addr.clone(),
            token,
            read_only: self.admin_read_only,
            rule_files: self.rules.clone(),
        }))
    }

    /// Wires the appliance; called once the jail (if any) is forked, so
    /// the events writer's thread starts here.
    pub(super) fn appliance(&self, net: JailNet, loaded: Loaded) -> (Appliance, EventSink) {
        crate::budget::start(
            self.memory_budget
                .unwrap_or_else(crate::budget::default_limit),
        );
        if let Err(e) = loaded.events.start_writer() {
            tracing::error!("cannot start the events writer, no events will be written: {e}");
        }
        let appliance = Appliance::new(ApplianceConfig {
            net,
            rules: loaded.rules,
            unmatched: self.unmatched,
            events: loaded.events.clone(),
            protected_ports: match &self.admin {
                Some(AdminAddr::Tcp(a)) => vec![a.port()],
                _ => Vec::new(),
            },
            interceptor: Some(Arc::new(crate::tls::Interceptor::new(loaded.ca))),
        });
        (appliance, loaded.events)
    }

    /// The unix socket file to remove at exit, if the admin API has one.
    pub(super) fn admin_socket_file(&self) -> Option<PathBuf> {
        match &self.admin {
            Some(AdminAddr::Unix(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Prints the summary and checks the rules' expectations; returns the
    /// exit code, which a failed expectation turns from 0 into 1.
    pub(super) fn finish(&self, appliance: &Appliance, events: &EventSink, code: i32) -> i32 {
        if let Some(p) = self.admin_socket_file() {
            let _ = std::fs::remove_file(p);
        }
        appliance.record_open_flows();
        let summary = events.finish().with_hints(crate::protocols::INFOS);
        if !self.quiet {
            eprint!("{summary}");
        }
        // The expectations of the rules in force at the end (a reload may
        // have replaced them).
        let expects = appliance.snapshot().rules.expects.clone();
        if self.no_verify || expects.is_empty() {
            return code;
        }
        if self.no_journal {
            eprintln!(
                "meshwrap: {} expectations not checked: --no-journal keeps no record of requests",
                expects.len()
            );
            return code;
        }
        let results = crate::events::verify::check(&expects, &events.journal());
        let failed = results.iter().filter(|r| !r.ok).count();
        if failed > 0 || !self.quiet {
            eprintln!(
                "meshwrap expectations: {} of {} met",
                results.len() - failed,
                results.len()
            );
            for r in results
                .iter()
                .filter(|r| failed == 0 || !r.ok || !self.quiet)
            {
                eprint!("{r}");
            }
        }
        if failed > 0 && code == 0 {
            1
        } else {
            code
        }
    }
}

pub(super) fn read_token(path: Option<&std::path::Path>) -> Result<Option<String>> {
    let Some(p) = path else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read the admin token from {}", p.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("the admin token file {} is empty", p.display());
    }
    Ok(Some(token))
}

/// Serves `tun` with the appliance: the stack, the admin API and the rules
/// watcher. Returns the readiness flag the admin API's /readyz reports;
/// the caller sets it when its front door is open.
pub(super) async fn start(
    tun: OwnedFd,
    net: JailNet,
    appliance: &Appliance,
    events: &EventSink,
    admin: Option<AdminPlan>,
    watch: Option<Vec<PathBuf>>,
) -> Result<(Arc<AtomicBool>, StackHandle)> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the fd is a TUN device we own (IFF_NO_PI); the AsyncDevice
    // takes it over.
    let dev = unsafe { tun_rs::AsyncDevice::from_fd(tun.into_raw_fd()) }
        .context("cannot use the TUN device")?;
    let stack = Stack::new(dev, net, Arc::new(appliance.clone()));
    let stack_handle = stack.handle();
    appliance.attach(stack.handle());
    tokio::spawn(stack.run());
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(plan) = admin {
        let metrics = crate::control::Metrics::new();
        events.add_observer(metrics.clone());
        events.enable_control();
        let control = Arc::new(crate::control::Control {
            appliance: appliance.clone(),
            events: events.clone(),
            metrics,
            stack: Some(stack_handle.clone()),
            ready: ready.clone(),
            token: plan.token,
            read_only: plan.read_only,
            rule_files: plan.rule_files,
        });
        control.serve(plan.addr).await?;
    }
    if let Some(files) = watch {
        tokio::spawn(crate::control::watch_files(
            files,
            appliance.clone(),
            events.clone(),
        ));
    }
    Ok((ready, stack_handle))
}

/// The data plane's runtime: one thread, as DESIGN.md decides (the stack
/// task owns the TUN and every flow lives on the same thread).
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    raise_open_files_limit();
    crate::stack::map_flow_buffers_lazily();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Raises the soft limit of open files to the hard one (at most 2^20):
/// every passed flow holds a host socket, and the common soft limit of
/// 1,024 runs out long before memory does. Called when the runtime
/// starts, after the jail is forked, so the SUT keeps the limits it was
/// given.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(1 << 20);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                tracing::debug!("cannot raise the open files limit to {want}: {e}");
            }
        }
    }
}

/// Lets flows that were closing finish, so their events are complete.
pub(super) async fn drain(appliance: &Appliance, within: std::time::Duration) {
    let _ = tokio::time::timeout(within, appliance.idle()).await;
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2kb"), Ok(2048));
        for bad in ["", "M", "12X", "-1", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
