//! Compare splicing `metadata` into a request body (`ObjectBody::parse` +
//! `merge_object_raw` + `splice`) against a full `serde_json::Value` round trip.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use graphguard::body::splice::{merge_object_raw, BodyError, ObjectBody};
use serde_json::{json, Map, Value};

/// A LangGraph-style run body of roughly `target` bytes; the bulk is in
/// `input.messages`, `metadata` is small.
fn body_of_size(target: usize) -> Vec<u8> {
    let mut messages = String::new();
    let mut i = 0usize;
    // Fixed overhead of the surrounding object is ~250 bytes.
    while messages.len() + 250 < target {
        if i > 0 {
            messages.push(',');
        }
        messages.push_str(&format!(
            "{{\"type\":\"human\",\"content\":\"message {i}: please summarise the \\\"quarterly\\\" report {{draft}} \\u00e9\",\"id\":\"m-{i}\",\"score\":{i}.25,\"tags\":[\"a\",\"b\"]}}"
        ));
        i += 1;
    }
    format!(
        "{{\"assistant_id\":\"agent\",\"input\":{{\"messages\":[{messages}]}},\
         \"metadata\":{{\"source\":\"web\",\"owner\":\"spoofed\"}},\
         \"config\":{{\"configurable\":{{\"thread_id\":\"3f1c\"}}}},\"stream_mode\":[\"values\"]}}"
    )
    .into_bytes()
}

fn owner_set() -> Map<String, Value> {
    Map::from_iter([("owner".to_owned(), json!("user-123"))])
}

fn via_splice(body: &[u8], set: &Map<String, Value>) -> Result<Vec<u8>, BodyError> {
    let parsed = ObjectBody::parse(body, 64)?;
    let merged = merge_object_raw(parsed.get_raw("metadata"), set)?;
    Ok(parsed.splice(&[("metadata", Some(&merged))]))
}

fn via_value(body: &[u8], set: &Map<String, Value>) -> Result<Vec<u8>, serde_json::Error> {
    let mut value: Value = serde_json::from_slice(body)?;
    if let Some(obj) = value.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if meta.is_null() {
            *meta = Value::Object(Map::new());
        }
        if let Some(meta) = meta.as_object_mut() {
            for (k, v) in set {
                meta.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::to_vec(&value)
}

fn bench_splice(c: &mut Criterion) {
    let set = owner_set();
    let mut group = c.benchmark_group("metadata_rewrite");
    for (label, size) in [
        ("300B", 300),
        ("200KB", 200 * 1024),
        ("5MB", 5 * 1024 * 1024),
    ] {
        let body = body_of_size(size);
        // Both paths must agree before we time them.
        let a = via_splice(&body, &set)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let b = via_value(&body, &set)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        assert!(
            a.is_some() && a == b,
            "splice and Value paths disagree for {label}"
        );

        group.throughput(Throughput::Bytes(body.len() as u64));
        if size >= 1024 * 1024 {
            group.sample_size(10);
        } else {
            group.sample_size(50);
        }
        group.bench_with_input(BenchmarkId::new("splice", label), &body, |bch, body| {
            bch.iter(|| via_splice(black_box(body), &set).map(|v| v.len()))
        });
        group.bench_with_input(
            BenchmarkId::new("value_roundtrip", label),
            &body,
            |bch, body| bch.iter(|| via_value(black_box(body), &set).map(|v| v.len())),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_splice);
criterion_main!(benches);
