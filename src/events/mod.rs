//! Events: one JSON object per decision or exchange, written as JSON lines
//! to `--events FILE` and kept in memory for the exit summary.

mod exchange;
mod summary;
pub mod verify;
mod writer;

use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::model::FlowId;

pub use exchange::{ExchangeDetail, ExchangeEvent, MockHint, Outcome, ProtocolInfo, SummaryStyle};
pub use summary::{refused_rule, Summary};
use writer::LineWriter;
pub use writer::{WriterReport, DEFAULT_QUEUE_BYTES};

/// One flow, reported when it ends (or when it is refused).
#[derive(Debug, Clone, Serialize)]
pub struct FlowEvent {
    pub time: String,
    pub flow_id: FlowId,
    pub transport: &'static str,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub host: Option<String>,
    pub protocol: &'static str,
    pub decision: &'static str,
    pub reason: String,
    pub service: Option<String>,
    /// Where a passed flow was connected on the host side.
    pub upstream: Option<String>,
    /// Bytes the SUT sent.
    pub bytes_up: u64,
    /// Bytes the SUT received.
    pub bytes_down: u64,
    pub duration_ms: f64,
    pub error: Option<String>,
    /// For TLS flows: SNI, ALPN, version, and whether meshwrap terminated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::sniff::TlsInfo>,
}

/// One DNS question answered by the virtual resolver.
#[derive(Debug, Clone, Serialize)]
pub struct DnsEvent {
    pub time: String,
    pub name: String,
    pub qtype: String,
    pub answers: Vec<String>,
    /// Where the answer came from: fake, hosts, gateway, host-resolver,
    /// nxdomain, nodata, error.
    pub source: &'static str,
    pub transport: &'static str,
}

/// A route (or other rule) that almost matched a request, with what
/// differed (WireMock's near misses).
#[derive(Debug, Clone, Serialize)]
pub struct NearMiss {
    pub route: String,
    /// Each condition that failed, e.g. `header x-api-key: "k2" does not match "k1"`.
    pub differences: Vec<String>,
}

/// A rule reload (admin API or `--watch`), accepted or rejected.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEvent {
    pub time: String,
    /// `admin` or `watch`.
    pub source: &'static str,
    pub ok: bool,
    pub error: Option<String>,
    pub services: Vec<String>,
    pub generation: u64,
}

/// Something the user should know that is not a flow (for example a
/// classification failure or a setup warning).
#[derive(Debug, Clone, Serialize)]
pub struct NoticeEvent {
    pub time: String,
    pub flow_id: Option<FlowId>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Event {
    Flow(FlowEvent),
    Dns(DnsEvent),
    Reload(ReloadEvent),
    Notice(NoticeEvent),
    /// Serialized with its protocol's key as `kind`.
    #[serde(untagged)]
    Exchange(ExchangeEvent),
}

/// Something that wants to see every event as it is recorded (metrics).
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Event);
}

/// How many events the control API keeps for `GET /events`.
const RECENT_EVENTS: usize = 10_000;

/// How many HTTP requests the journal keeps (the oldest are dropped), so a
/// long-running sidecar does not grow without bound.
pub const JOURNAL_LIMIT: usize = 100_000;
/// And at most about this many bytes: the oldest go first past either.
pub const JOURNAL_BYTES: usize = 64 << 20;

/// About how many bytes an exchange holds in the journal.
fn journal_size(x: &ExchangeEvent) -> usize {
    x.detail.size()
        + x.time.len()
        + x.service.len()
        + x.operation.len()
        + x.error.as_ref().map_or(0, String::len)
        + 128
}
/// Finished flows kept for `GET /flows` and the flow inspector.
pub const FLOWS_KEPT: usize = 10_000;

/// Cuts `text` to at most `max` bytes (at a character boundary) and marks
/// the cut with `…`: how the journal keeps what a client sent bounded.
pub fn clip_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
}

/// RFC 3339 UTC timestamp for the `time` field.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[derive(Default)]
struct Inner {
    /// The events file (`--events`), written by a thread of its own.
    writer: Option<LineWriter>,
    /// Recent events for the control API (only once it is enabled); kept
    /// as values and serialized when asked for, to keep recording cheap.
    recent: Option<std::collections::VecDeque<Arc<Event>>>,
    follow: Option<tokio::sync::broadcast::Sender<Arc<str>>>,
    observers: Vec<Arc<dyn Observer>>,
    /// Off with `--no-journal`: exchanges are written but not kept.
    journal_off: bool,
    /// The last `FLOWS_KEPT` finished flows, for `GET /flows` (kept only
    /// once the control API is enabled).
    flows: std::collections::VecDeque<FlowEvent>,
    /// Every finished flow, counted per destination for the exit summary
    /// (a sidecar may run for weeks: flows are not all kept).
    flow_summary: summary::Summary,
    /// The exchange journal of every protocol, oldest first, at most
    /// `JOURNAL_LIMIT` entries.
    /// Shared so that a snapshot (`journal()`) costs a pointer per entry.
    journal: std::collections::VecDeque<Arc<ExchangeEvent>>,
    /// What `journal` holds, by `journal_size`.
    journal_bytes: usize,
    /// Every route of every service answered by routes, to list those
    /// never called.
    routes: Vec<summary::DeclaredRoute>,
    dns_count: u64,
    /// Exchanges per protocol, service and operation, for the summary;
    /// counted even when no event is built.
    counts: summary::Counts,
}

