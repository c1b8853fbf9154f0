//! The reference for the HTTP and HTTPS benchmarks: a plain hyper server
//! (plus rustls with `--tls`) on host loopback answering the same JSON as
//! the mocked route, so the tables compare meshwrap's whole path (jail,
//! stack, sniffer, TLS, responder) with hyper alone on the kernel's loopback.
//!
//! Usage: meshwrap-ref-server PORT [--tls CERT.pem KEY.pem]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

const BODY: &[u8] = br#"{"id":"ch_1","status":"succeeded","amount":500}"#;

fn tls_config(
    cert: &str,
    key: &str,
) -> Result<Arc<rustls::ServerConfig>, Box<dyn std::error::Error>> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or("no private key in the key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

async fn serve<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: IO) {
    let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(BODY)))
                .expect("static response"),
        )
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(18080);
    let tls = match args.get(2).map(String::as_str) {
        Some("--tls") => {
            let (Some(cert), Some(key)) = (args.get(3), args.get(4)) else {
                return Err("usage: meshwrap-ref-server PORT [--tls CERT.pem KEY.pem]".into());
            };
            Some(tokio_rustls::TlsAcceptor::from(tls_config(cert, key)?))
        }
        _ => None,
    };
    // Same runtime shape as meshwrap: one thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            serve(s).await;
                        }
                    }
                    None => serve(stream).await,
                }
            });
        }
    })
}
