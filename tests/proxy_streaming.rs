//! Streaming responses (SSE passes through frame by frame), SSE-delivered refusals, and what
//! the client sees when the upstream is down, slow or breaks mid-body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use graphguard::gateway::ProxyConfig;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

/// How long a frame may take to cross the gateway: generous, this is not a benchmark.
const FRAME_BOUND: Duration = Duration::from_secs(1);

fn frame(n: u32) -> Bytes {
    Bytes::from(format!("event: values\r\ndata: {{\"n\":{n}}}\r\n\r\n"))
}

/// Read from `body` until `buf` ends with `want`, within `bound`.
async fn read_frame(body: &mut Incoming, buf: &mut BytesMut, want: &[u8], bound: Duration) {
    let deadline = Instant::now() + bound;
    while !buf.ends_with(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Err(_) => panic!(
                "frame {:?} not received within {bound:?}; have {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(buf)
            ),
            Ok(None) => panic!(
                "stream ended before {:?}; have {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(buf)
            ),
            Ok(Some(Err(e))) => panic!(
                "stream failed before {:?}: {e}",
                String::from_utf8_lossy(want)
            ),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_frames_pass_through_one_by_one() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let run = new_id();
    let path = format!("/threads/{tid}/runs/{run}/stream");
    let frames = up.sse(Method::GET, &path);
    let resp = req(Method::GET, path.clone())
        .auth(ALICE)
        .header("accept", "text/event-stream")
        .send_streaming(&gw)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    for n in 1..=3 {
        let f = frame(n);
        frames.send(f.clone()).unwrap();
        // Frame n arrives before frame n+1 is even sent: nothing buffers the stream.
        read_frame(&mut body, &mut buf, &f, FRAME_BOUND).await;
    }
    drop(frames);
    let end = tokio::time::timeout(FRAME_BOUND, body.frame())
        .await
        .expect("stream end not received");
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
    let want: Vec<u8> = (1..=3).flat_map(|n| frame(n).to_vec()).collect();
    assert_eq!(&buf[..], &want[..]);
    let seen = up.one_forwarded();
    assert_eq!(seen.uri, path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_frames_pass_through_one_by_one_over_h2c() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let path = format!("/threads/{tid}/stream");
    let frames = up.sse(Method::GET, &path);
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let r = http::Request::get(format!("http://{}{path}", gw.addr))
        .header("authorization", ALICE)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(CLIENT_TIMEOUT, sender.send_request(r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    for n in 1..=2 {
        let f = frame(n);
        frames.send(f.clone()).unwrap();
        read_frame(&mut body, &mut buf, &f, FRAME_BOUND).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_run_stream_of_a_foreign_thread_is_an_error_event() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let run = new_id();
    let r = req(Method::GET, format!("/threads/{tid}/runs/{run}/stream"))
        .auth(BOB)
        .send(&gw)
        .await;
    r.assert_status(200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text();
    assert!(text.starts_with("event: error\r\ndata: "), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    let data = text.trim_start_matches("event: error\r\ndata: ").trim_end();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        v,
        json!({"error": "HTTPException", "message": "404: Thread not found"})
    );
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_thread_stream_of_a_missing_thread_is_an_error_event() {
    let (up, gw) = owner_setup().await;
    let tid = new_id();
    let r = req(Method::GET, format!("/threads/{tid}/stream"))
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(200);
    assert!(
        r.text().contains("\"message\":\"404: Thread not found\""),
        "{}",
        r.text()
    );
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_of_a_foreign_thread_is_a_json_404() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let r = req(
        Method::GET,
        format!("/threads/{tid}/runs/{}/join", new_id()),
    )
    .auth(BOB)
    .send(&gw)
    .await;
    r.assert_status(404);
    assert_eq!(r.json(), json!({"detail": "Thread not found"}));
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_is_cut_after_the_idle_timeout() {
    let up = MockUpstream::start().await;
    let opts = GatewayOptions {
        proxy: ProxyConfig {
            idle_timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
        ..GatewayOptions::default()
    };
    let gw = start_gateway(&up.url(), opts).await;
    let tid = up.add_thread("alice");
    let path = format!("/threads/{tid}/stream");
    let frames = up.sse(Method::GET, &path);
    let resp = req(Method::GET, path).auth(ALICE).send_streaming(&gw).await;
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    frames.send(frame(1)).unwrap();
    read_frame(&mut body, &mut buf, &frame(1), FRAME_BOUND).await;
    // Then silence: the gateway ends the stream (with an error) instead of holding it forever.
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                other => return other.map(|r| r.map(|_| ())),
            }
        }
    })
    .await
    .expect("idle stream was not cut");
    assert!(matches!(end, Some(Err(_)) | None), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    drop(frames);
}

// ---------------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_json() {
    let url = closed_port_url().await;
    let gw = start_gateway(&url, GatewayOptions::default()).await;
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(502);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.detail(), "Upstream unavailable");
    // A lookup against a down upstream fails closed too.
    let r = req(Method::GET, format!("/threads/{}", new_id()))
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(502);
    r.detail();
    req(Method::GET, "/ok").send(&gw).await.assert_status(502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalling_before_headers_is_504_json() {
    let up = MockUpstream::start().await;
    let opts = GatewayOptions {
        response_timeout: Duration::from_millis(500),
        ..GatewayOptions::default()
    };
    let gw = start_gateway(&up.url(), opts).await;
    up.on(Method::POST, "/threads", Reply::Stall);
    let started = Instant::now();
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    let took = started.elapsed();
    r.assert_status(504);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.detail(), "Upstream did not answer in time");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_stalling_is_504_and_not_forwarded() {
    let up = MockUpstream::start().await;
    let opts = GatewayOptions {
        response_timeout: Duration::from_millis(400),
        ..GatewayOptions::default()
    };
    let gw = start_gateway(&up.url(), opts).await;
    let tid = new_id();
    up.on(Method::GET, &format!("/threads/{tid}"), Reply::Stall);
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.text());
    r.detail();
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_body_truncates_the_client_body() {
    let (up, gw) = owner_setup().await;
    up.on(
        Method::POST,
        "/threads",
        Reply::ResetMidBody {
            declared: 1000,
            first: Bytes::from_static(b"{\"thread_id\":\""),
        },
    );
    let resp = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send_streaming(&gw)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("truncated body hung the client");
    // The declared Content-Length (1000) is passed through, so the cut is visible as an
    // incomplete message rather than a clean, shorter body.
    if let Ok(c) = body {
        panic!(
            "the client saw a clean end of a truncated body ({} of 1000 bytes)",
            c.to_bytes().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_sse_stream_ends_the_client_stream() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let path = format!("/threads/{tid}/stream");
    up.on(
        Method::GET,
        &path,
        Reply::ResetMidBody {
            declared: 10_000,
            first: frame(1),
        },
    );
    let resp = req(Method::GET, path).auth(ALICE).send_streaming(&gw).await;
    let r = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("hung");
    assert!(r.is_err(), "a cut stream must not look complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_garbage_is_502_json() {
    let (up, gw) = owner_setup().await;
    up.set_garbage(Some(b"garbage garbage garbage\r\n\r\n"));
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(502);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    r.detail();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_status_is_passed_through() {
    let (up, gw) = owner_setup().await;
    up.on(
        Method::POST,
        "/threads",
        Reply::Json(
            StatusCode::CONFLICT,
            json!({"detail": "Thread with ID x already exists"}),
        ),
    );
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(409);
    assert_eq!(r.detail(), "Thread with ID x already exists");
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    up.set_lookup_delay(Duration::from_millis(400));
    let gw = std::sync::Arc::new(gw);
    let g2 = gw.clone();
    let path = format!("/threads/{tid}");
    let inflight = tokio::spawn(async move { req(Method::GET, path).auth(ALICE).send(&g2).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.shutdown.send(true).unwrap();
    let r = inflight.await.unwrap();
    r.assert_status(200);
    // The listener is closed: a new connection is refused (or closed without an answer).
    tokio::time::sleep(Duration::from_millis(100)).await;
    match tokio::net::TcpStream::connect(gw.addr).await {
        Err(_) => {}
        Ok(mut s) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut buf = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
            assert!(
                matches!(n, Ok(Ok(0)) | Ok(Err(_))),
                "a new connection was served after shutdown: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_denied_by_the_handler_is_a_403_error_event() {
    let up = MockUpstream::start().await;
    let yaml = format!(
        "{}\nhandlers:\n  threads:read: {{allow: false}}\n  \"*\": {{allow: true}}\n",
        demo_authenticators()
    );
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(yaml),
            ..GatewayOptions::default()
        },
    )
    .await;
    let r = req(Method::GET, format!("/threads/{}/stream", new_id()))
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(
        r.text().contains("\"message\":\"403: Forbidden\""),
        "{}",
        r.text()
    );
    // The same read outside a stream is a plain JSON 403.
    let r = req(Method::GET, format!("/threads/{}", new_id()))
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(403);
    assert_eq!(r.detail(), "Forbidden");
    assert!(up.requests().is_empty());
}
