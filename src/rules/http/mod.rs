//! The `http:` part of a service: routes, responses, faults, stateful
//! resources and the fallback. Values that can be wrong in ways serde does
//! not see (regexes, path patterns, templates, durations, one-of keys) are
//! checked while deserializing, so their errors carry the YAML position.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::glob::glob_match;
use super::schema::OneOrMany;

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
    /// What a request that nothing matches gets.
    #[serde(default)]
    pub fallback: Fallback,
    /// Request and response bodies up to this many bytes go into events.
    #[serde(default = "default_record_bodies")]
    pub record_bodies: usize,
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

#[derive(Debug, Clone)]
pub enum Responses {
    One(ResponseSpec),
    Sequence {
        items: Vec<ResponseSpec>,
        then: Exhausted,
    },
}

/// What a sequence does once every response was served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    /// Keep answering with the last response.
    #[default]
    RepeatLast,
    /// Start again from the first.
    Cycle,
    /// Answer 500 with an error naming the route.
    Error,
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

/// Conditions on a request; all given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSpec {
    /// `GET`, or a list; any method when absent.
    #[serde(default)]
    pub method: OneOrMany<String>,
    /// `/v1/charges`, `/v1/charges/{id}`, `/files/*`, `/static/**`.
    #[serde(default)]
    pub path: Option<PathPattern>,
    /// A regex on the path; named groups become path parameters.
    #[serde(default)]
    pub path_regex: Option<RegexSpec>,
    /// Query parameters that must be present with matching values.
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
    /// Headers (names case-insensitive) that must match.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// The body, exactly.
    #[serde(default)]
    pub body: Option<String>,
    /// A regex the body must match (anywhere).
    #[serde(default)]
    pub body_regex: Option<RegexSpec>,
    /// The body parsed as JSON must equal this.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// The body parsed as JSON must contain this (objects: a subset of the
    /// keys, recursively; arrays: each given element present).
    #[serde(default)]
    pub json_contains: Option<serde_json::Value>,
    /// Fields of an `application/x-www-form-urlencoded` body.
    #[serde(default)]
    pub form: BTreeMap<String, ValueMatch>,
}

/// A string condition: a glob (`*` = any run of characters) written as a
/// plain string, or `{ regex: "..." }`.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Glob(String),
    Regex(regex::Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Glob(g) => glob_match(g.as_bytes(), value.as_bytes()),
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Num(serde_json::Number),
            Bool(bool),
            Re { regex: String },
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected a string (glob, `*` = anything) or `{ regex: \"...\" }`")
        })? {
            Raw::Str(s) => Ok(ValueMatch::Glob(s)),
            Raw::Num(n) => Ok(ValueMatch::Glob(n.to_string())),
            Raw::Bool(b) => Ok(ValueMatch::Glob(b.to_string())),
            Raw::Re { regex } => regex::Regex::new(&regex)
                .map(ValueMatch::Regex)
                .map_err(|e| de::Error::custom(format!("invalid regex: {e}"))),
        }
    }
}

/// A compiled regex that deserializes from a string.
#[derive(Debug, Clone)]
pub struct RegexSpec(pub regex::Regex);

impl<'de> Deserialize<'de> for RegexSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s)
            .map(RegexSpec)
            .map_err(|e| de::Error::custom(format!("invalid regex: {e}")))
    }
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: one segment, captured.
    Param(String),
    /// `*`: any one segment.
    Star,
    /// `**`: any number of segments, zero included.
    DoubleStar,
}

/// A route path such as `/v1/charges/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub text: String,
    pub segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with `/`"));
        }
        let mut segments = Vec::new();
        for seg in text.split('/').skip(1) {
            let s = if seg == "**" {
                Segment::DoubleStar
            } else if seg == "*" {
                Segment::Star
            } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!(
                        "path parameter `{{{name}}}` in `{text}` must be a name of letters, digits and `_`"
                    ));
                }
                Segment::Param(name.to_string())
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "segment `{seg}` of `{text}`: a parameter must be a whole segment like `{{id}}`"
                ));
            } else {
                Segment::Literal(seg.to_string())
            };
            segments.push(s);
        }
        Ok(PathPattern {
            text: text.to_string(),
            segments,
        })
    }

    /// The captured parameters if `path` matches.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let mut params = BTreeMap::new();
        if match_segments(&self.segments, &parts, &mut params) {
            Some(params)
        } else {
            None
        }
    }
}

fn match_segments(pat: &[Segment], parts: &[&str], params: &mut BTreeMap<String, String>) -> bool {
    match pat.first() {
        None => parts.is_empty(),
        Some(Segment::DoubleStar) => {
            (0..=parts.len()).any(|skip| match_segments(&pat[1..], &parts[skip..], params))
        }
        Some(seg) => {
            let Some(part) = parts.first() else {
                return false;
            };
            let ok = match seg {
                Segment::Literal(l) => l == part,
                Segment::Param(name) => {
                    if part.is_empty() {
                        false
                    } else {
                        params.insert(name.clone(), percent_decode(part));
                        true
                    }
                }
                Segment::Star => !part.is_empty(),
                Segment::DoubleStar => unreachable_double_star(),
            };
            ok && match_segments(&pat[1..], &parts[1..], params)
        }
    }
}

/// `DoubleStar` is handled by the outer match arm.
fn unreachable_double_star() -> bool {
    false
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathPattern::parse(&s).map_err(de::Error::custom)
    }
}

/// A Jinja template (minijinja), checked for syntax when loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

impl Template {
    /// Whether the text needs rendering at all.
    pub fn is_dynamic(&self) -> bool {
        self.0.contains("{{") || self.0.contains("{%")
    }
}

