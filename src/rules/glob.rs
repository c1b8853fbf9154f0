//! Hostname globs: `*` stands for any run of characters (dots included), so
//! `*.pay.test` claims `api.pay.test` and `eu.api.pay.test` but not
//! `pay.test`. Comparison ignores ASCII case and a trailing dot.

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

    /// A pattern without wildcards names exactly one host.
    pub fn is_literal(&self) -> bool {
        !self.0.contains('*')
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
}
