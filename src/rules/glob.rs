//! Hostname globs: `*` stands for any run of characters (dots included), so
//! `*.pay.test` claims `api.pay.test` and `eu.api.pay.test` but not
//! `pay.test`. Comparison ignores ASCII case and a trailing dot.
//!
//! Also [`redis_glob`], the Redis-style pattern matcher (`*`, `?`, classes,
//! escapes) that the Redis responder, the MongoDB responder and `expect:`
//! checks share; it lives here, with the other globs, so rules and events
//! need not reach into a responder for it.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob(String);

impl HostGlob {
    pub fn new(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if p.is_empty() {
            return Err("a host pattern cannot be empty".into());
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*')))
        {
            return Err(format!(
                "`{pattern}`: character `{c}` is not allowed in a hostname pattern"
            ));
        }
        Ok(HostGlob(p))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        glob_match(self.0.as_bytes(), host.as_bytes())
    }
}

impl fmt::Display for HostGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of characters, everything else itself. Iterative,
/// with single-star backtracking: linear in practice, never exponential.
pub fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

impl<'de> Deserialize<'de> for HostGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostGlob::new(&s).map_err(de::Error::custom)
    }
}

/// Redis's key and channel patterns (KEYS, SCAN MATCH, PSUBSCRIBE, fault
/// and expectation `key:` globs), following Redis's `stringmatchlen`
/// semantics: `*`, `?`, `[abc]`, `[^a-z]`, `\x`; case-sensitive, over
/// bytes.
///
/// It walks the pattern once with one backtracking point, the last `*`
/// (every other token matches exactly one byte), so it takes at most
/// pattern × text steps: `*a*a*a*a*…b` cannot make it exponential, which is
/// what Redis fixed as CVE-2022-36021.
pub fn redis_glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // After the last `*` seen: where its pattern continues, and where in
    // the text the part it swallows ends.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() && pat[p] == b'*' {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            if p == pat.len() {
                return true;
            }
            star = Some((p, i));
            continue;
        }
        if i == s.len() {
            // Only stars may be left, and they were skipped above.
            return p == pat.len();
        }
        if p < pat.len() {
            if let Some(next) = glob_token(pat, p, s[i]) {
                p = next;
                i += 1;
                continue;
            }
        }
        // A mismatch: let the last `*` swallow one byte more.
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// Matches the one-byte token at `pat[p]` (`?`, a class, an escape or a
/// literal) against `c`: the position after the token when it matches.
fn glob_token(pat: &[u8], mut p: usize, c: u8) -> Option<usize> {
    match pat[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pat.len() => (pat[p + 1] == c).then_some(p + 2),
        b'[' => {
            p += 1;
            let not = p < pat.len() && pat[p] == b'^';
            if not {
                p += 1;
            }
            let mut matched = false;
            loop {
                if p >= pat.len() {
                    // An unclosed class ends with the pattern.
                    p -= 1;
                    break;
                }
                if pat[p] == b'\\' && p + 1 < pat.len() {
                    p += 1;
                    if pat[p] == c {
                        matched = true;
                    }
                } else if pat[p] == b']' {
                    break;
                } else if p + 2 < pat.len() && pat[p + 1] == b'-' {
                    let (mut a, mut b) = (pat[p], pat[p + 2]);
                    if a > b {
                        std::mem::swap(&mut a, &mut b);
                    }
                    if (a..=b).contains(&c) {
                        matched = true;
                    }
                    p += 2;
                } else if pat[p] == c {
                    matched = true;
                }
                p += 1;
            }
            (matched != not).then_some(p + 1)
        }
        lit => (lit == c).then_some(p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = HostGlob::new("*.pay.test").unwrap();
        assert!(g.matches("api.pay.test"));
        assert!(g.matches("EU.api.pay.test."));
        assert!(!g.matches("pay.test"));
        assert!(HostGlob::new("api.pay.test")
            .unwrap()
            .matches("API.pay.test"));
        assert!(HostGlob::new("*").unwrap().matches("anything"));
        assert!(HostGlob::new("a*b*c").unwrap().matches("axxbyyc"));
        assert!(!HostGlob::new("a*b*c").unwrap().matches("axxbyy"));
        assert!(HostGlob::new("bad host").is_err());
    }

    #[test]
    fn glob_like_redis() {
        use super::redis_glob as glob;
        assert!(glob(b"session:*", b"session:abc"));
        assert!(glob(b"h?llo", b"hello"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"h[a-b]llo", b"hbllo"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a*b", b"acbd"));
        assert!(glob(b"a\\*", b"a*"));
    }

    /// The recursive matcher Redis had before CVE-2022-36021, as the
    /// reference the linear one must agree with (on small inputs only: it
    /// is exponential).
    fn reference(pat: &[u8], s: &[u8]) -> bool {
        let Some((&first, rest)) = pat.split_first() else {
            return s.is_empty();
        };
        if first == b'*' {
            return (0..=s.len()).any(|k| reference(rest, &s[k..]));
        }
        let Some((&c, tail)) = s.split_first() else {
            return false;
        };
        match super::glob_token(pat, 0, c) {
            Some(next) => reference(&pat[next..], tail),
            None => false,
        }
    }

    #[test]
    fn pathological_pattern_is_linear() {
        let key = [b'a'; 60];
        let pat = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        assert!(!redis_glob(pat, &key));
        let mut key_b = key.to_vec();
        key_b.push(b'b');
        assert!(redis_glob(pat, &key_b));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn linear_glob_agrees_with_the_recursive_one(
            pat in "[ab*?\\\\\\[\\]^-]{0,8}",
            s in "[ab\\-]{0,8}",
        ) {
            prop_assert_eq!(redis_glob(pat.as_bytes(), s.as_bytes()), reference(pat.as_bytes(), s.as_bytes()));
        }
    }
}
