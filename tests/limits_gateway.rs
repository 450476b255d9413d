//! The policy's `limits:` through the real gateway and its default in-process limiter, in
//! front of the mock agent server: what a limit lets through is counted where it lands (the
//! upstream), refusals are 429 naming the limit with `Retry-After` and the RateLimit fields,
//! concurrency slots live as long as the response body, and `graphguard check` places every
//! bad limit at its file, line and key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const CAROL: &str = "Bearer carol-demo-key";
const DAVE: &str = "Bearer dave-demo-key";

/// The demo keys (policies/demo-keys.txt) with roles and an `org` attribute: alice and bob
/// are both `free` users of acme, carol a `free` user of globex, dave a `paid` user of acme.
const AUTHENTICATORS: &str = r#"authenticators:
  - api_key:
      keys:
        - identity: alice
          sha256: 0572c17ed012b3efdf9df98db1718f225887132739b8da945d81ac5a7d1fea45
          roles: [free]
          attributes: { org: acme }
        - identity: bob
          sha256: 3a1f6bae21de4f036f2aba80fce463677f1070f8bf81f0f475604cccd8e2d7f3
          roles: [free]
          attributes: { org: acme }
        - identity: carol
          sha256: 05e17cacfd02d6850325b37f5cec8ca718ece990dae91990f6917effb1dd6b16
          roles: [free]
          attributes: { org: globex }
        - identity: dave
          sha256: ab13bac2a33e52cfb5b8f5b5dd08bbf2da5644ba478a6b434cf1e1c2b955623c
          roles: [paid]
          attributes: { org: acme }
"#;

/// Owner isolation (the owner policy's handler) plus `rest` (a `limits:` section, settings).
async fn gateway(up: &MockUpstream, rest: &str) -> TestGateway {
    let yaml = format!(
        "{AUTHENTICATORS}\nhandlers:\n  \"*\":\n    metadata: {{ owner: \"{{user.identity}}\" }}\n    filter: {{ owner: \"{{user.identity}}\" }}\n{rest}"
    );
    let opts = GatewayOptions {
        policy: PolicySource::Yaml(yaml),
        ..GatewayOptions::default()
    };
    start_gateway(&up.url(), opts).await
}

async fn create(gw: &TestGateway, auth: &str) -> Resp {
    req(Method::POST, "/threads")
        .auth(auth)
        .json(&json!({}))
        .send(gw)
        .await
}

/// Forwarded `POST path` requests.
fn reached(up: &MockUpstream, path: &str) -> usize {
    up.forwarded()
        .iter()
        .filter(|s| s.method == Method::POST && s.path() == path)
        .count()
}

/// The `r` and `t` of the `RateLimit` field (one limit).
fn remaining_and_reset(r: &Resp) -> (u64, u64) {
    let v = r.header("ratelimit").expect("no ratelimit header");
    let param = |p: &str| -> u64 {
        v.split(';')
            .find_map(|x| x.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p} in {v:?}"))
            .parse()
            .unwrap()
    };
    (param("r="), param("t="))
}

/// `Retry-After` in seconds.
fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after")
        .expect("no retry-after")
        .parse()
        .unwrap()
}

/// Seconds counted down from `want` since the bucket was first spent: `want`, or one less
/// on a machine slow enough that a second passed.
#[track_caller]
fn about(got: u64, want: u64) {
    assert!(got == want || got + 1 == want, "{got} s, want {want} s");
}

/// A 429 naming `limit`; its detail.
#[track_caller]
fn too_many(r: &Resp, limit: &str) -> String {
    let detail = json_error(r, 429);
    assert!(detail.contains(limit), "{detail}");
    detail
}

