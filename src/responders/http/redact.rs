//! Secrets the SUT sends (credentials in headers, keys in the query,
//! passwords in forms and JSON bodies) are kept out of the events, the
//! journal and the summary unless `--no-redact` is given: event files end
//! up as CI artifacts. Matching and templates still see the real values;
//! only what is recorded is redacted.

use std::collections::BTreeMap;

use super::request::RequestView;

pub const REDACTED: &str = "[redacted]";

/// Header names that carry credentials as a whole.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-amz-security-token",
];

/// Parts of a name (header, query parameter, form or JSON field) that mark
/// its value as a secret.
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api-key",
    "api_key",
    "apikey",
    "access-key",
    "access_key",
    "private-key",
    "private_key",
    "signature",
    "credential",
    "session",
];

/// How deep a JSON body is walked for secret fields; deeper is left as is
/// (the recorded body is clipped anyway).
const MAX_JSON_DEPTH: usize = 32;

pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || SECRET_PARTS.iter().any(|p| name.contains(p))
}

/// `Bearer abc` → `Bearer [redacted]`: the scheme helps a reader, the
/// credential does not.
fn redact_credential(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) if !scheme.is_empty() && scheme.len() <= 16 => {
            format!("{scheme} {REDACTED}")
        }
        _ => REDACTED.to_string(),
    }
}

pub fn headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let v = if matches!(k.as_str(), "authorization" | "proxy-authorization") {
                redact_credential(v)
            } else if is_secret(k) {
                REDACTED.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// A query string or form body with the values of secret names replaced,
/// everything else kept byte for byte.
pub fn pairs(raw: &str) -> String {
    raw.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret(&form_urlencoded_key(k)) => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn form_urlencoded_key(k: &str) -> String {
    form_urlencoded::parse(k.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_else(|| k.to_string())
}

fn json(v: &serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::Value as J;
    if depth >= MAX_JSON_DEPTH {
        return v.clone();
    }
    match v {
        J::Object(o) => J::Object(
            o.iter()
                .map(|(k, x)| {
                    let x = if is_secret(k) && !x.is_object() && !x.is_array() {
                        J::String(REDACTED.into())
                    } else {
                        json(x, depth + 1)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        J::Array(a) => J::Array(a.iter().map(|x| json(x, depth + 1)).collect()),
        other => other.clone(),
    }
}

/// The request body as recorded: a JSON body or a form with its secret
/// fields replaced; any other body as it is.
pub fn body(req: &RequestView) -> Vec<u8> {
    if let Some(v) = &req.json {
        return serde_json::to_vec(&json(v, 0)).unwrap_or_default();
    }
    if !req.form.is_empty() {
        if let Ok(text) = std::str::from_utf8(&req.body) {
            return pairs(text).into_bytes();
        }
    }
    req.body.to_vec()
}

/// The values of the request's secret fields, for scrubbing text that
/// quotes them (a near miss's "header x-api-key: \"k2\" does not match").
/// Values shorter than 3 bytes are left: replacing them would mangle text.
pub fn secret_values(req: &RequestView) -> Vec<String> {
    let named = req
        .headers
        .iter()
        .chain(req.query.iter().map(|(k, v)| (k, v)))
        .chain(req.form.iter().map(|(k, v)| (k, v)));
    named
        .filter(|(k, v)| is_secret(k) && v.len() >= 3)
        .map(|(_, v)| v.clone())
        .collect()
}

pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_schemes() {
        assert!(is_secret("X-Api-Key") && is_secret("client_secret") && is_secret("access_token"));
        assert!(!is_secret("x-request-id") && !is_secret("content-type"));
        assert_eq!(redact_credential("Bearer abc.def"), "Bearer [redacted]");
        assert_eq!(redact_credential("abc"), "[redacted]");
        assert_eq!(
            pairs("api_key=s3&page=2&client%5Fsecret=x"),
            "api_key=[redacted]&page=2&client%5Fsecret=[redacted]"
        );
        let v = serde_json::json!({"user": "a", "password": "p", "nested": [{"token": 1}]});
        assert_eq!(
            json(&v, 0),
            serde_json::json!({"user": "a", "password": "[redacted]", "nested": [{"token": "[redacted]"}]})
        );
    }
}
