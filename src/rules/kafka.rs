//! The `kafka:` part of a service: topics (with partition counts and seeded
//! messages) and whether unknown topics are created on first use.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::OneOrMany;
use super::common::{FaultAction, FaultWhen, LatencySpec};
use super::timeouts::TimeoutsSpec;

/// A service's Kafka responder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Topics present at start.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicSpec>,
    /// Create a topic named in Metadata or Produce that does not exist yet
    /// (Kafka's `auto.create.topics.enable`).
    #[serde(default = "yes")]
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic.
    #[serde(default = "one")]
    pub default_partitions: i32,
    /// Faults, tried in order for every request; the first that fires wins.
    #[serde(default, alias = "fault")]
    pub faults: Vec<KafkaFault>,
    /// Brokers the service pretends to be (absent: one broker, id 1, at
    /// the dialled address). With `brokers: N`, ids 0..N-1 are advertised
    /// at `b<id>.<dialled host>`, partition p is led by broker p % N and
    /// each broker answers only for the partitions it leads, so clients
    /// exercise their per-broker routing and metadata refreshes.
    #[serde(default)]
    pub brokers: Option<i32>,
    /// Idle, request and response limits (see `rules::timeouts`).
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
}

impl Default for KafkaSpec {
    fn default() -> Self {
        KafkaSpec {
            topics: BTreeMap::new(),
            auto_create_topics: true,
            default_partitions: 1,
            faults: Vec::new(),
            brokers: None,
            timeouts: TimeoutsSpec::default(),
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

/// One topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    #[serde(default = "one")]
    pub partitions: i32,
    /// Messages present at start, so a fresh consumer reads them from the
    /// earliest offset.
    #[serde(default)]
    pub messages: Vec<SeedMessage>,
    /// Topic configs reported by DescribeConfigs (`cleanup.policy: compact`),
    /// over the defaults.
    #[serde(default)]
    pub configs: BTreeMap<String, ConfigValue>,
}

/// A config value: a string, number or boolean, reported as its text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ConfigValue::Str(s) => f.write_str(s),
            ConfigValue::Int(n) => write!(f, "{n}"),
            ConfigValue::Float(n) => write!(f, "{n}"),
            ConfigValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A seeded message: the value is a string, or any other YAML value sent as
/// its JSON text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMessage {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Milliseconds since the epoch (default: the time the run starts).
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub partition: Option<i32>,
}

impl SeedMessage {
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        match &self.value {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
            Some(v) => Some(v.to_string().into_bytes()),
        }
    }
}

/// The APIs a fault may name (snake case, as in events).
pub const FAULT_APIS: &[&str] = &[
    "produce",
    "fetch",
    "list_offsets",
    "metadata",
    "offset_commit",
    "offset_fetch",
    "find_coordinator",
    "join_group",
    "heartbeat",
    "leave_group",
    "sync_group",
    "describe_groups",
    "list_groups",
    "api_versions",
    "init_producer_id",
    "create_topics",
    "delete_topics",
    "create_partitions",
    "describe_configs",
    "describe_cluster",
    "offset_for_leader_epoch",
    "delete_groups",
];

/// Topic configs every topic reports unless its `configs:` say otherwise.
pub const DEFAULT_TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("max.message.bytes", "1048588"),
    ("min.insync.replicas", "1"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
];

/// Kafka error names accepted by `error:` (upper case) and their codes.
pub const ERROR_NAMES: &[(&str, i16)] = &[
    ("UNKNOWN_SERVER_ERROR", -1),
    ("CORRUPT_MESSAGE", 2),
    ("UNKNOWN_TOPIC_OR_PARTITION", 3),
    ("LEADER_NOT_AVAILABLE", 5),
    ("NOT_LEADER_OR_FOLLOWER", 6),
    ("NOT_LEADER_FOR_PARTITION", 6),
    ("REQUEST_TIMED_OUT", 7),
    ("BROKER_NOT_AVAILABLE", 8),
    ("MESSAGE_TOO_LARGE", 10),
    ("NETWORK_EXCEPTION", 13),
    ("COORDINATOR_LOAD_IN_PROGRESS", 14),
    ("COORDINATOR_NOT_AVAILABLE", 15),
    ("NOT_COORDINATOR", 16),
    ("RECORD_LIST_TOO_LARGE", 18),
    ("NOT_ENOUGH_REPLICAS", 19),
    ("NOT_ENOUGH_REPLICAS_AFTER_APPEND", 20),
    ("TOPIC_AUTHORIZATION_FAILED", 29),
    ("CLUSTER_AUTHORIZATION_FAILED", 31),
    ("POLICY_VIOLATION", 44),
    ("KAFKA_STORAGE_ERROR", 56),
    ("THROTTLING_QUOTA_EXCEEDED", 89),
];

/// A Kafka error code from a name (`NOT_LEADER_OR_FOLLOWER`, any case) or a
/// number.
pub fn error_code(s: &str) -> Option<i16> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i16>() {
        return Some(n);
    }
    let up = s.to_ascii_uppercase().replace(['-', ' '], "_");
    ERROR_NAMES.iter().find(|(n, _)| *n == up).map(|(_, c)| *c)
}

