//! The table printed on stderr when the SUT exits.

use std::collections::BTreeMap;
use std::fmt;

use super::{FlowEvent, HttpEvent};

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
    /// (service, route) → calls, in declaration order; then calls that no
    /// route answered, by how they were answered.
    routes: Vec<((String, String), u64)>,
    other_calls: BTreeMap<(String, &'static str), u64>,
    redis: RedisCounts,
    mongo: RedisCounts,
    kafka: RedisCounts,
}

/// service → command → (calls, errors).
pub type RedisCounts = BTreeMap<String, BTreeMap<String, (u64, u64)>>;

/// Adds one Redis command to the counts (allocation-free when both names
/// are already known, which is every call after the first).
pub fn count_redis(counts: &mut RedisCounts, service: &str, command: &str, error: bool) {
    if !counts.contains_key(service) {
        counts.insert(service.to_string(), BTreeMap::new());
    }
    let Some(per) = counts.get_mut(service) else {
        return;
    };
    if !per.contains_key(command) {
        per.insert(command.to_string(), (0, 0));
    }
    if let Some(c) = per.get_mut(command) {
        c.0 += 1;
        c.1 += u64::from(error);
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

    /// Counts HTTP calls per declared route.
    pub fn add_routes(
        &mut self,
        declared: &[(String, String)],
        calls: &std::collections::VecDeque<HttpEvent>,
    ) {
        for (svc, route) in declared {
            let n = calls
                .iter()
                .filter(|c| &c.service == svc && c.route.as_deref() == Some(route.as_str()))
                .count() as u64;
            self.routes.push(((svc.clone(), route.clone()), n));
        }
        for c in calls.iter().filter(|c| c.route.is_none()) {
            *self
                .other_calls
                .entry((c.service.clone(), c.answered_by))
                .or_default() += 1;
        }
    }

    /// Adds the Redis command counts per service.
    pub fn add_redis(&mut self, counts: &RedisCounts) {
        self.redis = counts.clone();
    }

    /// Adds the MongoDB command counts per service.
    pub fn add_mongo(&mut self, counts: &RedisCounts) {
        self.mongo = counts.clone();
    }

    /// Adds the Kafka request counts per service.
    pub fn add_kafka(&mut self, counts: &RedisCounts) {
        self.kafka = counts.clone();
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
/// probably speaks.
fn mock_hint(port: u16, protocol: &str) -> Option<&'static str> {
    match (protocol, port) {
        ("http1" | "http2", _) | ("none", 80 | 8000 | 8080 | 8888) => {
            Some("http: { routes: [ { when: { path: / }, respond: { status: 200 } } ] }")
        }
        ("resp", _) | ("none", 6379) => Some("redis: { seed: {} }"),
        ("mongo", _) | ("none", 27017) => Some("mongo: { collections: {} }"),
        _ => None,
    }
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
        if !self.routes.is_empty() || !self.other_calls.is_empty() {
            writeln!(f)?;
            writeln!(f, "  HTTP calls per route:")?;
            for ((svc, route), n) in &self.routes {
                let note = if *n == 0 { "   <- never called" } else { "" };
                writeln!(f, "    {svc} / {route}: {n}{note}")?;
            }
            for ((svc, by), n) in &self.other_calls {
                writeln!(f, "    {svc} / (no route, answered by {by}): {n}")?;
            }
        }
        let per_service = [
            ("Redis", "command", &self.redis),
            ("MongoDB", "command", &self.mongo),
            ("Kafka", "request", &self.kafka),
        ];
        for (title, unit, counts) in per_service {
            if counts.is_empty() {
                continue;
            }
            writeln!(f)?;
            writeln!(f, "  {title} {unit}s per service:")?;
            for (svc, per) in counts {
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
                match mock_hint(*port, protocol) {
                    Some(hint) => writeln!(f, "      pass: {{}}            # or mock it: {hint}")?,
                    None => writeln!(f, "      pass: {{}}")?,
                }
            }
        }
        Ok(())
    }
}
