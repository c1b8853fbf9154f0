//! A request as the matchers and templates see it.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::http::request::Parts;

use crate::rules::http::WhenSpec;

pub(crate) struct RequestView {
    pub method: String,
    pub path: String,
    pub raw_query: Option<String>,
    /// Decoded query pairs (repeated keys keep every value).
    pub query: Vec<(String, String)>,
    /// Lower-case header names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub host: Option<String>,
    pub version: String,
    pub body: Bytes,
    pub json: Option<serde_json::Value>,
    pub form: Vec<(String, String)>,
}

impl RequestView {
    pub fn new(parts: &Parts, body: Bytes) -> Self {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &parts.headers {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let raw_query = parts.uri.query().map(str::to_string);
        let query = raw_query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        let json = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(&body).ok()
        };
        let form = if content_type.starts_with("application/x-www-form-urlencoded") {
            form_urlencoded::parse(&body).into_owned().collect()
        } else {
            Vec::new()
        };
        let host = parts
            .uri
            .host()
            .map(str::to_string)
            .or_else(|| headers.get("host").map(|h| strip_port(h)));
        RequestView {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            raw_query,
            query,
            headers,
            host,
            version: format!("{:?}", parts.version),
            body,
            json,
            form,
        }
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The path parameters if every condition of `when` holds.
    pub fn matches(&self, when: &WhenSpec) -> Option<BTreeMap<String, String>> {
        if !when.method.0.is_empty()
            && !when
                .method
                .0
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&self.method))
        {
            return None;
        }
        let mut params = BTreeMap::new();
        if let Some(p) = &when.path {
            params = p.matches(&self.path)?;
        }
        if let Some(re) = &when.path_regex {
            let caps = re.0.captures(&self.path)?;
            for name in re.0.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    params.insert(name.to_string(), m.as_str().to_string());
                }
            }
        }
        for (k, want) in &when.query {
            if !self
                .query
                .iter()
                .any(|(qk, qv)| qk == k && want.matches(qv))
            {
                return None;
            }
        }
        for (k, want) in &when.headers {
            let v = self.headers.get(&k.to_ascii_lowercase())?;
            if !want.matches(v) {
                return None;
            }
        }
        if let Some(b) = &when.body {
            if self.body.as_ref() != b.as_bytes() {
                return None;
            }
        }
        if let Some(re) = &when.body_regex {
            if !re.0.is_match(&self.body_text()) {
                return None;
            }
        }
        if let Some(j) = &when.json {
            if !json_equal(self.json.as_ref()?, j) {
                return None;
            }
        }
        if let Some(j) = &when.json_contains {
            if !json_contains(self.json.as_ref()?, j) {
                return None;
            }
        }
        for (k, want) in &when.form {
            if !self.form.iter().any(|(fk, fv)| fk == k && want.matches(fv)) {
                return None;
            }
        }
        Some(params)
    }
}

impl RequestView {
    /// Every condition of `when` that this request fails, in words.
    pub fn mismatches(&self, when: &WhenSpec) -> Vec<String> {
        let mut out = Vec::new();
        if !when.method.0.is_empty()
            && !when
                .method
                .0
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&self.method))
        {
            out.push(format!(
                "method {} is not {}",
                self.method,
                when.method.0.join(" or ")
            ));
        }
        if let Some(p) = &when.path {
            if p.matches(&self.path).is_none() {
                out.push(format!("path {} does not match {}", self.path, p.text));
            }
        }
        if let Some(re) = &when.path_regex {
            if !re.0.is_match(&self.path) {
                out.push(format!(
                    "path {} does not match regex {}",
                    self.path,
                    re.0.as_str()
                ));
            }
        }
        for (k, want) in &when.query {
            let have: Vec<&str> = self
                .query
                .iter()
                .filter(|(qk, _)| qk == k)
                .map(|(_, v)| v.as_str())
                .collect();
            if !have.iter().any(|v| want.matches(v)) {
                out.push(match have.first() {
                    Some(v) => format!("query {k}={v:?} does not match {}", describe(want)),
                    None => format!("query parameter {k} is missing"),
                });
            }
        }
        for (k, want) in &when.headers {
            match self.headers.get(&k.to_ascii_lowercase()) {
                Some(v) if want.matches(v) => {}
                Some(v) => out.push(format!(
                    "header {k}: {v:?} does not match {}",
                    describe(want)
                )),
                None => out.push(format!("header {k} is missing")),
            }
        }
        if let Some(b) = &when.body {
            if self.body.as_ref() != b.as_bytes() {
                out.push("body differs".into());
            }
        }
        if let Some(re) = &when.body_regex {
            if !re.0.is_match(&self.body_text()) {
                out.push(format!("body does not match regex {}", re.0.as_str()));
            }
        }
        if let Some(j) = &when.json {
            if !self.json.as_ref().is_some_and(|h| json_equal(h, j)) {
                out.push("JSON body differs".into());
            }
        }
        if let Some(j) = &when.json_contains {
            if !self.json.as_ref().is_some_and(|h| json_contains(h, j)) {
                out.push(format!("JSON body does not contain {j}"));
            }
        }
        for (k, want) in &when.form {
            if !self.form.iter().any(|(fk, fv)| fk == k && want.matches(fv)) {
                out.push(format!(
                    "form field {k} is missing or does not match {}",
                    describe(want)
                ));
            }
        }
        out
    }
}

fn describe(v: &crate::rules::http::ValueMatch) -> String {
    match v {
        crate::rules::http::ValueMatch::Glob(g) => format!("{g:?}"),
        crate::rules::http::ValueMatch::Regex(r) => format!("regex {}", r.as_str()),
    }
}

fn strip_port(h: &str) -> String {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match h.rsplit_once(':') {
        Some((a, p)) if p.chars().all(|c| c.is_ascii_digit()) => a.to_string(),
        _ => h.to_string(),
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
pub(crate) fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equal(v, w))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (x, y) => x == y,
    }
}

/// Whether `have` contains `want`: objects by subset of keys (recursive),
/// arrays by every wanted element matching some element, scalars equal.
pub(crate) fn json_contains(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| json_contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            w.iter().all(|wv| h.iter().any(|hv| json_contains(hv, wv)))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contains() {
        let have = json!({"a": 1, "b": {"c": [1, 2, {"d": "x", "e": 5}]}, "f": 2.0});
        assert!(json_contains(&have, &json!({"a": 1})));
        assert!(json_contains(&have, &json!({"b": {"c": [{"d": "x"}]}})));
        assert!(json_contains(&have, &json!({"f": 2})));
        assert!(!json_contains(&have, &json!({"a": 2})));
        assert!(!json_contains(&have, &json!({"z": null})));
    }
}
