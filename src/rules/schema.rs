//! The YAML schema of a rules file. Every struct denies unknown fields so a
//! typo is an error with a position, never a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::glob::HostGlob;

/// What happens to a flow that no service claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Connect to the real destination and copy bytes both ways.
    Pass,
    /// Reset TCP connections at once and drop UDP datagrams.
    Refuse,
}

/// One rules file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Overrides `--unmatched` when set (the last file that sets it wins).
    #[serde(default)]
    pub unmatched: Option<Unmatched>,
    /// Name → address. The name resolves inside the jail (to a fake IP
    /// that meshwrap remembers) and its flows are passed to this address
    /// from the host side; a loopback address means the host's loopback.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    /// Services in order; the first that matches a flow claims it.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Calls the SUT must (or must not) make, checked when it exits.
    #[serde(default)]
    pub expect: Vec<ExpectSpec>,
}

/// An expectation on how often a service (or one of its routes) is called.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawExpect")]
pub struct ExpectSpec {
    pub service: String,
    /// A route name (its `name:`, or `METHOD /path` when it has none).
    pub route: Option<String>,
    /// A Redis command name (any case), for Redis services.
    pub command: Option<String>,
    /// A glob on the Redis command's first key (`session:*`).
    pub key: Option<String>,
    /// A Kafka topic: counts the records produced to it.
    pub topic: Option<String>,
    /// Kafka: only records whose value contains this (a JSON subset for
    /// an object, a substring for a string).
    pub value_contains: Option<serde_json::Value>,
    pub count: CountSpec,
}

/// How many calls are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSpec {
    Exactly(u64),
    AtLeast(u64),
    AtMost(u64),
    Between(u64, u64),
}

impl CountSpec {
    pub fn holds(&self, n: u64) -> bool {
        match *self {
            CountSpec::Exactly(x) => n == x,
            CountSpec::AtLeast(x) => n >= x,
            CountSpec::AtMost(x) => n <= x,
            CountSpec::Between(a, b) => (a..=b).contains(&n),
        }
    }
}

impl std::fmt::Display for CountSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let times = |n: u64| if n == 1 { "time" } else { "times" };
        match *self {
            CountSpec::Exactly(0) => write!(f, "never"),
            CountSpec::Exactly(n) => write!(f, "exactly {n} {}", times(n)),
            CountSpec::AtLeast(n) => write!(f, "at least {n} {}", times(n)),
            CountSpec::AtMost(n) => write!(f, "at most {n} {}", times(n)),
            CountSpec::Between(a, b) => write!(f, "between {a} and {b} times"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    service: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    key: Option<String>,
    /// A MongoDB namespace (`app.orders`, a glob), for MongoDB services.
    #[serde(default)]
    collection: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    value_contains: Option<serde_json::Value>,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    at_least: Option<u64>,
    #[serde(default)]
    at_most: Option<u64>,
    #[serde(default)]
    never: Option<bool>,
}

impl TryFrom<RawExpect> for ExpectSpec {
    type Error = String;
    fn try_from(r: RawExpect) -> Result<Self, String> {
        let count = match (r.times, r.at_least, r.at_most, r.never) {
            (None, None, None, None) => CountSpec::AtLeast(1),
            (None, None, None, Some(true)) => CountSpec::Exactly(0),
            (Some(n), None, None, None) => CountSpec::Exactly(n),
            (None, Some(a), None, None) => CountSpec::AtLeast(a),
            (None, None, Some(b), None) => CountSpec::AtMost(b),
            (None, Some(a), Some(b), None) if a <= b => CountSpec::Between(a, b),
            (None, Some(_), Some(_), None) => return Err("`at_least` is above `at_most`".into()),
            _ => {
                return Err(
                    "give `times`, `never: true`, or `at_least` and/or `at_most` (not a mix)"
                        .into(),
                )
            }
        };
        if r.key.is_some() && r.collection.is_some() {
            return Err(
                "`key` is for Redis services, `collection` for MongoDB ones: not both".into(),
            );
        }
        let key = r.key.or(r.collection);
        if r.route.is_some() && (r.command.is_some() || key.is_some()) {
            return Err(
                "`route` is for HTTP services, `command`/`key` for Redis ones: not both".into(),
            );
        }
        if (r.topic.is_some() || r.value_contains.is_some())
            && (r.route.is_some() || r.command.is_some() || key.is_some())
        {
            return Err("`topic`/`value_contains` are for Kafka services: not with `route`, `command` or `key`".into());
        }
        Ok(ExpectSpec {
            service: r.service,
            topic: r.topic,
            value_contains: r.value_contains,
            route: r.route,
            command: r.command.map(|c| c.to_ascii_uppercase()),
            key,
            count,
        })
    }
}

/// A service: which flows it claims and what answers them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    /// Let claimed flows through to their real destination.
    #[serde(default, deserialize_with = "present")]
    pub pass: Option<EmptySpec>,
    /// Reset claimed flows.
    #[serde(default, deserialize_with = "present")]
    pub refuse: Option<EmptySpec>,
    /// Answer claimed flows with the HTTP responder (`http:` alone is an
    /// HTTP service with no routes).
    #[serde(default, deserialize_with = "present_http")]
    pub http: Option<super::http::HttpSpec>,
    /// Answer claimed flows with the Redis responder.
    #[serde(default)]
    pub redis: Option<super::redis::RedisSpec>,
    /// Answer claimed flows with the MongoDB responder.
    #[serde(default)]
    pub mongo: Option<super::mongo::MongoSpec>,
    /// Answer claimed flows with the Kafka responder (`kafka:` alone is a
    /// broker with no topics that creates them on first use).
    #[serde(default, deserialize_with = "present_kafka")]
    pub kafka: Option<super::kafka::KafkaSpec>,
}

