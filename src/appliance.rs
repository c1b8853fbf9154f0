//! Wires the stages together: the stack reports new flows, the appliance
//! decides (rules, DNS names, `unmatched`), hands the flow to DNS, egress or
//! a responder, and records what happened.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use tokio::net::TcpStream;

use crate::dns::{DnsPolicy, Resolver};
use crate::egress::{self, ConnectError, UdpNat};
use crate::events::{now_rfc3339, Event, EventSink, FlowEvent};
use crate::model::{Decision, DecisionKind, FlowMeta, JailNet, Protocol};
use crate::responders::{self, Registry, ServeCtx, Upstream};
use crate::rules::{Action, FlowKey, RuleSet, Unmatched};
use crate::sniff::{self, Sniff};
use crate::stack::{Datagram, Flow, FlowHandler, HeldOutcome, StackHandle, SynVerdict};

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

/// A flow still open, for the control API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveFlow {
    pub flow_id: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub host: Option<String>,
    pub decision: &'static str,
    pub reason: String,
    pub service: Option<String>,
    pub since: String,
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
    pending: Mutex<HashMap<u64, Pending>>,
    udp: UdpNat,
    active: AtomicU64,
    interceptor: Option<Arc<crate::tls::Interceptor>>,
    /// UDP (source, destination) pairs already reported as dropped.
    udp_dropped: Mutex<std::collections::HashSet<(SocketAddr, SocketAddr)>>,
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
                pending: Mutex::new(HashMap::new()),
                udp: UdpNat::default(),
                active: AtomicU64::new(0),
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

    /// Flows open now.
    pub fn live_flows(&self) -> Vec<LiveFlow> {
        let mut v: Vec<LiveFlow> = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|f| f.flow_id);
        v
    }

    fn track_live(&self, meta: &FlowMeta, decision: &Decision) {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                meta.id,
                LiveFlow {
                    flow_id: meta.id,
                    src: meta.src,
                    dst: meta.dst,
                    host: meta.host.clone(),
                    decision: decision.kind.label(),
                    reason: decision.reason.clone(),
                    service: decision.service.clone(),
                    since: now_rfc3339(),
                },
            );
    }

    fn stack(&self) -> Option<&StackHandle> {
        self.inner.stack.get()
    }

    /// Where a flow to `dst` goes and why, under the rules in force.
    pub fn decide(&self, host: Option<&str>, dst: SocketAddr) -> Decision {
        self.decide_with(&self.snapshot(), host, dst)
    }

    fn decide_with(&self, snap: &Snapshot, host: Option<&str>, dst: SocketAddr) -> Decision {
        let d = self.decide_inner(snap, host, dst);
        // The admin API listens on the host's loopback: the gateway must not
        // become a way in, unless a rule deliberately claims the port.
        let to_protected = d.kind == DecisionKind::Pass
            && d.service.is_none()
            && d.upstream.is_some_and(|u| {
                u.ip().is_loopback() && self.inner.protected_ports.contains(&u.port())
            });
        if to_protected {
            return Decision {
                kind: DecisionKind::Refuse,
                reason: "meshwrap's admin API is not reachable from the jail (claim the port with a service to allow it)".into(),
                upstream: None,
                upstream_name: None,
                service: None,
            };
        }
        d
    }

    fn decide_inner(&self, snap: &Snapshot, host: Option<&str>, dst: SocketAddr) -> Decision {
        let net = &self.inner.net;
        let pass = |reason: String,
                    upstream: Option<SocketAddr>,
                    name: Option<(String, u16)>,
                    service: Option<String>| Decision {
            kind: DecisionKind::Pass,
            reason,
            upstream,
            upstream_name: name,
            service,
        };
        let refuse = |reason: String, service: Option<String>| Decision {
            kind: DecisionKind::Refuse,
            reason,
            upstream: None,
            upstream_name: None,
            service,
        };
        let rules = &snap.rules;
        // Where a pass of this flow would connect.
        let target = || -> (Option<SocketAddr>, Option<(String, u16)>) {
            if net.is_gateway(dst.ip()) {
                return (
                    Some(SocketAddr::new(
                        JailNet::host_loopback_for(dst.ip()),
                        dst.port(),
                    )),
                    None,
                );
            }
            if Resolver::is_fake(dst.ip()) {
                if let Some(h) = host {
                    if let Some(addr) = rules.host_address(h) {
                        return (Some(SocketAddr::new(addr, dst.port())), None);
                    }
                    return (None, Some((h.to_string(), dst.port())));
                }
                return (None, None);
            }
            (Some(dst), None)
        };
        if let Some(claim) = rules.claim(FlowKey { host, dst }) {
            let service = Some(claim.service.name.clone());
            return match claim.service.action {
                Action::Pass => {
                    let (up, name) = target();
                    pass(claim.why, up, name, service)
                }
                Action::Refuse => refuse(claim.why, service),
                Action::Http(_) | Action::Redis(_) | Action::Mongo(_) | Action::Kafka(_) => {
                    let (up, name) = target();
                    Decision {
                        kind: DecisionKind::Mock,
                        reason: claim.why,
                        upstream: up,
                        upstream_name: name,
                        service,
                    }
                }
            };
        }
        if net.is_gateway(dst.ip()) {
            let (up, _) = target();
            return pass("gateway: the host's loopback".into(), up, None, None);
        }
        if let Some(h) = host {
            if let Some(addr) = rules.host_address(h) {
                return pass(
                    format!("hosts: {h} → {addr}"),
                    Some(SocketAddr::new(addr, dst.port())),
                    None,
                    None,
                );
            }
        }
        match snap.unmatched {
            Unmatched::Refuse => {
                refuse("unmatched: refuse (no rule claims this flow)".into(), None)
            }
            Unmatched::Pass => {
                let (up, name) = target();
                pass("unmatched: pass".into(), up, name, None)
            }
        }
    }

    /// Records a finished (or refused) flow; `(up, down)` are the bytes the
    /// SUT sent and received.
    fn record_flow(
        &self,
        meta: &FlowMeta,
        decision: &Decision,
        protocol: &Protocol,
        started: Instant,
        bytes: (u64, u64),
        error: Option<String>,
    ) {
        let ev = flow_event(meta, decision, protocol, started, bytes, error);
        self.untrack(meta.id);
        self.inner.events.record(Event::Flow(ev));
    }

    /// Keeps what `on_flow` needs once the stack accepts the flow.
    fn park(&self, id: u64, pending: Pending) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pending);
    }

    fn untrack(&self, id: u64) {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// As `record_flow`, with the flow's TLS parameters.
    fn record_tls_flow(&self, ev: FlowEvent, tls: Option<crate::sniff::TlsInfo>) {
        let mut ev = ev;
        if let Some(t) = &tls {
            if ev.host.is_none() {
                ev.host = t.sni.clone();
            }
        }
        ev.tls = tls;
        self.untrack(ev.flow_id);
        self.inner.events.record(Event::Flow(ev));
    }
}

