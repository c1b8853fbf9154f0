//! The table of flows open now, for the control API's `/flows`. Events
//! only say what happened once a flow ended; this says what is going on,
//! so a long pass-out or a hung client can be seen while it lasts.

use std::net::SocketAddr;
use std::time::Instant;

use super::Appliance;
use crate::events::{now_rfc3339, Event};
use crate::model::{Decision, FlowMeta, Protocol};

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
    /// What the flow's event needs if it is still open when meshwrap stops.
    #[serde(skip)]
    opened: (FlowMeta, Decision, Instant),
}

impl Appliance {
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

    /// Adds a flow that was not refused at its SYN.
    pub(super) fn track_live(&self, meta: &FlowMeta, decision: &Decision) {
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
                    opened: (meta.clone(), decision.clone(), Instant::now()),
                },
            );
    }

    /// Records an event for every flow still open, so that the events and
    /// the summary also count the connections a command left open when it
    /// exited (or that were open when the sidecar stopped). Their byte
    /// counts are not known here and are given as 0. UDP associations
    /// passed out end here too, with what they carried.
    pub fn record_open_flows(&self) {
        self.inner.udp.close_all();
        let open: Vec<LiveFlow> = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, f)| f)
            .collect();
        for f in open {
            let (meta, decision, started) = f.opened;
            let ev = super::record::flow_event(
                &meta,
                &decision,
                &Protocol::None,
                started,
                (0, 0),
                Some("still open when meshwrap stopped".into()),
            );
            self.inner.events.record(Event::Flow(ev));
        }
    }

    /// Removes a flow once its event is recorded.
    pub(super) fn untrack(&self, id: u64) {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
