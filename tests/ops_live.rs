//! Live operations: shadow mode, the metrics scrape, ConfigMap-style reloads under load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use graphguard::ops::metrics::Metrics;
use graphguard::ops::reload::{ReloadResult, Reloader};
use graphguard::policy::Policy;
use http::Method;

const ALICE: &str = "Bearer alice-demo-key";
const BOB: &str = "Bearer bob-demo-key";

#[tokio::test]
async fn shadow_policy_that_denies_is_counted_and_changes_no_response() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    // Candidate: threads are read-only for everyone.
    let yaml = format!("{}\nhandlers:\n  \"*\": {{filter: {{owner: \"{{user.identity}}\"}}}}\n  threads:read: {{deny: \"frozen\"}}\n", demo_authenticators());
    let (shadow, _dir) = load_policy(&PolicySource::Yaml(yaml));
    gw.gw.shadow.store(Some(Arc::new(shadow)));
    let lookups_before = up.thread_lookups(&tid);
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(gw.gw.metrics.shadow_disagreements.get(), 1);
    // The shadow evaluation reused the enforced decision's lookup.
    assert_eq!(up.thread_lookups(&tid), lookups_before + 1);
    // A different refusal (live 404, shadow 403) is a disagreement too.
    req(Method::GET, format!("/threads/{tid}"))
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(404);
    assert_eq!(gw.gw.metrics.shadow_disagreements.get(), 2);
    // A search both policies treat alike is no disagreement.
    req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&serde_json::json!({}))
        .send(&gw)
        .await;
    assert_eq!(gw.gw.metrics.shadow_disagreements.get(), 2);
}

#[tokio::test]
async fn metrics_scrape_counts_a_known_sequence() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    req(Method::GET, "/ok").send(&gw).await.assert_status(200);
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    req(Method::GET, format!("/threads/{tid}"))
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(404);
    req(Method::GET, format!("/threads/{tid}"))
        .auth("Bearer nope")
        .send(&gw)
        .await
        .assert_status(401);
    gw.gw.metrics.observe_pool(gw.gw.upstream.pool_stats());
    let text = gw.gw.metrics.encode();
    let line = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        line(
            r#"graphguard_requests_total{resource="none",action="none",decision="public",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        line(
            r#"graphguard_requests_total{resource="threads",action="read",decision="allow",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        line(
            r#"graphguard_requests_total{resource="threads",action="read",decision="deny",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        line(r#"graphguard_auth_failures_total{reason="invalid_api_key"}"#),
        1.0
    );
    assert_eq!(line("graphguard_lookup_cache_misses_total"), 1.0);
    assert_eq!(line("graphguard_lookup_cache_hits_total"), 2.0);
    assert_eq!(line("graphguard_request_duration_seconds_count"), 5.0);
    assert_eq!(line("graphguard_in_flight_requests"), 0.0);
    // Three forwards and a lookup, one after another: kept-alive connections are reused.
    let opened = line("graphguard_upstream_connections_opened");
    assert!(
        (1.0..5.0).contains(&opened),
        "{opened} connections for 4 sequential upstream requests"
    );
    assert_eq!(line("graphguard_upstream_resent_requests"), 0.0);
    assert!(line("graphguard_upstream_idle_connections") <= opened);
}

