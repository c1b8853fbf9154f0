//! DNS over TCP. The resolver answers it like DNS over UDP; the appliance
//! only has to record the flow, since it is accepted at any address
//! without a decision (see `on_syn`).

use std::time::Instant;

use super::Appliance;
use crate::model::{Decision, DecisionKind, FlowMeta, Protocol};
use crate::stack::Flow;

impl Appliance {
    /// Lets the resolver answer the flow's queries until the client closes.
    pub(super) async fn run_dns_tcp(self, meta: FlowMeta, flow: Flow) {
        let started = Instant::now();
        let res = self.inner.resolver.serve_tcp(flow).await;
        self.record_flow(
            &meta,
            &dns_decision(),
            &Protocol::Dns,
            started,
            (0, 0),
            res.err().map(|e| e.to_string()),
        );
    }
}

/// What a DNS flow's event says about its decision.
fn dns_decision() -> Decision {
    Decision {
        kind: DecisionKind::Mock,
        reason: "meshwrap's DNS resolver".into(),
        upstream: None,
        upstream_name: None,
        service: Some("dns".into()),
    }
}
