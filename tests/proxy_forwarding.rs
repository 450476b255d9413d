//! What the upstream receives: body rewriting (owner stamping, search injection), header
//! hygiene, body limits and HTTP/1.1 framing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use graphguard::gateway::ProxyConfig;
use http::Method;
use serde_json::json;

const SMALL_MAX_BODY: usize = 1024;

async fn small_body_setup() -> (MockUpstream, TestGateway) {
    let up = MockUpstream::start().await;
    let opts = GatewayOptions {
        proxy: ProxyConfig {
            max_body: SMALL_MAX_BODY,
            ..ProxyConfig::default()
        },
        ..GatewayOptions::default()
    };
    let gw = start_gateway(&up.url(), opts).await;
    (up, gw)
}

fn raw_post_threads(extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Owner stamping
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_create_stamps_owner_over_client_value() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!({"metadata": {"owner": "bob", "x": 1}}))
        .send(&gw)
        .await;
    r.assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.path(), "/threads");
    assert_eq!(seen.json()["metadata"], json!({"owner": "alice", "x": 1}));
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string()),
        "exact Content-Length"
    );
    assert_eq!(seen.header("transfer-encoding"), None);
    // The response is the upstream's, streamed back.
    assert_eq!(r.json()["body"]["metadata"]["owner"], "alice");
}

