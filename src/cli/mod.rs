//! The command line: arguments, running the jail, exit codes and the run
//! summary. Errors get their context here; the library's are typed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

mod serve;
mod sidecar;
mod signals;

pub use serve::ServeArgs;

use crate::appliance::{Appliance, ApplianceConfig};
use crate::events::EventSink;
use crate::jail::{Jail, JailSpec, WorkDir};
use crate::model::JailNet;
use crate::rules::{FlowKey, RuleSet, Unmatched};

#[derive(Debug, Parser)]
#[command(
    name = "meshwrap",
    version,
    about = "Run a program in a network jail whose every connection is mocked, passed out or refused",
    long_about = "Runs CMD in new network, mount and pid namespaces (plus a user namespace when not root) \
whose only network is a TUN device served by meshwrap's userspace TCP/IP stack. DNS is answered \
by meshwrap; every connection is matched against the rules and mocked, passed out to the real \
destination or refused, and recorded.\n\nExamples:\n  meshwrap -- curl -sS http://host.meshwrap.internal:8000/\n  \
meshwrap --unmatched refuse -- npm test\n  meshwrap --rules rules/dev.yaml --events run.jsonl -- ./my-service",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate rule files without running anything.
    Check {
        /// Rule files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the persistent interception CA's certificate (made on first
    /// use) to PATH, to trust it outside meshwrap.
    Ca {
        /// Where to write the certificate (PEM).
        #[arg(long, value_name = "PATH")]
        export: PathBuf,
        /// The CA directory [default: $XDG_DATA_HOME/meshwrap/ca].
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
    },
    /// List the CA files a run started here would make trust the CA: the
    /// system bundle, the Java truststore, packages' own bundles found in
    /// the working directory, virtualenvs and site-packages, --trust-path
    Trust(TrustArgs),
    /// Check expectations against a running meshwrap's journal (its
    /// --admin API); exits 1 when one fails.
    Verify {
        /// The admin address of the running meshwrap.
        #[arg(long, value_name = "ADDR")]
        admin: crate::control::AdminAddr,
        /// Bearer token file, if the admin API needs one.
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
        /// A YAML or JSON file: a list of expectations, or `expect: [...]`.
        file: PathBuf,
    },
    /// Ask the rules about a flow.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Prepare a pod's network for `meshwrap sidecar` (the init container;
    /// needs NET_ADMIN, runs once and exits): a persistent TUN owned by the
    /// sidecar's uid, and policy routing that sends every connection the
    /// pod makes into it, except the sidecar's own, loopback, replies of
    /// inbound connections and the exclusions.
    SidecarInit(sidecar::InitArgs),
    /// Serve the TUN `sidecar-init` prepared, as its owner with no
    /// capabilities: DNS, responders, pass-out, events and the admin API,
    /// exactly as for `meshwrap -- CMD`, until SIGTERM.
    Sidecar(sidecar::SidecarArgs),
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Tell which service would claim a flow to HOST:PORT, and why.
    Explain {
        /// Rule files, merged in order.
        #[arg(long = "rules", required = true)]
        rules: Vec<PathBuf>,
        /// The hostname the SUT would use.
        #[arg(long)]
        host: Option<String>,
        /// The destination port.
        #[arg(long)]
        port: u16,
        /// The destination address (default: the gateway for
        /// host.meshwrap.internal, else a fake address as the resolver
        /// would give).
        #[arg(long)]
        addr: Option<std::net::IpAddr>,
        /// As `--unmatched` of a run.
        #[arg(long, value_enum, value_name = "MODE")]
        unmatched: Option<Unmatched>,
    },
}

/// Which CA files of packages the jail's copy of the CA is added to.
#[derive(Debug, Args, Clone, Default)]
pub struct TrustArgs {
    /// A CA bundle the SUT verifies against that meshwrap does not find by
    /// itself (a path or a glob, e.g. 'vendor/*/data/*.crt'); overlaid in
    /// the jail with its contents plus the CA. Repeatable
    #[arg(long = "trust-path", value_name = "PATH|GLOB")]
    pub paths: Vec<String>,
    /// Do not look for packages' own CA bundles (certifi, botocore,
    /// grpcio…) in the working directory, virtualenvs and site-packages;
    /// only the system bundle, the Java truststore and --trust-path get the CA
    #[arg(long)]
    pub no_trust_discovery: bool,
}

