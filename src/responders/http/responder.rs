//! The HTTP responder behind the `Responder` seam, and its exchange
//! detail (request and response as the journal and `/requests` show them).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::HttpService;
use crate::events::{
    clip_text, ExchangeDetail, ExchangeEvent, MockHint, NearMiss, ProtocolInfo, SummaryStyle,
};
use crate::io::BoxIo;
use crate::model::Protocol;
use crate::responders::{BuildCtx, BuildResponder, Responder, ServeCtx, ServeFuture};
use crate::rules::http::HttpSpec;
use crate::rules::timeouts::Timeouts;
use crate::rules::Service;
use crate::stack::FlowHandle;

pub static INFO: ProtocolInfo = ProtocolInfo {
    key: "http",
    title: "HTTP",
    unit: "request",
    journal_key: "requests",
    summary: SummaryStyle::PerRoute,
    mock_hint: Some(MockHint {
        sniffed: &["http1", "http2"],
        ports: &[80, 443, 8000, 8080, 8443, 8888],
        snippet: "http: { routes: [ { when: { path: / }, respond: { status: 200 } } ] }",
    }),
};

impl Responder for HttpService {
    fn info(&self) -> &'static ProtocolInfo {
        &INFO
    }

    /// HTTP/1, h2c, or nothing yet (hyper waits for the request itself:
    /// a pool connects ahead of use).
    fn speaks(&self, seen: &Protocol) -> bool {
        matches!(
            seen,
            Protocol::Http1 { .. } | Protocol::Http2 | Protocol::None
        )
    }

    fn terminates_tls(&self) -> bool {
        true
    }

    fn serve(self: Arc<Self>, io: BoxIo, ctx: ServeCtx, flow: FlowHandle) -> ServeFuture {
        Box::pin(super::serve(self, io, ctx, flow))
    }

    fn timeouts(&self) -> Timeouts {
        self.spec.timeouts.resolve(Timeouts::HTTP)
    }

    fn reset(&self) {
        HttpService::reset(self)
    }

    fn routes(&self) -> Vec<String> {
        self.route_labels()
    }
}

impl BuildResponder for HttpService {
    type Spec = HttpSpec;
    const INFO: &'static ProtocolInfo = &INFO;
    fn build(service: &Service, spec: Arc<HttpSpec>, ctx: &BuildCtx) -> Self {
        HttpService::new(&service.name, spec, ctx.events.clone())
    }
}

/// One HTTP exchange as the journal keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct HttpDetail {
    /// The route that answered (its label), if any.
    pub route: Option<String>,
    /// `route`, `resource`, `fallback`, `pass` (fallback to the real
    /// destination) or `error`.
    pub answered_by: &'static str,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub version: String,
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The first `record_bodies` bytes of each body (lossy UTF-8).
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// The same bytes as base64 when they are not UTF-8 (an image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_base64: Option<String>,
    pub request_headers: BTreeMap<String, String>,
    pub response_headers: BTreeMap<String, String>,
    /// The fault applied, if any (latency, hang, reset, …).
    pub fault: Option<&'static str>,
    /// For a request no route answered: the routes that came closest and
    /// what differed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub near_misses: Vec<NearMiss>,
}

/// What the journal keeps of a request's path and query, of each header
/// and of how many headers: enough to recognise a request, bounded
/// whatever the SUT sends (HPACK lets a few megabytes on the wire become
/// a gigabyte of headers; 56,000 requests with 60 KB of headers each
/// were 4 GB of journal).
pub const MAX_PATH: usize = 2048;
pub const MAX_HEADER_VALUE: usize = 1024;
pub const MAX_HEADER_NAME: usize = 128;
pub const MAX_HEADERS: usize = 64;

/// Headers as the journal keeps them: the first `MAX_HEADERS` (by name),
/// each clipped, and an entry `…` counting the ones left out.
pub fn clip_headers(headers: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let total = headers.len();
    let mut out: BTreeMap<String, String> = headers
        .into_iter()
        .take(MAX_HEADERS)
        .map(|(mut k, mut v)| {
            clip_text(&mut k, MAX_HEADER_NAME);
            clip_text(&mut v, MAX_HEADER_VALUE);
            (k, v)
        })
        .collect();
    if total > MAX_HEADERS {
        out.insert(
            "…".into(),
            format!("{} more headers not kept", total - MAX_HEADERS),
        );
    }
    out
}

/// A path or query as the journal keeps it.
pub fn clip_line(mut s: String) -> String {
    clip_text(&mut s, MAX_PATH);
    s
}

impl HttpDetail {
    /// What the summary counts the exchange as: its route, or how it was
    /// answered without one.
    pub fn operation(&self) -> String {
        match &self.route {
            Some(r) => r.clone(),
            None => format!("(no route, answered by {})", self.answered_by),
        }
    }
}

impl ExchangeDetail for HttpDetail {
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "route" => self.route.as_deref().map(Cow::Borrowed),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let headers = |h: &BTreeMap<String, String>| {
            h.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>()
        };
        self.path.len()
            + text(&self.query)
            + text(&self.host)
            + text(&self.route)
            + text(&self.request_body)
            + text(&self.response_body)
            + text(&self.response_body_base64)
            + headers(&self.request_headers)
            + headers(&self.response_headers)
            + self
                .near_misses
                .iter()
                .map(|m| m.differences.iter().map(|d| d.len() + 24).sum::<usize>() + 64)
                .sum::<usize>()
            + 256
    }

    fn describe(&self, _: &ExchangeEvent) -> String {
        format!(
            "{} {}{} -> {} ({})",
            self.method,
            self.path,
            self.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            self.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no response".into()),
            self.route.as_deref().unwrap_or(self.answered_by)
        )
    }

    fn near_misses(&self) -> &[NearMiss] {
        &self.near_misses
    }

    /// The status class (`2xx`), `fault_<kind>` or `no_response`.
    fn metric_outcome(&self, _: &ExchangeEvent) -> String {
        match (self.status, self.fault) {
            (_, Some(f)) if f != "latency" && f != "status" => format!("fault_{f}"),
            (Some(s), _) => format!("{}xx", s / 100),
            (None, _) => "no_response".into(),
        }
    }
}
