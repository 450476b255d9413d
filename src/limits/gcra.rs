//! The arithmetic both backends share: checks validated into whole-microsecond plans, GCRA
//! decided on a theoretical arrival time, and raw outcomes turned into verdicts.
//!
//! Everything is an integer number of microseconds below 2^52, so the Lua script (whose
//! numbers are doubles) computes exactly what the local limiter computes.

use std::time::Duration;

use super::{Check, LimitError, Verdict, SLOT_RETRY};

/// The largest tolerance or lease ttl in microseconds (about 35 years): sums of two stay exact
/// in a double.
const MAX_MICROS: u64 = 1 << 50;

/// A rate limit in whole microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// One unit replenishes every `interval` (`period / requests`, rounded up).
    pub interval: u64,
    /// How far ahead of now the arrival time may run: `(requests + burst) * interval`.
    pub tolerance: u64,
    /// What this request adds to the arrival time: `cost * interval`.
    pub cost: u64,
    /// The cost in units.
    pub units: u64,
}

/// A check validated for the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A rate.
    Rate(Gcra),
    /// A concurrency limit: `limit` slots, a lease living `ttl` microseconds past renewal.
    Slots { limit: u32, ttl: u64 },
}

/// One check's outcome as computed, before [`verdicts`] says whether it was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    /// Whether the check passes.
    pub allowed: bool,
    /// Units or slots left after spending (allowed) or now (refused).
    pub remaining: u64,
    /// Microseconds until the rate is fully replenished.
    pub reset: u64,
    /// Microseconds until a refused rate would pass.
    pub retry: u64,
}

impl Raw {
    /// A refusal with nothing computed: what a check not (yet) decided stands for.
    pub const EMPTY: Raw = Raw {
        allowed: false,
        remaining: 0,
        reset: 0,
        retry: 0,
    };
}

