//! Wires the stages together: the stack reports new flows, the appliance
//! decides (rules, DNS names, `unmatched`), hands the flow to DNS, egress or
//! a responder, and records what happened.
//!
//! This file holds the `Appliance` itself (its state, the rules snapshot
//! and its reload) and the `FlowHandler` the stack calls, which only
//! dispatches; each job it dispatches to has its own module:
//!
//! - `decide`: where a flow goes and why, under a snapshot of the rules;
//! - `pass`: connecting upstream for a held SYN, then splicing;
//! - `mock`: sniffing a claimed flow and handing it to its responder;
//! - `dns_tcp`: DNS over TCP, answered by the resolver;
//! - `udp`: datagrams (DNS, pass-out through the NAT, drops);
//! - `record`: the flow events written when a flow ends;
//! - `live`: the table of open flows the control API shows.

mod decide;
mod dns_tcp;
mod intercept;
mod live;
mod mock;
mod pass;
mod record;
mod udp;

pub use live::LiveFlow;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use tokio::net::TcpStream;

use crate::dns::{DnsPolicy, Resolver};
use crate::egress::UdpNat;
use crate::events::EventSink;
use crate::model::{Decision, DecisionKind, FlowMeta, JailNet, Protocol};
use crate::responders::Registry;
use crate::rules::{RuleSet, Unmatched};
use crate::stack::{Datagram, Flow, FlowHandler, StackHandle, SynVerdict, Ticket};

/// Everything the appliance needs to decide about flows.
pub struct ApplianceConfig {
    pub net: JailNet,
    pub rules: RuleSet,
    /// `--unmatched`: wins over the rules' `unmatched:` (default refuse).
    pub unmatched: Option<Unmatched>,
    pub events: EventSink,
    /// Host loopback ports the jail must not reach through the gateway
    /// (the admin API), unless a service claims them.
    pub protected_ports: Vec<u16>,
    /// Terminates TLS for mocked services; `None` turns interception off.
    pub interceptor: Option<Arc<crate::tls::Interceptor>>,
}

/// What `on_syn` (or `connect_held`) decided; the stack carries it as the
/// flow's ticket and hands it back with the accepted flow in `on_flow`.
struct Pending {
    decision: Decision,
    started: Instant,
    upstream: Option<TcpStream>,
    /// The rules in force when the flow opened: it keeps them to the end.
    snapshot: Arc<Snapshot>,
}

/// The rules in force and the responders built from them; replaced whole
/// on reload, so a flow never sees half of two rule sets.
pub struct Snapshot {
    pub rules: Arc<RuleSet>,
    pub unmatched: Unmatched,
    pub responders: Arc<Registry>,
    /// Counts reloads; 0 for the rules given at start.
    pub generation: u64,
}

struct Inner {
    net: JailNet,
    current: RwLock<Arc<Snapshot>>,
    unmatched_override: Option<Unmatched>,
    protected_ports: Vec<u16>,
    live: Mutex<HashMap<u64, LiveFlow>>,
    resolver: Resolver,
    events: EventSink,
    stack: OnceLock<StackHandle>,
    udp: UdpNat,
    active: AtomicU64,
    /// Notified when the last active flow finishes (`idle`).
    idle: tokio::sync::Notify,
    interceptor: Option<Arc<crate::tls::Interceptor>>,
    /// UDP (source, destination) pairs already reported as dropped.
    udp_dropped: Mutex<HashSet<(SocketAddr, SocketAddr)>>,
}

/// The `FlowHandler` the stack calls; cheap to clone.
#[derive(Clone)]
pub struct Appliance {
    inner: Arc<Inner>,
}

impl Appliance {
    pub fn new(cfg: ApplianceConfig) -> Self {
        let snapshot = build_snapshot(cfg.rules, cfg.unmatched, &cfg.events, 0);
        let resolver = Resolver::new(
            cfg.net,
            DnsPolicy {
                rules: snapshot.rules.clone(),
                unmatched: snapshot.unmatched,
            },
            cfg.events.clone(),
        );
        Appliance {
            inner: Arc::new(Inner {
                net: cfg.net,
                current: RwLock::new(Arc::new(snapshot)),
                unmatched_override: cfg.unmatched,
                protected_ports: cfg.protected_ports,
                live: Mutex::new(HashMap::new()),
                resolver,
                events: cfg.events,
                stack: OnceLock::new(),
                udp: UdpNat::default(),
                active: AtomicU64::new(0),
                idle: tokio::sync::Notify::new(),
                udp_dropped: Mutex::new(Default::default()),
                interceptor: cfg.interceptor,
            }),
        }
    }

