//! The query language MongoDB commands share, one file per part: filters,
//! updates, projections and sorts, expressions and aggregation pipelines.
//! This file holds what all of them build on: BSON comparison order and
//! arithmetic. Everything public is re-exported here, so callers keep
//! using `query::matches`, `query::aggregate` and so on.

mod expr;
mod filter;
mod paths;
mod pipeline;
mod projection;
mod update;

use std::cmp::Ordering;

use bson::Bson;

pub use expr::eval;
pub use filter::{elem_matches, matches, truthy};
pub use paths::{get_path, set_path, unset_path, values_at};
pub use pipeline::{aggregate, Source};
pub use projection::{project, sort_cmp};
pub use update::{apply_update, is_operator_update, upsert_seed};

pub type QResult<T> = Result<T, (i32, String)>;

fn bad(msg: impl Into<String>) -> (i32, String) {
    (2, msg.into())
}

/// The rank of a type in BSON comparison order.
fn rank(b: &Bson) -> u8 {
    match b {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::MaxKey => 13,
        _ => 12,
    }
}

pub fn num(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(i) => Some(*i as f64),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        Bson::Decimal128(_) => None,
        _ => None,
    }
}

/// Total order over BSON values (MongoDB's comparison order).
pub fn cmp(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let x = a.as_i64().or(a.as_i32().map(i64::from)).unwrap_or(0);
            let y = b.as_i64().or(b.as_i32().map(i64::from)).unwrap_or(0);
            x.cmp(&y)
        }
        _ if ra == 2 => num(a).unwrap_or(0.0).total_cmp(&num(b).unwrap_or(0.0)),
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        (Bson::Document(x), Bson::Document(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                let o = cmp(va, vb).then_with(|| ka.cmp(kb));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (va, vb) in x.iter().zip(y.iter()) {
                let o = cmp(va, vb);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::Binary(x), Bson::Binary(y)) => x.bytes.cmp(&y.bytes),
        _ => Ordering::Equal,
    }
}

pub fn eq(a: &Bson, b: &Bson) -> bool {
    rank(a) == rank(b) && cmp(a, b) == Ordering::Equal
}

fn arith(a: &Bson, b: &Bson, mul: bool) -> QResult<Bson> {
    Ok(match (a, b) {
        (Bson::Int32(x), Bson::Int32(y)) => {
            let r = if mul {
                i64::from(*x) * i64::from(*y)
            } else {
                i64::from(*x) + i64::from(*y)
            };
            i32::try_from(r).map(Bson::Int32).unwrap_or(Bson::Int64(r))
        }
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let x = num(a).unwrap_or(0.0) as i64;
            let y = num(b).unwrap_or(0.0) as i64;
            Bson::Int64(if mul {
                x.wrapping_mul(y)
            } else {
                x.wrapping_add(y)
            })
        }
        _ => {
            let (Some(x), Some(y)) = (num(a), num(b)) else {
                return Err((
                    14,
                    "Cannot apply $inc/$mul to a value of non-numeric type".into(),
                ));
            };
            Bson::Double(if mul { x * y } else { x + y })
        }
    })
}
