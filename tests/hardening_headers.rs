//! Hostile methods and headers: method overrides, request smuggling framings, folded and
//! invalid header lines, oversized heads, Host/:authority games and protocol upgrades. Extends
//! `proxy_forwarding.rs` (hop-by-hop stripping, one CL+TE smuggling case, websocket upgrade).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

/// Every request the upstream received was the authorized `POST /threads` with alice's
/// stamped body, and nothing else (no smuggled request, no lookup of a foreign resource).
#[track_caller]
fn assert_only_alice_creates(up: &MockUpstream) {
    for s in up.requests() {
        assert_eq!(
            (s.method.as_str(), s.path()),
            ("POST", "/threads"),
            "unexpected upstream request {} {}",
            s.method,
            s.uri
        );
        assert_eq!(s.json()["metadata"]["owner"], "alice");
        assert_eq!(s.header_all("x-graphguard-user-id"), vec!["alice"]);
        assert_eq!(
            s.header("content-length"),
            Some(s.body.len().to_string()),
            "upstream framing"
        );
        assert_eq!(s.header("transfer-encoding"), None);
    }
}

/// An anonymous request that is refused (401) and closes the connection.
const CLOSING: &str = "GET /threads/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";

const SMUGGLED: &str =
    "POST /internal/truncate HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Method overrides
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_headers_never_change_the_authorized_method() {
    let (up, gw) = owner_setup().await;
    let own = up.add_thread("alice");
    let bobs = up.add_thread("bob");
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        // A read of one's own thread stays a read.
        up.clear();
        req(Method::GET, format!("/threads/{own}"))
            .auth(ALICE)
            .header(h, "DELETE")
            .send(&gw)
            .await
            .assert_status(200);
        let seen = up.one_forwarded();
        assert_eq!(seen.method, Method::GET, "{h}");
        // A write to a foreign thread dressed as a read is still refused.
        up.clear();
        let r = req(Method::DELETE, format!("/threads/{bobs}"))
            .auth(ALICE)
            .header(h, "GET")
            .send(&gw)
            .await;
        assert_eq!(
            json_error(&r, 404),
            format!("Thread with ID {bobs} not found")
        );
        up.assert_nothing_forwarded();
    }
    // The `_method` query convention is just a query parameter.
    up.clear();
    let r = req(Method::POST, "/threads?_method=DELETE")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.json()["metadata"]["owner"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_override_header_is_stripped() {
    let (up, gw) = owner_setup().await;
    let own = up.add_thread("alice");
    req(Method::GET, format!("/threads/{own}"))
        .auth(ALICE)
        .header("x-http-method-override", "DELETE")
        .header("x-http-method", "DELETE")
        .header("x-method-override", "DELETE")
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert_eq!(seen.header(h), None, "{h} reached the upstream");
    }
}

// ---------------------------------------------------------------------------------------------
// Framing: duplicate Content-Length, Content-Length with Transfer-Encoding
// ---------------------------------------------------------------------------------------------

