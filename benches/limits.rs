#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The limiter backends: the hand-written local limiter (GCRA over a sharded map) against
//! `governor` (keyed GCRA on a DashMap) for one and three rate limits per request, with one
//! thread and with two; a concurrency slot against `pingora-limits`' `Inflight`; and, when
//! `GRAPHGUARD_BENCH_REDIS` names a Redis URL, the Redis limiter's round trip. Before any
//! backend: which of a policy's limits a request counts against, with their keys rendered
//! (the pure part every limited request pays).
//!
//! Governor cannot un-spend, so its three-limit figure is three checks in a row that leave
//! the first ones spent when a later one refuses: a lower bound for anything atomic on it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::FutureExt;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use graphguard::event::Event;
use graphguard::limits::local::Local;
use graphguard::limits::{open, Check, Limiter};
use graphguard::policy::limits::{Limit, LimitConfig, Limits};
use graphguard::user::User;

/// Distinct users the requests cycle through.
const USERS: usize = 1_000;
/// A rate no request reaches: every check passes and writes, the common path.
const REQUESTS: u32 = 1_000_000_000;

fn rate(key: String) -> Check {
    Check::Rate {
        key,
        requests: REQUESTS,
        period: Duration::from_secs(1),
        burst: 0,
        cost: 1,
    }
}

/// Per user: its own limit, its tenant's (one of ten) and its role's (one for all), rendered
/// as the owner renders them.
fn requests(limits: usize) -> Vec<Vec<Check>> {
    (0..USERS)
        .map(|u| {
            let all = [
                rate(format!("user-runs:user-{u}")),
                rate(format!("tenant-runs:tenant-{}", u % 10)),
                rate("role-runs:free".into()),
            ];
            all.into_iter().take(limits).collect()
        })
        .collect()
}

/// Governor: one keyed limiter per limit (its quota is per limiter, not per key).
struct Governor(Vec<DefaultKeyedRateLimiter<String>>);

impl Governor {
    fn new(limits: usize) -> Governor {
        let per = Duration::from_secs(1) / REQUESTS;
        let quota = Quota::with_period(per.max(Duration::from_nanos(1)))
            .unwrap()
            .allow_burst(NonZeroU32::new(REQUESTS).unwrap());
        Governor((0..limits).map(|_| RateLimiter::keyed(quota)).collect())
    }

    /// Three checks in a row; what the first ones spent stays spent if a later one refuses.
    fn check(&self, req: &[Check]) -> bool {
        self.0.iter().zip(req).all(|(g, c)| match c {
            Check::Rate { key, .. } => g.check_key(key).is_ok(),
            Check::Concurrent { .. } => false,
        })
    }
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("limits/check");
    for n in [1usize, 3] {
        let reqs = requests(n);
        let local = Local::new(1 << 20);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("local", n), |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                local.check_now(black_box(&reqs[i])).unwrap()
            })
        });
        // The same through the `Limiter` trait (a boxed future, polled once).
        let dynamic: Arc<dyn Limiter> = Arc::new(Local::new(1 << 20));
        g.bench_function(BenchmarkId::new("local via trait", n), |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                dynamic
                    .check(black_box(&reqs[i]))
                    .now_or_never()
                    .unwrap()
                    .unwrap()
            })
        });
        let gov = Governor::new(n);
        g.bench_function(BenchmarkId::new("governor", n), |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                gov.check(black_box(&reqs[i]))
            })
        });
    }
    g.finish();
}

/// `threads` threads each making `iters / threads` checks of their own users; the time per
/// check across all of them.
fn contended(iters: u64, threads: u64, one: impl Fn(usize) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let one = &one;
            s.spawn(move || {
                for k in 0..iters / threads {
                    one((t as usize * 7919 + k as usize) % USERS);
                }
            });
        }
    });
    start.elapsed()
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("limits/check, 2 threads");
    for n in [1usize, 3] {
        let reqs = requests(n);
        let local = Local::new(1 << 20);
        g.bench_function(BenchmarkId::new("local", n), |b| {
            b.iter_custom(|iters| {
                contended(iters, 2, |u| {
                    black_box(local.check_now(&reqs[u]).unwrap());
                })
            })
        });
        let gov = Governor::new(n);
        g.bench_function(BenchmarkId::new("governor", n), |b| {
            b.iter_custom(|iters| {
                contended(iters, 2, |u| {
                    black_box(gov.check(&reqs[u]));
                })
            })
        });
    }
    g.finish();
}

fn concurrency(c: &mut Criterion) {
    let mut g = c.benchmark_group("limits/slot acquire+release");
    let keys: Vec<String> = (0..USERS).map(|u| format!("tenant-streams:t{u}")).collect();
    let checks: Vec<[Check; 1]> = keys
        .iter()
        .map(|k| {
            [Check::Concurrent {
                key: k.clone(),
                limit: 1_000,
                ttl: Duration::from_secs(30),
            }]
        })
        .collect();
    let local = Local::new(1 << 20);
    let mut i = 0usize;
    g.bench_function("local", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            drop(local.check_now(black_box(&checks[i])).unwrap())
        })
    });
    let inflight = pingora_limits::inflight::Inflight::new();
    g.bench_function("pingora Inflight (estimate)", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            let (guard, n) = inflight.incr(black_box(&keys[i]), 1);
            black_box(n <= 1_000);
            drop(guard)
        })
    });
    g.finish();
}

/// Three limits of the docs' shape: per user, per tenant (an attribute), and one `when` that
/// does not hold for this user, against the event they count and one they do not.
fn applicable(c: &mut Criterion) {
    let yaml = |y: &str| -> LimitConfig { serde_yaml_ng::from_str(y).unwrap() };
    let limits = Limits::new(
        [
            "name: user-runs\nevents: [threads:create_run]\nrate: {requests: 20, per: 1h}",
            "name: tenant-streams\nevents: [threads:create_run]\nkey: '{user.attributes.org}'\nconcurrent: 5",
            "name: free-runs\nevents: [threads:create_run]\nwhen: {roles: [free]}\nrate: {requests: 5, per: 1m}",
        ]
        .iter()
        .map(|y| Limit::compile(&yaml(y)).unwrap())
        .collect(),
    );
    let mut user = User {
        identity: "user-417".into(),
        roles: vec!["paid".into()],
        ..User::default()
    };
    user.attributes
        .insert("org".into(), serde_json::Value::String("tenant-7".into()));
    let run: Event = "threads:create_run".parse().unwrap();
    let read: Event = "threads:read".parse().unwrap();
    let mut g = c.benchmark_group("limits/applicable");
    g.bench_function("two of three match", |b| {
        b.iter(|| {
            limits
                .applicable(black_box(&[run]), 1, black_box(&user))
                .unwrap()
        })
    });
    g.bench_function("none matches", |b| {
        b.iter(|| {
            limits
                .applicable(black_box(&[read]), 1, black_box(&user))
                .unwrap()
        })
    });
    g.finish();
}

fn redis(c: &mut Criterion) {
    let Ok(url) = std::env::var("GRAPHGUARD_BENCH_REDIS") else {
        eprintln!("GRAPHGUARD_BENCH_REDIS unset: no Redis round trip measured");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = rt.block_on(async { open(Some(&url)) }).unwrap();
    let mut g = c.benchmark_group("limits/redis round trip");
    for n in [1usize, 3] {
        let reqs = requests(n);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i = (i + 1) % USERS;
                rt.block_on(limiter.check(&reqs[i])).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    applicable,
    single_thread,
    two_threads,
    concurrency,
    redis
);
criterion_main!(benches);