fn flow_event(
    meta: &FlowMeta,
    decision: &Decision,
    protocol: &Protocol,
    started: Instant,
    (up, down): (u64, u64),
    error: Option<String>,
) -> FlowEvent {
    let host = protocol
        .hostname()
        .map(str::to_string)
        .or_else(|| meta.host.clone());
    {
        FlowEvent {
            time: now_rfc3339(),
            flow_id: meta.id,
            transport: match meta.transport {
                crate::model::Transport::Tcp => "tcp",
                crate::model::Transport::Udp => "udp",
            },
            src: meta.src.ip(),
            src_port: meta.src.port(),
            dst: meta.dst.ip(),
            dst_port: meta.dst.port(),
            host,
            protocol: protocol.label(),
            decision: decision.kind.label(),
            reason: decision.reason.clone(),
            service: decision.service.clone(),
            upstream: decision.upstream.map(|u| u.to_string()),
            bytes_up: up,
            bytes_down: down,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            error,
            tls: None,
        }
    }
}

impl Appliance {
    /// Connects upstream for a held SYN, then lets the stack answer it.
    async fn connect_held(
        self,
        meta: FlowMeta,
        decision: Decision,
        started: Instant,
        snapshot: Arc<Snapshot>,
    ) {
        let Some(stack) = self.stack().cloned() else {
            return;
        };
        let target = match (decision.upstream, &decision.upstream_name) {
            (Some(t), _) => Ok(t),
            (None, Some((name, port))) => self
                .inner
                .resolver
                .resolve_on_host(name, meta.dst.is_ipv6())
                .await
                .map(|ip| SocketAddr::new(ip, *port))
                .map_err(|e| format!("cannot resolve {name} on the host: {e}")),
            (None, None) => Err("no upstream address is known for this destination".to_string()),
        };
        let result = match target {
            Ok(t) => egress::connect(t)
                .await
                .map_err(|e| {
                    let outcome = match e {
                        ConnectError::Refused(_) => HeldOutcome::Refuse,
                        ConnectError::Unreachable(..) | ConnectError::Other(..) => {
                            HeldOutcome::Unreachable
                        }
                        ConnectError::TimedOut(_) => HeldOutcome::Drop,
                    };
                    (outcome, e.to_string())
                })
                .map(|s| (s, t)),
            Err(msg) => Err((HeldOutcome::Unreachable, msg)),
        };
        match result {
            Ok((stream, t)) => {
                let mut decision = decision;
                decision.upstream = Some(t);
                self.park(
                    meta.id,
                    Pending {
                        decision,
                        started,
                        upstream: Some(stream),
                        snapshot,
                    },
                );
                stack.resolve(meta.id, HeldOutcome::Accept);
            }
            Err((outcome, msg)) => {
                stack.resolve(meta.id, outcome);
                self.record_flow(
                    &meta,
                    &decision,
                    &Protocol::None,
                    started,
                    (0, 0),
                    Some(msg),
                );
            }
        }
    }

