//! The HTTP responder: HTTP/1.1 and HTTP/2 (prior knowledge) served by
//! hyper, answering from the service's routes, resources and fallback.

mod forward;
mod redact;
mod render;
mod request;
mod resources;
mod respond;
mod responder;
mod upstream_tls;

pub use responder::{HttpDetail, INFO};

use std::convert::Infallible;

use base64::Engine as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::events::{now_rfc3339, Event, EventSink, ExchangeEvent, Outcome};
use crate::rules::http::route_label;
use crate::rules::http::{HttpSpec, Responses, RouteSpec};
use crate::stack::FlowHandle;

use super::deadline::Answering;
use super::faults::FaultGate;
use super::ServeCtx;
use render::Renderer;
use request::RequestView;
use resources::Resource;

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Largest request body read for matching; larger gets 413.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

struct RouteState {
    label: String,
    spec: RouteSpec,
    /// Requests this route answered.
    calls: AtomicU64,
    /// Position in a sequence.
    next: AtomicUsize,
    /// The route's faults' counters (`after`, `times`).
    faults: FaultGate,
}

impl RouteState {
    /// Claims one call if the route's `times` allows it; returns the 1-based
    /// call number.
    fn take_call(&self) -> Option<u64> {
        let limit = self.spec.times.unwrap_or(u64::MAX);
        self.calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|n| n + 1)
    }
}

/// One mocked HTTP service and its state for the whole run.
pub struct HttpService {
    name: String,
    spec: Arc<HttpSpec>,
    routes: Vec<RouteState>,
    resources: Vec<Resource>,
    renderer: Renderer,
    events: EventSink,
    /// All requests the service saw (the `counter` of templates without a
    /// route).
    requests: AtomicU64,
    /// The service-wide faults' counters (`after`, `times`).
    service_faults: FaultGate,
}

impl HttpService {
    pub fn new(name: &str, spec: Arc<HttpSpec>, events: EventSink) -> Self {
        let routes = spec
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteState {
                label: route_label(r, i),
                spec: r.clone(),
                calls: AtomicU64::new(0),
                next: AtomicUsize::new(0),
                faults: FaultGate::new(r.faults.len()),
            })
            .collect();
        let resources = spec.resources.iter().map(Resource::new).collect();
        HttpService {
            service_faults: FaultGate::new(spec.faults.0.len()),
            name: name.to_string(),
            renderer: Renderer::new(&spec),
            spec,
            routes,
            resources,
            events,
            requests: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn route_labels(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.label.clone()).collect()
    }

    /// Puts sequences, counters and resources back to their start.
    pub fn reset(&self) {
        for r in &self.routes {
            r.calls.store(0, Ordering::Release);
            r.next.store(0, Ordering::Release);
            r.faults.reset();
        }
        self.service_faults.reset();
        for r in &self.resources {
            r.reset();
        }
        self.requests.store(0, Ordering::Release);
    }
}

