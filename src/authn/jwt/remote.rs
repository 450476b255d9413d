//! Remote verification keys for the `jwt` authenticator: a JWKS URL, or OIDC discovery
//! (`{issuer}/.well-known/openid-configuration` -> `jwks_uri`).
//!
//! Remote keys are fetched lazily: the first request that needs them fetches them (policy
//! loading never touches the network, so a provider that is down cannot stop a load), then a
//! background task refreshes them on the provider's `Cache-Control: max-age`, clamped to
//! `[min_interval, max_interval]` (`interval` when there is none). A token whose `kid` is not in
//! the set triggers one refetch, at most once per `cooldown` (all fetches count), so a flood of
//! made-up `kid`s costs at most one fetch per cooldown; concurrent requests wait on the same
//! fetch. A failed fetch (down, 5xx, garbage, no usable key) keeps the last good keys, and the
//! next attempt comes after `min_interval`. The task holds only a weak reference, so it ends
//! when the policy that owns the keys is replaced.
//!
//! Keys never come from the token itself (`jku`, `x5u`, `jwk` headers are ignored).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::authn::http_client::{http_client, parse_http_url, send, HttpClient};
use crate::authn::jwt::keys::{parse_jwks, KeySet, VerifyKey};

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1024 * 1024;
async fn get_document(
    client: &HttpClient,
    uri: &Uri,
    timeout: Duration,
) -> Result<(HeaderMap, Bytes), String> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, headers, body) = send(client, req, timeout, MAX_DOCUMENT)
        .await
        .map_err(|e| format!("GET {uri}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("GET {uri}: status {status}"));
    }
    Ok((headers, body))
}

/// Where and how often remote keys are fetched.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The JWKS URL (None: from discovery).
    pub jwks_url: Option<Uri>,
    /// The discovery document (used when `jwks_url` is None).
    pub discovery_url: Option<Uri>,
    /// The issuer the discovery document must name (None: not checked).
    pub issuer: Option<String>,
    /// The allow-list keys are filtered by.
    pub algorithms: Vec<Algorithm>,
    /// Refresh interval without `max-age`.
    pub interval: Duration,
    /// Lower bound of the refresh interval, and the retry delay after a failure.
    pub min_interval: Duration,
    /// Upper bound of the refresh interval.
    pub max_interval: Duration,
    /// At most one fetch per this long on unknown `kid`s.
    pub cooldown: Duration,
    /// Timeout of one HTTP exchange.
    pub timeout: Duration,
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    next_refresh: Duration,
    jwks_uri: Option<Uri>,
}

/// Keys from a JWKS URL or discovery, with background refresh.
pub struct RemoteKeys {
    cfg: RemoteConfig,
    client: HttpClient,
    keys: ArcSwapOption<KeySet>,
    state: tokio::sync::Mutex<FetchState>,
    refresher: AtomicBool,
    refresh_task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    fetches: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("jwks_url", &self.cfg.jwks_url)
            .field("discovery_url", &self.cfg.discovery_url)
            .finish()
    }
}

impl RemoteKeys {
    /// Nothing is fetched until the keys are first needed.
    pub fn new(cfg: RemoteConfig) -> Result<RemoteKeys, String> {
        if cfg.jwks_url.is_none() && cfg.discovery_url.is_none() {
            return Err("a JWKS URL or a discovery URL is needed".into());
        }
        let client = http_client(cfg.timeout)?;
        Ok(RemoteKeys {
            cfg,
            client,
            keys: ArcSwapOption::empty(),
            state: tokio::sync::Mutex::new(FetchState::default()),
            refresher: AtomicBool::new(false),
            refresh_task: std::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// JWKS fetches attempted so far (discovery documents not counted).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches (discovery or JWKS) that failed so far.
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The keys held now, without fetching.
    pub fn loaded(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// The current keys; fetched first if none were ever fetched (at most once per cooldown).
    /// Starts the background refresh.
    pub async fn current(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        self.start_refresher();
        if let Some(k) = self.keys.load_full() {
            return Some(k);
        }
        let mut st = self.state.lock().await;
        if let Some(k) = self.keys.load_full() {
            return Some(k);
        }
        if st
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.cfg.cooldown)
        {
            return None;
        }
        self.fetch_locked(&mut st).await;
        self.keys.load_full()
    }

    /// A token named a `kid` that `seen` lacks: refetch unless a fetch happened within the
    /// cooldown. Returns a newer key set, if there is one (possibly fetched by another request
    /// meanwhile).
    pub async fn refetch(self: &Arc<Self>, seen: u64) -> Option<Arc<KeySet>> {
        let newer = |k: Option<Arc<KeySet>>| k.filter(|k| k.generation != seen);
        if let Some(k) = newer(self.keys.load_full()) {
            return Some(k);
        }
        let mut st = self.state.lock().await;
        if let Some(k) = newer(self.keys.load_full()) {
            return Some(k);
        }
        if st
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.cfg.cooldown)
        {
            return None;
        }
        self.fetch_locked(&mut st).await;
        newer(self.keys.load_full())
    }

    fn start_refresher(self: &Arc<Self>) {
        if self.refresher.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if !self.refresher.swap(true, Ordering::AcqRel) {
                let task = rt.spawn(refresh_loop(Arc::downgrade(self)));
                if let Ok(mut slot) = self.refresh_task.lock() {
                    *slot = Some(task.abort_handle());
                }
            }
        }
    }

    async fn fetch_locked(&self, st: &mut FetchState) {
        st.last_attempt = Some(Instant::now());
        match self.fetch_once(st).await {
            Ok((keys, max_age)) => {
                let generation = self.keys.load().as_ref().map_or(0, |k| k.generation) + 1;
                tracing::info!(keys = keys.len(), generation, "JWKS loaded");
                self.keys.store(Some(Arc::new(KeySet { generation, keys })));
                st.next_refresh = max_age
                    .unwrap_or(self.cfg.interval)
                    .clamp(self.cfg.min_interval, self.cfg.max_interval);
            }
            Err(m) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let kept = self.keys.load().as_ref().map_or(0, |k| k.keys.len());
                tracing::warn!(error = %m, kept_keys = kept, "JWKS fetch failed; keeping the last good keys");
                st.next_refresh = self.cfg.min_interval;
                if self.cfg.jwks_url.is_none() {
                    st.jwks_uri = None;
                }
            }
        }
    }

