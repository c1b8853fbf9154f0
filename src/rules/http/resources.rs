//! Stateful REST collections (`resources:`): an in-memory list of items at a
//! path, with how new ids are made. Only the schema lives here; the
//! responder keeps the state.

use serde::Deserialize;

use super::matchers::PathPattern;

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
