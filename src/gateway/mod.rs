//! The request path: authenticate -> classify -> decide (with lookups) -> rewrite -> forward
//! -> stream back.
//!
//! Each request reads one policy snapshot from start to end. Refusals are JSON
//! `{"detail": ...}` (or an SSE `error` event where the agent server reports errors that way),
//! never a forward: what the gateway cannot classify, parse or decide is refused.

mod headers;
pub mod idle;
mod limit;
pub mod malformed_head;
mod pipeline;
pub mod pool;
mod search;
pub mod server;
mod shadow;
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
use crate::error::{AuthFailure, Delivery, GatewayError, LimitHit, Side};
use crate::gateway::headers::*;
pub use crate::gateway::limit::LimitBackend;
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

/// The management API (roles and access policies, `ops::manage`), reached through the
/// gateway's own listener by an authenticated caller holding the management permission.
#[async_trait::async_trait]
pub trait Management: Send + Sync {
    /// Answer one request (its head and body), with the snapshot being enforced.
    async fn answer(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        policy: &Policy,
        user: &User,
    ) -> Response<Bytes>;
}

/// Where the management API lives; nothing under it is ever forwarded.
pub const MANAGEMENT_PREFIX: &str = "/api/v1/";

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
    /// The management API (`/api/v1/...`), when a policy store is configured.
    pub management: std::sync::OnceLock<Arc<dyn Management>>,
    /// The limiter the policy's `limits:` count against.
    pub limits: LimitBackend,
    /// Tells the other replicas on the same Redis which cached lookups a write made stale.
    pub bus: Option<Arc<crate::limits::bus::Bus>>,
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
            management: std::sync::OnceLock::new(),
            limits: LimitBackend {
                limiter: Arc::new(crate::limits::local::Local::new(1 << 20)),
                lease_ttl: crate::limits::DEFAULT_LEASE_TTL,
            },
            bus: None,
            audit_seq: AtomicU64::new(1),
            audit_out: None,
        }
    }

    /// Count limits against `backend` (the default is an in-process limiter).
    pub fn with_limits(mut self, backend: LimitBackend) -> Gateway {
        self.limits = backend;
        self
    }

    /// Publish the lookups a write made stale on `bus`, for every replica to evict.
    pub fn with_bus(mut self, bus: Arc<crate::limits::bus::Bus>) -> Gateway {
        self.bus = Some(bus);
        self
    }

    /// Write audit lines as JSON straight into `sink` (when the log format is JSON) rather
    /// than through `tracing`'s generic formatter; the `graphguard::audit` log filter still
    /// decides whether they are written.
    pub fn with_audit_sink(mut self, sink: Arc<dyn LineSink>) -> Gateway {
        self.audit_out = Some(sink);
        self
    }
}

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
