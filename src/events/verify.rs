//! Checking `expect:` entries against the request journal.

use std::fmt;

use super::HttpEvent;
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

/// Evaluates every expectation.
pub fn check(expects: &[ExpectSpec], journal: &[HttpEvent]) -> Vec<ExpectResult> {
    expects
        .iter()
        .map(|e| {
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

impl fmt::Display for ExpectResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.expect.route {
            Some(r) => format!("{} / {r}", self.expect.service),
            None => self.expect.service.clone(),
        };
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
