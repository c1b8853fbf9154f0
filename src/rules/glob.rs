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
pub fn redis_glob(pat: &[u8], s: &[u8]) -> bool {
    redis_glob_at(pat, s, 0)
}

fn redis_glob_at(pat: &[u8], s: &[u8], depth: u32) -> bool {
    // Deep nesting of `*` is a pathological pattern; refuse it rather than
    // recursing without end.
    if depth > 1000 {
        return false;
    }
    let (mut p, mut i) = (0, 0);
    while p < pat.len() {
        match pat[p] {
            b'*' => {
                while p + 1 < pat.len() && pat[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pat.len() {
                    return true;
                }
                for start in i..=s.len() {
                    if redis_glob_at(&pat[p + 1..], &s[start..], depth + 1) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if i >= s.len() {
                    return false;
                }
                i += 1;
            }
            b'[' => {
                if i >= s.len() {
                    return false;
                }
                p += 1;
                let not = p < pat.len() && pat[p] == b'^';
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    if p >= pat.len() {
                        p -= 1;
                        break;
                    }
                    if pat[p] == b'\\' && p + 1 < pat.len() {
                        p += 1;
                        if pat[p] == s[i] {
                            matched = true;
                        }
                    } else if pat[p] == b']' {
                        break;
                    } else if p + 2 < pat.len() && pat[p + 1] == b'-' {
                        let (mut a, mut b) = (pat[p], pat[p + 2]);
                        if a > b {
                            std::mem::swap(&mut a, &mut b);
                        }
                        if (a..=b).contains(&s[i]) {
                            matched = true;
                        }
                        p += 2;
                    } else if pat[p] == s[i] {
                        matched = true;
                    }
                    p += 1;
                }
                if matched == not {
                    return false;
                }
                i += 1;
            }
            b'\\' if p + 1 < pat.len() => {
                p += 1;
                if i >= s.len() || pat[p] != s[i] {
                    return false;
                }
                i += 1;
            }
            c => {
                if i >= s.len() || c != s[i] {
                    return false;
                }
                i += 1;
            }
        }
        p += 1;
    }
    i == s.len()
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
}
