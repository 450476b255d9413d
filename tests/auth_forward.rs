//! The `forward` authenticator against a local authentication service on 127.0.0.1: allow,
//! deny (401/403 pass through), timeout and 5xx (503, never allow), cached answers and coalesced
//! calls (counted on the service's side), and the gateway end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use graphguard::authn::config::ForwardConfig;
use graphguard::authn::forward::ForwardAuthenticator;
use graphguard::authn::{self, Authenticator};
use graphguard::error::GatewayError;
use graphguard::user::User;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

/// What the service saw of one call.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    headers: HeaderMap,
}

/// The service answers by the bearer token: `alice`, `bob` (allowed), `revoked` (401),
/// `suspended` (403), `slow` (answers after 3 s), `broken` (500), `garbage` (200, not JSON),
/// `teapot` (418), `burst-*` (allowed after 200 ms).
struct AuthService {
    service: LocalService,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl AuthService {
    async fn start() -> AuthService {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let c = calls.clone();
        let service = LocalService::start(move |req| {
            let c = c.clone();
            async move { answer(&c, req).await }
        })
        .await;
        AuthService { service, calls }
    }

    fn url(&self) -> String {
        format!("http://{}/auth", self.service.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_for(&self, token: &str) -> usize {
        let want = format!("Bearer {token}");
        self.calls()
            .iter()
            .filter(|c| {
                c.headers
                    .get("authorization")
                    .is_some_and(|v| v == want.as_str())
            })
            .count()
    }
}

async fn answer(calls: &Mutex<Vec<Call>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    calls.lock().unwrap().push(Call {
        method: req.method().clone(),
        headers: req.headers().clone(),
    });
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let reply = |status: u16, body: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    match token.as_str() {
        "alice" => reply(
            200,
            json!({"identity": "alice", "display_name": "Alice", "permissions": ["threads:create"], "roles": ["user"], "attributes": {"org": "acme"}}),
        ),
        "bob" => reply(200, json!({"identity": "bob"})),
        "revoked" => Response::builder()
            .status(401)
            .header(
                "www-authenticate",
                "Bearer error=\"invalid_token\", error_description=\"revoked\"",
            )
            .body(Full::new(Bytes::from(
                json!({"detail": "Token revoked"}).to_string(),
            )))
            .unwrap(),
        "suspended" => reply(403, json!({"detail": "Account suspended"})),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply(200, json!({"identity": "slowpoke"}))
        }
        "broken" => reply(500, json!({"detail": "db down"})),
        "garbage" => Response::builder()
            .status(200)
            .body(Full::new(Bytes::from_static(b"<html>ok</html>")))
            .unwrap(),
        "teapot" => reply(418, json!({})),
        t if t.starts_with("burst-") => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            reply(200, json!({"identity": t}))
        }
        _ => reply(401, json!({})),
    }
}

fn forward(yaml: &str) -> ForwardAuthenticator {
    let c: ForwardConfig = serde_yaml_ng::from_str(yaml).unwrap();
    ForwardAuthenticator::from_config(&c).unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

async fn run(f: &Arc<ForwardAuthenticator>, h: &HeaderMap) -> Result<Arc<User>, GatewayError> {
    authn::authenticate(&[Authenticator::Forward(f.clone())], h).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_maps_the_answer_and_is_cached() {
    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!("url: {}", svc.url())));
    let u = run(&f, &bearer("alice")).await.unwrap();
    assert_eq!(u.identity, "alice");
    assert_eq!(u.display_name, "Alice");
    assert_eq!(u.permissions, ["threads:create"]);
    assert_eq!(u.roles, ["user"]);
    assert_eq!(u.attributes["org"], "acme");
    for _ in 0..5 {
        assert_eq!(run(&f, &bearer("alice")).await.unwrap().identity, "alice");
    }
    assert_eq!(svc.calls_for("alice"), 1, "cache hits make no call");
    assert_eq!(run(&f, &bearer("bob")).await.unwrap().display_name, "bob");
    assert_eq!(svc.calls_for("bob"), 1, "cached per credential");
    assert_eq!(f.call_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_passes_401_and_403_through() {
    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!(
        "url: {}\ndeny_cache_ttl_ms: 60000",
        svc.url()
    )));
    let e = run(&f, &bearer("revoked")).await.unwrap_err();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert_eq!(e.detail, "Token revoked");
    let challenge = e
        .headers
        .iter()
        .find(|(n, _)| n == http::header::WWW_AUTHENTICATE)
        .unwrap();
    assert_eq!(
        challenge.1,
        "Bearer error=\"invalid_token\", error_description=\"revoked\""
    );
    let e = run(&f, &bearer("suspended")).await.unwrap_err();
    assert_eq!(
        (e.status, e.detail.as_str()),
        (StatusCode::FORBIDDEN, "Account suspended")
    );
    let e = run(&f, &bearer("unknown")).await.unwrap_err();
    assert_eq!(
        (e.status, e.detail.as_str()),
        (StatusCode::UNAUTHORIZED, "Invalid credentials")
    );
    // Refusals are cached too (deny_cache_ttl_ms).
    run(&f, &bearer("revoked")).await.unwrap_err();
    assert_eq!(svc.calls_for("revoked"), 1);
    // No credential header: not this authenticator's.
    let e = run(&f, &HeaderMap::new()).await.unwrap_err();
    assert_eq!(e.detail, "Missing authentication credentials");
    assert_eq!(svc.calls().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_5xx_and_garbage_are_503_never_allow() {
    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!("url: {}\ntimeout_ms: 300", svc.url())));
    let started = std::time::Instant::now();
    let e = run(&f, &bearer("slow")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout cuts the call"
    );
    assert_eq!(
        (e.status, e.detail.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Authentication service did not answer in time"
        )
    );
    for (token, detail) in [
        ("broken", "Authentication service failed"),
        (
            "garbage",
            "Authentication service answered an unexpected shape",
        ),
        ("teapot", "Authentication service answered unexpectedly"),
    ] {
        let e = run(&f, &bearer(token)).await.unwrap_err();
        assert_eq!(
            (e.status, e.detail.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, detail),
            "{token}"
        );
        assert_eq!(e.side, graphguard::error::Side::Upstream);
    }
    // An unavailable answer is reused for a second only: the service is asked again after.
    run(&f, &bearer("broken")).await.unwrap_err();
    assert_eq!(svc.calls_for("broken"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&f, &bearer("broken")).await.unwrap_err();
    assert_eq!(svc.calls_for("broken"), 2);

    // The service is down: 503 as well.
    let down = Arc::new(forward("url: http://127.0.0.1:9/auth\ntimeout_ms: 500"));
    let e = run(&down, &bearer("alice")).await.unwrap_err();
    assert_eq!(
        (e.status, e.detail.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Authentication service unavailable"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_one_new_credential_makes_one_call() {
    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!("url: {}", svc.url())));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move { run(&f, &bearer("burst-1")).await })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().identity, "burst-1");
    }
    assert_eq!(svc.calls_for("burst-1"), 1, "coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_ttl_expires_and_zero_disables() {
    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!("url: {}\ncache_ttl_ms: 300", svc.url())));
    run(&f, &bearer("alice")).await.unwrap();
    run(&f, &bearer("alice")).await.unwrap();
    assert_eq!(svc.calls_for("alice"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    run(&f, &bearer("alice")).await.unwrap();
    assert_eq!(svc.calls_for("alice"), 2, "asked again after the TTL");

    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!("url: {}\ncache_ttl_ms: 0", svc.url())));
    for _ in 0..3 {
        run(&f, &bearer("bob")).await.unwrap();
    }
    assert_eq!(svc.calls_for("bob"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_credential_headers_are_sent() {
    let svc = AuthService::start().await;
    let f = Arc::new(forward(&format!(
        "url: {}\nmethod: POST\nheaders: [authorization, x-session]",
        svc.url()
    )));
    let mut h = bearer("alice");
    h.insert("x-session", "s1".parse().unwrap());
    h.insert("x-unrelated", "secret-ish".parse().unwrap());
    h.insert("cookie", "a=b".parse().unwrap());
    run(&f, &h).await.unwrap();
    let c = &svc.calls()[0];
    assert_eq!(c.method, Method::POST);
    assert_eq!(c.headers.get("x-session").unwrap(), "s1");
    assert!(c.headers.get("x-unrelated").is_none() && c.headers.get("cookie").is_none());
    // Another session value is another credential: another call.
    h.insert("x-session", "s2".parse().unwrap());
    run(&f, &h).await.unwrap();
    assert_eq!(svc.calls().len(), 2);
    // x-session alone is a credential too (the service decides: 401 here).
    let mut only = HeaderMap::new();
    only.insert("x-session", "s3".parse().unwrap());
    assert_eq!(
        run(&f, &only).await.unwrap_err().status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_with_forward_authenticator() {
    let svc = AuthService::start().await;
    let up = MockUpstream::start().await;
    let policy = format!(
        "authenticators:\n  - forward: {{url: {}, timeout_ms: 300}}\nhandlers:\n  \"*\":\n    metadata: {{ owner: \"{{user.identity}}\" }}\n    filter: {{ owner: \"{{user.identity}}\" }}\n",
        svc.url()
    );
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(policy),
            ..GatewayOptions::default()
        },
    )
    .await;
    req(Method::POST, "/threads")
        .auth("Bearer alice")
        .json(&json!({}))
        .send(&gw)
        .await
        .assert_status(200);
    let seen = up.one_forwarded();
    assert_eq!(
        seen.header("x-graphguard-user-id").as_deref(),
        Some("alice")
    );
    assert_eq!(
        seen.header("authorization"),
        None,
        "credentials stay at the gateway"
    );
    let tid = up.add_thread("alice");
    req(Method::GET, format!("/threads/{tid}"))
        .auth("Bearer bob")
        .send(&gw)
        .await
        .assert_status(404);
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth("Bearer revoked")
        .send(&gw)
        .await;
    r.assert_status(401);
    assert_eq!(r.detail(), "Token revoked");
    req(Method::GET, format!("/threads/{tid}"))
        .auth("Bearer suspended")
        .send(&gw)
        .await
        .assert_status(403);
    let r = req(Method::GET, format!("/threads/{tid}"))
        .auth("Bearer slow")
        .send(&gw)
        .await;
    r.assert_status(503);
    let counts: HashMap<String, usize> = ["alice", "bob"]
        .iter()
        .map(|t| (t.to_string(), svc.calls_for(t)))
        .collect();
    assert_eq!(counts["alice"], 1);
}
