//! Decision tests: every route-table op and the scenarios of docs/semantics.md §10, one behaviour
//! per test. Each test classifies a request, parses its body and runs the `decide` loop against
//! a fake upstream store, then checks the outcome, the rewritten request, the lookups made and
//! the handler calls (`steps`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::*;
use crate::error::{Delivery, GatewayError};
use crate::policy::filter::{FilterTemplate, ResolvedFilter};
use crate::policy::Policy;
use crate::routes::{check_path, classify, system_assistant_id, validate_params};
use crate::user::User;

mod access;
mod assistants;
mod crons;
mod identity;
mod routes;
mod runs;
mod store;
mod threads;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const ALICE_T: &str = "a11ce000-0000-4000-8000-000000000001";
const BOB_T: &str = "b0b00000-0000-4000-8000-000000000002";
const CAROL_T: &str = "ca501000-0000-4000-8000-000000000003";
const ADMIN_T: &str = "ad000000-0000-4000-8000-000000000004";
/// A thread id that does not exist upstream.
const NEW_T: &str = "0e000000-0000-4000-8000-000000000005";
const RUN: &str = "1ef1d1a5-3d6a-4a4e-9a57-2b1e1b1e1b1e";
const ALICE_A: &str = "a55a0000-0000-4000-8000-0000000000a1";
const ADMIN_A: &str = "a55a0000-0000-4000-8000-0000000000ad";
/// Bob's own assistant whose metadata claims `created_by: "system"`.
const BOB_FAKE_SYSTEM_A: &str = "b0b5a000-0000-4000-8000-0000000000b5";
/// An assistant id that does not exist upstream.
const MISSING_A: &str = "a0000000-0000-4000-8000-0000000000ff";
const ALICE_CRON: &str = "c0000000-0000-4000-8000-0000000000c1";
const MISSING_CRON: &str = "c0000000-0000-4000-8000-0000000000ff";

/// The graph `agent`'s default assistant.
fn system_a() -> String {
    system_assistant_id("agent").to_string()
}

/// The fake upstream: what `GET /threads/{id}` (etc.) returns; absent means 404.
type World = HashMap<Target, Option<Value>>;

fn world() -> World {
    let thread = |id: &str, md: Value| {
        (
            Target::Thread(id.into()),
            Some(json!({"thread_id": id, "metadata": md})),
        )
    };
    let assistant = |id: &str, md: Value| {
        (
            Target::Assistant(id.into()),
            Some(json!({"assistant_id": id, "graph_id": "agent", "metadata": md})),
        )
    };
    HashMap::from([
        thread(ALICE_T, json!({"owner": "alice", "topic": "t"})),
        thread(BOB_T, json!({"owner": "bob"})),
        thread(
            CAROL_T,
            json!({"owner": "carol", "participants": ["carol", "shared"]}),
        ),
        thread(ADMIN_T, json!({"owner": "admin"})),
        assistant(ALICE_A, json!({"owner": "alice"})),
        assistant(ADMIN_A, json!({"owner": "admin"})),
        assistant(&system_a(), json!({"created_by": "system"})),
        assistant(
            BOB_FAKE_SYSTEM_A,
            json!({"owner": "bob", "created_by": "system"}),
        ),
        (
            Target::Cron(ALICE_CRON.into()),
            Some(
                json!({"cron_id": ALICE_CRON, "thread_id": ALICE_T, "metadata": {"owner": "alice"}}),
            ),
        ),
    ])
}

fn user(id: &str) -> User {
    User {
        identity: id.into(),
        display_name: id.into(),
        ..User::default()
    }
}

/// The only user holding `assistants:create` (and the `admin` role).
fn admin() -> User {
    User {
        permissions: vec!["assistants:create".into()],
        roles: vec!["admin".into()],
        ..user("admin")
    }
}

fn example(name: &str) -> Policy {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name);
    Policy::load_dir(&dir).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()))
}

/// policies/owner: one global handler stamping and filtering `owner`.
fn owner() -> Policy {
    example("owner")
}
/// policies/resource: resource-specific handlers (assistants and crons denied, store namespace required).
fn resource() -> Policy {
    example("resource")
}
/// policies/participants: participants stamped at create, `$contains` filter elsewhere.
fn participants() -> Policy {
    example("participants")
}
/// policies/store-rewrite: store namespaces rewritten under the identity, owner isolation elsewhere.
fn store_rewrite() -> Policy {
    example("store-rewrite")
}

fn inline(yaml: &str) -> Policy {
    crate::policy::tests::policy(yaml)
}

/// A resolved filter from its JSON form (literal values).
fn filter(v: Value) -> ResolvedFilter {
    FilterTemplate::compile(&v)
        .unwrap()
        .render(&User::default())
        .unwrap()
}