const THREE_PER_MINUTE: &str = r#"
limits:
  - name: creates
    events: [threads:create, threads:update]
    rate: { requests: 3, per: 1m }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_lets_three_through_then_refuses_with_its_headers() {
    let up = MockUpstream::start().await;
    let gw = gateway(&up, THREE_PER_MINUTE).await;
    for left in [2, 1, 0] {
        let r = create(&gw, ALICE).await;
        r.assert_status(200);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some(r#""creates";q=3;w=60"#)
        );
        let (remaining, reset) = remaining_and_reset(&r);
        assert_eq!(remaining, left);
        // One unit comes back every 20 s: full again 20 s per unit spent.
        about(reset, 20 * (3 - left));
        assert!(r.header("retry-after").is_none());
    }
    let r = create(&gw, ALICE).await;
    let detail = too_many(&r, "creates");
    assert!(detail.contains("3 per 1m"), "{detail}");
    about(retry_after(&r), 20);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""creates";q=3;w=60"#)
    );
    let (remaining, reset) = remaining_and_reset(&r);
    assert_eq!(remaining, 0);
    about(reset, 60);
    assert_eq!(
        reached(&up, "/threads"),
        3,
        "{:?}",
        summary(&up.forwarded())
    );

    // Another identity has a bucket of its own.
    let r = create(&gw, BOB).await;
    r.assert_status(200);
    assert_eq!(remaining_and_reset(&r).0, 2);
    assert_eq!(reached(&up, "/threads"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rate_limit_headers_only_refusals_carry_them() {
    let up = MockUpstream::start().await;
    let rest = format!("{THREE_PER_MINUTE}settings:\n  rate_limit_headers: false\n");
    let gw = gateway(&up, &rest).await;
    for _ in 0..3 {
        let r = create(&gw, ALICE).await;
        r.assert_status(200);
        assert!(r.header("ratelimit-policy").is_none(), "{:?}", r.headers);
        assert!(r.header("ratelimit").is_none(), "{:?}", r.headers);
    }
    let r = create(&gw, ALICE).await;
    too_many(&r, "creates");
    about(retry_after(&r), 20);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some(r#""creates";q=3;w=60"#)
    );
    assert_eq!(remaining_and_reset(&r).0, 0);
    assert_eq!(reached(&up, "/threads"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_handler_refuses_spends_nothing() {
    let up = MockUpstream::start().await;
    let gw = gateway(&up, THREE_PER_MINUTE).await;
    // Updates of bob's thread: alice may not see it, the handler refuses, nothing is spent.
    let foreign = up.add_thread("bob");
    for _ in 0..5 {
        let r = req(Method::PATCH, format!("/threads/{foreign}"))
            .auth(ALICE)
            .json(&json!({"metadata": {"x": 1}}))
            .send(&gw)
            .await;
        assert!(r.status.is_client_error() && r.status != 429, "{r:?}");
        assert!(r.header("ratelimit").is_none());
    }
    up.assert_nothing_forwarded();
    // Her own update and two creates spend the three units; the fourth request is refused.
    let own = up.add_thread("alice");
    req(Method::PATCH, format!("/threads/{own}"))
        .auth(ALICE)
        .json(&json!({"metadata": {"x": 1}}))
        .send(&gw)
        .await
        .assert_status(200);
    create(&gw, ALICE).await.assert_status(200);
    assert_eq!(remaining_and_reset(&create(&gw, ALICE).await).0, 0);
    too_many(&create(&gw, ALICE).await, "creates");
    assert_eq!(up.forwarded().len(), 3, "{:?}", summary(&up.forwarded()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_an_attribute_groups_users_and_when_selects_them() {
    let up = MockUpstream::start().await;
    let rest = r#"
limits:
  - name: org-creates
    events: [threads:create]
    when: { roles: [free] }
    key: "{user.attributes.org}"
    rate: { requests: 2, per: 1h }
"#;
    let gw = gateway(&up, rest).await;
    create(&gw, ALICE).await.assert_status(200);
    let r = create(&gw, BOB).await;
    r.assert_status(200);
    assert_eq!(
        remaining_and_reset(&r).0,
        0,
        "alice and bob share acme's bucket"
    );
    too_many(&create(&gw, ALICE).await, "org-creates");
    too_many(&create(&gw, BOB).await, "org-creates");
    // Another org's free user has its own bucket.
    create(&gw, CAROL).await.assert_status(200);
    // A paid user of acme is outside `when`: never limited, never told about the limit.
    for _ in 0..4 {
        let r = create(&gw, DAVE).await;
        r.assert_status(200);
        assert!(r.header("ratelimit").is_none(), "{:?}", r.headers);
    }
    assert_eq!(reached(&up, "/threads"), 2 + 1 + 4);
}

fn batch(n: usize) -> Value {
    Value::Array(vec![json!({"assistant_id": "agent"}); n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_batch_counts_each_run() {
    let up = MockUpstream::start().await;
    let rest = r#"
limits:
  - name: runs
    events: [threads:create_run]
    rate: { requests: 5, per: 1m, burst: 1 }
"#;
    let gw = gateway(&up, rest).await;
    let post = |n: usize| req(Method::POST, "/runs/batch").auth(ALICE).json(&batch(n));
    let r = post(4).send(&gw).await;
    r.assert_status(200);
    assert_eq!(remaining_and_reset(&r).0, 2, "four runs of six spent");
    // Three runs do not fit in the two left: a wait of one unit (12 s) helps.
    let r = post(3).send(&gw).await;
    let detail = too_many(&r, "runs");
    assert!(detail.contains("5 per 1m"), "{detail}");
    about(retry_after(&r), 12);
    // Seven never fit in 5 + 1: no Retry-After, as waiting would not help.
    let r = post(7).send(&gw).await;
    let detail = too_many(&r, "runs");
    assert!(detail.contains("counts 7"), "{detail}");
    assert!(r.header("retry-after").is_none(), "{:?}", r.headers);
    // Refused batches spent nothing: the two units left take a batch of two, then a run.
    let r = post(2).send(&gw).await;
    r.assert_status(200);
    assert_eq!(remaining_and_reset(&r).0, 0);
    let one = req(Method::POST, "/runs/wait")
        .auth(ALICE)
        .json(&json!({"assistant_id": "agent"}));
    too_many(&one.send(&gw).await, "runs");
    let seen: Vec<usize> = up
        .forwarded()
        .iter()
        .map(|s| s.json().as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(seen, [4, 2], "{:?}", summary(&up.forwarded()));
}

/// Send a streaming run until it is not refused (a slot is freed when the gateway drops the
/// response body, a moment after the client saw it end).
async fn stream_when_free(gw: &TestGateway, r: &Req) -> hyper::Response<hyper::body::Incoming> {
    let start = Instant::now();
    loop {
        let resp = r.send_streaming(gw).await;
        if resp.status() != 429 {
            return resp;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_slot_is_held_while_the_response_streams() {
    let up = MockUpstream::start().await;
    let rest = r#"
limits:
  - name: streams
    events: [threads:create_run]
    concurrent: 1
"#;
    let gw = gateway(&up, rest).await;
    let tid = up.add_thread("alice");
    let path = format!("/threads/{tid}/runs/stream");
    let run = req(Method::POST, path.clone())
        .auth(ALICE)
        .json(&json!({"assistant_id": "agent"}));

    let frames = up.sse(Method::POST, &path);
    let first = run.send_streaming(&gw).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-policy"], r#""streams";q=1"#);
    let mut body = first.into_body();
    frames.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
    let f = tokio::time::timeout(CLIENT_TIMEOUT, body.frame()).await;
    assert!(matches!(f, Ok(Some(Ok(_)))), "{f:?}");

    // While it streams, a second is refused before it reaches the upstream.
    let r = run.send(&gw).await;
    too_many(&r, "streams");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        r.header("ratelimit").as_deref(),
        Some(r#""streams";r=0;t=1"#)
    );
    // Another user's streams are counted apart.
    let bobs = up.add_thread("bob");
    let bob_path = format!("/threads/{bobs}/runs/stream");
    let _bob_frames = up.sse(Method::POST, &bob_path);
    let bob = req(Method::POST, bob_path)
        .auth(BOB)
        .json(&json!({"assistant_id": "agent"}))
        .send_streaming(&gw)
        .await;
    assert_eq!(bob.status(), 200);
    assert_eq!(reached(&up, &path), 1);

    // The upstream ends the stream: the slot is free again.
    drop(frames);
    let end = tokio::time::timeout(CLIENT_TIMEOUT, body.collect()).await;
    assert!(end.unwrap().is_ok());
    let frames = up.sse(Method::POST, &path);
    let second = stream_when_free(&gw, &run).await;
    assert_eq!(second.status(), 200);
    assert_eq!(reached(&up, &path), 2);
    too_many(&run.send(&gw).await, "streams");

    // The client goes away mid-stream (the upstream still streaming): the slot is free again.
    drop(second);
    let _frames = up.sse(Method::POST, &path);
    let third = stream_when_free(&gw, &run).await;
    assert_eq!(third.status(), 200);
    assert_eq!(reached(&up, &path), 3);
    drop(frames);
}

// ---------------------------------------------------------------------------------------------
// graphguard check
// ---------------------------------------------------------------------------------------------

/// `graphguard check` on a directory of these files; (success, output).
fn check(files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("authenticators.yaml"), AUTHENTICATORS).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graphguard"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A valid first limit, then `bad` as the second (lines 6 on): an error must name the second
/// entry's own line, not the first entry's line of the same key.
fn after_a_good_limit(bad: &str) -> String {
    format!(
        "limits:\n  - name: good\n    events: [threads:create]\n    key: \"{{user.identity}}\"\n    rate: {{ requests: 3, per: 1m }}\n{bad}"
    )
}

#[test]
fn check_places_each_bad_limit_at_its_file_line_and_key() {
    let (ok, out) = check(&[("limits.yaml", &after_a_good_limit(""))]);
    assert!(ok, "{out}");
    let cases = [
        (
            "  - name: typo\n    events: [threads:create]\n    rate: { requests: 3, per: 1m }\n    burst: 2\n",
            "limits.yaml:9: limits[1]",
            "unknown field `burst`",
        ),
        (
            "  - name: both\n    events: [threads:create]\n    rate: { requests: 3, per: 1m }\n    concurrent: 2\n",
            "limits.yaml:8: limits[1].rate:",
            "exactly one of rate and concurrent",
        ),
        (
            "  - name: zero\n    events: [threads:create]\n    rate: { requests: 0, per: 1m }\n",
            "limits.yaml:8: limits[1].rate.requests:",
            "at least 1",
        ),
        (
            "  - name: weekly\n    events: [threads:create]\n    rate: { requests: 3, per: 1w }\n",
            "limits.yaml:8: limits[1].rate.per:",
            "unknown unit",
        ),
        (
            "  - name: bogus\n    events: [threads:create, threads:frobnicate]\n    rate: { requests: 3, per: 1m }\n",
            "limits.yaml:7: limits[1].events[1]:",
            "frobnicate",
        ),
        (
            "  - name: roles\n    events: [threads:create]\n    key: \"{user.roles}\"\n    rate: { requests: 3, per: 1m }\n",
            "limits.yaml:8: limits[1].key:",
            "one value",
        ),
    ];
    for (bad, at, message) in cases {
        let (ok, out) = check(&[("limits.yaml", &after_a_good_limit(bad))]);
        assert!(!ok, "accepted:\n{bad}");
        let line = out
            .lines()
            .find(|l| l.contains("limits.yaml"))
            .unwrap_or_else(|| panic!("no error for\n{bad}\n{out}"));
        assert!(
            line.contains(at) && line.contains(message),
            "want {at} ... {message}, got:\n{out}"
        );
    }

    // A name given in two files: the second file's entry, at its own line.
    let runs = "limits:\n  - name: runs\n    events: [threads:create_run]\n    concurrent: 1\n";
    let again = "# more limits\nlimits:\n  - name: other\n    events: [threads:create]\n    concurrent: 1\n  - name: runs\n    events: [threads:create_run]\n    concurrent: 2\n";
    let (ok, out) = check(&[("a.yaml", runs), ("b.yaml", again)]);
    assert!(!ok);
    assert!(
        out.contains("b.yaml:6: limits[1].name: a limit named \"runs\" is already defined"),
        "{again}\n{out}"
    );
}
