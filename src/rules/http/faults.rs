//! Faults and timing: durations (`250ms`, `2s`), latency ranges, resets and
//! the one-thing-per-fault `FaultSpec`. The duration and latency types are
//! shared with the other protocols' rules (redis, mongo, kafka) and with
//! response delays, which is why they live here rather than in a responder.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// `250ms`, `2s`, `1.5s`, `1m`, or a bare number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like `250ms`, `2s` or `1m`"))?;
    let secs = match unit.trim() {
        "" | "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "us" | "µs" => n / 1_000_000.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (use ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => parse_duration(&n.to_string()),
            Raw::Str(s) => parse_duration(&s),
        }
        .map(DurationSpec)
        .map_err(de::Error::custom)
    }
}

/// A fixed latency, or a range written `100ms-300ms` or `{min, max}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySpec {
    pub min: Duration,
    pub max: Duration,
}

impl<'de> Deserialize<'de> for LatencySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
            Range {
                min: DurationSpec,
                max: DurationSpec,
            },
        }
        let (min, max) = match Raw::deserialize(d)? {
            Raw::Num(n) => {
                let d = parse_duration(&n.to_string()).map_err(de::Error::custom)?;
                (d, d)
            }
            Raw::Str(s) => match s.split_once('-') {
                Some((a, b)) => (
                    parse_duration(a).map_err(de::Error::custom)?,
                    parse_duration(b).map_err(de::Error::custom)?,
                ),
                None => {
                    let d = parse_duration(&s).map_err(de::Error::custom)?;
                    (d, d)
                }
            },
            Raw::Range { min, max } => (min.0, max.0),
        };
        if min > max {
            return Err(de::Error::custom("latency range: `min` is above `max`"));
        }
        Ok(LatencySpec { min, max })
    }
}

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

/// A fault: with `probability` (default 1), do one thing to the exchange.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawFault")]
pub struct FaultSpec {
    pub probability: f64,
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
        let probability = super::super::fault_probability(r.probability)?;
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
                probability,
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_millis(20));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
