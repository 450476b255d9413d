//! The request path: authenticate -> classify -> decide (with lookups) -> rewrite -> forward
//! -> stream back.
//!
//! Each request reads one policy snapshot from start to end. Refusals are JSON
//! `{"detail": ...}` (or an SSE `error` event where the agent server reports errors that way),
//! never a forward: what the gateway cannot classify, parse or decide is refused.

pub mod idle;
pub mod malformed_head;
pub mod pool;
pub mod server;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::authn;
use crate::body::buffers::{self, BodyBudget, Reservation};
use crate::body::outgoing::Outgoing;
use crate::body::splice::ObjectBody;
use crate::decide::{
    self, empty_map, metadata_ref, Decision, Facts, Forward, Input, Next, Outcome, Reply,
    ResponsePlan, SearchPlan, Target,
};
use crate::error::{AuthFailure, Delivery, GatewayError, Side};
use crate::gateway::pool::PooledBody;
use crate::gateway::upstream::{UpBody, Upstream};
use crate::ops::audit::{AuditLine, LineSink};
use crate::ops::metrics::{Metrics, ReasonLabel, RequestLabels};
use crate::policy::Policy;
use crate::routes::{self, Admission};
use crate::user::User;

/// Response body type.
pub type RespBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Data-plane limits and timeouts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Largest request body accepted (413 above).
    pub max_body: usize,
    /// Request-body bytes held at once across all requests (503 beyond, before reading).
    pub body_budget: usize,
    /// Largest upstream response the gateway buffers to filter (search pages, lists).
    pub max_filtered_response: usize,
    /// A streaming response with no data for this long is cut.
    pub idle_timeout: Duration,
    /// Time allowed to read a request body.
    pub body_timeout: Duration,
    /// Send `x-graphguard-policy-version` on every response.
    pub policy_version_header: bool,
    /// Fraction of allowed decisions written to the audit log (denials always are).
    pub audit_sample_allowed: f64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_body: 32 * 1024 * 1024,
            body_budget: 128 * 1024 * 1024,
            max_filtered_response: 64 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(60),
            policy_version_header: true,
            audit_sample_allowed: 1.0,
        }
    }
}

/// Shared state of the gateway.
pub struct Gateway {
    /// The live policy snapshot (one `load` per request).
    pub policy: ArcSwap<Policy>,
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// Limits.
    pub config: ProxyConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Unix seconds of the upstream's last successful health check (0: never).
    pub upstream_ok_at: AtomicU64,
    /// Set when shutdown starts.
    pub draining: AtomicBool,
    /// A candidate policy evaluated beside the enforced one, never enforced.
    pub shadow: arc_swap::ArcSwapOption<Policy>,
    /// Request-body bytes held at once, across every connection.
    pub body_budget: BodyBudget,
    audit_seq: AtomicU64,
    /// Where audit lines are written directly as JSON (the server's log sink); `None`: as a
    /// `tracing` event.
    audit_out: Option<Arc<dyn LineSink>>,
}

impl Gateway {
    /// A gateway serving `policy` in front of `upstream`.
    pub fn new(
        policy: Policy,
        upstream: Arc<Upstream>,
        config: ProxyConfig,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            body_budget: BodyBudget::new(config.body_budget),
            policy: ArcSwap::from_pointee(policy),
            upstream,
            config,
            metrics,
            upstream_ok_at: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            shadow: arc_swap::ArcSwapOption::empty(),
            audit_seq: AtomicU64::new(1),
            audit_out: None,
        }
    }

    /// Write audit lines as JSON straight into `sink` (when the log format is JSON) rather
    /// than through `tracing`'s generic formatter; the `graphguard::audit` log filter still
    /// decides whether they are written.
    pub fn with_audit_sink(mut self, sink: Arc<dyn LineSink>) -> Gateway {
        self.audit_out = Some(sink);
        self
    }
}

/// Headers that belong to one connection (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Client headers that claim an identity or a network position; the gateway sets its own.
const SPOOFABLE: [HeaderName; 9] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// The client end of a connection, as the requests on it forward it: its address rendered once
/// per connection (not per request) as the `X-Forwarded-For` value.
#[derive(Debug, Clone)]
pub struct Peer {
    forwarded_for: HeaderValue,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        // Promoted to shared storage here, so each request's copy is a reference count.
        let forwarded_for = ip_header(addr.ip());
        drop(forwarded_for.clone());
        Peer { forwarded_for }
    }
}

