//! The `redis:` part of a service: password, number of databases, seeded
//! keys (per database) and faults. Shapes serde cannot check alone (one
//! type per seeded key, TTL units, database numbers) are checked while
//! deserializing, so their errors carry the YAML position.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::common::OneOrMany;
use super::common::{FaultAction, FaultWhen, LatencySpec};
use super::timeouts::TimeoutsSpec;

/// A service's Redis responder.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRedis")]
pub struct RedisSpec {
    /// When set, clients must `AUTH` (or `HELLO ... AUTH`) with it first.
    pub password: Option<String>,
    /// How many databases `SELECT` accepts (Redis's default is 16).
    pub databases: usize,
    /// Keys present at start, per database.
    pub seed: BTreeMap<usize, BTreeMap<String, SeedValue>>,
    /// Faults, tried in order for every command; the first that fires wins.
    pub faults: Vec<RedisFault>,
    /// Idle, request and response limits (see `rules::timeouts`).
    pub timeouts: TimeoutsSpec,
}

impl Default for RedisSpec {
    fn default() -> Self {
        RedisSpec {
            password: None,
            databases: 16,
            seed: BTreeMap::new(),
            faults: Vec::new(),
            timeouts: TimeoutsSpec::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default)]
    password: Option<Scalar>,
    #[serde(default)]
    databases: Option<usize>,
    /// Database 0.
    #[serde(default)]
    seed: BTreeMap<String, SeedValue>,
    #[serde(default)]
    seed_db: BTreeMap<usize, BTreeMap<String, SeedValue>>,
    #[serde(default, alias = "fault")]
    faults: OneOrMany<RedisFault>,
    #[serde(default)]
    timeouts: TimeoutsSpec,
}

impl crate::rules::ProtocolRules for RedisSpec {
    const KEY: &'static str = "redis";
    const TITLE: &'static str = "Redis";
    const EXPECT_FIELDS: &'static [&'static str] = &["command", "key"];

    /// `command` (any case) and a glob on the command's first `key`.
    fn expect(
        &self,
        e: &crate::rules::ExpectSpec,
    ) -> Result<
        std::sync::Arc<dyn crate::rules::expect::ExpectMatcher>,
        crate::rules::expect::ExpectError,
    > {
        let command = e.str_field("command")?;
        if let Some(c) = command
            .as_deref()
            .filter(|c| !super::redis_commands::is_command(c))
        {
            return Err(crate::rules::expect::ExpectError {
                field: "command".into(),
                message: format!(
                    "`{c}` is not a Redis command meshwrap answers{}",
                    super::suggest::did_you_mean(
                        c,
                        super::redis_commands::COMMANDS.iter().copied()
                    )
                ),
            });
        }
        Ok(std::sync::Arc::new(crate::rules::expect::CommandMatcher {
            command: command.map(|c| c.to_ascii_uppercase()),
            key: e.str_field("key")?,
            key_field: "key",
        }))
    }
}

impl TryFrom<RawRedis> for RedisSpec {
    type Error = String;
    fn try_from(r: RawRedis) -> Result<Self, String> {
        let databases = r.databases.unwrap_or(16);
        if !(1..=1024).contains(&databases) {
            return Err(format!(
                "`databases: {databases}` must be between 1 and 1024"
            ));
        }
        let mut seed = r.seed_db;
        if let Some(bad) = seed.keys().find(|&&db| db >= databases) {
            return Err(format!(
                "`seed_db` names database {bad} but there are only {databases} (0-{})",
                databases - 1
            ));
        }
        if !r.seed.is_empty() {
            if seed.contains_key(&0) {
                return Err("database 0 is seeded twice: use `seed` or `seed_db: {0: ...}`".into());
            }
            seed.insert(0, r.seed);
        }
        Ok(RedisSpec {
            password: r.password.map(|p| p.0),
            databases,
            seed,
            faults: r.faults.0,
            timeouts: r.timeouts,
        })
    }
}

/// A string written as any YAML scalar (`3`, `true`, `"x"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(format_double(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The data of one seeded key.
#[derive(Debug, Clone, PartialEq)]
pub enum SeedData {
    String(String),
    Hash(Vec<(String, String)>),
    List(Vec<String>),
    Set(Vec<String>),
    ZSet(Vec<(String, f64)>),
}

/// One seeded key: its data and, optionally, a time to live from start.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedValue {
    pub data: SeedData,
    pub ttl: Option<Duration>,
}

/// The type named by `type:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SeedType {
    String,
    Hash,
    List,
    Set,
    Zset,
}

