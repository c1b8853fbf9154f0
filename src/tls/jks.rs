//! A Java KeyStore (JKS) of trusted certificates, for JVMs: Java reads it
//! as a truststore without any tool of its own.
//!
//! Format (Sun JKS, version 2): magic 0xFEEDFEED, version, entry count,
//! then per trusted-certificate entry: tag 2, alias (modified UTF-8 with a
//! u16 length), creation time (ms), certificate type "X.509", DER length
//! and bytes; last, SHA-1 over the password as UTF-16BE, the words
//! "Mighty Aphrodite" and everything before.

use sha1::{Digest, Sha1};

fn put_utf(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serializes `certs` (alias, DER) protected by `password`.
pub fn truststore(certs: &[(String, Vec<u8>)], password: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xFEED_FEEDu32.to_be_bytes());
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&(certs.len() as u32).to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for (alias, der) in certs {
        out.extend_from_slice(&2u32.to_be_bytes());
        put_utf(&mut out, alias);
        out.extend_from_slice(&now.to_be_bytes());
        put_utf(&mut out, "X.509");
        out.extend_from_slice(&(der.len() as u32).to_be_bytes());
        out.extend_from_slice(der);
    }
    let mut h = Sha1::new();
    for c in password.encode_utf16() {
        h.update(c.to_be_bytes());
    }
    h.update(b"Mighty Aphrodite");
    h.update(&out);
    out.extend_from_slice(&h.finalize());
    out
}
