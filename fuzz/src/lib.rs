//! Properties checked by the fuzz targets (`fuzz_targets/*.rs`, one per function here) and by
//! the random-input driver in `tests` below (stable toolchain, no libFuzzer).
//!
//! Every function takes arbitrary bytes, must never panic except on a broken property, and
//! panics with a message naming the property when one breaks:
//!
//! * [`routes`]: `check_path` accepts only canonical paths (nothing a normalizer would change,
//!   nothing a decoder would decode), the path survives `http::Uri` byte for byte, and
//!   `classify` returns the row whose template rebuilds exactly that path.
//! * [`splice`]: `ObjectBody::parse` accepts exactly the JSON objects serde_json accepts (minus
//!   duplicates and depth), `splice` equals a full-parse rewrite and copies untouched members
//!   byte for byte, and a stamped `metadata` holds exactly the stamped values, once.
//! * [`config`]: a policy file never panics the loader or the compiled policy's evaluation.
//! * [`filter`]: compiled filters never panic, and `split_pushable` is exact: the pushed
//!   equalities and the rest together match what the whole filter matches.
//! * [`decide`]: the whole decision loop, from a route of the table with an arbitrary query
//!   and body, under every example policy, with looked-up facts chosen by the input: it ends,
//!   never asks for the same fact twice, and what it forwards is valid JSON whose stamped
//!   owner is the caller's.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use graphguard::decide::{self, Facts, Input, Next, Outcome, Target};
use graphguard::event::Event;
use graphguard::policy::filter::{py_eq, FilterTemplate};
use graphguard::policy::Policy;
use graphguard::body::splice::{merge_object_raw, BodyError, ObjectBody};
use graphguard::routes::{self, Op, TABLE};
use graphguard::user::User;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

