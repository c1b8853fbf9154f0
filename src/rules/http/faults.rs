//! HTTP faults: resets and the one-thing-per-fault `FaultSpec`. Durations
//! and latency ranges are every protocol's (`rules::common`), re-exported
//! here because HTTP's fields use them.

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::rules::common::FaultWhen;
pub use crate::rules::common::{parse_duration, DurationSpec, LatencySpec};

/// Where a reset happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetAt {
    /// Before any response byte.
    BeforeResponse,
    /// After the headers and half the body.
    MidBody,
}

impl<'de> Deserialize<'de> for ResetAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(ResetAt::BeforeResponse),
            Raw::Str(s) if s == "before_response" || s == "before" => Ok(ResetAt::BeforeResponse),
            Raw::Str(s) if s == "mid_body" => Ok(ResetAt::MidBody),
            _ => Err(de::Error::custom(
                "`reset` is `true`, `before_response` or `mid_body`",
            )),
        }
    }
}

/// A fault: when its `FaultWhen` admits the request (probability, after,
/// times), do one thing to the exchange. HTTP's kinds are more than the
/// common latency/reset/hang: a reset may cut the body, and a response may
/// be truncated, made invalid JSON or given another status.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawFault")]
pub struct FaultSpec {
    pub when: FaultWhen,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Wait before answering normally.
    Latency(LatencySpec),
    /// Never answer; the client's own timeout ends it.
    Hang,
    /// Reset the connection.
    Reset(ResetAt),
    /// Announce the full length, send half the body, close.
    Truncate,
    /// Replace the body with JSON that does not parse.
    InvalidJson,
    /// Answer with this status instead (the route's body is kept).
    Status(u16),
}

impl FaultKind {
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Latency(_) => "latency",
            FaultKind::Hang => "hang",
            FaultKind::Reset(ResetAt::BeforeResponse) => "reset",
            FaultKind::Reset(ResetAt::MidBody) => "reset_mid_body",
            FaultKind::Truncate => "truncate",
            FaultKind::InvalidJson => "invalid_json",
            FaultKind::Status(_) => "status",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    latency: Option<LatencySpec>,
    #[serde(default)]
    hang: Option<bool>,
    #[serde(default)]
    reset: Option<ResetAt>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    invalid_json: Option<bool>,
    #[serde(default)]
    status: Option<u16>,
}

impl TryFrom<RawFault> for FaultSpec {
    type Error = String;
    fn try_from(r: RawFault) -> Result<Self, String> {
        let when = FaultWhen::new(r.probability, r.times, r.after)?;
        let mut kinds = Vec::new();
        if let Some(l) = r.latency {
            kinds.push(FaultKind::Latency(l));
        }
        if r.hang == Some(true) {
            kinds.push(FaultKind::Hang);
        }
        if let Some(at) = r.reset {
            kinds.push(FaultKind::Reset(at));
        }
        if r.truncate == Some(true) {
            kinds.push(FaultKind::Truncate);
        }
        if r.invalid_json == Some(true) {
            kinds.push(FaultKind::InvalidJson);
        }
        if let Some(s) = r.status {
            if !(100..=999).contains(&s) {
                return Err(format!("status {s} is not an HTTP status"));
            }
            kinds.push(FaultKind::Status(s));
        }
        match kinds.len() {
            1 => Ok(FaultSpec {
                when,
                kind: kinds.remove(0),
            }),
            0 => Err("a fault needs one of `latency`, `hang`, `reset`, `truncate`, `invalid_json`, `status`".into()),
            _ => Err("a fault does one thing: split it into several faults".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_millis(20));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
