//! The PostgreSQL policy store against a real PostgreSQL server (tests/common/postgres.rs):
//! commits and history, racing writers, the LISTEN/NOTIFY change feed between replicas, a
//! database that stops, restarts or hangs, concurrent migrations, TLS modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant};

use graphguard::store::{self, PgOptions, PgStore, PolicyStore, Revision, StoreError};
use postgres::{Postgres, PASSWORD};
use serde_json::json;
use tokio::sync::{watch, Barrier};

/// Options for a replica that must learn of changes only through LISTEN/NOTIFY: the safety-net
/// poll is far away.
fn no_poll() -> PgOptions {
    PgOptions {
        poll_interval: Duration::from_secs(600),
        ..PgOptions::default()
    }
}

async fn open(url: &str, options: PgOptions) -> PgStore {
    PgStore::open(url, options).await.unwrap()
}

/// Wait until `feed` reports at least `number`; how long it took.
async fn wait_for(feed: &mut watch::Receiver<u64>, number: u64, within: Duration) -> Duration {
    let start = Instant::now();
    let reached = tokio::time::timeout(within, feed.wait_for(|n| *n >= number))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "the feed did not reach {number} within {within:?} (it is at {})",
        *feed.borrow()
    );
    start.elapsed()
}

fn numbers(infos: &[store::RevisionInfo]) -> Vec<u64> {
    infos.iter().map(|i| i.number).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_read_back() {
    let pg = Postgres::start();
    let store = store::open(&pg.url()).await.unwrap();
    assert_eq!(
        store.describe(),
        format!("postgres://127.0.0.1:{}/postgres", pg.port())
    );
    assert_eq!(store.head().await.unwrap(), Revision::empty());
    assert_eq!(*store.subscribe().borrow(), 0);

    let state = json!({
        "roles": [{"id": "r1", "name": "Ünïcode ✓", "permissions": ["threads:read"]}],
        "policies": {"p1": {"effect": "deny", "n": 12345678901234_i64, "f": 0.5, "x": null}},
        "attachments": [],
    });
    let mut feed = store.subscribe();
    assert_eq!(
        store
            .commit(0, &state, "alice@example.com", "add r1")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        *feed.borrow_and_update(),
        1,
        "a replica's own commit moves its feed at once"
    );

    let head = store.head().await.unwrap();
    assert_eq!(head.number, 1);
    assert_eq!(head.state, state);
    assert_eq!(
        (head.actor.as_str(), head.summary.as_str()),
        ("alice@example.com", "add r1")
    );
    // RFC 3339 UTC with microseconds, as the file store writes it.
    assert_eq!(head.committed_at.len(), 27, "{}", head.committed_at);
    assert!(head.committed_at.ends_with('Z') && head.committed_at.as_bytes()[10] == b'T');
    assert_eq!(store.revision(1).await.unwrap(), head);
    assert_eq!(store.revisions(10, None).await.unwrap(), vec![head.info()]);
    assert_eq!(store.revision(2).await, Err(StoreError::NotFound));
    assert_eq!(store.revision(0).await, Err(StoreError::NotFound));
    assert!(store.health().is_ok());

    // A state PostgreSQL's jsonb cannot hold is refused before it reaches the database.
    let nul = store.commit(1, &json!({"d": "a\u{0}"}), "a", "x").await;
    assert!(matches!(nul, Err(StoreError::Invalid(_))), "{nul:?}");

    let schema = pg.psql(
        "postgres",
        "SELECT version FROM graphguard.schema_migrations",
    );
    assert_eq!(schema, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committers_on_the_same_base_one_wins() {
    let pg = Postgres::start();
    // Two replicas, each with its own connection: the race is decided by PostgreSQL.
    let a = Arc::new(open(&pg.url(), PgOptions::default()).await);
    let b = Arc::new(open(&pg.url(), PgOptions::default()).await);
    const ROUNDS: u64 = 20;
    for base in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let racers = [a.clone(), b.clone()].map(|store| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .commit(base, &json!({"base": base}), "racer", "race")
                    .await
            })
        });
        let mut outcomes = Vec::new();
        for r in racers {
            outcomes.push(r.await.unwrap());
        }
        let won = outcomes.iter().filter(|o| **o == Ok(base + 1)).count();
        let lost = outcomes
            .iter()
            .filter(|o| **o == Err(StoreError::Conflict))
            .count();
        assert_eq!((won, lost), (1, 1), "round {base}: {outcomes:?}");
    }
    assert_eq!(a.head().await.unwrap().number, ROUNDS);
    // Two tasks of one replica share its client: the same rule holds.
    let empty = json!({});
    let (x, y) = tokio::join!(
        a.commit(ROUNDS, &empty, "x", "x"),
        a.commit(ROUNDS, &empty, "y", "y")
    );
    assert!(matches!(
        (&x, &y),
        (Ok(_), Err(StoreError::Conflict)) | (Err(StoreError::Conflict), Ok(_))
    ));
    // A base ahead of the head is no more valid than one behind it.
    let ahead = a.commit(ROUNDS + 5, &json!({}), "z", "z").await;
    assert_eq!(ahead, Err(StoreError::Conflict));
    assert_eq!(b.head().await.unwrap().number, ROUNDS + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_sees_commits_through_listen_notify() {
    let pg = Postgres::start();
    let writer = open(&pg.url(), no_poll()).await;
    let replica = open(&pg.url(), no_poll()).await;
    let mut feed = replica.subscribe();
    let mut latencies = Vec::new();
    for n in 1..=10u64 {
        let start = Instant::now();
        writer
            .commit(n - 1, &json!({"n": n}), "w", "c")
            .await
            .unwrap();
        wait_for(&mut feed, n, Duration::from_secs(1)).await;
        latencies.push(start.elapsed());
        assert_eq!(replica.head().await.unwrap().state, json!({"n": n}));
    }
    latencies.sort();
    println!(
        "LISTEN/NOTIFY propagation (commit call to the other replica's watch), 10 commits: \
         min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[5], latencies[9]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_catches_changes_no_notification_announced() {
    let pg = Postgres::start();
    let options = PgOptions {
        poll_interval: Duration::from_millis(200),
        ..PgOptions::default()
    };
    let replica = open(&pg.url(), options).await;
    let mut feed = replica.subscribe();
    // A row written without NOTIFY, as if the notification had been lost.
    pg.psql(
        "postgres",
        "INSERT INTO graphguard.revisions (number, actor, summary, state) \
         VALUES (1, 'dba', 'by hand', '{\"k\": 1}')",
    );
    let took = wait_for(&mut feed, 1, Duration::from_secs(2)).await;
    println!("poll noticed an unannounced commit after {took:?}");
    assert_eq!(replica.head().await.unwrap().state, json!({"k": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_unavailable_quickly_and_the_feed_recovers() {
    let mut pg = Postgres::start();
    let timeout = Duration::from_secs(1);
    let options = PgOptions {
        query_timeout: timeout,
        ..no_poll()
    };
    let replica = open(&pg.url(), options.clone()).await;
    replica
        .commit(0, &json!({"v": 1}), "a", "one")
        .await
        .unwrap();
    let mut feed = replica.subscribe();

    pg.stop();
    for op in ["head", "commit", "revisions"] {
        let start = Instant::now();
        let r = match op {
            "head" => replica.head().await.map(|_| ()),
            "commit" => replica.commit(1, &json!({}), "a", "x").await.map(|_| ()),
            _ => replica.revisions(10, None).await.map(|_| ()),
        };
        let took = start.elapsed();
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{op}: {r:?}");
        assert!(
            took < timeout + Duration::from_millis(500),
            "{op} took {took:?}"
        );
        let message = r.unwrap_err().to_string();
        assert!(!message.contains(PASSWORD), "{message}");
        println!("{op} with the database stopped: {took:?}: {message}");
    }
    assert!(matches!(replica.health(), Err(StoreError::Unavailable(_))));

    // Down long enough for the feed's backoff to grow.
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart();
    let writer = open(&pg.url(), options).await;
    writer
        .commit(1, &json!({"v": 2}), "b", "two")
        .await
        .unwrap();
    let took = wait_for(&mut feed, 2, Duration::from_secs(10)).await;
    println!("the replica's feed caught up {took:?} after the commit that followed the restart");
    let head = replica.head().await.unwrap();
    assert_eq!((head.number, head.state), (2, json!({"v": 2})));
    // After reconnecting, notifications flow again.
    writer
        .commit(2, &json!({"v": 3}), "b", "three")
        .await
        .unwrap();
    wait_for(&mut feed, 3, Duration::from_secs(1)).await;
    assert!(replica.health().is_ok(), "{:?}", replica.health());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_times_out_instead_of_hanging() {
    let pg = Postgres::start();
    let timeout = Duration::from_millis(800);
    let options = PgOptions {
        query_timeout: timeout,
        ..no_poll()
    };
    let store = open(&pg.url(), options.clone()).await;
    store.commit(0, &json!({}), "a", "one").await.unwrap();

    pg.freeze();
    let start = Instant::now();
    let r = store.head().await;
    let took = start.elapsed();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "{took:?}"
    );
    // A new connection is accepted by the kernel and never answered: bounded too.
    let start = Instant::now();
    let opened = PgStore::open(&pg.url(), options).await;
    assert!(matches!(opened, Err(StoreError::Unavailable(_))));
    assert!(start.elapsed() < timeout * 2 + Duration::from_millis(500));
    println!("head on a frozen database: Unavailable after {took:?}");

    pg.thaw();
    assert_eq!(
        store.head().await.unwrap().number,
        1,
        "a thawed database serves again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_concurrently_without_error() {
    let pg = Postgres::start();
    for round in 0..3 {
        let db = format!("migrate_{round}");
        pg.create_database(&db);
        let url = pg.url_for(&db);
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgStore::open(&url, PgOptions::default()).await })
            })
            .collect();
        let mut stores = Vec::new();
        for o in opens {
            stores.push(
                o.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}")),
            );
        }
        let applied = pg.psql(&db, "SELECT count(*) FROM graphguard.schema_migrations");
        assert_eq!(applied, "1");
        assert_eq!(stores[3].head().await.unwrap().number, 0);
    }
    // Reopening an up-to-date schema changes nothing.
    open(&pg.url_for("migrate_0"), PgOptions::default()).await;
    assert_eq!(
        pg.psql(
            "migrate_0",
            "SELECT count(*) FROM graphguard.schema_migrations"
        ),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first_and_is_pruned() {
    let pg = Postgres::start();
    let options = PgOptions {
        keep: 5,
        ..PgOptions::default()
    };
    let store = open(&pg.url(), options).await;
    for n in 0..12u64 {
        store
            .commit(n, &json!({"n": n + 1}), "a", &format!("c{}", n + 1))
            .await
            .unwrap();
    }
    let first = store.revisions(3, None).await.unwrap();
    assert_eq!(numbers(&first), [12, 11, 10]);
    assert_eq!(first[0].summary, "c12");
    let second = store.revisions(3, Some(10)).await.unwrap();
    assert_eq!(numbers(&second), [9, 8]);
    assert!(store.revisions(3, Some(8)).await.unwrap().is_empty());
    assert!(store.revisions(0, None).await.unwrap().is_empty());
    assert_eq!(
        numbers(&store.revisions(100, Some(u64::MAX)).await.unwrap()),
        [12, 11, 10, 9, 8]
    );
    assert_eq!(store.revision(7).await, Err(StoreError::NotFound));
    assert_eq!(store.revision(8).await.unwrap().state, json!({"n": 8}));
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM graphguard.revisions"),
        "5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_separate_stores() {
    let pg = Postgres::start();
    let other = PgOptions {
        schema: "tenant_b".into(),
        ..no_poll()
    };
    let a = open(&pg.url(), no_poll()).await;
    let b = open(&pg.url(), other.clone()).await;
    let b_again = open(&pg.url(), other).await;
    let mut b_feed = b_again.subscribe();
    a.commit(0, &json!({"a": 1}), "a", "a").await.unwrap();
    b.commit(0, &json!({"b": 1}), "b", "b").await.unwrap();
    b.commit(1, &json!({"b": 2}), "b", "b").await.unwrap();
    wait_for(&mut b_feed, 2, Duration::from_secs(1)).await;
    assert_eq!(a.head().await.unwrap().number, 1);
    assert_eq!(b_again.head().await.unwrap().state, json!({"b": 2}));
    let bad = PgOptions {
        schema: "Robert'); DROP TABLE x;--".into(),
        ..PgOptions::default()
    };
    assert!(matches!(
        PgStore::open(&pg.url(), bad).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_errors_or_descriptions() {
    let pg = Postgres::start();
    let wrong = format!(
        "postgres://postgres:not-{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port()
    );
    let err = store::open(&wrong).await.err().unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
    let store = store::open(&pg.url()).await.unwrap();
    assert!(!store.describe().contains(PASSWORD));
}

/// How many connections of the store's are encrypted, as the server sees them.
fn tls_connections(pg: &Postgres) -> u32 {
    let sql = "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
               WHERE s.ssl AND a.application_name = 'graphguard'";
    pg.psql("postgres", sql).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_encrypt_and_check_as_libpq_does() {
    let pg = Postgres::with_tls();
    let ca = pg.ca_file().display().to_string();
    let ip = pg.base_url("127.0.0.1");
    let name = pg.base_url("localhost");
    let opens = |url: String| async move { PgStore::open(&url, no_poll()).await };

    // require: encrypted, certificate not checked (the test CA is not trusted here).
    let s = opens(format!("{ip}?sslmode=require")).await.unwrap();
    assert_eq!(
        tls_connections(&pg),
        2,
        "the operations' and the feed's connections"
    );
    s.commit(0, &json!({"tls": true}), "a", "over TLS")
        .await
        .unwrap();
    drop(s);

    // verify-full: the chain and the name; the certificate names localhost, not 127.0.0.1.
    let full = opens(format!("{name}?sslmode=verify-full&sslrootcert={ca}"))
        .await
        .unwrap();
    assert_eq!(full.head().await.unwrap().state, json!({"tls": true}));
    let wrong_name = opens(format!("{ip}?sslmode=verify-full&sslrootcert={ca}")).await;
    assert!(
        matches!(wrong_name, Err(StoreError::Unavailable(_))),
        "{:?}",
        wrong_name.err()
    );
    // verify-ca: the chain only, so the address is fine.
    assert!(opens(format!("{ip}?sslmode=verify-ca&sslrootcert={ca}"))
        .await
        .is_ok());
    // An untrusted CA (the system's roots do not include the test CA) is refused.
    let untrusted = opens(format!("{name}?sslmode=verify-full")).await;
    assert!(matches!(untrusted, Err(StoreError::Unavailable(_))));
    // disable: plain TCP.
    let plain = opens(format!("{ip}?sslmode=disable")).await.unwrap();
    assert_eq!(plain.head().await.unwrap().number, 1);
    let all = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE NOT s.ssl AND a.application_name = 'graphguard'",
    );
    assert_eq!(
        all, "2",
        "the sslmode=disable store's two connections are plain"
    );
}
