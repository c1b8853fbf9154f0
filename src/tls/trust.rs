//! Making the SUT trust the CA with no flag: a copy of the host's system
//! bundle plus the CA, bind-mounted over the bundle paths that exist in the
//! jail, a Java truststore over the JDK's `cacerts`, and the variables that
//! common runtimes read.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::bundled::Bundle;
use super::{jks, Ca, TlsError};

/// System CA bundles, by distribution; the first that exists is copied.
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The JDK's system truststore on Debian/Ubuntu and Fedora. When neither
/// exists, JAVA_TOOL_OPTIONS points JVMs at our truststore instead; a JDK
/// with its own private `cacerts` on a host that has these is not reached.
const JAVA_CACERTS: &[&str] = &[
    "/etc/ssl/certs/java/cacerts",
    "/etc/pki/ca-trust/extracted/java/cacerts",
];

const VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];

/// What to bind-mount and which variables to set in the jail.
#[derive(Debug, Default, Clone)]
pub struct TrustPlan {
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub env: Vec<(OsString, OsString)>,
    /// Human-readable list of what was injected (for `-v` and docs).
    pub injected: Vec<String>,
}

/// Files written for one run (in the jail's work directory).
pub struct TrustFiles;

impl TrustFiles {
    /// Writes the bundle and truststore into `dir` and says where they go;
    /// `bundled` are the packages' own bundles to overlay too (see
    /// `bundled`).
    pub fn write(dir: &Path, ca: &Ca, bundled: &[Bundle]) -> Result<TrustPlan, TlsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        let mut plan = TrustPlan::default();
        let system = BUNDLES.iter().map(Path::new).find(|p| p.exists());
        let mut bundle = match system {
            Some(p) => std::fs::read_to_string(p).map_err(io(p))?,
            None => String::new(),
        };
        if !bundle.is_empty() && !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str("# meshwrap interception CA\n");
        bundle.push_str(ca.cert_pem());
        let bundle_path = dir.join("ca-bundle.pem");
        std::fs::write(&bundle_path, &bundle).map_err(io(&bundle_path))?;
        let ca_path = dir.join("meshwrap-ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).map_err(io(&ca_path))?;

        let mut seen = Vec::new();
        for p in BUNDLES.iter().map(Path::new).filter(|p| p.exists()) {
            let target = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if !seen.contains(&target) {
                plan.binds.push((bundle_path.clone(), target.clone()));
                plan.injected
                    .push(format!("{} (bundle + CA)", target.display()));
                seen.push(target);
            }
        }
        // Packages' own bundles: each keeps its contents, plus the CA.
        for (i, b) in bundled.iter().enumerate() {
            if seen.contains(&b.path) {
                continue;
            }
            let mut text = std::fs::read_to_string(&b.path).map_err(io(&b.path))?;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("# meshwrap interception CA\n");
            text.push_str(ca.cert_pem());
            let copy = dir.join(format!("bundled-{i}.pem"));
            std::fs::write(&copy, text).map_err(io(&copy))?;
            plan.binds.push((copy, b.path.clone()));
            plan.injected.push(format!(
                "{} (its own bundle + CA; found in {})",
                b.path.display(),
                b.found_by
            ));
            seen.push(b.path.clone());
        }
        // Java: every system certificate plus the CA, as JKS.
        let mut certs: Vec<(String, Vec<u8>)> = rustls_pemfile::certs(&mut bundle.as_bytes())
            .filter_map(Result::ok)
            .enumerate()
            .map(|(i, der)| (format!("cert{i}"), der.to_vec()))
            .collect();
        certs.push(("meshwrap-ca".into(), ca.cert_der().to_vec()));
        let jks_path = dir.join("cacerts.jks");
        std::fs::write(&jks_path, jks::truststore(&certs, "changeit")).map_err(io(&jks_path))?;
        let mut java_bound = false;
        for p in JAVA_CACERTS.iter().map(Path::new).filter(|p| p.exists()) {
            let target = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            plan.binds.push((jks_path.clone(), target.clone()));
            plan.injected
                .push(format!("{} (Java truststore)", target.display()));
            java_bound = true;
        }
        if !java_bound && std::env::var_os("JAVA_TOOL_OPTIONS").is_none() {
            let opt = format!(
                "-Djavax.net.ssl.trustStore={} -Djavax.net.ssl.trustStorePassword=changeit -Djavax.net.ssl.trustStoreType=JKS",
                jks_path.display()
            );
            plan.env.push(("JAVA_TOOL_OPTIONS".into(), opt.into()));
            plan.injected.push("JAVA_TOOL_OPTIONS".into());
        }
        for var in VARIABLES {
            if std::env::var_os(var).is_none() {
                plan.env.push(((*var).into(), bundle_path.clone().into()));
                plan.injected.push((*var).to_string());
            }
        }
        Ok(plan)
    }
}