/// A cursor over the fuzz input.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    /// The next `n` bytes (fewer at the end).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// RFC 3986 section 5.2.4, the normalization a server or framework may apply.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let n = segs.len();
    for (i, s) in segs.into_iter().enumerate() {
        match s {
            "." => {
                if i + 1 == n {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i + 1 == n {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The id reader (`graphguard::ids`): `read` agrees with `py_uuid`, the canonical spelling
/// round-trips, and on ASCII input `py_uuid` agrees with a second, literal model of CPython's
/// `uuid.UUID(text)` (`int(text, 16)` read by its grammar rather than byte by byte).
pub fn ids(data: &[u8]) {
    use graphguard::ids::{py_uuid, read, IdForm};
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = py_uuid(s);
    match read(s) {
        IdForm::Canonical(u) => {
            assert_eq!(u.to_string(), s);
            assert_eq!(parsed, Some(u));
        }
        IdForm::Variant(u) => {
            assert_eq!(parsed, Some(u));
            assert_ne!(u.to_string(), s);
        }
        IdForm::NotUuid => assert_eq!(parsed, None, "{s:?}"),
    }
    if let Some(u) = parsed {
        assert_eq!(read(&u.to_string()), IdForm::Canonical(u));
    }
    if s.is_ascii() {
        assert_eq!(parsed.map(|u| u.as_u128()), model_py_uuid(s), "{s:?}");
    }
}

/// CPython's `uuid.UUID(hex=s)` for ASCII `s`, written from the language reference's grammar
/// for integer literals: white space, sign, `0x`, digits grouped by single underscores.
fn model_py_uuid(s: &str) -> Option<u128> {
    let s = s.replace("urn:", "").replace("uuid:", "");
    let s = s.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    if s.len() != 32 {
        return None;
    }
    let t = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'));
    let (negative, t) = match t.as_bytes().first() {
        Some(b'+') => (false, &t[1..]),
        Some(b'-') => (true, &t[1..]),
        _ => (false, t),
    };
    let t = match t.get(..2) {
        Some("0x" | "0X") => t[2..].strip_prefix('_').unwrap_or(&t[2..]),
        _ => t,
    };
    let groups: Vec<&str> = t.split('_').collect();
    if groups
        .iter()
        .any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let v = u128::from_str_radix(&groups.concat(), 16).ok()?;
    (!negative || v == 0).then_some(v)
}

/// Route classification and the strict path check.
pub fn routes(data: &[u8]) {
    let mut b = Bytes(data);
    let method = METHODS[usize::from(b.byte()) % METHODS.len()].clone();
    let Ok(path) = std::str::from_utf8(b.rest()) else {
        return;
    };
    // classify must not panic on anything, checked or not.
    let _ = routes::classify(&method, path);
    match routes::check_path(path) {
        Err(e) => {
            assert!(
                e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::URI_TOO_LONG,
                "check_path refused {path:?} with {}",
                e.status
            );
            let body: Value = serde_json::from_slice(&e.json_body()).unwrap_or(Value::Null);
            assert!(body["detail"].is_string(), "refusal body {body}");
        }
        Ok(()) => {
            assert!(
                path.len() <= 2048,
                "accepted a path of {} bytes",
                path.len()
            );
            assert!(path.starts_with('/'), "accepted {path:?}");
            for c in path.bytes() {
                assert!(
                    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&c),
                    "accepted byte {c:#x} in {path:?}"
                );
            }
            // Canonical: a normalizer changes nothing, a decoder decodes nothing.
            assert_eq!(remove_dot_segments(path), path, "dot segments in {path:?}");
            let inner = path.strip_suffix('/').unwrap_or(path);
            assert!(
                path == "/" || !inner.get(1..).unwrap_or("").split('/').any(str::is_empty),
                "empty segment in {path:?}"
            );
            // Forwarded byte for byte: the upstream URI keeps exactly this path.
            let uri = http::Uri::builder()
                .scheme("http")
                .authority("127.0.0.1:2024")
                .path_and_query(path)
                .build();
            match uri {
                Ok(u) => assert_eq!(u.path(), path, "Uri changed the path"),
                Err(e) => panic!("accepted path {path:?} is not a valid URI path: {e}"),
            }
            if let Ok(m) = routes::classify(&method, path) {
                let want = if method == Method::HEAD {
                    Method::GET
                } else {
                    method.clone()
                };
                assert_eq!(
                    m.route.method, want,
                    "{path:?} matched another method's row"
                );
                let rebuilt = rebuild(m.route.template, path);
                assert_eq!(
                    rebuilt.as_deref(),
                    Some(path),
                    "{path:?} matched template {}",
                    m.route.template
                );
                if routes::validate_params(&m).is_ok() {
                    for id in [&m.params.thread_id, &m.params.run_id, &m.params.cron_id]
                        .into_iter()
                        .flatten()
                    {
                        assert!(
                            graphguard::ids::is_canonical(id),
                            "non-canonical id {id:?} validated"
                        );
                    }
                }
            }
        }
    }
}

/// Substitute the path's own segments into a template; `None` if a literal differs.
fn rebuild(template: &str, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let mut out = String::new();
    for (i, seg) in template.split('/').skip(1).enumerate() {
        if seg == "{*rest}" {
            out.push('/');
            out.push_str(&parts.get(i..)?.join("/"));
            return Some(out);
        }
        let p = parts.get(i)?;
        if !(seg.starts_with('{') || seg == *p) {
            return None;
        }
        out.push('/');
        out.push_str(p);
    }
    (template.split('/').count() == path.split('/').count()).then_some(out)
}

const KEYS: [&str; 10] = [
    "metadata",
    "limit",
    "offset",
    "filter",
    "thread_id",
    "a",
    "m\u{0}",
    "é",
    "",
    "owner",
];
const VALUES: [&str; 8] = [
    "1",
    "null",
    "\"x\"",
    "{\"owner\":\"alice\"}",
    "[1,2]",
    "true",
    "-0.5e3",
    "{}",
];

/// Nesting depth of valid JSON text (the top-level value counts 1).
fn depth(v: &Value) -> usize {
    // Iterative, like the code under test.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(o) => {
                max = max.max(d);
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            _ => max = max.max(d - 1),
        }
    }
    max
}

/// The body splicer against a full parse.
pub fn splice(data: &[u8]) {
    let mut b = Bytes(data);
    let n = usize::from(b.byte() % 5);
    let mut edits: Vec<(&str, Option<&[u8]>)> = Vec::new();
    for _ in 0..n {
        let k = KEYS[usize::from(b.byte()) % KEYS.len()];
        let v = b.byte();
        let value = (v % 9 != 8).then(|| VALUES[usize::from(v) % VALUES.len()].as_bytes());
        edits.push((k, value));
    }
    let body = b.rest();
    let max_depth = decide::MAX_JSON_DEPTH;
    let full: Result<Value, _> = serde_json::from_slice(body);
    // Valid JSON text serde_json cannot hold as a Value (numbers like 1e400, lone surrogate
    // escapes like "\ude00", both read by Python) is copied, never read: there is no full
    // parse to compare with.
    if let Err(e) = &full {
        let msg = e.to_string();
        if msg.starts_with("number out of range")
            || msg.contains("surrogate")
            || msg.starts_with("unexpected end of hex escape")
        {
            // The scanner must still accept exactly what serde_json's validating skip does.
            let valid = std::str::from_utf8(body)
                .is_ok_and(|t| serde_json::from_str::<&serde_json::value::RawValue>(t).is_ok());
            match ObjectBody::parse(body, max_depth) {
                // A key (top level or in `metadata`) with a lone surrogate escape is refused on
                // purpose: keys are compared after unescaping, which needs valid text.
                Err(BodyError::InvalidJson(msg)) => assert!(
                    !valid || msg.starts_with("key with an unpaired surrogate"),
                    "ObjectBody refused JSON serde_json accepts ({msg}): {:?}",
                    String::from_utf8_lossy(body)
                ),
                Ok(o) => {
                    assert!(
                        valid,
                        "ObjectBody accepted invalid JSON: {:?}",
                        String::from_utf8_lossy(body)
                    );
                    let _ = o.splice(&edits);
                }
                Err(_) => {}
            }
            return;
        }
    }
    let parsed = ObjectBody::parse(body, max_depth);
    let o = match parsed {
        Err(BodyError::InvalidJson(msg)) => {
            assert!(
                full.is_err(),
                "ObjectBody refused JSON serde_json accepts ({msg}): {:?}",
                String::from_utf8_lossy(body)
            );
            return;
        }
        Err(BodyError::NotAnObject) => {
            assert!(
                full.as_ref().is_ok_and(|v| !v.is_object()),
                "NotAnObject for {:?}",
                String::from_utf8_lossy(body)
            );
            return;
        }
        Err(BodyError::TooDeep) => {
            if let Ok(v) = &full {
                assert!(depth(v) > max_depth, "TooDeep at depth {}", depth(v));
            }
            return;
        }
        Err(BodyError::DuplicateKey(_)) => {
            assert!(full.is_ok(), "DuplicateKey reported for invalid JSON");
            return;
        }
        Ok(o) => o,
    };
    let Ok(Value::Object(orig)) = full else {
        panic!(
            "ObjectBody accepted what serde_json does not read as an object: {:?}",
            String::from_utf8_lossy(body)
        );
    };
    assert!(depth(&Value::Object(orig.clone())) <= max_depth);

    // splice == full-parse rewrite (values and key order), untouched members byte for byte.
    let out = o.splice(&edits);
    // The documented semantics: the last edit of a key wins, new keys are appended in the
    // order of their first appearance.
    let mut table: Vec<(&str, Option<&[u8]>)> = Vec::new();
    for (k, v) in &edits {
        match table.iter_mut().find(|(e, _)| e == k) {
            Some(slot) => slot.1 = *v,
            None => table.push((k, *v)),
        }
    }
    let mut expect = orig.clone();
    let mut order: Vec<String> = orig.keys().cloned().collect();
    for (k, v) in &table {
        match v {
            Some(raw) => {
                let val: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
                if !expect.contains_key(*k) {
                    order.push((*k).to_string());
                }
                expect.insert((*k).to_string(), val);
            }
            None => {
                expect.shift_remove(*k);
                order.retain(|x| x != k);
            }
        }
    }
    let got: Value = match serde_json::from_slice(&out) {
        Ok(v) => v,
        Err(e) => panic!(
            "spliced body is not JSON ({e}): {:?} from {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(body)
        ),
    };
    assert_eq!(
        got,
        Value::Object(expect),
        "splice differs from a full rewrite"
    );
    let got_order: Vec<String> = got
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(got_order, order, "splice changed the key order");
    let reparsed = match ObjectBody::parse(&out, max_depth) {
        Ok(r) => r,
        Err(e) => panic!("spliced body does not re-parse: {e}"),
    };
    for k in o.keys() {
        if !edits.iter().any(|(e, _)| e == &k) {
            assert_eq!(
                reparsed.get_raw(k),
                o.get_raw(k),
                "member {k:?} was not copied"
            );
        }
    }

    // Stamping metadata: exactly the stamped values, once, other keys kept.
    let mut set = Map::new();
    set.insert("owner".into(), json!("alice"));
    set.insert("n".into(), json!(1));
    let md_raw = o.get_raw("metadata");
    let merged = merge_object_raw(md_raw, &set);
    let md_orig = orig.get("metadata");
    match merged {
        Err(e) => assert!(
            md_orig.is_some_and(|m| !m.is_object() && !m.is_null()),
            "stamping failed ({e}) on metadata {md_orig:?}"
        ),
        Ok(merged) => {
            assert!(
                md_orig.is_none_or(|m| m.is_object() || m.is_null()),
                "stamped non-object metadata {md_orig:?}"
            );
            let stamped = o.splice(&[("metadata", Some(&merged))]);
            let again = match ObjectBody::parse(&stamped, max_depth + 1) {
                Ok(a) => a,
                Err(e) => panic!(
                    "stamped body does not parse ({e}): {:?}",
                    String::from_utf8_lossy(&stamped)
                ),
            };
            let md: Map<String, Value> = match again.get::<Value>("metadata") {
                Ok(Some(Value::Object(m))) => m,
                other => panic!("stamped metadata is {other:?}"),
            };
            assert_eq!(md.get("owner"), Some(&json!("alice")));
            assert_eq!(md.get("n"), Some(&json!(1)));
            if let Some(Value::Object(before)) = md_orig {
                for (k, v) in before {
                    if !set.contains_key(k) {
                        assert_eq!(md.get(k), Some(v), "metadata key {k:?} lost");
                    }
                }
                let extra = set.keys().filter(|k| !before.contains_key(*k)).count();
                assert_eq!(md.len(), before.len() + extra);
            } else {
                assert_eq!(md.len(), 2);
            }
        }
    }
}

/// A fixed user with attributes for templates.
fn user(identity: &str, roles: &[&str]) -> User {
    let mut attributes = Map::new();
    attributes.insert("org".into(), json!("acme"));
    User {
        identity: identity.into(),
        display_name: identity.into(),
        permissions: vec!["threads:create".into(), "assistants:create".into()],
        roles: roles.iter().map(|r| (*r).to_string()).collect(),
        attributes,
        ..User::default()
    }
}

/// The policy file loader and the compiled policy's evaluation.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path under which no key file can exist, so relative key files fail to load.
    let path = PathBuf::from("/nonexistent-graphguard-fuzz/policy.yaml");
    let Ok(file) = graphguard::policy::config::parse_file(&path, text) else {
        return;
    };
    let Ok(policy) = Policy::compile(&[(path, text.to_string(), file)]) else {
        return;
    };
    assert!(!policy.version.is_empty());
    let u = user("alice", &["admin", "user"]);
    let md: Map<String, Value> = Map::new();
    for e in Event::all() {
        let _ = policy.handler_for(e);
        let _ = policy.evaluate(e, &u);
        let _ = policy.access.decide(&u, e, &md);
    }
}

/// Up to two JSON values from the input (filter, metadata).
fn two_values(data: &[u8]) -> (Option<Value>, Option<Value>) {
    let mut it = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let a = it.next().and_then(Result::ok);
    let b = it.next().and_then(Result::ok);
    (a, b)
}

/// LangGraph's filter language and the access-policy evaluator.
pub fn filter(data: &[u8]) {
    let (f, md) = two_values(data);
    let Some(f) = f else { return };
    let md = match md {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let u = user("alice", &["annotator-team-a"]);
    if let Ok(t) = FilterTemplate::compile(&f) {
        if let Ok(r) = t.render(&u) {
            let m = r.matches(&md);
            assert_eq!(m, r.matches(&md), "matches is not deterministic");
            let (push, rest) = r.split_pushable();
            let pushed = push
                .iter()
                .all(|(k, v)| md.get(*k).is_some_and(|x| py_eq(x, v)));
            let rest_ok = rest.as_ref().is_none_or(|x| x.matches(&md));
            assert_eq!(
                m,
                pushed && rest_ok,
                "split_pushable is not exact for {f} on {md:?}"
            );
            if r.is_empty() {
                assert!(m, "an empty filter must match everything");
            }
        }
    }
    // py_eq: reflexive and symmetric.
    for (_, v) in md.iter().take(8) {
        assert!(py_eq(v, v), "py_eq not reflexive on {v}");
        assert_eq!(py_eq(v, &f), py_eq(&f, v), "py_eq not symmetric");
    }
    // Access policies (policies/abac) on these tags: deterministic, never a panic.
    let abac = &POLICIES[4].1;
    for e in Event::all() {
        let a = abac.access.decide(&u, e, &md);
        let b = abac.access.decide(&u, e, &md);
        assert_eq!(a.allowed, b.allowed, "access decision not deterministic");
    }
}

fn policy_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("policies")
        .join(name)
}

/// The example policies, loaded once.
static POLICIES: LazyLock<Vec<(&'static str, Policy)>> = LazyLock::new(|| {
    ["owner", "resource", "participants", "store-rewrite", "abac"]
        .into_iter()
        .filter_map(|n| Policy::load_dir(&policy_dir(n)).ok().map(|p| (n, p)))
        .collect()
});

