//! Checking `expect:` entries against the exchange journal. Which calls
//! an entry counts is its service's protocol's business (the matcher the
//! rules gave it); this file only counts and reports.

use std::fmt;
use std::sync::Arc;

use super::ExchangeEvent;
use crate::rules::ExpectSpec;

/// One expectation with what actually happened.
#[derive(Debug, Clone)]
pub struct ExpectResult {
    pub expect: ExpectSpec,
    pub calls: u64,
    pub ok: bool,
    /// The calls to the service, for the diff (one line each).
    pub service_calls: Vec<String>,
}

/// Evaluates every expectation against the journal.
pub fn check(expects: &[ExpectSpec], journal: &[Arc<ExchangeEvent>]) -> Vec<ExpectResult> {
    expects
        .iter()
        .map(|e| {
            let relevant: Vec<&ExchangeEvent> = journal
                .iter()
                .map(|c| &**c)
                .filter(|c| c.service == e.service)
                .filter(|c| e.matcher.as_ref().is_none_or(|m| m.relevant(*c)))
                .collect();
            let calls = relevant
                .iter()
                .filter(|c| e.matcher.as_ref().is_none_or(|m| m.matches(**c)))
                .count() as u64;
            ExpectResult {
                expect: e.clone(),
                calls,
                ok: e.count.holds(calls),
                service_calls: relevant.iter().map(|c| c.detail.describe(c)).collect(),
            }
        })
        .collect()
}

impl fmt::Display for ExpectResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = format!(
            "{}{}",
            self.expect.service,
            self.expect
                .matcher
                .as_ref()
                .map(|m| m.target())
                .unwrap_or_default()
        );
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
