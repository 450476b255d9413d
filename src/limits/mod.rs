//! Quotas and rate limits: the limiter backends under the policy's `limits:` section.
//!
//! A request's limits arrive as [`Check`]s, already keyed by the caller ("free-runs:alice").
//! A [`Limiter`] decides all of one request's checks at once: either every check passes and
//! every one is spent (rate units taken, concurrency slots acquired as [`Lease`]s), or none is
//! spent and the [`Verdict`]s say which failed. Half-spent requests would let a refused request
//! eat the quota of the limits it did pass.
//!
//! Two backends:
//! * [`local::Local`] (default): in-process, exact for one replica, a check well under a
//!   microsecond.
//! * [`fleet::Fleet`]: Redis, exact across every replica on the same Redis; one Lua script per
//!   request, timed by Redis' own clock.
//!
//! [`bus::Bus`] rides on the same Redis to tell every replica which cached resources a write
//! made stale.
//!
//! Rates are GCRA in whole microseconds, computed the same way by both backends
//! (see `gcra.rs`): `requests` per `period` replenish one unit every `period / requests`
//! (rounded up to the microsecond, so a limit is never looser than written), and the bucket
//! holds `requests + burst` units, so a fresh key takes `requests + burst` at once.

pub mod bus;
pub mod fleet;
mod gcra;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// Every Redis key the limiters write starts with this.
pub const KEY_PREFIX: &str = "graphguard:limit:";

/// What a refused concurrency check tells the client to wait: a slot frees when a holder's
/// response ends, which no backend can foresee, so this is a polite hint, not a promise.
pub const SLOT_RETRY: Duration = Duration::from_secs(1);

/// The default time a Redis call may take before it fails with [`LimitError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// One limit to check for a request, already keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// GCRA: at most `requests` per `period`, with `burst` extra allowed at once; the request
    /// takes `cost` units.
    Rate {
        /// The rendered key, e.g. `free-runs:alice`.
        key: String,
        /// Units replenished per `period`.
        requests: u32,
        /// The period `requests` are spread over.
        period: Duration,
        /// Units a fresh key may take at once beyond `requests`.
        burst: u32,
        /// Units this request takes (at most `requests + burst`).
        cost: u32,
    },
    /// At most `limit` leases held at once under `key`; a lease expires `ttl` after its last
    /// renewal (only the Redis backend lets leases expire: a local one lives with its holder).
    Concurrent {
        /// The rendered key, e.g. `tenant-streams:acme`.
        key: String,
        /// Leases held at once.
        limit: u32,
        /// How long a lease outlives its last renewal.
        ttl: Duration,
    },
}

impl Check {
    /// The rendered key.
    pub fn key(&self) -> &str {
        match self {
            Check::Rate { key, .. } | Check::Concurrent { key, .. } => key,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The check passes.
    Allowed {
        /// Units (rate) or slots (concurrency) left: after this request's if it was spent,
        /// before it if the request was refused for another check or only looked at.
        remaining: u64,
        /// Until the rate is fully replenished; zero for concurrency.
        reset: Duration,
    },
    /// The check fails.
    Limited {
        /// Until the check would pass (for concurrency, [`SLOT_RETRY`]).
        retry_after: Duration,
        /// Units left, fewer than the cost (0 for a cost of 1 and for concurrency).
        remaining: u64,
        /// Until the rate is fully replenished (for concurrency, [`SLOT_RETRY`]).
        reset: Duration,
    },
}

impl Verdict {
    /// Whether the check passes.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }

    /// Units or slots left.
    pub fn remaining(&self) -> u64 {
        match *self {
            Verdict::Allowed { remaining, .. } | Verdict::Limited { remaining, .. } => remaining,
        }
    }
}

/// Why a limiter could not decide. The caller chooses per limit whether that refuses the
/// request (503) or lets it through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The backend cannot be reached, refused the credentials, or is full.
    #[error("limiter unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within the configured time. The call may still have been
    /// carried out: a rate may have been spent (never a slot: see `Fleet::check`).
    #[error("limiter did not answer in time")]
    Timeout,
    /// The backend answered with an error or an answer of the wrong shape.
    #[error("limiter script failed: {0}")]
    Script(String),
    /// A check no backend can decide (zero requests or period, a cost above the bucket).
    #[error("invalid limit: {0}")]
    Invalid(String),
    /// Leases had expired (their slot may be someone else's now) when they were renewed.
    #[error("{0} lease(s) had expired before renewal")]
    LeaseLost(usize),
}

/// A granted concurrency slot. Hold it for the life of the response; release it with
/// [`Limiter::release`] or drop it (dropping never blocks: the Redis backend sends the release
/// on a spawned task).
#[must_use = "a lease dropped at once frees its slot at once"]
#[derive(Debug)]
pub struct Lease {
    key: Arc<str>,
    ttl: Duration,
    held: Held,
}

/// What a lease holds, per backend; each side frees its slot in its own `Drop`.
#[derive(Debug)]
enum Held {
    /// Only ever read by its own `Drop`, which gives the slot back.
    Local(#[allow(dead_code)] local::Slot),
    Fleet(fleet::Slot),
}

impl Lease {
    /// The key (as the caller rendered it) the slot counts against.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How long the lease outlives its last renewal; renew every `ttl / 3`.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The check a policy limit makes for one request (`ttl`: how long a concurrency lease
/// outlives its last renewal).
pub fn check_of(applied: &crate::policy::limits::Applied<'_>, ttl: Duration) -> Check {
    use crate::policy::limits::Quota;
    match applied.limit.quota {
        Quota::Rate {
            requests,
            period,
            burst,
        } => Check::Rate {
            key: applied.key.clone(),
            requests,
            period,
            burst,
            cost: applied.cost,
        },
        Quota::Concurrent { limit } => Check::Concurrent {
            key: applied.key.clone(),
            limit,
            ttl,
        },
    }
}

/// How long a concurrency lease outlives its holder's last renewal by default: a replica that
/// dies frees its slots within this.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// A limiter backend, shared by every serving thread.
#[async_trait]
pub trait Limiter: Send + Sync {
    /// Check every limit of one request atomically: either all pass and all are spent or
    /// acquired, or none is spent and the verdicts (one per check, in order) say which failed.
    /// The leases are those of the `Concurrent` checks, in order, and only when all passed.
    async fn check(&self, checks: &[Check]) -> Result<(Vec<Verdict>, Vec<Lease>), LimitError>;