fn present_kafka<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<super::kafka::KafkaSpec>, D::Error> {
    Option::<super::kafka::KafkaSpec>::deserialize(d).map(|k| Some(k.unwrap_or_default()))
}

/// A key that is present counts even with no value (`pass:` alone).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EmptySpec>, D::Error> {
    EmptySpec::deserialize(d).map(Some)
}

fn present_http<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<super::http::HttpSpec>, D::Error> {
    Option::<super::http::HttpSpec>::deserialize(d).map(|h| Some(h.unwrap_or_default()))
}

/// An action that takes no settings yet: written `pass: {}` or `pass: true`.
#[derive(Debug, Clone, Copy)]
pub struct EmptySpec;

impl<'de> Deserialize<'de> for EmptySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EmptySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`{}` or `true`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EmptySpec, E> {
                if v {
                    Ok(EmptySpec)
                } else {
                    Err(E::custom("`false` is not allowed here: leave the key out"))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<EmptySpec, E> {
                Ok(EmptySpec)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<EmptySpec, A::Error> {
                if let Some(k) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "unknown field `{k}`: this action takes no settings"
                    )));
                }
                Ok(EmptySpec)
            }
        }
        d.deserialize_any(V)
    }
}

/// Which flows a service claims. Every condition given must hold; at least
/// one must be given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Hostname globs (`api.pay.test`, `*.pay.test`), compared with the
    /// name the SUT asked meshwrap's resolver for (the decision is taken
    /// when the connection opens, before any byte is read).
    #[serde(default)]
    pub host: OneOrMany<HostGlob>,
    /// Destination ports: `443`, `[80, 443]`, `"8000-8100"`.
    #[serde(default)]
    pub port: OneOrMany<PortRange>,
    /// Destination addresses: `10.1.2.3`, `10.0.0.0/8`, `fd00::/8`.
    #[serde(default)]
    pub cidr: OneOrMany<Cidr>,
}

/// A value written either alone or as a list.
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                self.visit_str(&v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(de::value::U64Deserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(de::value::I64Deserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::deserialize(de::value::BoolDeserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::deserialize(de::value::F64Deserializer::new(v)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An inclusive port range; a single port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port (1-65535) or a range like \"8000-8100\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(PortRange { first: p, last: p }),
                    _ => Err(E::custom(format!("port {v} is out of range 1-65535"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                if v < 0 {
                    return Err(E::custom(format!("port {v} is out of range 1-65535")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                let parse = |s: &str| -> Result<u16, E> {
                    match s.trim().parse::<u16>() {
                        Ok(p) if p > 0 => Ok(p),
                        _ => Err(E::custom(format!("`{s}` is not a port (1-65535) in `{v}`"))),
                    }
                };
                let (first, last) = match v.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let p = parse(v)?;
                        (p, p)
                    }
                };
                if first > last {
                    return Err(E::custom(format!("port range `{v}` is empty")));
                }
                Ok(PortRange { first, last })
            }
        }
        d.deserialize_any(V)
    }
}

/// An address prefix such as `10.0.0.0/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("prefix length in `{s}` must be 0-{max}")),
            },
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}