    async fn fetch_once(
        &self,
        st: &mut FetchState,
    ) -> Result<(Vec<VerifyKey>, Option<Duration>), String> {
        let uri = match (&self.cfg.jwks_url, &st.jwks_uri) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let u = self.discover().await?;
                st.jwks_uri = Some(u.clone());
                u
            }
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (headers, body) = get_document(&self.client, &uri, self.cfg.timeout).await?;
        let keys = parse_jwks(&body, &self.cfg.algorithms, false)?;
        if keys.is_empty() {
            return Err(format!("JWKS at {uri} has no usable signing key"));
        }
        Ok((keys, max_age(&headers)))
    }

    async fn discover(&self) -> Result<Uri, String> {
        let url = self.cfg.discovery_url.as_ref().ok_or("no discovery URL")?;
        let (_, body) = get_document(&self.client, url, self.cfg.timeout).await?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery document at {url} is not JSON: {e}"))?;
        if let Some(expected) = &self.cfg.issuer {
            let named = doc.get("issuer").and_then(Value::as_str);
            if named != Some(expected.as_str()) {
                return Err(format!(
                    "discovery document at {url} names issuer {named:?}, expected {expected:?}"
                ));
            }
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("discovery document at {url} has no jwks_uri"))?;
        parse_http_url(jwks)
    }
}

impl Drop for RemoteKeys {
    /// A replaced policy's keys stop their refresh task at once (it holds only a weak
    /// reference, so it would also end at its next wake-up).
    fn drop(&mut self) {
        if let Ok(mut slot) = self.refresh_task.lock() {
            if let Some(t) = slot.take() {
                t.abort();
            }
        }
    }
}

async fn refresh_loop(weak: Weak<RemoteKeys>) {
    loop {
        let delay = {
            let Some(me) = weak.upgrade() else { return };
            let st = me.state.lock().await;
            match st.last_attempt {
                Some(t) => st.next_refresh.saturating_sub(t.elapsed()),
                None => Duration::from_secs(1),
            }
        };
        tokio::time::sleep(delay.max(Duration::from_millis(50))).await;
        let Some(me) = weak.upgrade() else { return };
        let mut st = me.state.lock().await;
        if st
            .last_attempt
            .is_none_or(|t| t.elapsed() >= st.next_refresh)
        {
            me.fetch_locked(&mut st).await;
        }
    }
}

/// `max-age` of a `Cache-Control` header (`no-cache`/`no-store`: zero, clamped later).
pub fn max_age(headers: &HeaderMap) -> Option<Duration> {
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(v) = v.to_str() else { continue };
        for d in v.split(',') {
            let d = d.trim().to_ascii_lowercase();
            if d == "no-cache" || d == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(n) = d.strip_prefix("max-age=") {
                if let Ok(n) = n.trim_matches('"').parse::<u64>() {
                    return Some(Duration::from_secs(n));
                }
            }
        }
    }
    None
}

/// Where a `jwt` authenticator's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Loaded once (PEM, secret, JWKS file).
    Static(Arc<KeySet>),
    /// Fetched and refreshed.
    Remote(Arc<RemoteKeys>),
}
#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cache_control_max_age() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=600, must-revalidate"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        assert_eq!(max_age(&h), Some(Duration::ZERO));
    }
}