/// A `value:` of any shape, typed by `type:` or by its shape.
#[derive(Debug, Clone)]
enum AnyValue {
    Scalar(String),
    Seq(Vec<String>),
    Map(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar, a list or a map")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyValue, E> {
                Ok(AnyValue::Scalar(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AnyValue, E> {
                Ok(AnyValue::Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AnyValue, E> {
                Ok(AnyValue::Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AnyValue, E> {
                Ok(AnyValue::Scalar(format_double(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AnyValue, E> {
                Ok(AnyValue::Scalar(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyValue, A::Error> {
                let mut out = Vec::new();
                while let Some(Scalar(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(AnyValue::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
                let mut out = Vec::new();
                while let Some((Scalar(k), Scalar(v))) = map.next_entry()? {
                    out.push((k, v));
                }
                Ok(AnyValue::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    #[serde(default, rename = "type")]
    kind: Option<SeedType>,
    #[serde(default)]
    value: Option<AnyValue>,
    #[serde(default)]
    string: Option<Scalar>,
    #[serde(default)]
    hash: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    list: Option<Vec<Scalar>>,
    #[serde(default)]
    set: Option<Vec<Scalar>>,
    #[serde(default)]
    zset: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    ttl: Option<TtlSpec>,
}

impl TryFrom<RawSeed> for SeedValue {
    type Error = String;
    fn try_from(r: RawSeed) -> Result<Self, String> {
        let scalars = |v: Vec<Scalar>| v.into_iter().map(|s| s.0).collect::<Vec<_>>();
        let mut found: Vec<SeedData> = Vec::new();
        if let Some(s) = r.string {
            found.push(SeedData::String(s.0));
        }
        if let Some(h) = r.hash {
            found.push(SeedData::Hash(
                h.into_iter().map(|(k, v)| (k, v.0)).collect(),
            ));
        }
        if let Some(l) = r.list {
            found.push(SeedData::List(scalars(l)));
        }
        if let Some(s) = r.set {
            found.push(SeedData::Set(scalars(s)));
        }
        if let Some(z) = r.zset {
            found.push(SeedData::ZSet(z.into_iter().collect()));
        }
        if let Some(v) = r.value {
            found.push(typed_value(r.kind, v)?);
        } else if r.kind.is_some() {
            return Err("`type` needs a `value`".into());
        }
        let data = match found.len() {
            1 => found.remove(0),
            0 => {
                return Err(
                    "a seeded key needs one of `value`, `string`, `hash`, `list`, `set`, `zset`"
                        .into(),
                )
            }
            _ => return Err("a seeded key has one type: keep one of `value`, `string`, `hash`, `list`, `set`, `zset`".into()),
        };
        Ok(SeedValue {
            data,
            ttl: r.ttl.map(|t| t.0),
        })
    }
}

fn typed_value(kind: Option<SeedType>, v: AnyValue) -> Result<SeedData, String> {
    Ok(match (kind, v) {
        (None | Some(SeedType::String), AnyValue::Scalar(s)) => SeedData::String(s),
        (None | Some(SeedType::List), AnyValue::Seq(l)) => SeedData::List(l),
        (Some(SeedType::Set), AnyValue::Seq(l)) => SeedData::Set(l),
        (None | Some(SeedType::Hash), AnyValue::Map(m)) => SeedData::Hash(m),
        (Some(SeedType::Zset), AnyValue::Map(m)) => SeedData::ZSet(
            m.into_iter()
                .map(|(k, s)| match s.parse::<f64>() {
                    Ok(f) if !f.is_nan() => Ok((k, f)),
                    _ => Err(format!("score `{s}` of member `{k}` is not a number")),
                })
                .collect::<Result<_, _>>()?,
        ),
        (Some(t), _) => {
            let want = match t {
                SeedType::String => "a scalar",
                SeedType::List | SeedType::Set => "a list",
                SeedType::Hash => "a map of field: value",
                SeedType::Zset => "a map of member: score",
            };
            return Err(format!("`type: {t:?}` needs {want} as `value`").to_lowercase());
        }
    })
}

impl<'de> Deserialize<'de> for SeedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SeedValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a list, or a map such as `{ hash: {...} }`, `{ list: [...] }`, `{ set: [...] }`, `{ zset: {member: score} }`, `{ value: ..., ttl: 10s }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SeedValue, E> {
                Ok(plain(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SeedValue, E> {
                Ok(plain(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SeedValue, E> {
                Ok(plain(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SeedValue, E> {
                Ok(plain(format_double(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SeedValue, E> {
                Ok(plain(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeedValue, A::Error> {
                let mut out = Vec::new();
                while let Some(Scalar(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(SeedValue {
                    data: SeedData::List(out),
                    ttl: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SeedValue, A::Error> {
                let raw = RawSeed::deserialize(de::value::MapAccessDeserializer::new(map))?;
                SeedValue::try_from(raw).map_err(de::Error::custom)
            }
        }
        fn plain(s: String) -> SeedValue {
            SeedValue {
                data: SeedData::String(s),
                ttl: None,
            }
        }
        d.deserialize_any(V)
    }
}

/// A time to live: `500ms`, `10s`, `5m`, `2h`, `7d`, or a bare number of
/// seconds (as `EXPIRE` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlSpec(pub Duration);

pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a TTL like `500ms`, `10s`, `5m`, `2h` or `7d`"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 10.0 * 365.0 * 86400.0 {
        return Err(format!("TTL `{s}` must be above 0 and at most 10 years"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for TtlSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Scalar(s) = Scalar::deserialize(d)?;
        parse_ttl(&s).map(TtlSpec).map_err(de::Error::custom)
    }
}

/// For the listed commands (all when empty) and keys matching `key`, do
/// one thing.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawFault")]
pub struct RedisFault {
    pub when: FaultWhen,
    /// Upper-case command names; empty means every command.
    pub commands: Vec<String>,
    /// A glob on the command's first key.
    pub key: Option<String>,
    pub kind: RedisFaultKind,
}

/// Redis's own fault answer is an error line (`LOADING ...`, `READONLY ...`).
pub type RedisFaultKind = FaultAction<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    times: Option<u64>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default, alias = "command")]
    commands: OneOrMany<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    latency: Option<LatencySpec>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    reset: Option<bool>,
    #[serde(default)]
    hang: Option<bool>,
}

impl TryFrom<RawFault> for RedisFault {
    type Error = String;
    fn try_from(r: RawFault) -> Result<Self, String> {
        let when = FaultWhen::new(r.probability, r.times, r.after)?;
        let error = match r.error {
            Some(e) => {
                let e = e.trim().trim_start_matches('-').to_string();
                if e.is_empty() || e.contains(['\r', '\n']) {
                    return Err(
                        "`error` is one line such as `LOADING Redis is loading the dataset in memory`"
                            .into(),
                    );
                }
                Some(e)
            }
            None => None,
        };
        let kind = FaultAction::one(
            r.latency,
            error,
            r.reset == Some(true),
            r.hang == Some(true),
            "`latency`, `error`, `reset`, `hang`",
        )?;
        Ok(RedisFault {
            when,
            commands: r
                .commands
                .0
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .collect(),
            key: r.key,
            kind,
        })
    }
}

/// A double as Redis prints it: `inf`, `-inf`, integers without a
/// fraction, otherwise the shortest text that reads back the same. Seeded
/// numbers become the text Redis would store, and the Redis responder
/// encodes its doubles with it too.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    let s = format!("{d}");
    if s.len() > 24 {
        format!("{d:e}").replace('e', "e+").replace("e+-", "e-")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<RedisSpec, String> {
        serde_norway::from_str(y).map_err(|e| e.to_string())
    }

    #[test]
    fn seed_shapes() {
        let s = parse(
            "seed:\n  a: x\n  n: 3\n  h: { hash: { f: 1 } }\n  l: [a, b]\n  s: { set: [a] }\n  z: { zset: { m: 1.5 } }\n  t: { value: v, ttl: 10s }\n  th: { type: hash, value: { f: v } }\nseed_db:\n  2: { k: v }\n",
        )
        .unwrap();
        let db0 = &s.seed[&0];
        assert_eq!(db0["n"].data, SeedData::String("3".into()));
        assert_eq!(db0["l"].data, SeedData::List(vec!["a".into(), "b".into()]));
        assert_eq!(db0["t"].ttl, Some(Duration::from_secs(10)));
        assert!(matches!(db0["th"].data, SeedData::Hash(_)));
        assert!(s.seed.contains_key(&2));
    }

    #[test]
    fn seed_errors() {
        assert!(parse("seed: { a: { hash: {}, list: [] } }")
            .unwrap_err()
            .contains("one type"));
        assert!(parse("seed_db: { 16: { a: b } }")
            .unwrap_err()
            .contains("only 16"));
        assert!(parse("seed: { a: { value: x, ttl: 5 parsecs } }").is_err());
        assert!(parse("sed: {}").unwrap_err().contains("unknown field"));
        assert!(parse("faults: [ { error: LOADING x, reset: true } ]").is_err());
        let f = parse("faults: [ { error: \"-READONLY no\", commands: [set] } ]").unwrap();
        assert_eq!(f.faults[0].commands, vec!["SET"]);
        assert_eq!(
            f.faults[0].kind,
            RedisFaultKind::Error("READONLY no".into())
        );
    }

    #[test]
    fn doubles_like_redis() {
        assert_eq!(format_double(3.0), "3");
    }

    #[test]
    fn service_and_expectations() {
        let set = crate::rules::RuleSet::from_text(
            "services:\n  - name: c\n    match: { port: 6379 }\n    redis: { seed: { a: b } }\nexpect:\n  - { service: c, command: set, key: \"s:*\", times: 1 }\n",
        )
        .unwrap();
        assert_eq!(set.services[0].action.label(), "redis");
        assert_eq!(
            set.expects[0]
                .matcher
                .as_ref()
                .map(|m| m.target())
                .as_deref(),
            Some(" / SET key s:*")
        );
        let err = crate::rules::RuleSet::from_text(
            "services:\n  - name: h\n    match: { port: 80 }\n    http: {}\nexpect:\n  - { service: h, command: GET }\n",
        )
        .unwrap_err().to_string();
        assert!(err.contains("apply to Redis and MongoDB services"), "{err}");
        let err = crate::rules::RuleSet::from_text(
            "services:\n  - name: c\n    match: { port: 1 }\n    redis: { databses: 2 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(":4:") && err.contains("services[0].redis"),
            "{err}"
        );
    }
}
