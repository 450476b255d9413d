//! The limit phase: after a request is authorized (a denied request spends nothing), every
//! limit of the policy whose events the route raises and whose `when` holds for the user is
//! checked, all in one call to the limiter. Either all pass and all are spent, or the request
//! is refused with 429 naming the limit. Concurrency slots are held as leases for the life of
//! the response body, renewed while it streams, released when it ends.
//!
//! A request no limit matches never reaches the limiter (with no `limits:` section this phase
//! is one branch).

use super::*;
use crate::body::guarded::Guarded;
use crate::clock::ceil_secs;
use crate::limits::{self, Lease, LimitError, Limiter, Verdict};
use crate::policy::limits::{Applied, OnError, Quota};
use crate::routes::RouteMatch;

/// What the limits let through: the leases to hold while the response streams, and the
/// `RateLimit-Policy` / `RateLimit` headers to send.
#[derive(Default)]
pub(super) struct Admitted {
    leases: Vec<Lease>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The limiter a gateway checks against, and how long its leases outlive a renewal.
pub struct LimitBackend {
    /// The backend (in-process or Redis).
    pub limiter: Arc<dyn Limiter>,
    /// How long a concurrency lease outlives its last renewal.
    pub lease_ttl: Duration,
}

impl Gateway {
    /// Check the limits that apply to an authorized request.
    pub(super) async fn limit(
        &self,
        policy: &Policy,
        route: &RouteMatch,
        units: u32,
        user: &User,
    ) -> Result<Admitted, GatewayError> {
        if policy.limits.is_empty() {
            return Ok(Admitted::default());
        }
        let applied = policy
            .limits
            .applicable(route.route.events, units, user)
            .map_err(GatewayError::forbidden)?;
        if applied.is_empty() {
            return Ok(Admitted::default());
        }
        if let Some(e) = oversized(&applied) {
            return Err(e);
        }
        let backend = &self.limits;
        let checks: Vec<_> = applied
            .iter()
            .map(|a| limits::check_of(a, backend.lease_ttl))
            .collect();
        match backend.limiter.check(&checks).await {
            Ok((verdicts, leases)) => {
                self.metrics.limits_backend_up.set(1);
                self.judge(policy, &applied, &verdicts, leases)
            }
            Err(e) => {
                self.metrics.limits_backend_up.set(0);
                self.unchecked(&applied, &e)
            }
        }
    }

    /// The limiter answered: all passed (spent), or the first refusal.
    fn judge(
        &self,
        policy: &Policy,
        applied: &[Applied<'_>],
        verdicts: &[Verdict],
        leases: Vec<Lease>,
    ) -> Result<Admitted, GatewayError> {
        let refused = verdicts.iter().position(|v| !v.is_allowed());
        for (a, v) in applied.iter().zip(verdicts) {
            let outcome = if v.is_allowed() { "allowed" } else { "refused" };
            if refused.is_none() || !v.is_allowed() {
                self.metrics.limit_checked(&a.limit.name, outcome);
            }
        }
        let headers = rate_limit_headers(applied, verdicts);
        let Some(i) = refused else {
            let headers = if policy.rate_limit_headers {
                headers
            } else {
                Vec::new()
            };
            return Ok(Admitted { leases, headers });
        };
        let (a, v) = (&applied[i], verdicts[i]);
        let mut e = GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many requests: limit {} allows {}",
                a.limit.name,
                a.limit.describe()
            ),
        );
        if let Verdict::Limited { retry_after, .. } = v {
            e.headers.push((
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(retry_after)),
            ));
        }
        e.headers.extend(headers);
        e.limit = Some(hit(a));
        Err(e)
    }

    /// The limiter could not be asked: each limit's `on_error` says what that means; the
    /// first limit that denies refuses the request with 503.
    fn unchecked(
        &self,
        applied: &[Applied<'_>],
        why: &LimitError,
    ) -> Result<Admitted, GatewayError> {
        for a in applied {
            self.metrics.limit_checked(&a.limit.name, "error");
        }
        let Some(a) = applied.iter().find(|a| a.limit.on_error == OnError::Deny) else {
            tracing::warn!(error = %why, "limiter unavailable; the limits that apply allow on error");
            return Ok(Admitted::default());
        };
        tracing::warn!(error = %why, limit = %a.limit.name, "limiter unavailable; refusing");
        let mut e = GatewayError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Limit {} cannot be checked now (the limiter is unavailable); retry later",
                a.limit.name
            ),
        );
        e.side = crate::error::Side::Internal;
        e.headers
            .push((header::RETRY_AFTER, HeaderValue::from(1u64)));
        e.limit = Some(hit(a));
        Err(e)
    }

    /// Hold the leases for the life of the response body (renewed while it streams) and add
    /// the rate-limit headers.
    pub(super) fn hold(&self, admitted: Admitted, resp: Response<RespBody>) -> Response<RespBody> {
        let Admitted { leases, headers } = admitted;
        if leases.is_empty() && headers.is_empty() {
            return resp;
        }
        let (mut parts, body) = resp.into_parts();
        for (name, value) in headers {
            parts.headers.append(name, value);
        }
        if leases.is_empty() {
            return Response::from_parts(parts, body);
        }
        let held = Held::new(leases, self.limits.limiter.clone(), self.limits.lease_ttl);
        Response::from_parts(parts, BodyExt::boxed_unsync(Guarded::new(body, held)))
    }
}