/// Shared, cheap to clone; every stage records through it.
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Arc<Mutex<Inner>>,
    /// Someone reads event details (a file or the control API), so
    /// high-rate responders should build full events, not just count.
    detail: Arc<std::sync::atomic::AtomicBool>,
    /// Off with `--no-redact`: secrets the SUT sends are recorded as sent.
    keep_secrets: Arc<std::sync::atomic::AtomicBool>,
}

impl EventSink {
    /// A sink that keeps events in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that also appends JSON lines to `path` (truncated first);
    /// at most `queue_bytes` of them wait for the writer.
    pub fn with_file(path: &Path, queue_bytes: usize) -> std::io::Result<Self> {
        Ok(Self::with_fd(File::create(path)?.into(), queue_bytes))
    }

    /// A sink that also writes JSON lines to an open descriptor: stdout
    /// (`--events -`, for `kubectl logs` of a sidecar), stderr or `fd:N`.
    /// Lines wait in the queue until `start_writer`.
    pub fn with_fd(fd: std::os::fd::OwnedFd, queue_bytes: usize) -> Self {
        let sink = Self::default();
        sink.lock().writer = Some(LineWriter::new(File::from(fd), queue_bytes));
        sink.detail
            .store(true, std::sync::atomic::Ordering::Relaxed);
        sink
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, event: Event) {
        let mut inner = self.lock();
        for o in &inner.observers {
            o.observe(&event);
        }
        // Serialize only for a reader that is there: the file, or a
        // follower of `GET /events?follow=1`.
        let followers = inner
            .follow
            .as_ref()
            .is_some_and(|tx| tx.receiver_count() > 0);
        let line: Option<Arc<str>> = (inner.writer.is_some() || followers)
            .then(|| serde_json::to_string(&event).ok().map(Arc::from))
            .flatten();
        if let (true, Some(tx), Some(line)) = (followers, &inner.follow, &line) {
            let _ = tx.send(line.clone());
        }
        if let (Some(w), Some(line)) = (inner.writer.as_ref(), line) {
            // Handed over, never waited for: a full queue drops the line.
            w.push(line);
        }
        if let Some(recent) = inner.recent.as_mut() {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(Arc::new(event.clone()));
        }
        match event {
            Event::Flow(f) => {
                inner.flow_summary.add_flow(&f);
                // Kept for `GET /flows` only: without the control API
                // nobody reads them (a sidecar's flows would pile up).
                if inner.recent.is_some() {
                    if inner.flows.len() == FLOWS_KEPT {
                        inner.flows.pop_front();
                    }
                    inner.flows.push_back(f);
                }
            }
            Event::Dns(_) => inner.dns_count += 1,
            Event::Exchange(x) => {
                if x.outcome == Outcome::Unmatched {
                    inner.flow_summary.add_miss(&x);
                }
                summary::count(
                    &mut inner.counts,
                    x.protocol,
                    &x.service,
                    &x.operation,
                    x.failed(),
                );
                if !inner.journal_off {
                    inner.journal_bytes += journal_size(&x);
                    inner.journal.push_back(Arc::new(x));
                    while inner.journal.len() > JOURNAL_LIMIT
                        || (inner.journal_bytes > JOURNAL_BYTES && inner.journal.len() > 1)
                    {
                        if let Some(old) = inner.journal.pop_front() {
                            inner.journal_bytes -= journal_size(&old);
                        }
                    }
                }
            }
            Event::Reload(_) => {}
            Event::Notice(_) => {}
        }
    }

    pub fn notice(&self, flow_id: Option<FlowId>, message: impl Into<String>) {
        self.record(Event::Notice(NoticeEvent {
            time: now_rfc3339(),
            flow_id,
            message: message.into(),
        }));
    }

    /// Declares a service's routes so the summary can list those never
    /// called.
    pub fn declare_routes(
        &self,
        protocol: &'static ProtocolInfo,
        service: &str,
        routes: impl IntoIterator<Item = String>,
    ) {
        let mut inner = self.lock();
        for r in routes {
            let entry = (protocol.title, service.to_string(), r);
            // A reload declares the same routes again.
            if !inner.routes.contains(&entry) {
                inner.routes.push(entry);
            }
        }
    }

    /// Keeps recent events and a live feed for the control API.
    pub fn enable_control(&self) {
        self.detail
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        inner.recent.get_or_insert_with(Default::default);
        if inner.follow.is_none() {
            inner.follow = Some(tokio::sync::broadcast::channel(4096).0);
        }
    }

