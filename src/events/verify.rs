//! Checking `expect:` entries against the request journal.

use std::fmt;

use super::{HttpEvent, RedisEvent};
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
) -> Vec<ExpectResult> {
    expects
        .iter()
        .map(|e| {
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

impl fmt::Display for ExpectResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut target = match &self.expect.route {
            Some(r) => format!("{} / {r}", self.expect.service),
            None => self.expect.service.clone(),
        };
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
