//! The flow inspector: one page on the admin port (`GET /ui`) that shows
//! flows, exchanges, misses and expectations live, as mitmweb and
//! WireMock's journal page do. The page is plain HTML, CSS and JavaScript
//! compiled into the binary (no build step, works offline); it reads the
//! same API as any other client: the event stream as server-sent events,
//! `/flows`, `/requests`, `/rules`, and the calls below.
//!
//! Everything it shows comes from the SUT (bodies, headers, keys), so the
//! page only ever writes text nodes, and the responses carry a Content
//! Security Policy that allows no inline script: a payload that slipped
//! through as markup still could not run.

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{error, full, json_response, param, Body, Control};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// No inline script or style, nothing from elsewhere; images only from
/// `data:` (a response body the page shows as a picture).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// One of the page's own files, or `None` for another path.
pub(super) fn asset(path: &str) -> Option<Response<Body>> {
    let (ctype, text) = match path {
        "/ui" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/ui/app.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    Response::builder()
        .header("content-type", ctype)
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store")
        .body(full(Bytes::from_static(text.as_bytes())))
        .ok()
}

/// An event stream line as a server-sent event (`EventSource`).
pub(super) fn sse_frame(line: &str) -> Bytes {
    // A JSON line has no newline in it; `data:` carries it whole.
    Bytes::from(format!("data: {line}\n\n"))
}

impl Control {
    /// What the page needs to know to draw its buttons.
    pub(super) fn ui_info(&self) -> Response<Body> {
        let snap = self.appliance.snapshot();
        json_response(
            StatusCode::OK,
            &json!({
                "version": env!("CARGO_PKG_VERSION"),
                "read_only": self.read_only,
                "token_required": self.token.is_some(),
                "generation": snap.generation,
                "rule_files": self.rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "services": snap.rules.services.iter().map(|s| json!({"name": s.name, "action": s.action.label()})).collect::<Vec<_>>(),
            }),
        )
    }

    /// "Copy as rule" for a refused flow: a rules file with the service
    /// that would mock it (or pass it), as the exit summary offers.
    pub(super) fn suggest(&self, q: &[(String, String)]) -> Response<Body> {
        let Some(id) = param(q, "flow_id").and_then(|v| v.parse::<u64>().ok()) else {
            return error(StatusCode::BAD_REQUEST, "give ?flow_id=N");
        };
        let Some(flow) = self
            .events
            .recent_flows(crate::events::FLOWS_KEPT)
            .into_iter()
            .rev()
            .find(|f| f.flow_id == id)
        else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no finished flow {id} is kept"),
            );
        };
        if flow.decision != "refuse" {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "flow {id} was not refused (decision {}): it needs no rule",
                    flow.decision
                ),
            );
        }
        let entry = crate::events::refused_rule(
            crate::protocols::INFOS,
            flow.host.as_deref(),
            &flow.dst.to_string(),
            flow.dst_port,
            flow.protocol,
        );
        let mut text = String::from("services:\n");
        for line in entry.lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        super::text_response(StatusCode::OK, "application/yaml; charset=utf-8", text)
    }

    /// The rules' own `expect:` entries, checked against the journal now.
    pub(super) fn expectations(&self) -> Response<Body> {
        let expects = self.appliance.snapshot().rules.expects.clone();
        json_response(StatusCode::OK, &self.check_expects(&expects, false))
    }

    /// `POST /reload`: the rule files read again from disk.
    pub(super) async fn reload_files(&self) -> Response<Body> {
        if self.rule_files.is_empty() {
            return error(
                StatusCode::CONFLICT,
                "meshwrap was started without --rules files: nothing to read again (PUT /rules sets rules)",
            );
        }
        let ev =
            super::watch::reload(&self.rule_files, &self.appliance, &self.events, "admin").await;
        let status = if ev.ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        let v: Value = serde_json::to_value(&ev).unwrap_or(Value::Null);
        json_response(status, &v)
    }
}