/// A large body is stamped by sending the untouched parts from the request's own buffer:
/// the upstream gets exactly the spliced bytes (whitespace, escapes and member order kept)
/// with an exact Content-Length, for a thread create and for a run's `params`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_reach_the_upstream_exactly_spliced() {
    let (up, gw) = owner_setup().await;
    let filler: String = (0..40_000)
        .map(|i| format!("{{\"n\": {i}, \"s\": \"caf\\u00e9 \\\"{i}\\\"\"}}"))
        .collect::<Vec<_>>()
        .join(" ,\n ");
    let body =
        format!("{{ \"metadata\" : {{\"owner\":\"bob\", \"x\": [1, 2]}},\n \"ttl\": [{filler}] }}");
    assert!(body.len() > 1_000_000);
    let parsed = graphguard::body::splice::ObjectBody::parse(body.as_bytes(), 64).unwrap();
    let expected = parsed.splice(&[("metadata", Some(&br#"{"owner":"alice", "x": [1, 2]}"#[..]))]);
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body.clone())
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
    assert_eq!(
        seen.json()["metadata"],
        json!({"owner": "alice", "x": [1, 2]})
    );
    // Everything but the owner's value is the client's bytes.
    assert!(
        seen.body == expected,
        "the upstream got other bytes than the splice"
    );

    up.clear();
    let run = format!(
        "{{\"assistant_id\": \"agent\", \"input\": {{\"items\": [{filler}]}}, \"metadata\": {{}}}}"
    );
    let r = req(Method::POST, "/runs")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(run.clone())
        .send(&gw)
        .await;
    r.assert_status(200);
    let seen = up
        .forwarded()
        .into_iter()
        .find(|s| s.path() == "/runs")
        .unwrap();
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
    let sent = seen.json();
    assert_eq!(sent["input"]["items"][39_999]["n"], 39_999);
    assert_eq!(sent["metadata"]["owner"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_create_without_metadata_gets_owner() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/threads")
        .auth(BOB)
        .json(&json!({"if_exists": "raise"}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.json(),
        json!({"if_exists": "raise", "metadata": {"owner": "bob"}})
    );
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_metadata_key_is_found_and_rewritten() {
    let (up, gw) = owner_setup().await;
    let body = r#"{"meta\u0064ata":{"owner":"bob","x":1},"if_exists":"raise"}"#;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    let keys = object_keys(&seen.body);
    let md: Vec<_> = keys.iter().filter(|(k, _)| k == "metadata").collect();
    assert_eq!(
        md.len(),
        1,
        "exactly one metadata key upstream: {}",
        String::from_utf8_lossy(&seen.body)
    );
    assert_eq!(md[0].1, json!({"owner": "alice", "x": 1}));
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_owner_key_inside_metadata_is_overwritten() {
    let (up, gw) = owner_setup().await;
    let body = r#"{"metadata":{"\u006fwner":"bob","x":1}}"#;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    let md = &object_keys(&seen.body)
        .into_iter()
        .find(|(k, _)| k == "metadata")
        .unwrap()
        .1;
    let owners: Vec<_> = object_keys(serde_json::to_vec(md).unwrap().as_slice())
        .into_iter()
        .filter(|(k, _)| k == "owner")
        .collect();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].1, "alice");
    // And no raw duplicate that a last-wins parser would read as bob.
    assert!(
        !String::from_utf8_lossy(&seen.body).contains("bob"),
        "{}",
        String::from_utf8_lossy(&seen.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_metadata_keys_are_400_and_not_forwarded() {
    let (up, gw) = owner_setup().await;
    for body in [
        r#"{"metadata":{"owner":"alice"},"metadata":{"owner":"bob"}}"#,
        r#"{"metadata":{},"meta\u0064ata":{"owner":"bob"}}"#,
    ] {
        let r = req(Method::POST, "/threads")
            .auth(ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send(&gw)
            .await;
        r.assert_status(400);
        assert!(r.detail().contains("Duplicate key"), "{}", r.text());
    }
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_owner_inside_metadata_never_reaches_upstream_as_bob() {
    let (up, gw) = owner_setup().await;
    let body = r#"{"metadata":{"owner":"bob","owner":"carol"}}"#;
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(&gw)
        .await;
    if r.status == 200 {
        let seen = up.one_forwarded();
        let text = String::from_utf8_lossy(&seen.body).into_owned();
        assert!(
            !text.contains("bob") && !text.contains("carol"),
            "spoofed owner forwarded: {text}"
        );
    } else {
        r.assert_status(400);
        up.assert_nothing_forwarded();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_body_is_422_and_not_forwarded() {
    let (up, gw) = owner_setup().await;
    for body in [r#"{"metadata":"#, "not json", r#"{"metadata":{}} trailing"#] {
        let r = req(Method::POST, "/threads")
            .auth(ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send(&gw)
            .await;
        r.assert_status(422);
        assert_eq!(r.detail(), "Invalid JSON in request body");
    }
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_that_is_not_an_object_is_422() {
    let (up, gw) = owner_setup().await;
    for md in [
        json!(5),
        json!("owner"),
        json!(["owner", "bob"]),
        json!(true),
    ] {
        let r = req(Method::POST, "/threads")
            .auth(ALICE)
            .json(&json!({"metadata": md}))
            .send(&gw)
            .await;
        r.assert_status(422);
        assert_eq!(r.detail(), "metadata must be an object");
    }
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .json(&json!([1, 2]))
        .send(&gw)
        .await;
    r.assert_status(422);
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body_on_thread_create_is_stamped() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(
        up.one_forwarded().json(),
        json!({"metadata": {"owner": "alice"}})
    );
}

// ---------------------------------------------------------------------------------------------
// Search injection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_search_overwrites_client_owner_filter() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"metadata": {"owner": "bob", "topic": "x"}, "limit": 5, "offset": 0}))
        .send(&gw)
        .await;
    r.assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.path(), "/threads/search");
    let b = seen.json();
    assert_eq!(b["metadata"], json!({"owner": "alice", "topic": "x"}));
    assert_eq!(b["limit"], 5);
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_search_without_metadata_gets_owner_filter() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/threads/search")
        .auth(BOB)
        .json(&json!({"limit": 10}))
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(
        up.one_forwarded().json()["metadata"],
        json!({"owner": "bob"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_is_forwarded_unchanged() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    req(
        Method::GET,
        format!("/threads/{tid}/history?limit=3&before=x%20y"),
    )
    .auth(ALICE)
    .send(&gw)
    .await
    .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.uri,
        format!("/threads/{tid}/history?limit=3&before=x%20y")
    );
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_and_forwarding_headers_are_replaced() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-graphguard-user-id", "bob")
        .header("X-GraphGuard-User-Id", "carol")
        .header("x-graphguard-user-permissions", "[\"admin\"]")
        .header("x-graphguard-user-roles", "[\"admin\"]")
        .header("x-graphguard-user-display-name", "Bob")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-port", "443")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-http-method-override", "DELETE")
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.header_all("x-graphguard-user-id"), vec!["alice"]);
    assert_eq!(
        seen.header_all("x-graphguard-user-display-name"),
        vec!["Alice"]
    );
    let perms: serde_json::Value =
        serde_json::from_str(&seen.header("x-graphguard-user-permissions").unwrap()).unwrap();
    assert_eq!(perms, json!([]));
    let roles: serde_json::Value =
        serde_json::from_str(&seen.header("x-graphguard-user-roles").unwrap()).unwrap();
    assert_eq!(roles, json!([]));
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        vec![gw.addr.to_string()]
    );
    for h in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-http-method-override",
    ] {
        assert_eq!(seen.header(h), None, "{h} reached the upstream");
    }
    assert_eq!(seen.header("host"), Some(up.addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_header_is_a_json_list_of_the_users_permissions() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/threads")
        .auth(ADMIN)
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.header("x-graphguard-user-id").as_deref(),
        Some("admin")
    );
    let perms: serde_json::Value =
        serde_json::from_str(&seen.header("x-graphguard-user-permissions").unwrap()).unwrap();
    assert_eq!(perms, json!(["assistants:create"]));
    let roles: serde_json::Value =
        serde_json::from_str(&seen.header("x-graphguard-user-roles").unwrap()).unwrap();
    assert_eq!(roles, json!(["admin"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_public_request_carries_no_identity_upstream() {
    let (up, gw) = owner_setup().await;
    req(Method::GET, "/ok")
        .header("x-graphguard-user-id", "admin")
        .header("x-forwarded-for", "6.6.6.6")
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.path(), "/ok");
    assert_eq!(seen.header("x-graphguard-user-id"), None);
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_hop_by_hop_headers_are_not_forwarded() {
    let (up, gw) = owner_setup().await;
    let r = raw_exchange(
        &gw,
        &raw_post_threads(
            "Connection: x-foo\r\nX-Foo: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x-t\r\nProxy-Authorization: Basic YTpi\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n",
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.one_forwarded();
    for h in [
        "connection",
        "x-foo",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert_eq!(seen.header(h), None, "{h} reached the upstream");
    }
    assert_eq!(seen.header("x-kept").as_deref(), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hop_by_hop_headers_are_not_passed_back() {
    let (up, gw) = owner_setup().await;
    up.on(
        Method::GET,
        "/ok",
        Reply::Raw {
            status: http::StatusCode::OK,
            headers: vec![
                ("content-type", "application/json".into()),
                ("connection", "x-bar".into()),
                ("x-bar", "internal".into()),
                ("keep-alive", "timeout=5".into()),
                ("proxy-authenticate", "Basic realm=up".into()),
                ("x-kept", "yes".into()),
            ],
            body: bytes::Bytes::from_static(b"{\"ok\":true}"),
        },
    );
    let r = req(Method::GET, "/ok").send(&gw).await;
    r.assert_status(200);
    assert_eq!(r.json(), json!({"ok": true}));
    assert_eq!(r.header("x-kept").as_deref(), Some("yes"));
    for h in ["x-bar", "keep-alive", "proxy-authenticate"] {
        assert_eq!(r.header(h), None, "{h} passed back to the client");
    }
    assert!(!r.header("connection").unwrap_or_default().contains("x-bar"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_request_is_refused_and_not_forwarded() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let r = raw_exchange(
        &gw,
        format!(
            "GET /threads/{tid}/stream HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    up.assert_nothing_forwarded();
}

// ---------------------------------------------------------------------------------------------
// Body limits and framing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_declared_body_is_413_before_upstream() {
    let (up, gw) = small_body_setup().await;
    // Headers only: the gateway must answer from the declared length without the body.
    let head = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        SMALL_MAX_BODY + 1
    );
    let r = raw_exchange(&gw, head.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["detail"].as_str().unwrap().contains("larger than"), "{v}");
    assert!(
        up.requests().is_empty(),
        "upstream saw {:?}",
        summary(&up.requests())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunked_body_is_413_before_upstream() {
    let (up, gw) = small_body_setup().await;
    let body = format!(
        "{{\"metadata\":{{}},\"pad\":\"{}\"}}",
        "a".repeat(SMALL_MAX_BODY)
    );
    let mut chunked = String::new();
    for c in body.as_bytes().chunks(300) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            c.len(),
            std::str::from_utf8(c).unwrap()
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
    );
    let r = raw_exchange(&gw, request.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(
        up.requests().is_empty(),
        "upstream saw {:?}",
        summary(&up.requests())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_at_the_limit_is_forwarded() {
    let (up, gw) = small_body_setup().await;
    let prefix = "{\"metadata\":{},\"ttl\":\"";
    let pad = "a".repeat(SMALL_MAX_BODY - prefix.len() - 2);
    let body = format!("{prefix}{pad}\"}}");
    assert_eq!(body.len(), SMALL_MAX_BODY);
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(
        up.one_forwarded().json()["ttl"].as_str().unwrap().len(),
        pad.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_is_forwarded_with_content_length() {
    let (up, gw) = owner_setup().await;
    let mut chunked = String::new();
    for part in [r#"{"met"#, r#"adata":{"x""#, r#":2}}"#] {
        chunked.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
    }
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}0\r\n\r\n"
    );
    let r = raw_exchange(&gw, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.one_forwarded();
    assert_eq!(seen.json(), json!({"metadata": {"x": 2, "owner": "alice"}}));
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_continue_then_response() {
    let (up, gw) = small_body_setup().await;
    let body = r#"{"metadata":{"owner":"bob"}}"#;
    let head = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut c = RawConn::connect(&gw).await;
    c.write(head.as_bytes()).await;
    let interim = c.read_until(b"\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue"),
        "expected 100 Continue, got {interim:?}"
    );
    assert!(
        up.requests().is_empty(),
        "nothing is forwarded before the body arrives"
    );
    c.write(body.as_bytes()).await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.one_forwarded();
    assert_eq!(seen.json()["metadata"]["owner"], "alice");
    assert_eq!(seen.header("expect"), None, "Expect is not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_with_oversized_body_is_413_without_continue() {
    let (up, gw) = small_body_setup().await;
    let head = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        SMALL_MAX_BODY * 4
    );
    let r = raw_exchange(&gw, head.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_without_credentials_is_401_without_continue() {
    let (up, gw) = owner_setup().await;
    let r = raw_exchange(
        &gw,
        b"POST /threads HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggled_after_a_chunked_body_never_reaches_upstream() {
    let (up, gw) = owner_setup().await;
    // Content-Length and Transfer-Encoding together, then a second request hidden after the
    // chunked terminator: whatever the framing, /internal must never be forwarded.
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\nPOST /internal/truncate HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut c = RawConn::connect(&gw).await;
    c.write(request.as_bytes()).await;
    let all = c.read_to_end().await;
    assert!(all.starts_with("HTTP/1.1 "), "{all}");
    for s in up.requests() {
        assert!(
            !s.path().starts_with("/internal"),
            "smuggled request forwarded: {} {}",
            s.method,
            s.uri
        );
    }
    for s in up.forwarded() {
        assert_eq!(s.json(), json!({"metadata": {"owner": "alice"}}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_serves_several_requests() {
    let (up, gw) = owner_setup().await;
    let mut c = RawConn::connect(&gw).await;
    for i in 0..3 {
        let body = format!("{{\"metadata\":{{\"i\":{i}}}}}");
        c.write(&raw_post_threads("", &body)).await;
        let r = c.read_response().await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let f = up.forwarded();
    assert_eq!(f.len(), 3);
    for (i, s) in f.iter().enumerate() {
        assert_eq!(s.json()["metadata"], json!({"i": i, "owner": "alice"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_top_level_keys_are_400() {
    let (up, gw) = owner_setup().await;
    let (a, b) = (new_id(), new_id());
    let body = format!(r#"{{"thread_id":"{a}","thread_id":"{b}"}}"#);
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(&gw)
        .await;
    r.assert_status(400);
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_body_is_400() {
    let (up, gw) = owner_setup().await;
    let depth = 100;
    let body = format!(
        r#"{{"metadata":{{"x":{}1{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(body)
        .send(&gw)
        .await;
    r.assert_status(400);
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_propagated_both_ways() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-request-id", "client-req-1")
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-req-1"));
    assert_eq!(
        up.one_forwarded().header_all("x-request-id"),
        vec!["client-req-1"]
    );
    up.clear();
    // Without one (or with an unusable one) the gateway makes one up and sends it both ways.
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-request-id", "has spaces in it")
        .json(&json!({}))
        .send(&gw)
        .await;
    let id = r.header("x-request-id").unwrap();
    assert_ne!(id, "has spaces in it");
    assert_eq!(up.one_forwarded().header_all("x-request-id"), vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_forwards_carry_the_policy_version() {
    let (_up, gw) = owner_setup().await;
    let version = gw.gw.policy.load().version.clone();
    let ok = req(Method::GET, "/ok").send(&gw).await;
    let denied = req(Method::POST, "/threads").send(&gw).await;
    for r in [ok, denied] {
        assert_eq!(
            r.header("x-graphguard-policy-version"),
            Some(version.clone())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_body_is_408() {
    let up = MockUpstream::start().await;
    let opts = GatewayOptions {
        proxy: ProxyConfig {
            body_timeout: std::time::Duration::from_millis(300),
            ..ProxyConfig::default()
        },
        ..GatewayOptions::default()
    };
    let gw = start_gateway(&up.url(), opts).await;
    let head = format!("POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{{\"meta");
    let r = raw_exchange(&gw, head.as_bytes()).await;
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_headers_are_cut() {
    let up = MockUpstream::start().await;
    let opts = GatewayOptions {
        server: graphguard::gateway::server::ServerConfig {
            header_read_timeout: std::time::Duration::from_millis(300),
            drain: std::time::Duration::from_secs(1),
            ..graphguard::gateway::server::ServerConfig::default()
        },
        ..GatewayOptions::default()
    };
    let gw = start_gateway(&up.url(), opts).await;
    let mut c = RawConn::connect(&gw).await;
    c.write(b"GET /ok HTTP/1.1\r\nHost: gw.test\r\n").await;
    let started = std::time::Instant::now();
    let rest = c.read_to_end().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest:?}"
    );
    assert!(up.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Other rewrites
// ---------------------------------------------------------------------------------------------

async fn store_rewrite_setup() -> (MockUpstream, TestGateway) {
    let up = MockUpstream::start().await;
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir("store-rewrite")),
            ..GatewayOptions::default()
        },
    )
    .await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_put_namespace_is_prefixed_with_the_user() {
    let (up, gw) = store_rewrite_setup().await;
    req(Method::PUT, "/store/items")
        .auth(ALICE)
        .json(&json!({"namespace": ["docs"], "key": "k", "value": {"a": 1}}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.json(),
        json!({"namespace": ["alice", "docs"], "key": "k", "value": {"a": 1}})
    );
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_get_namespace_query_is_prefixed_with_the_user() {
    let (up, gw) = store_rewrite_setup().await;
    req(Method::GET, "/store/items?namespace=docs.2024&key=k")
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.path(), "/store/items");
    let q: Vec<(String, String)> = form_urlencoded::parse(seen.query().unwrap().as_bytes())
        .into_owned()
        .collect();
    assert!(
        q.contains(&("namespace".into(), "bob.docs.2024".into())),
        "{q:?}"
    );
    assert!(q.contains(&("key".into(), "k".into())), "{q:?}");
    // An own-prefixed namespace is left alone; a repeated namespace parameter is refused.
    up.clear();
    req(Method::GET, "/store/items?namespace=bob.x&key=k")
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(up.one_forwarded().query(), Some("namespace=bob.x&key=k"));
    req(Method::GET, "/store/items?namespace=a&namespace=b&key=k")
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stream_creation_is_stamped_and_streamed() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let path = format!("/threads/{tid}/runs/stream");
    let frames = up.sse(Method::POST, &path);
    let resp = req(Method::POST, path.clone())
        .auth(ALICE)
        .json(&json!({"assistant_id": "agent", "input": {}, "metadata": {"owner": "bob"}}))
        .send_streaming(&gw)
        .await;
    assert_eq!(resp.status(), http::StatusCode::OK);
    frames
        .send(bytes::Bytes::from_static(
            b"event: metadata\r\ndata: {}\r\n\r\n",
        ))
        .unwrap();
    drop(frames);
    let body = tokio::time::timeout(
        CLIENT_TIMEOUT,
        http_body_util::BodyExt::collect(resp.into_body()),
    )
    .await
    .unwrap()
    .unwrap()
    .to_bytes();
    assert_eq!(&body[..], b"event: metadata\r\ndata: {}\r\n\r\n");
    let seen = up.one_forwarded();
    assert_eq!(seen.json()["metadata"], json!({"owner": "alice"}));
    assert_eq!(seen.json()["assistant_id"], "agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_on_a_foreign_thread_is_404_before_streaming() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let r = req(Method::POST, format!("/threads/{tid}/runs/stream"))
        .auth(BOB)
        .json(&json!({"assistant_id": "agent"}))
        .send(&gw)
        .await;
    r.assert_status(404);
    assert_eq!(
        r.json(),
        json!({"detail": "Thread or assistant not found."})
    );
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_runs_and_batches_are_stamped() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/runs/wait")
        .auth(BOB)
        .json(&json!({"assistant_id": "agent", "metadata": {"owner": "alice"}}))
        .send(&gw)
        .await
        .assert_status(200);
    req(Method::POST, "/runs/batch")
        .auth(BOB)
        .json(&json!([{"assistant_id": "agent", "metadata": {"owner": "alice"}}, {"assistant_id": "agent"}]))
        .send(&gw)
        .await
        .assert_status(200);
    let f = up.forwarded();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].json()["metadata"], json!({"owner": "bob"}));
    let batch = f[1].json();
    assert_eq!(batch[0]["metadata"], json!({"owner": "bob"}));
    assert_eq!(batch[1]["metadata"], json!({"owner": "bob"}));
    assert_eq!(
        f[1].header("content-length"),
        Some(f[1].body.len().to_string())
    );
}

// ---------------------------------------------------------------------------------------------
// Serving threads (the binary's default runtime)
// ---------------------------------------------------------------------------------------------

/// With two serving threads of their own, concurrent clients on many connections get every
/// decision right (stamping, search injection, a foreign thread hidden), connections to the
/// upstream are reused per thread, and shutdown drains every thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_decide_and_forward_concurrent_requests() {
    let up = MockUpstream::start().await;
    let alices = up.add_thread("alice");
    let bobs = up.add_thread("bob");
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            threads: Some(2),
            ..GatewayOptions::default()
        },
    )
    .await;
    let gw = std::sync::Arc::new(gw);
    let mut clients = Vec::new();
    for c in 0..8 {
        let (gw, alices, bobs) = (gw.clone(), alices.clone(), bobs.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..10 {
                let r = req(Method::POST, "/threads")
                    .auth(ALICE)
                    .json(&json!({"metadata": {"owner": "bob", "n": c * 100 + i}}))
                    .send(&gw)
                    .await;
                r.assert_status(200);
                assert_eq!(r.json()["body"]["metadata"]["owner"], "alice");
                let r = req(Method::POST, "/threads/search")
                    .auth(ALICE)
                    .json(&json!({"limit": 5}))
                    .send(&gw)
                    .await;
                r.assert_status(200);
                assert_eq!(r.json()["body"]["metadata"]["owner"], "alice");
                req(Method::GET, format!("/threads/{alices}"))
                    .auth(ALICE)
                    .send(&gw)
                    .await
                    .assert_status(200);
                req(Method::GET, format!("/threads/{bobs}"))
                    .auth(ALICE)
                    .send(&gw)
                    .await
                    .assert_status(404);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let stats = gw.gw.upstream.pool_stats();
    assert!(
        stats.opened <= 8 * 2 + 2,
        "upstream connections are reused ({} opened for 8 clients)",
        stats.opened
    );
    let gw = std::sync::Arc::into_inner(gw).unwrap();
    let addr = gw.addr;
    tokio::time::timeout(std::time::Duration::from_secs(5), gw.stop())
        .await
        .expect("every serving thread drains");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed once every thread stopped"
    );
}
