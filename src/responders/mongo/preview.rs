//! What the journal shows of a command and its reply: each document as
//! relaxed extended JSON, cut down first (depth, fields, array elements and
//! string lengths) so that an insert of a thousand large documents costs the
//! journal what a small one does. Credentials (SCRAM payloads, `pwd`) are
//! replaced unless `--no-redact` is given.

use bson::{Bson, Document};

/// Nesting shown; deeper documents and arrays become `"…"`.
const MAX_DEPTH: usize = 4;
/// Fields per document and elements per array.
const MAX_ITEMS: usize = 20;
/// Characters per string; bytes per binary.
const MAX_STRING: usize = 200;
/// Characters of the whole JSON text.
const MAX_TEXT: usize = 4096;

const REDACTED: &str = "<redacted>";

/// Fields whose values are credentials.
fn is_secret(key: &str) -> bool {
    matches!(key, "payload" | "pwd" | "password")
}

/// `doc` as relaxed extended JSON, cut down to a bounded size.
pub fn document(doc: &Document, redact: bool) -> String {
    let small = Bson::Document(cut_doc(doc, 0, redact));
    let mut text = small.into_relaxed_extjson().to_string();
    crate::events::clip_text(&mut text, MAX_TEXT);
    text
}

fn cut_doc(doc: &Document, depth: usize, redact: bool) -> Document {
    let mut out = Document::new();
    for (k, v) in doc.iter().take(MAX_ITEMS) {
        let v = if redact && is_secret(k) {
            Bson::String(REDACTED.into())
        } else {
            cut(v, depth + 1, redact)
        };
        out.insert(k.clone(), v);
    }
    if doc.len() > MAX_ITEMS {
        out.insert("…", format!("{} more fields", doc.len() - MAX_ITEMS));
    }
    out
}

fn cut(v: &Bson, depth: usize, redact: bool) -> Bson {
    match v {
        Bson::Document(_) | Bson::Array(_) if depth >= MAX_DEPTH => Bson::String("…".into()),
        Bson::Document(d) => Bson::Document(cut_doc(d, depth, redact)),
        Bson::Array(a) => {
            let mut items: Vec<Bson> = a
                .iter()
                .take(MAX_ITEMS)
                .map(|x| cut(x, depth + 1, redact))
                .collect();
            if a.len() > MAX_ITEMS {
                items.push(Bson::String(format!("… {} more", a.len() - MAX_ITEMS)));
            }
            Bson::Array(items)
        }
        Bson::String(s) if s.chars().count() > MAX_STRING => {
            let mut short: String = s.chars().take(MAX_STRING).collect();
            short.push('…');
            Bson::String(short)
        }
        Bson::Binary(b) if b.bytes.len() > MAX_STRING => Bson::Binary(bson::Binary {
            subtype: b.subtype,
            bytes: b.bytes[..MAX_STRING].to_vec(),
        }),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn big_commands_are_cut_down() {
        let docs: Vec<Bson> = (0..1000).map(|i| Bson::Document(doc! { "i": i })).collect();
        let text = document(&doc! { "insert": "c", "documents": docs, "$db": "d" }, true);
        assert!(text.contains("\"… 980 more\""), "{text}");
        let docs: Vec<Bson> = (0..1000)
            .map(|i| Bson::Document(doc! { "i": i, "s": "x".repeat(10_000) }))
            .collect();
        let text = document(&doc! { "insert": "c", "documents": docs }, true);
        assert!(text.len() <= MAX_TEXT + 3, "{}", text.len());
        assert!(!text.contains(&"x".repeat(MAX_STRING + 1)));
        let mut deep = doc! { "x": 1 };
        for _ in 0..50 {
            deep = doc! { "a": deep };
        }
        let text = document(&deep, true);
        assert_eq!(text, r#"{"a":{"a":{"a":{"a":"…"}}}}"#);
    }

    #[test]
    fn credentials_are_redacted_unless_kept() {
        let d = doc! { "saslStart": 1, "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: b"n,,n=u,r=abc".to_vec() } };
        assert!(document(&d, true).contains(REDACTED));
        assert!(!document(&d, false).contains(REDACTED));
        let d = doc! { "createUser": "u", "pwd": "hunter2" };
        assert!(!document(&d, true).contains("hunter2"));
    }
}