/// A fault: for the `apis` listed (all when absent), when its `FaultWhen`
/// admits the request (probability, after, times), do one thing.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawFault")]
pub struct KafkaFault {
    pub when: FaultWhen,
    /// Snake-case API names; empty means every API.
    pub apis: Vec<String>,
    pub kind: KafkaFaultKind,
}

/// Kafka's own fault answer: this error code in each named API's own
/// response shape, doing nothing else. `Reset` closes the connection
/// (written `disconnect:`, as Kafka clients call it).
pub type KafkaFaultKind = FaultAction<i16>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default, alias = "api")]
    apis: OneOrMany<String>,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    latency: Option<LatencySpec>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, alias = "reset")]
    disconnect: Option<bool>,
    #[serde(default)]
    hang: Option<bool>,
}

impl TryFrom<RawFault> for KafkaFault {
    type Error = String;
    fn try_from(r: RawFault) -> Result<Self, String> {
        let when = FaultWhen::new(r.probability, r.times, r.after)?;
        let mut apis = Vec::new();
        for a in r.apis.0 {
            let a = a.trim().to_ascii_lowercase().replace('-', "_");
            if !FAULT_APIS.contains(&a.as_str()) {
                return Err(format!(
                    "unknown Kafka API `{a}` (one of {})",
                    FAULT_APIS.join(", ")
                ));
            }
            apis.push(a);
        }
        let error = match r.error {
            Some(e) => {
                let text = match &e {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let code = error_code(&text).ok_or_else(|| {
                    format!("unknown Kafka error `{text}`: use a name such as NOT_LEADER_OR_FOLLOWER or a code")
                })?;
                // The error goes in the named APIs' responses; one for every
                // API (ApiVersions and Metadata included) would stop every
                // client at its first request, so the APIs are named.
                if apis.is_empty() {
                    return Err(
                        "an `error` fault needs `api:` (one API or a list): the error goes in that API's response"
                            .into(),
                    );
                }
                Some(code)
            }
            None => None,
        };
        let kind = FaultAction::one(
            r.latency,
            error,
            r.disconnect == Some(true),
            r.hang == Some(true),
            "`latency`, `error`, `disconnect`, `hang`",
        )?;
        Ok(KafkaFault { when, apis, kind })
    }
}

impl crate::rules::ProtocolRules for KafkaSpec {
    const KEY: &'static str = "kafka";
    const TITLE: &'static str = "Kafka";
    const EXPECT_FIELDS: &'static [&'static str] = &["topic", "value_contains"];

    fn prepare(&mut self, _: &crate::rules::LoadCtx<'_>) -> Result<(), String> {
        self.check()
    }

    fn claimed_base<'a>(&self, host: &'a str) -> Option<&'a str> {
        self.broker_host(host).map(|(_, base)| base)
    }

    /// Counts the records produced (without error) to a `topic` whose
    /// value contains `value_contains`.
    fn expect(
        &self,
        e: &crate::rules::ExpectSpec,
    ) -> Result<
        std::sync::Arc<dyn crate::rules::expect::ExpectMatcher>,
        crate::rules::expect::ExpectError,
    > {
        let topic = e.str_field("topic")?;
        // With auto-create on, a topic the rules do not declare may well
        // be made by the SUT; with it off, no record can reach it.
        if let Some(t) = topic.as_deref() {
            if !self.auto_create_topics && !self.topics.contains_key(t) {
                return Err(crate::rules::expect::ExpectError {
                    field: "topic".into(),
                    message: format!(
                        "topic `{t}` is not declared and `auto_create_topics` is off, so no \
                         record can reach it{}",
                        super::suggest::did_you_mean(t, self.topics.keys().map(String::as_str))
                    ),
                });
            }
        }
        Ok(std::sync::Arc::new(ProducedRecords {
            topic,
            value_contains: e.fields.get("value_contains").cloned(),
        }))
    }
}

/// The `expect:` matcher of a Kafka service: produced records.
#[derive(Debug)]
struct ProducedRecords {
    topic: Option<String>,
    value_contains: Option<serde_json::Value>,
}

impl crate::rules::expect::ExpectMatcher for ProducedRecords {
    fn relevant(&self, call: &dyn crate::rules::expect::Call) -> bool {
        call.operation() == "produce" && !call.failed()
    }
    fn matches(&self, call: &dyn crate::rules::expect::Call) -> bool {
        let topic_ok = self
            .topic
            .as_deref()
            .is_none_or(|t| call.field("topic").as_deref() == Some(t));
        let value_ok = match &self.value_contains {
            None => true,
            Some(want) => call
                .field("value")
                .is_some_and(|v| crate::rules::expect::value_contains(&v, want)),
        };
        topic_ok && value_ok
    }
    fn target(&self) -> String {
        let mut t = String::new();
        if let Some(topic) = &self.topic {
            t.push_str(&format!(" / topic {topic}"));
        }
        if let Some(v) = &self.value_contains {
            t.push_str(&format!(" value contains {v}"));
        }
        t
    }
}

/// Most brokers a service may advertise.
pub const MAX_BROKERS: i32 = 64;