const IDS: [&str; 6] = [
    "6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e",
    "6F1D1A52-3D6A-4A4E-9A57-2B1E1B1E1B1E",
    "6f1d1a523d6a4a4e9a572b1e1b1e1b1e",
    "agent",
    "fe096781-5601-53d2-b2f6-0d3403f7e9ca",
    "x",
];

const IDENTITIES: [(&str, &[&str]); 5] = [
    ("alice", &["annotator-team-a"]),
    ("bob", &["engineer"]),
    ("carol", &["consultant"]),
    ("admin", &["admin"]),
    ("", &[]),
];

/// A looked-up resource as the input chooses it.
fn fact(b: &mut Bytes<'_>, t: &Target) -> Option<Arc<Value>> {
    let c = b.byte();
    let owner = match c % 5 {
        0 => return None,
        1 => json!("alice"),
        2 => json!("bob"),
        3 => json!(["alice", "shared"]),
        _ => json!(1),
    };
    let md = json!({"owner": owner, "participants": ["alice", "shared"], "Team": "Team-A"});
    Some(Arc::new(match t {
        Target::StoreItem(ns, k) => {
            json!({"namespace": ns.split('.').collect::<Vec<_>>(), "key": k, "value": md})
        }
        _ => json!({"metadata": md, "thread_id": IDS[0], "assistant_id": IDS[0]}),
    }))
}

