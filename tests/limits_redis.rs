//! The Redis limiter and invalidation bus against a real redis-server: two limiter instances
//! on one Redis stand for two replicas. Needs `redis-server` (fails, never skips, without it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use graphguard::limits::bus::{Bus, Invalidation};
use graphguard::limits::{
    open, open_with, Check, LimitError, Limiter, LimitsConfig, Verdict, DEFAULT_TIMEOUT, SLOT_RETRY,
};
use redis_server::RedisServer;
use tokio::sync::mpsc;

/// A timeout for tests that are about results, not timing: the machine may be busy.
fn patient() -> LimitsConfig {
    LimitsConfig {
        timeout: Duration::from_secs(2),
        ..LimitsConfig::default()
    }
}

fn replica(server: &RedisServer) -> Arc<dyn Limiter> {
    open_with(Some(&server.url("")), &patient()).unwrap()
}

fn rate(key: &str, requests: u32, period: Duration) -> Check {
    Check::Rate {
        key: key.into(),
        requests,
        period,
        burst: 0,
        cost: 1,
    }
}

fn slots(key: &str, limit: u32, ttl: Duration) -> Check {
    Check::Concurrent {
        key: key.into(),
        limit,
        ttl,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// Poll `f` every 20 ms until it is true, for at most `within`.
async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A plain connection to the test server, to look at what the limiter stored.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url("")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_rate_exactly() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server), replica(&server));
    let check = rate("free-runs:alice", 30, MINUTE);
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let check = check.clone();
        calls.spawn(async move { limiter.check(&[check]).await.unwrap().0[0] });
    }
    let verdicts = calls.join_all().await;
    let elapsed = start.elapsed();
    let mut remaining: Vec<u64> = verdicts
        .iter()
        .filter(|v| v.is_allowed())
        .map(Verdict::remaining)
        .collect();
    remaining.sort_unstable();
    // Exactly 30 passed, each saw a different count: no two replicas spent the same unit.
    assert_eq!(remaining, (0..30).collect::<Vec<_>>());
    for v in verdicts.iter().filter(|v| !v.is_allowed()) {
        let Verdict::Limited {
            retry_after,
            remaining,
            reset,
        } = *v
        else {
            unreachable!()
        };
        // One unit comes back every two seconds, measured from the first spend.
        assert!(retry_after <= Duration::from_secs(2), "{v:?}");
        assert!(
            retry_after + elapsed >= Duration::from_secs(2),
            "{v:?} after {elapsed:?}"
        );
        assert!(reset <= MINUTE && reset + elapsed >= MINUTE, "{v:?}");
        assert_eq!(remaining, 0);
    }
}

#[tokio::test]
async fn a_request_refused_by_one_limit_spends_none() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server), replica(&server));
    let both = [
        rate("user:alice", 5, MINUTE),
        rate("tenant:acme", 3, MINUTE),
    ];
    for l in [&a, &b, &a] {
        let (v, _) = l.check(&both).await.unwrap();
        assert!(v.iter().all(Verdict::is_allowed), "{v:?}");
    }
    let (v, leases) = b.check(&both).await.unwrap();
    assert!(leases.is_empty());
    // The user's limit passed but was not spent: two units left, 36 s (three units, less the
    // time the calls took) until it is full again.
    let Verdict::Allowed {
        remaining: 2,
        reset,
    } = v[0]
    else {
        panic!("{v:?}")
    };
    assert!(
        reset <= Duration::from_secs(36) && reset > Duration::from_secs(35),
        "{reset:?}"
    );
    assert!(!v[1].is_allowed());
    // The user's limit still has exactly the two units the refused request did not take.
    let user = &both[..1];
    assert_eq!(a.check(user).await.unwrap().0[0].remaining(), 1);
    assert_eq!(b.check(user).await.unwrap().0[0].remaining(), 0);
    assert!(!a.check(user).await.unwrap().0[0].is_allowed());

    // A full concurrency limit spends no rate, and a refused rate acquires no slot.
    let req = [
        rate("runs:bob", 10, MINUTE),
        slots("streams:bob", 1, MINUTE),
    ];
    let (_, held) = a.check(&req).await.unwrap();
    assert_eq!(held.len(), 1);
    let (v, none) = b.check(&req).await.unwrap();
    assert!(none.is_empty() && v[0].is_allowed() && !v[1].is_allowed());
    assert_eq!(a.usage(&req[0]).await.unwrap().remaining(), 9);
    a.release(held).await;
}

