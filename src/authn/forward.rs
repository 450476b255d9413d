//! The `forward` authenticator (LangGraph's `@auth.authenticate` as an HTTP call), and the
//! `anonymous` authenticator's user.
//!
//! `forward` applies when the request carries at least one of the configured credential headers
//! (default `authorization`). It sends those headers, and only those, to the configured URL
//! (`GET`, or `POST` with an empty body) and reads the answer:
//!
//! - 2xx with JSON `{identity, display_name?, permissions?, roles?, attributes?}`: the user;
//! - 401 or 403: the same status to the client, with the service's `detail` (if its body is
//!   `{"detail": "..."}`) and its `WWW-Authenticate` (401);
//! - a timeout, a connection failure, a 5xx, any other status or an answer of the wrong shape:
//!   503, never an allow.
//!
//! Answers are cached per credential (the SHA-256 of the credential headers) in a
//! `pingora-memory-cache` `RTCache`: accepted for `cache_ttl_ms`, refused for
//! `deny_cache_ttl_ms`, unavailable for one second (so an outage is not hammered). Lookups are
//! coalesced: a burst of requests with one new credential makes one call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use pingora_memory_cache::{Lookup, RTCache};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::authn::config::ForwardConfig;
use crate::authn::http_client::{self, FetchError, HttpClient};
use crate::authn::AuthOutcome;
use crate::error::{AuthFailure, GatewayError};
use crate::user::User;

/// How long an "unavailable" answer is reused.
const UNAVAILABLE_TTL: Duration = Duration::from_secs(1);
/// Largest answer read from the service.
const MAX_ANSWER: usize = 64 * 1024;

/// What the service said about one credential.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The credential is valid.
    Allow(Arc<User>),
    /// 401 or 403 from the service.
    Refuse(GatewayError),
    /// Timeout, failure, 5xx or garbage: 503.
    Unavailable(GatewayError),
}

/// A cached answer with the full digest of its credential (the cache hashes keys to 64 bits).
#[derive(Debug)]
pub struct Cached {
    digest: [u8; 32],
    /// The answer.
    pub answer: Answer,
}

struct Inner {
    url: Uri,
    method: Method,
    headers: Vec<HeaderName>,
    timeout: Duration,
    allow_ttl: Duration,
    deny_ttl: Duration,
    client: HttpClient,
    calls: AtomicU64,
}

/// One call's context, handed to the cache's lookup.
pub struct Call {
    inner: Arc<Inner>,
    creds: Vec<(HeaderName, HeaderValue)>,
}

/// The read-through callback of the answer cache.
pub struct ForwardLookup;

/// A compiled `forward` authenticator.
pub struct ForwardAuthenticator {
    inner: Arc<Inner>,
    cache: Option<RTCache<[u8; 32], Arc<Cached>, ForwardLookup, Call>>,
    forward_credentials: bool,
}

impl std::fmt::Debug for ForwardAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuthenticator")
            .field("url", &self.inner.url)
            .field("method", &self.inner.method)
            .field("headers", &self.inner.headers)
            .finish()
    }
}

#[derive(Deserialize)]
struct AllowBody {
    identity: Value,
    display_name: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

fn unavailable(detail: &str) -> Answer {
    Answer::Unavailable(GatewayError::upstream(
        StatusCode::SERVICE_UNAVAILABLE,
        detail,
    ))
}

/// The service's `detail`, if its body is `{"detail": "<short printable text>"}`.
fn service_detail(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let d = v.get("detail")?.as_str()?;
    let clean: String = d.chars().filter(|c| !c.is_control()).take(256).collect();
    (!clean.trim().is_empty()).then_some(clean)
}

impl Inner {
    async fn call(&self, creds: &[(HeaderName, HeaderValue)]) -> Answer {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.url.clone())
            .header(http::header::ACCEPT, "application/json");
        for (n, v) in creds {
            b = b.header(n, v);
        }
        if self.method == Method::POST {
            b = b.header(http::header::CONTENT_LENGTH, 0);
        }
        let req = match b.body(Full::new(Bytes::new())) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "forward authenticator: request could not be built");
                return unavailable("Authentication service unavailable");
            }
        };
        let (status, headers, body) = match http_client::send(
            &self.client,
            req,
            self.timeout,
            MAX_ANSWER,
        )
        .await
        {
            Ok(r) => r,
            Err(FetchError::Timeout) => {
                tracing::warn!(url = %self.url, "forward authenticator: timed out");
                return unavailable("Authentication service did not answer in time");
            }
            Err(FetchError::Failed(m)) => {
                tracing::warn!(url = %self.url, error = %m, "forward authenticator: call failed");
                return unavailable("Authentication service unavailable");
            }
        };
        match status.as_u16() {
            200..=299 => match serde_json::from_slice::<AllowBody>(&body)
                .map_err(|e| e.to_string())
                .and_then(to_user)
            {
                Ok(u) => Answer::Allow(Arc::new(u)),
                Err(m) => {
                    tracing::warn!(url = %self.url, error = %m, "forward authenticator: unusable answer");
                    unavailable("Authentication service answered an unexpected shape")
                }
            },
            401 => {
                let detail = service_detail(&body).unwrap_or_else(|| "Invalid credentials".into());
                let challenge = headers
                    .get(http::header::WWW_AUTHENTICATE)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
                Answer::Refuse(
                    GatewayError::new(StatusCode::UNAUTHORIZED, detail)
                        .with_header(http::header::WWW_AUTHENTICATE, challenge)
                        .with_auth_failure(AuthFailure::Other),
                )
            }
            403 => Answer::Refuse(GatewayError::forbidden(
                service_detail(&body).unwrap_or_else(|| "Forbidden".into()),
            )),
            500..=599 => {
                tracing::warn!(url = %self.url, %status, "forward authenticator: service error");
                unavailable("Authentication service failed")
            }
            _ => {
                tracing::warn!(url = %self.url, %status, "forward authenticator: unexpected status");
                unavailable("Authentication service answered unexpectedly")
            }
        }
    }
}