/// A batch that asks for more than a limit's bucket holds can never pass: 429 without a
/// `Retry-After`, as waiting would not help.
fn oversized(applied: &[Applied<'_>]) -> Option<GatewayError> {
    applied.iter().find_map(|a| match a.limit.quota {
        Quota::Rate {
            requests, burst, ..
        } if a.cost > requests.saturating_add(burst) => {
            let mut e = GatewayError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many requests: this request counts {} against limit {}, which allows {}",
                    a.cost,
                    a.limit.name,
                    a.limit.describe()
                ),
            );
            e.limit = Some(hit(a));
            Some(e)
        }
        _ => None,
    })
}

fn hit(a: &Applied<'_>) -> Box<LimitHit> {
    Box::new(LimitHit {
        name: a.limit.name.to_string(),
        key: a.key.clone(),
    })
}

/// The IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers):
/// one list member per limit, named after it: `"free-runs";q=20;w=3600` (written once, when
/// the policy compiled) and `"free-runs";r=19;t=180`.
fn rate_limit_headers(
    applied: &[Applied<'_>],
    verdicts: &[Verdict],
) -> Vec<(HeaderName, HeaderValue)> {
    let mut policy = String::with_capacity(32 * applied.len());
    let mut state = String::with_capacity(32 * applied.len());
    let mut n = itoa::Buffer::new();
    for (a, v) in applied.iter().zip(verdicts) {
        if !policy.is_empty() {
            policy.push_str(", ");
            state.push_str(", ");
        }
        policy.push_str(a.limit.policy_member());
        let reset = match *v {
            Verdict::Allowed { reset, .. } | Verdict::Limited { reset, .. } => reset,
        };
        let t = if reset.is_zero() { 0 } else { ceil_secs(reset) };
        state.push_str(a.limit.header_name());
        state.push_str(";r=");
        state.push_str(n.format(v.remaining()));
        state.push_str(";t=");
        state.push_str(n.format(t));
    }
    let mut out = Vec::with_capacity(2);
    for (name, v) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
        if let Ok(v) = HeaderValue::try_from(v) {
            out.push((HeaderName::from_static(name), v));
        }
    }
    out
}

const RATELIMIT_POLICY: &str = "ratelimit-policy";
const RATELIMIT: &str = "ratelimit";

/// Leases held by a response: renewed every `ttl / 3` by a task that holds only a weak
/// reference, released (dropped) when the response body is.
struct Held {
    _leases: Arc<Vec<Lease>>,
    renewal: tokio::task::AbortHandle,
}

impl Held {
    fn new(leases: Vec<Lease>, limiter: Arc<dyn Limiter>, ttl: Duration) -> Held {
        let leases = Arc::new(leases);
        let weak = Arc::downgrade(&leases);
        let every = (ttl / 3).max(Duration::from_millis(100));
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(leases) = weak.upgrade() else { return };
                if let Err(e) = limiter.renew(&leases).await {
                    tracing::warn!(error = %e, "renewing concurrency leases failed");
                }
            }
        })
        .abort_handle();
        Held {
            _leases: leases,
            renewal,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}
