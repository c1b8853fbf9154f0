//! The `kafka:` part of a service: topics (with partition counts and seeded
//! messages) and whether unknown topics are created on first use.

use std::collections::BTreeMap;

use serde::Deserialize;

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
}

impl Default for KafkaSpec {
    fn default() -> Self {
        KafkaSpec {
            topics: BTreeMap::new(),
            auto_create_topics: true,
            default_partitions: 1,
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

impl KafkaSpec {
    /// Checks what serde cannot: partition counts and seeded partitions.
    pub fn check(&self) -> Result<(), String> {
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
