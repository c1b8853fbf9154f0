//! `meshwrap sidecar-init` and `meshwrap sidecar`: the pod front door.
//! The init step is the only one with a capability (NET_ADMIN); the
//! sidecar then serves as an ordinary uid, like Istio's split.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::serve::{self, ServeArgs};
use crate::jail::sidecar::{self as front, Cidr, PortRange, SidecarInit};
use crate::model::JailNet;

/// How the pod's traffic is routed into the TUN.
#[derive(Debug, Args)]
pub struct RoutingArgs {
    /// The uid the sidecar runs as: it owns the TUN and its sockets
    /// bypass the interception.
    #[arg(long, value_name = "UID", default_value_t = front::DEFAULT_OWNER)]
    pub owner: u32,
    /// Also require the sidecar's gid to be GID to attach to the TUN (the
    /// kernel then checks uid and gid, both) [default: the uid alone]. The
    /// single-container form switches to this gid, else to gid --owner.
    #[arg(long, value_name = "GID")]
    pub group: Option<u32>,
    /// The routing table whose default route is the TUN.
    #[arg(long, value_name = "N", default_value_t = front::DEFAULT_TABLE)]
    pub table: u32,
    /// Destinations that keep the pod's normal routing (not intercepted),
    /// e.g. the API server's address; repeat for more.
    #[arg(long = "exclude-cidr", value_name = "CIDR")]
    pub exclude_cidrs: Vec<Cidr>,
    /// Destination ports (TCP and UDP) that keep the pod's normal routing;
    /// a single port or a range like 15000-15010; repeat for more.
    #[arg(long = "exclude-port", value_name = "PORT[-PORT]")]
    pub exclude_ports: Vec<PortRange>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The TUN device to create (or re-configure).
    #[arg(long, value_name = "NAME", default_value = "mw0")]
    pub tun: String,
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// More logging on stderr.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// The TUN device `sidecar-init` made.
    #[arg(long, value_name = "NAME", default_value = "mw0")]
    pub tun: String,
    /// Single-container form: run as root with NET_ADMIN, SETUID and
    /// SETGID, do what `sidecar-init` does, then become --owner with no
    /// capabilities and serve.
    #[arg(long)]
    pub init: bool,
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Write the interception CA's certificate (PEM) to PATH, e.g. a
    /// volume shared with the app, whose SSL_CERT_FILE can point at it.
    #[arg(long, value_name = "PATH")]
    pub ca_export: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl RoutingArgs {
    fn plan(&self, tun: &str) -> Result<SidecarInit> {
        // Root's sockets would bypass the TUN (root is every process the
        // image runs by default), and --init would keep every capability.
        if self.owner == 0 {
            bail!("--owner 0: the sidecar must run as a uid of its own (e.g. 1337), not root");
        }
        Ok(SidecarInit {
            tun: tun.to_string(),
            owner: self.owner,
            group: self.group,
            table: self.table,
            exclude_cidrs: self.exclude_cidrs.clone(),
            exclude_ports: self.exclude_ports.clone(),
        })
    }
}

fn run_init(plan: &SidecarInit) -> Result<()> {
    let net = JailNet::sidecar();
    let report = front::init(plan, &net)?;
    let addrs: Vec<String> = report.pod_addresses.iter().map(|a| a.to_string()).collect();
    eprintln!(
        "meshwrap sidecar-init: {} ready for uid {} ({}{}); {} rules; replies from {} bypass it{}{}",
        plan.tun,
        plan.owner,
        net.sut_v4,
        if report.ipv6 {
            format!(", {}", net.sut_v6)
        } else {
            ", IPv4 only".to_string()
        },
        report.rules,
        if addrs.is_empty() {
            "no pod address".to_string()
        } else {
            addrs.join(", ")
        },
        if plan.exclude_cidrs.is_empty() {
            String::new()
        } else {
            format!("; {} excluded ranges", plan.exclude_cidrs.len())
        },
        if plan.exclude_ports.is_empty() {
            String::new()
        } else {
            format!("; {} excluded port ranges", plan.exclude_ports.len())
        },
    );
    Ok(())
}

pub(super) fn init(args: &InitArgs) -> Result<i32> {
    run_init(&args.routing.plan(&args.tun)?)?;
    Ok(0)
}

pub(super) fn serve(args: SidecarArgs) -> Result<i32> {
    if args.init {
        if !nix::unistd::geteuid().is_root() {
            bail!("--init needs root (with NET_ADMIN, SETUID and SETGID); without it, run `meshwrap sidecar-init` in an init container");
        }
        let plan = args.routing.plan(&args.tun)?;
        run_init(&plan)?;
        front::drop_privileges(plan.owner, plan.group.unwrap_or(plan.owner))?;
    } else if nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "the sidecar runs as root: its own connections are routed into the TUN unless root is \
             the --owner given to sidecar-init; run it as that uid (runAsUser: {})",
            front::DEFAULT_OWNER
        );
    }
    let net = JailNet::sidecar();
    let serve = &args.serve;
    let loaded = serve.load(false)?;
    if let Some(path) = &args.ca_export {
        std::fs::write(path, loaded.ca.cert_pem())
            .with_context(|| format!("cannot write the CA certificate to {}", path.display()))?;
    }
    let admin = serve.admin_plan()?;
    let tun = front::attach(&args.tun)?;
    // Before the runtime, whose threads inherit the blocked signals.
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    super::signals::stop_on_signal(stop.clone())?;
    let runtime = serve::runtime()?;
    let (appliance, events) = serve.appliance(net, loaded);
    let watch = serve.watch.then(|| serve.rules.clone());
    runtime.block_on(async {
        let (ready, _) = serve::start(tun, net, &appliance, &events, admin, watch).await?;
        ready.store(true, std::sync::atomic::Ordering::Release);
        eprintln!(
            "meshwrap sidecar: serving {} as uid {}",
            args.tun,
            nix::unistd::geteuid()
        );
        stop.notified().await;
        // Not ready any more: the pod is going away.
        ready.store(false, std::sync::atomic::Ordering::Release);
        serve::drain(&appliance, Duration::from_millis(500)).await;
        Ok::<_, anyhow::Error>(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(serve.finish(&appliance, &events, 0))
}