fn to_user(b: AllowBody) -> Result<User, String> {
    let identity = match b.identity {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => return Err("identity is not a string".into()),
    };
    if identity.is_empty() || HeaderValue::from_str(&identity).is_err() {
        return Err("identity is empty or not visible ASCII".into());
    }
    Ok(User {
        display_name: b
            .display_name
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| identity.clone()),
        identity,
        permissions: b.permissions,
        roles: b.roles,
        attributes: b.attributes,
        ..User::default()
    })
}

#[derive(Debug, thiserror::Error)]
#[error("forward lookup without a call context")]
struct NoContext;

#[async_trait]
impl Lookup<[u8; 32], Arc<Cached>, Call> for ForwardLookup {
    async fn lookup(
        key: &[u8; 32],
        extra: Option<&Call>,
    ) -> Result<(Arc<Cached>, Option<Duration>), Box<dyn pingora_error::ErrorTrait + Send + Sync>>
    {
        let call = extra.ok_or_else(|| Box::new(NoContext) as Box<_>)?;
        let answer = call.inner.call(&call.creds).await;
        let ttl = match &answer {
            Answer::Allow(_) => call.inner.allow_ttl,
            Answer::Refuse(_) => call.inner.deny_ttl,
            Answer::Unavailable(_) => UNAVAILABLE_TTL,
        };
        Ok((
            Arc::new(Cached {
                digest: *key,
                answer,
            }),
            Some(ttl),
        ))
    }
}

