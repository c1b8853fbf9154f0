//! The HTTP spec as the loader sees it: its key, its `file:` bodies read
//! at load, and the `route:` field of its expectations.

use std::path::Path;
use std::sync::Arc;

use super::{BodySpec, Fallback, HttpSpec, ResponseSpec, Responses, RouteSpec};
use crate::rules::expect::{Call, EveryCall, ExpectError, ExpectMatcher, ExpectSpec};
use crate::rules::mock::{LoadCtx, ProtocolRules};

impl ProtocolRules for HttpSpec {
    const KEY: &'static str = "http";
    const TITLE: &'static str = "HTTP";
    const EXPECT_FIELDS: &'static [&'static str] = &["route"];

    fn prepare(&mut self, ctx: &LoadCtx<'_>) -> Result<(), String> {
        if self.fallback.is_none() {
            self.fallback = ctx.defaults.http.fallback.clone();
        }
        load_files(self, ctx.dir)
    }

    fn expect(&self, e: &ExpectSpec) -> Result<Arc<dyn ExpectMatcher>, ExpectError> {
        Ok(match e.str_field("route")? {
            Some(route) => Arc::new(RouteMatcher(route)),
            None => Arc::new(EveryCall),
        })
    }

    fn check_expect(&self, e: &ExpectSpec) -> Result<(), ExpectError> {
        let Some(route) = e.str_field("route")? else {
            return Ok(());
        };
        let names: Vec<String> = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route_label(r, i))
            .collect();
        if !names.contains(&route) {
            return Err(ExpectError {
                field: route.clone(),
                message: format!(
                    "service `{}` has no route `{route}` (routes: {})",
                    e.service,
                    names.join(", ")
                ),
            });
        }
        Ok(())
    }
}

/// Counts the calls one route answered.
#[derive(Debug)]
struct RouteMatcher(String);

impl ExpectMatcher for RouteMatcher {
    fn matches(&self, call: &dyn Call) -> bool {
        call.field("route").as_deref() == Some(self.0.as_str())
    }
    fn target(&self) -> String {
        format!(" / {}", self.0)
    }
}

/// The name a route is known by in events, summaries and expectations:
/// its `name:`, else `METHOD /path`, else `route N`.
pub fn route_label(r: &RouteSpec, index: usize) -> String {
    if let Some(n) = &r.name {
        return n.clone();
    }
    let method = r.when.method.0.first().map(|m| m.to_ascii_uppercase());
    let path = r.when.path.as_ref().map(|p| p.text.clone()).or_else(|| {
        r.when
            .path_regex
            .as_ref()
            .map(|p| format!("~{}", p.0.as_str()))
    });
    match (method, path) {
        (Some(m), Some(p)) => format!("{m} {p}"),
        (None, Some(p)) => format!("* {p}"),
        (Some(m), None) => format!("{m} *"),
        (None, None) => format!("route {}", index + 1),
    }
}

/// Reads `file:` bodies, relative to the rules file's folder.
fn load_files(h: &mut HttpSpec, dir: &Path) -> Result<(), String> {
    let load = |r: &mut ResponseSpec| -> Result<(), String> {
        if let BodySpec::File { path, data } = &mut r.body {
            let full = if path.is_absolute() {
                path.clone()
            } else {
                dir.join(&*path)
            };
            *data = std::fs::read(&full)
                .map_err(|e| format!("cannot read body file {}: {e}", full.display()))?;
        }
        Ok(())
    };
    for route in &mut h.routes {
        match &mut route.responses {
            Responses::One(r) => load(r)?,
            Responses::Sequence { items, .. } => items.iter_mut().try_for_each(load)?,
        }
    }
    if let Some(Fallback::Respond(r)) = &mut h.fallback {
        load(r)?;
    }
    Ok(())
}
