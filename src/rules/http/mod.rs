//! The `http:` part of a service: routes, responses, faults, stateful
//! resources and the fallback. Values that can be wrong in ways serde does
//! not see (regexes, path patterns, templates, durations, one-of keys) are
//! checked while deserializing, so their errors carry the YAML position.
//!
//! This file holds the top of the schema (`HttpSpec`, `RouteSpec`); the
//! parts live by concern in `matchers` (the `when:` side), `respond`
//! (responses, bodies, sequences, templates, fallback), `faults` (faults,
//! latency, durations) and `resources`. Everything is re-exported here, so
//! callers keep using `crate::rules::http::X`.

mod expect;
mod faults;
mod matchers;
mod resources;
mod respond;

pub use expect::route_label;
pub use faults::{parse_duration, DurationSpec, FaultKind, FaultSpec, LatencySpec, ResetAt};
pub use matchers::{PathPattern, RegexSpec, Segment, ValueMatch, WhenSpec};
pub use resources::{IdKind, ResourceSpec};
pub use respond::{
    check_template, BodySpec, Exhausted, Fallback, ResponseSpec, Responses, Template,
};

use serde::Deserialize;

use super::timeouts::TimeoutsSpec;

use crate::rules::common::OneOrMany;

/// A service's HTTP responder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Tried in order; the first whose `when` matches answers.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// In-memory REST collections, tried after the routes.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    /// Faults applied to every request of the service (after route faults).
    #[serde(default, alias = "fault")]
    pub faults: OneOrMany<FaultSpec>,
    /// What a request that nothing matches gets; unset, the file's
    /// `defaults.http.fallback`, else `not_found` (see `fallback()`).
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// Request and response bodies up to this many bytes go into events.
    #[serde(default = "default_record_bodies")]
    pub record_bodies: usize,
    /// Idle, request and response limits (see `rules::timeouts`).
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
}

impl HttpSpec {
    /// The fallback in force: the service's own, else the default 404.
    pub fn fallback(&self) -> &Fallback {
        static NOT_FOUND: Fallback = Fallback::NotFound;
        self.fallback.as_ref().unwrap_or(&NOT_FOUND)
    }
}

fn default_record_bodies() -> usize {
    4096
}

/// One route: a request matcher and what to answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRoute")]
pub struct RouteSpec {
    pub name: Option<String>,
    pub when: WhenSpec,
    /// Only the first N matching requests are served by this route.
    pub times: Option<u64>,
    pub responses: Responses,
    pub faults: Vec<FaultSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    when: WhenSpec,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    respond: Option<ResponseSpec>,
    #[serde(default)]
    sequence: Option<Vec<ResponseSpec>>,
    #[serde(default)]
    on_exhausted: Option<Exhausted>,
    #[serde(default, alias = "fault")]
    faults: OneOrMany<FaultSpec>,
}

impl TryFrom<RawRoute> for RouteSpec {
    type Error = String;
    fn try_from(r: RawRoute) -> Result<Self, String> {
        let responses = match (r.respond, r.sequence) {
            (Some(_), Some(_)) => return Err("give `respond` or `sequence`, not both".into()),
            (Some(one), None) => {
                if r.on_exhausted.is_some() {
                    return Err("`on_exhausted` only applies to a `sequence`".into());
                }
                Responses::One(one)
            }
            (None, Some(items)) if items.is_empty() => {
                return Err("`sequence` needs at least one response".into())
            }
            (None, Some(items)) => Responses::Sequence {
                items,
                then: r.on_exhausted.unwrap_or_default(),
            },
            (None, None) => Responses::One(ResponseSpec::default()),
        };
        if r.times == Some(0) {
            return Err("`times: 0` would never match; remove the route instead".into());
        }
        Ok(RouteSpec {
            name: r.name,
            when: r.when,
            times: r.times,
            responses,
            faults: r.faults.0,
        })
    }
}
