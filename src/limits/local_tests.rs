use std::sync::atomic::AtomicUsize;

use super::*;
use crate::limits::SLOT_RETRY;

const SEC: u64 = 1_000_000;

fn rate(key: &str, requests: u32, secs: u64, burst: u32) -> Check {
    Check::Rate {
        key: key.into(),
        requests,
        period: Duration::from_secs(secs),
        burst,
        cost: 1,
    }
}

fn slots(key: &str, limit: u32) -> Check {
    Check::Concurrent {
        key: key.into(),
        limit,
        ttl: Duration::from_secs(30),
    }
}

/// How many of `n` one-check requests pass at `now`.
fn passes(l: &Local, check: &Check, now: u64, n: usize) -> usize {
    (0..n)
        .filter(|_| l.run(std::slice::from_ref(check), now, true).unwrap().0[0].is_allowed())
        .count()
}

#[test]
fn exactly_requests_plus_burst_at_once_then_the_rate() {
    let l = Local::new(1000);
    let c = rate("free-runs:alice", 20, 3600, 5);
    assert_eq!(passes(&l, &c, SEC, 100), 25);
    // One run every three minutes after that, to the microsecond.
    assert_eq!(passes(&l, &c, SEC + 180 * SEC - 1, 10), 0);
    assert_eq!(passes(&l, &c, SEC + 180 * SEC, 10), 1);
    // After a full hour idle: requests + burst again, not more.
    assert_eq!(passes(&l, &c, 10_000 * SEC, 100), 25);
    // Another key is untouched by all this.
    assert_eq!(
        passes(&l, &rate("free-runs:bob", 20, 3600, 5), SEC, 100),
        25
    );
}

#[test]
fn retry_after_is_right_to_the_millisecond() {
    let l = Local::new(1000);
    let c = rate("k", 30, 60, 0);
    assert_eq!(passes(&l, &c, SEC, 30), 30);
    let (v, _) = l
        .run(std::slice::from_ref(&c), SEC + 250_000, true)
        .unwrap();
    assert_eq!(
        v[0],
        Verdict::Limited {
            retry_after: Duration::from_millis(1_750),
            remaining: 0,
            reset: Duration::from_millis(59_750),
        }
    );
    assert_eq!(passes(&l, &c, SEC + 1_999_999, 1), 0);
    assert_eq!(passes(&l, &c, SEC + 2 * SEC, 1), 1);
}

#[test]
fn a_refused_request_spends_none_of_its_limits() {
    let l = Local::new(1000);
    let both = [rate("user:alice", 5, 60, 0), rate("tenant:acme", 3, 60, 0)];
    for _ in 0..3 {
        let (v, _) = l.run(&both, SEC, true).unwrap();
        assert!(v.iter().all(Verdict::is_allowed));
    }
    let (v, leases) = l.run(&both, SEC, true).unwrap();
    assert!(leases.is_empty());
    // The user limit passed but was not spent: it reports what is left before it.
    assert_eq!(
        v[0],
        Verdict::Allowed {
            remaining: 2,
            reset: Duration::from_secs(36)
        }
    );
    assert!(!v[1].is_allowed());
    // The user still has exactly two.
    assert_eq!(passes(&l, &both[0], SEC, 10), 2);
}

#[test]
fn a_refused_rate_acquires_no_slot_and_a_full_slot_spends_no_rate() {
    let l = Local::new(1000);
    let req = [rate("runs", 10, 60, 0), slots("streams", 1)];
    let (_, held) = l.run(&req, SEC, true).unwrap();
    assert_eq!(held.len(), 1);
    let (v, none) = l.run(&req, SEC, true).unwrap();
    assert!(none.is_empty() && v[0].is_allowed() && !v[1].is_allowed());
    drop(held);
    // Only the first request's unit was spent.
    assert_eq!(passes(&l, &req[0], SEC, 20), 9);
}

#[test]
fn the_same_key_twice_in_one_request_counts_twice() {
    let l = Local::new(1000);
    let twice = [rate("k", 3, 60, 0), rate("k", 3, 60, 0)];
    assert!(l
        .run(&twice, SEC, true)
        .unwrap()
        .0
        .iter()
        .all(Verdict::is_allowed));
    let (v, _) = l.run(&twice, SEC, true).unwrap();
    assert!(v[0].is_allowed() && !v[1].is_allowed());
    let two_slots = [slots("s", 1), slots("s", 1)];
    let (v, leases) = l.run(&two_slots, SEC, true).unwrap();
    assert!(leases.is_empty() && !v[1].is_allowed());
    // A rate and a concurrency limit with the same key are different limits.
    let (v, _leases) = l
        .run(&[rate("s", 1, 60, 0), slots("s", 1)], SEC, true)
        .unwrap();
    assert!(v.iter().all(Verdict::is_allowed));
}

