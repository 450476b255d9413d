//! Authentication, classification and by-id authorization through the running gateway, with
//! the lookup cache (TTL, invalidation, coalescing) observed from the upstream's side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_is_401_with_www_authenticate() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::POST, "/threads")
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(401);
    assert_eq!(r.detail(), "Missing authentication credentials");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_key_is_401() {
    let (up, gw) = owner_setup().await;
    for auth in [
        "Bearer not-a-demo-key",
        "Bearer alice-demo-key2",
        "Bearer ",
        "alice-demo-key",
    ] {
        let r = req(Method::POST, "/threads")
            .auth(auth)
            .json(&json!({}))
            .send(&gw)
            .await;
        r.assert_status(401);
        assert!(
            r.header("www-authenticate").is_some(),
            "{auth:?}: no WWW-Authenticate"
        );
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_authorization_headers_are_401() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::POST, "/threads")
        .auth(BOB)
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(401);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ok_is_forwarded_without_auth() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::GET, "/ok").send(&gw).await;
    r.assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        (seen.method.clone(), seen.uri.as_str()),
        (Method::GET, "/ok")
    );
    // HEAD of a public GET route too.
    req(Method::HEAD, "/ok").send(&gw).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_and_deploy_routes_are_refused_and_not_forwarded() {
    let (up, gw) = owner_setup().await;
    for (m, p) in [
        (Method::POST, "/internal/truncate"),
        (Method::GET, "/internal/debug/thread/x"),
        (Method::GET, "/deploy"),
        (Method::POST, "/deploy"),
        (Method::GET, "/deploy/op1/stream"),
    ] {
        for auth in [None, Some(ADMIN)] {
            let mut r = req(m.clone(), p);
            if let Some(a) = auth {
                r = r.auth(a);
            }
            let r = r.send(&gw).await;
            r.assert_status(403);
            r.detail();
        }
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_authenticated_and_401_anonymous() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::GET, "/no/such/path")
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(404);
    assert_eq!(r.detail(), "Not Found");
    let r = req(Method::GET, "/no/such/path").send(&gw).await;
    r.assert_status(401);
    // A trailing slash or another case is not a route either.
    req(Method::POST, "/threads/")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(404);
    req(Method::POST, "/Threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(404);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_path_with_wrong_method_is_405_with_allow() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::PUT, "/threads")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let tid = new_id();
    let r = req(Method::POST, format!("/threads/{tid}"))
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(405);
    let allow = r.header("allow").unwrap();
    for m in ["GET", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "Allow: {allow}");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_400_and_not_forwarded() {
    let (up, gw) = owner_setup().await;
    for target in [
        "/threads/../assistants",
        "/threads/%2e%2e",
        "/threads/%2e%2e/assistants/search",
        "//threads",
        "/threads;x",
        "/threads/./search",
        "/threads//search",
        "/threads%2fsearch",
        "/threads\\search",
    ] {
        for auth in [String::new(), format!("Authorization: {ALICE}\r\n")] {
            let r = raw_exchange(
                &gw,
                format!("POST {target} HTTP/1.1\r\nHost: gw.test\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
            )
            .await;
            assert_eq!(r.status, 400, "{target}: {}", r.body);
        }
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_path_refusal_is_json_detail() {
    let (_up, gw) = owner_setup().await;
    let r = raw_exchange(
        &gw,
        b"GET /threads/../ok HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("Ambiguous request path"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_uuid_thread_id_is_422() {
    let (up, gw) = owner_setup().await;
    let r = req(Method::GET, "/threads/not-a-uuid")
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(422);
    assert_eq!(r.detail(), "Invalid thread ID: must be a UUID");
    assert!(up.requests().is_empty(), "no lookup for an invalid id");
}

// ---------------------------------------------------------------------------------------------
// By-id reads
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_thread_read_is_404_after_a_lookup_only() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(BOB)
        .send(&gw)
        .await;
    r.assert_status(404);
    assert_eq!(
        r.json(),
        json!({"detail": format!("Thread with ID {tid} not found")})
    );
    assert_eq!(up.thread_lookups(&tid), 1);
    up.assert_nothing_forwarded();
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_thread_read_is_404_like_a_foreign_one() {
    let (up, gw) = owner_setup().await;
    let tid = new_id();
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(404);
    assert_eq!(r.detail(), format!("Thread with ID {tid} not found"));
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_thread_read_is_forwarded() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["metadata"]["owner"], "alice");
    let seen = up.one_forwarded();
    assert_eq!(seen.uri, format!("/threads/{tid}"));
    assert_eq!(
        seen.header("x-graphguard-user-id").as_deref(),
        Some("alice")
    );
    assert_eq!(up.thread_lookups(&tid), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_is_cached_within_the_ttl() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    for _ in 0..3 {
        req(Method::GET, format!("/threads/{tid}/state"))
            .auth(ALICE)
            .send(&gw)
            .await
            .assert_status(200);
    }
    // Bob's refusal is decided from the same cached lookup.
    req(Method::GET, format!("/threads/{tid}/state"))
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(404);
    assert_eq!(
        up.thread_lookups(&tid),
        1,
        "one lookup for four reads within the TTL"
    );
    assert_eq!(up.forwarded().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_through_the_gateway_invalidates_the_cached_lookup() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
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
    assert_eq!(up.thread_lookups(&tid), 1);
    let r = req(Method::PATCH, format!("/threads/{tid}"))
        .auth(ALICE)
        .json(&json!({"metadata": {"owner": "bob", "k": 1}}))
        .send(&gw)
        .await;
    r.assert_status(200);
    let patch = up
        .forwarded()
        .into_iter()
        .find(|s| s.method == Method::PATCH)
        .unwrap();
    assert_eq!(
        patch.json()["metadata"],
        json!({"owner": "alice", "k": 1}),
        "PATCH metadata is stamped too"
    );
    assert_eq!(
        up.thread_lookups(&tid),
        1,
        "the PATCH decision used the cached lookup"
    );
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(
        up.thread_lookups(&tid),
        2,
        "the read after the PATCH looked the thread up again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_through_the_gateway_invalidates_the_cached_lookup() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    up.on(
        Method::DELETE,
        &format!("/threads/{tid}"),
        Reply::Raw {
            status: StatusCode::NO_CONTENT,
            headers: vec![],
            body: bytes::Bytes::new(),
        },
    );
    req(Method::DELETE, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(204);
    // The thread is gone upstream and recreated by bob with the same id.
    up.put_thread(&tid, thread_json(&tid, "bob"));
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(404);
    req(Method::GET, format!("/threads/{tid}"))
        .auth(BOB)
        .send(&gw)
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_of_one_uncached_thread_make_one_lookup() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    up.set_lookup_delay(Duration::from_millis(300));
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let gw = gw.clone();
        let path = format!("/threads/{tid}/state");
        tasks.push(tokio::spawn(async move {
            let who = if i % 2 == 0 { ALICE } else { BOB };
            (who, req(Method::GET, path).auth(who).send(&gw).await.status)
        }));
    }
    for t in tasks {
        let (who, status) = t.await.unwrap();
        let want = if who == ALICE {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, want, "{who}");
    }
    assert_eq!(
        up.thread_lookups(&tid),
        1,
        "20 concurrent reads were coalesced into one lookup"
    );
    assert_eq!(up.forwarded().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_ttl_expiry_looks_up_again() {
    let up = MockUpstream::start().await;
    let yaml = format!(
        "{}\nsettings:\n  lookup_cache: {{ttl_ms: 200}}\nhandlers:\n  \"*\":\n    metadata: {{owner: \"{{user.identity}}\"}}\n    filter: {{owner: \"{{user.identity}}\"}}\n",
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
    let tid = up.add_thread("alice");
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
    assert_eq!(up.thread_lookups(&tid), 1);
    // Ownership changed behind the gateway's back: visible once the TTL expired.
    up.put_thread(&tid, thread_json(&tid, "bob"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(404);
    assert_eq!(up.thread_lookups(&tid), 2);
}

// ---------------------------------------------------------------------------------------------
// Lookup failures fail closed
// ---------------------------------------------------------------------------------------------

async fn assert_lookup_failure_refused(reply: Reply) {
    let (up, gw) = owner_setup().await;
    let tid = new_id();
    up.on(Method::GET, &format!("/threads/{tid}"), reply);
    for who in [ALICE, BOB] {
        let r = req(Method::GET, format!("/threads/{tid}"))
            .auth(who)
            .send(&gw)
            .await;
        assert!(
            r.status.is_server_error(),
            "expected 5xx, got {} {}",
            r.status,
            r.text()
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        r.detail();
    }
    assert!(up.thread_lookups(&tid) >= 1);
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answered_with_non_json_is_refused() {
    assert_lookup_failure_refused(Reply::Raw {
        status: StatusCode::OK,
        headers: vec![("content-type", "application/json".into())],
        body: bytes::Bytes::from_static(b"<html>not json</html>"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answered_with_500_is_refused() {
    assert_lookup_failure_refused(Reply::Json(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"detail": "boom"}),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answered_with_unexpected_shape_is_refused() {
    assert_lookup_failure_refused(Reply::Json(
        StatusCode::OK,
        json!({"thread_id": "x", "metadata": "owner=alice"}),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answered_with_protocol_garbage_is_refused() {
    let (up, gw) = owner_setup().await;
    let tid = new_id();
    up.set_garbage(Some(b"SSH-2.0-OpenSSH_9.6\r\n\r\nnot http at all\r\n"));
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await;
    assert!(r.status.is_server_error(), "{} {}", r.status, r.text());
    r.detail();
    assert_eq!(up.requests().len(), 1, "{:?}", summary(&up.requests()));
}

// ---------------------------------------------------------------------------------------------
// h2c
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_gets_the_same_answers() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    let mut c = H2Conn::connect(&gw).await;
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send_h2(&mut c)
        .await;
    r.assert_status(200);
    assert_eq!(r.json()["metadata"]["owner"], "alice");
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(BOB)
        .send_h2(&mut c)
        .await;
    r.assert_status(404);
    assert_eq!(r.detail(), format!("Thread with ID {tid} not found"));
    req(Method::GET, format!("/threads/{tid}"))
        .send_h2(&mut c)
        .await
        .assert_status(401);
    let r = req(Method::POST, "/threads")
        .auth(BOB)
        .json(&json!({"metadata": {"owner": "alice"}}))
        .send_h2(&mut c)
        .await;
    r.assert_status(200);
    let fwd = up.forwarded();
    assert_eq!(fwd.len(), 2, "{:?}", summary(&fwd));
    assert_eq!(
        fwd[0].header("x-graphguard-user-id").as_deref(),
        Some("alice")
    );
    let create = &fwd[1];
    assert_eq!(create.json()["metadata"]["owner"], "bob");
    assert_eq!(
        create.header("content-length"),
        Some(create.body.len().to_string())
    );
    assert_eq!(
        create.header("x-forwarded-host"),
        Some(gw.addr.to_string()),
        "h2 :authority becomes X-Forwarded-Host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_refusals_are_not_forwarded() {
    let (up, gw) = owner_setup().await;
    let mut c = H2Conn::connect(&gw).await;
    req(Method::POST, "/internal/truncate")
        .send_h2(&mut c)
        .await
        .assert_status(403);
    req(Method::GET, "/threads/not-a-uuid")
        .auth(ALICE)
        .send_h2(&mut c)
        .await
        .assert_status(422);
    let r = req(Method::POST, "/threads")
        .auth(ALICE)
        .header("content-type", "application/json")
        .body(r#"{"metadata":{},"metadata":{}}"#)
        .send_h2(&mut c)
        .await;
    r.assert_status(400);
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_failure_is_not_cached() {
    let (up, gw) = owner_setup().await;
    let tid = up.add_thread("alice");
    up.on(
        Method::GET,
        &format!("/threads/{tid}"),
        Reply::Json(StatusCode::SERVICE_UNAVAILABLE, json!({"detail": "busy"})),
    );
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await;
    assert!(r.status.is_server_error());
    // The upstream recovers: the next request looks up again and succeeds.
    up.on(
        Method::GET,
        &format!("/threads/{tid}"),
        Reply::Json(StatusCode::OK, thread_json(&tid, "alice")),
    );
    req(Method::GET, format!("/threads/{tid}"))
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_surfaces_are_refused_unless_enabled() {
    let (up, gw) = owner_setup().await;
    for (m, p) in [
        (Method::POST, "/mcp"),
        (Method::GET, "/a2a/agent"),
        (Method::POST, "/ui/agent"),
        (Method::GET, "/.well-known/agent-card.json"),
    ] {
        let r = req(m.clone(), p)
            .auth(ALICE)
            .json(&json!({}))
            .send(&gw)
            .await;
        r.assert_status(403);
        req(m, p).send(&gw).await.assert_status(401);
    }
    assert!(up.requests().is_empty(), "{:?}", summary(&up.requests()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_ui_is_public_and_metrics_need_credentials() {
    let (up, gw) = owner_setup().await;
    req(Method::GET, "/ui/agent/index.js")
        .send(&gw)
        .await
        .assert_status(200);
    req(Method::GET, "/metrics")
        .send(&gw)
        .await
        .assert_status(401);
    req(Method::GET, "/metrics")
        .auth(ALICE)
        .send(&gw)
        .await
        .assert_status(200);
    let f = up.forwarded();
    assert_eq!(summary(&f), vec!["GET /ui/agent/index.js", "GET /metrics"]);
    assert_eq!(f[0].header("x-graphguard-user-id"), None);
}
