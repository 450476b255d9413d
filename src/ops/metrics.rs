//! Prometheus metrics (`prometheus-client`), served on the admin listener.

use std::sync::atomic::AtomicU64;

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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register everything under the `graphguard` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("graphguard");
        let requests = Family::<RequestLabels, Counter>::default();
        let lat = || Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        let request_seconds = lat();
        let decision_seconds = lat();
        let upstream_seconds = lat();
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        let lookup_hits = Counter::default();
        let lookup_misses = Counter::default();
        let reloads = Family::<ReasonLabel, Counter>::default();
        let policy_version = Family::<VersionLabel, Gauge>::default();
        let policy_last_success = Gauge::<f64, AtomicU64>::default();
        let in_flight = Gauge::default();
        let open_connections = Gauge::default();
        let shadow_disagreements = Counter::default();
        let jwt_verifications = Gauge::default();
        let jwks_fetches = Gauge::default();
        let jwks_fetch_failures = Gauge::default();
        let forward_auth_calls = Gauge::default();
        let upstream_idle_connections = Gauge::default();
        let upstream_connections_opened = Gauge::default();
        let upstream_resent_requests = Gauge::default();
        registry.register(
            "upstream_idle_connections",
            "Idle keep-alive connections to the upstream",
            upstream_idle_connections.clone(),
        );
        registry.register(
            "upstream_connections_opened",
            "Connections opened to the upstream since start",
            upstream_connections_opened.clone(),
        );
        registry.register(
            "upstream_resent_requests",
            "Requests sent again after a reused upstream connection refused them unsent",
            upstream_resent_requests.clone(),
        );
        registry.register(
            "jwt_signature_verifications",
            "Token signature verifications (verified-token cache misses) since the policy loaded",
            jwt_verifications.clone(),
        );
        registry.register(
            "jwks_fetches",
            "JWKS and discovery fetches since the policy loaded",
            jwks_fetches.clone(),
        );
        registry.register(
            "jwks_fetch_failures",
            "Failed JWKS and discovery fetches since the policy loaded",
            jwks_fetch_failures.clone(),
        );
        registry.register(
            "forward_auth_calls",
            "Calls to external authenticate endpoints (answer-cache misses) since the policy loaded",
            forward_auth_calls.clone(),
        );
        registry.register(
            "requests",
            "Requests by resource, action, decision and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to response headers",
            request_seconds.clone(),
        );
        registry.register(
            "decision_duration_seconds",
            "Authentication, classification and decision, lookups included",
            decision_seconds.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Upstream time to response headers",
            upstream_seconds.clone(),
        );
        registry.register(
            "auth_failures",
            "Authentication failures by reason",
            auth_failures.clone(),
        );
        registry.register(
            "lookup_cache_hits",
            "Resource lookups answered from cache",
            lookup_hits.clone(),
        );
        registry.register(
            "lookup_cache_misses",
            "Resource lookups sent upstream",
            lookup_misses.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads by result",
            reloads.clone(),
        );
        registry.register(
            "policy_version",
            "The loaded policy version (1)",
            policy_version.clone(),
        );
        registry.register(
            "policy_last_success_timestamp_seconds",
            "Unix time of the last successful policy load",
            policy_last_success.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests in flight",
            in_flight.clone(),
        );
        registry.register(
            "shadow_disagreements",
            "Requests on which the shadow policy decided differently",
            shadow_disagreements.clone(),
        );
        registry.register(
            "open_connections",
            "Open client connections",
            open_connections.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            decision_seconds,
            upstream_seconds,
            auth_failures,
            lookup_hits,
            lookup_misses,
            reloads,
            policy_version,
            policy_last_success,
            in_flight,
            open_connections,
            shadow_disagreements,
            jwt_verifications,
            jwks_fetches,
            jwks_fetch_failures,
            forward_auth_calls,
            upstream_idle_connections,
            upstream_connections_opened,
            upstream_resent_requests,
        }
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
