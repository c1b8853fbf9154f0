//! `expect:` entries: how often the SUT must (or must not) call a mocked
//! service. The common part (service, counts) is parsed here; the fields
//! that pick which calls count (`route`, `command`, `topic`…) belong to
//! the service's protocol, which checks them when the rules load and
//! builds the matcher (`MockSpec::expect`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

/// An expectation on how often a service (or some of its calls) is called.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawExpect")]
pub struct ExpectSpec {
    pub service: String,
    pub count: CountSpec,
    /// The protocol's fields as written (`route: charge`, `command: SET`).
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Built by the service's protocol when the rules are checked; `None`
    /// until then (and for an unknown service).
    pub matcher: Option<Arc<dyn ExpectMatcher>>,
}

/// What an expectation matcher sees of one exchange, so that the rules
/// need not know the events' types.
pub trait Call {
    /// The Redis command, the Kafka API, the HTTP route that answered.
    fn operation(&self) -> &str;
    /// The SUT got an error answer.
    fn failed(&self) -> bool;
    /// A protocol field by name (`key`, `topic`, `route`).
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// Which calls an expectation counts; one per protocol.
pub trait ExpectMatcher: fmt::Debug + Send + Sync {
    /// Whether a call is of the kind this expectation counts (a Kafka
    /// expectation counts produced records only); the others are neither
    /// counted nor listed in a failure's report.
    fn relevant(&self, call: &dyn Call) -> bool {
        let _ = call;
        true
    }
    /// Whether a relevant call counts.
    fn matches(&self, call: &dyn Call) -> bool;
    /// What the report names after the service (` / SET key s:*`).
    fn target(&self) -> String;
}

/// A matcher for a service whose calls all count alike.
#[derive(Debug)]
pub struct EveryCall;

impl ExpectMatcher for EveryCall {
    fn matches(&self, _: &dyn Call) -> bool {
        true
    }
    fn target(&self) -> String {
        String::new()
    }
}

/// An expectation field the service's protocol does not take, or takes
/// with another value; `field` is what to point at in the file.
#[derive(Debug)]
pub struct ExpectError {
    pub field: String,
    pub message: String,
}

impl ExpectSpec {
    /// A string field, or an error naming it when it is not a string.
    pub fn str_field(&self, name: &str) -> Result<Option<String>, ExpectError> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(ExpectError {
                field: name.to_string(),
                message: format!("`{name}` takes a string, not {other}"),
            }),
        }
    }
}

/// How many calls are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSpec {
    Exactly(u64),
    AtLeast(u64),
    AtMost(u64),
    Between(u64, u64),
}

impl CountSpec {
    pub fn holds(&self, n: u64) -> bool {
        match *self {
            CountSpec::Exactly(x) => n == x,
            CountSpec::AtLeast(x) => n >= x,
            CountSpec::AtMost(x) => n <= x,
            CountSpec::Between(a, b) => (a..=b).contains(&n),
        }
    }
}

impl fmt::Display for CountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let times = |n: u64| if n == 1 { "time" } else { "times" };
        match *self {
            CountSpec::Exactly(0) => write!(f, "never"),
            CountSpec::Exactly(n) => write!(f, "exactly {n} {}", times(n)),
            CountSpec::AtLeast(n) => write!(f, "at least {n} {}", times(n)),
            CountSpec::AtMost(n) => write!(f, "at most {n} {}", times(n)),
            CountSpec::Between(a, b) => write!(f, "between {a} and {b} times"),
        }
    }
}

/// The expectation as written; the fields other than the common ones are
/// kept for the service's protocol to check.
#[derive(Debug, Deserialize)]
struct RawExpect {
    service: String,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    at_least: Option<u64>,
    #[serde(default)]
    at_most: Option<u64>,
    #[serde(default)]
    never: Option<bool>,
    #[serde(flatten)]
    fields: BTreeMap<String, serde_json::Value>,
}

impl TryFrom<RawExpect> for ExpectSpec {
    type Error = String;
    fn try_from(r: RawExpect) -> Result<Self, String> {
        let count = match (r.times, r.at_least, r.at_most, r.never) {
            (None, None, None, None) => CountSpec::AtLeast(1),
            (None, None, None, Some(true)) => CountSpec::Exactly(0),
            (Some(n), None, None, None) => CountSpec::Exactly(n),
            (None, Some(a), None, None) => CountSpec::AtLeast(a),
            (None, None, Some(b), None) => CountSpec::AtMost(b),
            (None, Some(a), Some(b), None) if a <= b => CountSpec::Between(a, b),
            (None, Some(_), Some(_), None) => return Err("`at_least` is above `at_most`".into()),
            _ => {
                return Err(
                    "give `times`, `never: true`, or `at_least` and/or `at_most` (not a mix)"
                        .into(),
                )
            }
        };
        Ok(ExpectSpec {
            service: r.service,
            count,
            fields: r.fields,
            matcher: None,
        })
    }
}

/// Counts the calls of one command (any case) whose key matches a glob
/// (Redis's `command`/`key`, MongoDB's `command`/`collection`).
#[derive(Debug)]
pub struct CommandMatcher {
    pub command: Option<String>,
    pub key: Option<String>,
    /// The call's field the glob is matched against.
    pub key_field: &'static str,
}

impl ExpectMatcher for CommandMatcher {
    fn matches(&self, call: &dyn Call) -> bool {
        let command_ok = self
            .command
            .as_deref()
            .is_none_or(|c| call.operation().eq_ignore_ascii_case(c));
        let key_ok = match &self.key {
            Some(g) => call
                .field(self.key_field)
                .is_some_and(|k| super::glob::redis_glob(g.as_bytes(), k.as_bytes())),
            None => true,
        };
        command_ok && key_ok
    }
    fn target(&self) -> String {
        let mut t = String::new();
        if self.command.is_some() || self.key.is_some() {
            t.push_str(" /");
            if let Some(c) = &self.command {
                t.push_str(&format!(" {c}"));
            }
            if let Some(k) = &self.key {
                t.push_str(&format!(" key {k}"));
            }
        }
        t
    }
}

/// A value contains `want`: a JSON subset when the value parses as JSON
/// and `want` is an object or array, else a substring.
pub fn value_contains(value: &str, want: &serde_json::Value) -> bool {
    match want {
        serde_json::Value::String(s) => value.contains(s.as_str()),
        _ => match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v) => json_subset(&v, want),
            Err(_) => false,
        },
    }
}

fn json_subset(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| json_subset(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            w.iter().all(|wv| h.iter().any(|hv| json_subset(hv, wv)))
        }
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        (h, w) => h == w,
    }
}
