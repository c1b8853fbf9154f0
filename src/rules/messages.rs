//! The YAML parser's and serde's wording, turned into sentences a person
//! can act on: what is wrong, in the terms of the rules file, and what to
//! check. The position (file:line:column) and the field's path are printed
//! beside it by the caller.

/// Rust type names serde writes into "expected …", in the rules' terms.
const KINDS: &[(&str, &str)] = &[
    ("u8", "a whole number from 0 to 255"),
    ("u16", "a whole number from 0 to 65535"),
    ("u32", "a whole number from 0 to 4294967295"),
    ("u64", "a whole number, 0 or more"),
    ("usize", "a whole number, 0 or more"),
    ("i8", "a whole number"),
    ("i16", "a whole number"),
    ("i32", "a whole number"),
    ("i64", "a whole number"),
    ("f32", "a number"),
    ("f64", "a number"),
    ("a boolean", "true or false"),
    ("a string", "a text"),
];

/// serde's "invalid type" names for what was found.
const FOUND: &[(&str, &str)] = &[
    ("string", "the text"),
    ("integer", "the number"),
    ("floating point", "the number"),
    ("boolean", "the value"),
    ("sequence", "a list"),
    ("map", "a mapping"),
    ("unit value", "nothing (an empty value)"),
];

/// The parser's messages about the shape of the text, with what usually
/// causes them.
const SYNTAX: &[(&str, &str)] = &[
    (
        "mapping values are not allowed in this context",
        "unexpected `:` here; check the indentation of this line and the line above, \
         or quote a value that contains `: `",
    ),
    (
        "did not find expected '-' indicator",
        "this line does not line up with the list above it: list entries start with `- ` \
         at the same indentation; check the indentation",
    ),
    (
        "did not find expected ',' or '}'",
        "a `{ … }` mapping is not closed: expected `,` or `}` (a value with `,`, `:` or `}` \
         in it needs quotes)",
    ),
    (
        "did not find expected ',' or ']'",
        "a `[ … ]` list is not closed: expected `,` or `]` (a value with `,` or `]` in it \
         needs quotes)",
    ),
    (
        "did not find expected key",
        "expected a `key: value` line here; check the indentation",
    ),
    (
        "found character that cannot start any token",
        "a character that cannot start a value (a tab for indentation, or an unquoted \
         `@` or `` ` ``); indent with spaces, quote the value",
    ),
    (
        "did not find expected alphabetic or numeric character",
        "a value that starts with `*` or `&` needs quotes (YAML reads `*name` as an alias): \
         write a glob as \"*.example.test\"",
    ),
    (
        "found undefined alias",
        "an alias (`*name`) names no anchor (`&name`): quote a value that starts with `*`, \
         such as a glob like \"*.example.test\"",
    ),
];

/// Well-known service names a port may be written as, with their number.
const PORT_NAMES: &[(&str, u16)] = &[
    ("http", 80),
    ("https", 443),
    ("redis", 6379),
    ("mongodb", 27017),
    ("mongo", 27017),
    ("kafka", 9092),
    ("postgres", 5432),
    ("postgresql", 5432),
    ("mysql", 3306),
    ("amqp", 5672),
    ("smtp", 25),
    ("dns", 53),
    ("grpc", 50051),
];

/// The number of a port written as a service name (`http` → 80).
pub fn port_by_name(name: &str) -> Option<u16> {
    let name = name.trim().to_ascii_lowercase();
    PORT_NAMES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

fn kind(expected: &str) -> String {
    let e = expected.trim();
    if let Some((_, plain)) = KINDS.iter().find(|(k, _)| *k == e) {
        return plain.to_string();
    }
    if e.starts_with("struct ") || e.starts_with("a map") {
        return "a mapping (`key: value` lines or `{ key: value }`)".into();
    }
    if e.starts_with("a sequence") || e.starts_with("tuple") {
        return "a list (`- item` lines or `[a, b]`)".into();
    }
    e.to_string()
}

/// `invalid type: string "two", expected u16` → `expected a whole number
/// from 0 to 65535, found the text "two"`.
fn invalid_type(rest: &str) -> Option<String> {
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let found = FOUND
        .iter()
        .find_map(|(k, plain)| {
            found
                .strip_prefix(k)
                .map(|v| format!("{plain}{}", v.trim_end()))
        })
        .unwrap_or_else(|| found.to_string());
    Some(format!("expected {}, found {found}", kind(expected)))
}

/// The message as the user reads it.
pub fn humanize(message: &str) -> String {
    let m = message.trim();
    for (raw, plain) in SYNTAX {
        if m.starts_with(raw) {
            return (*plain).to_string();
        }
    }
    ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|p| m.strip_prefix(p).and_then(invalid_type))
        .unwrap_or_else(|| m.to_string())
}

/// The field path as printed: serde_path_to_error writes `?` for a part
/// it could not name (the parser failed before the key was read).
pub fn field_path(path: &str) -> String {
    let trimmed = path.trim_end_matches(".?").trim_end_matches('?');
    if trimmed.is_empty() || trimmed == "." {
        "(top level)".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sentences() {
        assert_eq!(
            humanize("invalid type: string \"two\", expected u16"),
            "expected a whole number from 0 to 65535, found the text \"two\""
        );
        assert_eq!(
            humanize("invalid type: string \"host\", expected struct MatchSpec"),
            "expected a mapping (`key: value` lines or `{ key: value }`), found the text \"host\""
        );
        assert!(humanize("mapping values are not allowed in this context")
            .contains("check the indentation"));
        assert_eq!(humanize("unknown field `x`"), "unknown field `x`");
        assert_eq!(field_path("services[0].respond.?"), "services[0].respond");
        assert_eq!(field_path("?"), "(top level)");
        assert_eq!(port_by_name("HTTPS"), Some(443));
    }
}
