//! TLS towards the real server for `fallback: pass` of a flow meshwrap
//! terminated. Verified against the host's trust (SSL_CERT_FILE when set,
//! else the system bundle): meshwrap is a client like any other here.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let files = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .chain(BUNDLES.iter().map(std::path::PathBuf::from));
            for f in files {
                if let Ok(pem) = std::fs::read(&f) {
                    for c in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
                        let _ = roots.add(c);
                    }
                    break;
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        })
        .clone()
}

/// Why TLS to the real server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{name}: {source}")]
    Name {
        name: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("TLS to the real {name} failed: {source}")]
    Handshake {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

pub(super) async fn connect(
    name: &str,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, UpstreamTlsError> {
    let server =
        ServerName::try_from(name.to_string()).map_err(|source| UpstreamTlsError::Name {
            name: name.to_string(),
            source,
        })?;
    tokio_rustls::TlsConnector::from(config())
        .connect(server, stream)
        .await
        .map_err(|source| UpstreamTlsError::Handshake {
            name: name.to_string(),
            source,
        })
}
