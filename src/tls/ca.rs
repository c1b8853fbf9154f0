//! The interception CA: ECDSA P-256, made per run, or kept in a directory
//! and reused (`--ca-dir`) so a developer can trust it once.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;

use super::TlsError;

const CA_CERT: &str = "meshwrap-ca.pem";
const CA_KEY: &str = "meshwrap-ca-key.pem";

pub struct Ca {
    key: KeyPair,
    /// The certificate as clients see it (PEM and DER).
    pem: String,
    der: CertificateDer<'static>,
    /// An in-memory self-signed twin with the same name and key, used only
    /// as the issuer when signing leaves (rcgen needs a `Certificate`).
    issuer: rcgen::Certificate,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "meshwrap interception CA");
    dn.push(DnType::OrganizationName, "meshwrap (testing only)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `$XDG_DATA_HOME/meshwrap/ca`, else `~/.local/share/meshwrap/ca`.
pub fn default_ca_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data.join("meshwrap/ca")
}

impl Ca {
    /// A fresh CA that lives only for this run.
    pub fn ephemeral() -> Result<Ca, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params().self_signed(&key)?;
        Ok(Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: cert,
            key,
        })
    }

    /// The CA kept in `dir`, created there (key mode 0600) on first use.
    pub fn persistent(dir: &Path) -> Result<Ca, TlsError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        check_private(dir, 0o022, "folder", "chmod go-w")?;
        if cert_path.exists() && key_path.exists() {
            check_private(&key_path, 0o077, "key", "chmod 600")?;
            let pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let der = rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    TlsError::Invalid(format!("{}: no certificate in it", cert_path.display()))
                })?;
            let issuer = ca_params().self_signed(&key)?;
            return Ok(Ca {
                key,
                pem,
                der,
                issuer,
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let ca = Ca::ephemeral()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io_err(&key_path))?;
        std::io::Write::write_all(&mut f, ca.key.serialize_pem().as_bytes())
            .map_err(io_err(&key_path))?;
        std::fs::write(&cert_path, &ca.pem).map_err(io_err(&cert_path))?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// A leaf certificate for `name` (DNS name or IP address) and its
    /// PKCS#8 key, both DER.
    pub fn leaf(&self, name: &str) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_string().try_into().map_err(|_| {
                TlsError::Invalid(format!(
                    "`{name}` is not a valid DNS name for a certificate"
                ))
            })?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(90);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }
}

/// Refuses, as ssh does with keys, a CA folder others may write to or a
/// key others may read: whoever can read the key can forge a certificate
/// for any name the SUT trusts while the CA is in its bundle. `bits` are
/// the mode bits that must be clear; a missing path is fine (it is made
/// private).
fn check_private(path: &Path, bits: u32, what: &str, fix: &str) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & bits != 0 {
        return Err(TlsError::Invalid(format!(
            "{}: the CA {what} has mode {mode:04o}, open to other users; run `{fix} {}` (meshwrap refuses it, as ssh refuses such keys)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}
