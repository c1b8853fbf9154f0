//! `defaults:`, the top-level key that sets what the services of the same
//! file get when they leave a setting out: for now the HTTP fallback, so
//! that one file of an API's mocks answers every unmatched request in the
//! API's own error shape (a typed SDK cannot read meshwrap's default 404).

use serde::Deserialize;

use super::http::Fallback;

/// The value of `defaults:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    #[serde(default)]
    pub http: HttpDefaults,
}

/// `defaults: { http: … }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDefaults {
    /// The `fallback` of every `http:` service of the file that has none.
    pub fallback: Option<Fallback>,
}
