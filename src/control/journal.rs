//! `GET /requests` and `/requests/unmatched`: the exchange journal over
//! the admin API, paged, and built off the data plane.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{error, param, text_response, Body, Control};
use crate::events::{ExchangeEvent, Outcome};

impl Control {
    /// The journal: each protocol's exchanges under its own key
    /// (`requests` for HTTP), or the exchanges no rule answered. It may
    /// hold 100,000 of them: the snapshot is a pointer per entry, the JSON
    /// is built on a blocking thread, off the data plane, and `offset` and
    /// `limit` page through it.
    pub(super) async fn requests(&self, q: &[(String, String)], unmatched: bool) -> Response<Body> {
        let count = |key: &str| -> Result<Option<usize>, String> {
            param(q, key)
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| format!("{key}={v}: a whole number from 0 up"))
                })
                .transpose()
        };
        let (offset, limit) = match (count("offset"), count("limit")) {
            (Ok(o), Ok(l)) => (o.unwrap_or(0), l.unwrap_or(usize::MAX)),
            (Err(msg), _) | (_, Err(msg)) => return error(StatusCode::BAD_REQUEST, msg),
        };
        let service = param(q, "service").map(str::to_string);
        let journal = self.events.journal();
        let built = tokio::task::spawn_blocking(move || {
            let selected: Vec<&ExchangeEvent> = journal
                .iter()
                .map(|e| &**e)
                .filter(|e| service.as_deref().is_none_or(|s| e.service == s))
                .filter(|e| !unmatched || e.outcome == Outcome::Unmatched)
                .skip(offset)
                .take(limit)
                .collect();
            let value = if unmatched {
                json!({ "requests": selected })
            } else {
                let mut by_key = serde_json::Map::new();
                for p in crate::protocols::INFOS {
                    by_key.insert(p.journal_key.to_string(), Value::Array(Vec::new()));
                }
                for e in selected {
                    if let Some(Value::Array(list)) = by_key.get_mut(e.protocol.journal_key) {
                        list.push(serde_json::to_value(e).unwrap_or(Value::Null));
                    }
                }
                Value::Object(by_key)
            };
            serde_json::to_string_pretty(&value).unwrap_or_default()
        })
        .await;
        match built {
            Ok(body) => text_response(StatusCode::OK, "application/json", body),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot list: {e}"),
            ),
        }
    }
}
