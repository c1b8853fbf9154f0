//! A flow a service claims: sniff its first bytes, terminate TLS when it
//! starts with a ClientHello (and sniff again inside), then hand it to the
//! service's responder: HTTP, or a framed protocol (Redis, MongoDB, Kafka).
//! A client that speaks something else than the service answers gets its
//! flow ended, with an event saying what was seen.

use std::time::Duration;

use super::record::flow_event;
use super::{Appliance, Pending};
use crate::model::{FlowMeta, Protocol};
use crate::responders::{self, ServeCtx, Upstream};
use crate::sniff::{self, TlsInfo};
use crate::stack::Flow;

impl Appliance {
    /// Sniffs a claimed flow and hands it to its service's responder.
    pub(super) async fn run_mock(self, meta: FlowMeta, flow: Flow, pending: Pending) {
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
                            tls = Some(TlsInfo {
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
                            tls = Some(TlsInfo {
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
            tokio::time::sleep(Duration::from_millis(5)).await;
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
}
