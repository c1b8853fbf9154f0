//! The table printed on stderr when the SUT exits.

use std::collections::BTreeMap;
use std::fmt;

use super::{FlowEvent, ProtocolInfo, SummaryStyle};

#[derive(Debug, Default, Clone)]
struct Row {
    flows: u64,
    bytes_up: u64,
    bytes_down: u64,
    errors: u64,
    protocol: &'static str,
}

/// Flows grouped by destination and decision, plus a rules snippet for
/// every refused destination.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    rows: BTreeMap<(String, &'static str), Row>,
    refused: BTreeMap<String, (Option<String>, u16, &'static str)>,
    dns_queries: u64,
    /// Routes declared per service (in declaration order), for the
    /// per-route sections.
    routes: Vec<DeclaredRoute>,
    counts: Counts,
    /// The protocols whose rule snippets a refused destination may get.
    hints: Vec<&'static ProtocolInfo>,
}

/// (protocol title, service, route label) of a route the rules declare.
pub type DeclaredRoute = (&'static str, String, String);

/// (protocol title, service) → (protocol, operation → (calls, errors)).
/// Keyed by the title so the sections come in a stable order.
pub type Counts = BTreeMap<CountKey, CountEntry>;

/// (protocol title, service).
pub type CountKey = (&'static str, String);

/// The protocol and its operations' counts.
pub type CountEntry = (&'static ProtocolInfo, PerOperation);

/// operation → (calls, errors).
pub type PerOperation = BTreeMap<String, (u64, u64)>;

/// Adds one exchange to the counts (allocation-free when both names are
/// already known, which is every call after the first).
pub fn count(
    counts: &mut Counts,
    protocol: &'static ProtocolInfo,
    service: &str,
    operation: &str,
    failed: bool,
) {
    // A lookup by borrowed parts first: the owned key is built once per
    // service.
    let found = counts
        .iter_mut()
        .find(|((t, s), _)| *t == protocol.title && s == service);
    let per = match found {
        Some((_, (_, per))) => per,
        None => {
            &mut counts
                .entry((protocol.title, service.to_string()))
                .or_insert((protocol, BTreeMap::new()))
                .1
        }
    };
    if !per.contains_key(operation) {
        per.insert(operation.to_string(), (0, 0));
    }
    if let Some(c) = per.get_mut(operation) {
        c.0 += 1;
        c.1 += u64::from(failed);
    }
}

impl Summary {
    /// Counts one finished flow. The sink adds each flow as it ends, so a
    /// long-running sidecar keeps one row per destination, not every flow.
    pub fn add_flow(&mut self, f: &FlowEvent) {
        let host = f.host.clone().unwrap_or_else(|| f.dst.to_string());
        let dest = if host.contains(':') {
            format!("[{host}]:{}", f.dst_port)
        } else {
            format!("{host}:{}", f.dst_port)
        };
        let row = self.rows.entry((dest.clone(), f.decision)).or_default();
        row.flows += 1;
        row.bytes_up += f.bytes_up;
        row.bytes_down += f.bytes_down;
        row.errors += u64::from(f.error.is_some());
        if row.protocol.is_empty() || row.protocol == "none" {
            row.protocol = f.protocol;
        }
        // Only flows refused for want of a rule get a snippet; a rule's
        // own `refuse` or an impossible address needs none.
        if f.decision == "refuse" && f.reason.starts_with("unmatched") {
            self.refused
                .entry(dest)
                .or_insert((f.host.clone(), f.dst_port, f.protocol));
        }
    }

    pub fn set_dns_queries(&mut self, n: u64) {
        self.dns_queries = n;
    }

    /// Adds the exchange counts and the declared routes.
    pub fn add_exchanges(&mut self, declared: &[DeclaredRoute], counts: &Counts) {
        self.routes = declared.to_vec();
        self.counts = counts.clone();
    }

    /// The protocols whose snippets the refused destinations may suggest.
    pub fn with_hints(mut self, protocols: &[&'static ProtocolInfo]) -> Self {
        self.hints = protocols.to_vec();
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A service name derived from a hostname: `api.pay.test` → `api-pay-test`.
fn service_name(host: &str, port: u16) -> String {
    let base: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{}-{port}", base.trim_matches('-'))
}

/// How to mock the destination, when a responder exists for what it
/// probably speaks: by what the sniffer saw, else by the port when the
/// client sent nothing.
fn mock_hint(hints: &[&'static ProtocolInfo], port: u16, protocol: &str) -> Option<&'static str> {
    hints.iter().find_map(|p| {
        let hint = p.mock_hint.as_ref()?;
        let by_bytes = hint.sniffed.contains(&protocol);
        let by_port = protocol == "none" && hint.ports.contains(&port);
        (by_bytes || by_port).then_some(hint.snippet)
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "meshwrap summary ({} DNS queries)", self.dns_queries)?;
        if self.rows.is_empty() {
            return writeln!(f, "  no connections");
        }
        let width = self
            .rows
            .keys()
            .map(|(d, _)| d.len())
            .max()
            .unwrap_or(0)
            .max(11);
        writeln!(
            f,
            "  {:<width$}  {:<8} {:<8} {:>6} {:>12} {:>12} {:>6}",
            "destination", "decision", "protocol", "flows", "bytes up", "bytes down", "errors"
        )?;
        for ((dest, decision), row) in &self.rows {
            writeln!(
                f,
                "  {:<width$}  {:<8} {:<8} {:>6} {:>12} {:>12} {:>6}",
                dest, decision, row.protocol, row.flows, row.bytes_up, row.bytes_down, row.errors
            )?;
        }
        self.fmt_per_route(f)?;
        self.fmt_per_service(f)?;
        if !self.refused.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "  refused destinations; to let them through or mock them, add to a rules file:"
            )?;
            writeln!(f, "  services:")?;
            for (dest, (host, port, protocol)) in &self.refused {
                let (name, matcher) = match host {
                    Some(h) => (
                        service_name(h, *port),
                        format!("{{ host: {h}, port: {port} }}"),
                    ),
                    None => {
                        let ip = dest.rsplit_once(':').map(|(a, _)| a).unwrap_or(dest);
                        let ip = ip.trim_matches(|c| c == '[' || c == ']');
                        (
                            service_name(ip, *port),
                            format!("{{ cidr: \"{ip}\", port: {port} }}"),
                        )
                    }
                };
                writeln!(f, "    - name: {name}")?;
                writeln!(f, "      match: {matcher}")?;
                match mock_hint(&self.hints, *port, protocol) {
                    Some(hint) => writeln!(f, "      pass: {{}}            # or mock it: {hint}")?,
                    None => writeln!(f, "      pass: {{}}")?,
                }
            }
        }
        Ok(())
    }
}

impl Summary {
    /// The sections of protocols answered by routes: every declared route
    /// with its calls, then the calls no route answered.
    fn fmt_per_route(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut titles: Vec<&str> = self.routes.iter().map(|(t, _, _)| *t).collect();
        titles.extend(
            self.counts
                .iter()
                .filter(|(_, (p, _))| p.summary == SummaryStyle::PerRoute)
                .map(|((t, _), _)| *t),
        );
        titles.sort_unstable();
        titles.dedup();
        for title in titles {
            writeln!(f)?;
            writeln!(f, "  {title} calls per route:")?;
            let calls = |svc: &str, op: &str| -> u64 {
                self.counts
                    .get(&(title, svc.to_string()))
                    .and_then(|(_, per)| per.get(op))
                    .map_or(0, |c| c.0)
            };
            let declared = self.routes.iter().filter(|(t, _, _)| *t == title);
            for (_, svc, route) in declared {
                let n = calls(svc, route);
                let note = if n == 0 { "   <- never called" } else { "" };
                writeln!(f, "    {svc} / {route}: {n}{note}")?;
            }
            for ((t, svc), (_, per)) in &self.counts {
                if *t != title {
                    continue;
                }
                for (op, (n, _)) in per.iter() {
                    let declared = self
                        .routes
                        .iter()
                        .any(|(t, s, r)| *t == title && s == svc && r == op);
                    if !declared {
                        writeln!(f, "    {svc} / {op}: {n}")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The sections of protocols with a command set: per service, the
    /// totals and the operations by use.
    fn fmt_per_service(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last_title = None;
        for ((title, svc), (p, per)) in &self.counts {
            if p.summary != SummaryStyle::PerService {
                continue;
            }
            let unit = p.unit;
            if last_title != Some(*title) {
                writeln!(f)?;
                writeln!(f, "  {title} {unit}s per service:")?;
                last_title = Some(*title);
            }
            let total: u64 = per.values().map(|c| c.0).sum();
            let errors: u64 = per.values().map(|c| c.1).sum();
            let mut top: Vec<(&String, &(u64, u64))> = per.iter().collect();
            top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
            let list: Vec<String> = top.iter().map(|(c, n)| format!("{c} {}", n.0)).collect();
            writeln!(
                f,
                "    {svc}: {total} {unit}{}, {errors} {} ({})",
                if total == 1 { "" } else { "s" },
                if errors == 1 { "error" } else { "errors" },
                list.join(", ")
            )?;
        }
        Ok(())
    }
}
