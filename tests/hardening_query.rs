//! Query strings the gateway reads for authorization (store namespaces, `delete_threads`):
//! repeated parameters, encoded separators and names, and encodings Starlette decodes the same
//! way. The gateway must read the query exactly as the agent server will. Extends
//! `proxy_forwarding.rs` (`store_get_namespace_query_is_prefixed_with_the_user`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

async fn setup(policy: &str) -> (MockUpstream, TestGateway) {
    let up = MockUpstream::start().await;
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir(policy)),
            ..GatewayOptions::default()
        },
    )
    .await;
    (up, gw)
}

/// The namespace the agent server reads from a forwarded query (Starlette: last value,
/// `+` and `%XX` decoded, then split on `.`).
fn server_namespace(query: &str) -> Vec<String> {
    let last = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "namespace")
        .map(|(_, v)| v.into_owned())
        .last()
        .unwrap_or_default();
    last.split('.').map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_get_require_mode_reads_the_namespace_like_the_server() {
    let (up, gw) = setup("resource").await;
    // Allowed: the decoded namespace starts with alice; forwarded byte for byte.
    for q in [
        "namespace=alice&key=k",
        "namespace=alice%2Ebob&key=k",
        "namespace=alice.bob%2Ecarol&key=k",
        "n%61mespace=alice.x&key=k",
        "namespace=alice&key=a%26namespace%3Dbob",
        "key=k&namespace=alice.x&other=1&other=2",
    ] {
        up.clear();
        let r = req(Method::GET, format!("/store/items?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await;
        r.assert_status(200);
        let seen = up.one_forwarded();
        assert_eq!(seen.query(), Some(q), "the query was changed");
        assert_eq!(server_namespace(q)[0], "alice", "{q}");
    }
    up.clear();
    // Refused: whatever the spelling, the server would read another user's namespace.
    for q in [
        "namespace=bob&key=k",
        "namespace=bob%2Ealice&key=k",
        "namespace=%62ob&key=k",
        "n%61mespace=bob&key=k",
        "namespace=ALICE&key=k",
        "namespace=+alice&key=k",
        "namespace=alice+&key=k",
        "namespace=alice%00&key=k",
        "namespace=alice;namespace=alice&key=k",
        "namespace=alice%3Bx&key=k",
        "key=k",
        "namespace=alice%2",
    ] {
        let r = req(Method::GET, format!("/store/items?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await;
        let status = r.status.as_u16();
        assert!(matches!(status, 403 | 422), "{q}: {status} {}", r.text());
        json_error(&r, status);
    }
    // Repeated parameters: the server reads the last one, so any repeat is refused.
    for q in [
        "namespace=alice&namespace=bob&key=k",
        "namespace=bob&namespace=alice&key=k",
        "namespace=alice&n%61mespace=bob&key=k",
        "namespace=alice&key=a&key=b",
    ] {
        let r = req(Method::GET, format!("/store/items?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await;
        let d = json_error(&r, 400);
        assert!(d.starts_with("Repeated query parameter"), "{q}: {d}");
    }
    // Empty labels (`.` at an edge, `..`, an empty value) are refused as the server would.
    for q in [
        "namespace=alice.&key=k",
        "namespace=.alice&key=k",
        "namespace=alice..x&key=k",
        "namespace=alice%2E%2Ex&key=k",
        "namespace=&key=k",
    ] {
        let r = req(Method::GET, format!("/store/items?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await;
        let d = json_error(&r, 422);
        assert!(
            d.contains("must be a non-empty string without periods"),
            "{q}: {d}"
        );
    }
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_get_rewrite_mode_prefixes_what_the_server_will_read() {
    let (up, gw) = setup("store-rewrite").await;
    for (q, want) in [
        (
            "namespace=bob%2Esecret&key=k",
            vec!["alice", "bob", "secret"],
        ),
        ("n%61mespace=bob&key=k", vec!["alice", "bob"]),
        ("namespace=%61lice.x&key=k", vec!["alice", "x"]),
        ("namespace=+alice&key=k", vec!["alice", " alice"]),
        ("key=k", vec!["alice"]),
    ] {
        up.clear();
        req(Method::GET, format!("/store/items?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await
            .assert_status(200);
        let seen = up.one_forwarded();
        let fq = seen.query().unwrap_or("");
        assert_eq!(server_namespace(fq), want, "{q} -> {fq}");
        let names = form_urlencoded::parse(fq.as_bytes())
            .filter(|(k, _)| k == "namespace")
            .count();
        assert_eq!(names, 1, "{q} -> {fq}");
        let keys: Vec<String> = form_urlencoded::parse(fq.as_bytes())
            .filter(|(k, _)| k == "key")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(keys, vec!["k"], "{q} -> {fq}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_body_namespaces_with_separators_are_refused() {
    let (up, gw) = setup("resource").await;
    for (method, path, body) in [
        (
            Method::PUT,
            "/store/items",
            json!({"namespace": ["alice.bob"], "key": "k", "value": {}}),
        ),
        (
            Method::PUT,
            "/store/items",
            json!({"namespace": ["alice", "x.y"], "key": "k", "value": {}}),
        ),
        (
            Method::PUT,
            "/store/items",
            json!({"namespace": ["alice", ""], "key": "k", "value": {}}),
        ),
        (
            Method::DELETE,
            "/store/items",
            json!({"namespace": ["alice", "."], "key": "k"}),
        ),
        (
            Method::POST,
            "/store/items/search",
            json!({"namespace_prefix": ["alice.bob"]}),
        ),
        (
            Method::POST,
            "/store/namespaces",
            json!({"prefix": ["alice", ".."]}),
        ),
    ] {
        let r = req(method.clone(), path)
            .auth(ALICE)
            .json(&body)
            .send(&gw)
            .await;
        let d = json_error(&r, 422);
        assert!(d.contains("without periods"), "{method} {path} {body}: {d}");
    }
    for (method, path, body) in [
        (
            Method::PUT,
            "/store/items",
            json!({"namespace": "alice", "key": "k", "value": {}}),
        ),
        (
            Method::PUT,
            "/store/items",
            json!({"namespace": [1], "key": "k", "value": {}}),
        ),
        (
            Method::POST,
            "/store/items/search",
            json!({"namespace_prefix": {"0": "alice"}}),
        ),
    ] {
        let r = req(method.clone(), path)
            .auth(ALICE)
            .json(&body)
            .send(&gw)
            .await;
        json_error(&r, 422);
    }
    for body in [
        json!({"namespace": ["bob"], "key": "k", "value": {}}),
        json!({"namespace": ["Alice"], "key": "k", "value": {}}),
        json!({"namespace": ["alice\u{0}"], "key": "k", "value": {}}),
        json!({"namespace": [], "key": "k", "value": {}}),
    ] {
        let r = req(Method::PUT, "/store/items")
            .auth(ALICE)
            .json(&body)
            .send(&gw)
            .await;
        assert_eq!(json_error(&r, 403), "Not authorized", "{body}");
    }
    up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_threads_is_read_as_the_server_reads_it() {
    let (up, gw) = setup("owner").await;
    let aid = new_id();
    up.on(
        Method::GET,
        &format!("/assistants/{aid}"),
        Reply::Json(
            StatusCode::OK,
            json!({"assistant_id": aid, "graph_id": "agent", "metadata": {"owner": "alice"}}),
        ),
    );
    // Any spelling the server may read as true (it reads the last value, lower-cased) is
    // refused while a threads:delete filter is active.
    for q in [
        "delete_threads=true",
        "delete_threads=TRUE",
        "delete_threads=True",
        "delete%5Fthreads=true",
        "delete_threads=tru%65",
        "delete_threads=false&delete_threads=true",
        "delete_threads=true&delete_threads=false",
        "x=1&delete_threads=true",
    ] {
        let r = req(Method::DELETE, format!("/assistants/{aid}?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await;
        let d = json_error(&r, 403);
        assert!(
            d.starts_with("delete_threads cannot be authorized"),
            "{q}: {d}"
        );
    }
    up.assert_nothing_forwarded();
    // What the server reads as false is forwarded unchanged.
    for q in [
        "delete_threads=false",
        "delete_threads=",
        "delete_threads=%20true",
        "delete_thread=true",
    ] {
        up.clear();
        req(Method::DELETE, format!("/assistants/{aid}?{q}"))
            .auth(ALICE)
            .send(&gw)
            .await
            .assert_status(200);
        assert_eq!(up.one_forwarded().query(), Some(q));
    }
}