pub fn check_template(text: &str) -> Result<(), String> {
    if !(text.contains("{{") || text.contains("{%")) {
        return Ok(());
    }
    let env = minijinja::Environment::new();
    env.template_from_str(text)
        .map(|_| ())
        .map_err(|e| format!("template error: {e}"))
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Num(serde_json::Number),
            Bool(bool),
        }
        let s = match Raw::deserialize(d)? {
            Raw::Str(s) => s,
            Raw::Num(n) => n.to_string(),
            Raw::Bool(b) => b.to_string(),
        };
        check_template(&s).map_err(de::Error::custom)?;
        Ok(Template(s))
    }
}

/// Where a response body comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum BodySpec {
    Empty,
    /// Text, templated.
    Text(Template),
    /// JSON; string values inside are templated.
    Json(serde_json::Value),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A file, relative to the rules file (resolved and read at load).
    File {
        path: PathBuf,
        data: Vec<u8>,
    },
}

/// One response.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawResponse")]
pub struct ResponseSpec {
    pub status: u16,
    pub headers: Vec<(String, Template)>,
    pub body: BodySpec,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Default for ResponseSpec {
    fn default() -> Self {
        ResponseSpec {
            status: 200,
            headers: Vec::new(),
            body: BodySpec::Empty,
            delay: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, Template>,
    #[serde(default)]
    body: Option<Template>,
    #[serde(default)]
    json: Option<JsonTemplate>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    delay: Option<DurationSpec>,
}

impl TryFrom<RawResponse> for ResponseSpec {
    type Error = String;
    fn try_from(r: RawResponse) -> Result<Self, String> {
        let status = r.status.unwrap_or(200);
        if !(100..=999).contains(&status) {
            return Err(format!("status {status} is not an HTTP status (100-999)"));
        }
        let given = [
            r.body.is_some(),
            r.json.is_some(),
            r.base64.is_some(),
            r.file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            return Err("give one of `body`, `json`, `base64`, `file`".into());
        }
        let body = if let Some(t) = r.body {
            BodySpec::Text(t)
        } else if let Some(j) = r.json {
            BodySpec::Json(j.0)
        } else if let Some(b) = r.base64 {
            use base64::Engine;
            let clean: String = b.split_whitespace().collect();
            BodySpec::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(clean)
                    .map_err(|e| format!("`base64` is not valid base64: {e}"))?,
            )
        } else if let Some(path) = r.file {
            BodySpec::File {
                path,
                data: Vec::new(),
            }
        } else {
            BodySpec::Empty
        };
        Ok(ResponseSpec {
            status,
            headers: r.headers.into_iter().collect(),
            body,
            delay: r.delay.map(|d| d.0),
        })
    }
}

/// A JSON body whose strings may be templates, checked where it is
/// written (so errors point into it).
#[derive(Debug, Clone)]
struct JsonTemplate(serde_json::Value);

impl<'de> Deserialize<'de> for JsonTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        check_json_templates(&v).map_err(de::Error::custom)?;
        Ok(JsonTemplate(v))
    }
}

fn check_json_templates(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) => check_template(s),
        serde_json::Value::Array(a) => a.iter().try_for_each(check_json_templates),
        serde_json::Value::Object(o) => o.values().try_for_each(check_json_templates),
        _ => Ok(()),
    }
}

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
        let probability = super::fault_probability(r.probability)?;
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

/// A stateful REST collection at `path` (items at `path/{id}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub path: PathPattern,
    /// How new ids look: `int` (1, 2, 3…) or `uuid`.
    #[serde(default)]
    pub id: IdKind,
    /// The id field's name in the items.
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Items present at start (and after a reset).
    #[serde(default)]
    pub seed: Vec<serde_json::Value>,
}

fn default_id_field() -> String {
    "id".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    #[default]
    Int,
    Uuid,
}

/// What a request that no route or resource matches gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Fallback {
    /// 404 with a JSON body naming the service and its routes.
    #[default]
    NotFound,
    /// Forward to the real destination.
    Pass,
    /// This response.
    Respond(Box<ResponseSpec>),
}

impl<'de> Deserialize<'de> for Fallback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Fallback;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`not_found`, `pass`, or a response (`{ status: 503, json: ... }`)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fallback, E> {
                match v {
                    "pass" => Ok(Fallback::Pass),
                    "not_found" | "404" => Ok(Fallback::NotFound),
                    other => Err(E::custom(format!(
                        "unknown fallback `{other}`: use `not_found`, `pass` or a response"
                    ))),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Fallback, A::Error> {
                ResponseSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|r| Fallback::Respond(Box::new(r)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        let p = PathPattern::parse("/v1/charges/{id}").unwrap();
        assert_eq!(p.matches("/v1/charges/ch_1").unwrap()["id"], "ch_1");
        assert!(p.matches("/v1/charges").is_none());
        assert!(p.matches("/v1/charges/").is_none());
        let p = PathPattern::parse("/static/**").unwrap();
        assert!(p.matches("/static/a/b/c.js").is_some());
        assert!(p.matches("/static").is_some());
        let p = PathPattern::parse("/a/*/c").unwrap();
        assert!(p.matches("/a/b/c").is_some());
        assert!(p.matches("/a/b/x/c").is_none());
        let p = PathPattern::parse("/**/x").unwrap();
        assert!(p.matches("/x").is_some());
        assert!(p.matches("/a/b/x").is_some());
        assert!(PathPattern::parse("v1").is_err());
        assert!(PathPattern::parse("/a{id}").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_millis(20));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