fn head(extra: &str) -> String {
    format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_refused() {
    let (up, gw) = owner_setup().await;
    let body = format!("{{}}{SMUGGLED}");
    for extra in [
        format!("Content-Length: 2\r\nContent-Length: {}\r\n", body.len()),
        format!("Content-Length: {}\r\nContent-Length: 2\r\n", body.len()),
        format!("Content-Length: 2, {}\r\n", body.len()),
        "Content-Length: +2\r\n".to_string(),
        "Content-Length: -1\r\n".to_string(),
        "Content-Length: 0x2\r\n".to_string(),
        "Content-Length: 2 2\r\n".to_string(),
        "Content-Length: 99999999999999999999999\r\n".to_string(),
    ] {
        let r = raw_exchange(&gw, format!("{}{body}", head(&extra)).as_bytes()).await;
        assert_parser_refusal(&r, 400, &extra);
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_duplicate_content_lengths_frame_one_request() {
    let (up, gw) = owner_setup().await;
    let request = format!(
        "{}{{}}{SMUGGLED}",
        head("Content-Length: 2\r\nContent-Length: 2\r\n")
    );
    let mut c = RawConn::connect(&gw).await;
    c.write(request.as_bytes()).await;
    let first = c.read_response().await;
    assert!(
        first.status == 200 || first.status == 400,
        "{} {}",
        first.status,
        first.body
    );
    // Whatever followed is parsed as the next request on the connection: the gateway's own
    // refusal, never a forward.
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_only_alice_creates(&up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_variants_never_smuggle_a_request() {
    let (up, gw) = owner_setup().await;
    // The body is `{}` as chunked, and the smuggled request follows the terminator; read by
    // Content-Length instead, the smuggled bytes are the start of the next request.
    let chunked = format!("2\r\n{{}}\r\n0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", 2);
    for te in [
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: Chunked\r\n",
        "Transfer-Encoding: CHUNKED\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding:  chunked \r\n",
        "Transfer-Encoding:\tchunked\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: \r\n",
        "Transfer-Encoding : chunked\r\n",
        "Transfer_Encoding: chunked\r\n",
        "Transfer-Encoding\r\n : chunked\r\n",
    ] {
        for with_cl in [false, true] {
            let extra = format!("{te}{}", if with_cl { cl.as_str() } else { "" });
            let mut c = RawConn::connect(&gw).await;
            // A last, refused request closes the connection whatever the framing was.
            c.write(format!("{}{chunked}{CLOSING}", head(&extra)).as_bytes())
                .await;
            let all = c.read_to_end().await;
            assert!(
                all.is_empty() || all.starts_with("HTTP/1.1 "),
                "{te:?}: {all:?}"
            );
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_only_alice_creates(&up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_size_tricks_are_refused() {
    let (up, gw) = owner_setup().await;
    for body in [
        // Oversized chunk-size (integer overflow), hex prefix, signs, spaces.
        "ffffffffffffffffff1\r\n{}\r\n0\r\n\r\n".to_string(),
        "0x2\r\n{}\r\n0\r\n\r\n".to_string(),
        "-2\r\n{}\r\n0\r\n\r\n".to_string(),
        "2 2\r\n{}\r\n0\r\n\r\n".to_string(),
        // A chunk longer than its size, the rest being a smuggled request.
        format!("2\r\n{{}}{SMUGGLED}\r\n0\r\n\r\n"),
        // Bare LF line endings.
        "2\n{}\n0\n\n".to_string(),
    ] {
        let (status, all) = raw_answer(
            &gw,
            format!("{}{body}", head("Transfer-Encoding: chunked\r\n")).as_bytes(),
        )
        .await;
        assert!(
            matches!(status, Some(400 | 408)) || status.is_none(),
            "{body:?}: {all:?}"
        );
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

// ---------------------------------------------------------------------------------------------
// Header syntax
// ---------------------------------------------------------------------------------------------

/// The refusal of a request hyper's parser rejects: a JSON error with its status, a request
/// id, and the connection closed after it.
#[track_caller]
fn assert_parser_refusal(r: &RawResp, status: u16, what: &str) {
    let detail = raw_json_error(r, status);
    let expected = match status {
        431 => "Request header fields too large",
        _ => "Malformed HTTP request",
    };
    assert!(detail.starts_with(expected), "{what}: {detail:?}");
    assert!(r.header("x-request-id").is_some(), "{what}: {r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obsolete_line_folding_is_refused() {
    let (up, gw) = owner_setup().await;
    for extra in [
        "X-Foo: a\r\n b\r\n",
        "X-Foo: a\r\n\tb\r\n",
        "X-GraphGuard-User-Id: alice\r\n admin\r\n",
        "Transfer-Encoding: identity\r\n chunked\r\n",
    ] {
        let r = raw_exchange(
            &gw,
            format!("{}{{}}", head(&format!("{extra}Content-Length: 2\r\n"))).as_bytes(),
        )
        .await;
        assert_parser_refusal(&r, 400, extra);
    }
    // A folded Authorization is not a credential.
    let r = raw_exchange(
        &gw,
        b"POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer\r\n alice-demo-key\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert_parser_refusal(&r, 400, "folded Authorization");
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_header_names_and_values_are_refused() {
    let (up, gw) = owner_setup().await;
    let lines: &[&[u8]] = &[
        b"X Foo: bar\r\n",
        b"X\x00Foo: bar\r\n",
        b"X(Foo): bar\r\n",
        b"X-Foo\x7f: bar\r\n",
        b": empty-name\r\n",
        b":authority: evil.example\r\n",
        b"X-Foo bar\r\n",
        b"X-Foo: a\x00b\r\n",
        b"X-Foo: a\rb\r\n",
        b"X-Foo: a\x7fb\r\n",
        b"X-Foo: a\x01b\r\n",
        b"X-GraphGuard-User-Id: alice\rX-Injected: 1\r\n",
        b"Authorization: Bearer alice-demo-key\x00\r\n",
    ];
    for line in lines {
        let mut request = head("").into_bytes();
        // Insert the line before the blank line ending the head.
        request.truncate(request.len() - 2);
        request.extend_from_slice(line);
        request.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
        let r = raw_exchange(&gw, &request).await;
        assert_parser_refusal(&r, 400, &String::from_utf8_lossy(line));
    }
    // A malformed request line too.
    for line in [
        &b"POST /threads HTTP/1.1 extra\r\n"[..],
        b"POST  /threads\r\n",
        b"POST /thr eads HTTP/1.1\r\n",
        b"POST /threads HTTP/9.9\r\n",
        b"PO\x00ST /threads HTTP/1.1\r\n",
    ] {
        let mut request = line.to_vec();
        request.extend_from_slice(b"Host: gw.test\r\nContent-Length: 2\r\n\r\n{}");
        let r = raw_exchange(&gw, &request).await;
        assert_parser_refusal(&r, 400, &String::from_utf8_lossy(line));
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_after_good_ones_is_refused_as_json_and_counted() {
    let (up, gw) = owner_setup().await;
    let good = format!(
        "GET /threads/{} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\n\r\n",
        uuid::Uuid::new_v4()
    );
    let bad = "GET /ok HTTP/1.1\r\nHost: gw.test\r\nX-Foo: a\r\n folded\r\n\r\n";
    // One after the other on a keep-alive connection, then pipelined in one write: the
    // gateway's own responses pass unchanged (a 404 error of its own among them), and the
    // malformed request is answered with a JSON refusal.
    let mut c = RawConn::connect(&gw).await;
    c.write(good.as_bytes()).await;
    let first = c.read_response().await;
    assert_eq!(first.status, 404, "{first:?}");
    assert!(first.header("x-request-id").is_some());
    c.write(bad.as_bytes()).await;
    let second = c.read_response().await;
    assert_parser_refusal(&second, 400, "after a response");
    assert_eq!(
        c.read_to_end().await,
        "",
        "the connection closes after the refusal"
    );

    let mut c = RawConn::connect(&gw).await;
    c.write(format!("{good}{good}{bad}").as_bytes()).await;
    for _ in 0..2 {
        let r = c.read_response().await;
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let third = c.read_response().await;
    assert_parser_refusal(&third, 400, "pipelined");
    assert!(up.forwarded().is_empty(), "{:?}", summary(&up.requests()));
    // The refusal is counted once its answer is written, which the client may read first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = gw.gw.metrics.encode();
        let refused = text
            .lines()
            .find(|l| {
                l.starts_with("graphguard_requests_total{")
                    && l.contains("decision=\"deny\"")
                    && l.contains("status=\"400\"")
                    && l.contains("resource=\"none\"")
            })
            .unwrap_or_else(|| panic!("no refusal counted:\n{text}"))
            .to_string();
        if refused.ends_with(" 2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{refused}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_text_header_values_pass_without_reaching_identity_headers() {
    let (up, gw) = owner_setup().await;
    let mut request = head("").into_bytes();
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"X-Note: caf\xe9\r\nX-GraphGuard-User-Display-Name: \xc3\x89ve\r\n");
    request.extend_from_slice(b"Content-Length: 2\r\nConnection: close\r\n\r\n{}");
    let (status, all) = raw_answer(&gw, &request).await;
    assert!(matches!(status, Some(200 | 400)), "{all:?}");
    if status == Some(200) {
        let seen = up.one_forwarded();
        assert_eq!(
            seen.header_all("x-graphguard-user-display-name"),
            vec!["Alice"]
        );
    }
    assert_only_alice_creates(&up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_431() {
    let (up, gw) = owner_setup().await;
    // One huge header, and many small ones.
    let huge = format!("X-Pad: {}\r\n", "a".repeat(80 * 1024));
    let many: String = (0..200).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect();
    let many_big: String = (0..40)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(2000)))
        .collect();
    for extra in [&huge, &many, &many_big] {
        for auth in [String::new(), format!("Authorization: {ALICE}\r\n")] {
            let request = format!(
                "POST /threads HTTP/1.1\r\nHost: gw.test\r\n{auth}{extra}Content-Length: 2\r\n\r\n{{}}"
            );
            let r = raw_exchange(&gw, request.as_bytes()).await;
            assert_parser_refusal(&r, 431, &format!("{} header bytes", extra.len()));
        }
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_h2_header_lists_are_refused() {
    let (up, gw) = owner_setup().await;
    let mut c = H2Conn::connect(&gw).await;
    let resp = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-pad", &"a".repeat(100 * 1024))
        .json(&json!({}))
        .send_h2(&mut c)
        .await;
    assert_eq!(resp.status.as_u16(), 431, "{}", resp.text());
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

// ---------------------------------------------------------------------------------------------
// Host and :authority
// ---------------------------------------------------------------------------------------------

async fn h2_request(gw: &TestGateway, r: Request<Full<Bytes>>) -> Resp {
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(CLIENT_TIMEOUT, sender.send_request(r))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_and_authority_disagreement_never_reaches_upstream_as_host() {
    let (up, gw) = owner_setup().await;
    let r = Request::post(format!("http://{}/threads", gw.addr))
        .header("host", "evil.example")
        .header("authorization", ALICE)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = h2_request(&gw, r).await;
    if resp.status.as_u16() == 400 {
        json_error(&resp, 400);
        assert!(up.requests().is_empty());
        return;
    }
    resp.assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.header_all("host"), vec![up.addr.to_string()]);
    let xfh = seen.header_all("x-forwarded-host");
    assert_eq!(xfh.len(), 1, "{xfh:?}");
    assert_only_alice_creates(&up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_host_is_the_target_authority_when_host_disagrees() {
    let (up, gw) = owner_setup().await;
    let r = raw_exchange(
        &gw,
        format!(
            "POST http://api.example/threads HTTP/1.1\r\nHost: evil.example\r\nAuthorization: {ALICE}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        up.one_forwarded().header_all("x-forwarded-host"),
        vec!["api.example"]
    );
    up.clear();
    let r = Request::post(format!("http://{}/threads", gw.addr))
        .header("host", "evil.example")
        .header("authorization", ALICE)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = h2_request(&gw, r).await;
    if resp.status.as_u16() != 400 {
        assert_eq!(
            up.one_forwarded().header_all("x-forwarded-host"),
            vec![gw.addr.to_string()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_duplicate_host_never_reaches_upstream() {
    let (up, gw) = owner_setup().await;
    for hosts in [
        "",
        "Host: a.example\r\nHost: b.example\r\n",
        "Host: \r\n",
        "Host: a b\r\n",
    ] {
        up.clear();
        let request = format!(
            "POST /threads HTTP/1.1\r\n{hosts}Authorization: {ALICE}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let (status, all) = raw_answer(&gw, request.as_bytes()).await;
        assert!(matches!(status, Some(200 | 400)), "{hosts:?}: {all:?}");
        for s in up.forwarded() {
            assert_eq!(s.header_all("host"), vec![up.addr.to_string()], "{hosts:?}");
            assert!(s.header_all("x-forwarded-host").len() <= 1, "{hosts:?}");
        }
        assert_only_alice_creates(&up);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_or_with_two_hosts_is_400() {
    let (up, gw) = owner_setup().await;
    for hosts in ["", "Host: a.example\r\nHost: b.example\r\n"] {
        let request = format!(
            "POST /threads HTTP/1.1\r\n{hosts}Authorization: {ALICE}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let r = raw_exchange(&gw, request.as_bytes()).await;
        raw_json_error(&r, 400);
    }
    assert!(up.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Upgrades and CONNECT
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_refused_on_authorized_routes() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    for (target, upgrade) in [
        ("/threads".to_string(), "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        (format!("/threads/{tid}/runs/stream"), "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        ("/threads/search".to_string(), "Connection: keep-alive\r\nUpgrade: websocket\r\n"),
        ("/threads".to_string(), "Upgrade: TLS/1.2\r\nConnection: Upgrade\r\n"),
    ] {
        let r = raw_exchange(
            &gw,
            &raw_request(
                "POST",
                &target,
                &format!("Authorization: {ALICE}\r\nContent-Type: application/json\r\n{upgrade}"),
                b"{}",
            ),
        )
        .await;
        assert_eq!(
            raw_json_error(&r, 400),
            "Protocol upgrades are not supported through graphguard",
            "{target}"
        );
    }
    // Unauthenticated and blocked routes refuse before looking at the upgrade.
    let r = raw_exchange(
        &gw,
        &raw_request(
            "GET",
            &format!("/threads/{tid}/stream"),
            "Connection: Upgrade\r\nUpgrade: websocket\r\n",
            b"",
        ),
    )
    .await;
    raw_json_error(&r, 401);
    let r = raw_exchange(
        &gw,
        &raw_request(
            "POST",
            "/internal/truncate",
            &format!("Authorization: {ALICE}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"),
            b"",
        ),
    )
    .await;
    raw_json_error(&r, 403);
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_on_a_public_route_is_forwarded_as_a_plain_request() {
    let (up, gw) = owner_setup().await;
    let r = raw_exchange(
        &gw,
        &raw_request(
            "GET",
            "/ok",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            b"",
        ),
    )
    .await;
    assert!(
        r.status == 200 || r.status == 400,
        "{} {}",
        r.status,
        r.body
    );
    assert_ne!(r.status, 101);
    for s in up.forwarded() {
        assert_eq!(s.header("upgrade"), None);
        assert_eq!(s.header("connection"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_unknown_methods_on_routes_are_405_json() {
    let (up, gw) = owner_setup().await;
    for method in ["CONNECT", "TRACE", "PROPFIND", "FOO", "get", "Post"] {
        let r = raw_exchange(
            &gw,
            &raw_request(
                method,
                "/threads",
                &format!("Authorization: {ALICE}\r\n"),
                b"",
            ),
        )
        .await;
        assert_ne!(r.status / 100, 2, "{method}: {}", r.body);
        if r.header("content-type").is_some() {
            let d = raw_json_error(&r, r.status);
            assert!(
                r.status == 405 || r.status == 400,
                "{method}: {} {d}",
                r.status
            );
        }
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_one_canonical_content_length() {
    let (up, gw) = owner_setup().await;
    let own = up.add_thread("alice");
    // A body forwarded unchanged keeps its length, in canonical spelling whatever the client's.
    let body = r#"{"values":{"a":1}}"#;
    let n = body.len();
    for cl in [
        format!("Content-Length: {n}\r\n"),
        format!("Content-Length: 00{n}\r\n"),
        format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
    ] {
        up.clear();
        let mut c = RawConn::connect(&gw).await;
        c.write(
            format!(
                "POST /threads/{own}/state HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\n{cl}\r\n{body}"
            )
            .as_bytes(),
        )
        .await;
        let r = c.read_response().await;
        let seen = up.one_forwarded();
        assert_eq!(seen.body, body.as_bytes(), "{cl:?}: {}", r.status);
        assert_eq!(
            seen.header_all("content-length"),
            vec![n.to_string()],
            "{cl:?}"
        );
    }
    // A read that declares an empty body forwards no length at all.
    up.clear();
    let mut c = RawConn::connect(&gw).await;
    c.write(
        format!("GET /threads/{own} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(c.read_response().await.status, 200);
    let seen = up.one_forwarded();
    assert_eq!(seen.header("content-length"), None);
}
