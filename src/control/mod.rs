//! The control plane: an HTTP/1.1 JSON API on the host side (never inside
//! the jail) for the test harness beside the SUT: metrics, health, flows,
//! events, the request journal with near misses, verification, reset and
//! rule reload. Responder state is only touched through the responders'
//! own reset and journal interfaces.

mod journal;
pub mod metrics;
mod ui;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::appliance::Appliance;
use crate::events::{now_rfc3339, Event, EventSink, ReloadEvent};
use crate::rules::{ExpectSpec, RuleSet};
use crate::stack::StackHandle;

pub use metrics::Metrics;
pub use watch::watch_files;

type Body = BoxBody<Bytes, std::io::Error>;

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/tmp/meshwrap.sock".into());
            }
            return Ok(AdminAddr::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>().map(AdminAddr::Tcp).map_err(|_| {
            format!("`{s}` is not an address like 127.0.0.1:9901, [::1]:9901 or unix:/path.sock")
        })
    }
}

impl std::fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAddr::Tcp(a) => write!(f, "{a}"),
            AdminAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl AdminAddr {
    /// Loopback and unix sockets are reachable from this machine only.
    pub fn is_local(&self) -> bool {
        match self {
            AdminAddr::Tcp(a) => a.ip().is_loopback(),
            AdminAddr::Unix(_) => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the admin address {0} is not loopback: give --admin-token-file so mutating calls need a bearer token")]
    TokenRequired(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The API's view of the running appliance.
pub struct Control {
    pub appliance: Appliance,
    pub events: EventSink,
    pub metrics: Arc<Metrics>,
    pub stack: Option<StackHandle>,
    /// Set once the jail's network is up and the SUT started.
    pub ready: Arc<AtomicBool>,
    pub token: Option<String>,
    /// Serve GET calls only (`--admin-read-only`).
    pub read_only: bool,
    /// The rule files `POST /reload` reads again.
    pub rule_files: Vec<PathBuf>,
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn text_response(status: StatusCode, ctype: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({ "error": msg.into() }))
}

fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Parses `expect:` entries from YAML or JSON: a list, or `{expect: [...]}`.
pub fn parse_expects(text: &str) -> Result<Vec<ExpectSpec>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        expect: Vec<ExpectSpec>,
    }
    if let Ok(list) = serde_norway::from_str::<Vec<ExpectSpec>>(text) {
        return Ok(list);
    }
    serde_norway::from_str::<Wrapped>(text)
        .map(|w| w.expect)
        .map_err(|e| format!("expectations: {e}"))
}

/// Whether the process at the other end of a unix socket shares meshwrap's
/// network namespace. The jail's processes have their own (and share the
/// filesystem, so they can open the socket): they must not rewrite the
/// rules that confine them. A peer whose namespace cannot be read counts
/// as inside.
fn peer_outside_jail(s: &tokio::net::UnixStream) -> bool {
    let Some(pid) = s.peer_cred().ok().and_then(|c| c.pid()) else {
        return false;
    };
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    let ours = std::fs::read_link("/proc/self/ns/net");
    matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
}

/// Answers a peer inside the jail with 403 and closes, after reading its
/// request head (a client that is still sending when the socket closes
/// sees a reset, not the answer); bounded in size and time.
async fn refuse_jailed_peer(mut s: tokio::net::UnixStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut chunk = [0u8; 1024];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let body = "meshwrap's admin API does not answer processes inside the jail\n";
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// An accept that failed ends that one connection, never the API: with
/// descriptors exhausted (EMFILE, e.g. by many passed flows) accept fails
/// until some come back, and /healthz must answer again then. A short
/// pause keeps the loop from spinning meanwhile.
async fn accept_failed(e: std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!("admin API: accept failed ({e}); retrying");
    } else {
        tracing::debug!("admin API: accept failed ({e}); retrying");
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

impl Control {
    /// Serves the API until the process ends.
    pub async fn serve(self: Arc<Self>, addr: AdminAddr) -> Result<(), ControlError> {
        if !addr.is_local() && self.token.is_none() && !self.read_only {
            return Err(ControlError::TokenRequired(addr.to_string()));
        }
        match addr {
            AdminAddr::Tcp(a) => {
                let l = tokio::net::TcpListener::bind(a).await.map_err(|source| {
                    ControlError::Listen {
                        addr: a.to_string(),
                        source,
                    }
                })?;
                tokio::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok((s, _)) => {
                                tokio::spawn(self.clone().connection(s));
                            }
                            Err(e) => accept_failed(e).await,
                        }
                    }
                });
            }
            AdminAddr::Unix(p) => {
                let _ = std::fs::remove_file(&p);
                let l =
                    tokio::net::UnixListener::bind(&p).map_err(|source| ControlError::Listen {
                        addr: p.display().to_string(),
                        source,
                    })?;
                tokio::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok((s, _)) if peer_outside_jail(&s) => {
                                tokio::spawn(self.clone().connection(s));
                            }
                            Ok((s, _)) => {
                                tokio::spawn(refuse_jailed_peer(s));
                            }
                            Err(e) => accept_failed(e).await,
                        }
                    }
                });
            }
        }
        Ok(())
    }

    /// Serves one admin connection (HTTP/1.1) until it closes; public for
    /// the fuzz target `admin_api`, which drives it over an in-memory pipe.
    pub async fn connection<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self: Arc<Self>,
        io: IO,
    ) {
        let svc = hyper::service::service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.route(req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token)
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let mutating = matches!(*req.method(), Method::POST | Method::PUT | Method::DELETE);
        if mutating && self.read_only {
            return error(
                StatusCode::FORBIDDEN,
                "this admin API is read-only (--admin-read-only)",
            );
        }
        if mutating && !self.authorized(&req) {
            return error(
                StatusCode::UNAUTHORIZED,
                "this call needs `Authorization: Bearer <token>`",
            );
        }
        if req.method() == Method::GET {
            if let Some(page) = ui::asset(&path) {
                return page;
            }
        }
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/ui/info") => self.ui_info(),
            (Method::GET, "/suggest") => self.suggest(&query_pairs(&req)),
            (Method::GET, "/expectations") => self.expectations(),
            (Method::POST, "/reload") => self.reload_files().await,
            (Method::GET, "/healthz") => text_response(StatusCode::OK, "text/plain", "ok\n".into()),
            (Method::GET, "/readyz") => {
                if self.ready.load(Ordering::Acquire) {
                    text_response(StatusCode::OK, "text/plain", "ready\n".into())
                } else {
                    text_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n".into())
                }
            }
            (Method::GET, "/metrics") => text_response(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics
                    .render(self.stack.as_ref(), self.events.events_dropped()),
            ),
            (Method::GET, "/flows") => self.flows(&query_pairs(&req)),
            (Method::GET, "/events") => {
                let sse = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("text/event-stream"));
                self.events_stream(&query_pairs(&req), sse)
            }
            (Method::GET, "/requests") => self.requests(&query_pairs(&req), false).await,
            (Method::GET, "/requests/unmatched") => {
                self.requests(&query_pairs(&req), true).await
            }
            (Method::GET, "/rules") => self.get_rules(),
            (Method::PUT, "/rules") => match body_text(req).await {
                // Parsing and building thousands of services takes long:
                // off the data plane's thread, so flows and DNS go on.
                Ok(text) => {
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || this.put_rules(&text))
                        .await
                        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "rule reload failed"))
                }
                Err(e) => e,
            },
            (Method::POST, "/verify") => match body_text(req).await {
                Ok(text) => self.verify(&text),
                Err(e) => e,
            },
            (Method::POST, "/reset") => {
                let q = query_pairs(&req);
                self.reset(param(&q, "service"))
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/flows" | "/events" | "/requests" | "/requests/unmatched" | "/rules" | "/verify" | "/reset" | "/reload" | "/expectations" | "/suggest" | "/ui/info") => {
                error(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {path}", req.method()))
            }
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint {path}; see GET /ui /healthz /readyz /metrics /flows /events /requests /requests/unmatched /rules /expectations /suggest, PUT /rules, POST /verify /reset /reload"),
            ),
        }
    }

    fn flows(&self, q: &[(String, String)]) -> Response<Body> {
        let limit = param(q, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(1000usize);
        let host = param(q, "host");
        let port = param(q, "port").and_then(|p| p.parse::<u16>().ok());
        let decision = param(q, "decision");
        let protocol = param(q, "protocol");
        let keep = |h: Option<&str>, p: u16, d: &str, proto: Option<&str>| {
            host.is_none_or(|want| {
                h.is_some_and(|h| crate::rules::glob_match(want.as_bytes(), h.as_bytes()))
            }) && port.is_none_or(|want| want == p)
                && decision.is_none_or(|want| want == d)
                && protocol.is_none_or(|want| proto == Some(want))
        };
        let live: Vec<Value> = self
            .appliance
            .live_flows()
            .into_iter()
            .filter(|f| keep(f.host.as_deref(), f.dst.port(), f.decision, None))
            .map(|f| serde_json::to_value(f).unwrap_or(Value::Null))
            .collect();
        let recent: Vec<Value> = self
            .events
            .recent_flows(100_000)
            .into_iter()
            .filter(|f| keep(f.host.as_deref(), f.dst_port, f.decision, Some(f.protocol)))
            .rev()
            .take(limit)
            .map(|f| serde_json::to_value(f).unwrap_or(Value::Null))
            .collect();
        json_response(StatusCode::OK, &json!({ "live": live, "recent": recent }))
    }

    /// `sse`: framed as server-sent events (the flow inspector's
    /// `EventSource`), else JSON lines.
    fn events_stream(&self, q: &[(String, String)], sse: bool) -> Response<Body> {
        let follow = sse || matches!(param(q, "follow"), Some("1" | "true" | "yes"));
        let (recent, rx) = self.events.subscribe();
        let frame = move |line: &str| -> Bytes {
            if sse {
                ui::sse_frame(line)
            } else {
                let mut s = String::with_capacity(line.len() + 1);
                s.push_str(line);
                s.push('\n');
                Bytes::from(s)
            }
        };
        let mut head = Vec::new();
        for l in &recent {
            head.extend_from_slice(&frame(l));
        }
        let body: Body = match (follow, rx) {
            (true, Some(rx)) => {
                let first =
                    stream::once(
                        async move { Ok::<_, std::io::Error>(Frame::data(Bytes::from(head))) },
                    );
                let rest = stream::unfold(rx, move |mut rx| async move {
                    loop {
                        match rx.recv().await {
                            Ok(line) => return Some((Ok(Frame::data(frame(&line))), rx)),
                            // A slow reader skips what it missed.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return None,
                        }
                    }
                });
                BodyExt::boxed(StreamBody::new(futures_util::StreamExt::chain(first, rest)))
            }
            _ => full(head),
        };
        let ctype = if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        };
        Response::builder()
            .header("content-type", ctype)
            .header("cache-control", "no-store")
            .body(body)
            .unwrap_or_else(|_| Response::new(full(Bytes::new())))
    }

    fn get_rules(&self) -> Response<Body> {
        let snap = self.appliance.snapshot();
        let sources: Vec<Value> = snap
            .rules
            .sources
            .iter()
            .map(|(p, t)| json!({ "name": p.display().to_string(), "text": t }))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "generation": snap.generation,
                "unmatched": format!("{:?}", snap.unmatched).to_lowercase(),
                "services": snap.rules.services.iter().map(|s| json!({"name": s.name, "action": s.action.label()})).collect::<Vec<_>>(),
                "hosts": snap.rules.hosts,
                "sources": sources,
            }),
        )
    }

    fn put_rules(&self, text: &str) -> Response<Body> {
        // Not a real path, so `file:` bodies are read relative to
        // meshwrap's working folder (see rules::load_http_files).
        let label = PathBuf::from("admin:PUT /rules");
        match RuleSet::from_sources(&[(label, text.to_string())]) {
            Ok(set) => {
                let snap = self.appliance.reload(set);
                let services: Vec<String> =
                    snap.rules.services.iter().map(|s| s.name.clone()).collect();
                self.events.record(Event::Reload(ReloadEvent {
                    time: now_rfc3339(),
                    source: "admin",
                    ok: true,
                    error: None,
                    services: services.clone(),
                    generation: snap.generation,
                }));
                json_response(
                    StatusCode::OK,
                    &json!({ "ok": true, "generation": snap.generation, "services": services }),
                )
            }
            Err(e) => {
                self.events.record(Event::Reload(ReloadEvent {
                    time: now_rfc3339(),
                    source: "admin",
                    ok: false,
                    error: Some(e.to_string()),
                    services: Vec::new(),
                    generation: self.appliance.snapshot().generation,
                }));
                json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({ "ok": false, "error": e.to_string() }),
                )
            }
        }
    }

    fn verify(&self, text: &str) -> Response<Body> {
        let mut expects = match parse_expects(text) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        let snap = self.appliance.snapshot();
        for e in &mut expects {
            // The service's protocol checks the fields and gives the
            // matcher, as for the rules' own expectations.
            if let Err((_, message)) = snap.rules.bind_expect(e, false) {
                return error(StatusCode::BAD_REQUEST, message);
            }
        }
        json_response(StatusCode::OK, &self.check_expects(&expects, true))
    }

    /// Expectations checked against the journal, as `POST /verify`
    /// answers them; `count` adds the failures to the metrics (a check
    /// the inspector makes to draw its panel is not a verification).
    fn check_expects(&self, expects: &[ExpectSpec], count: bool) -> Value {
        let results = crate::events::verify::check(expects, &self.events.journal());
        let failed = results.iter().filter(|r| !r.ok).count();
        if count {
            self.metrics.expectations_failed.inc_by(failed as u64);
        }
        let out: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({
                    "service": r.expect.service,
                    "route": r.expect.fields.get("route"),
                    "fields": r.expect.fields,
                    "expected": r.expect.count.to_string(),
                    "calls": r.calls,
                    "ok": r.ok,
                    "entries": r.service_calls,
                    "report": r.to_string(),
                })
            })
            .collect();
        json!({ "ok": failed == 0, "failed": failed, "results": out })
    }

    fn reset(&self, service: Option<&str>) -> Response<Body> {
        match self.appliance.reset(service) {
            Ok(names) => {
                self.events.clear_journal(service);
                json_response(StatusCode::OK, &json!({ "ok": true, "reset": names }))
            }
            Err(e) => error(StatusCode::NOT_FOUND, e),
        }
    }
}

/// Reads a request body as text (at most 4 MiB).
async fn body_text(req: Request<Incoming>) -> Result<String, Response<Body>> {
    let body = Limited::new(req.into_body(), 4 * 1024 * 1024)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?
        .to_bytes();
    String::from_utf8(body.to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8"))
}