/// Whole microseconds of a duration, rounded up.
fn micros_up(d: Duration) -> u64 {
    let us = d.as_micros() + u128::from(!d.subsec_nanos().is_multiple_of(1_000));
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// Validate a check.
pub(crate) fn plan(check: &Check) -> Result<Plan, LimitError> {
    let invalid = |why: &str| LimitError::Invalid(format!("{:?}: {why}", check.key()));
    match *check {
        Check::Rate {
            requests,
            period,
            burst,
            cost,
            ..
        } => {
            if requests == 0 || period.is_zero() {
                return Err(invalid("requests and period must be positive"));
            }
            let capacity = u64::from(requests) + u64::from(burst);
            if u64::from(cost) > capacity {
                return Err(invalid(
                    "cost exceeds requests + burst: it could never pass",
                ));
            }
            let interval = micros_up(period).div_ceil(u64::from(requests));
            let tolerance = interval.saturating_mul(capacity);
            if tolerance > MAX_MICROS {
                return Err(invalid("period too long"));
            }
            Ok(Plan::Rate(Gcra {
                interval,
                tolerance,
                cost: interval * u64::from(cost),
                units: u64::from(cost),
            }))
        }
        Check::Concurrent { limit, ttl, .. } => {
            let ttl = micros_up(ttl);
            if !(1_000..=MAX_MICROS).contains(&ttl) {
                return Err(invalid("lease ttl must be between 1 ms and 35 years"));
            }
            Ok(Plan::Slots { limit, ttl })
        }
    }
}

/// Validate every check of a request.
pub(crate) fn plans(checks: &[Check]) -> Result<Vec<Plan>, LimitError> {
    checks.iter().map(plan).collect()
}

impl Gcra {
    /// Decide at `now` on a key whose theoretical arrival time is `tat` (0 for a fresh key).
    /// Returns the outcome and, when it passes, the arrival time to store.
    pub(crate) fn decide(&self, now: u64, tat: u64) -> (Raw, Option<u64>) {
        let base = tat.max(now);
        let after = base + self.cost;
        let limit_at = now + self.tolerance;
        if after <= limit_at {
            let raw = Raw {
                allowed: true,
                remaining: (limit_at - after) / self.interval,
                reset: after - now,
                retry: 0,
            };
            (raw, Some(after))
        } else {
            let raw = Raw {
                allowed: false,
                remaining: (limit_at - base) / self.interval,
                reset: base - now,
                retry: after - limit_at,
            };
            (raw, None)
        }
    }
}

/// Decide a concurrency limit with `held` leases live.
pub(crate) fn slots(limit: u32, held: u64) -> Raw {
    let limit = u64::from(limit);
    Raw {
        allowed: held < limit,
        remaining: limit.saturating_sub(held + 1),
        reset: 0,
        retry: 0,
    }
}

/// The verdicts of a request. `spent` says whether the request's checks were spent (all
/// passed and the call was not a look); if not, a passing check reports what is left without
/// its own cost.
pub(crate) fn verdicts(plans: &[Plan], raws: &[Raw], spent: bool) -> Vec<Verdict> {
    plans
        .iter()
        .zip(raws)
        .map(|(plan, raw)| verdict(plan, raw, spent))
        .collect()
}

/// One check's verdict (see [`verdicts`]).
pub(crate) fn verdict(plan: &Plan, raw: &Raw, spent: bool) -> Verdict {
    let us = Duration::from_micros;
    match (plan, raw.allowed) {
        (Plan::Rate(g), true) if !spent => Verdict::Allowed {
            remaining: raw.remaining + g.units,
            reset: us(raw.reset.saturating_sub(g.cost)),
        },
        (Plan::Rate(_), true) => Verdict::Allowed {
            remaining: raw.remaining,
            reset: us(raw.reset),
        },
        (Plan::Rate(_), false) => Verdict::Limited {
            retry_after: us(raw.retry),
            remaining: raw.remaining,
            reset: us(raw.reset),
        },
        (Plan::Slots { .. }, true) => Verdict::Allowed {
            remaining: raw.remaining + u64::from(!spent),
            reset: Duration::ZERO,
        },
        (Plan::Slots { .. }, false) => Verdict::Limited {
            retry_after: SLOT_RETRY,
            remaining: 0,
            reset: SLOT_RETRY,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(requests: u32, period: Duration, burst: u32, cost: u32) -> Gcra {
        let check = Check::Rate {
            key: "k".into(),
            requests,
            period,
            burst,
            cost,
        };
        match plan(&check).unwrap() {
            Plan::Rate(g) => g,
            p => panic!("{p:?}"),
        }
    }

    /// Spend `n` times at `now`, returning how many passed and the final arrival time.
    fn spend(g: &Gcra, now: u64, mut tat: u64, n: u32) -> (u32, u64) {
        let mut ok = 0;
        for _ in 0..n {
            if let (_, Some(t)) = g.decide(now, tat) {
                tat = t;
                ok += 1;
            }
        }
        (ok, tat)
    }

    #[test]
    fn a_fresh_key_takes_requests_plus_burst_then_one_per_interval() {
        let g = rate(30, Duration::from_secs(60), 5, 1);
        assert_eq!(g.interval, 2_000_000);
        let now = 1_000_000_000;
        let (ok, tat) = spend(&g, now, 0, 100);
        assert_eq!(ok, 35);
        // One interval later exactly one more; a microsecond earlier none.
        assert_eq!(spend(&g, now + 1_999_999, tat, 10).0, 0);
        assert_eq!(spend(&g, now + 2_000_000, tat, 10).0, 1);
        // A whole period later exactly `requests` more.
        assert_eq!(spend(&g, now + 60_000_000, tat, 100).0, 30);
    }

    #[test]
    fn refusal_says_when_to_retry_to_the_microsecond() {
        let g = rate(30, Duration::from_secs(60), 0, 1);
        let now = 5_000_000;
        let (_, tat) = spend(&g, now, 0, 30);
        let (raw, next) = g.decide(now + 500_000, tat);
        assert_eq!(next, None);
        assert_eq!(raw.retry, 1_500_000);
        assert_eq!(raw.remaining, 0);
        assert_eq!(raw.reset, 59_500_000);
        let v = verdicts(&[Plan::Rate(g)], &[raw], false);
        assert_eq!(
            v[0],
            Verdict::Limited {
                retry_after: Duration::from_millis(1_500),
                remaining: 0,
                reset: Duration::from_millis(59_500),
            }
        );
    }

    #[test]
    fn cost_takes_several_units() {
        let g = rate(10, Duration::from_secs(10), 0, 4);
        let (ok, tat) = spend(&g, 1, 0, 5);
        assert_eq!(ok, 2);
        let (raw, _) = g.decide(1, tat);
        assert_eq!(
            (raw.allowed, raw.remaining, raw.retry),
            (false, 2, 2_000_000)
        );
    }

    #[test]
    fn an_unspent_pass_reports_what_is_left_before_it() {
        let g = rate(10, Duration::from_secs(10), 0, 3);
        let (raw, _) = g.decide(1, 0);
        let plan = [Plan::Rate(g)];
        assert_eq!(
            verdicts(&plan, &[raw], true)[0],
            Verdict::Allowed {
                remaining: 7,
                reset: Duration::from_secs(3)
            }
        );
        assert_eq!(
            verdicts(&plan, &[raw], false)[0],
            Verdict::Allowed {
                remaining: 10,
                reset: Duration::ZERO
            }
        );
    }

    #[test]
    fn intervals_round_up_so_limits_are_never_looser() {
        let g = rate(3, Duration::from_secs(1), 0, 1);
        assert_eq!(g.interval, 333_334);
        assert_eq!(g.tolerance, 1_000_002);
        let g = rate(1, Duration::from_nanos(1_500), 0, 1);
        assert_eq!(g.interval, 2);
    }

    #[test]
    fn invalid_checks_are_refused() {
        let bad = [
            Check::Rate {
                key: "a".into(),
                requests: 0,
                period: Duration::from_secs(1),
                burst: 0,
                cost: 1,
            },
            Check::Rate {
                key: "a".into(),
                requests: 1,
                period: Duration::ZERO,
                burst: 0,
                cost: 1,
            },
            Check::Rate {
                key: "a".into(),
                requests: 2,
                period: Duration::from_secs(1),
                burst: 1,
                cost: 4,
            },
            Check::Rate {
                key: "a".into(),
                requests: 1,
                period: Duration::from_secs(1 << 40),
                burst: 0,
                cost: 1,
            },
            Check::Concurrent {
                key: "a".into(),
                limit: 1,
                ttl: Duration::from_micros(10),
            },
        ];
        for c in bad {
            assert!(matches!(plan(&c), Err(LimitError::Invalid(_))), "{c:?}");
        }
    }

    #[test]
    fn slots_count_down_and_refuse_at_the_limit() {
        assert_eq!(
            slots(2, 0),
            Raw {
                allowed: true,
                remaining: 1,
                reset: 0,
                retry: 0
            }
        );
        assert!(slots(2, 1).allowed);
        assert!(!slots(2, 2).allowed);
        assert!(!slots(0, 0).allowed);
    }
}
