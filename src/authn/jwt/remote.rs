//! Verification keys for the `jwt` authenticator, and the small HTTP client shared with the
//! `forward` authenticator.
//!
//! Key sources: a PEM public key or an HMAC secret (from an env var or a file), a static JWKS
//! file (all loaded once, when the policy is compiled), a JWKS URL, or OIDC discovery
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

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Every RSA algorithm.
pub const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// Every HMAC algorithm.
pub const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No complete answer within the timeout.
    Timeout,
    /// Connection or protocol failure, or an oversized body.
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::Failed(m) => f.write_str(m),
        }
    }
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

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// One verification key and the algorithms it may verify.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    /// Its `kid`, if any.
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
    /// Algorithms it verifies (its type's, narrowed by its `alg` and the allow-list).
    pub algorithms: Vec<Algorithm>,
}

/// A set of keys, as fetched or loaded once.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// Increases with every successful fetch.
    pub generation: u64,
    /// The keys.
    pub keys: Vec<VerifyKey>,
}

/// The keys that may verify a token.
#[derive(Debug)]
pub enum KeyMatch<'a> {
    /// Try these, in order.
    Keys(Vec<&'a VerifyKey>),
    /// The token names a `kid` the set does not have.
    UnknownKid,
    /// Keys exist for the token, but none for its algorithm.
    WrongAlgorithm,
}

impl KeySet {
    /// Keys for a token's `kid` and `alg`. A token with a `kid` matches keys with that `kid`, or
    /// keys without any `kid` (a PEM key or secret); a token without one matches every key.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> KeyMatch<'_> {
        let named: Vec<&VerifyKey> = match kid {
            Some(kid) => {
                let exact: Vec<&VerifyKey> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if exact.is_empty() {
                    self.keys.iter().filter(|k| k.kid.is_none()).collect()
                } else {
                    exact
                }
            }
            None => self.keys.iter().collect(),
        };
        if named.is_empty() {
            return KeyMatch::UnknownKid;
        }
        let fit: Vec<&VerifyKey> = named
            .into_iter()
            .filter(|k| k.algorithms.contains(&alg))
            .collect();
        if fit.is_empty() {
            KeyMatch::WrongAlgorithm
        } else {
            KeyMatch::Keys(fit)
        }
    }

    /// Whether a key with this `kid` (or a key without `kid`) is still in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.kid.is_none() || k.kid.as_deref() == Some(kid))
    }
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "invalid base64url".to_string())
}

/// Parse a JWKS document. Keys that cannot be used (encryption keys, unsupported types or
/// curves, RSA under 2048 bits, algorithms outside `allowed`) are skipped with a warning;
/// symmetric (`oct`) keys only when `allow_secret`.
pub fn parse_jwks(
    bytes: &[u8],
    allowed: &[Algorithm],
    allow_secret: bool,
) -> Result<Vec<VerifyKey>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" list")?;
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        match jwk_to_key(k, allowed, allow_secret) {
            Ok(Some(key)) => out.push(key),
            Ok(None) => {}
            Err(m) => tracing::warn!(
                index = i,
                kid = k
                    .get("kid")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("-"),
                "JWKS key skipped: {m}"
            ),
        }
    }
    Ok(out)
}

fn jwk_to_key(
    k: &Value,
    allowed: &[Algorithm],
    allow_secret: bool,
) -> Result<Option<VerifyKey>, String> {
    let s = |name: &str| k.get(name).and_then(Value::as_str);
    let need = |name: &str| s(name).ok_or_else(|| format!("missing \"{name}\""));
    if s("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = k.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Ok(None);
        }
    }
    let (key, family): (DecodingKey, Vec<Algorithm>) = match s("kty") {
        Some("RSA") => {
            let n = b64url(need("n")?)?;
            let e = b64url(need("e")?)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!("RSA key of {bits} bits (2048 at least)"));
            }
            (
                DecodingKey::from_rsa_raw_components(&n, &e),
                RSA_ALGS.to_vec(),
            )
        }
        Some("EC") => {
            let (alg, len) = match s("crv") {
                Some("P-256") => (Algorithm::ES256, 32),
                Some("P-384") => (Algorithm::ES384, 48),
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let (x, y) = (b64url(need("x")?)?, b64url(need("y")?)?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates of the wrong size".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (DecodingKey::from_ec_der(&point), vec![alg])
        }
        Some("OKP") => {
            if s("crv") != Some("Ed25519") {
                return Err(format!("unsupported OKP curve {:?}", s("crv")));
            }
            let x = b64url(need("x")?)?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong size".into());
            }
            (DecodingKey::from_ed_der(&x), vec![Algorithm::EdDSA])
        }
        Some("oct") => {
            if !allow_secret {
                return Err("symmetric keys are only accepted from a jwks_file".into());
            }
            let secret = b64url(need("k")?)?;
            if secret.len() < 32 {
                return Err("HMAC key shorter than 32 bytes".into());
            }
            (DecodingKey::from_secret(&secret), HMAC_ALGS.to_vec())
        }
        other => return Err(format!("unsupported key type {other:?}")),
    };
    let mut algorithms: Vec<Algorithm> =
        family.into_iter().filter(|a| allowed.contains(a)).collect();
    if let Some(a) = s("alg") {
        let a = Algorithm::from_str(a).map_err(|_| format!("unsupported alg {a:?}"))?;
        algorithms.retain(|x| *x == a);
    }
    if algorithms.is_empty() {
        return Ok(None);
    }
    check_key(&key, &algorithms)?;
    Ok(Some(VerifyKey {
        kid: s("kid").map(str::to_string),
        key,
        algorithms,
    }))
}

