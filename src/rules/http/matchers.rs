//! The `when:` side of a route: which requests it answers. Method, path
//! templates (`/v1/charges/{id}`, `*`, `**`), path and body regexes, and the
//! query, header, JSON and form matchers. Kept apart from the responses so
//! the matching vocabulary can be read (and grown) on its own.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::super::glob::glob_match;
use crate::rules::common::OneOrMany;

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
}
