//! Hostile JSON bodies on the routes graphguard reads and rewrites: anything the gateway and
//! the agent server (Python's `json`) could read differently is refused, limits hold without
//! a stack overflow, and what is forwarded keeps the client's bytes. Extends
//! `proxy_forwarding.rs` (invalid JSON, duplicate and escaped keys, depth 100, 413).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use graphguard::gateway::ProxyConfig;
use http::{Method, StatusCode};
use serde_json::json;

const SMALL: usize = 1024;

async fn small() -> (MockUpstream, TestGateway) {
    let up = MockUpstream::start().await;
    let gw = gateway_with(
        &up,
        ProxyConfig {
            max_body: SMALL,
            ..ProxyConfig::default()
        },
    )
    .await;
    (up, gw)
}

async fn post(gw: &TestGateway, path: &str, body: impl Into<bytes::Bytes>) -> Resp {
    req(Method::POST, path)
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(gw)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_utf8_json_are_422() {
    let (up, gw) = owner_setup().await;
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"metadata\":{\"owner\":\"\xff\"}}".to_vec(),
        b"{\"metadata\":{\"owner\":\"\xc0\xae\"}}".to_vec(),
        b"{\"metadata\":{\"owner\":\"\xed\xa0\x80\"}}".to_vec(),
        b"{\"x\":\"\xe9t\xe9\"}".to_vec(),
        // A lone surrogate escape in a key (Python reads it; the gateway cannot compare it).
        b"{\"metadata\":{\"owner\\ud800\":\"bob\"}}".to_vec(),
        b"{\"m\\udc00etadata\":{}}".to_vec(),
        // A byte-order mark (Python's json.loads(bytes) accepts it).
        b"\xef\xbb\xbf{\"metadata\":{\"owner\":\"bob\"}}".to_vec(),
        // UTF-16 (Python's json.loads(bytes) detects it).
        "{\"metadata\":{\"owner\":\"bob\"}}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect(),
        // Python-only literals and syntax.
        b"{\"metadata\":{\"x\":NaN}}".to_vec(),
        b"{\"metadata\":{\"x\":Infinity}}".to_vec(),
        b"{\"metadata\":{\"x\":-Infinity}}".to_vec(),
        b"{\"metadata\":{\"x\":1,}}".to_vec(),
        b"{'metadata':{}}".to_vec(),
        b"{\"metadata\":{}} // c".to_vec(),
        b"{\"metadata\":{}}\x00".to_vec(),
        b"{\"metadata\":{\"owner\":\"a\x01b\"}}".to_vec(),
        b"{\"metadata\":{\"x\":01}}".to_vec(),
        b"{\"metadata\":{\"x\":.5}}".to_vec(),
        b"{\"metadata\":{\"x\":+1}}".to_vec(),
        b"\x0c{}".to_vec(),
    ];
    for body in bodies {
        for path in [
            "/threads",
            "/threads/search",
            "/runs/crons/search",
            "/store/items/search",
        ] {
            let r = post(&gw, path, body.clone()).await;
            assert_eq!(
                r.status.as_u16(),
                422,
                "{path} {:?}: {}",
                String::from_utf8_lossy(&body),
                r.text()
            );
            assert_eq!(
                json_error(&r, 422),
                "Invalid JSON in request body",
                "{path} {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    up.assert_nothing_forwarded();
    // A lone surrogate in a value is valid for both parsers; the stamp still wins.
    let r = post(
        &gw,
        "/threads",
        r#"{"metadata":{"owner":"\ud800","x":"\udc00"}}"#,
    )
    .await;
    r.assert_status(200);
    let seen = up.one_forwarded();
    assert!(String::from_utf8_lossy(&seen.body).contains(r#""owner":"alice""#));
    assert!(!String::from_utf8_lossy(&seen.body).contains("ud800"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_in_every_spelling_are_400_on_every_rewritten_route() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let many: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
    let bodies = [
        r#"{"metadata":{},"\u006d\u0065\u0074\u0061\u0064\u0061\u0074\u0061":{"owner":"bob"}}"#
            .to_string(),
        r#"{"metadata":{"owner":"x","\u006fwner":"bob"}}"#.to_string(),
        r#"{"metadata":{"own\u0065r":"bob","owner":"x"}}"#.to_string(),
        r#"{"metadata":{"owner":"bob","owner":"bob"}}"#.to_string(),
        r#"{"limit":1,"limit":1000}"#.to_string(),
        // More than 16 keys: the hashed duplicate check.
        format!("{{{many}\"metadata\":{{}},\"k39\":0}}"),
        format!("{{\"metadata\":{{{many}\"owner\":\"x\",\"k0\":1}}}}"),
    ];
    let routes = [
        ("POST", "/threads".to_string()),
        ("POST", "/threads/search".to_string()),
        ("POST", "/threads/count".to_string()),
        ("PATCH", format!("/threads/{tid}")),
        ("POST", "/assistants".to_string()),
        ("POST", "/assistants/search".to_string()),
        ("POST", "/runs/crons".to_string()),
        ("POST", format!("/threads/{tid}/runs")),
        ("POST", "/runs/wait".to_string()),
        ("PUT", "/store/items".to_string()),
        ("POST", "/store/items/search".to_string()),
    ];
    for body in &bodies {
        for (method, path) in &routes {
            let r = req(Method::from_bytes(method.as_bytes()).unwrap(), path.clone())
                .auth(ALICE)
                .header("content-type", "application/json")
                .body(body.clone())
                .send(&gw)
                .await;
            let d = json_error(&r, 400);
            assert!(
                d.starts_with("Duplicate key"),
                "{method} {path} {body}: {d}"
            );
        }
    }
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_body_shapes_are_checked_on_every_stamped_route() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    for (method, path, rest) in [
        (Method::POST, "/threads".to_string(), json!({})),
        (Method::PATCH, format!("/threads/{tid}"), json!({})),
        (
            Method::POST,
            "/assistants".to_string(),
            json!({"graph_id": "agent"}),
        ),
        (
            Method::POST,
            format!("/threads/{tid}/runs/wait"),
            json!({"assistant_id": "agent"}),
        ),
        (
            Method::POST,
            "/runs/crons".to_string(),
            json!({"assistant_id": "agent", "schedule": "* * * * *"}),
        ),
    ] {
        for md in [json!("x"), json!(1), json!([]), json!(false)] {
            let mut body = rest.clone();
            body["metadata"] = md;
            let r = req(method.clone(), path.clone())
                .auth(ALICE)
                .json(&body)
                .send(&gw)
                .await;
            assert_eq!(
                json_error(&r, 422),
                "metadata must be an object",
                "{method} {path}"
            );
        }
        for top in ["[]", "\"x\"", "1", "null", "true"] {
            let r = req(method.clone(), path.clone())
                .auth(ALICE)
                .header("content-type", "application/json")
                .body(top)
                .send(&gw)
                .await;
            assert_eq!(
                json_error(&r, 422),
                "Request body must be a JSON object",
                "{method} {path} {top}"
            );
        }
    }
    up.assert_nothing_forwarded();
    // `metadata: null` is stamped like an absent one.
    let r = post(&gw, "/threads", r#"{"metadata":null}"#).await;
    r.assert_status(200);
    assert_eq!(
        up.one_forwarded().json()["metadata"],
        json!({"owner": "alice"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_are_forwarded_byte_for_byte() {
    let (up, gw) = owner_setup().await;
    // (Python reads 1e400 as inf; the gateway does not interpret it, it only copies it.)
    let body = r#"{"metadata":{"big":123456789012345678901234567890,"f":1.00000000000000000001,"e":1E2,"neg":-0,"inf":1e400},"ttl":{"n":18446744073709551616}}"#;
    post(&gw, "/threads", body).await.assert_status(200);
    let seen = up.one_forwarded();
    let text = String::from_utf8(seen.body.to_vec()).unwrap();
    for digits in [
        "123456789012345678901234567890",
        "1.00000000000000000001",
        "1E2",
        "-0",
        "18446744073709551616",
        "1e400",
    ] {
        assert!(text.contains(digits), "{digits} lost: {text}");
    }
    assert!(text.contains("\"owner\":\"alice\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_in_window_fields_are_refused_or_clamped() {
    let up = MockUpstream::start().await;
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir("participants")),
            ..GatewayOptions::default()
        },
    )
    .await;
    up.on(Method::POST, "/threads/search", Reply::Search(Vec::new()));
    for body in [
        r#"{"limit":1e300}"#,
        r#"{"limit":99999999999999999999999}"#,
        r#"{"offset":18446744073709551615,"limit":18446744073709551615}"#,
        r#"{"limit":-1}"#,
        r#"{"limit":"10"}"#,
        r#"{"offset":1.5}"#,
    ] {
        let r = post(&gw, "/threads/search", body).await;
        assert!(
            r.status == StatusCode::OK || r.status.is_client_error(),
            "{body}: {} {}",
            r.status,
            r.text()
        );
        if r.status.is_client_error() {
            json_error(&r, r.status.as_u16());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_batch_keeps_the_clients_numbers() {
    let (up, gw) = owner_setup().await;
    let body = r#"[{"assistant_id":"agent","input":{"id":123456789012345678901234567890,"p":0.10000000000000000001}}]"#;
    post(&gw, "/runs/batch", body).await.assert_status(200);
    let text = String::from_utf8(up.one_forwarded().body.to_vec()).unwrap();
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    assert!(text.contains("0.10000000000000000001"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_batch_items_are_stamped_whatever_their_spelling() {
    let (up, gw) = owner_setup().await;
    let body = r#"[{"assistant_id":"agent","metadata":{"owner":"bob"},"metadata":{"x":1}},{"assistant_id":"agent","meta\u0064ata":{"\u006fwner":"bob"}},{"assistant_id":"agent","metadata":null}]"#;
    let r = post(&gw, "/runs/batch", body).await;
    if r.status == StatusCode::OK {
        let seen = up.one_forwarded();
        for item in object_items(&seen.body) {
            let mds: Vec<_> = object_keys(item.to_string().as_bytes())
                .into_iter()
                .filter(|(k, _)| k == "metadata")
                .collect();
            assert_eq!(mds.len(), 1, "{item}");
            assert_eq!(mds[0].1["owner"], "alice", "{item}");
        }
        assert!(!String::from_utf8_lossy(&seen.body).contains("bob"));
    } else {
        json_error(&r, r.status.as_u16());
        up.assert_nothing_forwarded();
    }
    // Non-object items and non-object metadata are refused.
    up.clear();
    for body in [
        r#"[1]"#,
        r#"[{"assistant_id":"agent","metadata":[]}]"#,
        r#"{"assistant_id":"agent"}"#,
    ] {
        let r = post(&gw, "/runs/batch", body).await;
        json_error(&r, 422);
    }
    up.assert_nothing_forwarded();
}

fn object_items(raw: &[u8]) -> Vec<serde_json::Value> {
    match serde_json::from_slice(raw).unwrap() {
        serde_json::Value::Array(a) => a,
        v => panic!("not an array: {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_nesting_is_refused_without_a_stack_overflow() {
    // Runs on a small stack: the limit must hold without recursion (a tokio worker's stack is
    // 2 MiB; 400k open brackets would overflow any recursive parser).
    let (up, gw) = owner_setup().await;
    let n = 400_000;
    let bodies = [
        format!("{{\"metadata\":{}{}}}", "[".repeat(n), "]".repeat(n)),
        format!(
            "{{\"metadata\":{{\"x\":{}1{}}}}}",
            "{\"a\":".repeat(n),
            "}".repeat(n)
        ),
        format!("{{\"x\":{}", "[".repeat(n)),
        "[".repeat(n),
        format!(
            "{{\"metadata\":{{}},\"x\":{}{}}}",
            "[".repeat(65),
            "]".repeat(65)
        ),
    ];
    for body in &bodies {
        for path in [
            "/threads",
            "/threads/search",
            "/store/items/search",
            "/runs/batch",
        ] {
            let r = post(&gw, path, body.clone()).await;
            assert!(
                r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY,
                "{path} ({} bytes): {} {}",
                body.len(),
                r.status,
                r.text()
            );
            json_error(&r, r.status.as_u16());
        }
    }
    up.assert_nothing_forwarded();
    // At the limit (64 levels, the top-level object counting 1) it is forwarded.
    let body = format!(
        "{{\"metadata\":{{}},\"ttl\":{}{}}}",
        "[".repeat(63),
        "]".repeat(63)
    );
    post(&gw, "/threads", body).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_is_413_as_soon_as_it_passes_the_limit() {
    let (up, gw) = small().await;
    let mut c = RawConn::connect(&gw).await;
    c.write(
        format!(
            "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    // Twice the limit, then the client keeps the body open: the answer must not wait for
    // the end of a body that never comes (or for the 60 s body timeout).
    let started = Instant::now();
    let chunk = format!("100\r\n{}\r\n", "a".repeat(256));
    for _ in 0..(2 * SMALL / 256) {
        c.write(chunk.as_bytes()).await;
    }
    let r = c.read_response().await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_declared_length_is_413_at_once_on_every_route_kind() {
    let (up, gw) = small().await;
    let tid = up.add_thread("bob");
    for (method, path, auth) in [
        ("POST", "/threads".to_string(), true),
        ("GET", format!("/threads/{tid}"), true),
        ("GET", "/ok".to_string(), false),
        ("GET", "/ui/x.js".to_string(), false),
        ("PUT", "/store/items".to_string(), true),
    ] {
        let public = !auth;
        let auth = if auth {
            format!("Authorization: {ALICE}\r\n")
        } else {
            String::new()
        };
        let started = Instant::now();
        let r = raw_exchange(
            &gw,
            format!("{method} {path} HTTP/1.1\r\nHost: gw.test\r\n{auth}Content-Length: 10000000000000\r\n\r\n{{")
                .as_bytes(),
        )
        .await;
        let d = raw_json_error(&r, 413);
        if public {
            assert_eq!(d, "Public routes take no request body");
        } else {
            assert!(d.contains("larger than"), "{d}");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Refused before any lookup (bob's thread was never fetched) or forward.
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_h2_body_is_413() {
    let (up, gw) = small().await;
    let mut c = H2Conn::connect(&gw).await;
    let body = format!("{{\"metadata\":{{}},\"pad\":\"{}\"}}", "a".repeat(SMALL));
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send_h2(&mut c)
        .await;
    assert!(json_error(&r, 413).contains("larger than"));
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_end_early_are_refused_and_not_forwarded() {
    let (up, gw) = owner_setup().await;
    let head = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\n"
    );
    for rest in [
        // Chunked, the peer stops sending mid-chunk.
        "Transfer-Encoding: chunked\r\n\r\n10\r\n{\"metadata\":".to_string(),
        // Chunked, no terminating chunk.
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n".to_string(),
        // Chunked, garbage where a chunk size belongs.
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_string(),
        // Declared length longer than what is sent.
        "Content-Length: 50\r\n\r\n{\"metadata\":{}}".to_string(),
    ] {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        wr.write_all(format!("{head}{rest}").as_bytes())
            .await
            .unwrap();
        // Half-close: the body ends early, the response can still be read.
        wr.shutdown().await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(CLIENT_TIMEOUT, rd.read_to_end(&mut out))
            .await
            .expect("no answer to a truncated body");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{rest:?}: {text:?}"
        );
        if text.starts_with("HTTP/1.1 400") {
            assert!(
                text.contains("application/json") || text.contains("content-length: 0"),
                "{text}"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_lies_change_nothing() {
    let (up, gw) = owner_setup().await;
    // The agent server reads JSON whatever the Content-Type says, so the gateway does too.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
        "application/octet-stream",
    ] {
        up.clear();
        req(Method::POST, "/threads")
            .auth(ALICE)
            .header("content-type", ct)
            .body(r#"{"metadata":{"owner":"bob"}}"#)
            .send(&gw)
            .await
            .assert_status(200);
        assert_eq!(
            up.one_forwarded().json()["metadata"]["owner"],
            "alice",
            "{ct}"
        );
    }
    up.clear();
    // A body that is not JSON is refused whatever it claims to be.
    for (ct, body) in [
        (
            "application/x-www-form-urlencoded",
            b"metadata=%7B%22owner%22%3A%22bob%22%7D".to_vec(),
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{}\r\n--x--\r\n"
                .to_vec(),
        ),
        (
            "application/json",
            vec![
                0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xab, 0xae, 5, 0, 0x43, 0xbf, 0xa6, 0xa3, 2, 0,
                0, 0,
            ],
        ),
    ] {
        let r = req(Method::POST, "/threads")
            .auth(ALICE)
            .header("content-type", ct)
            .header("content-encoding", "gzip")
            .body(body)
            .send(&gw)
            .await;
        assert_eq!(json_error(&r, 422), "Invalid JSON in request body", "{ct}");
    }
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_is_read_does_not_silently_drop_the_connection() {
    let (up, gw) = owner_setup().await;
    for head in [
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\r\n".to_string(),
        "POST /threads/../x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\n\r\n".to_string(),
        format!("POST /internal/truncate HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Length: 2\r\n\r\n"),
    ] {
        let mut c = RawConn::connect(&gw).await;
        // The head first: the refusal is decided from it.
        c.write(head.as_bytes()).await;
        let first = c.read_response().await;
        assert!(first.status >= 400, "{}", first.status);
        let announced_close = first
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // Then the body and a next request, as a keep-alive client would send them.
        c.write(b"{}GET /ok HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            .await;
        let rest = c.read_to_end().await;
        assert!(
            announced_close || rest.starts_with("HTTP/1.1 200"),
            "{head:?}: the connection was dropped without Connection: close; next: {rest:?}"
        );
    }
    let _ = up;
}

/// A request head with a declared body, sent without the body.
fn head_only(method: &str, path: &str, auth: &str, declared: usize) -> Vec<u8> {
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("Authorization: {auth}\r\n")
    };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: gw.test\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_refuse_a_body_before_reading_it() {
    let (up, gw) = owner_setup().await;
    // An anonymous client declares 30 MiB on /ok and sends nothing: the answer comes at once,
    // without the gateway waiting for (or holding) a byte of it.
    let mut c = RawConn::connect(&gw).await;
    c.write(&head_only("GET", "/ok", "", 30 << 20)).await;
    let r = c.read_response().await;
    assert_eq!(
        raw_json_error(&r, 413),
        "Public routes take no request body"
    );
    assert_eq!(r.header("connection"), Some("close"));
    // A small body, and a chunked one, are refused the same way; bodiless GETs still pass.
    let r = raw_exchange(&gw, &raw_request("GET", "/ok", "", b"{}")).await;
    raw_json_error(&r, 413);
    let chunked =
        b"GET /info HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    raw_json_error(&raw_exchange(&gw, chunked).await, 413);
    up.assert_nothing_forwarded();
    let r = raw_exchange(&gw, &raw_request("GET", "/ok", "", b"")).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.forwarded().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_bytes_held_at_once_are_bounded_and_given_back() {
    let up = MockUpstream::start().await;
    let gw = gateway_with(
        &up,
        ProxyConfig {
            max_body: SMALL,
            body_budget: 2 * SMALL,
            ..ProxyConfig::default()
        },
    )
    .await;
    // Two clients each declare a full body and send half of it: the budget is spent.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = RawConn::connect(&gw).await;
        c.write(&head_only("POST", "/threads", ALICE, SMALL)).await;
        c.write(&[b' '; SMALL / 2]).await;
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third is refused with 503 before its body is read (it never sends one).
    let mut c = RawConn::connect(&gw).await;
    c.write(&head_only("POST", "/threads", ALICE, 100)).await;
    let r = c.read_response().await;
    let detail = raw_json_error(&r, 503);
    assert!(detail.contains("request-body bytes"), "{detail}");
    assert_eq!(r.header("retry-after"), Some("1"));
    // A chunked body is reserved piece by piece and refused when a piece does not fit.
    let chunked = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    raw_json_error(&raw_exchange(&gw, chunked.as_bytes()).await, 503);
    up.assert_nothing_forwarded();
    // The first two finish their bodies: their bytes come back, and requests pass again.
    for mut c in held {
        let mut rest = vec![b' '; SMALL / 2 - 2];
        rest.extend_from_slice(b"{}");
        c.write(&rest).await;
        assert_eq!(c.read_response().await.status, 200);
    }
    raw_exchange(&gw, chunked.as_bytes()).await;
    let r = raw_exchange(
        &gw,
        &raw_request(
            "POST",
            "/threads",
            &format!("Authorization: {ALICE}\r\n"),
            b"{}",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}
