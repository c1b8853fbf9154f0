//! One event for every request/response exchange a responder answers,
//! whatever its protocol: the fields that the summary, `expect:`, the
//! metrics and the journal read are common, and the protocol's own
//! detail rides along in one nested value that only its responder builds.
//!
//! The JSON line keeps the shape its readers know: `kind` is the
//! protocol's key (`http`, `redis`, …) and the detail's fields sit beside
//! the common ones.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::model::FlowId;

/// What the events, the summary and the control API need to know of a
/// protocol; each responder has one `static` of it.
#[derive(Debug)]
pub struct ProtocolInfo {
    /// The rules key and the events' `kind` (`redis`).
    pub key: &'static str,
    /// The name a person reads (`Redis`, `MongoDB`).
    pub title: &'static str,
    /// What one exchange is called in the summary (`command`, `request`).
    pub unit: &'static str,
    /// Where `GET /requests` lists its exchanges (`requests` for HTTP,
    /// the protocol key for the others).
    pub journal_key: &'static str,
    /// How the exit summary shows the exchanges.
    pub summary: SummaryStyle,
    /// The rule snippet the summary offers for a refused destination
    /// that probably speaks this protocol.
    pub mock_hint: Option<MockHint>,
}

/// A snippet that would mock a refused destination, and how to tell that
/// the destination speaks the protocol.
#[derive(Debug)]
pub struct MockHint {
    /// Sniffer labels (`resp`) that mean this protocol.
    pub sniffed: &'static [&'static str],
    /// Well-known ports, for a client that sent nothing before the refusal.
    pub ports: &'static [u16],
    /// The action to paste (`redis: { seed: {} }`).
    pub snippet: &'static str,
}

/// The two shapes of the summary's per-service section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryStyle {
    /// One line per declared route (never-called ones marked), then one
    /// per other way of answering: protocols answered by rules.
    PerRoute,
    /// One line per service with totals and the most used operations:
    /// protocols with a command set of their own.
    PerService,
}

/// How an exchange ended, as far as the SUT is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// The SUT got an error answer (or none).
    Error,
    /// No rule answered it: a fallback or a pass to the real service.
    Unmatched,
    /// An error reply that is a normal step of the protocol, which the
    /// client asks for and goes on from (Kafka's MEMBER_ID_REQUIRED on a
    /// first JoinGroup, a Redis client probing an optional command): no
    /// error of the run, so the summary does not count it as one.
    Handshake,
}

/// The protocol's own part of an exchange (a Redis key and reply type, a
/// Kafka topic and offset, an HTTP status and headers).
pub trait ExchangeDetail: erased_serde::Serialize + fmt::Debug + Send + Sync {
    /// A field that `expect:` entries match on, by name.
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;
    /// One line for the list of calls under a failed expectation.
    fn describe(&self, ex: &ExchangeEvent) -> String;
    /// The `outcome` label of `meshwrap_requests_total`; bounded by the
    /// responder (a fixed table of operations, `unknown` for the rest).
    fn metric_outcome(&self, ex: &ExchangeEvent) -> String;
    /// About how many bytes the detail holds, for the journal's bound in
    /// bytes (what a responder keeps of an exchange is clipped, but how
    /// much that is differs by protocol).
    fn size(&self) -> usize;
    /// For an exchange no rule answered: the rules that came closest, and
    /// what differed (the exit summary shows them).
    fn near_misses(&self) -> &[super::NearMiss] {
        &[]
    }
}

erased_serde::serialize_trait_object!(ExchangeDetail);

/// One exchange answered by a mocked service.
#[derive(Debug, Clone)]
pub struct ExchangeEvent {
    pub time: String,
    pub flow_id: FlowId,
    pub service: String,
    pub protocol: &'static ProtocolInfo,
    /// What the summary counts it as: the Redis command, the Kafka API,
    /// the HTTP route that answered.
    pub operation: String,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub detail: Arc<dyn ExchangeDetail>,
}

impl ExchangeEvent {
    /// The outcome counted as an error in the summary.
    pub fn failed(&self) -> bool {
        self.outcome == Outcome::Error
    }
}

/// The exchange as the JSON line has it.
#[derive(Serialize)]
struct Wire<'a> {
    kind: &'static str,
    time: &'a str,
    flow_id: FlowId,
    service: &'a str,
    protocol: &'static str,
    operation: &'a str,
    outcome: Outcome,
    error: &'a Option<String>,
    latency_ms: f64,
    #[serde(flatten)]
    detail: &'a dyn ExchangeDetail,
}

impl Serialize for ExchangeEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            kind: self.protocol.key,
            time: &self.time,
            flow_id: self.flow_id,
            service: &self.service,
            protocol: self.protocol.key,
            operation: &self.operation,
            outcome: self.outcome,
            error: &self.error,
            latency_ms: self.latency_ms,
            detail: &*self.detail,
        }
        .serialize(s)
    }
}

impl crate::rules::expect::Call for ExchangeEvent {
    fn operation(&self) -> &str {
        &self.operation
    }
    fn failed(&self) -> bool {
        ExchangeEvent::failed(self)
    }
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        self.detail.field(name)
    }
}