#[tokio::test]
async fn a_concurrency_limit_holds_across_replicas() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server), replica(&server));
    let c = [slots("tenant-streams:acme", 2, MINUTE)];
    let (_, first) = a.check(&c).await.unwrap();
    let (_, second) = b.check(&c).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    let (v, third) = a.check(&c).await.unwrap();
    assert!(third.is_empty());
    assert_eq!(
        v[0],
        Verdict::Limited {
            retry_after: SLOT_RETRY,
            remaining: 0,
            reset: SLOT_RETRY
        }
    );
    assert_eq!(b.usage(&c[0]).await.unwrap().remaining(), 0);
    // One replica releases: the other gets the slot.
    b.release(second).await;
    let (_, again) = a.check(&c).await.unwrap();
    assert_eq!(again.len(), 1);
    // A dropped lease frees its slot too (on a spawned task).
    drop(first);
    let freed = eventually(Duration::from_secs(2), async || {
        b.usage(&c[0]).await.unwrap().remaining() == 1
    })
    .await;
    assert!(freed, "a dropped lease was not released");
    drop(again);
}

#[tokio::test]
async fn a_lease_not_renewed_expires_and_a_renewed_one_does_not() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server), replica(&server));
    // Long enough that a busy machine does not make a renewal late.
    let ttl = Duration::from_millis(900);
    let c = [slots("streams:carol", 1, ttl)];
    // Replica A takes the slot and dies without a word: its lease is never released.
    let (_, lost) = a.check(&c).await.unwrap();
    std::mem::forget(lost);
    assert!(b.check(&c).await.unwrap().1.is_empty());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let (_, held) = b.check(&c).await.unwrap();
    assert_eq!(held.len(), 1, "the dead replica's lease did not expire");

    // Renewed every ttl/3, the lease outlives its ttl many times over.
    for _ in 0..5 {
        tokio::time::sleep(ttl / 3).await;
        b.renew(&held).await.unwrap();
        assert!(a.check(&c).await.unwrap().1.is_empty());
    }
    // Renewal stops: the slot frees, and a late renewal says the lease was lost.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let (_, taken) = a.check(&c).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(b.renew(&held).await, Err(LimitError::LeaseLost(1)));
    a.release(taken).await;
}

#[tokio::test]
async fn redis_down_fails_within_the_timeout_and_comes_back() {
    let mut server = RedisServer::start();
    let limiter = open(Some(&server.url(""))).unwrap();
    let c = [rate("k", 1000, MINUTE)];
    assert!(limiter.check(&c).await.is_ok());
    server.stop();
    for _ in 0..10 {
        let start = Instant::now();
        let r = limiter.check(&c).await;
        let took = start.elapsed();
        assert!(
            matches!(r, Err(LimitError::Unavailable(_) | LimitError::Timeout)),
            "{r:?}"
        );
        // The timeout and some scheduling slack on a busy machine: never a hang.
        assert!(
            took < DEFAULT_TIMEOUT + Duration::from_millis(200),
            "{took:?}"
        );
    }
    assert!(limiter.ping().await.is_err());
    server.restart();
    let back = eventually(Duration::from_secs(5), async || {
        limiter.check(&c).await.is_ok()
    })
    .await;
    assert!(back, "the limiter did not reconnect after Redis came back");
}

#[tokio::test]
async fn a_hung_redis_times_out_and_a_timed_out_acquire_leaks_no_slot() {
    let server = RedisServer::start();
    let a = open(Some(&server.url(""))).unwrap();
    let b = replica(&server);
    let c = [slots("streams:dave", 1, MINUTE)];
    assert_eq!(a.usage(&c[0]).await.unwrap().remaining(), 1);
    server.freeze();
    let start = Instant::now();
    let r = a.check(&c).await;
    let took = start.elapsed();
    server.thaw();
    assert_eq!(r.err(), Some(LimitError::Timeout));
    assert!(
        took < DEFAULT_TIMEOUT + Duration::from_millis(200),
        "{took:?}"
    );
    // The script ran once Redis woke, and the lease it added was removed right behind it: the
    // slot is free within moments, not in a minute.
    let freed = eventually(Duration::from_secs(2), async || {
        b.usage(&c[0]).await.unwrap().remaining() == 1
    })
    .await;
    assert!(freed, "a timed-out acquire kept its slot");
}

#[tokio::test]
async fn password_and_acl_user_authenticate() {
    let server = RedisServer::start_with(&[
        "--requirepass",
        "s3cret",
        "--user",
        "gateway",
        "on",
        ">gw-pass",
        "~graphguard:*",
        "&graphguard:*",
        "+@all",
    ]);
    let c = [rate("k", 10, MINUTE), slots("s", 1, MINUTE)];
    let good = open_with(Some(&server.url(":s3cret@")), &patient()).unwrap();
    assert!(good
        .check(&c)
        .await
        .unwrap()
        .0
        .iter()
        .all(Verdict::is_allowed));
    // The ACL user may touch only graphguard:* keys and channels: everything the limiter and
    // the bus do stays inside them.
    let user = server.url("gateway:gw-pass@");
    let acl = open_with(Some(&user), &patient()).unwrap();
    let (v, leases) = acl.check(&c).await.unwrap();
    assert_eq!(v[0].remaining(), 8);
    acl.renew(&leases).await.unwrap();
    acl.release(leases).await;
    let bus = Bus::open(&user, &patient()).unwrap();
    assert_eq!(bus.publish("threads:1").await, Ok(0));
    for url in [server.url(""), server.url(":wrong@")] {
        let bad = open_with(Some(&url), &patient()).unwrap();
        let r = bad.check(&c).await;
        assert!(matches!(r, Err(LimitError::Unavailable(_))), "{url}: {r:?}");
        assert!(!bad.describe().contains("wrong"));
    }
}

