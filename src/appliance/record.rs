//! The event written when a flow ends (or is refused). Every path a flow
//! can take (refusal, pass-out, mock, DNS, UDP) ends here, so the event's
//! shape and the end of its live tracking are decided once.

use std::time::Instant;

use super::Appliance;
use crate::events::{now_rfc3339, Event, FlowEvent};
use crate::model::{Decision, FlowMeta, Protocol, Transport};
use crate::sniff::TlsInfo;

impl Appliance {
    /// Records a finished (or refused) flow; `(up, down)` are the bytes the
    /// SUT sent and received.
    pub(super) fn record_flow(
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

    /// As `record_flow`, with the flow's TLS parameters.
    pub(super) fn record_tls_flow(&self, ev: FlowEvent, tls: Option<TlsInfo>) {
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

/// The event for a flow, before its TLS parameters (if any) are added.
pub(super) fn flow_event(
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
    FlowEvent {
        time: now_rfc3339(),
        flow_id: meta.id,
        transport: match meta.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
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
