//! Upstream and client faults: an upstream that closes, stalls or answers garbage never turns
//! into an allow or an unbounded wait; slow clients are cut; a policy directory that breaks or
//! disappears keeps the last good policy serving. Extends `proxy_streaming.rs` and
//! `proxy_authz.rs` (502 when down, 504 before headers, idle SSE cut, lookup garbage).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use graphguard::gateway::server::ServerConfig;
use graphguard::gateway::ProxyConfig;
use graphguard::ops::metrics::Metrics;
use graphguard::ops::reload::{ReloadResult, Reloader};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// A byte-level upstream
// ---------------------------------------------------------------------------------------------

/// What the raw upstream does once it has read a request head.
#[derive(Clone)]
enum Act {
    /// Close the connection without a byte.
    Close,
    /// Write these bytes, then keep the connection open and silent.
    WriteThenStall(Bytes),
}

/// An upstream speaking bytes, not HTTP: every connection gets the same act. Counts request
/// heads and records their first lines.
struct RawUpstream {
    url: String,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(act: Act) -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let act = act.clone();
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let first = String::from_utf8_lossy(&buf)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    h.lock().unwrap().push(first);
                    match act {
                        Act::Close => drop(s),
                        Act::WriteThenStall(b) => {
                            let _ = s.write_all(&b).await;
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                });
            }
        });
        RawUpstream { url, heads, task }
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn gateway(
    url: &str,
    policy: &str,
    response_timeout: Duration,
    idle: Duration,
) -> TestGateway {
    start_gateway(
        url,
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir(policy)),
            proxy: ProxyConfig {
                idle_timeout: idle,
                ..ProxyConfig::default()
            },
            response_timeout,
            ..GatewayOptions::default()
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_without_an_answer_is_502_json() {
    let up = RawUpstream::start(Act::Close).await;
    let gw = gateway(
        &up.url,
        "owner",
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await;
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    assert_eq!(json_error(&r, 502), "Upstream connection failed");
    // A lookup that is closed on fails closed as well: never forwarded.
    let r = req(Method::GET, format!("/threads/{}", new_id()))
        .auth(ALICE)
        .send(&gw)
        .await;
    json_error(&r, 502);
    assert!(up
        .heads()
        .iter()
        .all(|h| !h.starts_with("GET /threads/") || h.contains("HTTP/1.1")));
    assert_eq!(
        up.heads()
            .iter()
            .filter(|h| h.starts_with("GET /threads/"))
            .count(),
        up.heads().len() - 1,
        "{:?}",
        up.heads()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalling_inside_its_head_is_504_json() {
    let up = RawUpstream::start(Act::WriteThenStall(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
    )))
    .await;
    let gw = gateway(
        &up.url,
        "owner",
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    let started = Instant::now();
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    assert_eq!(json_error(&r, 504), "Upstream did not answer in time");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_whose_body_stalls_is_504_and_nothing_is_forwarded() {
    let up = RawUpstream::start(Act::WriteThenStall(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"metadata\":{\"owner\":",
    )))
    .await;
    let gw = gateway(
        &up.url,
        "owner",
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    let tid = new_id();
    let started = Instant::now();
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await;
    assert_eq!(json_error(&r, 504), "Upstream did not answer in time");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(up.heads(), vec![format!("GET /threads/{tid} HTTP/1.1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_response_stalling_mid_body_is_cut_by_the_idle_timeout() {
    let up = RawUpstream::start(Act::WriteThenStall(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"thread_id\":",
    )))
    .await;
    let gw = gateway(
        &up.url,
        "owner",
        Duration::from_secs(2),
        Duration::from_millis(400),
    )
    .await;
    let resp = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send_streaming(&gw)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("a stalled body must be cut by the idle timeout");
    assert!(body.is_err(), "a cut body must not look complete");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_response_stalling_mid_body_is_bounded() {
    // A store search whose filter cannot be pushed upstream (`$contains`) is read whole and
    // filtered at the gateway (ResponsePlan::StoreItems, like FilterList).
    let up = RawUpstream::start(Act::WriteThenStall(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"items\":[",
    )))
    .await;
    let gw = start_gateway(
        &up.url,
        GatewayOptions {
            policy: PolicySource::Yaml(format!(
                "{}\nhandlers:\n  store:search:\n    filter: {{ tags: {{ $contains: \"{{user.identity}}\" }} }}\n",
                demo_authenticators()
            )),
            response_timeout: Duration::from_millis(500),
            proxy: ProxyConfig {
                idle_timeout: Duration::from_millis(500),
                ..ProxyConfig::default()
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        req(Method::POST, "/store/items/search")
            .auth(ALICE)
            .json(&json!({"namespace_prefix": ["alice"]}))
            .send(&gw),
    )
    .await
    .expect("a filtered store search whose upstream body stalls hangs the client");
    assert!(r.status.is_server_error(), "{} {}", r.status, r.text());
    json_error(&r, r.status.as_u16());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(up.heads(), vec!["POST /store/items/search HTTP/1.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answered_with_garbage_are_refused_never_allowed() {
    let replies: Vec<(&str, Reply)> = vec![
        (
            "array",
            Reply::Json(StatusCode::OK, json!([{"metadata": {"owner": "alice"}}])),
        ),
        ("string", Reply::Json(StatusCode::OK, json!("alice"))),
        ("null", Reply::Json(StatusCode::OK, json!(null))),
        ("number", Reply::Json(StatusCode::OK, json!(1))),
        (
            "metadata list",
            Reply::Json(StatusCode::OK, json!({"metadata": ["owner", "alice"]})),
        ),
        (
            "empty body",
            Reply::Raw {
                status: StatusCode::OK,
                headers: vec![],
                body: Bytes::new(),
            },
        ),
        (
            "two documents",
            Reply::Raw {
                status: StatusCode::OK,
                headers: vec![("content-type", "application/json".into())],
                body: Bytes::from_static(
                    b"{\"metadata\":{\"owner\":\"bob\"}}{\"metadata\":{\"owner\":\"alice\"}}",
                ),
            },
        ),
        (
            "too large",
            Reply::Raw {
                status: StatusCode::OK,
                headers: vec![("content-type", "application/json".into())],
                body: Bytes::from(format!(
                    "{{\"metadata\":{{\"owner\":\"alice\"}},\"pad\":\"{}\"}}",
                    "a".repeat(2 * 1024 * 1024)
                )),
            },
        ),
        (
            "redirect",
            Reply::Raw {
                status: StatusCode::FOUND,
                headers: vec![("location", "/threads/other".into())],
                body: Bytes::new(),
            },
        ),
        (
            "401",
            Reply::Json(StatusCode::UNAUTHORIZED, json!({"detail": "no"})),
        ),
        (
            "403",
            Reply::Json(StatusCode::FORBIDDEN, json!({"detail": "no"})),
        ),
        (
            "204",
            Reply::Raw {
                status: StatusCode::NO_CONTENT,
                headers: vec![],
                body: Bytes::new(),
            },
        ),
        (
            "503",
            Reply::Json(StatusCode::SERVICE_UNAVAILABLE, json!({"detail": "busy"})),
        ),
        (
            "409",
            Reply::Json(
                StatusCode::CONFLICT,
                json!({"metadata": {"owner": "alice"}}),
            ),
        ),
    ];
    for (what, reply) in replies {
        let (up, gw) = owner_setup().await;
        let tid = new_id();
        up.on(Method::GET, &format!("/threads/{tid}"), reply);
        for path in [format!("/threads/{tid}"), format!("/threads/{tid}/state")] {
            let r = req(Method::GET, path.clone()).auth(ALICE).send(&gw).await;
            assert!(
                r.status.is_server_error() || r.status == StatusCode::NOT_FOUND,
                "{what} {path}: {} {}",
                r.status,
                r.text()
            );
            json_error(&r, r.status.as_u16());
        }
        let r = req(Method::PATCH, format!("/threads/{tid}"))
            .auth(ALICE)
            .json(&json!({"metadata": {}}))
            .send(&gw)
            .await;
        assert!(
            r.status.is_server_error() || r.status == StatusCode::NOT_FOUND,
            "{what}: {}",
            r.status
        );
        up.assert_nothing_forwarded();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_answered_with_garbage_are_502_and_leak_nothing() {
    let up = MockUpstream::start().await;
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir("participants")),
            ..GatewayOptions::default()
        },
    )
    .await;
    for body in [
        &b"<html>secret bob data</html>"[..],
        b"{\"items\":[{\"metadata\":{\"owner\":\"bob\",\"secret\":1}}]}",
        b"[{\"metadata\":{\"owner\":\"bob\",\"secret\":1}}",
        b"",
    ] {
        up.on(
            Method::POST,
            "/threads/search",
            Reply::Raw {
                status: StatusCode::OK,
                headers: vec![("content-type", "application/json".into())],
                body: Bytes::from(body.to_vec()),
            },
        );
        let r = req(Method::POST, "/threads/search")
            .auth(ALICE)
            .json(&json!({}))
            .send(&gw)
            .await;
        json_error(&r, 502);
        assert!(!r.text().contains("secret"), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_lists_answered_with_garbage_are_502_and_leak_nothing() {
    let (up, gw) = owner_setup().await;
    let aid = new_id();
    up.on(
        Method::GET,
        &format!("/assistants/{aid}"),
        Reply::Json(
            StatusCode::OK,
            json!({"assistant_id": aid, "metadata": {"owner": "alice"}}),
        ),
    );
    for body in [
        &b"{\"versions\":[{\"metadata\":{\"owner\":\"bob\"},\"secret\":1}]}"[..],
        b"secret, not json",
        b"\"secret\"",
    ] {
        up.on(
            Method::POST,
            &format!("/assistants/{aid}/versions"),
            Reply::Raw {
                status: StatusCode::OK,
                headers: vec![("content-type", "application/json".into())],
                body: Bytes::from(body.to_vec()),
            },
        );
        let r = req(Method::POST, format!("/assistants/{aid}/versions"))
            .auth(ALICE)
            .json(&json!({}))
            .send(&gw)
            .await;
        json_error(&r, 502);
        assert!(!r.text().contains("secret"), "{}", r.text());
    }
    // Items without metadata are filtered out like foreign ones.
    up.on(
        Method::POST,
        &format!("/assistants/{aid}/versions"),
        Reply::Json(
            StatusCode::OK,
            json!([{"version": 1}, {"version": 2, "metadata": null}]),
        ),
    );
    let r = req(Method::POST, format!("/assistants/{aid}/versions"))
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    json_error(&r, 404);
}

// ---------------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------------

async fn slow_gateway(up: &MockUpstream) -> TestGateway {
    start_gateway(
        &up.url(),
        GatewayOptions {
            server: ServerConfig {
                header_read_timeout: Duration::from_millis(500),
                drain: Duration::from_secs(1),
                ..ServerConfig::default()
            },
            proxy: ProxyConfig {
                body_timeout: Duration::from_millis(700),
                ..ProxyConfig::default()
            },
            ..GatewayOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_headers_are_cut_at_the_header_timeout() {
    let up = MockUpstream::start().await;
    let gw = slow_gateway(&up).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nX-Pad: {}",
        "a".repeat(200)
    );
    let started = Instant::now();
    // One byte every 20 ms: progress never resets the header deadline.
    let mut closed_after = None;
    for b in head.bytes() {
        if s.write_all(&[b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            let text = String::from_utf8_lossy(&probe[..n]).to_string();
            assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text:?}");
            closed_after = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let t = closed_after.expect("a trickling client was never cut");
    assert!(t < Duration::from_secs(2), "cut after {t:?}");
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_body_is_408_at_the_body_timeout() {
    let up = MockUpstream::start().await;
    let gw = slow_gateway(&up).await;
    let mut c = RawConn::connect(&gw).await;
    c.write(
        format!(
            "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let started = Instant::now();
    let writer = async {
        for _ in 0..100 {
            c.write(b" ").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Keep trickling while waiting; the answer must come at the body timeout (0.7 s), not after
    // the 5 s the client would need.
    tokio::select! {
        _ = writer => panic!("the whole trickled body was accepted"),
        _ = tokio::time::sleep(Duration::from_millis(1500)) => {}
    }
    let r = c.read_response().await;
    assert_eq!(raw_json_error(&r, 408), "Request body not received in time");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    let up = MockUpstream::start().await;
    let gw = slow_gateway(&up).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
    assert!(
        r.is_ok(),
        "an idle connection was still open after 3 s (header timeout 0.5 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_h2_connection_is_closed() {
    let up = MockUpstream::start().await;
    let gw = slow_gateway(&up).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Client preface and an empty SETTINGS frame, then silence.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent h2 connection was still open after 5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_its_first_request() {
    let up = MockUpstream::start().await;
    let gw = slow_gateway(&up).await;
    let mut c = RawConn::connect(&gw).await;
    c.write(b"GET /ok HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.read_response().await.status, 200);
    // Then a partial next request and silence: the header timeout applies again.
    c.write(b"GET /ok HTTP/1.1\r\n").await;
    let started = Instant::now();
    let rest = c.read_to_end().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Policy directory faults
// ---------------------------------------------------------------------------------------------

const GOOD: &str = r#"
handlers:
  "*":
    metadata: { owner: "{user.identity}" }
    filter: { owner: "{user.identity}" }
"#;

/// One way of breaking the policy directory.
type Breaker = Box<dyn Fn(&std::path::Path)>;

struct Reloading {
    up: MockUpstream,
    gw: TestGateway,
    reloader: Arc<Reloader>,
    root: tempfile::TempDir,
    dir: std::path::PathBuf,
}

async fn reloading() -> Reloading {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("authenticators.yaml"), demo_authenticators()).unwrap();
    std::fs::write(dir.join("handlers.yaml"), GOOD).unwrap();
    let up = MockUpstream::start().await;
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(dir.clone()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let reloader = Arc::new(Reloader::new(
        dir.clone(),
        gw.gw.clone(),
        Arc::new(Metrics::new()),
    ));
    Reloading {
        up,
        gw,
        reloader,
        root,
        dir,
    }
}

/// The owner policy is still what decides: alice's create is stamped, bob's thread hidden.
async fn still_serving(s: &Reloading, version: &str) {
    s.up.clear();
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&s.gw)
        .await;
    r.assert_status(200);
    assert_eq!(
        r.header("x-graphguard-policy-version").as_deref(),
        Some(version)
    );
    assert_eq!(s.up.one_forwarded().json()["metadata"]["owner"], "alice");
    let bobs = s.up.add_thread("bob");
    let r = req(Method::GET, format!("/threads/{bobs}"))
        .auth(ALICE)
        .send(&s.gw)
        .await;
    json_error(&r, 404);
    let r = req(Method::POST, "/threads")
        .json(&json!({}))
        .send(&s.gw)
        .await;
    json_error(&r, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_unreadable_or_vanished_policy_directory_keeps_the_last_good_set() {
    let s = reloading().await;
    let version = s.gw.gw.policy.load().version.clone();
    still_serving(&s, &version).await;
    let steps: Vec<(&str, Breaker)> = vec![
        (
            "invalid yaml",
            Box::new(|d| std::fs::write(d.join("handlers.yaml"), "handlers: [").unwrap()),
        ),
        (
            "unknown key",
            Box::new(|d| std::fs::write(d.join("handlers.yaml"), "handler: {}\n").unwrap()),
        ),
        (
            "invalid utf-8",
            Box::new(|d| {
                std::fs::write(d.join("handlers.yaml"), b"handlers:\n  \xff: {}\n").unwrap()
            }),
        ),
        (
            "a directory named like a file",
            Box::new(|d| {
                std::fs::remove_file(d.join("handlers.yaml")).unwrap();
                std::fs::create_dir(d.join("handlers.yaml")).unwrap();
                std::fs::remove_file(d.join("authenticators.yaml")).unwrap();
            }),
        ),
        (
            "dangling symlinks only",
            Box::new(|d| {
                std::fs::remove_dir(d.join("handlers.yaml")).unwrap();
                std::os::unix::fs::symlink("/nonexistent/graphguard.yaml", d.join("x.yaml"))
                    .unwrap();
            }),
        ),
        (
            "directory deleted",
            Box::new(|d| std::fs::remove_dir_all(d).unwrap()),
        ),
        (
            "a file in its place",
            Box::new(|d| std::fs::write(d, GOOD).unwrap()),
        ),
    ];
    for (what, break_it) in steps {
        break_it(&s.dir);
        let r = s.reloader.reload("test").await;
        assert!(matches!(r, ReloadResult::Failed(_)), "{what}: {r:?}");
        assert!(s.reloader.status().last_error.is_some(), "{what}");
        assert_eq!(s.gw.gw.policy.load().version, version, "{what}");
        still_serving(&s, &version).await;
    }
    // Restored (with a change): the next reload swaps it in.
    std::fs::remove_file(&s.dir).unwrap();
    std::fs::create_dir(&s.dir).unwrap();
    std::fs::write(s.dir.join("authenticators.yaml"), demo_authenticators()).unwrap();
    std::fs::write(s.dir.join("handlers.yaml"), format!("{GOOD}\n# v2\n")).unwrap();
    let r = s.reloader.reload("test").await;
    assert!(matches!(r, ReloadResult::Swapped(_)), "{r:?}");
    let v2 = s.gw.gw.policy.load().version.clone();
    assert_ne!(v2, version);
    still_serving(&s, &v2).await;
    drop(s.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_reloader_survives_the_directory_being_deleted_under_it() {
    let s = reloading().await;
    let version = s.gw.gw.policy.load().version.clone();
    s.reloader
        .spawn(Duration::from_millis(50), Duration::from_millis(200));
    std::fs::remove_dir_all(&s.dir).unwrap();
    // Several watch events and polls fail while requests keep being served.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        still_serving(&s, &version).await;
    }
    assert!(s.reloader.status().last_error.is_some());
    // A new directory at the same path is picked up by the periodic re-read.
    std::fs::create_dir(&s.dir).unwrap();
    std::fs::write(s.dir.join("authenticators.yaml"), demo_authenticators()).unwrap();
    std::fs::write(s.dir.join("handlers.yaml"), format!("{GOOD}\n# v3\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.gw.gw.policy.load().version == version {
        assert!(
            Instant::now() < deadline,
            "the restored directory was never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = s.gw.gw.policy.load().version.clone();
    still_serving(&s, &v).await;
}
