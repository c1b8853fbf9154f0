//! `fallback: pass`: a request no route answered, sent to the real
//! destination (over TLS when the client's was terminated), its answer
//! relayed as the mock's.

use std::net::SocketAddr;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::request::RequestView;
use super::respond::Built;
use crate::egress::ConnectError;
use crate::io::BoxIo;
use crate::responders::{ServeCtx, Upstream};

/// Why a request could not be passed to the real destination; the SUT
/// gets it in a 502.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("fallback pass: no real destination is known for this flow")]
    NoDestination,
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Tls(#[from] super::upstream_tls::UpstreamTlsError),
    #[error("invalid request for the upstream: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("upstream {target}: {source}")]
    Upstream {
        target: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// Sends the request to the real destination.
pub(super) async fn forward(ctx: &ServeCtx, req: &RequestView) -> Result<Built, ForwardError> {
    let target = match &ctx.upstream {
        Upstream::Addr(a) => *a,
        Upstream::Name(name, port) => tokio::net::lookup_host((name.as_str(), *port))
            .await
            .map_err(|source| ForwardError::Resolve {
                name: name.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| ForwardError::NoAddress(name.clone()))?,
        Upstream::None => return Err(ForwardError::NoDestination),
    };
    let upstream = |source| ForwardError::Upstream { target, source };
    let stream = crate::egress::connect(target).await?;
    // The client spoke TLS to us, so the real server expects TLS too.
    let io: BoxIo = match &ctx.tls_server_name {
        Some(name) => Box::new(super::upstream_tls::connect(name, stream).await?),
        None => Box::new(stream),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(upstream)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = match &req.raw_query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.clone(),
    };
    let mut builder = hyper::Request::builder()
        .method(req.method.as_str())
        .uri(uri);
    for (k, v) in &req.headers {
        if matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "te" | "http2-settings"
        ) {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    if !req.headers.contains_key("host") {
        if let Some(h) = &req.host {
            builder = builder.header("host", h.as_str());
        }
    }
    let request = builder.body(http_body_util::Full::new(req.body.clone()))?;
    let resp = sender.send_request(request).await.map_err(upstream)?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(upstream)?.to_bytes();
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "content-length"
            )
        })
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(Built {
        status: parts.status.as_u16(),
        headers,
        body,
        delay: None,
    })
}
