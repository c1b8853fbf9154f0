//! Checking `expect:` entries against the request journal.

use std::fmt;

use super::{HttpEvent, KafkaEvent, RedisEvent};
use crate::rules::ExpectSpec;

/// One expectation with what actually happened.
#[derive(Debug, Clone)]
pub struct ExpectResult {
    pub expect: ExpectSpec,
    pub calls: u64,
    pub ok: bool,
    /// The calls to the service, for the diff (method, path, route).
    pub service_calls: Vec<String>,
}

/// Evaluates every expectation against the HTTP and Redis journals.
pub fn check(
    expects: &[ExpectSpec],
    journal: &[HttpEvent],
    redis: &[RedisEvent],
    kafka: &[KafkaEvent],
) -> Vec<ExpectResult> {
    expects
        .iter()
        .map(|e| {
            let to_kafka: Vec<&KafkaEvent> =
                kafka.iter().filter(|c| c.service == e.service).collect();
            if e.topic.is_some() || e.value_contains.is_some() || !to_kafka.is_empty() {
                return check_kafka(e, &to_kafka);
            }
            let to_redis: Vec<&RedisEvent> =
                redis.iter().filter(|c| c.service == e.service).collect();
            if e.command.is_some() || e.key.is_some() || (!to_redis.is_empty() && e.route.is_none())
            {
                return check_redis(e, &to_redis);
            }
            let to_service: Vec<&HttpEvent> =
                journal.iter().filter(|c| c.service == e.service).collect();
            let calls = to_service
                .iter()
                .filter(|c| match &e.route {
                    Some(r) => c.route.as_deref() == Some(r.as_str()),
                    None => true,
                })
                .count() as u64;
            ExpectResult {
                expect: e.clone(),
                calls,
                ok: e.count.holds(calls),
                service_calls: to_service
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}{} -> {} ({})",
                            c.method,
                            c.path,
                            c.query
                                .as_deref()
                                .map(|q| format!("?{q}"))
                                .unwrap_or_default(),
                            c.status
                                .map(|s| s.to_string())
                                .unwrap_or_else(|| "no response".into()),
                            c.route.as_deref().unwrap_or(c.answered_by)
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Counts the Redis commands an expectation names (command, key glob).
fn check_redis(e: &ExpectSpec, calls: &[&RedisEvent]) -> ExpectResult {
    let hits = calls
        .iter()
        .filter(|c| {
            e.command
                .as_deref()
                .is_none_or(|cmd| c.command.eq_ignore_ascii_case(cmd))
        })
        .filter(|c| match &e.key {
            Some(g) => c.key.as_deref().is_some_and(|k| {
                crate::responders::redis::commands::glob(g.as_bytes(), k.as_bytes())
            }),
            None => true,
        })
        .count() as u64;
    ExpectResult {
        expect: e.clone(),
        calls: hits,
        ok: e.count.holds(hits),
        service_calls: calls
            .iter()
            .map(|c| {
                format!(
                    "{}{} -> {}{}",
                    c.command,
                    c.key
                        .as_deref()
                        .map(|k| format!(" {k}"))
                        .unwrap_or_default(),
                    c.reply,
                    c.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            })
            .collect(),
    }
}

/// Counts the records produced to a Kafka service that an expectation
/// names (topic, value).
fn check_kafka(e: &ExpectSpec, calls: &[&KafkaEvent]) -> ExpectResult {
    let produced: Vec<&&KafkaEvent> = calls
        .iter()
        .filter(|c| c.api == "produce" && c.error_code == 0)
        .collect();
    let hits = produced
        .iter()
        .filter(|c| {
            e.topic
                .as_deref()
                .is_none_or(|t| c.topic.as_deref() == Some(t))
        })
        .filter(|c| match &e.value_contains {
            None => true,
            Some(want) => c.value.as_deref().is_some_and(|v| value_contains(v, want)),
        })
        .count() as u64;
    ExpectResult {
        expect: e.clone(),
        calls: hits,
        ok: e.count.holds(hits),
        service_calls: produced
            .iter()
            .map(|c| {
                format!(
                    "produce {}[{}] @{}: {}",
                    c.topic.as_deref().unwrap_or("?"),
                    c.partition.unwrap_or(-1),
                    c.offset.unwrap_or(-1),
                    c.value.as_deref().unwrap_or("null")
                )
            })
            .collect(),
    }
}

/// A record value contains `want`: a JSON subset when the value parses as
/// JSON and `want` is an object or array, else a substring.
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

impl fmt::Display for ExpectResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut target = match &self.expect.route {
            Some(r) => format!("{} / {r}", self.expect.service),
            None => self.expect.service.clone(),
        };
        if let Some(t) = &self.expect.topic {
            target.push_str(&format!(" / topic {t}"));
        }
        if let Some(v) = &self.expect.value_contains {
            target.push_str(&format!(" value contains {v}"));
        }
        if self.expect.command.is_some() || self.expect.key.is_some() {
            target.push_str(" /");
            if let Some(c) = &self.expect.command {
                target.push_str(&format!(" {c}"));
            }
            if let Some(k) = &self.expect.key {
                target.push_str(&format!(" key {k}"));
            }
        }
        let mark = if self.ok { "ok  " } else { "FAIL" };
        writeln!(
            f,
            "  {mark} {target}: expected {}, called {} {}",
            self.expect.count,
            self.calls,
            if self.calls == 1 { "time" } else { "times" }
        )?;
        if !self.ok {
            if self.service_calls.is_empty() {
                writeln!(
                    f,
                    "         no calls reached service {}",
                    self.expect.service
                )?;
            } else {
                writeln!(f, "         calls to {}:", self.expect.service)?;
                for c in self.service_calls.iter().take(20) {
                    writeln!(f, "           {c}")?;
                }
                if self.service_calls.len() > 20 {
                    writeln!(f, "           … {} more", self.service_calls.len() - 20)?;
                }
            }
        }
        Ok(())
    }
}
