//! What a route answers: one response or a sequence of them, response
//! bodies (text, JSON, base64, file), templates and the service fallback.
//! Template syntax and the one-body-key rule are checked while
//! deserializing, so their errors point at the YAML that is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::faults::DurationSpec;

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