/// The result of running the decide loop.
#[derive(Debug)]
struct Ran {
    decision: Decision,
    /// The request body (a spliced body refers to it).
    original: Vec<u8>,
    /// The lookups `decide` asked for, in order.
    needed: Vec<Target>,
}

/// Classify, validate, parse and decide `method uri` with `body` against the world.
fn try_run(
    p: &Policy,
    u: &User,
    method: Method,
    uri: &str,
    body: &str,
    w: &World,
) -> Result<Ran, GatewayError> {
    let (path, query) = match uri.split_once('?') {
        Some((path, q)) => (path, Some(q)),
        None => (uri, None),
    };
    check_path(path)?;
    let route = classify(&method, path)?;
    validate_params(&route)?;
    let input_bytes = body.as_bytes();
    let body = parse_body(&route, input_bytes)?;
    let input = Input {
        route: &route,
        query,
        body: &body,
    };
    let mut facts = Facts::default();
    let mut needed = Vec::new();
    for _ in 0..32 {
        match decide(p, u, &input, &facts) {
            Next::Done(decision) => {
                return Ok(Ran {
                    decision,
                    original: input_bytes.to_vec(),
                    needed,
                })
            }
            Next::Need(t) => {
                assert!(
                    !needed.contains(&t),
                    "{method} {uri}: asked twice for {t:?}"
                );
                let v = w.get(&t).cloned().flatten().map(Arc::new);
                facts.insert(t.clone(), v);
                needed.push(t);
            }
        }
    }
    panic!("{method} {uri}: the decision loop did not finish");
}

fn run(p: &Policy, u: &User, method: Method, uri: &str, body: &str) -> Ran {
    try_run(p, u, method.clone(), uri, body, &world())
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
}

fn get(p: &Policy, u: &User, uri: &str) -> Ran {
    run(p, u, Method::GET, uri, "")
}
fn post(p: &Policy, u: &User, uri: &str, body: &str) -> Ran {
    run(p, u, Method::POST, uri, body)
}
fn patch(p: &Policy, u: &User, uri: &str, body: &str) -> Ran {
    run(p, u, Method::PATCH, uri, body)
}
fn delete(p: &Policy, u: &User, uri: &str) -> Ran {
    run(p, u, Method::DELETE, uri, "")
}
fn put(p: &Policy, u: &User, uri: &str, body: &str) -> Ran {
    run(p, u, Method::PUT, uri, body)
}

impl Ran {
    fn forward(&self) -> &Forward {
        match &self.decision.outcome {
            Outcome::Forward(f) => f,
            o => panic!("expected a forward, got {o:?}"),
        }
    }
    fn refusal(&self) -> &GatewayError {
        match &self.decision.outcome {
            Outcome::Refuse(e) => e,
            o => panic!("expected a refusal, got {o:?}"),
        }
    }
    fn reply(&self) -> &Reply {
        match &self.decision.outcome {
            Outcome::Reply(r) => r,
            o => panic!("expected a reply, got {o:?}"),
        }
    }
    /// The rewritten body, as sent.
    fn sent(&self) -> Vec<u8> {
        let new = self.forward().body.as_ref().expect("a rewritten body");
        new.bytes(&self.original).into_owned()
    }
    /// The rewritten body, parsed.
    fn body(&self) -> Value {
        serde_json::from_slice(&self.sent()).expect("the rewritten body is JSON")
    }
    /// The events raised, as `resource:action`.
    fn events(&self) -> Vec<String> {
        self.decision
            .steps
            .iter()
            .map(|s| s.event.to_string())
            .collect()
    }
    /// The handler keys that ran (`-` for none).
    fn handlers(&self) -> Vec<String> {
        self.decision
            .steps
            .iter()
            .map(|s| s.handler.as_deref().unwrap_or("-").to_owned())
            .collect()
    }
    /// Assert a JSON refusal with this status and detail.
    fn assert_refused(&self, status: u16, detail: &str) {
        let e = self.refusal();
        assert_eq!((e.status.as_u16(), e.detail.as_str()), (status, detail));
        assert_eq!(e.delivery, Delivery::Json, "expected a JSON error");
    }
    /// Assert a plain forward: original body and query, streamed response.
    fn assert_plain_forward(&self) {
        let f = self.forward();
        assert_eq!(f.body, None, "body rewritten");
        assert_eq!(f.query, None, "query rewritten");
        assert_eq!(f.response, ResponsePlan::Stream);
        assert!(f.authenticated);
    }
}

fn thread(id: &str) -> Target {
    Target::Thread(id.into())
}
fn assistant(id: &str) -> Target {
    Target::Assistant(id.into())
}
fn cron(id: &str) -> Target {
    Target::Cron(id.into())
}