/// Write a ConfigMap-style directory version and atomically swap the `..data` symlink.
fn swap_configmap(root: &Path, n: usize, handlers: &str) {
    let ver = root.join(format!("..v{n}"));
    std::fs::create_dir(&ver).unwrap();
    std::fs::write(ver.join("authenticators.yaml"), demo_authenticators()).unwrap();
    std::fs::write(ver.join("handlers.yaml"), handlers).unwrap();
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{n}"), &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
    for f in ["authenticators.yaml", "handlers.yaml"] {
        let link = root.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

const OPEN: &str = "handlers:\n  threads:read: {allow: true}\n";
const CLOSED: &str = "handlers:\n  threads:read: {deny: \"closed\"}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_swaps_under_load_never_misauthorize_and_apply_within_a_second() {
    let up = MockUpstream::start().await;
    let tid = up.add_thread("alice");
    let root = tempfile::tempdir().unwrap();
    swap_configmap(root.path(), 0, OPEN);
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(root.path().to_path_buf()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let open_v = gw.gw.policy.load().version.clone();
    let reloader = Arc::new(Reloader::new(
        root.path().to_path_buf(),
        gw.gw.clone(),
        Arc::new(Metrics::new()),
    ));
    reloader.spawn(Duration::from_millis(50), Duration::from_secs(30));
    // Versions of the two contents (content hash, independent of the directory name).
    let closed_v = {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("authenticators.yaml"), demo_authenticators()).unwrap();
        std::fs::write(d.path().join("handlers.yaml"), CLOSED).unwrap();
        Policy::load_dir(d.path()).unwrap().version
    };
    assert_ne!(open_v, closed_v);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    let addr = gw.addr;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, checked, tid, open_v, closed_v) = (
            stop.clone(),
            checked.clone(),
            tid.clone(),
            open_v.clone(),
            closed_v.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            while !stop.load(Ordering::Relaxed) {
                let rq = http::Request::get(format!("http://{addr}/threads/{tid}"))
                    .header("authorization", BOB)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                let r = client.request(rq).await.expect("request failed");
                let status = r.status().as_u16();
                let v = r
                    .headers()
                    .get("x-graphguard-policy-version")
                    .expect("version header")
                    .to_str()
                    .unwrap()
                    .to_string();
                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                // Each response must match the policy version it reports.
                if v == open_v {
                    assert_eq!(status, 200, "open policy must allow");
                } else if v == closed_v {
                    assert_eq!(status, 403, "closed policy must deny");
                } else {
                    panic!("unknown version {v}");
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut worst = Duration::ZERO;
    for n in 1..=100 {
        let (content, want) = if n % 2 == 1 {
            (CLOSED, &closed_v)
        } else {
            (OPEN, &open_v)
        };
        swap_configmap(root.path(), n, content);
        let t = Instant::now();
        while gw.gw.policy.load().version != *want {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "swap {n} not applied within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst = worst.max(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        checked.load(Ordering::Relaxed) > 100,
        "the load kept running"
    );
    eprintln!(
        "100 swaps, {} checked requests, slowest swap applied in {worst:?}",
        checked.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn a_broken_policy_keeps_the_last_good_set_and_a_fix_recovers() {
    let up = MockUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    swap_configmap(root.path(), 0, OPEN);
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(root.path().to_path_buf()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let metrics = Arc::new(Metrics::new());
    let reloader = Reloader::new(root.path().to_path_buf(), gw.gw.clone(), metrics.clone());
    let good = gw.gw.policy.load().version.clone();
    swap_configmap(
        root.path(),
        1,
        "handlers:\n  threads:read: {filtr: {owner: x}}\n",
    );
    match reloader.reload("test").await {
        ReloadResult::Failed(e) => assert!(e.contains("handlers.yaml:2"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gw.gw.policy.load().version, good);
    assert!(reloader.status().last_error.is_some());
    assert!(metrics
        .encode()
        .contains(r#"graphguard_policy_reloads_total{reason="error"} 1"#));
    swap_configmap(root.path(), 2, CLOSED);
    assert!(matches!(
        reloader.reload("test").await,
        ReloadResult::Swapped(_)
    ));
    assert!(reloader.status().last_error.is_none());
    assert_ne!(gw.gw.policy.load().version, good);
}

#[tokio::test]
async fn rotating_a_keys_file_outside_the_policy_directory_is_a_new_version() {
    let root = tempfile::tempdir().unwrap();
    let policies = root.path().join("policies");
    let keys = root.path().join("keys");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(policies.join("auth.yaml"), "authenticators:\n  - api_key:\n      keys_file: ../keys/api-keys.yaml\nhandlers:\n  threads: {allow: true}\n").unwrap();
    let entry = |id: &str, digest: &str| format!("- {{identity: {id}, sha256: {digest}}}\n");
    let alice = "0572c17ed012b3efdf9df98db1718f225887132739b8da945d81ac5a7d1fea45";
    let bob = "3a1f6bae21de4f036f2aba80fce463677f1070f8bf81f0f475604cccd8e2d7f3";
    std::fs::write(keys.join("api-keys.yaml"), entry("alice", alice)).unwrap();
    let v1 = Policy::load_dir(&policies).unwrap().version;
    std::fs::write(
        keys.join("api-keys.yaml"),
        entry("alice", alice) + &entry("bob", bob),
    )
    .unwrap();
    let v2 = Policy::load_dir(&policies).unwrap().version;
    assert_ne!(v1, v2);
}

#[tokio::test]
async fn reading_the_policy_directory_triggers_no_reload() {
    // A reload reads the files; so may anyone else (kubelet, a sidecar, `graphguard check`).
    // Only a change may trigger one, or every reload would trigger the next.
    let up = MockUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    swap_configmap(root.path(), 0, OPEN);
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(root.path().to_path_buf()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let metrics = Arc::new(Metrics::new());
    let reloader = Arc::new(Reloader::new(
        root.path().to_path_buf(),
        gw.gw.clone(),
        metrics,
    ));
    reloader.spawn(Duration::from_millis(50), Duration::from_secs(3600));
    let attempts = || reloader.attempts.load(std::sync::atomic::Ordering::Relaxed);
    reloader.reload("test").await;
    for _ in 0..10 {
        for entry in std::fs::read_dir(root.path()).unwrap() {
            let _ = std::fs::read(entry.unwrap().path());
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        attempts(),
        1,
        "reads (and the reload's own) triggered reloads"
    );
    // A change still does.
    swap_configmap(root.path(), 1, CLOSED);
    for _ in 0..100 {
        if attempts() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(attempts() >= 2, "a change was not seen");
}
