//! Prometheus metrics, derived from the event stream (one place sees every
//! flow, DNS answer and request) plus the stack's packet counters read at
//! scrape time. Label values are bounded: decisions, protocols, services
//! from the rules, status classes, fault kinds; never hostnames or paths.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::events::{Event, Observer};
use crate::stack::StackHandle;

pub struct Metrics {
    registry: Registry,
    flows: IntCounterVec,
    bytes: IntCounterVec,
    duration: HistogramVec,
    unmatched: IntCounterVec,
    dns: IntCounterVec,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub expectations_failed: IntCounter,
    pub reloads: IntCounterVec,
    active: IntGauge,
    packets: IntCounterVec,
    drops: IntCounter,
    events_dropped: IntCounter,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn single_counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    reg.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let reg = Registry::new();
        let secs = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let m = Metrics {
            flows: counter(
                &reg,
                "meshwrap_flows_total",
                "Finished or refused flows.",
                &["decision", "protocol", "service", "transport"],
            ),
            bytes: counter(
                &reg,
                "meshwrap_flow_bytes_total",
                "Bytes carried by finished flows.",
                &["direction", "decision"],
            ),
            duration: histogram(
                &reg,
                "meshwrap_flow_duration_seconds",
                "Flow lifetimes.",
                &["decision"],
                secs.clone(),
            ),
            unmatched: counter(
                &reg,
                "meshwrap_unmatched_flows_total",
                "Flows no rule claimed, by what `unmatched` did.",
                &["decision"],
            ),
            dns: counter(
                &reg,
                "meshwrap_dns_queries_total",
                "DNS questions answered, by where the answer came from.",
                &["outcome"],
            ),
            requests: counter(
                &reg,
                "meshwrap_responder_requests_total",
                "Requests answered by responders.",
                &["service", "protocol", "outcome"],
            ),
            latency: histogram(
                &reg,
                "meshwrap_responder_latency_seconds",
                "Time from request to response.",
                &["service", "protocol"],
                secs,
            ),
            expectations_failed: single_counter(
                &reg,
                "meshwrap_expectations_failed_total",
                "Expectations found unmet (at exit or by /verify).",
            ),
            reloads: counter(
                &reg,
                "meshwrap_rule_reloads_total",
                "Rule reloads, by result.",
                &["result"],
            ),
            active: {
                let g = IntGauge::new("meshwrap_flows_active", "TCP flows open in the stack now.")
                    .expect("valid metric");
                reg.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            packets: counter(
                &reg,
                "meshwrap_tun_packets_total",
                "Packets through the TUN device.",
                &["direction"],
            ),
            drops: single_counter(
                &reg,
                "meshwrap_tun_dropped_packets_total",
                "Packets from the jail that were dropped.",
            ),
            events_dropped: single_counter(
                &reg,
                "meshwrap_events_dropped_total",
                "Lines of the events file dropped because its reader fell behind.",
            ),
            registry: reg,
        };
        for r in ["ok", "error"] {
            m.reloads.with_label_values(&[r]);
        }
        for d in ["in", "out"] {
            m.packets.with_label_values(&[d]);
        }
        Arc::new(m)
    }

    /// Prometheus text format, with the stack's counters and the events
    /// file's dropped lines brought up to date.
    pub fn render(&self, stack: Option<&StackHandle>, events_dropped: u64) -> String {
        let sync = |c: &IntCounter, now: u64| {
            let cur = c.get();
            if now > cur {
                c.inc_by(now - cur);
            }
        };
        sync(&self.events_dropped, events_dropped);
        if let Some(s) = stack {
            let st = s.stats();
            sync(
                &self.packets.with_label_values(&["in"]),
                st.packets_in.load(Ordering::Relaxed),
            );
            sync(
                &self.packets.with_label_values(&["out"]),
                st.packets_out.load(Ordering::Relaxed),
            );
            sync(&self.drops, st.packets_dropped.load(Ordering::Relaxed));
            self.active
                .set(st.flows_active.load(Ordering::Relaxed) as i64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Observer for Metrics {
    fn observe(&self, event: &Event) {
        match event {
            Event::Flow(f) => {
                let service = f.service.as_deref().unwrap_or("");
                self.flows
                    .with_label_values(&[f.decision, f.protocol, service, f.transport])
                    .inc();
                self.bytes
                    .with_label_values(&["up", f.decision])
                    .inc_by(f.bytes_up);
                self.bytes
                    .with_label_values(&["down", f.decision])
                    .inc_by(f.bytes_down);
                self.duration
                    .with_label_values(&[f.decision])
                    .observe(f.duration_ms / 1000.0);
                if f.reason.starts_with("unmatched") {
                    self.unmatched.with_label_values(&[f.decision]).inc();
                }
            }
            Event::Dns(d) => self.dns.with_label_values(&[d.source]).inc(),
            Event::Exchange(x) => {
                // The responder bounds the outcome label (a fixed table of
                // operations, `unknown` for the rest).
                self.requests
                    .with_label_values(&[&x.service, x.protocol.key, &x.detail.metric_outcome(x)])
                    .inc();
                self.latency
                    .with_label_values(&[&x.service, x.protocol.key])
                    .observe(x.latency_ms / 1000.0);
            }
            Event::Reload(r) => {
                self.reloads
                    .with_label_values(&[if r.ok { "ok" } else { "error" }])
                    .inc();
            }
            Event::Notice(_) => {}
        }
    }
}