    /// Gives the appliance the stack it answers for (once, at start).
    pub fn attach(&self, stack: StackHandle) {
        let _ = self.inner.stack.set(stack);
    }

    /// Flows accepted and not yet finished.
    pub fn active_flows(&self) -> u64 {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Resolves once no flow is active (at once when none is).
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.active_flows() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The rules and responders in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a new rule set in force for new flows (flows already open keep
    /// theirs). Responders start from the new rules' seeds.
    pub fn reload(&self, rules: RuleSet) -> Arc<Snapshot> {
        let generation = self.snapshot().generation + 1;
        let snap = Arc::new(build_snapshot(
            rules,
            self.inner.unmatched_override,
            &self.inner.events,
            generation,
        ));
        self.inner.resolver.set_policy(DnsPolicy {
            rules: snap.rules.clone(),
            unmatched: snap.unmatched,
        });
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = snap.clone();
        snap
    }

    /// Puts responder state (sequences, counters, resources) back to the
    /// seeds, for one service or all; returns the services reset.
    pub fn reset(&self, service: Option<&str>) -> Result<Vec<String>, String> {
        let snap = self.snapshot();
        snap.responders.reset(service)
    }

    fn stack(&self) -> Option<&StackHandle> {
        self.inner.stack.get()
    }
}

impl FlowHandler for Appliance {
    fn on_syn(&self, meta: &mut FlowMeta) -> SynVerdict {
        meta.host = self.inner.resolver.name_of(meta.dst.ip());
        // DNS over TCP is answered at any address, as over UDP: in a pod
        // the app asks kube-dns's address, not meshwrap's.
        if meta.dst.port() == 53 {
            return SynVerdict::Accept(None);
        }
        let started = Instant::now();
        let local = self
            .refuse_at_resolver(meta.dst.ip())
            .or_else(|| self.refuse_in_jail_subnet(meta.dst.ip()));
        if let Some(decision) = local {
            self.record_flow(meta, &decision, &Protocol::None, started, (0, 0), None);
            return SynVerdict::Refuse;
        }
        let snapshot = self.snapshot();
        let decision = self.decide_with(&snapshot, meta.host.as_deref(), meta.dst);
        if decision.kind != DecisionKind::Refuse {
            self.track_live(meta, &decision);
        }
        match decision.kind {
            DecisionKind::Refuse => {
                self.record_flow(meta, &decision, &Protocol::None, started, (0, 0), None);
                SynVerdict::Refuse
            }
            DecisionKind::Pass => {
                let this = self.clone();
                let m = meta.clone();
                tokio::spawn(this.connect_held(m, decision, started, snapshot));
                SynVerdict::Hold
            }
            DecisionKind::Mock => SynVerdict::Accept(Some(Box::new(Pending {
                decision,
                started,
                upstream: None,
                snapshot,
            }))),
        }
    }

    fn on_flow(&self, meta: FlowMeta, flow: Flow, ticket: Option<Ticket>) {
        let this = self.clone();
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        let pending = ticket
            .and_then(|t| t.downcast::<Pending>().ok())
            .map(|p| *p);
        // The way the flow takes is boxed on its own, built here rather
        // than inside the task: a task holds the state of its future, and
        // an async block holding all three ways was as large as the
        // largest plus what the compiler keeps of the others (9.8 KB per
        // flow, copied whole into the task when spawned).
        let is_dns = meta.dst.port() == 53;
        let way: Pin<Box<dyn Future<Output = ()> + Send>> = match pending {
            Some(p) if p.decision.kind == DecisionKind::Mock => {
                Box::pin(this.clone().run_mock(meta, flow, p))
            }
            Some(p) => Box::pin(this.clone().run_pass(meta, flow, p)),
            None if is_dns => Box::pin(this.clone().run_dns_tcp(meta, flow)),
            None => {
                // Every accepted flow but DNS has a ticket from `on_syn`,
                // so this is a bug; end the connection rather than hang.
                tracing::warn!("flow {} accepted without a decision", meta.id);
                flow.abort();
                Box::pin(std::future::ready(()))
            }
        };
        tokio::spawn(async move {
            way.await;
            if this.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                this.inner.idle.notify_waiters();
            }
        });
    }

    fn on_udp(&self, d: Datagram, stack: &StackHandle) {
        self.handle_udp(d, stack);
    }
}

fn build_snapshot(
    rules: RuleSet,
    unmatched: Option<Unmatched>,
    events: &EventSink,
    generation: u64,
) -> Snapshot {
    let responders = Arc::new(Registry::build(&rules, events));
    Snapshot {
        unmatched: unmatched.or(rules.unmatched).unwrap_or(Unmatched::Refuse),
        rules: Arc::new(rules),
        responders,
        generation,
    }
}