impl TrustArgs {
    /// The packages' bundles a run of `program` from here overlays.
    fn bundles(
        &self,
        program: Option<&std::ffi::OsStr>,
    ) -> Result<Vec<crate::tls::bundled::Bundle>> {
        use crate::tls::bundled;
        let mut all = if self.no_trust_discovery {
            Vec::new()
        } else {
            bundled::discover(&bundled::search_roots(program))
        };
        all.extend(bundled::explicit(&self.paths)?);
        Ok(all)
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Do not make the jail trust the CA (no bundle or truststore bind
    /// mounts, no SSL_CERT_FILE & co.): HTTPS mocks then fail verification.
    #[arg(long)]
    pub no_ca_injection: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// When meshwrap runs as root: let the SUT keep CAP_SYS_ADMIN,
    /// CAP_SYS_PTRACE, CAP_SYS_MODULE and CAP_DAC_READ_SEARCH, with which a
    /// root SUT can leave the jail (nsenter into meshwrap's namespaces).
    /// Dropped by default; rootless runs never have them outside the jail.
    #[arg(long)]
    pub keep_caps: bool,
    /// The program to run in the jail, and its arguments (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let verbose = match &cli.command {
        Some(Command::Sidecar(a)) => a.serve.verbose,
        Some(Command::SidecarInit(a)) => a.verbose,
        _ => cli.run.serve.verbose,
    };
    init_tracing(verbose);
    let res = match cli.command {
        Some(Command::Check { files }) => check(&files),
        Some(Command::Rules {
            command:
                RulesCommand::Explain {
                    rules,
                    host,
                    port,
                    addr,
                    unmatched,
                },
        }) => explain(&rules, host.as_deref(), port, addr, unmatched),
        Some(Command::Ca { export, ca_dir }) => export_ca(&export, ca_dir),
        Some(Command::Trust(args)) => explain_trust(&args),
        Some(Command::Verify {
            admin,
            admin_token_file,
            file,
        }) => verify_remote(&admin, admin_token_file.as_deref(), &file),
        Some(Command::SidecarInit(args)) => sidecar::init(&args),
        Some(Command::Sidecar(args)) => sidecar::serve(args),
        None => run(cli.run),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshwrap: {e:#}");
            2
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHWRAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn check(files: &[PathBuf]) -> Result<i32> {
    let mut failed = false;
    for f in files {
        match RuleSet::load(std::slice::from_ref(f)) {
            Ok(set) => eprintln!(
                "{}: ok ({} services, {} hosts)",
                f.display(),
                set.services.len(),
                set.hosts.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if !failed && files.len() > 1 {
        // The merge can fail where each file alone is fine (conflicts).
        if let Err(e) = RuleSet::load(files) {
            eprintln!("{e}");
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn explain(
    files: &[PathBuf],
    host: Option<&str>,
    port: u16,
    addr: Option<std::net::IpAddr>,
    unmatched: Option<Unmatched>,
) -> Result<i32> {
    let set = RuleSet::load(files)?;
    let net = JailNet::default();
    let unmatched = unmatched.or(set.unmatched).unwrap_or(Unmatched::Refuse);
    // The address the SUT would dial: the gateway for the host's name, a
    // fake address for names meshwrap's resolver hands out, else the
    // address given.
    let ip = match (addr, host) {
        (Some(a), _) => a,
        (None, Some(h)) if h.eq_ignore_ascii_case(JailNet::HOST_NAME) => net.gateway_v4.into(),
        (None, _) => "198.18.0.1".parse().expect("literal"),
    };
    let dst = std::net::SocketAddr::new(ip, port);
    let who = host
        .map(|h| format!("{h}:{port}"))
        .unwrap_or_else(|| dst.to_string());
    let appliance = Appliance::new(ApplianceConfig {
        net,
        rules: set.clone(),
        unmatched: Some(unmatched),
        events: EventSink::new(),
        protected_ports: Vec::new(),
        interceptor: None,
    });
    let d = appliance.decide(host, dst);
    println!("{who} → {}: {}", d.kind.label(), d.reason);
    let via = match d.kind {
        crate::model::DecisionKind::Mock => {
            "requests no route answers go, with `fallback: pass`, to"
        }
        _ => "connects from the host to",
    };
    if let Some(up) = d.upstream {
        println!("  {via} {up}");
    } else if let Some((name, port)) = &d.upstream_name {
        println!("  {via} {name}:{port} (resolved on the host)");
    }
    let key = FlowKey { host, dst };
    if !set.services.is_empty() {
        println!("services, in order:");
    }
    for (svc, verdict) in set.explain(key) {
        match verdict {
            Ok(why) => println!(
                "  ✓ {} [{}] ({}): {why}",
                svc.name,
                svc.action.label(),
                svc.origin
            ),
            Err(why) => println!(
                "  ✗ {} [{}] ({}): {why}",
                svc.name,
                svc.action.label(),
                svc.origin
            ),
        }
    }
    Ok(0)
}

/// POSTs expectations to a running meshwrap's admin API.
fn verify_remote(
    admin: &crate::control::AdminAddr,
    token_file: Option<&std::path::Path>,
    file: &std::path::Path,
) -> Result<i32> {
    use http_body_util::BodyExt;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    crate::control::parse_expects(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let token = serve::read_token(token_file)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt
        .block_on(async {
            let io: crate::io::BoxIo = match admin {
                crate::control::AdminAddr::Tcp(a) => {
                    Box::new(tokio::net::TcpStream::connect(a).await?)
                }
                crate::control::AdminAddr::Unix(p) => {
                    Box::new(tokio::net::UnixStream::connect(p).await?)
                }
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
            tokio::spawn(conn);
            let mut req = hyper::Request::post("/verify")
                .header("host", "meshwrap")
                .header("content-type", "application/yaml");
            if let Some(t) = &token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let resp = sender
                .send_request(req.body(http_body_util::Full::new(bytes::Bytes::from(text)))?)
                .await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        })
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        bail!(
            "the admin API answered {status}: {}",
            v.get("error").and_then(|e| e.as_str()).unwrap_or("")
        );
    }
    if let Some(results) = v.get("results").and_then(|r| r.as_array()) {
        for r in results {
            print!("{}", r.get("report").and_then(|x| x.as_str()).unwrap_or(""));
        }
    }
    Ok(if v.get("ok").and_then(|o| o.as_bool()) == Some(true) {
        0
    } else {
        1
    })
}

fn explain_trust(args: &TrustArgs) -> Result<i32> {
    let bundled = args.bundles(None)?;
    // Written as for a run, into a work folder removed at once.
    let dir = WorkDir::create()?;
    let ca = crate::tls::Ca::ephemeral()?;
    let plan = crate::tls::TrustFiles::write(dir.path(), &ca, &bundled)
        .context("cannot prepare the CA files")?;
    println!("A run from here makes the jail trust meshwrap's CA through:");
    for line in &plan.injected {
        println!("  {line}");
    }
    if args.no_trust_discovery {
        println!("(packages' own bundles are not looked for: --no-trust-discovery)");
    }
    Ok(0)
}

fn export_ca(path: &std::path::Path, dir: Option<PathBuf>) -> Result<i32> {
    let dir = dir.unwrap_or_else(crate::tls::default_ca_dir);
    let ca = crate::tls::Ca::persistent(&dir)?;
    std::fs::write(path, ca.cert_pem())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote the CA certificate of {} to {} (the key stays in that directory)",
        dir.display(),
        path.display()
    );
    Ok(0)
}

fn resolv_conf(net: &JailNet) -> String {
    format!(
        "# written by meshwrap: every query goes to meshwrap's resolver\nnameserver {}\nnameserver {}\noptions edns0 timeout:2 attempts:2\n",
        net.dns_v4, net.dns_v6
    )
}

fn run(args: RunArgs) -> Result<i32> {
    if args.command.is_empty() {
        bail!("nothing to run: give a command after `--`, e.g. `meshwrap -- curl http://host.meshwrap.internal:8000/` (see --help)");
    }
    let serve = &args.serve;
    let loaded = serve.load(true)?;
    let admin = serve.admin_plan()?;
    let net = JailNet::default();
    let workdir = WorkDir::create()?;
    let trust = if args.no_ca_injection {
        crate::tls::TrustPlan::default()
    } else {
        let bundled = args
            .trust
            .bundles(args.command.first().map(|c| c.as_os_str()))?;
        crate::tls::TrustFiles::write(workdir.path(), &loaded.ca, &bundled)
            .context("cannot write the CA bundle for the jail")?
    };
    tracing::info!("trust injected: {}", trust.injected.join(", "));
    let spec = JailSpec {
        command: args.command.clone(),
        net,
        binds: trust.binds,
        env: trust.env,
        keep_caps: args.keep_caps,
    };
    // Fork the jail while still single-threaded: the runtime comes after.
    let mut jail = Jail::spawn(&spec, workdir, &resolv_conf(&net))?;
    let tun = jail.take_tun().context("the jail sent no TUN device")?;
    // Before the runtime: its threads inherit the blocked signals, so only
    // the signal thread takes them, however busy the data plane is. A
    // signal that comes before the SUT runs waits in the init for it.
    signals::forward_to(jail.pid())?;
    let runtime = serve::runtime()?;
    let (appliance, events) = serve.appliance(net, loaded);
    let watch = serve.watch.then(|| serve.rules.clone());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let code = runtime.block_on(async {
        let (ready, _) = serve::start(tun, net, &appliance, &events, admin, watch).await?;
        supervise(&jail, &appliance, &ready, done.clone()).await
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    done.store(true, std::sync::atomic::Ordering::Release);
    // Once the data plane has stopped, so the flows of what the SUT left
    // running are reported as still open: those processes would live on in
    // a jail whose network is gone.
    let killed = jail.end();
    if killed > 0 {
        tracing::info!("killed {killed} processes the SUT left running in the jail");
    }
    Ok(serve.finish(&appliance, &events, code))
}

/// Starts the SUT and waits for it; returns its exit code.
/// `done` is set by the caller once the runtime has stopped; until then,
/// a watchdog ends the process if the data plane cannot.
async fn supervise(
    jail: &Jail,
    appliance: &Appliance,
    ready: &std::sync::atomic::AtomicBool,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Result<i32> {
    if let Err(e) = jail.start() {
        eprintln!("meshwrap: {e}");
        return Ok(e.exit_code());
    }
    ready.store(true, std::sync::atomic::Ordering::Release);
    let exit = jail.exit_watch()?;
    let (init, workdir) = (jail.pid(), jail.workdir().to_path_buf());
    let code = tokio::task::spawn_blocking(move || {
        let code = exit.wait();
        signals::exit_unless_done(done, code, move || {
            let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
            let _ = std::fs::remove_dir_all(workdir);
        });
        code
    })
    .await
    .unwrap_or(1);
    serve::drain(appliance, Duration::from_millis(300)).await;
    Ok(code)
}
