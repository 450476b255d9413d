//! Hostile request targets: every spelling of a path that another component could route
//! differently is refused with a JSON error before authentication or any lookup, and what is
//! forwarded is byte for byte the path that was authorized. Extends `proxy_authz.rs`
//! (`ambiguous_paths_are_400_and_not_forwarded`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use serde_json::json;

/// Targets that must be refused as ambiguous (400 `Ambiguous request path: ...`).
const AMBIGUOUS: &[&str] = &[
    // Dot segments in every position.
    "/threads/.",
    "/threads/..",
    "/./threads",
    "/../threads",
    "/threads/./",
    "/threads/../",
    "/ui/../internal/truncate",
    "/ui/x/../../internal/truncate",
    // Percent-encoded dots, slashes and backslashes, any case, double-encoded.
    "/threads/%2E%2E/assistants",
    "/threads/%2e./assistants",
    "/threads/.%2e/assistants",
    "/threads/%2e",
    "/threads%2F..%2Finternal",
    "/threads%2fsearch",
    "/threads/%252e%252e/internal",
    "/threads/%25%32%65",
    "/threads/%5c..%5cinternal",
    "/%74hreads",
    "/threads/%u002e%u002e",
    "/ui/%2e%2e/internal/truncate",
    // Overlong UTF-8 and other non-ASCII, encoded.
    "/threads/%c0%ae%c0%ae/internal",
    "/threads/%e0%80%ae",
    "/threads/%c0%af",
    "/thr%C3%A9ads",
    // NUL and control characters, encoded.
    "/threads/%00",
    "/threads%00/search",
    "/threads/%0d%0aX-Injected:%201",
    // Empty segments.
    "//threads",
    "/threads//search",
    "///internal/truncate",
    "/ui//x",
    // `;` parameters (Tomcat/Spring-style path parameters).
    "/threads;/search",
    "/threads/..;/internal",
    "/internal;x=1/truncate",
    "/threads/search;jsessionid=1",
    // Backslashes.
    "/threads\\..\\internal",
    "/ui\\..\\internal",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_dotted_and_parameterised_paths_are_400_json_for_everyone() {
    let (up, gw) = owner_setup().await;
    for target in AMBIGUOUS {
        for method in ["GET", "POST", "DELETE"] {
            for auth in [String::new(), format!("Authorization: {ALICE}\r\n")] {
                let r = raw_exchange(
                    &gw,
                    &raw_request(
                        method,
                        target,
                        &format!("{auth}Content-Type: application/json\r\n"),
                        b"{}",
                    ),
                )
                .await;
                let detail = raw_json_error(&r, 400);
                assert!(
                    detail.starts_with("Ambiguous request path"),
                    "{method} {target}: {detail}"
                );
            }
        }
    }
    // Not forwarded, and not even looked up: the path is refused before anything else.
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_control_and_non_ascii_bytes_in_the_target_never_reach_upstream() {
    let (up, gw) = owner_setup().await;
    let targets: &[&[u8]] = &[
        b"/threads/\x00",
        b"/threads\x01/search",
        b"/threads/\x7f",
        b"/threads/\tx",
        b"/threads/\xc0\xae\xc0\xae/internal",
        b"/thr\xc3\xa9ads",
        b"/threads/\xe9",
        b"/threads/\xed\xa0\x80",
        b"/ui/\xff",
        b"/threads/\"x\"",
        b"/threads/<x>",
        b"/threads/{x}",
        b"/threads/`x`",
        b"/threads/|x",
        b"/threads/^x",
        // Not origin-form at all.
        b"\\threads",
        b"threads",
    ];
    for target in targets {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = raw_exchange(&gw, &request).await;
        // hyper's parser refuses most of these before graphguard sees them, and the
        // connection guard puts a JSON refusal in place of its bare one; whatever reaches
        // graphguard is refused as a JSON 400 by the path check.
        let detail = raw_json_error(&r, 400);
        assert!(!detail.is_empty(), "{:?}", String::from_utf8_lossy(target));
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slashes_and_case_variants_are_not_routes() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let own = format!("/threads/{tid}/");
    let variants = [
        ("POST", "/threads/"),
        ("POST", "/threads/search/"),
        ("GET", own.as_str()),
        ("POST", "/Threads"),
        ("POST", "/THREADS/SEARCH"),
        ("POST", "/Internal/truncate"),
        ("POST", "/INTERNAL/truncate"),
        ("GET", "/Deploy"),
        ("GET", "/deploy/"),
        ("GET", "/internal/"),
        ("GET", "/ok/"),
        ("GET", "/OK"),
        ("GET", "/Docs"),
        ("PUT", "/Store/Items"),
    ];
    for (method, target) in variants {
        // Anonymous: nothing public matches, so 401 (the path is not disclosed).
        let r = raw_exchange(&gw, &raw_request(method, target, "", b"")).await;
        raw_json_error(&r, 401);
        // Authenticated: 404 JSON, as the route table does not know it.
        let r = raw_exchange(
            &gw,
            &raw_request(method, target, &format!("Authorization: {ALICE}\r\n"), b""),
        )
        .await;
        assert_eq!(raw_json_error(&r, 404), "Not Found", "{method} {target}");
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_like_segments_that_are_not_dot_segments_are_plain_ids() {
    // `...` and `.x` are ordinary segments (RFC 3986): they reach the id validation.
    let (up, gw) = owner_setup().await;
    for target in ["/threads/...", "/threads/.x", "/threads/x.", "/threads/~"] {
        let r = raw_exchange(
            &gw,
            &raw_request("GET", target, &format!("Authorization: {ALICE}\r\n"), b""),
        )
        .await;
        assert_eq!(
            raw_json_error(&r, 422),
            "Invalid thread ID: must be a UUID",
            "{target}"
        );
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_are_checked_like_origin_form() {
    let (up, gw) = owner_setup().await;
    let bobs = up.add_thread("bob");
    for target in [
        "http://gw.test/threads/../internal/truncate",
        "http://gw.test/threads/%2e%2e/internal",
        "http://gw.test//threads",
        "http://gw.test/threads;x/search",
        "http://evil.example/ui/../internal/truncate",
    ] {
        for auth in [String::new(), format!("Authorization: {ALICE}\r\n")] {
            let r = raw_exchange(&gw, &raw_request("POST", target, &auth, b"{}")).await;
            let d = raw_json_error(&r, 400);
            assert!(d.starts_with("Ambiguous request path"), "{target}: {d}");
        }
    }
    for target in [
        "http://gw.test/internal/truncate",
        "https://gw.test/internal/truncate",
    ] {
        let r = raw_exchange(
            &gw,
            &raw_request("POST", target, &format!("Authorization: {ALICE}\r\n"), b""),
        )
        .await;
        raw_json_error(&r, 403);
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
    // The authority of an absolute-form target chooses nothing: bob's thread stays hidden.
    let r = raw_exchange(
        &gw,
        &raw_request(
            "GET",
            &format!("http://127.0.0.1:1/threads/{bobs}"),
            &format!("Authorization: {ALICE}\r\n"),
            b"",
        ),
    )
    .await;
    assert_eq!(
        raw_json_error(&r, 404),
        format!("Thread with ID {bobs} not found")
    );
    up.assert_nothing_forwarded();
    // And an allowed one is forwarded to the upstream, path only, with the upstream's Host.
    let r = raw_exchange(
        &gw,
        &raw_request(
            "POST",
            "http://evil.example:8443/threads?x=1",
            &format!("Authorization: {ALICE}\r\nContent-Type: application/json\r\n"),
            b"{}",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.one_forwarded();
    assert_eq!(seen.uri, "/threads?x=1");
    assert_eq!(seen.header_all("host"), vec![up.addr.to_string()]);
    assert_eq!(seen.json()["metadata"], json!({"owner": "alice"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_and_asterisk_form_targets_are_refused_and_never_tunnel() {
    let (up, gw) = owner_setup().await;
    let upstream = up.addr.to_string();
    for (method, target) in [
        ("CONNECT", upstream.as_str()),
        ("CONNECT", "127.0.0.1:22"),
        ("CONNECT", "gw.test:443"),
        ("OPTIONS", "*"),
        ("GET", "*"),
        ("GET", upstream.as_str()),
        ("POST", "gw.test:80"),
    ] {
        for auth in [String::new(), format!("Authorization: {ALICE}\r\n")] {
            let mut c = RawConn::connect(&gw).await;
            c.write(
                format!("{method} {target} HTTP/1.1\r\nHost: {target}\r\n{auth}Content-Length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            let r = c.read_response().await;
            assert!(
                r.status >= 400,
                "{method} {target}: {} {}",
                r.status,
                r.body
            );
            // If the connection is still open, bytes written now must not be tunnelled.
            c.write(b"GET /internal/truncate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let rest = c.read_to_end().await;
            assert!(
                rest.is_empty() || rest.starts_with("HTTP/1.1 4"),
                "{method} {target}: after the refusal: {rest:?}"
            );
            if r.header("content-type").is_some() {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert!(v["detail"].is_string(), "{v}");
            }
        }
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_paths_are_414_json_or_refused_by_the_parser() {
    let (up, gw) = owner_setup().await;
    // At the limit: accepted and forwarded byte for byte.
    let at_limit = format!("/ui/{}", "a".repeat(2048 - 4));
    assert_eq!(at_limit.len(), 2048);
    let r = raw_exchange(&gw, &raw_request("GET", &at_limit, "", b"")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.one_forwarded().uri, at_limit);
    up.clear();
    // One byte over, and far over: 414 JSON, before authentication.
    for n in [2049, 8 * 1024, 40 * 1024] {
        let long = format!("/threads/{}", "a".repeat(n - 9));
        assert_eq!(long.len(), n);
        for auth in [String::new(), format!("Authorization: {ALICE}\r\n")] {
            let r = raw_exchange(&gw, &raw_request("GET", &long, &auth, b"")).await;
            assert_eq!(raw_json_error(&r, 414), "Request path too long");
        }
    }
    // Beyond the request-head buffer the HTTP parser refuses it: 431, as JSON.
    let huge = format!("/threads/{}", "a".repeat(100 * 1024));
    let r = raw_exchange(&gw, &raw_request("GET", &huge, "", b"")).await;
    let detail = raw_json_error(&r, 431);
    assert!(
        detail.starts_with("Request header fields too large"),
        "{detail}"
    );
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_target_is_byte_for_byte_the_authorized_one() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let upper = tid.to_uppercase();
    let simple = tid.replace('-', "");
    let run = new_id();
    // Another spelling of an id names the same thread to the server's rows but another one to
    // its checkpointer: only the canonical spelling is forwarded.
    for target in [
        format!("/threads/{upper}"),
        format!("/threads/{simple}/state"),
        format!("/threads/urn:uuid:{tid}/runs/{run}"),
        format!("/threads/{tid}/runs/{}", run.to_uppercase()),
    ] {
        let r = raw_exchange(
            &gw,
            &raw_request("GET", &target, &format!("Authorization: {ALICE}\r\n"), b""),
        )
        .await;
        let d = raw_json_error(&r, 422);
        assert!(d.contains("canonical form"), "{target}: {d}");
    }
    assert!(up.forwarded().is_empty());
    let targets = [
        (
            "GET",
            format!("/threads/{tid}/history?limit=3&before=%2e%2e%2Finternal"),
        ),
        (
            "GET",
            format!("/threads/{tid}/runs/{run}?x=/../../internal"),
        ),
        ("GET", "/ui/a!$&'()*+,=:@~-._b.js".to_string()),
        ("GET", "/ui/x/?q=%00%ff".to_string()),
        ("GET", "/ok?%2e%2e/internal/truncate".to_string()),
        ("GET", "/ok?".to_string()),
        ("POST", "/threads/search?a=1&a=2&%61=3".to_string()),
    ];
    for (method, target) in &targets {
        up.clear();
        let body: &[u8] = if *method == "POST" { b"{}" } else { b"" };
        let r = raw_exchange(
            &gw,
            &raw_request(
                method,
                target,
                &format!("Authorization: {ALICE}\r\nContent-Type: application/json\r\n"),
                body,
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{method} {target}: {}", r.body);
        let seen = up.one_forwarded();
        // `/ok?` has an empty query: the gateway forwards `/ok`.
        let want = target.strip_suffix('?').unwrap_or(target);
        assert_eq!(&seen.uri, want, "{method} {target}");
        assert_eq!(seen.method.as_str(), *method);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_paths_are_checked_like_http1() {
    let (up, gw) = owner_setup().await;
    let mut c = H2Conn::connect(&gw).await;
    for path in [
        "/threads/../internal/truncate",
        "/threads/%2e%2e/internal",
        "/threads//search",
        "/threads;x/search",
        "/ui/%2F..%2Finternal",
    ] {
        for who in [None, Some(ALICE)] {
            let mut r = req(Method::POST, path).json(&json!({}));
            if let Some(a) = who {
                r = r.auth(a);
            }
            let resp = r.send_h2(&mut c).await;
            let d = json_error(&resp, 400);
            assert!(d.starts_with("Ambiguous request path"), "{path}: {d}");
        }
    }
    let resp = req(Method::POST, "/threads/")
        .auth(ALICE)
        .json(&json!({}))
        .send_h2(&mut c)
        .await;
    assert_eq!(json_error(&resp, 404), "Not Found");
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}