    async fn run_pass(self, meta: FlowMeta, flow: Flow, pending: Pending) {
        let Some(upstream) = pending.upstream else {
            return;
        };
        let report = egress::splice(flow, upstream).await;
        let protocol = match sniff::classify(&report.first_bytes, true) {
            Sniff::Done(p) => p,
            Sniff::NeedMore => Protocol::Unknown,
        };
        if matches!(protocol, Protocol::Tls { .. }) {
            let tls = sniff::tls_passthrough_info(&report.first_bytes, &report.first_reply_bytes);
            let ev = flow_event(
                &meta,
                &pending.decision,
                &protocol,
                pending.started,
                (report.bytes_up, report.bytes_down),
                report.error,
            );
            self.record_tls_flow(ev, tls);
            return;
        }
        self.record_flow(
            &meta,
            &pending.decision,
            &protocol,
            pending.started,
            (report.bytes_up, report.bytes_down),
            report.error,
        );
    }

    /// Sniffs a claimed flow and hands it to its service's responder.
    async fn run_mock(self, meta: FlowMeta, flow: Flow, pending: Pending) {
        let service = pending.decision.service.clone().unwrap_or_default();
        let aborter = flow.handle();
        let (protocol, io) = sniff::sniff_stream(flow).await;
        let ctx = ServeCtx {
            meta: FlowMeta {
                host: protocol
                    .hostname()
                    .map(str::to_string)
                    .or(meta.host.clone()),
                ..meta.clone()
            },
            upstream: match (pending.decision.upstream, &pending.decision.upstream_name) {
                (Some(a), _) => Upstream::Addr(a),
                (None, Some((n, p))) => Upstream::Name(n.clone(), *p),
                (None, None) => Upstream::None,
            },
            tls_server_name: None,
        };
        let mut error = None;
        let mut tls = None;
        let mut protocol = protocol;
        // Redis, MongoDB and Kafka services answer whatever the client sends
        // (garbage gets the protocol's own error), so their flows skip the
        // HTTP dispatch.
        let framed = pending.snapshot.responders.framed(&service);
        match (&protocol, pending.snapshot.responders.http(&service)) {
            (Protocol::Tls { .. }, _) if framed.is_some() => {
                let what = framed.as_ref().map(|f| f.protocol()).unwrap_or_default();
                error = Some(format!(
                    "service `{service}` answers {what}; TLS to {what} is not mocked yet"
                ));
                aborter.abort();
            }
            _ if framed.is_some() => {
                if let Some(svc) = framed {
                    svc.serve(io, ctx, aborter.clone()).await;
                }
            }
            // `None`: nothing arrived within the sniff timeout (a pool that
            // connects ahead of use); hyper waits for the request itself.
            (Protocol::Http1 { .. } | Protocol::Http2 | Protocol::None, Some(svc)) => {
                responders::http::serve(svc, io, ctx, aborter.clone()).await;
            }
            (Protocol::Tls { sni }, Some(svc)) => match &self.inner.interceptor {
                Some(icpt) => {
                    let fallback = meta.host.clone();
                    match icpt.accept(io, fallback.as_deref()).await {
                        Ok((stream, hs)) => {
                            tls = Some(crate::sniff::TlsInfo {
                                sni: hs.sni.clone(),
                                alpn: hs.alpn.clone(),
                                version: hs.version.clone(),
                                intercepted: true,
                            });
                            // What runs inside TLS is sniffed again.
                            let (inner, stream) = sniff::sniff_stream(stream).await;
                            let ctx = ServeCtx {
                                tls_server_name: Some(hs.certificate_for.clone()),
                                ..ctx
                            };
                            match inner {
                                // A client that is slow to speak (a pool
                                // connecting ahead of use) still gets HTTP.
                                Protocol::Http1 { .. } | Protocol::Http2 | Protocol::None => {
                                    if inner != Protocol::None {
                                        protocol = inner;
                                    }
                                    responders::http::serve(svc, stream, ctx, aborter.clone())
                                        .await;
                                }
                                other => {
                                    error = Some(format!(
                                        "service `{service}` answers HTTP but the client spoke {} inside TLS",
                                        other.label()
                                    ));
                                    aborter.abort();
                                }
                            }
                        }
                        Err(e) => {
                            tls = Some(crate::sniff::TlsInfo {
                                sni: sni.clone(),
                                intercepted: true,
                                ..Default::default()
                            });
                            error = Some(e);
                            aborter.abort();
                        }
                    }
                }
                None => {
                    error = Some("TLS interception is off".into());
                    aborter.abort();
                }
            },
            (Protocol::None, _) => {}
            (p, _) => {
                error = Some(format!(
                    "service `{service}` answers HTTP but the client spoke {}",
                    p.label()
                ));
                aborter.abort();
            }
        }
        if let Some(e) = &error {
            self.inner.events.notice(Some(meta.id), e.clone());
        }
        // The responder may return before the stack sent its last bytes.
        for _ in 0..200 {
            if aborter.pending_out() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let bytes = aborter.byte_counts();
        let ev = flow_event(
            &meta,
            &pending.decision,
            &protocol,
            pending.started,
            bytes,
            error,
        );
        self.record_tls_flow(ev, tls);
    }

    async fn run_dns_tcp(self, meta: FlowMeta, flow: Flow, decision: Decision) {
        let started = Instant::now();
        let res = self.inner.resolver.serve_tcp(flow).await;
        self.record_flow(
            &meta,
            &decision,
            &Protocol::Dns,
            started,
            (0, 0),
            res.err().map(|e| e.to_string()),
        );
    }
}

fn dns_decision() -> Decision {
    Decision {
        kind: DecisionKind::Mock,
        reason: "meshwrap's DNS resolver".into(),
        upstream: None,
        upstream_name: None,
        service: Some("dns".into()),
    }
}

impl FlowHandler for Appliance {
    fn on_syn(&self, meta: &mut FlowMeta) -> SynVerdict {
        let net = self.inner.net;
        meta.host = self.inner.resolver.name_of(meta.dst.ip());
        // DNS over TCP is answered at any address, as over UDP: in a pod
        // the app asks kube-dns's address, not meshwrap's.
        if meta.dst.port() == 53 {
            return SynVerdict::Accept;
        }
        if net.is_resolver(meta.dst.ip()) {
            let decision = Decision {
                kind: DecisionKind::Refuse,
                reason: "the resolver address only answers DNS on port 53".into(),
                upstream: None,
                upstream_name: None,
                service: None,
            };
            self.record_flow(
                meta,
                &decision,
                &Protocol::None,
                Instant::now(),
                (0, 0),
                None,
            );
            return SynVerdict::Refuse;
        }
        let started = Instant::now();
        if self.in_jail_subnet(meta.dst.ip()) && !net.is_gateway(meta.dst.ip()) {
            let decision = Decision {
                kind: DecisionKind::Refuse,
                reason: "nothing listens at this address of the jail's own subnet".into(),
                upstream: None,
                upstream_name: None,
                service: None,
            };
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
            DecisionKind::Mock => {
                self.park(
                    meta.id,
                    Pending {
                        decision,
                        started,
                        upstream: None,
                        snapshot,
                    },
                );
                SynVerdict::Accept
            }
        }
    }

