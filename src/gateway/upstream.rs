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

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use pingora_memory_cache::{CacheStatus, MemoryCache};
use serde_json::Value;

use crate::decide::{Fetched, Target};
use crate::error::GatewayError;
use crate::gateway::pool::{Pool, PoolConfig, PoolStats, PooledBody, SendError};

pub use crate::gateway::pool::UpBody;

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
    pool: Pool,
    cfg: UpstreamConfig,
    /// The `Host` header for forwarded requests.
    host: http::HeaderValue,
    /// Entries carry the epoch they were cached in; [`Upstream::forget_all`] starts a new one.
    cache: MemoryCache<Target, (u64, Fetched)>,
    epoch: AtomicU64,
    /// Set while the replicas' invalidation feed is down: nothing cached is trusted.
    suspended: std::sync::atomic::AtomicBool,
    inflight: std::sync::Mutex<std::collections::HashMap<Target, Arc<tokio::sync::Mutex<()>>>>,
    writes: AtomicU64,
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
            .cloned()
            .ok_or_else(|| format!("upstream URL {} has no host", cfg.base))?;
        if cfg.base.scheme_str() != Some("http") {
            return Err(format!(
                "upstream URL {} must be http:// (a sidecar talks to loopback)",
                cfg.base
            ));
        }
        let host = http::HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("upstream URL {}: {e}", cfg.base))?;
        let port = authority.port_u16().unwrap_or(80);
        let pool = Pool::new(
            PoolConfig {
                authority: format!("{}:{port}", authority.host()),
                connect_timeout: cfg.connect_timeout,
                idle_timeout: Duration::from_secs(60),
                max_idle: 256,
            },
            host.clone(),
        );
        Ok(Upstream {
            pool,
            cfg,
            host,
            cache: MemoryCache::new(cache_capacity.max(16)),
            epoch: AtomicU64::new(0),
            suspended: std::sync::atomic::AtomicBool::new(false),
            inflight: std::sync::Mutex::new(std::collections::HashMap::new()),
            writes: AtomicU64::new(0),
            ttl,
            lookups_sent: AtomicU64::new(0),
        })
    }

    /// The connection pool's counts (for metrics).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// The `Host` header value for requests to the upstream.
    pub fn host(&self) -> &http::HeaderValue {
        &self.host
    }

    /// The request target on the upstream (origin form) for a path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        http::uri::PathAndQuery::try_from(path_and_query)
            .map(Uri::from)
            .map_err(|e| GatewayError::bad_request(format!("invalid request target: {e}")))
    }

    /// Send a request; waits for the response headers at most the configured time.
    pub async fn send(&self, req: Request<UpBody>) -> Result<Response<PooledBody>, GatewayError> {
        match tokio::time::timeout(self.cfg.response_timeout, self.pool.send(req)).await {
            Err(_) => Err(GatewayError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "Upstream did not answer in time",
            )),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                let detail = if matches!(e, SendError::Connect(_)) {
                    "Upstream unavailable"
                } else {
                    "Upstream connection failed"
                };
                Err(GatewayError::upstream(StatusCode::BAD_GATEWAY, detail))
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

    /// A cached resource, if the cache holds a live entry (no I/O, never waits).
    pub fn cached(&self, t: &Target) -> Option<Fetched> {
        if self.ttl.is_zero() {
            return None;
        }
        self.live(t)
    }

    /// The live cache entry for a target (ids are canonical: the decision refuses others).
    fn live(&self, key: &Target) -> Option<Fetched> {
        if self.suspended.load(Ordering::Acquire) {
            return None;
        }
        match self.cache.get(key) {
            (Some((epoch, f)), CacheStatus::Hit) if epoch == self.epoch.load(Ordering::Acquire) => {
                Some(f)
            }
            _ => None,
        }
    }

    /// Look a resource up, through the cache (coalesced: concurrent lookups of one resource
    /// make one upstream call). Returns the resource and whether it came from the cache.
    pub async fn lookup_with_hit(
        self: &Arc<Self>,
        t: &Target,
    ) -> Result<(Fetched, bool), GatewayError> {
        if self.ttl.is_zero() {
            return self.fetch(t).await.map(|f| (f, false));
        }
        let key = t.clone();
        if let Some(f) = self.live(&key) {
            return Ok((f, true));
        }
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _one = gate.lock().await;
            if let Some(f) = self.live(&key) {
                Ok((f, true))
            } else {
                // Cache the answer only if no write went through the gateway while it was
                // being fetched: the answer may predate that write.
                let writes = self.writes.load(Ordering::Acquire);
                let epoch = self.epoch.load(Ordering::Acquire);
                let f = self.fetch(t).await;
                if let Ok(v) = &f {
                    if self.writes.load(Ordering::Acquire) == writes {
                        self.cache.put(&key, (epoch, v.clone()), Some(self.ttl));
                    }
                }
                f.map(|v| (v, false))
            }
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight.get(&key).is_some_and(|g| Arc::ptr_eq(g, &gate))
            && Arc::strong_count(&gate) <= 2
        {
            inflight.remove(&key);
        }
        result
    }

    /// Look a resource up, through the cache.
    pub async fn lookup(self: &Arc<Self>, t: &Target) -> Result<Fetched, GatewayError> {
        self.lookup_with_hit(t).await.map(|(f, _)| f)
    }

    /// Forget every cached resource (the replicas' invalidation feed lost messages).
    pub fn forget_all(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Trust nothing cached (`true`: the invalidation feed is down, so another replica's write
    /// would go unheard) or trust it again (`false`, after [`Upstream::forget_all`]). Lookups
    /// still coalesce while suspended.
    pub fn suspend_cache(&self, suspended: bool) {
        self.suspended.store(suspended, Ordering::Release);
    }

    /// Forget a cached resource (after a write through the gateway, successful or not).
    pub fn invalidate(&self, t: &Target) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.cache.remove(t);
    }

    async fn fetch(&self, t: &Target) -> Result<Fetched, GatewayError> {
        if let Target::Host(host) = t {
            return Ok(resolve(host).await);
        }
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

/// The addresses `host` resolves to with the system resolver (the pod's own, search domains
/// included, as the agent server beside the gateway would resolve it), as a JSON list of
/// strings; `None` when it does not resolve within two seconds.
async fn resolve(host: &str) -> Fetched {
    let lookup = tokio::net::lookup_host((host, 443));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => {
            let list: Vec<Value> = addrs.map(|a| Value::String(a.ip().to_string())).collect();
            (!list.is_empty()).then(|| Arc::new(Value::Array(list)))
        }
        _ => None,
    }
}