/// Serves one connection until the client is done.
pub async fn serve<IO>(svc: Arc<HttpService>, io: IO, ctx: ServeCtx, flow: FlowHandle)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let svc = svc.clone();
        let ctx = ctx.clone();
        let flow = flow.clone();
        async move { Ok::<_, Infallible>(handle(svc, ctx, flow, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // No `pipeline_flush`: with it hyper holds writes while unread bytes
    // sit in its buffer, so the 400 for a malformed request never left.
    builder.http1().max_buf_size(64 * 1024);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// A response body that keeps its connection `busy` until hyper has
/// taken all of it; everything else is the inner body's (its size hint
/// above all, which decides `content-length` over chunked).
struct Answered {
    inner: Body,
    _until_written: Answering,
}

impl hyper::body::Body for Answered {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn handle(
    svc: Arc<HttpService>,
    ctx: Arc<ServeCtx>,
    flow: FlowHandle,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    // A body is held whole while the request is matched, so it is
    // counted against the memory budget before it is read: its declared
    // length is reserved (concurrent requests each see what the others
    // took). Past the budget, or with no room for it now, one is not
    // read at all (503, as an overloaded server says it); one larger than
    // the budget leaves even when nothing else is held is refused (413).
    let has_body = !hyper::body::Body::is_end_stream(&body);
    let declared = hyper::body::Body::size_hint(&body)
        .exact()
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let budget = crate::budget::limit().unwrap_or(0);
    // Without a budget (the fuzz harness), all of it is free.
    let free =
        crate::budget::limit().map_or(usize::MAX, |b| b.saturating_sub(crate::budget::used()));
    let room = crate::budget::room();
    let limit = MAX_BODY.min(room);
    // Twice the body: its chunks and the one piece they are joined into
    // are both held for a moment.
    let reservation = crate::budget::reserve(2 * declared.unwrap_or(0).min(MAX_BODY));
    let busy = || {
        Some((
            503,
            format!(
                "meshwrap is past its memory budget (--memory-budget {}); try again later",
                crate::budget::describe(budget)
            ),
        ))
    };
    let refused = match declared {
        _ if !has_body => None,
        _ if crate::budget::over() => busy(),
        Some(n) if n <= MAX_BODY && n.saturating_mul(2) > free => Some((
            413,
            format!(
                "request body of {n} bytes is over the {} left of meshwrap's memory budget (--memory-budget {})",
                crate::budget::describe(free),
                crate::budget::describe(budget)
            ),
        )),
        Some(_) if reservation.is_none() => busy(),
        _ => None,
    };
    let collected = match refused {
        Some(r) => Err(r),
        None => match Limited::new(body, limit).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_none() => {
                Err((400, format!("malformed request body: {e}")))
            }
            Err(_) if limit < MAX_BODY => Err((
                413,
                format!(
                    "request body over the {} left of meshwrap's memory budget (--memory-budget {})",
                    crate::budget::describe(room),
                    crate::budget::describe(budget)
                ),
            )),
            Err(_) => Err((413, format!("request body over {MAX_BODY} bytes"))),
        },
    };
    let body = match collected {
        Ok(b) => b,
        Err((status, msg)) => {
            let view = RequestView::new(&parts, Bytes::new());
            let mut resp = respond::error_response(status, &msg, true);
            if status == 503 {
                resp.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
            }
            svc.record(
                &ctx,
                &view,
                None,
                "error",
                Some(status),
                0,
                None,
                None,
                Some(msg),
                started,
            );
            return resp;
        }
    };
    // The whole request is in: answering it, including writing the
    // body (which may stream), is not timed as reading is.
    let answering = ctx.clock.answering();
    let view = RequestView::new(&parts, body);
    let n = svc.requests.fetch_add(1, Ordering::AcqRel) + 1;
    respond::answer(&svc, &ctx, &flow, &view, n, started)
        .await
        .map(|inner| {
            Answered {
                inner,
                _until_written: answering,
            }
            .boxed()
        })
}

/// The headers and the body bytes of an answer, as sent.
type SentResponse<'a> = (&'a [(String, String)], &'a [u8]);

impl HttpService {
    /// Records one exchange in the events.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &ServeCtx,
        req: &RequestView,
        route: Option<&str>,
        answered_by: &'static str,
        status: Option<u16>,
        response_bytes: u64,
        response: Option<SentResponse<'_>>,
        fault: Option<&'static str>,
        error: Option<String>,
        started: Instant,
    ) {
        let cap = self.spec.record_bodies;
        let clip = |b: &[u8]| -> Option<String> {
            (!b.is_empty() && cap > 0)
                .then(|| String::from_utf8_lossy(&b[..b.len().min(cap)]).into_owned())
        };
        let unmatched = route.is_none() && matches!(answered_by, "fallback" | "pass");
        let mut near_misses = if unmatched {
            self.near_misses(req)
        } else {
            Vec::new()
        };
        let redacting = self.events.redacts();
        let response_body_bytes = response.map(|(_, b)| b);
        let mut response_body = response_body_bytes.and_then(clip);
        // A body that is not text (an image) is kept as base64 too, so
        // that the flow inspector can show it.
        let response_body_base64 = response_body_bytes
            .filter(|b| {
                cap > 0
                    && matches!(std::str::from_utf8(&b[..b.len().min(cap)]),
                        Err(e) if e.error_len().is_some())
            })
            .map(|b| base64::engine::general_purpose::STANDARD.encode(&b[..b.len().min(cap)]));
        let mut response_headers: std::collections::BTreeMap<String, String> = response
            .map(|(h, _)| h.iter().cloned().collect())
            .unwrap_or_default();
        if redacting {
            response_headers = redact::headers(&response_headers);
        }
        let (query, request_body, request_headers) = if redacting {
            // Text that quotes the request (a near miss, the fallback's
            // answer) is scrubbed of the secrets' values too.
            let secrets = redact::secret_values(req);
            for m in &mut near_misses {
                for d in &mut m.differences {
                    *d = redact::scrub(d, &secrets);
                }
            }
            if let Some(b) = &mut response_body {
                *b = redact::scrub(b, &secrets);
            }
            for v in response_headers.values_mut() {
                *v = redact::scrub(v, &secrets);
            }
            (
                req.raw_query.as_deref().map(redact::pairs),
                clip(&redact::body(req)),
                redact::headers(&req.headers),
            )
        } else {
            (req.raw_query.clone(), clip(&req.body), req.headers.clone())
        };
        for m in &mut near_misses {
            for d in &mut m.differences {
                crate::events::clip_text(d, responder::MAX_PATH);
            }
        }
        let detail = HttpDetail {
            route: route.map(str::to_string),
            answered_by,
            method: req.method.clone(),
            path: responder::clip_line(req.path.clone()),
            query: query.map(responder::clip_line),
            host: req.host.clone().or_else(|| ctx.meta.host.clone()),
            version: req.version.clone(),
            status,
            request_bytes: req.body.len() as u64,
            response_bytes,
            request_body,
            response_body,
            response_body_base64,
            request_headers: responder::clip_headers(request_headers),
            response_headers: responder::clip_headers(response_headers),
            fault,
            near_misses,
        };
        let outcome = if error.is_some() {
            Outcome::Error
        } else if unmatched {
            Outcome::Unmatched
        } else {
            Outcome::Ok
        };
        self.events.record(Event::Exchange(ExchangeEvent {
            time: now_rfc3339(),
            flow_id: ctx.meta.id,
            service: self.name.clone(),
            protocol: &INFO,
            operation: detail.operation(),
            outcome,
            error,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: Arc::new(detail),
        }));
    }

    /// The three routes closest to matching `req`, with what differed.
    fn near_misses(&self, req: &RequestView) -> Vec<crate::events::NearMiss> {
        let mut misses: Vec<crate::events::NearMiss> = self
            .routes
            .iter()
            .map(|r| crate::events::NearMiss {
                route: r.label.clone(),
                differences: req.mismatches(&r.spec.when),
            })
            .filter(|m| !m.differences.is_empty())
            .collect();
        // A wrong method or path is a bigger miss than a wrong header.
        let weight = |m: &crate::events::NearMiss| -> usize {
            m.differences
                .iter()
                .map(|d| {
                    if d.starts_with("method") || d.starts_with("path") {
                        3
                    } else {
                        1
                    }
                })
                .sum()
        };
        misses.sort_by_key(weight);
        misses.truncate(3);
        misses
    }
}

impl RouteState {
    /// The response for this call, following the sequence rules; `None`
    /// when a sequence with `on_exhausted: error` ran out.
    fn response(&self) -> Option<&crate::rules::http::ResponseSpec> {
        use crate::rules::http::Exhausted;
        match &self.spec.responses {
            Responses::One(r) => Some(r),
            Responses::Sequence { items, then } => {
                let i = self.next.fetch_add(1, Ordering::AcqRel);
                if i < items.len() {
                    return items.get(i);
                }
                match then {
                    Exhausted::RepeatLast => items.last(),
                    Exhausted::Cycle => items.get(i % items.len()),
                    Exhausted::Error => None,
                }
            }
        }
    }
}
