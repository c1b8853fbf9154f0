//! Dotted paths into documents, for reading (with MongoDB's fan-out over
//! arrays) and for writing (creating documents and padding arrays on the
//! way), as filters, updates and pipeline stages all address fields so.

use bson::{Bson, Document};

use super::{bad, QResult};

/// Values at a dotted path, traversing arrays. `None` entries stand for
/// a missing field.
pub fn values_at(doc: &Document, path: &str) -> Vec<Option<Bson>> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    match doc.get(*first) {
        Some(v) => walk(v, rest, &mut out),
        None => out.push(None),
    }
    out
}

fn walk(b: &Bson, parts: &[&str], out: &mut Vec<Option<Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(Some(b.clone()));
        return;
    };
    match b {
        Bson::Document(d) => match d.get(*first) {
            Some(v) => walk(v, rest, out),
            None => out.push(None),
        },
        Bson::Array(a) => {
            if let Ok(i) = first.parse::<usize>() {
                if let Some(v) = a.get(i) {
                    walk(v, rest, out);
                    return;
                }
            }
            let before = out.len();
            for v in a {
                if matches!(v, Bson::Document(_)) {
                    walk(v, parts, out);
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

/// The first value at a dotted path (no array fan-out beyond the first).
pub fn get_path(doc: &Document, path: &str) -> Option<Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            Bson::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur.clone())
}

/// Sets a dotted path, creating documents on the way.
pub fn set_path(doc: &mut Document, path: &str, value: Bson) -> QResult<()> {
    let parts: Vec<&str> = path.split('.').collect();
    set_in_doc(doc, &parts, value)
}

fn set_in_doc(doc: &mut Document, parts: &[&str], value: Bson) -> QResult<()> {
    let (first, rest) = parts.split_first().ok_or_else(|| bad("empty path"))?;
    if rest.is_empty() {
        doc.insert(*first, value);
        return Ok(());
    }
    if !doc.contains_key(*first) {
        doc.insert(*first, Document::new());
    }
    let child = doc.get_mut(*first).ok_or_else(|| bad("path"))?;
    set_in_bson(child, rest, value, first)
}

fn set_in_bson(b: &mut Bson, parts: &[&str], value: Bson, name: &str) -> QResult<()> {
    match b {
        Bson::Document(d) => set_in_doc(d, parts, value),
        Bson::Array(a) => {
            let (first, rest) = parts.split_first().ok_or_else(|| bad("empty path"))?;
            if *first == "$[]" {
                for e in a.iter_mut() {
                    if rest.is_empty() {
                        *e = value.clone();
                    } else {
                        set_in_bson(e, rest, value.clone(), first)?;
                    }
                }
                return Ok(());
            }
            let i: usize = first.parse().map_err(|_| {
                (
                    28,
                    format!("Cannot create field '{first}' in element {{{name}: [...]}}"),
                )
            })?;
            if i > 1_000_000 {
                return Err((2, format!("can't pad array to index {i}")));
            }
            while a.len() <= i {
                a.push(Bson::Null);
            }
            if rest.is_empty() {
                a[i] = value;
                Ok(())
            } else {
                if matches!(a[i], Bson::Null) {
                    a[i] = Bson::Document(Document::new());
                }
                set_in_bson(&mut a[i], rest, value, first)
            }
        }
        other => Err((
            28,
            format!(
                "Cannot create field '{}' in element {{{name}: {other}}}",
                parts[0]
            ),
        )),
    }
}

pub fn unset_path(doc: &mut Document, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    fn go(b: &mut Document, parts: &[&str]) {
        if parts.len() == 1 {
            b.remove(parts[0]);
            return;
        }
        match b.get_mut(parts[0]) {
            Some(Bson::Document(d)) => go(d, &parts[1..]),
            Some(Bson::Array(a)) => {
                if let Ok(i) = parts[1].parse::<usize>() {
                    if parts.len() == 2 {
                        if i < a.len() {
                            a[i] = Bson::Null;
                        }
                    } else if let Some(Bson::Document(d)) = a.get_mut(i) {
                        go(d, &parts[2..]);
                    }
                }
            }
            _ => {}
        }
    }
    go(doc, &parts);
}