    fn on_flow(&self, meta: FlowMeta, flow: Flow) {
        let this = self.clone();
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        let pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&meta.id);
        tokio::spawn(async move {
            let is_dns = meta.dst.port() == 53;
            match pending {
                Some(p) if p.decision.kind == DecisionKind::Mock => {
                    this.clone().run_mock(meta, flow, p).await
                }
                Some(p) => this.clone().run_pass(meta, flow, p).await,
                None if is_dns => this.clone().run_dns_tcp(meta, flow, dns_decision()).await,
                None => {
                    // Every accepted flow is parked in `on_syn` (or is DNS),
                    // so this is a bug; end the connection rather than hang.
                    tracing::warn!("flow {} accepted without a decision", meta.id);
                    flow.abort();
                }
            }
            this.inner.active.fetch_sub(1, Ordering::Relaxed);
        });
    }

    fn on_udp(&self, d: Datagram, stack: &StackHandle) {
        if d.dst.port() == 53 {
            let this = self.clone();
            let stack = stack.clone();
            tokio::spawn(async move {
                if let Some(reply) = this.inner.resolver.answer(&d.payload, "udp").await {
                    stack.send_udp(d.dst, d.src, &reply);
                }
            });
            return;
        }
        let host = self.inner.resolver.name_of(d.dst.ip());
        let meta = FlowMeta {
            id: 0,
            transport: crate::model::Transport::Udp,
            src: d.src,
            dst: d.dst,
            host: host.clone(),
        };
        let jail_local = self.in_jail_subnet(d.dst.ip()) && !self.inner.net.is_gateway(d.dst.ip());
        let decision = if jail_local {
            Decision {
                kind: DecisionKind::Refuse,
                reason: "nothing listens at this address of the jail's own subnet".into(),
                upstream: None,
                upstream_name: None,
                service: None,
            }
        } else {
            self.decide(host.as_deref(), d.dst)
        };
        if decision.kind != DecisionKind::Pass {
            stack
                .stats()
                .packets_dropped
                .fetch_add(1, Ordering::Relaxed);
            // One event per (source, destination), not one per datagram.
            let first = self
                .inner
                .udp_dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((d.src, d.dst));
            if first {
                let meta = FlowMeta {
                    id: stack.next_flow_id(),
                    ..meta
                };
                let mut decision = decision;
                if decision.kind == DecisionKind::Mock {
                    decision.kind = DecisionKind::Refuse;
                    decision.reason = format!("{} (UDP is not mocked)", decision.reason);
                }
                self.record_flow(
                    &meta,
                    &decision,
                    &Protocol::None,
                    Instant::now(),
                    (0, 0),
                    None,
                );
            }
            return;
        }
        let this = self.clone();
        let stack = stack.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let target = match (decision.upstream, &decision.upstream_name) {
                (Some(t), _) => Some(t),
                (None, Some((name, port))) => this
                    .inner
                    .resolver
                    .resolve_on_host(name, d.dst.is_ipv6())
                    .await
                    .ok()
                    .map(|ip| SocketAddr::new(ip, *port)),
                (None, None) => None,
            };
            let meta = FlowMeta {
                id: stack.next_flow_id(),
                ..meta
            };
            let Some(target) = target else {
                let msg = "no upstream address is known for this destination".to_string();
                this.record_flow(
                    &meta,
                    &decision,
                    &Protocol::None,
                    started,
                    (0, 0),
                    Some(msg),
                );
                return;
            };
            let mut decision = decision;
            decision.upstream = Some(target);
            let recorder = this.clone();
            let on_end: egress::OnEnd = Box::new(move |r: egress::UdpReport| {
                recorder.record_flow(
                    &meta,
                    &decision,
                    &Protocol::None,
                    started,
                    (r.bytes_up, r.bytes_down),
                    r.error,
                );
            });
            this.inner
                .udp
                .send(&stack, d.src, d.dst, target, d.payload, on_end);
        });
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

impl Appliance {
    /// Addresses of the jail's own subnet other than the gateway and the
    /// resolver have nothing behind them.
    fn in_jail_subnet(&self, ip: IpAddr) -> bool {
        let net = &self.inner.net;
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX << (32 - u32::from(net.prefix_v4));
                u32::from(v4) & mask == u32::from(net.sut_v4) & mask
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(net.prefix_v6));
                u128::from(v6) & mask == u128::from(net.sut_v6) & mask
            }
        }
    }
}
