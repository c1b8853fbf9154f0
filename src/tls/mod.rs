//! TLS interception: the CA, leaf certificates per name (cached), the
//! rustls acceptor for mocked services, and the trust files the jail gets
//! so the SUT trusts the CA without any flag.

pub mod bundled;
mod ca;
mod jks;
mod trust;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

pub use ca::{default_ca_dir, Ca};
pub use trust::{TrustFiles, TrustPlan};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("--trust-path {pattern}: {why}")]
    TrustPath { pattern: String, why: String },
}

/// Why a TLS session for a mocked service could not be terminated.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("cannot read the ClientHello: {0}")]
    ClientHello(#[source] std::io::Error),
    #[error("the client sent no SNI and the flow has no hostname")]
    NoName,
    #[error(transparent)]
    Certificate(#[from] TlsError),
    /// The client answered our certificate with an alert.
    #[error("client rejected the certificate for {name} ({source}): the SUT may pin certificates, or verify against a CA file meshwrap did not find (overlay it with --trust-path FILE; `meshwrap trust` lists what is overlaid)")]
    Rejected {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake for {name} failed: {source}")]
    Handshake {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a terminated handshake agreed on, for events.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Handshake {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub version: Option<String>,
    /// The name the leaf certificate was made for.
    pub certificate_for: String,
}

/// Terminates TLS for mocked services with leaf certificates signed by the
/// run's CA.
pub struct Interceptor {
    ca: Ca,
    configs: Mutex<LeafCache>,
}

/// How many leaf certificates are kept: a mocked service answers any SNI,
/// so a client that sends a new name per connection must not grow the
/// cache without end.
pub const MAX_LEAF_CERTS: usize = 4096;

/// Server configs by name, the oldest forgotten first once full.
struct LeafCache {
    by_name: HashMap<String, Arc<ServerConfig>>,
    order: std::collections::VecDeque<String>,
    capacity: usize,
}

impl LeafCache {
    fn insert(&mut self, name: String, cfg: Arc<ServerConfig>) {
        while self.by_name.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_name.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(name.clone());
        self.by_name.insert(name, cfg);
    }
}

impl Interceptor {
    pub fn new(ca: Ca) -> Self {
        Interceptor::with_capacity(ca, MAX_LEAF_CERTS)
    }

    fn with_capacity(ca: Ca, capacity: usize) -> Self {
        Interceptor {
            ca,
            configs: Mutex::new(LeafCache {
                by_name: HashMap::new(),
                order: Default::default(),
                capacity: capacity.max(1),
            }),
        }
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// A server config presenting a certificate for `name`, made once.
    fn config_for(&self, name: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.by_name.get(name) {
            return Ok(c.clone());
        }
        let (cert_der, key_der) = self.ca.leaf(name)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert_der), self.ca.cert_der()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            )?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        cache.insert(name.to_string(), cfg.clone());
        Ok(cfg)
    }

    /// Completes the handshake as the server for the SNI name (or
    /// `fallback_name`, the hostname the SUT resolved, when it sent none).
    pub async fn accept<IO>(
        &self,
        io: IO,
        fallback_name: Option<&str>,
    ) -> Result<(TlsStream<IO>, Handshake), AcceptError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(AcceptError::ClientHello)?;
        let sni = start.client_hello().server_name().map(str::to_string);
        let name = sni
            .clone()
            .or_else(|| fallback_name.map(str::to_string))
            .ok_or(AcceptError::NoName)?;
        let cfg = self.config_for(&name)?;
        let stream = start.into_stream(cfg).await.map_err(|source| {
            // An alert from the client during our handshake is its verdict
            // on the certificate we presented.
            let alert = source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::AlertReceived(_) | rustls::Error::InvalidCertificate(_)
                    )
                });
            if alert {
                AcceptError::Rejected {
                    name: name.clone(),
                    source,
                }
            } else {
                AcceptError::Handshake {
                    name: name.clone(),
                    source,
                }
            }
        })?;
        let (_, conn) = stream.get_ref();
        let hs = Handshake {
            sni,
            alpn: conn
                .alpn_protocol()
                .map(|a| String::from_utf8_lossy(a).into_owned()),
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1.")),
            certificate_for: name,
        };
        Ok((stream, hs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_cache_is_bounded() {
        let icpt = Interceptor::with_capacity(Ca::ephemeral().unwrap(), 3);
        for i in 0..10 {
            icpt.config_for(&format!("n{i}.test")).unwrap();
        }
        let cache = icpt.configs.lock().unwrap();
        assert_eq!(cache.by_name.len(), 3);
        assert_eq!(cache.order.len(), 3);
        assert!(cache.by_name.contains_key("n9.test") && !cache.by_name.contains_key("n0.test"));
    }
}