/// The peer's address as a header value, formatted without a heap string.
fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write as _;
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let n = match write!(cursor, "{ip}") {
        Ok(()) => cursor.position() as usize,
        Err(_) => 0,
    };
    HeaderValue::from_bytes(buf.get(..n).unwrap_or_default())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a header belongs to one connection: the standard ones and `Proxy-Connection`.
fn is_hop_by_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(n) || *n == PROXY_CONNECTION
}

/// The header names listed in `Connection` (hop-by-hop too); no allocation when none is.
fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Remove hop-by-hop headers (a response's): one pass over the names, removals only for
/// those present.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named = connection_named(h);
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_hop_by_hop(n) || named.contains(n))
        .cloned()
        .collect();
    for n in doomed {
        h.remove(n);
    }
}

/// The client's headers that may reach the upstream, filtered in place: no hop-by-hop header
/// (RFC 9110 7.6.1, including those named in `Connection`), no identity or position claim,
/// no configured identity header, nothing under the gateway's own `x-graphguard-` prefix, no
/// name with an underscore, no `Expect`, at most one request id. `Host` and `Content-Length` stay: the caller overwrites
/// or removes them. One pass over the names; a typical request loses nothing here, so the
/// map is neither copied nor rebuilt and nothing is allocated.
fn forwardable_headers(policy: &Policy, mut headers: HeaderMap) -> HeaderMap {
    let named = connection_named(&headers);
    let unforwardable = |n: &HeaderName| {
        is_hop_by_hop(n)
            || SPOOFABLE.contains(n)
            || *n == header::EXPECT
            || named.contains(n)
            || policy.user_headers.strip.contains(n)
            || n.as_str().starts_with("x-graphguard-")
            // The server copies headers its `configurable_headers` match into a run's
            // configuration, some after the path's `thread_id`: a header named `thread_id`
            // could name another thread. No standard header has an underscore (nginx drops
            // them by default too).
            || n.as_str().contains('_')
    };
    if headers.keys().any(unforwardable) {
        // Exactly one request id (the gateway's choice), even if a client named it in
        // `Connection`.
        let request_id = headers.get(X_REQUEST_ID).cloned();
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| unforwardable(n))
            .cloned()
            .collect();
        for n in doomed {
            headers.remove(n);
        }
        if let Some(id) = request_id {
            headers.insert(X_REQUEST_ID, id);
        }
    }
    headers.reserve(8);
    headers
}

/// Whether `v` is `n` in canonical decimal (no sign, no leading zero).
fn is_length(v: &HeaderValue, n: usize) -> bool {
    let b = v.as_bytes();
    (b.len() == 1 || b.first() != Some(&b'0'))
        && b.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            == Some(n)
}

fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The response for a refusal.
pub fn error_response(e: &GatewayError) -> Response<RespBody> {
    let (status, ctype, body) = match e.delivery {
        Delivery::Json => (e.status, "application/json", e.json_body()),
        Delivery::SseErrorEvent => (StatusCode::OK, "text/event-stream", e.sse_body()),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    for (n, v) in &e.headers {
        r.headers_mut().append(n.clone(), v.clone());
    }
    r
}

fn reply_response(rep: Reply) -> Response<RespBody> {
    let mut r = Response::new(full(rep.body));
    *r.status_mut() = rep.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (n, v) in rep.headers {
        r.headers_mut().append(n, v);
    }
    r
}

impl Gateway {
    /// Handle one request end to end. Never panics; every failure is a response.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> Response<RespBody> {
        let started = std::time::Instant::now();
        self.metrics.in_flight.inc();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let request_id = request_id(&mut req);
        let policy = self.policy.load_full();
        // An HTTP/1 refusal may leave the request body unread; then the connection cannot be
        // reused, and the client must be told so rather than lose its next request.
        let h1_with_body = req.version() < http::Version::HTTP_2
            && (req.headers().contains_key(header::TRANSFER_ENCODING)
                || req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != b"0"));
        let result = match host_check(&req) {
            Ok(()) => self.handle_inner(req, &peer, &policy).await,
            Err(e) => Err((e, None, None)),
        };
        let (mut resp, user, decision, label) = match result {
            Ok((r, u, d)) => {
                let label = if u.is_some() { "allow" } else { "public" };
                (r, u, d, label)
            }
            Err((e, u, d)) => {
                if e.status == StatusCode::UNAUTHORIZED && u.is_none() {
                    self.metrics
                        .auth_failures
                        .get_or_create(&ReasonLabel {
                            reason: e.auth_failure.map_or("other", AuthFailure::label).into(),
                        })
                        .inc();
                }
                let label = if e.side == Side::Client {
                    "deny"
                } else {
                    "error"
                };
                (error_response(&e), u, d, label)
            }
        };
        if h1_with_body && label != "allow" && label != "public" {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.config.policy_version_header {
            resp.headers_mut().insert(
                HeaderName::from_static("x-graphguard-policy-version"),
                policy.version_header.clone(),
            );
        }
        resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let first = decision
            .as_ref()
            .and_then(|d| d.steps.first().map(|s| s.event));
        let elapsed = started.elapsed();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                resource: first.map_or("none", |e| e.resource.as_str()),
                action: first.map_or("none", |e| e.action.as_str()),
                decision: label,
                status: resp.status().as_u16(),
            })
            .inc();
        self.metrics.request_seconds.observe(elapsed.as_secs_f64());
        self.metrics.in_flight.dec();
        let audited = label != "allow" && label != "public" || self.sample_allowed();
        if audited && tracing::enabled!(target: "graphguard::audit", tracing::Level::INFO) {
            self.audit(
                request_id.to_str().unwrap_or("-"),
                method.as_str(),
                uri.path(),
                resp.status().as_u16(),
                label,
                user.as_deref(),
                decision.as_ref(),
                &policy,
                elapsed,
            );
        }
        resp
    }

    /// Account for a request hyper refused before it reached the gateway (a malformed or
    /// oversized HTTP/1 head), answered with `status` by [`crate::gateway::malformed_head`]: counted and
    /// audited as a denial with no method, path or user.
    pub fn record_unparsed(&self, status: StatusCode, request_id: &HeaderValue) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                resource: "none",
                action: "none",
                decision: "deny",
                status: status.as_u16(),
            })
            .inc();
        if tracing::enabled!(target: "graphguard::audit", tracing::Level::INFO) {
            let policy = self.policy.load();
            self.audit(
                request_id.to_str().unwrap_or("-"),
                "-",
                "-",
                status.as_u16(),
                "deny",
                None,
                None,
                &policy,
                Duration::ZERO,
            );
        }
    }

    /// Whether to log this allowed decision (`audit_sample_allowed`; denials always log).
    fn sample_allowed(&self) -> bool {
        let rate = self.config.audit_sample_allowed;
        if rate >= 1.0 {
            return true;
        }
        if rate <= 0.0 {
            return false;
        }
        let n = self
            .audit_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f64;
        (n * rate).floor() != ((n - 1.0) * rate).floor()
    }

    /// One structured audit event per decision: who, what, which handlers and access
    /// policies decided, the filter and stamping applied, the outcome. Never credentials.
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        request_id: &str,
        method: &str,
        path: &str,
        status: u16,
        label: &str,
        user: Option<&User>,
        decision: Option<&Decision>,
        policy: &Policy,
        elapsed: Duration,
    ) {
        let line = AuditLine {
            request_id,
            method,
            path,
            status,
            decision: label,
            user: user.map_or("-", |u| u.identity.as_str()),
            steps: decision.map_or(&[], |d| d.steps.as_slice()),
            access: decision.map_or(&[], |d| d.access.as_slice()),
            policy: &policy.version,
            elapsed,
        };
        if let Some(sink) = &self.audit_out {
            thread_local! {
                static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            LINE.with_borrow_mut(|buf| {
                buf.clear();
                line.write_json(std::time::SystemTime::now(), buf);
                sink.write_line(buf);
            });
            return;
        }
        tracing::info!(
            target: "graphguard::audit",
            request_id = %line.request_id,
            method = %line.method,
            path = %line.path,
            status = line.status,
            decision = line.decision,
            user = line.user,
            handlers = %line.handlers(),
            access = %line.access(),
            filters = %line.filters(),
            stamped = %line.stamped(),
            policy = %line.policy,
            elapsed_us = elapsed.as_micros() as u64,
            "decision"
        );
    }

    #[allow(clippy::type_complexity)]
    async fn handle_inner(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        policy: &Arc<Policy>,
    ) -> Result<
        (Response<RespBody>, Option<Arc<User>>, Option<Decision>),
        (GatewayError, Option<Arc<User>>, Option<Decision>),
    > {
        let fail = |e: GatewayError| (e, None, None);
        let path = req.uri().path().to_string();
        routes::check_path(&path).map_err(fail)?;
        let method = req.method().clone();
        let classified = routes::classify(&method, &path);
        // Public and blocked routes are decided before authentication, as on the server.
        if let Ok(m) = &classified {
            match routes::admission(m, &path, &policy.public_paths) {
                Admission::Public => {
                    let r = self.forward_public(req, peer, policy).await;
                    return r.map(|r| (r, None, None)).map_err(fail);
                }
                Admission::Blocked => return Err(fail(Admission::refusal())),
                Admission::Authenticate => {}
            }
        }
        let user = authn::authenticate(&policy.authenticators, req.headers())
            .await
            .map_err(fail)?;
        let with_user = |e: GatewayError| (e, Some(user.clone()), None);
        let m = classified.map_err(with_user)?;
        routes::validate_params(&m).map_err(with_user)?;
        if req.headers().get(header::UPGRADE).is_some() {
            return Err(with_user(GatewayError::bad_request(
                "Protocol upgrades are not supported through graphguard",
            )));
        }
        let (parts, body) = req.into_parts();
        let mut held = self.body_budget.reservation();
        let raw = self
            .read_body(&parts.headers, body, &mut held)
            .await
            .map_err(with_user)?;
        let parsed = decide::parse_body(&m, &raw).map_err(with_user)?;
        let input = Input {
            route: &m,
            query: parts.uri.query(),
            body: &parsed,
        };
        let mut facts = Facts::default();
        let decide_started = std::time::Instant::now();
        let cached = |t: &Target| {
            let hit = self.upstream.cached(t);
            if hit.is_some() {
                self.metrics.lookup_hits.inc();
            }
            hit
        };
        let decision = loop {
            match decide::decide_with_cache(policy, &user, &input, &facts, &cached) {
                Next::Done(d) => break d,
                Next::Need(t) => {
                    let (f, hit) = self.upstream.lookup_with_hit(&t).await.map_err(with_user)?;
                    if hit {
                        self.metrics.lookup_hits.inc();
                    } else {
                        self.metrics.lookup_misses.inc();
                    }
                    facts.insert(t, f);
                }
            }
        };
        self.metrics
            .decision_seconds
            .observe(decide_started.elapsed().as_secs_f64());
        if let Some(shadow) = self.shadow.load_full() {
            self.shadow_compare(&shadow, policy, &user, &input, facts, &decision)
                .await;
        }
        drop(parsed);
        // The outcome (with a rewritten body, possibly megabytes) moves out of the decision
        // rather than being copied; what the audit log reads (steps, access) stays.
        let mut decision = decision;
        let outcome = std::mem::replace(
            &mut decision.outcome,
            Outcome::Reply(Reply {
                status: StatusCode::OK,
                body: Vec::new(),
                headers: Vec::new(),
            }),
        );
        let done = |e: GatewayError| (e, Some(user.clone()), Some(decision.clone()));
        match outcome {
            Outcome::Refuse(e) => Err(done(e)),
            Outcome::Reply(r) => Ok((
                reply_response(r),
                Some(user.clone()),
                Some(decision.clone()),
            )),
            Outcome::Forward(mut fwd) => {
                let invalidate = std::mem::take(&mut fwd.invalidate);
                let kept = raw.clone();
                let r = self
                    .forward(policy, parts, raw, fwd, Some(&user), peer)
                    .await;
                // The upstream has answered: the body's buffer is free again unless the
                // connection still holds a piece of it.
                buffers::give_back(kept);
                // Whether or not the forward succeeded, the write may have reached the upstream.
                for t in &invalidate {
                    self.upstream.invalidate(t);
                }
                let r = r.map_err(done)?;
                Ok((r, Some(user.clone()), Some(decision)))
            }
        }
    }

    /// Forward a public route: no user, no handler, and no body (anyone may call a public
    /// route, so an anonymous client cannot make the gateway hold a body).
    async fn forward_public(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        policy: &Arc<Policy>,
    ) -> Result<Response<RespBody>, GatewayError> {
        let fwd = Forward {
            body: None,
            query: None,
            response: ResponsePlan::Stream,
            invalidate: Vec::new(),
            authenticated: false,
        };
        let (parts, body) = req.into_parts();
        if !hyper::body::Body::is_end_stream(&body) {
            return Err(GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Public routes take no request body",
            ));
        }
        self.forward(policy, parts, Bytes::new(), fwd, None, peer)
            .await
    }

    /// Evaluate the shadow policy on the same request and facts (looking up only what the
    /// enforced decision did not already fetch); log and count any disagreement.
    async fn shadow_compare(
        &self,
        shadow: &Policy,
        enforced: &Policy,
        user: &User,
        input: &Input<'_>,
        mut facts: Facts,
        decision: &Decision,
    ) {
        let shadowed = loop {
            match decide::decide(shadow, user, input, &facts) {
                Next::Done(d) => break d,
                Next::Need(t) => match self.upstream.lookup(&t).await {
                    Ok(f) => facts.insert(t, f),
                    Err(e) => {
                        tracing::warn!(error = %e, "shadow evaluation could not look up a resource");
                        return;
                    }
                },
            }
        };
        // A splice's pieces refer to the request body.
        let original: &[u8] = match input.body {
            decide::Body::Object(o) => o.source(),
            _ => &[],
        };
        let summary = |d: &Decision| -> String {
            match &d.outcome {
                Outcome::Forward(f) => format!(
                    "allow body={} query={} plan={:?}",
                    f.body
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(&b.bytes(original)).into_owned())
                        .unwrap_or_default(),
                    f.query.as_deref().unwrap_or(""),
                    f.response
                ),
                Outcome::Reply(r) => format!("reply {}", r.status.as_u16()),
                Outcome::Refuse(e) => format!("deny {} {}", e.status.as_u16(), e.detail),
            }
        };
        let (live, cand) = (summary(decision), summary(&shadowed));
        if live != cand {
            self.metrics.shadow_disagreements.inc();
            tracing::warn!(
                target: "graphguard::shadow",
                user = %user.identity,
                enforced_version = %enforced.version,
                shadow_version = %shadow.version,
                enforced = %live,
                shadow = %cand,
                enforced_steps = ?decision.steps,
                shadow_steps = ?shadowed.steps,
                "shadow policy disagrees"
            );
        }
    }

    /// Read the whole request body within the size limit (413 before the upstream sees it) and
    /// within the budget of body bytes held at once (503 before a byte is read, when its
    /// declared length does not fit; a chunked body is reserved piece by piece).
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        held: &mut Reservation<'_>,
    ) -> Result<Bytes, GatewayError> {
        let too_large = || {
            GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body larger than {} bytes", self.config.max_body),
            )
        };
        let mut expected = 0;
        if let Some(cl) = headers.get(header::CONTENT_LENGTH) {
            let n: u64 = cl
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| GatewayError::bad_request("Invalid Content-Length"))?;
            if n > self.config.max_body as u64 {
                return Err(too_large());
            }
            expected = n as usize;
            if !held.grow(expected) {
                return Err(budget_spent(&self.body_budget));
            }
        }
        // Nothing to read (no Content-Length or a zero one, no chunked body, h2 end of stream):
        // no timer, no collection.
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(Bytes::new());
        }
        // One piece is the body as it is; more are gathered into a reused buffer.
        let gather = async {
            let mut body = Limited::new(body, self.config.max_body);
            let mut first: Option<Bytes> = None;
            let mut gathered: Option<BytesMut> = None;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue; // trailers
                };
                let arrived = first.as_ref().map_or(0, Bytes::len)
                    + gathered.as_ref().map_or(0, BytesMut::len)
                    + data.len();
                if arrived > held.bytes() && !held.grow(arrived - held.bytes()) {
                    return Ok(Err(budget_spent(&self.body_budget)));
                }
                match (&mut gathered, &first) {
                    (Some(g), _) => g.extend_from_slice(&data),
                    (None, None) => first = Some(data),
                    (None, Some(f)) => {
                        let mut g = buffers::take_for(expected, f.len() + data.len());
                        g.extend_from_slice(f);
                        g.extend_from_slice(&data);
                        gathered = Some(g);
                        first = None;
                    }
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Ok(match gathered {
                Some(g) => g.freeze(),
                None => first.unwrap_or_default(),
            }))
        };
        match tokio::time::timeout(self.config.body_timeout, gather).await {
            Err(_) => Err(GatewayError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request body not received in time",
            )),
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Err(too_large())
                } else {
                    Err(GatewayError::bad_request("Request body incomplete"))
                }
            }
        }
    }

    /// The request to send upstream: the client's method, the authorized path (and the
    /// rewritten query, if any), the client's headers minus hop-by-hop, spoofable, credential
    /// and gateway-owned ones, plus the user and forwarding headers.
    #[allow(clippy::too_many_arguments)]
    fn upstream_request(
        &self,
        policy: &Policy,
        parts: http::request::Parts,
        query: Option<&str>,
        body: Outgoing,
        user: Option<&User>,
        peer: &Peer,
    ) -> Result<Request<UpBody>, GatewayError> {
        let http::request::Parts {
            method,
            uri,
            headers,
            ..
        } = parts;
        // The target's authority (absolute form, h2 `:authority`) wins over Host (RFC 9112 3.2.2).
        let client_host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| headers.get(header::HOST).cloned());
        let mut headers = forwardable_headers(policy, headers);
        for a in &policy.authenticators {
            a.strip_credentials(&mut headers);
        }
        if let Some(u) = user {
            let uh = &policy.user_headers;
            let v = u.header_values();
            for (name, value) in [
                (&uh.identity, &v.identity),
                (&uh.display_name, &v.display_name),
                (&uh.permissions, &v.permissions),
                (&uh.roles, &v.roles),
            ] {
                if let Some(value) = value {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
        headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(h) = client_host {
            headers.insert(X_FORWARDED_HOST, h);
        }
        if !body.is_empty() || method != Method::GET && method != Method::HEAD {
            // The client's own value when it is exactly this body's length (no allocation).
            let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
            let same = lengths.next().is_some_and(|v| is_length(v, body.len()));
            if !same || lengths.next().is_some() {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
        } else {
            headers.remove(header::CONTENT_LENGTH);
        }
        headers.insert(header::HOST, self.upstream.host().clone());
        // The path is forwarded exactly as authorized; an unchanged query shares its bytes.
        let path_and_query = match (query, uri.path_and_query()) {
            (None, Some(pq)) if pq.query() != Some("") => pq.clone(),
            (None, None) => http::uri::PathAndQuery::from_static("/"),
            (None, Some(_)) => http::uri::PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(
                uri.path().as_bytes(),
            ))
            .map_err(|e| GatewayError::bad_request(format!("invalid request target: {e}")))?,
            (Some(q), _) => {
                let pq = if q.is_empty() {
                    uri.path().to_owned()
                } else {
                    format!("{}?{q}", uri.path())
                };
                http::uri::PathAndQuery::from_maybe_shared(Bytes::from(pq)).map_err(|e| {
                    GatewayError::bad_request(format!("invalid request target: {e}"))
                })?
            }
        };
        let mut req = Request::new(body.map_err(|never| match never {}).boxed_unsync());
        *req.method_mut() = method;
        // Origin form: the pool sends to its one upstream.
        *req.uri_mut() = http::Uri::from(path_and_query);
        *req.headers_mut() = headers;
        Ok(req)
    }

    async fn forward(
        &self,
        policy: &Policy,
        parts: http::request::Parts,
        raw: Bytes,
        fwd: Forward,
        user: Option<&User>,
        peer: &Peer,
    ) -> Result<Response<RespBody>, GatewayError> {
        let query = fwd.query.as_deref();
        let body = Outgoing::for_request(raw, fwd.body);
        match fwd.response {
            ResponsePlan::Search(plan) => self.search(policy, body.into_bytes(), &plan, user).await,
            ResponsePlan::Stream => {
                let req = self.upstream_request(policy, parts, query, body, user, peer)?;
                let t = std::time::Instant::now();
                let resp = self.upstream.send(req).await?;
                self.metrics
                    .upstream_seconds
                    .observe(t.elapsed().as_secs_f64());
                Ok(self.stream_back(resp))
            }
            ResponsePlan::FilterList { filter, empty } => {
                let req = self.upstream_request(policy, parts, query, body, user, peer)?;
                let resp = self.upstream.send(req).await?;
                self.filtered(resp, |item| filter.matches(metadata_ref(item)), empty)
                    .await
            }
            ResponsePlan::StoreItems { filter, access } => {
                let req = self.upstream_request(policy, parts, query, body, user, peer)?;
                let resp = self.upstream.send(req).await?;
                let keep = |item: &Value| {
                    let value = item
                        .get("value")
                        .and_then(Value::as_object)
                        .unwrap_or_else(|| empty_map());
                    filter.as_ref().is_none_or(|f| f.matches(value))
                        && user.is_none_or(|u| {
                            access.iter().all(|e| policy.access.allows(u, *e, value))
                        })
                };
                self.filtered(resp, keep, None).await
            }
        }
    }

    /// Stream an upstream response back chunk by chunk (SSE included), with an idle timeout.
    fn stream_back(&self, resp: Response<PooledBody>) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body =
            crate::gateway::idle::IdleTimeout::new(body, self.config.idle_timeout).boxed_unsync();
        Response::from_parts(parts, body)
    }

    async fn read_upstream(
        &self,
        resp: Response<PooledBody>,
    ) -> Result<(http::response::Parts, Bytes), GatewayError> {
        let (parts, body) = resp.into_parts();
        let body = crate::gateway::idle::IdleTimeout::new(body, self.config.idle_timeout);
        let bytes = Limited::new(body, self.config.max_filtered_response)
            .collect()
            .await
            .map_err(|_| {
                GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "Upstream response unreadable or too large",
                )
            })?
            .to_bytes();
        Ok((parts, bytes))
    }

    /// Filter a JSON response: an array, or an object with `items` (store search).
    async fn filtered(
        &self,
        resp: Response<PooledBody>,
        keep: impl Fn(&Value) -> bool,
        empty: Option<GatewayError>,
    ) -> Result<Response<RespBody>, GatewayError> {
        let (mut parts, bytes) = self.read_upstream(resp).await?;
        if !parts.status.is_success() {
            strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, full(bytes)));
        }
        let bad = || {
            GatewayError::upstream(
                StatusCode::BAD_GATEWAY,
                "Upstream answered an unexpected shape",
            )
        };
        let mut v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let items = match &mut v {
            Value::Array(items) => items,
            Value::Object(o) => match o.get_mut("items") {
                Some(Value::Array(items)) => items,
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        items.retain(|i| keep(i));
        if items.is_empty() {
            if let Some(e) = empty {
                return Err(e);
            }
        }
        let out = serde_json::to_vec(&v).map_err(|e| GatewayError::internal(e.to_string()))?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Response::from_parts(parts, full(out)))
    }

    /// A search the upstream cannot filter exactly: page through from offset 0 and keep what
    /// passes, then answer the client's window with pagination headers computed the way the
    /// server computes them.
    async fn search(
        &self,
        policy: &Policy,
        body: Bytes,
        plan: &SearchPlan,
        user: Option<&User>,
    ) -> Result<Response<RespBody>, GatewayError> {
        const PAGE: u64 = 200;
        let mut spent = Spent {
            requests: 0,
            limit: policy.search_max_requests,
        };
        let base = ObjectBody::parse(&body, decide::MAX_JSON_DEPTH)
            .map_err(|_| GatewayError::internal("rewritten search body does not parse"))?;
        let want = plan.offset.saturating_add(plan.limit);
        let mut kept: Vec<Value> = Vec::new();
        let mut more = false;
        for page in 0.. {
            if let Err(e) = spent.one() {
                // The client's window is complete; only whether more exist is unknown.
                if !plan.count && kept.len() as u64 >= want {
                    more = true;
                    break;
                }
                return Err(e);
            }
            let limit = PAGE.to_string();
            let offset = (page * PAGE).to_string();
            let b = base.splice(&[
                ("limit", Some(limit.as_bytes())),
                ("offset", Some(offset.as_bytes())),
            ]);
            let (status, headers, bytes) =
                self.upstream.json(Method::POST, plan.path, Some(b)).await?;
            if !status.is_success() {
                let mut r = Response::new(full(bytes));
                *r.status_mut() = status;
                if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                }
                return Ok(r);
            }
            let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(|_| {
                GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "Upstream search answered an unexpected shape",
                )
            })?;
            let n = items.len() as u64;
            for item in items {
                if self.passes(policy, plan, user, &item, &mut spent).await? {
                    if !plan.count && kept.len() as u64 >= want {
                        more = true;
                        break;
                    }
                    kept.push(item);
                }
            }
            if more || n < PAGE {
                break;
            }
        }
        if plan.count {
            return Ok(reply_response(Reply {
                status: StatusCode::OK,
                body: kept.len().to_string().into_bytes(),
                headers: Vec::new(),
            }));
        }
        let window: Vec<Value> = kept
            .into_iter()
            .skip(plan.offset as usize)
            .take(plan.limit as usize)
            .collect();
        let mut headers = Vec::new();
        let total = if more {
            headers.push((
                HeaderName::from_static("x-pagination-next"),
                HeaderValue::from(want),
            ));
            want + 1
        } else {
            plan.offset + window.len() as u64
        };
        headers.push((
            HeaderName::from_static("x-pagination-total"),
            HeaderValue::from(total),
        ));
        let body =
            serde_json::to_vec(&window).map_err(|e| GatewayError::internal(e.to_string()))?;
        Ok(reply_response(Reply {
            status: StatusCode::OK,
            body,
            headers,
        }))
    }

    async fn passes(
        &self,
        policy: &Policy,
        plan: &SearchPlan,
        user: Option<&User>,
        item: &Value,
        spent: &mut Spent,
    ) -> Result<bool, GatewayError> {
        let md = metadata_ref(item);
        if let Some(f) = &plan.filter {
            if !f.matches(md) {
                return Ok(false);
            }
        }
        if let Some(u) = user {
            if !plan.access.iter().all(|e| policy.access.allows(u, *e, md)) {
                return Ok(false);
            }
        }
        if let Some(tf) = &plan.thread_filter {
            if let Some(tid) = item.get("thread_id").and_then(Value::as_str) {
                let t = Target::Thread(tid.to_string());
                let thread = match self.upstream.cached(&t) {
                    Some(f) => f,
                    None => {
                        spent.one()?;
                        self.upstream.lookup(&t).await?
                    }
                };
                let md = thread.as_deref().map_or(empty_map(), metadata_ref);
                if !tf.matches(md) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// The upstream requests a gateway-completed search has made, against its bound
/// (`settings.search.max_upstream_requests`).
struct Spent {
    requests: u32,
    limit: u32,
}

impl Spent {
    /// Count one more upstream request, or refuse the search: rather than an answer that
    /// silently misses results, the client learns that the search is too broad for the gateway.
    fn one(&mut self) -> Result<(), GatewayError> {
        if self.requests >= self.limit {
            return Err(GatewayError::bad_request(format!(
                "Search too broad for graphguard to filter: it needs more than {} upstream \
                 requests (settings.search.max_upstream_requests); narrow it with metadata the \
                 agent server can match, or a smaller offset",
                self.limit
            )));
        }
        self.requests += 1;
        Ok(())
    }
}

/// 503 for a body the budget of bytes held at once cannot cover.
fn budget_spent(budget: &BodyBudget) -> GatewayError {
    let mut e = GatewayError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "graphguard is holding its limit of {} request-body bytes; retry shortly",
            budget.limit()
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
    e.side = Side::Internal;
    e
}

/// HTTP/1.1 requires exactly one Host (RFC 9112 3.2); HTTP/2 carries `:authority` instead.
fn host_check(req: &Request<Incoming>) -> Result<(), GatewayError> {
    if req.version() != http::Version::HTTP_11 {
        return Ok(());
    }
    match req.headers().get_all(header::HOST).iter().count() {
        1 => Ok(()),
        0 => Err(GatewayError::bad_request("Missing Host header")),
        _ => Err(GatewayError::bad_request("More than one Host header")),
    }
}

/// The request id: the client's `x-request-id` if it is sane, else a new one; written back
/// into the request so the upstream sees the same id.
fn request_id(req: &mut Request<Incoming>) -> HeaderValue {
    let sane = |v: &HeaderValue| v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic);
    if let Some(v) = req.headers().get(X_REQUEST_ID).filter(|v| sane(v)) {
        return v.clone();
    }
    let id = new_request_id();
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A fresh version-4 UUID from a per-thread generator (splitmix64) seeded once per thread by
/// the operating system: ids must be unique, not secret, and a system call per request for
/// them costs more than the rest of the id.
pub(crate) fn new_request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    fn splitmix(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (hi, lo) = STATE.with(|s| (splitmix(s), splitmix(s)));
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&hi.to_le_bytes());
    random[8..].copy_from_slice(&lo.to_le_bytes());
    let id = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}