    /// Release leases now (best effort: a lease that cannot be released expires).
    async fn release(&self, leases: Vec<Lease>);

    /// Push the expiry of held leases `ttl` from now; call every `ttl / 3`.
    async fn renew(&self, leases: &[Lease]) -> Result<(), LimitError>;

    /// Current usage of a key, nothing spent: units or slots left now, and for a check that
    /// would be refused, how long until it would pass.
    async fn usage(&self, check: &Check) -> Result<Verdict, LimitError>;

    /// Whether the backend answers (for readiness).
    async fn ping(&self) -> Result<(), LimitError>;

    /// One line for logs and the admin listener (never a password).
    fn describe(&self) -> String;
}

/// Settings of the limiter backends.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Longest a Redis call may take (default 50 ms).
    pub timeout: Duration,
    /// Longest a connection attempt to Redis may take (in the background; calls still fail
    /// after `timeout`).
    pub connect_timeout: Duration,
    /// Keys the local limiter holds at most (rate and concurrency together); idle keys are
    /// evicted first, and a request that needs a new key beyond this gets `Unavailable`.
    pub local_max_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
            local_max_keys: 1 << 20,
        }
    }
}

/// The limiter a spec names: `None` or `local` for the in-process limiter, a `redis://` or
/// `rediss://` URL (password and ACL user in the URL) for the fleet one. Must be called
/// within a Tokio runtime that lives as long as the limiter (the Redis connection's task
/// runs there); connecting is lazy, so a Redis that is down fails checks, not startup.
pub fn open(spec: Option<&str>) -> Result<Arc<dyn Limiter>, LimitError> {
    open_with(spec, &LimitsConfig::default())
}

/// [`open`] with settings.
pub fn open_with(spec: Option<&str>, cfg: &LimitsConfig) -> Result<Arc<dyn Limiter>, LimitError> {
    match spec.map(str::trim) {
        None | Some("") | Some("local") => Ok(Arc::new(local::Local::new(cfg.local_max_keys))),
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(Arc::new(fleet::Fleet::open(url, cfg)?))
        }
        Some(other) => Err(LimitError::Invalid(format!(
            "limiter backend {:?}: expected `local`, redis:// or rediss://",
            redact(other)
        ))),
    }
}

/// A spec as it may be logged: whatever sits between `://` and `@` (user and password) is
/// replaced.
pub(crate) fn redact(spec: &str) -> String {
    match (spec.find("://"), spec.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &spec[..s], &spec[at..]),
        _ => spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("rediss://:p@h"), "rediss://***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[tokio::test]
    async fn open_picks_the_backend() {
        assert!(open(None).unwrap().describe().starts_with("local"));
        assert!(open(Some("local")).unwrap().describe().starts_with("local"));
        let fleet = open(Some("redis://user:pw@127.0.0.1:1/2")).unwrap();
        let d = fleet.describe();
        assert!(d.starts_with("redis") && !d.contains("pw"), "{d}");
        assert!(matches!(
            open(Some("memcached://x")),
            Err(LimitError::Invalid(_))
        ));
    }
}