/// Refuse a key the crypto backend cannot use (an EC point off the curve, a bad RSA modulus):
/// building a verifier parses the key without needing a real signature.
fn check_key(key: &DecodingKey, algorithms: &[Algorithm]) -> Result<(), String> {
    for alg in algorithms {
        jsonwebtoken::crypto::verify("AA", b"probe", key, *alg)
            .map_err(|e| format!("unusable key: {e}"))?;
    }
    Ok(())
}

/// A PEM public key (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY`) as a key for the allowed
/// algorithms of its type.
pub fn pem_key(pem: &[u8], allowed: &[Algorithm]) -> Result<VerifyKey, String> {
    let (key, family) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, RSA_ALGS.to_vec())
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        let alg = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => return Err("unsupported EC curve (P-256 and P-384 are)".into()),
        };
        (k, vec![alg])
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, vec![Algorithm::EdDSA])
    } else {
        return Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into());
    };
    let algorithms: Vec<Algorithm> = family
        .iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect();
    if algorithms.is_empty() {
        return Err(format!(
            "the key verifies {} only, none of which is in `algorithms`",
            family
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join("/")
        ));
    }
    check_key(&key, &algorithms)?;
    Ok(VerifyKey {
        kid: None,
        key,
        algorithms,
    })
}

// ---------------------------------------------------------------------------------------------
// Remote keys
// ---------------------------------------------------------------------------------------------

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
            .map_or(true, |t| t.elapsed() >= st.next_refresh)
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

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

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

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let all: Vec<Algorithm> = RSA_ALGS
            .iter()
            .chain(HMAC_ALGS.iter())
            .copied()
            .chain([Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA])
            .collect();
        let k = crate::authn::jwt::test_keys::keys();
        let with = |mut jwk: Value, extra: Value| {
            for (n, v) in extra.as_object().unwrap() {
                jwk[n] = v.clone();
            }
            jwk
        };
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": b64(&[0xff; 128]), "e": "AQAB"},
            with(k.rsa.jwk.clone(), serde_json::json!({"kid": "big", "alg": "RS256"})),
            with(k.rsa.jwk.clone(), serde_json::json!({"kid": "enc", "use": "enc"})),
            with(k.p256.jwk.clone(), serde_json::json!({"kid": "p256"})),
            {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            with(k.ed.jwk.clone(), serde_json::json!({"kid": "ed"})),
            {"kty": "oct", "kid": "sym", "k": b64(&[4; 32])},
        ]});
        let bytes = serde_json::to_vec(&doc).unwrap();
        let keys = parse_jwks(&bytes, &all, false).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["big", "p256", "ed"]);
        assert_eq!(keys[0].algorithms, [Algorithm::RS256]);
        assert_eq!(keys[1].algorithms, [Algorithm::ES256]);
        let with_oct = parse_jwks(&bytes, &all, true).unwrap();
        assert_eq!(with_oct.len(), 4);
        let only_es: Vec<_> = parse_jwks(&bytes, &[Algorithm::ES256], false).unwrap();
        assert_eq!(only_es.len(), 1);
        assert!(parse_jwks(b"{}", &all, false).is_err());
        assert!(parse_jwks(b"nope", &all, false).is_err());
    }

    #[test]
    fn key_matching_by_kid_and_algorithm() {
        let k = |kid: Option<&str>, algs: Vec<Algorithm>| VerifyKey {
            kid: kid.map(str::to_string),
            key: DecodingKey::from_secret(b"x"),
            algorithms: algs,
        };
        let set = KeySet {
            generation: 1,
            keys: vec![
                k(Some("a"), vec![Algorithm::RS256]),
                k(Some("b"), vec![Algorithm::ES256]),
            ],
        };
        assert!(matches!(set.find(Some("a"), Algorithm::RS256), KeyMatch::Keys(v) if v.len() == 1));
        assert!(matches!(
            set.find(Some("a"), Algorithm::HS256),
            KeyMatch::WrongAlgorithm
        ));
        assert!(matches!(
            set.find(Some("zz"), Algorithm::RS256),
            KeyMatch::UnknownKid
        ));
        assert!(
            matches!(set.find(None, Algorithm::ES256), KeyMatch::Keys(v) if v[0].kid.as_deref() == Some("b"))
        );
        assert!(set.has_kid("a") && !set.has_kid("zz"));
        let unnamed = KeySet {
            generation: 1,
            keys: vec![k(None, vec![Algorithm::HS256])],
        };
        assert!(matches!(
            unnamed.find(Some("whatever"), Algorithm::HS256),
            KeyMatch::Keys(_)
        ));
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(parse_http_url("https://idp.example.com/jwks").is_ok());
        assert!(parse_http_url("ftp://x/y").is_err());
        assert!(parse_http_url("/relative").is_err());
    }
}
