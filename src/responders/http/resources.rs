//! Stateful REST collections: POST creates (with a generated id and
//! `created_at`), GET lists or fetches, PUT replaces, PATCH merges, DELETE
//! removes, and an absent id is 404.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::rules::http::{IdKind, ResourceSpec};

pub(crate) struct Resource {
    spec: ResourceSpec,
    items: Mutex<Vec<Value>>,
    next_id: AtomicU64,
}

/// A resource's answer: status and JSON body (none for 204).
pub(crate) struct Answer {
    pub status: u16,
    pub body: Option<Value>,
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Resource {
    pub fn new(spec: &ResourceSpec) -> Self {
        let r = Resource {
            spec: spec.clone(),
            items: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        };
        r.reset();
        r
    }

    pub fn path(&self) -> &str {
        &self.spec.path.text
    }

    /// Back to the seed.
    pub fn reset(&self) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        *items = self.spec.seed.clone();
        let max = items
            .iter()
            .filter_map(|i| i.get(&self.spec.id_field).and_then(Value::as_u64))
            .max()
            .unwrap_or(0);
        self.next_id.store(max + 1, Ordering::Release);
    }

    fn new_id(&self) -> Value {
        match self.spec.id {
            IdKind::Int => json!(self.next_id.fetch_add(1, Ordering::AcqRel)),
            IdKind::Uuid => json!(uuid::Uuid::new_v4().to_string()),
        }
    }

    /// Answers if `path` is the collection or one of its items.
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Option<Answer> {
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        if self.spec.path.matches(path).is_some() {
            return Some(self.collection(method, query, body));
        }
        let (parent, id) = path.rsplit_once('/')?;
        if id.is_empty()
            || self
                .spec
                .path
                .matches(if parent.is_empty() { "/" } else { parent })
                .is_none()
        {
            return None;
        }
        let id = form_urlencoded::parse(format!("i={id}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| id.to_string());
        Some(self.item(method, &id, body))
    }

    fn collection(&self, method: &str, query: &[(String, String)], body: Option<&Value>) -> Answer {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "GET" | "HEAD" => {
                // `?field=value` keeps items whose top-level field equals the
                // value; `limit` and `offset` page through the result.
                let mut limit = usize::MAX;
                let mut offset = 0usize;
                let mut filters = Vec::new();
                for (k, v) in query {
                    match k.as_str() {
                        "limit" => limit = v.parse().unwrap_or(usize::MAX),
                        "offset" => offset = v.parse().unwrap_or(0),
                        _ => filters.push((k, v)),
                    }
                }
                let list: Vec<Value> = items
                    .iter()
                    .filter(|i| {
                        filters.iter().all(|(k, v)| match i.get(k.as_str()) {
                            Some(Value::String(s)) => s == *v,
                            Some(other) => *other.to_string() == ***v,
                            None => false,
                        })
                    })
                    .skip(offset)
                    .take(limit)
                    .cloned()
                    .collect();
                Answer {
                    status: 200,
                    body: Some(Value::Array(list)),
                }
            }
            "POST" => {
                let Some(Value::Object(obj)) = body else {
                    return bad_body();
                };
                let mut obj = obj.clone();
                let id = match obj.get(&self.spec.id_field) {
                    Some(v) if id_string(v).is_some() => {
                        // A client-chosen integer id moves the counter past it.
                        if let Some(n) = v.as_u64() {
                            self.next_id.fetch_max(n + 1, Ordering::AcqRel);
                        }
                        v.clone()
                    }
                    _ => self.new_id(),
                };
                let key = id_string(&id).unwrap_or_default();
                if items.iter().any(|i| {
                    i.get(&self.spec.id_field).and_then(id_string).as_deref() == Some(&key)
                }) {
                    return Answer {
                        status: 409,
                        body: Some(
                            json!({"error": format!("{} {key} already exists", self.spec.id_field)}),
                        ),
                    };
                }
                obj.insert(self.spec.id_field.clone(), id);
                obj.entry("created_at")
                    .or_insert_with(|| json!(crate::events::now_rfc3339()));
                let v = Value::Object(obj);
                items.push(v.clone());
                Answer {
                    status: 201,
                    body: Some(v),
                }
            }
            _ => method_not_allowed(method),
        }
    }

    fn item(&self, method: &str, id: &str, body: Option<&Value>) -> Answer {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let field = &self.spec.id_field;
        let pos = items
            .iter()
            .position(|i| i.get(field).and_then(id_string).as_deref() == Some(id));
        let Some(pos) = pos else {
            return Answer {
                status: 404,
                body: Some(json!({"error": "not found", field.as_str(): id})),
            };
        };
        match method {
            "GET" | "HEAD" => Answer {
                status: 200,
                body: Some(items[pos].clone()),
            },
            "PUT" | "PATCH" => {
                let Some(Value::Object(new)) = body else {
                    return bad_body();
                };
                let old = items[pos].as_object().cloned().unwrap_or_default();
                let mut obj: Map<String, Value> = if method == "PUT" {
                    new.clone()
                } else {
                    old.clone()
                };
                if method == "PATCH" {
                    for (k, v) in new {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                // The id and creation time are the server's.
                if let Some(idv) = old.get(field) {
                    obj.insert(field.clone(), idv.clone());
                }
                if let Some(c) = old.get("created_at") {
                    obj.insert("created_at".into(), c.clone());
                }
                obj.insert("updated_at".into(), json!(crate::events::now_rfc3339()));
                items[pos] = Value::Object(obj);
                Answer {
                    status: 200,
                    body: Some(items[pos].clone()),
                }
            }
            "DELETE" => {
                items.remove(pos);
                Answer {
                    status: 204,
                    body: None,
                }
            }
            _ => method_not_allowed(method),
        }
    }
}

fn bad_body() -> Answer {
    Answer {
        status: 400,
        body: Some(json!({"error": "the body must be a JSON object"})),
    }
}

fn method_not_allowed(method: &str) -> Answer {
    Answer {
        status: 405,
        body: Some(json!({"error": format!("method {method} is not allowed here")})),
    }
}
