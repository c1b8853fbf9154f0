//! The table printed on stderr when the SUT exits.

use std::collections::BTreeMap;
use std::fmt;

use super::{ExchangeEvent, FlowEvent, NearMiss, ProtocolInfo, SummaryStyle};

/// How many requests no rule answered the summary shows, with their near
/// misses; the rest are counted.
const MISSES_SHOWN: usize = 5;
/// Rows of the destination table, at most (one per destination and
/// decision); the flows of any other destination are folded into one row
/// per decision. A SUT dialling 20k names once printed 20k rows.
const ROWS_SHOWN: usize = 200;
/// Refused destinations that get a rules snippet, at most.
const REFUSED_SHOWN: usize = 20;
/// Folded destinations counted one by one, at most ("more than N" past it).
const FOLDED_COUNTED: usize = 100_000;

/// A request no rule answered: its service, one line for it, and the
/// rules that came closest.
#[derive(Debug, Clone)]
struct Miss {
    service: String,
    request: String,
    near: Vec<NearMiss>,
}

#[derive(Debug, Default, Clone)]
struct Row {
    flows: u64,
    bytes_up: u64,
    bytes_down: u64,
    errors: u64,
    protocol: &'static str,
}

impl Row {
    /// One line of the destination table.
    fn fmt_line(
        &self,
        f: &mut fmt::Formatter<'_>,
        width: usize,
        dest: &str,
        decision: &str,
        protocol: &str,
    ) -> fmt::Result {
        writeln!(
            f,
            "  {:<width$}  {:<8} {:<8} {:>6} {:>12} {:>12} {:>6}",
            dest, decision, protocol, self.flows, self.bytes_up, self.bytes_down, self.errors
        )
    }
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
    /// The first `MISSES_SHOWN` requests no rule answered.
    misses: Vec<Miss>,
    miss_count: u64,
    /// Flows to destinations past `ROWS_SHOWN`, by decision.
    folded: BTreeMap<&'static str, Row>,
    /// Hashes of the folded destinations, to count them.
    folded_destinations: std::collections::HashSet<u64>,
    /// Refused destinations past `REFUSED_SHOWN`.
    refused_more: std::collections::HashSet<u64>,
    /// What became of the events file's lines.
    events_file: super::WriterReport,
}

/// (protocol title, service, route label) of a route the rules declare.
pub type DeclaredRoute = (&'static str, String, String);

/// protocol title → its counts. Keyed by the title so the sections come
/// in a stable order.
pub type Counts = BTreeMap<&'static str, ProtocolCounts>;

/// One protocol's exchanges: service → operation → (calls, errors).
#[derive(Debug, Clone)]
pub struct ProtocolCounts {
    pub protocol: &'static ProtocolInfo,
    pub services: BTreeMap<String, PerOperation>,
}

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
    let services = &mut counts
        .entry(protocol.title)
        .or_insert_with(|| ProtocolCounts {
            protocol,
            services: BTreeMap::new(),
        })
        .services;
    if !services.contains_key(service) {
        services.insert(service.to_string(), BTreeMap::new());
    }
    let Some(per) = services.get_mut(service) else {
        return;
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
        let key = (dest, f.decision);
        let row = if self.rows.len() < ROWS_SHOWN || self.rows.contains_key(&key) {
            self.rows.entry(key.clone()).or_default()
        } else {
            if self.folded_destinations.len() < FOLDED_COUNTED {
                self.folded_destinations.insert(hash_of(&key.0));
            }
            self.folded.entry(f.decision).or_default()
        };
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
            let dest = key.0;
            if self.refused.len() < REFUSED_SHOWN || self.refused.contains_key(&dest) {
                self.refused
                    .entry(dest)
                    .or_insert((f.host.clone(), f.dst_port, f.protocol));
            } else if self.refused_more.len() < FOLDED_COUNTED {
                self.refused_more.insert(hash_of(&dest));
            }
        }
    }

    /// Notes a request no rule answered (the first few are kept whole).
    pub fn add_miss(&mut self, x: &ExchangeEvent) {
        self.miss_count += 1;
        if self.misses.len() < MISSES_SHOWN {
            self.misses.push(Miss {
                service: x.service.clone(),
                request: x.detail.describe(x),
                near: x.detail.near_misses().to_vec(),
            });
        }
    }

    pub fn set_dns_queries(&mut self, n: u64) {
        self.dns_queries = n;
    }

    pub fn set_events_file(&mut self, report: super::WriterReport) {
        self.events_file = report;
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
        // Nothing sent, or a ClientHello (HTTPS is mocked by an `http:`
        // service): the port tells.
        let by_port = matches!(protocol, "none" | "tls") && hint.ports.contains(&port);
        (by_bytes || by_port).then_some(hint.snippet)
    })
}

