//! The YAML schema of a rules file. Every struct denies unknown fields so a
//! typo is an error with a position, never a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::common::OneOrMany;
use super::expect::ExpectSpec;
use super::glob::HostGlob;
use super::mock::MockSpec;
use crate::protocols::{parse_spec, SERVICE_FIELDS};

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
    /// What this file's services get for settings they leave out.
    #[serde(default)]
    pub defaults: super::defaults::DefaultsSpec,
}

/// A service: which flows it claims and what answers them. The action
/// is `pass`, `refuse`, or the key of a mocked protocol (`http`, `redis`…),
/// whose value is parsed by that protocol's spec (see `crate::protocols`).
#[derive(Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub matcher: MatchSpec,
    /// Let claimed flows through to their real destination.
    pub pass: Option<EmptySpec>,
    /// Reset claimed flows.
    pub refuse: Option<EmptySpec>,
    /// The mocked protocols' specs, by key (more than one is an error the
    /// loader reports).
    pub mocks: Vec<(&'static str, Box<dyn MockSpec>)>,
}

/// A key of a service, checked while it is read so that an unknown one
/// is reported at its own line and column.
enum ServiceKey {
    Name,
    Match,
    Pass,
    Refuse,
    Mock(&'static str),
}

impl<'de> Deserialize<'de> for ServiceKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ServiceKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a service field")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ServiceKey, E> {
                Ok(match v {
                    "name" => ServiceKey::Name,
                    "match" => ServiceKey::Match,
                    "pass" => ServiceKey::Pass,
                    "refuse" => ServiceKey::Refuse,
                    _ => match SERVICE_FIELDS.iter().find(|k| **k == v) {
                        Some(k) => ServiceKey::Mock(k),
                        None => return Err(E::unknown_field(v, SERVICE_FIELDS)),
                    },
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for ServiceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ServiceSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a service (`name`, `match` and an action)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ServiceSpec, A::Error> {
                let mut name = None;
                let mut matcher = None;
                let mut pass = None;
                let mut refuse = None;
                let mut mocks: Vec<(&'static str, Box<dyn MockSpec>)> = Vec::new();
                while let Some(key) = map.next_key::<ServiceKey>()? {
                    match key {
                        ServiceKey::Name if name.is_some() => return Err(dup("name")),
                        ServiceKey::Name => name = Some(map.next_value()?),
                        ServiceKey::Match if matcher.is_some() => return Err(dup("match")),
                        ServiceKey::Match => matcher = Some(map.next_value()?),
                        ServiceKey::Pass if pass.is_some() => return Err(dup("pass")),
                        ServiceKey::Pass => pass = Some(map.next_value::<EmptySpec>()?),
                        ServiceKey::Refuse if refuse.is_some() => return Err(dup("refuse")),
                        ServiceKey::Refuse => refuse = Some(map.next_value::<EmptySpec>()?),
                        ServiceKey::Mock(k) if mocks.iter().any(|(m, _)| *m == k) => {
                            return Err(dup(k))
                        }
                        ServiceKey::Mock(k) => mocks.push((k, parse_spec(k, &mut map)?)),
                    }
                }
                Ok(ServiceSpec {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    matcher: matcher.ok_or_else(|| de::Error::missing_field("match"))?,
                    pass,
                    refuse,
                    mocks,
                })
            }
        }
        d.deserialize_map(V)
    }
}

fn dup<E: de::Error>(field: &'static str) -> E {
    E::duplicate_field(field)
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
                        _ => Err(E::custom(match super::messages::port_by_name(s) {
                            Some(n) => format!(
                                "`{s}` is a service name, not a port: write its number ({n})"
                            ),
                            None if v.contains('-') => {
                                format!("`{s}` is not a port (1-65535) in the range `{v}`")
                            }
                            None => format!(
                                "`{s}` is not a port: write a number (1-65535) or a range like 8000-8100"
                            ),
                        })),
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
