//! UDP datagrams. There is no UDP mock: port 53 goes to the resolver, a
//! datagram whose decision is pass goes out through the NAT (one host
//! socket per source and destination), and any other is dropped, with one
//! event per source and destination rather than one per datagram.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Appliance;
use crate::egress;
use crate::model::{DecisionKind, FlowMeta, Protocol, Transport};
use crate::stack::{Datagram, StackHandle};

impl Appliance {
    /// Answers, passes out or drops one datagram from the jail.
    pub(super) fn handle_udp(&self, d: Datagram, stack: &StackHandle) {
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
            transport: Transport::Udp,
            src: d.src,
            dst: d.dst,
            host: host.clone(),
        };
        let decision = self
            .refuse_in_jail_subnet(d.dst.ip())
            .unwrap_or_else(|| self.decide(host.as_deref(), d.dst));
        if decision.kind != DecisionKind::Pass {
            stack
                .stats()
                .packets_dropped
                .fetch_add(1, Ordering::Relaxed);
            // One event per (source, destination), not one per datagram.
            // The memory of pairs is forgotten past a bound (ephemeral
            // source ports would grow it forever in a sidecar); a pair
            // seen again after that gets one more event.
            let first = {
                let mut seen = self
                    .inner
                    .udp_dropped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if seen.len() >= UDP_DROPPED_MEMORY {
                    seen.clear();
                }
                seen.insert((d.src, d.dst))
            };
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

/// How many dropped (source, destination) UDP pairs are remembered.
const UDP_DROPPED_MEMORY: usize = 10_000;
