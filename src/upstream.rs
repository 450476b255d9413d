//! The agent server behind the gateway: a pooled keep-alive client, and the resource lookups
//! decisions need, cached in `pingora-memory-cache` with coalescing.
//!
//! A lookup is a plain `GET /threads/{id}` (or assistant, cron) on the gateway's own pooled
//! connection: the upstream has no auth of its own, which is why only the gateway may reach
//! it. Answers: 200 with JSON means the resource exists; 404 (or 422 for an id the server
//! rejects) means it does not; anything else fails the request closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pingora_memory_cache::{CacheStatus, Lookup, MemoryCache, RTCache};
use serde_json::Value;

use crate::decide::{Fetched, Target};
use crate::error::GatewayError;

/// Request body type sent upstream.
pub type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Timeouts and limits for the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `http://127.0.0.1:2024`.
    pub base: Uri,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time to wait for response headers.
    pub response_timeout: Duration,
    /// Largest lookup response read.
    pub max_lookup_bytes: usize,
}

/// The upstream: a client plus the lookup cache.
pub struct Upstream {
    client: Client<HttpConnector, UpBody>,
    cfg: UpstreamConfig,
    authority: String,
    cache: RTCache<(Target, u64), Fetched, LookupCb, Upstream>,
    generations: MemoryCache<Target, u64>,
    epoch: AtomicU64,
    ttl: Duration,
    /// Lookups that went upstream (for metrics and tests).
    pub lookups_sent: AtomicU64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.cfg.base)
            .finish()
    }
}

