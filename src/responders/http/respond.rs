//! Choosing and building the answer to one request: routes, then resources,
//! then the fallback; faults last.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Response;
use minijinja::Value;
use serde_json::json;

use super::render::Renderer;
use super::request::RequestView;
use super::{full, Body, HttpService};
use crate::responders::faults::{pick_latency, FaultGate};
use crate::responders::ServeCtx;
use crate::rules::http::{BodySpec, Fallback, FaultKind, FaultSpec, ResetAt, ResponseSpec};
use crate::stack::FlowHandle;

/// A fault with the counters of its route (or service) and its index
/// there, for `after` and `times`.
type Armed<'a> = (&'a FaultSpec, &'a FaultGate, usize);

/// A response ready to send, before faults.
pub(crate) struct Built {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Bytes,
    pub(super) delay: Option<Duration>,
}

/// A JSON error answer; `close` ends the connection after it.
pub(crate) fn error_response(status: u16, message: &str, close: bool) -> Response<Body> {
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if close {
        b = b.header("connection", "close");
    }
    b.body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn template_context(req: &RequestView, params: &BTreeMap<String, String>, call: u64) -> Value {
    let mut query: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &req.query {
        query.entry(k).or_insert(v);
    }
    let mut form: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &req.form {
        form.entry(k).or_insert(v);
    }
    let body = req.body_text();
    let request = json!({
        "method": req.method,
        "path": req.path,
        "query": query,
        "headers": req.headers,
        "host": req.host,
        "body": body,
        "json": req.json,
        "form": form,
    });
    Value::from_serialize(json!({
        "request": request,
        "path": params,
        "query": query,
        "headers": req.headers,
        "json": req.json,
        "body": body,
        "form": form,
        "counter": call,
        "uuid": uuid::Uuid::new_v4().to_string(),
        "now": crate::events::now_rfc3339(),
    }))
}

fn content_type_for(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "json" => "application/json",
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "csv" => "text/csv",
        "js" => "text/javascript",
        "css" => "text/css",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Builds a response; one that runs templates is built off the data plane.
async fn build(svc: &HttpService, spec: &ResponseSpec, ctx: Value) -> Result<Built, String> {
    if !Renderer::is_templated(spec) {
        return build_with(&svc.renderer, spec, &ctx);
    }
    let spec = spec.clone();
    svc.renderer
        .off_plane(move |renderer| build_with(renderer, &spec, &ctx))
        .await
}

fn build_with(renderer: &Renderer, spec: &ResponseSpec, ctx: &Value) -> Result<Built, String> {
    let mut headers = Vec::new();
    for (k, v) in &spec.headers {
        headers.push((k.to_ascii_lowercase(), renderer.render(&v.0, ctx)?));
    }
    let (body, ctype): (Bytes, Option<&str>) = match &spec.body {
        BodySpec::Empty => (Bytes::new(), None),
        BodySpec::Text(t) => (
            renderer.render(&t.0, ctx)?.into(),
            Some("text/plain; charset=utf-8"),
        ),
        BodySpec::Json(j) => {
            let v = renderer.render_json(j, ctx)?;
            (
                serde_json::to_vec(&v).map_err(|e| e.to_string())?.into(),
                Some("application/json"),
            )
        }
        BodySpec::Bytes(b) => (Bytes::copy_from_slice(b), Some("application/octet-stream")),
        BodySpec::File { path, data } => {
            (Bytes::copy_from_slice(data), Some(content_type_for(path)))
        }
    };
    if let Some(ct) = ctype {
        if !headers.iter().any(|(k, _)| k == "content-type") {
            headers.push(("content-type".into(), ct.into()));
        }
    }
    Ok(Built {
        status: spec.status,
        headers,
        body,
        delay: spec.delay,
    })
}

fn json_built(status: u16, body: Option<serde_json::Value>) -> Built {
    let (body, headers) = match body {
        Some(v) => (
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            vec![("content-type".to_string(), "application/json".to_string())],
        ),
        None => (Bytes::new(), Vec::new()),
    };
    Built {
        status,
        headers,
        body,
        delay: None,
    }
}

/// Answers one request.
pub(crate) async fn answer(
    svc: &HttpService,
    ctx: &ServeCtx,
    flow: &FlowHandle,
    req: &RequestView,
    request_no: u64,
    started: Instant,
) -> Response<Body> {
    let service_faults: Vec<Armed<'_>> = svc
        .spec
        .faults
        .0
        .iter()
        .enumerate()
        .map(|(i, f)| (f, &svc.service_faults, i))
        .collect();
    for route in &svc.routes {
        let Some(params) = req.matches(&route.spec.when) else {
            continue;
        };
        let Some(call) = route.take_call() else {
            continue;
        };
        let tctx = template_context(req, &params, call);
        let built = match route.response() {
            Some(spec) => build(svc, spec, tctx).await,
            None => Err(format!(
                "route `{}`: its sequence is used up (on_exhausted: error)",
                route.label
            )),
        };
        let faults: Vec<Armed<'_>> = route
            .spec
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| (f, &route.faults, i))
            .chain(service_faults.iter().copied())
            .collect();
        return deliver(
            svc,
            ctx,
            flow,
            req,
            Some(&route.label),
            "route",
            built,
            &faults,
            started,
        )
        .await;
    }
    for r in &svc.resources {
        if let Some(a) = r.handle(&req.method, &req.path, &req.query, req.json.as_ref()) {
            let built = Ok(json_built(a.status, a.body));
            return deliver(
                svc,
                ctx,
                flow,
                req,
                None,
                "resource",
                built,
                &service_faults,
                started,
            )
            .await;
        }
    }
    match svc.spec.fallback() {
        Fallback::NotFound => {
            let body = json!({
                "error": "no route matched",
                "service": svc.name,
                "request": format!("{} {}{}", req.method, req.path, req.raw_query.as_deref().map(|q| format!("?{q}")).unwrap_or_default()),
                "routes": svc.route_labels(),
                "resources": svc.resources.iter().map(|r| r.path()).collect::<Vec<_>>(),
            });
            let built = Ok(json_built(404, Some(body)));
            deliver(svc, ctx, flow, req, None, "fallback", built, &[], started).await
        }
        Fallback::Respond(spec) => {
            let tctx = template_context(req, &BTreeMap::new(), request_no);
            let built = build(svc, spec, tctx).await;
            deliver(
                svc,
                ctx,
                flow,
                req,
                None,
                "fallback",
                built,
                &service_faults,
                started,
            )
            .await
        }
        Fallback::Pass => match super::forward::forward(ctx, req).await {
            Ok(built) => deliver(svc, ctx, flow, req, None, "pass", Ok(built), &[], started).await,
            Err(e) => {
                let msg = e.to_string();
                svc.record(
                    ctx,
                    req,
                    None,
                    "pass",
                    Some(502),
                    0,
                    None,
                    None,
                    Some(msg.clone()),
                    started,
                );
                error_response(502, &msg, false)
            }
        },
    }
}

/// Returns once hyper has nothing more to write into the flow: hyper
/// polls a body again before it flushes what it encoded, so each round
/// yields to it and waits for the stack to take the bytes, until a round
/// adds none. Bounded: a response is a few writes, and a client that reads
/// nothing keeps the queue full, so after 5 s in all the cut is made on
/// what was written.
async fn settle(flow: &FlowHandle) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut last = flow.written();
    for _ in 0..64 {
        tokio::task::yield_now().await;
        if tokio::time::timeout_at(deadline, flow.flushed())
            .await
            .is_err()
        {
            return;
        }
        let now = flow.written();
        if now == last {
            return;
        }
        last = now;
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    svc: &HttpService,
    ctx: &ServeCtx,
    flow: &FlowHandle,
    req: &RequestView,
    route: Option<&str>,
    answered_by: &'static str,
    built: Result<Built, String>,
    faults: &[Armed<'_>],
    started: Instant,
) -> Response<Body> {
    let mut built = match built {
        Ok(b) => b,
        Err(msg) => {
            svc.record(
                ctx,
                req,
                route,
                "error",
                Some(500),
                0,
                None,
                None,
                Some(msg.clone()),
                started,
            );
            return error_response(500, &msg, false);
        }
    };
    if let Some(d) = built.delay {
        tokio::time::sleep(d).await;
    }
    let fault = faults
        .iter()
        .find(|(f, gate, i)| gate.admit(*i, &f.when))
        .map(|(f, _, _)| &f.kind);
    let label = fault.map(FaultKind::label);
    let mut cut: Option<ResetAt> = None;
    let mut truncate = false;
    match fault {
        None => {}
        Some(FaultKind::Latency(l)) => tokio::time::sleep(pick_latency(l)).await,
        // No response at all: record the request, then hang (the client's
        // timeout ends it) or reset the connection first.
        Some(kind @ (FaultKind::Hang | FaultKind::Reset(ResetAt::BeforeResponse))) => {
            svc.record(
                ctx,
                req,
                route,
                answered_by,
                None,
                0,
                None,
                label,
                None,
                started,
            );
            if matches!(kind, FaultKind::Reset(_)) {
                flow.abort();
            }
            return std::future::pending().await;
        }
        Some(FaultKind::Reset(ResetAt::MidBody)) => cut = Some(ResetAt::MidBody),
        Some(FaultKind::Truncate) => truncate = true,
        Some(FaultKind::InvalidJson) => {
            let keep = built.body.len() / 2;
            let mut broken = built.body[..keep].to_vec();
            if broken.is_empty() {
                broken.extend_from_slice(b"{\"error\": ");
            }
            broken.extend_from_slice(b"\x00<<not json");
            built.body = broken.into();
            built.headers.retain(|(k, _)| k != "content-type");
            built
                .headers
                .push(("content-type".into(), "application/json".into()));
        }
        Some(FaultKind::Status(s)) => built.status = *s,
    }
    let total = built.body.len();
    // Half a body needs a body: pad an empty one so the cut is visible.
    if (cut.is_some() || truncate) && total == 0 {
        built.body = Bytes::from(vec![b'x'; 1024]);
    }
    let total = built.body.len();
    let sent = if cut.is_some() || truncate {
        total / 2
    } else {
        total
    };
    svc.record(
        ctx,
        req,
        route,
        answered_by,
        Some(built.status),
        sent as u64,
        Some((&built.headers[..], &built.body[..sent])),
        label,
        None,
        started,
    );
    let mut resp = Response::builder().status(built.status);
    for (k, v) in &built.headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => resp = resp.header(k, v),
            _ => {
                return error_response(500, &format!("invalid response header `{k}: {v}`"), false);
            }
        }
    }
    let body: Body = if cut.is_some() || truncate {
        resp = resp.header("content-length", total.to_string());
        let first = built.body.slice(..sent);
        let flow = flow.clone();
        let s = stream::unfold(0u8, move |step| {
            let first = first.clone();
            let flow = flow.clone();
            async move {
                if step == 0 {
                    return Some((Ok::<_, std::io::Error>(Frame::data(first)), 1));
                }
                // Let hyper write the headers and the first half into the
                // flow, then cut the connection after those bytes (FIN for
                // truncate, RST for a mid-body reset). An error from this
                // stream would make hyper drop its queued bytes unsent.
                settle(&flow).await;
                if truncate {
                    flow.shutdown_write();
                } else {
                    flow.abort_after_flush();
                }
                std::future::pending::<()>().await;
                None
            }
        });
        BodyExt::boxed(StreamBody::new(s))
    } else {
        full(built.body)
    };
    resp.body(body)
        .unwrap_or_else(|e| error_response(500, &format!("cannot build the response: {e}"), false))
}