    pub fn add_observer(&self, o: Arc<dyn Observer>) {
        self.lock().observers.push(o);
    }

    /// Whether responders replace the secrets the SUT sends (credentials,
    /// keys, passwords) before they record an exchange: yes, unless
    /// `--no-redact`.
    pub fn redacts(&self) -> bool {
        !self.keep_secrets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `--no-redact`: record secrets as the SUT sent them.
    pub fn keep_secrets(&self) {
        self.keep_secrets
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops keeping exchanges in memory (they are still written and
    /// observed); expectations then see no calls.
    pub fn disable_journal(&self) {
        self.lock().journal_off = true;
    }

    /// The recent events (JSON lines) and a receiver for the ones to come.
    pub fn subscribe(
        &self,
    ) -> (
        Vec<Arc<str>>,
        Option<tokio::sync::broadcast::Receiver<Arc<str>>>,
    ) {
        let inner = self.lock();
        let recent: Vec<Arc<str>> = inner
            .recent
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter_map(|e| serde_json::to_string(&**e).ok().map(Arc::from))
                    .collect()
            })
            .unwrap_or_default();
        (recent, inner.follow.as_ref().map(|tx| tx.subscribe()))
    }

    /// Recent flow events (newest last), for `GET /flows`.
    pub fn recent_flows(&self, limit: usize) -> Vec<FlowEvent> {
        let inner = self.lock();
        let n = inner.flows.len();
        inner
            .flows
            .range(n.saturating_sub(limit)..)
            .cloned()
            .collect()
    }

    /// Forgets the journal of one service, or of all.
    pub fn clear_journal(&self, service: Option<&str>) {
        let mut inner = self.lock();
        match service {
            Some(s) => inner.journal.retain(|e| e.service != s),
            None => inner.journal.clear(),
        }
        inner.journal_bytes = inner.journal.iter().map(|e| journal_size(e)).sum();
    }

    /// Whether anyone reads full events (an events file or the admin API),
    /// so that responders build them rather than only count.
    pub fn wants_detail(&self) -> bool {
        self.detail.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts an exchange without building its event (the fast path when
    /// nobody reads the details).
    pub fn count(
        &self,
        protocol: &'static ProtocolInfo,
        service: &str,
        operation: &str,
        failed: bool,
    ) {
        summary::count(
            &mut self.lock().counts,
            protocol,
            service,
            operation,
            failed,
        );
    }

    /// The exchanges recorded so far with full events, oldest first.
    pub fn journal(&self) -> Vec<Arc<ExchangeEvent>> {
        self.lock().journal.iter().cloned().collect()
    }

    /// Starts the thread that writes the events file. Not before the jail
    /// is forked: the fork must find no other thread (one could hold the
    /// allocator's lock the child needs).
    pub fn start_writer(&self) -> std::io::Result<()> {
        match self.lock().writer.as_mut() {
            Some(w) => w.start(),
            None => Ok(()),
        }
    }

    /// Lines of the events file dropped so far because its reader fell
    /// behind (or the file failed).
    pub fn events_dropped(&self) -> u64 {
        self.lock().writer.as_ref().map_or(0, |w| w.dropped())
    }

    /// Lets the events file's writer finish (for a bounded time) and builds
    /// the exit summary.
    pub fn finish(&self) -> Summary {
        // The drain happens outside the lock: flows still ending may record.
        let writer = self.lock().writer.take();
        let report = writer.map(LineWriter::close).unwrap_or_default();
        let inner = self.lock();
        let mut s = inner.flow_summary.clone();
        s.set_events_file(report);
        s.set_dns_queries(inner.dns_count);
        s.add_exchanges(&inner.routes, &inner.counts);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responders::kafka::KafkaDetail;

    fn exchange(value: usize) -> Event {
        Event::Exchange(ExchangeEvent {
            time: now_rfc3339(),
            flow_id: 1,
            service: "bus".into(),
            protocol: &crate::responders::kafka::INFO,
            operation: "produce".into(),
            outcome: Outcome::Ok,
            error: None,
            latency_ms: 0.0,
            detail: Arc::new(KafkaDetail {
                api: "produce",
                topic: Some("t".into()),
                partition: Some(0),
                offset: Some(0),
                key: None,
                value: Some("v".repeat(value)),
                error_code: 0,
            }),
        })
    }

    /// Past `JOURNAL_BYTES` the oldest exchanges go, whatever their count;
    /// a reset starts the count again.
    #[test]
    fn the_journal_is_bounded_by_bytes() {
        let sink = EventSink::new();
        for _ in 0..100 {
            sink.record(exchange(1 << 20));
        }
        let kept = sink.journal().len();
        assert!(
            (60..=64).contains(&kept),
            "{kept} of 100 exchanges of 1 MiB kept"
        );
        sink.clear_journal(None);
        for _ in 0..1000 {
            sink.record(exchange(10));
        }
        assert_eq!(sink.journal().len(), 1000);
    }
}