/// The whole decision loop on an arbitrary query and body.
pub fn decide(data: &[u8]) {
    let mut b = Bytes(data);
    let policies = &*POLICIES;
    if policies.is_empty() {
        return;
    }
    let (pname, policy) = &policies[usize::from(b.byte()) % policies.len()];
    let route = &TABLE[usize::from(b.byte()) % TABLE.len()];
    let (identity, roles) = IDENTITIES[usize::from(b.byte()) % IDENTITIES.len()];
    let u = user(identity, roles);
    let mut path = String::new();
    for seg in route.template.split('/').skip(1) {
        path.push('/');
        if seg.starts_with('{') {
            path.push_str(IDS[usize::from(b.byte()) % IDS.len()]);
        } else {
            path.push_str(seg);
        }
    }
    if routes::check_path(&path).is_err() {
        return;
    }
    let Ok(m) = routes::classify(&route.method, &path) else {
        panic!("{} {path} does not classify", route.method);
    };
    if routes::validate_params(&m).is_err() {
        return;
    }
    let qlen = usize::from(b.byte() % 64);
    let query = std::str::from_utf8(b.take(qlen)).ok();
    // Facts come from the first bytes after the query; the body is the rest.
    let fact_bytes = b.take(8);
    let raw = b.rest();
    let Ok(body) = decide::parse_body(&m, raw) else {
        return;
    };
    let input = Input {
        route: &m,
        query,
        body: &body,
    };
    let mut fb = Bytes(fact_bytes);
    let mut facts = Facts::default();
    let mut asked: Vec<Target> = Vec::new();
    let decision = loop {
        match decide::decide(policy, &u, &input, &facts) {
            Next::Done(d) => break d,
            Next::Need(t) => {
                assert!(
                    !asked.contains(&t),
                    "{pname}: {} {path} asked for {t:?} twice",
                    route.method
                );
                assert!(asked.len() < 16, "{pname}: too many lookups");
                let f = fact(&mut fb, &t);
                asked.push(t.clone());
                facts.insert(t, f);
            }
        }
    };
    match &decision.outcome {
        Outcome::Refuse(e) => {
            assert!(
                e.status.is_client_error() || e.status.is_server_error() || e.status.is_success(),
                "refusal status {}",
                e.status
            );
        }
        Outcome::Reply(r) => {
            assert!(
                serde_json::from_slice::<Value>(&r.body).is_ok(),
                "reply not JSON"
            );
        }
        Outcome::Forward(f) => {
            if let Some(new) = &f.body {
                let out: &[u8] = &new.bytes(raw);
                let v: Value = match serde_json::from_slice(out) {
                    Ok(v) => v,
                    Err(e) => panic!(
                        "{pname}: {} {path}: forwarded body not JSON ({e}): {:?}",
                        route.method,
                        String::from_utf8_lossy(out)
                    ),
                };
                // The owner policy stamps the caller on every create and update body it
                // rewrites, exactly once.
                let stamps = matches!(
                    m.route.op,
                    Op::ThreadCreate | Op::ThreadPatch | Op::AssistantCreate
                ) || matches!(m.route.op, Op::RunCreate { .. });
                if *pname == "owner" && stamps && v.is_object() {
                    let md = ObjectBody::parse(out, decide::MAX_JSON_DEPTH + 1)
                        .ok()
                        .and_then(|o| o.get::<Value>("metadata").ok().flatten());
                    assert_eq!(
                        md.as_ref().and_then(|m| m.get("owner")),
                        Some(&json!(identity)),
                        "{} {path}: forwarded metadata {md:?}",
                        route.method
                    );
                }
            }
            if *pname == "owner" && !matches!(m.route.op, Op::Public | Op::Unmediated(_)) {
                assert!(f.authenticated, "forward without the user");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The targets on random inputs: a small xorshift generator, structured seeds mutated
    //! byte by byte, and a time budget (`FUZZ_SECONDS`, default 2 s per target).
    use super::*;
    use std::time::{Duration, Instant};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const ALPHABET: &[u8] = b"{}[]\":,\\/.%;-_ 0123456789abcdeflmnortu$eE+\x00\n\t\xc3\xa9\xff";

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=rng.below(6) {
            let pos = rng.below(v.len() + 1);
            match rng.below(5) {
                0 if !v.is_empty() => {
                    let p = pos.min(v.len() - 1);
                    v.remove(p);
                }
                1 => v.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
                2 if !v.is_empty() => {
                    let p = pos.min(v.len() - 1);
                    v[p] = (rng.next() & 0xff) as u8;
                }
                3 if !v.is_empty() => {
                    // Duplicate a slice (nesting, repeated keys).
                    let a = rng.below(v.len());
                    let b = (a + rng.below(16)).min(v.len());
                    let piece: Vec<u8> = v[a..b].to_vec();
                    let at = rng.below(v.len() + 1);
                    v.splice(at..at, piece);
                }
                _ => v.insert(pos, (rng.next() & 0xff) as u8),
            }
        }
        v
    }

    fn seeds(dir: &str) -> Vec<Vec<u8>> {
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(dir);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(d)
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Vec::new());
        out
    }

    fn budget() -> Duration {
        let s: f64 = std::env::var("FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0);
        Duration::from_secs_f64(s)
    }

    fn run(name: &str, f: fn(&[u8])) {
        let seeds = seeds(name);
        for s in &seeds {
            f(s);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let started = Instant::now();
        let mut execs = 0u64;
        let mut corpus = seeds;
        while started.elapsed() < budget() {
            let base = corpus[rng.below(corpus.len())].clone();
            let input = mutate(&mut rng, &base);
            if std::panic::catch_unwind(|| f(&input)).is_err() {
                panic!(
                    "{name}: property broken on input {:?} (bytes {input:?})",
                    String::from_utf8_lossy(&input)
                );
            }
            execs += 1;
            if execs.is_multiple_of(64) && corpus.len() < 4096 {
                corpus.push(input);
            }
        }
        eprintln!("{name}: {execs} random inputs, no property broken");
    }

    #[test]
    fn ids_random() {
        run("ids", ids);
    }
    #[test]
    fn routes_random() {
        run("routes", routes);
    }
    #[test]
    fn splice_random() {
        run("splice", splice);
    }
    #[test]
    fn config_random() {
        run("config", config);
    }
    #[test]
    fn filter_random() {
        run("filter", filter);
    }
    #[test]
    fn decide_random() {
        run("decide", decide);
    }
}
