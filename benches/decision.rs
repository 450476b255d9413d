#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The decision path: route classification, handler resolution, filters, access policies at
//! 10 to 10,000 policies, and the whole decision for typical requests.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use graphguard::decide::{decide_with_cache, parse_body, Facts, Input, Next, Target};
use graphguard::event::{Action, Event, Resource};
use graphguard::policy::access::{AccessControl, AccessPolicyConfig};
use graphguard::policy::Policy;
use graphguard::routes::{check_path, classify};
use graphguard::user::User;
use http::Method;
use serde_json::json;

const TID: &str = "6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e";

fn owner_policy() -> Policy {
    Policy::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/owner"))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn alice() -> User {
    User {
        identity: "alice".into(),
        display_name: "Alice".into(),
        ..User::default()
    }
}

fn routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (m, p) in [
        (Method::GET, "/ok".to_string()),
        (Method::POST, "/threads/search".to_string()),
        (Method::GET, format!("/threads/{TID}")),
        (Method::POST, format!("/threads/{TID}/runs/stream")),
        (Method::POST, "/store/namespaces".to_string()),
    ] {
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{m} {p}")),
            &(m, p),
            |b, (m, p)| {
                b.iter(|| {
                    check_path(black_box(p)).ok();
                    classify(black_box(m), black_box(p)).ok()
                })
            },
        );
    }
    g.finish();
}

fn handlers(c: &mut Criterion) {
    let p = owner_policy();
    let u = alice();
    let ev = Event::new(Resource::Threads, Action::Read);
    c.bench_function("handler/evaluate owner filter", |b| {
        b.iter(|| p.evaluate(black_box(ev), black_box(&u)).ok())
    });
    let g = p
        .evaluate(ev, &u)
        .ok()
        .and_then(|g| g.filter)
        .unwrap_or_else(|| panic!("filter"));
    let md = json!({"owner": "alice", "topic": "x", "n": 3})
        .as_object()
        .cloned()
        .unwrap_or_default();
    c.bench_function("filter/match owner", |b| {
        b.iter(|| g.matches(black_box(&md)))
    });
}

fn abac(c: &mut Criterion) {
    let mut g = c.benchmark_group("abac/decide");
    for n in [10usize, 100, 1_000, 10_000] {
        // n policies spread over every permission; only n/21 can match threads:read.
        let perms: Vec<(String, &str)> = Event::all()
            .map(|e| {
                let rt = match e.resource {
                    Resource::Threads => "thread",
                    Resource::Assistants => "assistant",
                    Resource::Crons => "cron",
                    Resource::Store => "store_item",
                };
                (e.to_string(), rt)
            })
            .collect();
        let policies: Vec<AccessPolicyConfig> = (0..n)
            .map(|i| {
                let (perm, rt) = &perms[i % perms.len()];
                serde_json::from_value(json!({
                    "name": format!("p{i}"),
                    "effect": if i % 7 == 0 { "deny" } else { "allow" },
                    "role_ids": [format!("role{}", i % 5)],
                    "condition_groups": [{"permission": perm, "resource_type": rt, "conditions": [
                        {"attribute_name": "resource_tag_key", "attribute_key": "Team", "operator": if i % 2 == 0 { "equals" } else { "matches" }, "attribute_value": format!("team-{i}*")}
                    ]}]
                }))
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let mut roles = std::collections::HashMap::new();
        for r in 0..5 {
            roles.insert(format!("role{r}"), vec!["threads:search".to_string()]);
        }
        let ac =
            AccessControl::compile(Some(&roles), &policies).unwrap_or_else(|e| panic!("{e:?}"));
        let u = User {
            identity: "u".into(),
            roles: vec!["role1".into()],
            ..User::default()
        };
        let md = json!({"Team": "team-42x", "Env": "prod"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ev = Event::new(Resource::Threads, Action::Read);
        g.bench_with_input(BenchmarkId::new("explained", n), &n, |b, _| {
            b.iter(|| ac.decide(black_box(&u), ev, black_box(&md)))
        });
        g.bench_with_input(BenchmarkId::new("fast", n), &n, |b, _| {
            b.iter(|| ac.allows(black_box(&u), ev, black_box(&md)))
        });
    }
    g.finish();
}

/// API-key authentication (SHA-256 of the key, looked up by digest);
/// ready at once, polled without a runtime.
fn authenticated(p: &Policy, headers: &http::HeaderMap) -> Arc<User> {
    let fut = graphguard::authn::authenticate(&p.authenticators, headers);
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(u)) => u,
        other => panic!("authentication: {other:?}"),
    }
}

fn whole(c: &mut Criterion) {
    let p = owner_policy();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer alice-demo-key"),
    );
    let thread = Arc::new(json!({"thread_id": TID, "metadata": {"owner": "alice"}}));
    let mut g = c.benchmark_group("decision");
    let cases: Vec<(&str, Method, String, &[u8])> = vec![
        ("get own thread (warm lookup)", Method::GET, format!("/threads/{TID}"), b""),
        ("search with filter injection (300 B)", Method::POST, "/threads/search".into(), br#"{"metadata":{"owner":"bob","topic":"weather"},"status":"idle","limit":10,"offset":0,"sort_by":"created_at","sort_order":"desc","select":null,"values":{"k":"v"}}"#),
        ("thread create with stamping (300 B)", Method::POST, "/threads".into(), br#"{"metadata":{"owner":"bob","topic":"weather","project":"alpha","tags":["a","b"]},"if_exists":"raise","ttl":null,"supersteps":null}"#),
    ];
    for (name, m, path, body) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let u = authenticated(&p, &headers);
                check_path(&path).unwrap_or_else(|e| panic!("{e}"));
                let rm = classify(&m, &path).unwrap_or_else(|e| panic!("{e}"));
                let parsed = parse_body(&rm, body).unwrap_or_else(|e| panic!("{e}"));
                let input = Input {
                    route: &rm,
                    query: None,
                    body: &parsed,
                };
                let mut facts = Facts::default();
                // A warm lookup cache: the thread is found without I/O.
                let cached =
                    |t: &Target| matches!(t, Target::Thread(_)).then(|| Some(thread.clone()));
                loop {
                    match decide_with_cache(&p, &u, &input, &facts, &cached) {
                        Next::Done(d) => break black_box(d),
                        Next::Need(t) => {
                            let f = matches!(t, Target::Thread(_)).then(|| thread.clone());
                            facts.insert(t, f);
                        }
                    }
                }
            })
        });
    }
    g.finish();
}

/// The parts of the whole decision, to see where its time goes.
fn parts(c: &mut Criterion) {
    let p = owner_policy();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer alice-demo-key"),
    );
    c.bench_function("part/authenticate api key", |b| {
        b.iter(|| black_box(authenticated(&p, &headers)))
    });
    let body: &[u8] = br#"{"metadata":{"owner":"bob","topic":"weather"},"status":"idle","limit":10,"offset":0,"sort_by":"created_at","sort_order":"desc","select":null,"values":{"k":"v"}}"#;
    let rm = classify(&Method::POST, "/threads/search").unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("part/parse search body (300 B)", |b| {
        b.iter(|| black_box(parse_body(&rm, black_box(body)).is_ok()))
    });
}

criterion_group!(benches, routes, handlers, abac, whole, parts);
criterion_main!(benches);
