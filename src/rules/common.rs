//! What every protocol's rules share: a value written alone or as a list,
//! durations (`250ms`, `2s`), latency ranges, and a fault's probability.
//! Each `rules/<protocol>.rs` builds its faults from these and adds only
//! its own error kinds.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

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

/// `250ms`, `2s`, `1.5s`, `1m`, or a bare number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like `250ms`, `2s` or `1m`"))?;
    let secs = match unit.trim() {
        "" | "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "us" | "µs" => n / 1_000_000.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (use ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => parse_duration(&n.to_string()),
            Raw::Str(s) => parse_duration(&s),
        }
        .map(DurationSpec)
        .map_err(de::Error::custom)
    }
}

/// A fixed latency, or a range written `100ms-300ms` or `{min, max}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySpec {
    pub min: Duration,
    pub max: Duration,
}

impl<'de> Deserialize<'de> for LatencySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
            Range {
                min: DurationSpec,
                max: DurationSpec,
            },
        }
        let (min, max) = match Raw::deserialize(d)? {
            Raw::Num(n) => {
                let d = parse_duration(&n.to_string()).map_err(de::Error::custom)?;
                (d, d)
            }
            Raw::Str(s) => match s.split_once('-') {
                Some((a, b)) => (
                    parse_duration(a).map_err(de::Error::custom)?,
                    parse_duration(b).map_err(de::Error::custom)?,
                ),
                None => {
                    let d = parse_duration(&s).map_err(de::Error::custom)?;
                    (d, d)
                }
            },
            Raw::Range { min, max } => (min.0, max.0),
        };
        if min > max {
            return Err(de::Error::custom("latency range: `min` is above `max`"));
        }
        Ok(LatencySpec { min, max })
    }
}

/// A fault's `probability` (default 1), checked to lie in 0..=1; shared
/// by every protocol's fault parser.
pub(crate) fn fault_probability(p: Option<f64>) -> Result<f64, String> {
    let probability = p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&probability) {
        return Err(format!("probability {probability} is not between 0 and 1"));
    }
    Ok(probability)
}

/// When a fault fires, the same for every protocol: with `probability`,
/// from the request after the first `after` that match, at most `times`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultWhen {
    pub probability: f64,
    pub times: Option<u64>,
    pub after: u64,
}

impl FaultWhen {
    pub fn new(
        probability: Option<f64>,
        times: Option<u64>,
        after: Option<u64>,
    ) -> Result<FaultWhen, String> {
        Ok(FaultWhen {
            probability: fault_probability(probability)?,
            times,
            after: after.unwrap_or(0),
        })
    }
}

/// What a fault does: the actions every protocol has, and `E`, the
/// protocol's own error answer (a Redis error line, a MongoDB code, a
/// Kafka error code).
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction<E> {
    /// Wait, then answer normally.
    Latency(LatencySpec),
    /// Answer with the protocol's error instead.
    Error(E),
    /// Reset (close) the connection instead of answering.
    Reset,
    /// Never answer; the client's own timeout ends it.
    Hang,
}

impl<E> FaultAction<E> {
    pub fn label(&self) -> &'static str {
        match self {
            FaultAction::Latency(_) => "latency",
            FaultAction::Error(_) => "error",
            FaultAction::Reset => "reset",
            FaultAction::Hang => "hang",
        }
    }

    /// The one action a fault's fields ask for; `error` is already parsed
    /// by the protocol, `reset` may be written under the protocol's own
    /// name (`names` lists them for the message).
    pub fn one(
        latency: Option<LatencySpec>,
        error: Option<E>,
        reset: bool,
        hang: bool,
        names: &str,
    ) -> Result<Self, String> {
        let mut kinds = Vec::new();
        kinds.extend(latency.map(FaultAction::Latency));
        kinds.extend(error.map(FaultAction::Error));
        if reset {
            kinds.push(FaultAction::Reset);
        }
        if hang {
            kinds.push(FaultAction::Hang);
        }
        match kinds.len() {
            1 => Ok(kinds.remove(0)),
            0 => Err(format!("a fault needs one of {names}")),
            _ => Err("a fault does one thing: split it into several faults".into()),
        }
    }
}