#[tokio::test]
async fn the_invalidation_bus_crosses_replicas_and_survives_a_restart() {
    let mut server = RedisServer::start();
    let url = server.url("");
    let (a, b) = (
        Bus::open(&url, &patient()).unwrap(),
        Bus::open(&url, &patient()).unwrap(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (down_tx, mut down_rx) = mpsc::unbounded_channel();
    let _sub = a.subscribe(move |m| {
        let m = match m {
            Invalidation::Key(k) => Some(k.to_string()),
            Invalidation::Resync => None,
            Invalidation::Down => {
                let _ = down_tx.send(());
                return;
            }
        };
        let _ = tx.send(m);
    });
    let next = async |rx: &mut mpsc::UnboundedReceiver<Option<String>>| {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        next(&mut rx).await,
        None,
        "a subscription starts with a resync"
    );
    assert_eq!(b.publish("threads:1234").await, Ok(1));
    assert_eq!(next(&mut rx).await.as_deref(), Some("threads:1234"));

    server.stop();
    assert!(b.publish("threads:lost").await.is_err());
    // The subscriber says it is deaf before anything is lost unheard.
    let down = tokio::time::timeout(Duration::from_secs(10), down_rx.recv()).await;
    assert_eq!(down.unwrap(), Some(()), "no Down when the connection went");
    server.restart();
    // The subscriber comes back on its own and says it may have missed messages.
    assert_eq!(next(&mut rx).await, None);
    let heard = eventually(Duration::from_secs(5), async || {
        b.publish("assistants:42").await == Ok(1)
    })
    .await;
    assert!(heard, "no subscriber after the restart");
    assert_eq!(next(&mut rx).await.as_deref(), Some("assistants:42"));
}

#[tokio::test]
async fn stored_keys_expire_once_they_mean_nothing() {
    let server = RedisServer::start();
    let limiter = replica(&server);
    let mut conn = raw(&server).await;
    let c = [
        rate("short", 10, Duration::from_secs(1)),
        slots("brief", 3, Duration::from_millis(500)),
    ];
    let (_, leases) = limiter.check(&c).await.unwrap();
    let ttl = |key: &'static str| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    // One unit of ten per second: the arrival time is 100 ms ahead, and so is the expiry.
    let r = ttl("graphguard:limit:r:short").await;
    assert!((1..=100).contains(&r), "{r}");
    let s = ttl("graphguard:limit:c:brief").await;
    assert!((1..=500).contains(&s), "{s}");
    std::mem::forget(leases);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn redis_and_local_limiters_decide_alike() {
    let server = RedisServer::start();
    let fleet = replica(&server);
    let local = open(None).unwrap();
    let checks = [
        Check::Rate {
            key: "runs:erin".into(),
            requests: 7,
            period: Duration::from_secs(3600),
            burst: 3,
            cost: 2,
        },
        slots("streams:erin", 4, MINUTE),
    ];
    let mut held = Vec::new();
    for _ in 0..8 {
        let (f, fl) = fleet.check(&checks).await.unwrap();
        let (l, ll) = local.check(&checks).await.unwrap();
        let shape = |v: &[Verdict]| {
            v.iter()
                .map(|v| (v.is_allowed(), v.remaining()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&f), shape(&l));
        assert_eq!(fl.len(), ll.len());
        held.extend(fl);
        held.extend(ll);
    }
    for l in [&fleet, &local] {
        assert_eq!(
            l.usage(&checks[0]).await.unwrap().remaining(),
            2,
            "{}",
            l.describe()
        );
    }
    fleet.release(held).await;
}

#[tokio::test]
async fn a_foreign_value_under_a_limit_key_is_a_script_error() {
    let server = RedisServer::start();
    let limiter = replica(&server);
    let mut conn = raw(&server).await;
    redis::cmd("RPUSH")
        .arg("graphguard:limit:c:odd")
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let r = limiter.check(&[slots("odd", 1, MINUTE)]).await;
    assert!(matches!(r, Err(LimitError::Script(_))), "{r:?}");
}
