//! Prometheus metrics (`prometheus-client`), served on the admin listener.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// First event's resource, or `none` (public, refused before classification).
    pub resource: &'static str,
    /// First event's action, or `none`.
    pub action: &'static str,
    /// `allow`, `deny`, `public` or `error`.
    pub decision: &'static str,
    /// HTTP status.
    pub status: u16,
}

/// The family looks a request's counter up by these labels on every request with SipHash;
/// hashing one word instead of three strings makes that lookup a fraction of its cost. Labels
/// that are equal give equal words; the rare different labels with the same word are told
/// apart by `Eq`.
impl std::hash::Hash for RequestLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        fn sig(s: &str) -> u64 {
            let b = s.as_bytes();
            let end = |i: Option<&u8>| u64::from(i.copied().unwrap_or(0));
            ((b.len() as u64) << 16)
                | (end(b.first()) << 8)
                | (end(b.get(b.len() / 2)) ^ end(b.last()))
        }
        state.write_u64(
            sig(self.resource)
                ^ sig(self.action).rotate_left(21)
                ^ sig(self.decision).rotate_left(42)
                ^ (u64::from(self.status) << 48),
        );
    }
}

/// A label with one string value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason or result.
    pub reason: String,
}

/// A limit check's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit's name (shared with the compiled limit: counting allocates nothing).
    pub limit: Arc<str>,
    /// `allowed`, `refused` or `error` (the limiter could not be asked).
    pub outcome: &'static str,
}

/// The policy version currently loaded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// Content hash.
    pub version: String,
}

/// Every metric of the gateway.
pub struct Metrics {
    /// The registry, for encoding.
    pub registry: Registry,
    /// Requests by resource, action, decision and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Whole-request latency (seconds, to response headers).
    pub request_seconds: Histogram,
    /// Decision latency (authenticate + classify + decide, lookups included).
    pub decision_seconds: Histogram,
    /// Upstream latency to response headers.
    pub upstream_seconds: Histogram,
    /// Authentication failures by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Lookups served from cache.
    pub lookup_hits: Counter,
    /// Lookups that went upstream.
    pub lookup_misses: Counter,
    /// Policy reloads by result (`ok`, `error`).
    pub reloads: Family<ReasonLabel, Counter>,
    /// 1 for the loaded version.
    pub policy_version: Family<VersionLabel, Gauge>,
    /// Unix time of the last successful load.
    pub policy_last_success: Gauge<f64, AtomicU64>,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Open client connections.
    pub open_connections: Gauge,
    /// Requests on which the shadow policy decided differently.
    pub shadow_disagreements: Counter,
    /// Token signature verifications (verified-token cache misses) since the policy loaded.
    pub jwt_verifications: Gauge,
    /// JWKS and discovery fetches since the policy loaded.
    pub jwks_fetches: Gauge,
    /// Failed JWKS and discovery fetches since the policy loaded.
    pub jwks_fetch_failures: Gauge,
    /// Calls to external authenticate endpoints (answer-cache misses) since the policy loaded.
    pub forward_auth_calls: Gauge,
    /// Idle keep-alive connections to the upstream.
    pub upstream_idle_connections: Gauge,
    /// Connections opened to the upstream since start.
    pub upstream_connections_opened: Gauge,
    /// Requests sent again after a reused upstream connection refused them unsent.
    pub upstream_resent_requests: Gauge,
    /// 1 while the policy store answers, 0 while it does not (absent without a store).
    pub policy_store_up: Gauge,
    /// The policy store revision being enforced.
    pub policy_store_revision: Gauge,
    /// Changes made through the management API.
    pub policy_changes: Counter,
    /// Limit checks by limit and outcome.
    pub limit_checks: Family<LimitLabels, Counter>,
    /// 1 while the limiter answered its last call, 0 after it failed.
    pub limits_backend_up: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register everything under the `graphguard` prefix.
    pub fn new() -> Metrics {
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        let mut m = Metrics {
            registry: Registry::with_prefix("graphguard"),
            requests: Family::default(),
            request_seconds: latency(),
            decision_seconds: latency(),
            upstream_seconds: latency(),
            auth_failures: Family::default(),
            lookup_hits: Counter::default(),
            lookup_misses: Counter::default(),
            reloads: Family::default(),
            policy_version: Family::default(),
            policy_last_success: Gauge::default(),
            in_flight: Gauge::default(),
            open_connections: Gauge::default(),
            shadow_disagreements: Counter::default(),
            jwt_verifications: Gauge::default(),
            jwks_fetches: Gauge::default(),
            jwks_fetch_failures: Gauge::default(),
            forward_auth_calls: Gauge::default(),
            upstream_idle_connections: Gauge::default(),
            upstream_connections_opened: Gauge::default(),
            upstream_resent_requests: Gauge::default(),
            policy_store_up: Gauge::default(),
            policy_store_revision: Gauge::default(),
            policy_changes: Counter::default(),
            limit_checks: Family::default(),
            limits_backend_up: Gauge::default(),
        };
        m.register_all();
        m
    }

