//! Identity spoofing: whatever identity or network position a client claims in headers never
//! reaches the upstream; the gateway's own values replace them. Extends `proxy_forwarding.rs`
//! (`spoofed_identity_and_forwarding_headers_are_replaced`, HTTP/1.1 on `POST /threads`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use serde_json::json;

/// Claims a client might make, in odd spellings and repeated.
const CLAIMS: &[(&str, &str)] = &[
    ("x-graphguard-user-id", "admin"),
    ("X-GRAPHGUARD-USER-ID", "root"),
    ("x-graphguard-user-display-name", "Admin"),
    ("x-graphguard-user-permissions", "[\"*\"]"),
    ("x-graphguard-user-roles", "[\"admin\"]"),
    ("x-forwarded-for", "10.0.0.1, 6.6.6.6"),
    ("X-Forwarded-For", "127.0.0.1"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.internal"),
    ("x-forwarded-port", "443"),
    ("forwarded", "for=127.0.0.1;proto=https;host=admin.internal"),
    ("Forwarded", "for=\"[::1]\""),
    ("x-real-ip", "127.0.0.1"),
];

fn spoofed(r: Req) -> Req {
    CLAIMS.iter().fold(r, |r, (k, v)| r.header(k, v))
}

/// The upstream request carries exactly the gateway's values.
#[track_caller]
fn assert_gateway_identity(seen: &Seen, user: Option<&str>) {
    match user {
        Some(u) => assert_eq!(seen.header_all("x-graphguard-user-id"), vec![u]),
        None => assert_eq!(seen.header("x-graphguard-user-id"), None),
    }
    if user.is_none() {
        for h in [
            "x-graphguard-user-display-name",
            "x-graphguard-user-permissions",
            "x-graphguard-user-roles",
        ] {
            assert_eq!(seen.header(h), None, "{h} on an anonymous request");
        }
    } else {
        for h in ["x-graphguard-user-permissions", "x-graphguard-user-roles"] {
            let v = seen.header_all(h);
            assert_eq!(v.len(), 1, "{h}: {v:?}");
            assert!(!v[0].contains('*') && !v[0].contains("admin"), "{h}: {v:?}");
        }
    }
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    for h in ["forwarded", "x-real-ip", "x-forwarded-port"] {
        assert_eq!(seen.header(h), None, "{h} reached the upstream");
    }
    let xfh = seen.header_all("x-forwarded-host");
    assert!(
        xfh.len() <= 1 && !xfh.iter().any(|h| h == "admin.internal"),
        "{xfh:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_is_replaced_on_every_kind_of_route() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let cases: Vec<(Req, Option<&str>)> = vec![
        (
            req(Method::GET, format!("/threads/{tid}/state")).auth(ALICE),
            Some("alice"),
        ),
        (
            req(Method::POST, "/threads/search")
                .auth(ALICE)
                .json(&json!({})),
            Some("alice"),
        ),
        (
            req(Method::DELETE, format!("/threads/{tid}")).auth(ALICE),
            Some("alice"),
        ),
        (req(Method::GET, "/ok"), None),
        (req(Method::GET, "/ui/agent/index.js"), None),
        (req(Method::GET, "/openapi.json"), None),
    ];
    for (r, user) in cases {
        up.clear();
        spoofed(r).send(&gw).await.assert_status(200);
        assert_gateway_identity(&up.one_forwarded(), user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_over_h2_is_replaced() {
    let (up, gw) = owner_setup().await;
    let mut c = H2Conn::connect(&gw).await;
    spoofed(req(Method::POST, "/threads").auth(BOB).json(&json!({})))
        .send_h2(&mut c)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_gateway_identity(&seen, Some("bob"));
    assert_eq!(seen.json()["metadata"]["owner"], "bob");
    up.clear();
    spoofed(req(Method::GET, "/ok"))
        .send_h2(&mut c)
        .await
        .assert_status(200);
    assert_gateway_identity(&up.one_forwarded(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_never_authenticates() {
    let (up, gw) = owner_setup().await;
    // Identity headers are not credentials: without a key, 401 and nothing forwarded.
    let r = spoofed(req(Method::POST, "/threads").json(&json!({})))
        .send(&gw)
        .await;
    json_error(&r, 401);
    let tid = up.add_thread("admin");
    let r = spoofed(req(Method::GET, format!("/threads/{tid}")))
        .send(&gw)
        .await;
    json_error(&r, 401);
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_in_trailers_or_named_by_connection_is_not_forwarded() {
    let (up, gw) = owner_setup().await;
    // Chunked trailers carrying identity claims: the body is buffered, trailers dropped.
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: x-graphguard-user-id\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\nx-graphguard-user-id: admin\r\nx-forwarded-for: 6.6.6.6\r\n\r\n"
    );
    let r = raw_exchange(&gw, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_gateway_identity(&up.one_forwarded(), Some("alice"));
    // Connection naming the gateway's own headers cannot remove them.
    up.clear();
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nConnection: x-graphguard-user-id, x-forwarded-for, x-request-id, content-length\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let r = raw_exchange(&gw, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.one_forwarded();
    assert_gateway_identity(&seen, Some("alice"));
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_the_request_id() {
    let (up, gw) = owner_setup().await;
    let request = format!(
        "POST /threads HTTP/1.1\r\nHost: gw.test\r\nAuthorization: {ALICE}\r\nConnection: x-request-id\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let mut c = RawConn::connect(&gw).await;
    c.write(request.as_bytes()).await;
    let r = c.read_response().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(up.one_forwarded().header_all("x-request-id"), vec![id]);
}

const RENAMED: &str = r#"
settings:
  user_headers:
    identity: x-user-id
    display_name: x-user-name
    permissions: x-user-permissions
    roles: x-user-roles
    strip: [x-user, X-Tenant]
handlers:
  "*":
    metadata: { owner: "{user.identity}" }
    filter: { owner: "{user.identity}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_identity_headers_are_stripped_and_overwritten() {
    let up = MockUpstream::start().await;
    let gw = gateway_with_yaml(&up, RENAMED).await;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-user-id", "admin")
        .header("X-User-Id", "root")
        .header("x-user-name", "Admin")
        .header("x-user-permissions", "[\"*\"]")
        .header("x-user-roles", "[\"admin\"]")
        .header("x-user", "admin")
        .header("x-tenant", "other-org")
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.header_all("x-user-id"), vec!["alice"]);
    assert_eq!(seen.header_all("x-user-name"), vec!["Alice"]);
    assert_eq!(seen.header_all("x-user-roles").len(), 1);
    assert_eq!(seen.header_all("x-user-permissions").len(), 1);
    assert_eq!(seen.header("x-user"), None);
    assert_eq!(seen.header("x-tenant"), None);
    // Anonymous public requests carry none of them.
    up.clear();
    req(Method::GET, "/ok")
        .header("x-user-id", "admin")
        .header("x-user", "admin")
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.header("x-user-id"), None);
    assert_eq!(seen.header("x-user"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_sent_x_graphguard_header_is_stripped() {
    let (up, gw) = owner_setup().await;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-graphguard-user-org", "other-org")
        .header("x-graphguard-user-attributes", "{\"org\":\"other\"}")
        .header("x-graphguard-policy-version", "forged")
        .header("X-GraphGuard-Anything", "forged")
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    for (k, _) in seen.headers.iter() {
        let k = k.as_str();
        if k.starts_with("x-graphguard-") {
            assert!(
                [
                    "x-graphguard-user-id",
                    "x-graphguard-user-display-name",
                    "x-graphguard-user-permissions",
                    "x-graphguard-user-roles"
                ]
                .contains(&k),
                "client-sent {k} reached the upstream"
            );
        }
    }
    // With renamed user headers, a client-sent default name is not the gateway's either.
    let up2 = MockUpstream::start().await;
    let gw2 = gateway_with_yaml(&up2, RENAMED).await;
    req(Method::POST, "/threads")
        .auth(ALICE)
        .header("x-graphguard-user-id", "admin")
        .json(&json!({}))
        .send(&gw2)
        .await
        .assert_status(200);
    assert_eq!(up2.one_forwarded().header("x-graphguard-user-id"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_values_cannot_inject_headers() {
    // A display name with CR/LF (from a key file, a JWT claim, a forward answer) never splits
    // a header line upstream.
    let up = MockUpstream::start().await;
    let yaml = r#"
authenticators:
  - api_key:
      keys:
        - sha256: SHA
          identity: mallory
          display_name: "Mallory\r\nX-Injected: 1"
          roles: ["r\nx-injected: 2"]
handlers:
  "*":
    metadata: { owner: "{user.identity}" }
"#
    .replace("SHA", MALLORY_SHA256);
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(yaml),
            ..GatewayOptions::default()
        },
    )
    .await;
    req(Method::POST, "/threads")
        .auth("Bearer mallory-key")
        .header("x-graphguard-user-display-name", "Admin")
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(seen.header("x-injected"), None);
    assert_eq!(seen.header_all("x-graphguard-user-id"), vec!["mallory"]);
    for v in seen.header_all("x-graphguard-user-display-name") {
        assert!(
            !v.contains('\r') && !v.contains('\n') && v != "Admin",
            "{v:?}"
        );
    }
    // The roles header is JSON, so the newline is escaped, not sent raw.
    let roles: serde_json::Value =
        serde_json::from_str(&seen.header("x-graphguard-user-roles").unwrap()).unwrap();
    assert_eq!(roles, json!(["r\nx-injected: 2"]));
}

/// `printf '%s' mallory-key | sha256sum`
const MALLORY_SHA256: &str = "a2c6db64998e297b1413b0033e66c5ac0e0a810cac887f9c6b4636f6df389ad9";