impl Upstream {
    /// Build the client. `ttl` zero disables lookup caching.
    pub fn new(
        cfg: UpstreamConfig,
        cache_capacity: usize,
        ttl: Duration,
    ) -> Result<Upstream, String> {
        let authority = cfg
            .base
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| format!("upstream URL {} has no host", cfg.base))?;
        if cfg.base.scheme_str() != Some("http") {
            return Err(format!(
                "upstream URL {} must be http:// (a sidecar talks to loopback)",
                cfg.base
            ));
        }
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(conn);
        Ok(Upstream {
            client,
            cfg,
            authority,
            cache: RTCache::new(
                cache_capacity.max(16),
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(10)),
            ),
            generations: MemoryCache::new(cache_capacity.max(16)),
            epoch: AtomicU64::new(1),
            ttl,
            lookups_sent: AtomicU64::new(0),
        })
    }

    /// The authority (`host:port`) of the upstream.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Absolute URI for a path and query on the upstream.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| GatewayError::bad_request(format!("invalid request target: {e}")))
    }

    /// Send a request; waits for the response headers at most the configured time.
    pub async fn send(&self, req: Request<UpBody>) -> Result<Response<Incoming>, GatewayError> {
        match tokio::time::timeout(self.cfg.response_timeout, self.client.request(req)).await {
            Err(_) => Err(GatewayError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "Upstream did not answer in time",
            )),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                let connect = e.is_connect();
                Err(GatewayError::upstream(
                    if connect {
                        StatusCode::BAD_GATEWAY
                    } else {
                        StatusCode::BAD_GATEWAY
                    },
                    if connect {
                        "Upstream unavailable"
                    } else {
                        "Upstream connection failed"
                    },
                ))
            }
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// A JSON request to the upstream, fully read (bounded). Used by lookups and searches.
    pub async fn json(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), GatewayError> {
        let mut b = Request::builder()
            .method(method)
            .uri(self.uri(path)?)
            .header(http::header::ACCEPT, "application/json");
        let body: UpBody = match body {
            Some(bytes) => {
                b = b.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed_unsync()
            }
            None => http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        };
        let req = b
            .body(body)
            .map_err(|e| GatewayError::internal(e.to_string()))?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, self.cfg.max_lookup_bytes);
        let bytes = match tokio::time::timeout(self.cfg.response_timeout, limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(_)) => {
                return Err(GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "Upstream answer unreadable or too large",
                ))
            }
            Err(_) => {
                return Err(GatewayError::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Upstream did not answer in time",
                ))
            }
        };
        Ok((parts.status, parts.headers, bytes))
    }

    /// Look a resource up, through the cache (coalesced: one upstream call per key at a time).
    /// Returns the resource and whether it came from the cache.
    pub async fn lookup_traced(
        self: &Arc<Self>,
        t: &Target,
    ) -> Result<(Fetched, bool), GatewayError> {
        if self.ttl.is_zero() {
            return self.fetch(t).await.map(|f| (f, false));
        }
        let gen = self.generations.get(t).0.unwrap_or(0);
        let (r, status) = self
            .cache
            .get(&(t.clone(), gen), Some(self.ttl), Some(self.as_ref()))
            .await;
        let hit = matches!(status, CacheStatus::Hit);
        r.map(|f| (f, hit)).map_err(|e| {
            tracing::warn!(error = %e, "lookup failed");
            GatewayError::upstream(StatusCode::BAD_GATEWAY, "Upstream lookup failed")
        })
    }

    /// Look a resource up, through the cache.
    pub async fn lookup(self: &Arc<Self>, t: &Target) -> Result<Fetched, GatewayError> {
        if self.ttl.is_zero() {
            return self.fetch(t).await;
        }
        let gen = self.generations.get(t).0.unwrap_or(0);
        let (r, status) = self
            .cache
            .get(&(t.clone(), gen), Some(self.ttl), Some(self.as_ref()))
            .await;
        tracing::trace!(target = ?t, hit = matches!(status, CacheStatus::Hit), "lookup");
        r.map_err(|e| {
            tracing::warn!(error = %e, "lookup failed");
            GatewayError::upstream(StatusCode::BAD_GATEWAY, "Upstream lookup failed")
        })
    }

    /// Forget a cached resource (after a write through the gateway).
    pub fn invalidate(&self, t: &Target) {
        let next = self.epoch.fetch_add(1, Ordering::Relaxed);
        self.generations.put(t, next, None);
    }

    async fn fetch(&self, t: &Target) -> Result<Fetched, GatewayError> {
        self.lookups_sent.fetch_add(1, Ordering::Relaxed);
        let (status, _, body) = self.json(http::Method::GET, &t.path(), None).await?;
        match status {
            StatusCode::OK => {
                let v: Value = serde_json::from_slice(&body).map_err(|_| {
                    GatewayError::upstream(
                        StatusCode::BAD_GATEWAY,
                        "Upstream lookup answered invalid JSON",
                    )
                })?;
                // The store answers a missing item with 200 `null`.
                if v.is_null() && matches!(t, Target::StoreItem(..)) {
                    return Ok(None);
                }
                if !v.is_object()
                    || v.get("metadata")
                        .is_some_and(|m| !m.is_object() && !m.is_null())
                {
                    return Err(GatewayError::upstream(
                        StatusCode::BAD_GATEWAY,
                        "Upstream lookup answered an unexpected shape",
                    ));
                }
                Ok(Some(Arc::new(v)))
            }
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => Ok(None),
            s => {
                tracing::warn!(status = %s, path = %t.path(), "unexpected lookup status");
                Err(GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "Upstream lookup failed",
                ))
            }
        }
    }
}

/// The read-through callback of the lookup cache.
pub struct LookupCb;

#[derive(Debug)]
struct LookupError(GatewayError);
impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for LookupError {}

#[async_trait]
impl Lookup<(Target, u64), Fetched, Upstream> for LookupCb {
    async fn lookup(
        key: &(Target, u64),
        extra: Option<&Upstream>,
    ) -> Result<(Fetched, Option<Duration>), Box<dyn pingora_error::ErrorTrait + Send + Sync>> {
        let up = extra.ok_or_else(|| {
            Box::new(LookupError(GatewayError::internal("no upstream"))) as Box<_>
        })?;
        up.fetch(&key.0)
            .await
            .map(|f| (f, Some(up.ttl)))
            .map_err(|e| Box::new(LookupError(e)) as Box<_>)
    }
}