#[tokio::test]
async fn leases_are_released_on_drop_and_by_release() {
    let l = Local::new(1000);
    let c = slots("tenant-streams:acme", 2);
    let (_, mut a) = l.check(std::slice::from_ref(&c)).await.unwrap();
    let (_, b) = l.check(std::slice::from_ref(&c)).await.unwrap();
    let (v, none) = l.check(std::slice::from_ref(&c)).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(
        v[0],
        Verdict::Limited {
            retry_after: SLOT_RETRY,
            remaining: 0,
            reset: SLOT_RETRY
        }
    );
    assert_eq!(
        l.usage(&c).await.unwrap(),
        Verdict::Limited {
            retry_after: SLOT_RETRY,
            remaining: 0,
            reset: SLOT_RETRY
        }
    );
    let lease = a.pop().unwrap();
    assert_eq!(
        (lease.key(), lease.ttl()),
        ("tenant-streams:acme", Duration::from_secs(30))
    );
    l.renew(std::slice::from_ref(&lease)).await.unwrap();
    drop(lease);
    assert_eq!(l.usage(&c).await.unwrap().remaining(), 1);
    let (_, third) = l.check(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(third.len(), 1);
    l.release(b).await;
    l.release(third).await;
    assert_eq!(l.usage(&c).await.unwrap().remaining(), 2);
}

#[test]
fn usage_spends_nothing() {
    let l = Local::new(1000);
    let c = rate("k", 10, 10, 0);
    passes(&l, &c, SEC, 4);
    for _ in 0..3 {
        let (v, _) = l.run(std::slice::from_ref(&c), SEC, false).unwrap();
        assert_eq!(
            v[0],
            Verdict::Allowed {
                remaining: 6,
                reset: Duration::from_secs(4)
            }
        );
    }
}

#[test]
fn idle_keys_are_evicted_and_live_ones_kept() {
    let l = Local::new(1_000_000);
    for i in 0..1000 {
        l.run(&[rate(&format!("u{i}"), 10, 1, 0)], SEC, true)
            .unwrap();
    }
    let (_, lease) = l.run(&[slots("held", 5)], SEC, true).unwrap();
    let (_, gone) = l.run(&[slots("dropped", 5)], SEC, true).unwrap();
    drop(gone);
    assert_eq!(l.keys(), 1002);
    // Past every rate's replenishment: only the held slot stays.
    let later = SEC + SWEEP_EVERY + 1;
    for s in l.shards.iter() {
        lock(s).sweep(later);
    }
    assert_eq!(l.keys(), 1);
    l.evict_idle();
    assert_eq!(l.keys(), 1);
    drop(lease);
    // A key evicted and seen again starts fresh, as it would have anyway.
    assert_eq!(passes(&l, &rate("u1", 10, 1, 0), later, 20), 10);
}

#[test]
fn a_full_limiter_refuses_new_keys_but_serves_known_ones() {
    let l = Local::new(1);
    let shards = l.shards.len();
    // One key per shard fits; find two keys that share a shard.
    let mut by_shard = vec![None; shards];
    let (a, b) = (0..)
        .map(|i| format!("k{i}"))
        .find_map(|k| {
            let s = l.shard_of(&k);
            by_shard[s].replace(k.clone()).map(|prev| (prev, k))
        })
        .unwrap();
    assert!(l.run(&[rate(&a, 1, 60, 0)], SEC, true).unwrap().0[0].is_allowed());
    assert!(matches!(
        l.run(&[rate(&b, 1, 60, 0)], SEC, true),
        Err(LimitError::Unavailable(_))
    ));
    // Known key: decided as usual.
    assert!(!l.run(&[rate(&a, 1, 60, 0)], SEC, true).unwrap().0[0].is_allowed());
    // Once the first key is idle, the second fits.
    assert!(l.run(&[rate(&b, 1, 60, 0)], 100 * SEC, true).unwrap().0[0].is_allowed());
}

#[test]
fn exact_under_contention_from_many_threads() {
    let l = Local::new(1000);
    let c = [rate("hot", 500, 3600, 0), slots("tenant", 1_000_000)];
    let allowed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1000 {
                    let (v, _lease) = l.check_now(&c).unwrap();
                    if v.iter().all(Verdict::is_allowed) {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.load(Ordering::Relaxed), 500);
    // Every lease was dropped: the counter is back to zero.
    assert_eq!(
        l.run(&c[1..], l.now(), false).unwrap().0[0].remaining(),
        1_000_000
    );
}

#[test]
fn invalid_checks_are_errors_not_verdicts() {
    let l = Local::new(10);
    let bad = rate("k", 0, 60, 0);
    assert!(matches!(l.check_now(&[bad]), Err(LimitError::Invalid(_))));
    assert!(l.describe().starts_with("local"));
}

#[test]
fn a_request_of_many_checks_is_all_or_nothing_too() {
    let l = Local::new(1000);
    let many: Vec<Check> = (0..6)
        .map(|i| rate(&format!("k{i}"), if i == 5 { 1 } else { 10 }, 60, 0))
        .collect();
    assert!(l
        .run(&many, SEC, true)
        .unwrap()
        .0
        .iter()
        .all(Verdict::is_allowed));
    let (v, _) = l.run(&many, SEC, true).unwrap();
    assert_eq!(v.iter().filter(|v| v.is_allowed()).count(), 5);
    assert_eq!(v[0].remaining(), 9, "k0 was not spent again");
}

#[test]
fn evict_idle_sweeps_every_shard_on_real_time() {
    let l = Local::new(1000);
    let (_, lease) = l
        .check_now(&[rate("r", 1000, 1, 0), slots("s", 1)])
        .unwrap();
    drop(lease);
    // The rate replenishes within a millisecond; the slot's last lease is gone.
    std::thread::sleep(Duration::from_millis(5));
    l.evict_idle();
    assert_eq!(l.keys(), 0);
}
