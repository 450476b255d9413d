//! The small HTTPS client the `jwt` (JWKS, discovery) and `forward` authenticators share:
//! `http://` and `https://` (rustls, system roots, Mozilla's roots when the system has none),
//! every exchange bounded in time and size.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Client for JWKS, discovery and `forward` calls: `http://` and `https://` (rustls, system
/// roots, Mozilla's roots when the system has none).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn tls_config() -> Result<rustls::ClientConfig, String> {
    static CFG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    CFG.get_or_init(|| {
        use hyper_rustls::ConfigBuilderExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        Ok(match builder.clone().with_native_roots() {
            Ok(b) => b.with_no_client_auth(),
            Err(_) => builder.with_webpki_roots().with_no_client_auth(),
        })
    })
    .clone()
}

/// A new client; `connect_timeout` bounds the TCP connect.
pub fn http_client(connect_timeout: Duration) -> Result<HttpClient, String> {
    let tls = tls_config()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Parse an `http://` or `https://` URL with a host.
pub fn parse_http_url(s: &str) -> Result<Uri, String> {
    let u: Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    match u.scheme_str() {
        Some("http" | "https") if u.authority().is_some() => Ok(u),
        _ => Err(format!("URL {s:?} must be http:// or https:// with a host")),
    }
}

/// Why an HTTP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No complete answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Connection or protocol failure, or an oversized body.
    #[error("{0}")]
    Failed(String),
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Send a request and read the whole answer (at most `max_bytes`) within `timeout`.
pub async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), FetchError> {
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| FetchError::Failed(error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, max_bytes)
            .collect()
            .await
            .map_err(|e| FetchError::Failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(parse_http_url("https://idp.example.com/jwks").is_ok());
        assert!(parse_http_url("ftp://x/y").is_err());
        assert!(parse_http_url("/relative").is_err());
    }
}