impl KafkaSpec {
    /// With `brokers: N`, splits `b<id>.<rest>` (id < N) into the broker id
    /// and the service's own host, so a broker's name is claimed by the
    /// service that claims `<rest>` and a connection knows which broker it
    /// reached. `None` for any other name, or without `brokers:`.
    pub fn broker_host<'a>(&self, host: &'a str) -> Option<(i32, &'a str)> {
        let n = self.brokers?;
        let (label, rest) = host.split_once('.')?;
        let digits = label
            .strip_prefix('b')
            .or_else(|| label.strip_prefix('B'))?;
        // `b01` is not `b1`: one spelling per broker.
        if digits.is_empty()
            || !digits.bytes().all(|c| c.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
            || rest.is_empty()
        {
            return None;
        }
        let id: i32 = digits.parse().ok()?;
        (id < n).then_some((id, rest))
    }

    /// Checks what serde cannot: partition counts and seeded partitions.
    pub fn check(&self) -> Result<(), String> {
        if let Some(n) = self.brokers {
            if !(1..=MAX_BROKERS).contains(&n) {
                return Err(format!(
                    "`brokers: {n}` must be between 1 and {MAX_BROKERS}"
                ));
            }
        }
        if !(1..=1000).contains(&self.default_partitions) {
            return Err("`default_partitions` must be between 1 and 1000".into());
        }
        for (name, t) in &self.topics {
            if name.is_empty() || name.len() > 249 {
                return Err(format!("topic name `{name}` must have 1 to 249 characters"));
            }
            if !(1..=1000).contains(&t.partitions) {
                return Err(format!(
                    "topic `{name}`: `partitions: {}` must be between 1 and 1000",
                    t.partitions
                ));
            }
            for (i, m) in t.messages.iter().enumerate() {
                if let Some(p) = m.partition {
                    if p < 0 || p >= t.partitions {
                        return Err(format!(
                            "topic `{name}` message {i}: partition {p} does not exist (0-{})",
                            t.partitions - 1
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<KafkaSpec, String> {
        serde_norway::from_str(y).map_err(|e| e.to_string())
    }

    #[test]
    fn faults() {
        let s = parse(
            "faults:\n  - { api: produce, error: NOT_LEADER_OR_FOLLOWER, times: 2 }\n  - { latency: 5ms-10ms, probability: 0.5 }\n  - { api: [fetch], disconnect: true }\n",
        )
        .unwrap();
        assert_eq!(s.faults[0].kind, KafkaFaultKind::Error(6));
        assert_eq!(s.faults[0].when.times, Some(2));
        assert!(s.faults[1].apis.is_empty());
        assert_eq!(s.faults[2].kind, KafkaFaultKind::Reset);
        assert!(parse("faults: [ { api: produce, error: NOPE } ]").is_err());
        assert!(parse("faults: [ { error: 6 } ]").is_err());
        let s = parse("faults: [ { api: [metadata, offset_commit], error: 29 } ]").unwrap();
        assert_eq!(s.faults[0].kind, KafkaFaultKind::Error(29));
        assert_eq!(s.faults[0].apis, ["metadata", "offset_commit"]);
        assert!(parse("faults: [ { api: prodce, disconnect: true } ]").is_err());
        assert!(parse("faults: [ { api: produce, disconnect: true, latency: 1ms } ]").is_err());
        assert_eq!(error_code("not-leader-or-follower"), Some(6));
    }

    #[test]
    fn broker_hosts() {
        let s = parse("brokers: 3").unwrap();
        assert_eq!(s.broker_host("b0.kafka.test"), Some((0, "kafka.test")));
        assert_eq!(s.broker_host("b2.kafka.test"), Some((2, "kafka.test")));
        assert_eq!(s.broker_host("b3.kafka.test"), None);
        assert_eq!(s.broker_host("b01.kafka.test"), None);
        assert_eq!(s.broker_host("bx.kafka.test"), None);
        assert_eq!(s.broker_host("kafka.test"), None);
        assert_eq!(s.broker_host("b1."), None);
        assert_eq!(parse("{}").unwrap().broker_host("b0.kafka.test"), None);
        assert!(parse("brokers: 0").unwrap().check().is_err());
        assert!(parse("brokers: 65").unwrap().check().is_err());
        assert!(parse("brokers: 64").unwrap().check().is_ok());
    }

    #[test]
    fn a_cluster_service_claims_its_broker_names() {
        let text = "services:\n  - name: bus\n    match: { host: kafka.test, port: 9092 }\n    kafka: { brokers: 2 }\n";
        let set = super::super::RuleSet::from_text(text).unwrap();
        let dst = "198.18.0.9:9092".parse().unwrap();
        let claims = |host: &str| {
            set.claim(super::super::FlowKey {
                host: Some(host),
                dst,
            })
            .is_some()
        };
        assert!(claims("kafka.test") && claims("b0.kafka.test") && claims("b1.kafka.test"));
        assert!(!claims("b2.kafka.test") && !claims("b1.other.test"));
        assert!(set.claims_host("b1.kafka.test") && !set.claims_host("b2.kafka.test"));
    }
}