    /// Register every metric (the order is the exposition order).
    #[rustfmt::skip]
    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register("upstream_idle_connections", "Idle keep-alive connections to the upstream", self.upstream_idle_connections.clone());
        r.register("upstream_connections_opened", "Connections opened to the upstream since start", self.upstream_connections_opened.clone());
        r.register("upstream_resent_requests", "Requests sent again after a reused upstream connection refused them unsent", self.upstream_resent_requests.clone());
        r.register("jwt_signature_verifications", "Token signature verifications (verified-token cache misses) since the policy loaded", self.jwt_verifications.clone());
        r.register("jwks_fetches", "JWKS and discovery fetches since the policy loaded", self.jwks_fetches.clone());
        r.register("jwks_fetch_failures", "Failed JWKS and discovery fetches since the policy loaded", self.jwks_fetch_failures.clone());
        r.register("forward_auth_calls", "Calls to external authenticate endpoints (answer-cache misses) since the policy loaded", self.forward_auth_calls.clone());
        r.register("requests", "Requests by resource, action, decision and status", self.requests.clone());
        r.register("request_duration_seconds", "Time to response headers", self.request_seconds.clone());
        r.register("decision_duration_seconds", "Authentication, classification and decision, lookups included", self.decision_seconds.clone());
        r.register("upstream_duration_seconds", "Upstream time to response headers", self.upstream_seconds.clone());
        r.register("auth_failures", "Authentication failures by reason", self.auth_failures.clone());
        r.register("lookup_cache_hits", "Resource lookups answered from cache", self.lookup_hits.clone());
        r.register("lookup_cache_misses", "Resource lookups sent upstream", self.lookup_misses.clone());
        r.register("policy_reloads", "Policy reloads by result", self.reloads.clone());
        r.register("policy_version", "The loaded policy version (1)", self.policy_version.clone());
        r.register("policy_last_success_timestamp_seconds", "Unix time of the last successful policy load", self.policy_last_success.clone());
        r.register("in_flight_requests", "Requests in flight", self.in_flight.clone());
        r.register("shadow_disagreements", "Requests on which the shadow policy decided differently", self.shadow_disagreements.clone());
        r.register("open_connections", "Open client connections", self.open_connections.clone());
        r.register("limit_checks", "Limit checks by limit and outcome (allowed, refused, error)", self.limit_checks.clone());
        r.register("limits_backend_up", "1 while the limiter answered its last call, 0 after it failed", self.limits_backend_up.clone());
    }

    /// Register the policy store's metrics (only when a store is configured).
    #[rustfmt::skip]
    pub fn register_store(&mut self) {
        let r = &mut self.registry;
        r.register("policy_store_up", "1 while the policy store answers, 0 while it does not", self.policy_store_up.clone());
        r.register("policy_store_revision", "The policy store revision being enforced", self.policy_store_revision.clone());
        r.register("policy_changes", "Changes made through the management API", self.policy_changes.clone());
    }

    /// Count one limit check.
    pub fn limit_checked(&self, limit: &Arc<str>, outcome: &'static str) {
        let labels = LimitLabels {
            limit: limit.clone(),
            outcome,
        };
        self.limit_checks.get_or_create(&labels).inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Read the authenticators' own counters into gauges (called at scrape time).
    pub fn observe_authenticators(&self, authenticators: &[crate::authn::Authenticator]) {
        use crate::authn::Authenticator;
        let (mut ver, mut fetches, mut failures, mut calls) = (0u64, 0u64, 0u64, 0u64);
        for a in authenticators {
            match a {
                Authenticator::Jwt(j) => {
                    ver += j.verification_count();
                    if let crate::authn::jwt::remote::KeySource::Remote(r) = j.key_source_ref() {
                        fetches += r.fetch_count();
                        failures += r.failure_count();
                    }
                }
                Authenticator::Forward(f) => calls += f.call_count(),
                _ => {}
            }
        }
        let g = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.jwt_verifications.set(g(ver));
        self.jwks_fetches.set(g(fetches));
        self.jwks_fetch_failures.set(g(failures));
        self.forward_auth_calls.set(g(calls));
    }

    /// Read the upstream pool's counts into gauges (called at scrape time).
    pub fn observe_pool(&self, stats: crate::gateway::pool::PoolStats) {
        let g = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.upstream_idle_connections.set(g(stats.idle as u64));
        self.upstream_connections_opened.set(g(stats.opened));
        self.upstream_resent_requests.set(g(stats.resent));
    }

    /// Record a loaded policy version.
    pub fn set_version(&self, version: &str) {
        self.policy_version.clear();
        self.policy_version
            .get_or_create(&VersionLabel {
                version: version.to_string(),
            })
            .set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.policy_last_success.set(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&RequestLabels {
                resource: "threads",
                action: "read",
                decision: "deny",
                status: 404,
            })
            .inc();
        m.set_version("abc123");
        let text = m.encode();
        assert!(text.contains(r#"graphguard_requests_total{resource="threads",action="read",decision="deny",status="404"} 1"#), "{text}");
        assert!(
            text.contains(r#"graphguard_policy_version{version="abc123"} 1"#),
            "{text}"
        );
    }
}