impl ForwardAuthenticator {
    /// Compile a `forward` section (no network access).
    pub fn from_config(c: &ForwardConfig) -> Result<ForwardAuthenticator, String> {
        let url = http_client::parse_http_url(&c.url).map_err(|e| format!("url: {e}"))?;
        let method = match c.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => Method::GET,
            Some("POST") => Method::POST,
            Some(m) => return Err(format!("method: {m:?} (GET or POST)")),
        };
        let names = c
            .headers
            .clone()
            .unwrap_or_else(|| vec!["authorization".into()]);
        if names.is_empty() {
            return Err("headers: give at least one credential header".into());
        }
        let mut headers = Vec::with_capacity(names.len());
        for n in &names {
            let h = HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("headers: invalid header name {n:?}"))?;
            if !headers.contains(&h) {
                headers.push(h);
            }
        }
        let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(2000));
        if timeout.is_zero() {
            return Err("timeout_ms: at least 1".into());
        }
        let allow_ttl = Duration::from_millis(c.cache_ttl_ms.unwrap_or(30_000));
        let deny_ttl = Duration::from_millis(c.deny_cache_ttl_ms.unwrap_or(5_000));
        let capacity = c.cache_capacity.unwrap_or(10_000);
        let inner = Arc::new(Inner {
            url,
            method,
            headers,
            timeout,
            allow_ttl,
            deny_ttl,
            client: http_client::http_client(timeout)?,
            calls: AtomicU64::new(0),
        });
        let lock = Some(timeout + Duration::from_secs(1));
        let cache =
            (!allow_ttl.is_zero() && capacity > 0).then(|| RTCache::new(capacity, lock, lock));
        Ok(ForwardAuthenticator {
            inner,
            cache,
            forward_credentials: c.forward_credentials,
        })
    }

    /// Calls made to the service so far.
    pub fn call_count(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// Remove the credential headers from a request going upstream, unless
    /// `forward_credentials`.
    pub fn strip_credentials(&self, headers: &mut HeaderMap) {
        if !self.forward_credentials {
            for h in &self.inner.headers {
                headers.remove(h);
            }
        }
    }

    /// Authenticate a request.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AuthOutcome {
        let mut creds = Vec::new();
        for h in &self.inner.headers {
            for v in headers.get_all(h) {
                creds.push((h.clone(), v.clone()));
            }
        }
        if creds.is_empty() {
            return AuthOutcome::NotMine;
        }
        match self.answer(creds).await {
            Answer::Allow(u) => AuthOutcome::Authenticated(u),
            Answer::Refuse(e) | Answer::Unavailable(e) => AuthOutcome::Rejected(e),
        }
    }

    async fn answer(&self, creds: Vec<(HeaderName, HeaderValue)>) -> Answer {
        let mut h = Sha256::new();
        for (n, v) in &creds {
            h.update(n.as_str().as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        let digest: [u8; 32] = h.finalize().into();
        let Some(cache) = &self.cache else {
            return self.inner.call(&creds).await;
        };
        let call = Call {
            inner: self.inner.clone(),
            creds,
        };
        match cache.get(&digest, None, Some(&call)).await {
            (Ok(c), _) if c.digest == digest => c.answer.clone(),
            (Ok(_), _) => self.inner.call(&call.creds).await,
            (Err(e), _) => {
                tracing::warn!(error = %e, "forward authenticator: cache lookup failed");
                unavailable("Authentication service unavailable")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_body_becomes_a_user() {
        let b: AllowBody = serde_json::from_str(r#"{"identity": "alice", "permissions": ["p"], "attributes": {"org": "acme"}, "extra": 1}"#).unwrap();
        let u = to_user(b).unwrap();
        assert_eq!(u.identity, "alice");
        assert_eq!(u.display_name, "alice");
        assert_eq!(u.permissions, ["p"]);
        assert_eq!(u.attributes["org"], "acme");
        let b: AllowBody = serde_json::from_str(r#"{"identity": ""}"#).unwrap();
        assert!(to_user(b).is_err());
        let b: AllowBody = serde_json::from_str(r#"{"identity": {"x": 1}}"#).unwrap();
        assert!(to_user(b).is_err());
        assert!(serde_json::from_str::<AllowBody>(r#"{"user": "alice"}"#).is_err());
    }

    #[test]
    fn service_detail_is_bounded_and_optional() {
        assert_eq!(
            service_detail(br#"{"detail": "Token revoked"}"#).as_deref(),
            Some("Token revoked")
        );
        assert_eq!(service_detail(b"not json"), None);
        assert_eq!(service_detail(br#"{"detail": 3}"#), None);
        let long = format!(r#"{{"detail": "{}"}}"#, "x".repeat(1000));
        assert_eq!(service_detail(long.as_bytes()).unwrap().len(), 256);
    }

    fn cfg(url: &str) -> ForwardConfig {
        ForwardConfig {
            url: url.into(),
            method: None,
            headers: None,
            timeout_ms: None,
            cache_ttl_ms: None,
            deny_cache_ttl_ms: None,
            cache_capacity: None,
            forward_credentials: false,
        }
    }

    #[test]
    fn config_errors() {
        assert!(ForwardAuthenticator::from_config(&cfg("http://127.0.0.1:1/auth")).is_ok());
        assert!(ForwardAuthenticator::from_config(&cfg("ftp://x/auth")).is_err());
        let mut c = cfg("http://127.0.0.1:1/auth");
        c.method = Some("PUT".into());
        assert!(ForwardAuthenticator::from_config(&c).is_err());
        let mut c = cfg("http://127.0.0.1:1/auth");
        c.headers = Some(vec!["bad header".into()]);
        assert!(ForwardAuthenticator::from_config(&c).is_err());
    }

    #[test]
    fn credential_headers_are_stripped_unless_forwarded() {
        let mut c = cfg("http://127.0.0.1:1/auth");
        c.headers = Some(vec!["Authorization".into(), "X-Session".into()]);
        let f = ForwardAuthenticator::from_config(&c).unwrap();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("x-session", HeaderValue::from_static("s"));
        h.insert("x-other", HeaderValue::from_static("o"));
        f.strip_credentials(&mut h);
        assert_eq!(h.len(), 1);
        c.forward_credentials = true;
        let f = ForwardAuthenticator::from_config(&c).unwrap();
        let mut h2 = HeaderMap::new();
        h2.insert("authorization", HeaderValue::from_static("Bearer t"));
        f.strip_credentials(&mut h2);
        assert_eq!(h2.len(), 1);
    }
}