/// The service entry (a `- name:` list item) that would mock a refused
/// destination, or pass it: the mock first, since pasting `pass` sends
/// real traffic out. `ip` names the destination when no host name is
/// known. Shared by the exit summary and the flow inspector's "copy as
/// rule".
pub fn refused_rule(
    hints: &[&'static ProtocolInfo],
    host: Option<&str>,
    ip: &str,
    port: u16,
    protocol: &str,
) -> String {
    let (name, matcher) = match host {
        Some(h) => (
            service_name(h, port),
            format!("{{ host: {h}, port: {port} }}"),
        ),
        None => (
            service_name(ip, port),
            format!("{{ cidr: \"{ip}\", port: {port} }}"),
        ),
    };
    let action = match mock_hint(hints, port, protocol) {
        Some(hint) => format!(
            "  {hint}\n  # or, to reach the real destination (traffic leaves the jail): pass: {{}}"
        ),
        None => "  pass: {}   # reaches the real destination: traffic leaves the jail".into(),
    };
    format!("- name: {name}\n  match: {matcher}\n{action}\n")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "meshwrap summary ({} DNS queries)", self.dns_queries)?;
        let lost = &self.events_file;
        match &lost.error {
            Some(e) => writeln!(
                f,
                "  events file: writing failed ({e}); {} events not written",
                lost.dropped
            )?,
            None if lost.dropped > 0 => writeln!(
                f,
                "  events file: {} events not written: its reader fell behind \
                 (they were dropped rather than waited for)",
                lost.dropped
            )?,
            None => {}
        }
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
            row.fmt_line(f, width, dest, decision, row.protocol)?;
        }
        if !self.folded.is_empty() {
            let n = self.folded_destinations.len();
            let more = if n >= FOLDED_COUNTED {
                "more than "
            } else {
                ""
            };
            writeln!(
                f,
                "  and {more}{n} other destinations (every flow is in the events):"
            )?;
            for (decision, row) in &self.folded {
                row.fmt_line(f, width, "  (others)", decision, "-")?;
            }
        }
        self.fmt_per_route(f)?;
        self.fmt_per_service(f)?;
        self.fmt_misses(f)?;
        if !self.refused.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "  refused destinations; to mock them (or let them through), add to a rules file:"
            )?;
            writeln!(f, "  services:")?;
            for (dest, (host, port, protocol)) in &self.refused {
                let ip = dest.rsplit_once(':').map(|(a, _)| a).unwrap_or(dest);
                let ip = ip.trim_matches(|c| c == '[' || c == ']');
                let entry = refused_rule(&self.hints, host.as_deref(), ip, *port, protocol);
                for line in entry.lines() {
                    writeln!(f, "    {line}")?;
                }
            }
            if !self.refused_more.is_empty() {
                writeln!(
                    f,
                    "    # … and {} more refused destinations (in the events)",
                    self.refused_more.len()
                )?;
            }
        }
        Ok(())
    }
}

impl Summary {
    /// The requests no rule answered, each with the rules that nearly did.
    fn fmt_misses(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.misses.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(f, "  requests no rule answered ({}):", self.miss_count)?;
        for m in &self.misses {
            writeln!(f, "    {}: {}", m.service, m.request)?;
            for near in &m.near {
                writeln!(
                    f,
                    "      nearly `{}`: {}",
                    near.route,
                    near.differences.join("; ")
                )?;
            }
        }
        let rest = self.miss_count.saturating_sub(self.misses.len() as u64);
        if rest > 0 {
            writeln!(
                f,
                "    … and {rest} more (all in the events, and in GET /requests/unmatched of --admin)"
            )?;
        }
        Ok(())
    }

