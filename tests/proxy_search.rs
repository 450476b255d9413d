//! Searches whose filter cannot be pushed into the upstream's metadata containment
//! (`$contains`): the gateway pages through the upstream's results, keeps what passes and
//! answers the client's window with recomputed pagination headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use serde_json::{json, Value};

/// `n` threads; every third one has alice as a participant, the others bob.
fn threads(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let who = if i % 3 == 0 { "alice" } else { "bob" };
            json!({"thread_id": format!("00000000-0000-4000-8000-{i:012}"), "metadata": {"participants": [who, "shared"], "i": i}})
        })
        .collect()
}

async fn participants_setup(n: usize) -> (MockUpstream, TestGateway) {
    let up = MockUpstream::start().await;
    up.on(Method::POST, "/threads/search", Reply::Search(threads(n)));
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir("participants")),
            ..GatewayOptions::default()
        },
    )
    .await;
    (up, gw)
}

fn indices(r: &Resp) -> Vec<u64> {
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["i"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contains_filtered_search_returns_only_visible_threads_with_pagination() {
    let (up, gw) = participants_setup(30).await;
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"limit": 4, "offset": 0}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(indices(&r), vec![0, 3, 6, 9]);
    assert_eq!(r.header("x-pagination-next").as_deref(), Some("4"));
    assert_eq!(r.header("x-pagination-total").as_deref(), Some("5"));
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"limit": 4, "offset": 8}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(indices(&r), vec![24, 27]);
    assert_eq!(r.header("x-pagination-next"), None);
    assert_eq!(r.header("x-pagination-total").as_deref(), Some("10"));
    // Every upstream call was a search page; none carried the client's window.
    for s in up.requests() {
        assert_eq!(s.path(), "/threads/search");
        assert_eq!(s.json()["offset"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contains_filtered_search_pages_through_large_result_sets() {
    let (up, gw) = participants_setup(450).await;
    // 150 visible threads over three upstream pages.
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"limit": 10, "offset": 140}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(indices(&r), (140..150).map(|k| k * 3).collect::<Vec<_>>());
    assert_eq!(r.header("x-pagination-next"), None);
    assert_eq!(r.header("x-pagination-total").as_deref(), Some("150"));
    assert!(up.requests().len() >= 3, "{:?}", summary(&up.requests()));
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"limit": 10, "offset": 130}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(indices(&r).len(), 10);
    assert_eq!(r.header("x-pagination-next").as_deref(), Some("140"));
    assert_eq!(r.header("x-pagination-total").as_deref(), Some("141"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contains_filtered_count_counts_visible_threads() {
    let (_up, gw) = participants_setup(30).await;
    for (who, n) in [(ALICE, 10), (BOB, 20), ("Bearer shared-demo-key", 30)] {
        let r = req(Method::POST, "/threads/count")
            .auth(who)
            .json(&json!({}))
            .send(&gw)
            .await;
        r.assert_status(200);
        assert_eq!(r.json(), json!(n), "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contains_filtered_search_keeps_the_clients_own_metadata_filter() {
    let (up, gw) = participants_setup(30).await;
    let r = req(Method::POST, "/threads/search")
        .auth(BOB)
        .json(&json!({"metadata": {"i": 4}}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(indices(&r), vec![4]);
    assert_eq!(up.requests()[0].json()["metadata"], json!({"i": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_with_a_post_filtered_search_is_refused() {
    let (up, gw) = participants_setup(30).await;
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"select": ["thread_id"]}))
        .send(&gw)
        .await;
    r.assert_status(400);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_thread_create_stamps_participants() {
    let (up, gw) = participants_setup(0).await;
    req(Method::POST, "/threads")
        .auth(BOB)
        .json(&json!({"metadata": {"participants": ["alice"]}}))
        .send(&gw)
        .await
        .assert_status(200);
    assert_eq!(
        up.one_forwarded().json()["metadata"],
        json!({"participants": ["bob", "shared"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assistant_versions_are_filtered_by_owner() {
    let up = MockUpstream::start().await;
    let gw = start_gateway(&up.url(), GatewayOptions::default()).await;
    let aid = new_id();
    up.on(
        Method::GET,
        &format!("/assistants/{aid}"),
        Reply::Json(
            http::StatusCode::OK,
            json!({"assistant_id": aid, "metadata": {"owner": "alice"}}),
        ),
    );
    let versions = json!([
        {"assistant_id": aid, "version": 2, "metadata": {"owner": "bob"}},
        {"assistant_id": aid, "version": 1, "metadata": {"owner": "alice"}}
    ]);
    up.on(
        Method::POST,
        &format!("/assistants/{aid}/versions"),
        Reply::Json(http::StatusCode::OK, versions),
    );
    let r = req(Method::POST, format!("/assistants/{aid}/versions"))
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let r = req(Method::POST, format!("/assistants/{aid}/versions"))
        .auth("Bearer carol-demo-key")
        .json(&json!({}))
        .send(&gw)
        .await;
    r.assert_status(404);
    assert_eq!(r.detail(), format!("Assistant {aid} not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_is_bounded_in_upstream_requests() {
    let up = MockUpstream::start().await;
    up.on(
        Method::POST,
        "/threads/search",
        Reply::Search(threads(3000)),
    );
    let read = |f: &str| std::fs::read_to_string(policy_dir("participants").join(f)).unwrap();
    let policy = format!(
        "{}\n{}\nsettings:\n  search: {{max_upstream_requests: 3}}\n",
        read("authenticators.yaml"),
        read("handlers.yaml")
    );
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(policy),
            ..GatewayOptions::default()
        },
    )
    .await;
    // 3000 threads, alice on every third: her 1000 cannot be counted in 3 pages of 200.
    let r = req(Method::POST, "/threads/count")
        .auth(ALICE)
        .json(&json!({}))
        .send(&gw)
        .await;
    let d = json_error(&r, 400);
    assert!(d.contains("max_upstream_requests"), "{d}");
    assert_eq!(up.requests().len(), 3, "{:?}", summary(&up.requests()));
    // A window deeper than 3 pages reach is refused the same way...
    up.clear();
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"limit": 10, "offset": 500}))
        .send(&gw)
        .await;
    json_error(&r, 400);
    assert_eq!(up.requests().len(), 3);
    // ...one the pages reach is answered, its next page announced.
    let r = req(Method::POST, "/threads/search")
        .auth(ALICE)
        .json(&json!({"limit": 10, "offset": 190}))
        .send(&gw)
        .await;
    r.assert_status(200);
    assert_eq!(indices(&r), (190..200).map(|k| k * 3).collect::<Vec<_>>());
    assert_eq!(r.header("x-pagination-next").as_deref(), Some("200"));
}
