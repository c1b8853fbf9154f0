//! `timeouts:` of a mocked service: how long a connection may sit idle,
//! take to send one request, and leave a reply unread. Every protocol's
//! spec has the field; each responder fills what is not written with the
//! defaults of the real server it imitates (`Timeouts` constants below),
//! so a half-sent request or a client that stops reading never holds a
//! flow for ever.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::common::parse_duration;

/// The three limits as written; an absent one takes the protocol's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// No request in progress and nothing arrives for this long: close.
    #[serde(default)]
    pub idle: Option<Limit>,
    /// From a request's first byte to its last (head and body).
    #[serde(default)]
    pub request: Option<Limit>,
    /// A reply the client does not read for this long (the flow's window
    /// stays full): close.
    #[serde(default)]
    pub response: Option<Limit>,
}

/// A duration, or `off` (also `0`) for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
            Bool(bool),
        }
        let d = match Raw::deserialize(d)? {
            Raw::Bool(false) => return Ok(Limit(None)),
            Raw::Bool(true) => return Err(de::Error::custom(LimitHelp)),
            Raw::Str(s) if matches!(s.trim(), "off" | "never" | "none") => return Ok(Limit(None)),
            Raw::Str(s) => parse_duration(&s),
            Raw::Num(n) => parse_duration(&n.to_string()),
        }
        .map_err(de::Error::custom)?;
        Ok(Limit((!d.is_zero()).then_some(d)))
    }
}

struct LimitHelp;

impl fmt::Display for LimitHelp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timeout is a duration like `30s` or `2m`, or `off`")
    }
}

/// The limits a connection is served under (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idle: Option<Duration>,
    pub request: Option<Duration>,
    pub response: Option<Duration>,
}

const fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

impl Timeouts {
    /// No limit at all (unit tests that drive a responder directly).
    pub const NONE: Timeouts = Timeouts {
        idle: None,
        request: None,
        response: None,
    };
    /// nginx: `keepalive_timeout 75s`, `client_header_timeout` and
    /// `client_body_timeout 60s`, `send_timeout 60s`.
    pub const HTTP: Timeouts = Timeouts {
        idle: secs(75),
        request: secs(60),
        response: secs(60),
    };
    /// Redis's `timeout 0`: idle clients are never closed. Redis has no
    /// limit on a half-sent command; 60 s keeps one from holding a flow.
    pub const REDIS: Timeouts = Timeouts {
        idle: None,
        request: secs(60),
        response: secs(60),
    };
    /// mongod closes no idle connection (drivers' pools keep them).
    pub const MONGO: Timeouts = Timeouts {
        idle: None,
        request: secs(60),
        response: secs(60),
    };
    /// A broker's `connections.max.idle.ms` is ten minutes.
    pub const KAFKA: Timeouts = Timeouts {
        idle: secs(600),
        request: secs(60),
        response: secs(60),
    };
}

impl TimeoutsSpec {
    /// What is written, over the protocol's `defaults`.
    pub fn resolve(&self, defaults: Timeouts) -> Timeouts {
        let pick = |l: Option<Limit>, d: Option<Duration>| l.map_or(d, |l| l.0);
        Timeouts {
            idle: pick(self.idle, defaults.idle),
            request: pick(self.request, defaults.request),
            response: pick(self.response, defaults.response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<TimeoutsSpec, String> {
        serde_norway::from_str(y).map_err(|e| e.to_string())
    }

    #[test]
    fn written_limits_override_defaults_and_off_means_none() {
        let t = parse("{ idle: off, request: 5s }").unwrap();
        assert_eq!(
            t.resolve(Timeouts::HTTP),
            Timeouts {
                idle: None,
                request: Some(Duration::from_secs(5)),
                response: Some(Duration::from_secs(60)),
            }
        );
        let t = parse("{ idle: 0, response: 250 }").unwrap();
        assert_eq!(t.idle, Some(Limit(None)));
        assert_eq!(t.response, Some(Limit(Some(Duration::from_millis(250)))));
        assert_eq!(
            TimeoutsSpec::default().resolve(Timeouts::KAFKA),
            Timeouts::KAFKA
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(parse("{ idle: soon }").is_err());
        assert!(parse("{ idle: true }").is_err());
        assert!(parse("{ read: 1s }").unwrap_err().contains("unknown field"));
    }
}