    /// The sections of protocols answered by routes: every declared route
    /// with its calls, then the calls no route answered.
    fn fmt_per_route(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut titles: Vec<&str> = self.routes.iter().map(|(t, _, _)| *t).collect();
        titles.extend(
            self.counts
                .iter()
                .filter(|(_, c)| c.protocol.summary == SummaryStyle::PerRoute)
                .map(|(t, _)| *t),
        );
        titles.sort_unstable();
        titles.dedup();
        let declared: std::collections::HashSet<(&str, &str, &str)> = self
            .routes
            .iter()
            .map(|(t, s, r)| (*t, s.as_str(), r.as_str()))
            .collect();
        for title in titles {
            writeln!(f)?;
            writeln!(f, "  {title} calls per route:")?;
            let services = self.counts.get(title).map(|c| &c.services);
            let calls = |svc: &str, op: &str| -> u64 {
                services
                    .and_then(|s| s.get(svc))
                    .and_then(|per| per.get(op))
                    .map_or(0, |c| c.0)
            };
            for (_, svc, route) in self.routes.iter().filter(|(t, _, _)| *t == title) {
                let n = calls(svc, route);
                let note = if n == 0 { "   <- never called" } else { "" };
                writeln!(f, "    {svc} / {route}: {n}{note}")?;
            }
            for (svc, per) in services.into_iter().flatten() {
                for (op, (n, _)) in per {
                    if !declared.contains(&(title, svc.as_str(), op.as_str())) {
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
        for (title, c) in &self.counts {
            if c.protocol.summary != SummaryStyle::PerService {
                continue;
            }
            let unit = c.protocol.unit;
            writeln!(f)?;
            writeln!(f, "  {title} {unit}s per service:")?;
            for (svc, per) in &c.services {
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
        }
        Ok(())
    }
}

/// A destination's hash, to count folded ones without keeping their text.
fn hash_of(dest: &str) -> u64 {
    use std::hash::Hasher;
    // Fixed keys: the same destination always gives the same hash.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(dest.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROUTED: ProtocolInfo = ProtocolInfo {
        key: "http",
        title: "HTTP",
        unit: "request",
        journal_key: "requests",
        summary: SummaryStyle::PerRoute,
        mock_hint: None,
    };
    static COMMANDS: ProtocolInfo = ProtocolInfo {
        key: "redis",
        title: "Redis",
        unit: "command",
        journal_key: "redis",
        summary: SummaryStyle::PerService,
        mock_hint: None,
    };

    #[test]
    fn sections_per_route_and_per_service() {
        let mut counts = Counts::new();
        for _ in 0..2 {
            count(&mut counts, &ROUTED, "pay", "charge", false);
        }
        count(
            &mut counts,
            &ROUTED,
            "pay",
            "(no route, answered by fallback)",
            false,
        );
        count(&mut counts, &COMMANDS, "cache", "GET", false);
        count(&mut counts, &COMMANDS, "cache", "SET", true);
        count(&mut counts, &COMMANDS, "cache", "GET", false);
        let declared = vec![
            ("HTTP", "pay".to_string(), "charge".to_string()),
            ("HTTP", "pay".to_string(), "refund".to_string()),
        ];
        let mut s = Summary::default();
        s.add_exchanges(&declared, &counts);
        /// Shows one section of the summary.
        struct Section<'a>(
            &'a Summary,
            fn(&Summary, &mut fmt::Formatter<'_>) -> fmt::Result,
        );
        impl fmt::Display for Section<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                (self.1)(self.0, f)
            }
        }
        let out = Section(&s, Summary::fmt_per_route).to_string();
        assert_eq!(
            out,
            "\n  HTTP calls per route:\n    pay / charge: 2\n    pay / refund: 0   <- never called\n    pay / (no route, answered by fallback): 1\n"
        );
        let out = Section(&s, Summary::fmt_per_service).to_string();
        assert_eq!(
            out,
            "\n  Redis commands per service:\n    cache: 3 commands, 1 error (GET 2, SET 1)\n"
        );
    }
}
