//! A flow a service claims: sniff its first bytes, terminate TLS when the
//! responder wants it (and sniff again inside), then hand the flow to the
//! service's responder. A client that speaks something else than the
//! responder answers gets its flow ended, with an event saying what was
//! seen.

use std::time::Duration;

use super::record::flow_event;
use super::{Appliance, Pending};
use crate::io::BoxIo;
use crate::model::{FlowMeta, Protocol};
use crate::responders::deadline::{RequestClock, Timed};
use crate::responders::{ServeCtx, Upstream};
use crate::rules::timeouts::Timeouts;
use crate::sniff;
use crate::stack::Flow;

/// How long a finished flow may take to hand its last bytes to the stack
/// before its event is written anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

impl Appliance {
    /// Sniffs a claimed flow and hands it to its service's responder.
    pub(super) async fn run_mock(self, meta: FlowMeta, conn: Flow, pending: Pending) {
        let service = pending.decision.service.clone().unwrap_or_default();
        let flow = conn.handle();
        let (seen, io) = sniff::sniff_stream(conn).await;
        let responder = pending.snapshot.responders.get(&service);
        // Limits apply from here on, below TLS: a handshake that stalls is
        // a request that never completes.
        let clock = RequestClock::new(
            responder.as_ref().map_or(Timeouts::NONE, |r| r.timeouts()),
            seen != Protocol::None,
        );
        let io: BoxIo = Box::new(Timed::new(io, clock.clone()));
        let mut ctx = ServeCtx {
            meta: FlowMeta {
                host: seen.hostname().map(str::to_string).or(meta.host.clone()),
                ..meta.clone()
            },
            upstream: match (pending.decision.upstream, &pending.decision.upstream_name) {
                (Some(a), _) => Upstream::Addr(a),
                (None, Some((n, p))) => Upstream::Name(n.clone(), *p),
                (None, None) => Upstream::None,
            },
            tls_server_name: None,
            clock: clock.clone(),
        };
        let mut error = None;
        let mut tls = None;
        let mut protocol = seen.clone();
        match (responder, seen) {
            (None, _) => {
                error = Some(format!("service `{service}` has no responder"));
                flow.abort();
            }
            (Some(r), Protocol::Tls { sni }) if r.terminates_tls() => {
                // Boxed: the handshake's state is kilobytes, and inline it
                // would sit in the future of every mocked flow, TLS or not.
                match Box::pin(self.intercept(io, sni, meta.host.as_deref())).await {
                    Ok(t) => {
                        tls = Some(t.tls);
                        ctx.tls_server_name = Some(t.server_name);
                        if r.speaks(&t.inner) {
                            // A client slow to speak (a pool connecting
                            // ahead of use) keeps the flow labelled TLS,
                            // and its connection is idle, not mid-request.
                            if t.inner != Protocol::None {
                                protocol = t.inner;
                            } else {
                                clock.wait(false);
                            }
                            r.serve(t.io, ctx, flow.clone()).await;
                        } else {
                            error = Some(format!(
                                "service `{service}` answers {} but the client spoke {} inside TLS",
                                r.info().title,
                                t.inner.label()
                            ));
                            flow.abort();
                        }
                    }
                    Err(e) => {
                        tls = e.tls;
                        error = Some(e.error);
                        flow.abort();
                    }
                }
            }
            (Some(r), Protocol::Tls { .. }) => {
                let what = r.info().title;
                error = Some(format!(
                    "service `{service}` answers {what}; TLS to {what} is not mocked yet"
                ));
                flow.abort();
            }
            (Some(r), seen) if r.speaks(&seen) => r.serve(io, ctx, flow.clone()).await,
            (Some(r), seen) => {
                error = Some(format!(
                    "service `{service}` answers {} but the client spoke {}",
                    r.info().title,
                    seen.label()
                ));
                flow.abort();
            }
        }
        if let (None, Some(e)) = (&error, clock.expired()) {
            error = Some(e.to_string());
        }
        if let Some(e) = &error {
            self.inner.events.notice(Some(meta.id), e.clone());
        }
        // The responder may return before the stack sent its last bytes.
        let _ = tokio::time::timeout(FLUSH_WAIT, flow.flushed()).await;
        let bytes = flow.byte_counts();
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
}
