//! TLS to a mocked service: terminate the session with a leaf certificate
//! of the run's CA, then sniff what the client speaks inside it. Kept
//! apart from `mock` so that any responder that wants TLS terminated gets
//! the same steps.

use super::Appliance;
use crate::io::BoxIo;
use crate::model::Protocol;
use crate::sniff::{self, TlsInfo};

/// A terminated session, ready for a responder.
pub(super) struct Intercepted {
    pub io: BoxIo,
    /// What the client speaks inside TLS.
    pub inner: Protocol,
    pub tls: TlsInfo,
    /// The name the certificate was made for (forwarding speaks TLS to it).
    pub server_name: String,
}

/// Why it could not be terminated, with what is known of the session.
pub(super) struct NotIntercepted {
    pub tls: Option<TlsInfo>,
    pub error: String,
}

impl Appliance {
    /// Terminates TLS on `io`, whose ClientHello named `sni`; `hostname` is
    /// the name the SUT resolved, for clients that send no SNI.
    pub(super) async fn intercept(
        &self,
        io: BoxIo,
        sni: Option<String>,
        hostname: Option<&str>,
    ) -> Result<Intercepted, NotIntercepted> {
        let Some(icpt) = &self.inner.interceptor else {
            return Err(NotIntercepted {
                tls: None,
                error: "TLS interception is off".into(),
            });
        };
        match icpt.accept(io, hostname).await {
            Ok((stream, hs)) => {
                let (inner, stream) = sniff::sniff_stream(stream).await;
                Ok(Intercepted {
                    io: Box::new(stream),
                    inner,
                    tls: TlsInfo {
                        sni: hs.sni.clone(),
                        alpn: hs.alpn.clone(),
                        version: hs.version.clone(),
                        intercepted: true,
                    },
                    server_name: hs.certificate_for,
                })
            }
            Err(e) => Err(NotIntercepted {
                tls: Some(TlsInfo {
                    sni,
                    intercepted: true,
                    ..Default::default()
                }),
                error: e.to_string(),
            }),
        }
    }
}
