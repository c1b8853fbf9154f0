//! Pass-out: a flow no mock claims, sent to its real destination. The SYN
//! is held while the host connects upstream, so the SUT sees the real
//! outcome (accepted, refused, unreachable, silent) instead of a
//! connection that opens and then dies; only then is the flow spliced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::record::flow_event;
use super::{Appliance, Pending, Snapshot};
use crate::egress::{self, ConnectError};
use crate::model::{Decision, FlowMeta, Protocol};
use crate::sniff::{self, Sniff};
use crate::stack::{Flow, HeldOutcome};

impl Appliance {
    /// Connects upstream for a held SYN, then lets the stack answer it.
    pub(super) async fn connect_held(
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
        // A name resolved only now may lead to meshwrap's own listeners.
        if let (Ok(t), None) = (&target, decision.service.as_ref()) {
            if self.is_protected(*t) {
                stack.resolve(meta.id, HeldOutcome::Refuse);
                let refused = super::decide::protected_refusal();
                self.record_flow(&meta, &refused, &Protocol::None, started, (0, 0), None);
                return;
            }
        }
        let via_gateway = self.inner.net.is_gateway(meta.dst.ip());
        let result = match target {
            Ok(t) => {
                let connected = if via_gateway {
                    egress::connect_host_loopback(t).await
                } else {
                    egress::connect(t).await.map(|s| (s, t))
                };
                connected.map_err(|e| {
                    let outcome = match e {
                        ConnectError::Refused(_) => HeldOutcome::Refuse,
                        ConnectError::Unreachable(..) | ConnectError::Other(..) => {
                            HeldOutcome::Unreachable
                        }
                        ConnectError::TimedOut(_) => HeldOutcome::Drop,
                    };
                    (outcome, e.to_string())
                })
            }
            Err(msg) => Err((HeldOutcome::Unreachable, msg)),
        };
        match result {
            Ok((stream, t)) => {
                let mut decision = decision;
                decision.upstream = Some(t);
                let pending = Pending {
                    decision,
                    started,
                    upstream: Some(stream),
                    snapshot,
                };
                stack.resolve(meta.id, HeldOutcome::Accept(Box::new(pending)));
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

    pub(super) async fn run_pass(self, meta: FlowMeta, flow: Flow, pending: Pending) {
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
}
