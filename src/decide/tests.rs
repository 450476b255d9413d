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

// ---------------------------------------------------------------------------------------------
// Public, blocked and unmediated routes
// ---------------------------------------------------------------------------------------------

#[test]
fn public_route_is_forwarded_unauthenticated_without_handlers() {
    let r = get(&owner(), &user("alice"), "/ok");
    assert_eq!(
        r.forward(),
        &Forward {
            authenticated: false,
            ..forward()
        }
    );
    assert!(r.decision.steps.is_empty());
    assert!(r.needed.is_empty());
}

#[test]
fn internal_and_deploy_routes_are_blocked() {
    for (m, uri) in [
        (Method::POST, "/internal/truncate"),
        (Method::GET, "/internal/debug/thread/x"),
        (Method::GET, "/deploy"),
        (Method::POST, "/deploy"),
        (Method::GET, "/deploy/op1/stream"),
    ] {
        let r = run(&owner(), &user("alice"), m, uri, "");
        r.assert_refused(
            403,
            "graphguard never forwards the agent server's /internal and /deploy routes",
        );
        assert!(r.decision.steps.is_empty());
    }
}

#[test]
fn mcp_is_refused_unless_enabled() {
    let r = post(&owner(), &user("alice"), "/mcp", "{}");
    r.assert_refused(
        403,
        "This route's inner calls bypass authorization handlers; enable it with settings.unmediated_routes: [mcp]",
    );
}

#[test]
fn ui_post_is_refused_unless_enabled() {
    let r = post(&owner(), &user("alice"), "/ui/agent", "{}");
    r.assert_refused(
        403,
        "This route's inner calls bypass authorization handlers; enable it with settings.unmediated_routes: [ui]",
    );
}

#[test]
fn enabled_unmediated_route_is_forwarded_authenticated() {
    let p = inline("settings: {unmediated_routes: [a2a]}\nhandlers:\n  \"*\": {allow: true}\n");
    let r = get(&p, &user("alice"), "/a2a/agent");
    assert_eq!(r.forward(), &forward());
    let r = post(&p, &user("alice"), "/mcp", "{}");
    r.assert_refused(
        403,
        "This route's inner calls bypass authorization handlers; enable it with settings.unmediated_routes: [mcp]",
    );
}

// ---------------------------------------------------------------------------------------------
// POST /threads
// ---------------------------------------------------------------------------------------------

#[test]
fn thread_create_stamps_owner_over_client_owner() {
    // Scenario 4.
    let r = post(
        &owner(),
        &user("alice"),
        "/threads",
        r#"{"metadata":{"owner":"bob","topic":"t"}}"#,
    );
    assert_eq!(
        r.body(),
        json!({"metadata": {"owner": "alice", "topic": "t"}})
    );
    assert_eq!(r.events(), ["threads:create"]);
    assert_eq!(r.handlers(), ["*"]);
    assert!(r.needed.is_empty(), "no client id: nothing to look up");
    assert!(r.forward().invalidate.is_empty());
}

#[test]
fn thread_create_adds_metadata_when_client_sent_none() {
    let r = post(
        &owner(),
        &user("alice"),
        "/threads",
        r#"{"if_exists":"raise"}"#,
    );
    assert_eq!(
        r.body(),
        json!({"if_exists": "raise", "metadata": {"owner": "alice"}})
    );
}

#[test]
fn thread_create_with_foreign_existing_id_is_conflict_even_with_do_nothing() {
    // Scenario 9, bob.
    let body = format!(r#"{{"thread_id":"{ALICE_T}","if_exists":"do_nothing"}}"#);
    let r = post(&owner(), &user("bob"), "/threads", &body);
    r.assert_refused(409, &format!("Thread with ID {ALICE_T} already exists"));
    assert_eq!(r.needed, [thread(ALICE_T)]);
}

#[test]
fn thread_create_with_own_existing_id_is_forwarded() {
    // Scenario 9, alice: the upstream answers 200 with the unchanged thread.
    let body = format!(r#"{{"thread_id":"{ALICE_T}","if_exists":"do_nothing"}}"#);
    let r = post(&owner(), &user("alice"), "/threads", &body);
    assert_eq!(r.body()["metadata"], json!({"owner": "alice"}));
    assert_eq!(r.forward().invalidate, [thread(ALICE_T)]);
}

#[test]
fn thread_create_with_new_id_invalidates_cached_lookup() {
    let body = format!(r#"{{"thread_id":"{NEW_T}"}}"#);
    let r = post(&owner(), &user("alice"), "/threads", &body);
    assert_eq!(r.needed, [thread(NEW_T)]);
    assert_eq!(r.forward().invalidate, [thread(NEW_T)]);
}

/// A large create body is stamped as a splice of the request's bytes (sent without a copy);
/// a small one as a body of its own. Both are exactly the spliced text.
#[test]
fn large_create_bodies_are_spliced_in_pieces() {
    let big = "m".repeat(20 * 1024);
    let body = format!(r#"{{"metadata":{{"owner":"bob","k":1}},"ttl":"{big}"}}"#);
    let r = post(&resource(), &user("alice"), "/threads", &body);
    let Some(NewBody::Spliced(pieces)) = &r.forward().body else {
        panic!(
            "expected pieces, got {:?}",
            r.forward().body.as_ref().map(|_| "whole")
        );
    };
    assert_eq!(pieces.pieces().len(), 3);
    assert_eq!(
        r.sent(),
        format!(r#"{{"metadata":{{"owner":"alice","k":1}},"ttl":"{big}"}}"#).into_bytes()
    );
    let small = post(
        &resource(),
        &user("alice"),
        "/threads",
        r#"{"metadata":{}}"#,
    );
    assert!(matches!(small.forward().body, Some(NewBody::Whole(_))));
    assert_eq!(small.body()["metadata"], json!({"owner": "alice"}));
}

#[test]
fn thread_create_without_create_filter_does_not_look_up_the_id() {
    // H2's threads:create only stamps: LangGraph uses no filter, so no conflict check.
    let body = format!(r#"{{"thread_id":"{BOB_T}"}}"#);
    let r = post(&resource(), &user("alice"), "/threads", &body);
    assert!(r.needed.is_empty());
    assert_eq!(r.handlers(), ["threads:create"]);
    assert_eq!(r.body()["metadata"], json!({"owner": "alice"}));
}

#[test]
fn thread_create_with_supersteps_raises_update_and_read() {
    let r = post(&owner(), &user("alice"), "/threads", r#"{"supersteps":[]}"#);
    assert_eq!(
        r.events(),
        ["threads:create", "threads:update", "threads:read"]
    );
}

#[test]
fn thread_create_denied_is_forbidden() {
    let p = inline("handlers:\n  threads:create: {allow: false}\n");
    let r = post(&p, &user("alice"), "/threads", "{}");
    r.assert_refused(403, "Forbidden");
    assert!(!r.decision.steps[0].allowed);
}

#[test]
fn thread_create_with_non_object_metadata_is_unprocessable() {
    let r = post(&owner(), &user("alice"), "/threads", r#"{"metadata":"x"}"#);
    r.assert_refused(422, "metadata must be an object");
}

#[test]
fn participants_create_stamps_creator_and_shared() {
    let r = post(&participants(), &user("carol"), "/threads", "{}");
    assert_eq!(
        r.body(),
        json!({"metadata": {"participants": ["carol", "shared"]}})
    );
    assert_eq!(r.handlers(), ["threads:create"]);
}

// ---------------------------------------------------------------------------------------------
// POST /threads/search and /threads/count
// ---------------------------------------------------------------------------------------------

#[test]
fn search_spoof_is_overwritten_with_own_owner() {
    // Scenario 10.
    let r = post(
        &owner(),
        &user("alice"),
        "/threads/search",
        r#"{"metadata":{"owner":"bob"},"limit":5}"#,
    );
    assert_eq!(
        r.body(),
        json!({"metadata": {"owner": "alice"}, "limit": 5})
    );
    assert_eq!(
        r.forward().response,
        ResponsePlan::Stream,
        "pushed down: upstream pagination is right"
    );
    assert_eq!(r.events(), ["threads:search"]);
    assert!(r.needed.is_empty());
}

#[test]
fn count_spoof_is_overwritten_with_own_owner() {
    // Scenario 11.
    let r = post(
        &owner(),
        &user("alice"),
        "/threads/count",
        r#"{"metadata":{"owner":"bob","x":1}}"#,
    );
    assert_eq!(r.body(), json!({"metadata": {"owner": "alice", "x": 1}}));
    assert_eq!(r.forward().response, ResponsePlan::Stream);
}

#[test]
fn participants_contains_filter_becomes_response_search_plan() {
    // Scenario 29: $contains cannot be pushed into the upstream's containment.
    let r = post(&participants(), &user("shared"), "/threads/search", "{}");
    let f = r.forward();
    assert_eq!(f.body, None);
    assert_eq!(
        f.response,
        ResponsePlan::Search(SearchPlan {
            path: "/threads/search",
            count: false,
            filter: Some(filter(json!({"participants": {"$contains": "shared"}}))),
            thread_filter: None,
            limit: 10,
            offset: 0,
            access: vec![],
        })
    );
}

#[test]
fn participants_count_plan_counts_every_visible_thread() {
    // A count has no window (ThreadCountRequest has none): the plan's is the default.
    let r = post(
        &participants(),
        &user("dave"),
        "/threads/count",
        r#"{"status":"idle"}"#,
    );
    assert_eq!(
        r.forward().response,
        ResponsePlan::Search(SearchPlan {
            path: "/threads/search",
            count: true,
            filter: Some(filter(json!({"participants": {"$contains": "dave"}}))),
            thread_filter: None,
            limit: 10,
            offset: 0,
            access: vec![],
        })
    );
}

#[test]
fn or_search_filter_is_evaluated_on_results() {
    let p =
        inline("handlers:\n  threads:search: {filter: {$or: [{owner: alice}, {owner: bob}]}}\n");
    let r = post(&p, &user("alice"), "/threads/search", "{}");
    let ResponsePlan::Search(plan) = &r.forward().response else {
        panic!("expected a search plan")
    };
    assert_eq!(
        plan.filter,
        Some(filter(
            json!({"$or": [{"owner": "alice"}, {"owner": "bob"}]})
        ))
    );
    assert_eq!(r.forward().body, None);
}

#[test]
fn mixed_search_filter_pushes_equalities_and_keeps_the_rest() {
    let p = inline("handlers:\n  threads:search: {filter: {org: acme, tags: {$contains: x}}}\n");
    let r = post(
        &p,
        &user("alice"),
        "/threads/search",
        r#"{"metadata":{"org":"globex"}}"#,
    );
    assert_eq!(r.body(), json!({"metadata": {"org": "acme"}}));
    let ResponsePlan::Search(plan) = &r.forward().response else {
        panic!("expected a search plan")
    };
    assert_eq!(
        plan.filter,
        Some(filter(json!({"tags": {"$contains": "x"}})))
    );
}

#[test]
fn search_with_select_and_result_filter_is_bad_request() {
    let r = post(
        &participants(),
        &user("shared"),
        "/threads/search",
        r#"{"select":["thread_id"]}"#,
    );
    r.assert_refused(
        400,
        "select cannot be combined with a filter graphguard evaluates on results",
    );
}

#[test]
fn search_with_negative_limit_and_result_filter_is_unprocessable() {
    let r = post(
        &participants(),
        &user("shared"),
        "/threads/search",
        r#"{"limit":-1}"#,
    );
    r.assert_refused(422, "limit must be a non-negative integer");
}

#[test]
fn search_denied_is_forbidden() {
    let p = inline("handlers:\n  threads:search: {deny: \"no searching\"}\n");
    post(&p, &user("alice"), "/threads/search", "{}").assert_refused(403, "no searching");
}

#[test]
fn search_without_filter_forwards_the_original_body() {
    let p = inline("handlers:\n  threads:create: {allow: true}\n");
    post(
        &p,
        &user("alice"),
        "/threads/search",
        r#"{"metadata":{"owner":"bob"}}"#,
    )
    .assert_plain_forward();
}

// ---------------------------------------------------------------------------------------------
// POST /threads/prune
// ---------------------------------------------------------------------------------------------

#[test]
fn prune_of_foreign_thread_is_not_found_or_not_authorized() {
    // Scenario 35, bob.
    let body = format!(r#"{{"thread_ids":["{BOB_T}","{ALICE_T}"]}}"#);
    let r = post(&owner(), &user("bob"), "/threads/prune", &body);
    r.assert_refused(404, "At least one thread not found or not authorized");
    assert_eq!(r.events(), ["threads:delete"]);
}

#[test]
fn prune_of_missing_thread_is_not_found_or_not_authorized() {
    let body = format!(r#"{{"thread_ids":["{NEW_T}"]}}"#);
    let r = post(&owner(), &user("alice"), "/threads/prune", &body);
    r.assert_refused(404, "At least one thread not found or not authorized");
}

#[test]
fn prune_of_own_threads_is_forwarded_and_invalidates_them() {
    // Scenario 35, alice.
    let body = format!(r#"{{"thread_ids":["{ALICE_T}"],"strategy":"delete"}}"#);
    let r = post(&owner(), &user("alice"), "/threads/prune", &body);
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![thread(ALICE_T)],
            ..forward()
        }
    );
    assert_eq!(r.needed, [thread(ALICE_T)]);
}

#[test]
fn prune_of_empty_list_calls_no_handler() {
    let r = post(
        &owner(),
        &user("alice"),
        "/threads/prune",
        r#"{"thread_ids":[]}"#,
    );
    r.assert_plain_forward();
    assert!(r.decision.steps.is_empty());
}

#[test]
fn prune_denied_is_forbidden() {
    let p = inline("handlers:\n  threads:delete: {allow: false}\n");
    let body = format!(r#"{{"thread_ids":["{ALICE_T}"]}}"#);
    post(&p, &user("alice"), "/threads/prune", &body).assert_refused(403, "Forbidden");
}

// ---------------------------------------------------------------------------------------------
// By-id thread routes (GET, DELETE, state, history, storage, streams, runs by id)
// ---------------------------------------------------------------------------------------------

#[test]
fn foreign_thread_read_is_not_found() {
    // Scenario 5.
    let r = get(&owner(), &user("bob"), &format!("/threads/{ALICE_T}"));
    r.assert_refused(404, &format!("Thread with ID {ALICE_T} not found"));
    assert_eq!(r.needed, [thread(ALICE_T)]);
    assert_eq!(r.events(), ["threads:read"]);
}

#[test]
fn own_thread_read_is_forwarded_without_invalidation() {
    let r = get(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}?include=ttl"),
    );
    assert_eq!(r.forward(), &forward());
    assert!(r.decision.steps[0].allowed);
}

#[test]
fn missing_thread_read_is_not_found() {
    let r = get(&owner(), &user("alice"), &format!("/threads/{NEW_T}"));
    r.assert_refused(404, &format!("Thread with ID {NEW_T} not found"));
}

#[test]
fn denied_read_is_forbidden_even_for_missing_thread() {
    // Scenario 31: the handler runs before the lookup.
    let p = inline("handlers:\n  threads:read: {allow: false}\n");
    let r = get(&p, &user("alice"), &format!("/threads/{ALICE_T}"));
    r.assert_refused(403, "Forbidden");
    let r = get(&p, &user("alice"), &format!("/threads/{NEW_T}"));
    r.assert_refused(403, "Forbidden");
    assert!(r.needed.is_empty());
}

#[test]
fn or_read_filter_admits_either_owner_only() {
    // Scenario 30.
    let p = inline("handlers:\n  threads:read: {filter: {$or: [{owner: alice}, {owner: bob}]}}\n");
    get(&p, &user("x"), &format!("/threads/{ALICE_T}")).assert_plain_forward();
    get(&p, &user("x"), &format!("/threads/{BOB_T}")).assert_plain_forward();
    get(&p, &user("x"), &format!("/threads/{CAROL_T}"))
        .assert_refused(404, &format!("Thread with ID {CAROL_T} not found"));
}

#[test]
fn participants_thread_is_readable_by_shared() {
    // Scenario 29.
    get(
        &participants(),
        &user("shared"),
        &format!("/threads/{CAROL_T}"),
    )
    .assert_plain_forward();
}

#[test]
fn participants_thread_is_not_found_for_outsider() {
    // Scenario 29.
    get(
        &participants(),
        &user("dave"),
        &format!("/threads/{CAROL_T}"),
    )
    .assert_refused(404, &format!("Thread with ID {CAROL_T} not found"));
}

#[test]
fn no_read_handler_allows_foreign_read_without_lookup() {
    // Scenario 34 (H5): LangGraph fails open when no handler matches.
    let p = inline("handlers:\n  threads:create: {metadata: {owner: \"{user.identity}\"}}\n");
    let r = get(&p, &user("bob"), &format!("/threads/{ALICE_T}"));
    r.assert_plain_forward();
    assert!(r.needed.is_empty());
    assert_eq!(r.handlers(), ["-"]);
    assert!(r.decision.steps[0].allowed);
}

#[test]
fn default_deny_refuses_uncovered_event() {
    let p = inline("settings: {default: deny}\nhandlers:\n  threads:create: {allow: true}\n");
    let r = get(&p, &user("alice"), &format!("/threads/{ALICE_T}"));
    r.assert_refused(403, "Forbidden: no handler covers threads:read");
    assert_eq!(r.handlers(), ["-"]);
    assert!(!r.decision.steps[0].allowed);
}

#[test]
fn invalid_thread_id_is_unprocessable_before_any_handler() {
    // Scenario 40.
    let p = inline("handlers:\n  \"*\": {allow: false}\n");
    let e = try_run(
        &p,
        &user("alice"),
        Method::GET,
        "/threads/not-a-uuid",
        "",
        &world(),
    )
    .unwrap_err();
    assert_eq!(
        (e.status, e.detail.as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid thread ID: must be a UUID"
        )
    );
}

#[test]
fn first_matching_rule_decides_and_is_recorded() {
    let p = inline(
        "handlers:\n  threads:read:\n    - when: {roles: [admin]}\n      allow: true\n    - filter: {owner: \"{user.identity}\"}\n",
    );
    let r = get(&p, &admin(), &format!("/threads/{BOB_T}"));
    r.assert_plain_forward();
    assert!(r.needed.is_empty(), "no filter: no lookup");
    assert_eq!(r.decision.steps[0].rule, Some(0));
    let r = get(&p, &user("alice"), &format!("/threads/{BOB_T}"));
    r.assert_refused(404, &format!("Thread with ID {BOB_T} not found"));
    assert_eq!(r.decision.steps[0].rule, Some(1));
}

#[test]
fn foreign_thread_delete_is_thread_with_id_not_found() {
    // Scenario 7.
    let r = delete(&owner(), &user("bob"), &format!("/threads/{ALICE_T}"));
    r.assert_refused(404, &format!("Thread with ID {ALICE_T} not found"));
    assert_eq!(r.events(), ["threads:delete"]);
}

#[test]
fn own_thread_delete_invalidates_lookup() {
    let r = delete(&owner(), &user("alice"), &format!("/threads/{ALICE_T}"));
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![thread(ALICE_T)],
            ..forward()
        }
    );
}

#[test]
fn denied_delete_is_forbidden_even_for_missing_thread() {
    let p = inline("handlers:\n  threads:delete: {allow: false}\n");
    delete(&p, &user("alice"), &format!("/threads/{NEW_T}")).assert_refused(403, "Forbidden");
}

#[test]
fn foreign_thread_state_and_history_are_thread_with_id_not_found() {
    // Scenario 12 and the other read-gated thread routes.
    let want = format!("Thread with ID {ALICE_T} not found");
    for (m, path) in [
        (Method::GET, format!("/threads/{ALICE_T}/state")),
        (Method::GET, format!("/threads/{ALICE_T}/state/cp1")),
        (Method::POST, format!("/threads/{ALICE_T}/state/checkpoint")),
        (Method::GET, format!("/threads/{ALICE_T}/history")),
        (Method::POST, format!("/threads/{ALICE_T}/history")),
        (Method::GET, format!("/threads/{ALICE_T}/storage")),
    ] {
        let r = run(&owner(), &user("bob"), m.clone(), &path, "{}");
        r.assert_refused(404, &want);
        assert_eq!(r.events(), ["threads:read"], "{m} {path}");
    }
}

#[test]
fn own_thread_history_is_forwarded_with_original_body() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/history"),
        r#"{"limit":3}"#,
    );
    r.assert_plain_forward();
}

#[test]
fn sse_stream_on_foreign_thread_is_error_event() {
    // Scenario 15.
    for path in [
        format!("/threads/{ALICE_T}/stream"),
        format!("/threads/{ALICE_T}/runs/{RUN}/stream"),
    ] {
        let r = get(&owner(), &user("bob"), &path);
        let e = r.refusal();
        assert_eq!(
            (e.status, e.detail.as_str()),
            (StatusCode::NOT_FOUND, "Thread not found"),
            "{path}"
        );
        assert_eq!(e.delivery, Delivery::SseErrorEvent, "{path}");
        let sse = String::from_utf8(e.sse_body()).unwrap();
        assert!(sse.starts_with("event: error\r\n"), "{sse}");
        assert!(
            sse.contains(r#""message":"404: Thread not found""#),
            "{sse}"
        );
    }
}

#[test]
fn v2_event_stream_on_foreign_thread_is_error_event() {
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/stream/events"),
        "{}",
    );
    assert_eq!(r.refusal().delivery, Delivery::SseErrorEvent);
    assert_eq!(r.refusal().detail, "Thread not found");
}

#[test]
fn sse_stream_denied_is_forbidden_error_event() {
    let p = inline("handlers:\n  threads:read: {allow: false}\n");
    let r = get(&p, &user("alice"), &format!("/threads/{ALICE_T}/stream"));
    let e = r.refusal();
    assert_eq!(
        (e.status, e.detail.as_str(), e.delivery),
        (StatusCode::FORBIDDEN, "Forbidden", Delivery::SseErrorEvent)
    );
}

#[test]
fn sse_stream_without_filter_does_not_check_existence() {
    let p = inline("handlers:\n  threads:read: {allow: true}\n");
    let r = get(&p, &user("alice"), &format!("/threads/{NEW_T}/stream"));
    r.assert_plain_forward();
    assert!(r.needed.is_empty());
}

#[test]
fn foreign_run_read_is_thread_with_id_not_found() {
    // Scenario 14, GET run.
    let r = get(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/runs/{RUN}"),
    );
    r.assert_refused(404, &format!("Thread with ID {ALICE_T} not found"));
}

#[test]
fn foreign_run_join_is_thread_not_found_json() {
    // Scenario 14, join: checked before the response starts, so a JSON error.
    let r = get(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/runs/{RUN}/join"),
    );
    r.assert_refused(404, "Thread not found");
}

#[test]
fn foreign_run_delete_is_plain_not_found() {
    // Scenario 14, DELETE run.
    let r = delete(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/runs/{RUN}"),
    );
    r.assert_refused(404, "Not Found");
    assert_eq!(r.events(), ["threads:delete"]);
}

#[test]
fn foreign_run_cancel_is_no_runs_found_to_cancel() {
    // Scenario 14, cancel.
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/runs/{RUN}/cancel?wait=1"),
        "",
    );
    r.assert_refused(404, "No runs found to cancel.");
    assert_eq!(r.events(), ["threads:update"]);
}

#[test]
fn own_run_cancel_is_forwarded_and_invalidates_thread() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs/{RUN}/cancel"),
        "",
    );
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![thread(ALICE_T)],
            ..forward()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// PATCH /threads/{id}
// ---------------------------------------------------------------------------------------------

#[test]
fn foreign_thread_patch_is_plain_not_found() {
    // Scenario 6.
    let r = patch(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}"),
        r#"{"metadata":{"x":1}}"#,
    );
    r.assert_refused(404, "Not Found");
    assert_eq!(r.events(), ["threads:update"]);
}

#[test]
fn own_thread_patch_stamps_owner_and_invalidates() {
    let r = patch(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}"),
        r#"{"metadata":{"owner":"bob","x":1}}"#,
    );
    assert_eq!(r.body(), json!({"metadata": {"owner": "alice", "x": 1}}));
    assert_eq!(r.forward().invalidate, [thread(ALICE_T)]);
}

#[test]
fn patch_missing_thread_is_404_even_when_denied() {
    // Scenario 31: the update handler only runs if the thread exists.
    let p = inline("handlers:\n  threads:update: {allow: false}\n");
    let r = patch(
        &p,
        &user("alice"),
        &format!("/threads/{NEW_T}"),
        r#"{"metadata":{}}"#,
    );
    r.assert_refused(404, "Not Found");
    assert_eq!(r.needed, [thread(NEW_T)]);
}

#[test]
fn patch_existing_thread_when_denied_is_forbidden() {
    let p = inline("handlers:\n  threads:update: {deny: \"read only\"}\n");
    let r = patch(&p, &user("alice"), &format!("/threads/{ALICE_T}"), "{}");
    r.assert_refused(403, "read only");
}

// ---------------------------------------------------------------------------------------------
// POST /threads/{id}/state
// ---------------------------------------------------------------------------------------------

#[test]
fn state_update_on_foreign_thread_is_thread_with_id_not_found() {
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/state"),
        r#"{"values":{}}"#,
    );
    r.assert_refused(404, &format!("Thread with ID {ALICE_T} not found"));
    assert_eq!(r.events(), ["threads:update", "threads:read"]);
}

#[test]
fn state_update_failing_only_the_update_filter_is_forbidden() {
    let p = inline(
        "handlers:\n  threads:read: {allow: true}\n  threads:update: {filter: {owner: \"{user.identity}\"}}\n",
    );
    let r = post(
        &p,
        &user("alice"),
        &format!("/threads/{BOB_T}/state"),
        r#"{"values":{}}"#,
    );
    r.assert_refused(403, "Forbidden");
}

#[test]
fn own_state_update_is_forwarded_and_invalidates_thread() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/state"),
        r#"{"values":{}}"#,
    );
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![thread(ALICE_T)],
            ..forward()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// POST /threads/{id}/copy
// ---------------------------------------------------------------------------------------------

#[test]
fn copy_of_foreign_thread_is_conflict() {
    // Scenario 8.
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/copy"),
        "",
    );
    r.assert_refused(409, "Conflict");
    assert_eq!(r.events(), ["threads:read"]);
}

#[test]
fn copy_of_missing_thread_is_conflict() {
    post(
        &owner(),
        &user("alice"),
        &format!("/threads/{NEW_T}/copy"),
        "",
    )
    .assert_refused(409, "Conflict");
}

#[test]
fn copy_of_own_thread_reads_then_creates_as_a_veto() {
    // The copy keeps the source's metadata: no stamping.
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/copy"),
        "",
    );
    r.assert_plain_forward();
    assert_eq!(r.events(), ["threads:read", "threads:create"]);
}

#[test]
fn copy_with_denying_create_is_forbidden() {
    let p = inline("handlers:\n  threads:read: {allow: true}\n  threads:create: {allow: false}\n");
    post(&p, &user("alice"), &format!("/threads/{ALICE_T}/copy"), "")
        .assert_refused(403, "Forbidden");
}

// ---------------------------------------------------------------------------------------------
// POST /threads/{id}/commands (v2)
// ---------------------------------------------------------------------------------------------

#[test]
fn commands_on_foreign_thread_is_json_thread_or_assistant_not_found() {
    // Deliberate difference: 404 JSON instead of the server's 200 JSON-RPC error.
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/commands"),
        r#"{"method":"run.start"}"#,
    );
    r.assert_refused(404, "Thread or assistant not found.");
    assert_eq!(r.events(), ["threads:create_run"]);
}

#[test]
fn commands_run_start_checks_the_assistant_and_stamps_params_metadata() {
    let body = format!(
        r#"{{"id":1,"method":"run.start","params":{{"assistant_id":"{ALICE_A}","metadata":{{"owner":"bob"}}}}}}"#
    );
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/commands"),
        &body,
    );
    assert_eq!(
        r.events(),
        ["threads:create_run", "threads:read", "assistants:read"]
    );
    let f = r.forward();
    assert_eq!(f.invalidate, vec![thread(ALICE_T)]);
    let sent: Value = serde_json::from_slice(&r.sent()).unwrap();
    assert_eq!(sent["params"]["metadata"]["owner"], json!("alice"));
    assert_eq!(sent["id"], json!(1));
}

#[test]
fn commands_run_start_with_foreign_assistant_is_thread_or_assistant_not_found() {
    let body =
        format!(r#"{{"id":1,"method":"run.start","params":{{"assistant_id":"{ALICE_A}"}}}}"#);
    post(
        &owner(),
        &user("bob"),
        &format!("/threads/{BOB_T}/commands"),
        &body,
    )
    .assert_refused(404, "Thread or assistant not found.");
}

#[test]
fn run_on_foreign_thread_is_thread_or_assistant_not_found() {
    // Scenario 13, for all three create routes.
    for suffix in ["runs", "runs/wait", "runs/stream"] {
        let r = post(
            &owner(),
            &user("bob"),
            &format!("/threads/{ALICE_T}/{suffix}"),
            r#"{"assistant_id":"agent"}"#,
        );
        r.assert_refused(404, "Thread or assistant not found.");
        assert_eq!(r.events(), ["threads:create_run"], "{suffix}");
    }
}

#[test]
fn run_on_own_thread_stamps_owner_into_run_metadata() {
    // Scenario 18.
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs"),
        r#"{"assistant_id":"agent","metadata":{"rk":2,"owner":"bob"}}"#,
    );
    assert_eq!(
        r.body(),
        json!({"assistant_id": "agent", "metadata": {"rk": 2, "owner": "alice"}})
    );
    assert_eq!(r.forward().invalidate, [thread(ALICE_T)]);
    assert_eq!(r.needed, [assistant(&system_a()), thread(ALICE_T)]);
}

#[test]
fn run_on_missing_thread_with_if_not_exists_create_is_forwarded() {
    // Scenario 17: the implicitly created thread gets the stamped run metadata.
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{NEW_T}/runs/wait"),
        r#"{"assistant_id":"agent","if_not_exists":"create","metadata":{"owner":"bob","m":1}}"#,
    );
    assert_eq!(r.body()["metadata"], json!({"owner": "alice", "m": 1}));
    assert_eq!(r.forward().invalidate, [thread(NEW_T)]);
}

#[test]
fn run_on_missing_thread_without_create_is_thread_or_assistant_not_found() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{NEW_T}/runs"),
        r#"{"assistant_id":"agent","if_not_exists":"reject"}"#,
    );
    r.assert_refused(404, "Thread or assistant not found.");
}

#[test]
fn run_create_raises_create_run_then_assistant_read_for_a_user_assistant() {
    let body = format!(r#"{{"assistant_id":"{ALICE_A}"}}"#);
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs/wait"),
        &body,
    );
    assert_eq!(r.events(), ["threads:create_run", "assistants:read"]);
    assert_eq!(r.handlers(), ["*", "*"]);
    assert_eq!(r.needed, [assistant(ALICE_A), thread(ALICE_T)]);
    assert_eq!(r.body()["metadata"], json!({"owner": "alice"}));
}

#[test]
fn system_assistant_skips_assistant_read_check() {
    // Scenario 20: a run with the graph's default assistant works under an owner filter.
    let body = format!(r#"{{"assistant_id":"{}"}}"#, system_a());
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs/wait"),
        &body,
    );
    assert_eq!(r.events(), ["threads:create_run"]);
    assert_eq!(r.needed, [assistant(&system_a()), thread(ALICE_T)]);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}

#[test]
fn graph_name_assistant_is_looked_up_as_its_system_assistant() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs"),
        r#"{"assistant_id":"agent"}"#,
    );
    assert_eq!(r.events(), ["threads:create_run"]);
    assert_eq!(r.needed, [assistant(&system_a()), thread(ALICE_T)]);
}

#[test]
fn foreign_assistant_run_is_thread_or_assistant_not_found() {
    // Scenario 21: bob runs alice's assistant on his own thread.
    let body = format!(r#"{{"assistant_id":"{ALICE_A}"}}"#);
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{BOB_T}/runs/wait"),
        &body,
    );
    r.assert_refused(404, "Thread or assistant not found.");
    assert_eq!(r.events(), ["threads:create_run", "assistants:read"]);
}

#[test]
fn denied_assistant_read_is_forbidden_even_for_its_creator() {
    // Scenario 23 (H2): assistants:* always denies.
    let body = format!(r#"{{"assistant_id":"{ADMIN_A}"}}"#);
    let r = post(
        &resource(),
        &admin(),
        &format!("/threads/{ADMIN_T}/runs/wait"),
        &body,
    );
    r.assert_refused(403, "User lacks the required permissions.");
    assert_eq!(r.handlers(), ["threads:create_run", "assistants"]);
}

#[test]
fn run_with_missing_assistant_is_404_before_any_handler() {
    // semantics §5.2 step 2 and §8.4: an unknown assistant is 404 and no handler is called, so a
    // denying create_run handler does not turn it into a 403.
    let p = inline("handlers:\n  threads:create_run: {allow: false}\n");
    let body = format!(r#"{{"assistant_id":"{MISSING_A}"}}"#);
    let r = post(
        &p,
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs"),
        &body,
    );
    r.assert_refused(404, "Thread or assistant not found.");
    assert!(r.decision.steps.is_empty(), "{:?}", r.events());
    let r = post(&p, &user("alice"), "/runs/wait", &body);
    r.assert_refused(404, "Thread or assistant not found.");
    assert!(r.decision.steps.is_empty());
}

#[test]
fn run_create_denied_is_forbidden() {
    let p = inline("handlers:\n  threads:create_run: {deny: \"no runs\"}\n");
    let r = post(
        &p,
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs"),
        r#"{"assistant_id":"agent"}"#,
    );
    r.assert_refused(403, "no runs");
}

#[test]
fn user_assistant_labelled_system_is_still_checked() {
    // Deliberate difference (README compatibility): LangGraph exempts any assistant whose
    // metadata says created_by=system, which its creator can write; graphguard recognises system
    // assistants by id (uuid5 of the graph id) only, so bob's fake "system" assistant is hidden.
    let body = format!(r#"{{"assistant_id":"{BOB_FAKE_SYSTEM_A}"}}"#);
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs"),
        &body,
    );
    assert_eq!(r.events(), ["threads:create_run", "assistants:read"]);
    r.assert_refused(404, "Thread or assistant not found.");
}

#[test]
fn stateless_run_stamps_owner_and_looks_up_no_thread() {
    // Scenario 19: stamping matters because the temporary thread takes the run metadata.
    for path in ["/runs", "/runs/wait", "/runs/stream"] {
        let r = post(
            &owner(),
            &user("alice"),
            path,
            r#"{"assistant_id":"agent","metadata":{"owner":"bob"}}"#,
        );
        assert_eq!(
            r.body(),
            json!({"assistant_id": "agent", "metadata": {"owner": "alice"}}),
            "{path}"
        );
        // The graph name is authorized as the assistant the server resolves it to.
        assert_eq!(r.needed, [assistant(&system_a())], "{path}");
        assert!(r.forward().invalidate.is_empty(), "{path}");
        assert_eq!(r.events(), ["threads:create_run"], "{path}");
    }
}

#[test]
fn stateless_run_with_foreign_assistant_is_thread_or_assistant_not_found() {
    let body = format!(r#"{{"assistant_id":"{ALICE_A}"}}"#);
    post(&owner(), &user("bob"), "/runs", &body)
        .assert_refused(404, "Thread or assistant not found.");
}

#[test]
fn run_body_with_non_string_assistant_is_unprocessable() {
    let r = post(&owner(), &user("alice"), "/runs", r#"{"assistant_id":1}"#);
    r.assert_refused(422, "assistant_id must be a string");
}

// ---------------------------------------------------------------------------------------------
// POST /runs/batch
// ---------------------------------------------------------------------------------------------

#[test]
fn batch_stamps_owner_into_every_item() {
    // Scenario 19.
    let r = post(
        &owner(),
        &user("alice"),
        "/runs/batch",
        r#"[{"assistant_id":"agent"},{"assistant_id":"agent","metadata":{"owner":"bob","k":1}}]"#,
    );
    assert_eq!(
        r.body(),
        json!([
            {"assistant_id": "agent", "metadata": {"owner": "alice"}},
            {"assistant_id": "agent", "metadata": {"owner": "alice", "k": 1}},
        ])
    );
    assert_eq!(r.events(), ["threads:create_run", "threads:create_run"]);
}

#[test]
fn batch_with_one_foreign_assistant_fails_the_whole_request() {
    let body = format!(r#"[{{"assistant_id":"agent"}},{{"assistant_id":"{ALICE_A}"}}]"#);
    let r = post(&owner(), &user("bob"), "/runs/batch", &body);
    r.assert_refused(404, "Thread or assistant not found.");
    assert_eq!(
        r.events(),
        [
            "threads:create_run",
            "threads:create_run",
            "assistants:read"
        ]
    );
}

#[test]
fn batch_without_stamping_forwards_original_bytes() {
    let p = inline("handlers:\n  threads:create_run: {allow: true}\n");
    post(
        &p,
        &user("alice"),
        "/runs/batch",
        r#"[{"assistant_id":"agent"}]"#,
    )
    .assert_plain_forward();
}

#[test]
fn batch_body_must_be_an_array_of_objects() {
    let e = try_run(
        &owner(),
        &user("alice"),
        Method::POST,
        "/runs/batch",
        "{}",
        &world(),
    )
    .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.detail.as_str()),
        (422, "Request body must be a JSON array of objects")
    );
    let e = try_run(
        &owner(),
        &user("alice"),
        Method::POST,
        "/runs/batch",
        "[1]",
        &world(),
    )
    .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.detail.as_str()),
        (422, "Each batch item must be a JSON object")
    );
}

// ---------------------------------------------------------------------------------------------
// GET /threads/{id}/runs
// ---------------------------------------------------------------------------------------------

#[test]
fn run_list_on_foreign_thread_is_thread_with_id_not_found() {
    // Scenario 16.
    let r = get(&owner(), &user("bob"), &format!("/threads/{ALICE_T}/runs"));
    r.assert_refused(404, &format!("Thread with ID {ALICE_T} not found"));
    assert_eq!(r.events(), ["threads:read"]);
}

#[test]
fn run_list_on_own_thread_raises_read_then_search() {
    let r = get(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs?limit=5"),
    );
    r.assert_plain_forward();
    assert_eq!(r.events(), ["threads:read", "threads:search"]);
}

#[test]
fn run_list_failing_only_the_search_filter_is_not_found() {
    // Design question: the server checks the search filter against the thread and answers an
    // empty list (200 `[]`) when it fails; the gateway answers 404. It also does not hide runs
    // lacking stamped metadata. This asserts the current behaviour.
    let p = inline("handlers:\n  threads:read: {allow: true}\n  threads:search: {filter: {owner: \"{user.identity}\"}}\n");
    let r = get(&p, &user("alice"), &format!("/threads/{BOB_T}/runs"));
    r.assert_refused(404, &format!("Thread with ID {BOB_T} not found"));
}

// ---------------------------------------------------------------------------------------------
// POST /runs/cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn bulk_cancel_by_status_with_filter_is_refused() {
    // Deliberate difference: the gateway cannot evaluate thread by thread.
    let r = post(
        &owner(),
        &user("alice"),
        "/runs/cancel",
        r#"{"status":"running"}"#,
    );
    r.assert_refused(
        403,
        "Cancelling runs by status cannot be authorized thread by thread behind graphguard; cancel with thread_id and run_ids",
    );
    assert_eq!(r.events(), ["threads:update"]);
}

#[test]
fn bulk_cancel_by_status_without_filter_is_forwarded() {
    let p = inline("handlers:\n  threads:update: {allow: true}\n");
    post(
        &p,
        &user("alice"),
        "/runs/cancel?action=interrupt",
        r#"{"status":"all"}"#,
    )
    .assert_plain_forward();
}

#[test]
fn bulk_cancel_on_foreign_thread_is_no_runs_found_to_cancel() {
    let body = format!(r#"{{"thread_id":"{ALICE_T}","run_ids":["{RUN}"]}}"#);
    let r = post(&owner(), &user("bob"), "/runs/cancel", &body);
    r.assert_refused(404, "No runs found to cancel.");
    assert_eq!(r.needed, [thread(ALICE_T)]);
}

#[test]
fn bulk_cancel_on_own_thread_is_forwarded() {
    let body = format!(r#"{{"thread_id":"{ALICE_T}","run_ids":["{RUN}"]}}"#);
    post(&owner(), &user("alice"), "/runs/cancel", &body).assert_plain_forward();
}

#[test]
fn bulk_cancel_with_invalid_thread_id_is_unprocessable() {
    let r = post(
        &owner(),
        &user("alice"),
        "/runs/cancel",
        r#"{"thread_id":"nope","run_ids":[]}"#,
    );
    r.assert_refused(422, "Invalid thread ID: must be a UUID");
}

// ---------------------------------------------------------------------------------------------
// Assistants
// ---------------------------------------------------------------------------------------------

#[test]
fn assistant_create_without_permission_is_forbidden() {
    // Scenario 22, alice.
    let r = post(
        &resource(),
        &user("alice"),
        "/assistants",
        r#"{"graph_id":"agent"}"#,
    );
    r.assert_refused(403, "User lacks the required permissions.");
    assert_eq!(r.handlers(), ["assistants:create"]);
}

#[test]
fn assistant_create_with_permission_is_forwarded() {
    // Scenario 22, admin.
    post(
        &resource(),
        &admin(),
        "/assistants",
        r#"{"graph_id":"agent"}"#,
    )
    .assert_plain_forward();
}

#[test]
fn assistant_create_stamps_owner() {
    let r = post(
        &owner(),
        &user("alice"),
        "/assistants",
        r#"{"graph_id":"agent","metadata":{"owner":"bob"}}"#,
    );
    assert_eq!(
        r.body(),
        json!({"graph_id": "agent", "metadata": {"owner": "alice"}})
    );
}

#[test]
fn assistant_create_with_foreign_existing_id_is_conflict() {
    let body =
        format!(r#"{{"assistant_id":"{ALICE_A}","graph_id":"agent","if_exists":"do_nothing"}}"#);
    let r = post(&owner(), &user("bob"), "/assistants", &body);
    r.assert_refused(409, &format!("Assistant {ALICE_A} already exists"));
    assert_eq!(r.needed, [assistant(ALICE_A)]);
}

#[test]
fn assistant_create_with_client_id_invalidates_cached_lookup() {
    // Like thread create: a cached "missing" for this id becomes stale once it is created,
    // and a stale one would let another user's `do_nothing` create through the 409 check.
    let body = format!(r#"{{"assistant_id":"{MISSING_A}","graph_id":"agent"}}"#);
    let r = post(&owner(), &user("alice"), "/assistants", &body);
    assert_eq!(r.needed, [assistant(MISSING_A)]);
    assert_eq!(r.forward().invalidate, [assistant(MISSING_A)]);
}

#[test]
fn assistant_search_stamps_owner() {
    // Scenario 20: system assistants (no owner) disappear from alice's search.
    let r = post(
        &owner(),
        &user("alice"),
        "/assistants/search",
        r#"{"metadata":{"owner":"bob"},"graph_id":"agent"}"#,
    );
    assert_eq!(
        r.body(),
        json!({"metadata": {"owner": "alice"}, "graph_id": "agent"})
    );
    assert_eq!(r.events(), ["assistants:search"]);
}

#[test]
fn assistant_count_stamps_owner() {
    let r = post(&owner(), &user("alice"), "/assistants/count", "{}");
    assert_eq!(r.body(), json!({"metadata": {"owner": "alice"}}));
}

#[test]
fn system_assistant_read_is_plain_not_found_under_owner_filter() {
    // Scenario 20.
    let r = get(
        &owner(),
        &user("alice"),
        &format!("/assistants/{}", system_a()),
    );
    r.assert_refused(404, "Not Found");
    assert_eq!(r.events(), ["assistants:read"]);
}

#[test]
fn assistant_read_is_denied_even_for_its_creator_under_h2() {
    // Scenario 22, admin reading his own assistant.
    let r = get(&resource(), &admin(), &format!("/assistants/{ADMIN_A}"));
    r.assert_refused(403, "User lacks the required permissions.");
    assert!(r.needed.is_empty());
}

#[test]
fn foreign_assistant_graph_schemas_and_subgraphs_are_not_found() {
    for suffix in [
        "",
        "/graph?xray=true",
        "/schemas",
        "/subgraphs",
        "/subgraphs/sub?recurse=true",
    ] {
        let r = get(
            &owner(),
            &user("bob"),
            &format!("/assistants/{ALICE_A}{suffix}"),
        );
        r.assert_refused(404, "Not Found");
        assert_eq!(r.events(), ["assistants:read"], "{suffix}");
    }
}

#[test]
fn own_assistant_read_is_forwarded() {
    let r = get(
        &owner(),
        &user("alice"),
        &format!("/assistants/{ALICE_A}/schemas"),
    );
    assert_eq!(r.forward(), &forward());
}

#[test]
fn foreign_assistant_patch_is_assistant_not_found() {
    let r = patch(
        &owner(),
        &user("bob"),
        &format!("/assistants/{ALICE_A}"),
        r#"{"metadata":{}}"#,
    );
    r.assert_refused(404, &format!("Assistant {ALICE_A} not found"));
    assert_eq!(r.events(), ["assistants:update"]);
}

#[test]
fn own_assistant_patch_stamps_owner_and_invalidates() {
    let r = patch(
        &owner(),
        &user("alice"),
        &format!("/assistants/{ALICE_A}"),
        r#"{"name":"n"}"#,
    );
    assert_eq!(
        r.body(),
        json!({"name": "n", "metadata": {"owner": "alice"}})
    );
    assert_eq!(r.forward().invalidate, [assistant(ALICE_A)]);
}

#[test]
fn foreign_assistant_latest_is_assistant_not_found() {
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/assistants/{ALICE_A}/latest"),
        r#"{"version":1}"#,
    );
    r.assert_refused(404, &format!("Assistant {ALICE_A} not found"));
    assert_eq!(r.events(), ["assistants:update"]);
}

#[test]
fn own_assistant_latest_is_forwarded_unstamped_and_invalidates() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/assistants/{ALICE_A}/latest"),
        r#"{"version":1}"#,
    );
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![assistant(ALICE_A)],
            ..forward()
        }
    );
}

#[test]
fn assistant_versions_are_filtered_one_by_one() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/assistants/{ALICE_A}/versions"),
        "{}",
    );
    assert_eq!(
        r.forward().response,
        ResponsePlan::FilterList {
            filter: filter(json!({"owner": "alice"})),
            empty: Some(GatewayError::not_found(format!(
                "Assistant {ALICE_A} not found"
            ))),
        }
    );
    assert_eq!(r.needed, [assistant(ALICE_A)]);
}

#[test]
fn assistant_versions_of_missing_assistant_are_not_found() {
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/assistants/{MISSING_A}/versions"),
        "{}",
    );
    r.assert_refused(404, &format!("Assistant {MISSING_A} not found"));
}

#[test]
fn assistant_versions_without_filter_stream_unchanged() {
    let p = inline("handlers:\n  assistants:read: {allow: true}\n");
    let r = post(
        &p,
        &user("alice"),
        &format!("/assistants/{MISSING_A}/versions"),
        "{}",
    );
    r.assert_plain_forward();
    assert!(r.needed.is_empty());
}

#[test]
fn foreign_assistant_delete_is_assistant_with_id_not_found() {
    let r = delete(&owner(), &user("bob"), &format!("/assistants/{ALICE_A}"));
    r.assert_refused(404, &format!("Assistant with ID {ALICE_A} not found"));
}

#[test]
fn own_assistant_delete_raises_only_assistants_delete() {
    // The server's extra threads:update call (a quirk) is not copied.
    let r = delete(&owner(), &user("alice"), &format!("/assistants/{ALICE_A}"));
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![assistant(ALICE_A)],
            ..forward()
        }
    );
    assert_eq!(r.events(), ["assistants:delete"]);
}

#[test]
fn assistant_delete_with_delete_threads_under_thread_filter_is_refused() {
    // Deliberate difference.
    let r = delete(
        &owner(),
        &user("alice"),
        &format!("/assistants/{ALICE_A}?delete_threads=true"),
    );
    r.assert_refused(
        403,
        "delete_threads cannot be authorized thread by thread behind graphguard; delete the threads first",
    );
    assert_eq!(r.events(), ["assistants:delete", "threads:delete"]);
}

#[test]
fn assistant_delete_with_delete_threads_without_thread_filter_is_forwarded() {
    let p = inline("handlers:\n  assistants:delete: {filter: {owner: \"{user.identity}\"}}\n  threads:delete: {allow: true}\n");
    let r = delete(
        &p,
        &user("alice"),
        &format!("/assistants/{ALICE_A}?delete_threads=true"),
    );
    assert_eq!(r.forward().invalidate, [assistant(ALICE_A)]);
    assert_eq!(r.events(), ["assistants:delete", "threads:delete"]);
}

// ---------------------------------------------------------------------------------------------
// Crons
// ---------------------------------------------------------------------------------------------

#[test]
fn cron_create_is_denied_under_h2() {
    // Scenario 24.
    let r = post(
        &resource(),
        &user("alice"),
        "/runs/crons",
        r#"{"assistant_id":"agent","schedule":"* * * * *"}"#,
    );
    r.assert_refused(403, "User lacks the required permissions.");
    assert_eq!(r.handlers(), ["crons"]);
}

#[test]
fn cron_search_is_denied_under_h2() {
    // Scenario 24.
    post(&resource(), &user("alice"), "/runs/crons/search", "{}")
        .assert_refused(403, "User lacks the required permissions.");
}

#[test]
fn cron_create_stamps_owner() {
    let r = post(
        &owner(),
        &user("alice"),
        "/runs/crons",
        r#"{"assistant_id":"agent","schedule":"* * * * *","metadata":{"owner":"bob"}}"#,
    );
    assert_eq!(
        r.body(),
        json!({"assistant_id": "agent", "schedule": "* * * * *", "metadata": {"owner": "alice"}})
    );
    assert_eq!(r.events(), ["crons:create"]);
}

#[test]
fn thread_cron_on_foreign_thread_is_verbose_thread_not_found() {
    // Scenario 36, thread cron.
    let r = post(
        &owner(),
        &user("bob"),
        &format!("/threads/{ALICE_T}/runs/crons"),
        r#"{"assistant_id":"agent","schedule":"* * * * *"}"#,
    );
    r.assert_refused(
        404,
        &format!(
            "Thread with ID '{ALICE_T}' not found. Please verify the ID is correct and the thread hasn't been deleted or expired."
        ),
    );
    assert_eq!(r.events(), ["crons:create", "threads:read"]);
}

#[test]
fn thread_cron_raises_create_then_assistant_read_then_thread_read() {
    let body = format!(r#"{{"assistant_id":"{ALICE_A}","schedule":"* * * * *"}}"#);
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/runs/crons"),
        &body,
    );
    assert_eq!(
        r.events(),
        ["crons:create", "assistants:read", "threads:read"]
    );
    assert_eq!(r.body()["metadata"], json!({"owner": "alice"}));
}

#[test]
fn cron_with_foreign_assistant_is_assistant_not_found() {
    let body = format!(r#"{{"assistant_id":"{ALICE_A}","schedule":"* * * * *"}}"#);
    let r = post(&owner(), &user("bob"), "/runs/crons", &body);
    r.assert_refused(404, &format!("Assistant '{ALICE_A}' not found"));
}

#[test]
fn cron_with_missing_assistant_is_assistant_not_found() {
    let body = format!(r#"{{"assistant_id":"{MISSING_A}","schedule":"* * * * *"}}"#);
    post(&owner(), &user("alice"), "/runs/crons", &body)
        .assert_refused(404, &format!("Assistant '{MISSING_A}' not found"));
}

#[test]
fn cron_with_user_assistant_labelled_system_is_still_checked() {
    // System assistants are recognised by id, as docs/semantics.md says cron creation does.
    let body = format!(r#"{{"assistant_id":"{BOB_FAKE_SYSTEM_A}","schedule":"* * * * *"}}"#);
    let r = post(&owner(), &user("alice"), "/runs/crons", &body);
    assert_eq!(r.events(), ["crons:create", "assistants:read"]);
    r.assert_refused(404, &format!("Assistant '{BOB_FAKE_SYSTEM_A}' not found"));
}

#[test]
fn foreign_cron_read_is_plain_not_found() {
    // Scenario 36, GET.
    let r = get(&owner(), &user("bob"), &format!("/runs/crons/{ALICE_CRON}"));
    r.assert_refused(404, "Not Found");
    assert_eq!(r.needed, [cron(ALICE_CRON)]);
    assert_eq!(r.events(), ["crons:read"]);
}

#[test]
fn foreign_cron_patch_is_cron_not_found() {
    // Scenario 36, PATCH.
    let r = patch(
        &owner(),
        &user("bob"),
        &format!("/runs/crons/{ALICE_CRON}"),
        r#"{"schedule":"0 1 * * *"}"#,
    );
    r.assert_refused(404, &format!("Cron '{ALICE_CRON}' not found"));
    assert_eq!(r.events(), ["crons:update"]);
}

#[test]
fn foreign_cron_delete_is_plain_not_found() {
    // Scenario 36, DELETE.
    let r = delete(&owner(), &user("bob"), &format!("/runs/crons/{ALICE_CRON}"));
    r.assert_refused(404, "Not Found");
    assert_eq!(r.events(), ["crons:delete"]);
}

#[test]
fn missing_cron_read_is_plain_not_found() {
    get(
        &owner(),
        &user("alice"),
        &format!("/runs/crons/{MISSING_CRON}"),
    )
    .assert_refused(404, "Not Found");
}

#[test]
fn own_cron_patch_without_metadata_is_not_stamped() {
    let r = patch(
        &owner(),
        &user("alice"),
        &format!("/runs/crons/{ALICE_CRON}"),
        r#"{"schedule":"0 1 * * *"}"#,
    );
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![cron(ALICE_CRON)],
            ..forward()
        }
    );
}

#[test]
fn own_cron_patch_with_metadata_is_stamped() {
    let r = patch(
        &owner(),
        &user("alice"),
        &format!("/runs/crons/{ALICE_CRON}"),
        r#"{"metadata":{"owner":"bob"}}"#,
    );
    assert_eq!(r.body(), json!({"metadata": {"owner": "alice"}}));
    assert_eq!(r.forward().invalidate, [cron(ALICE_CRON)]);
}

#[test]
fn own_cron_delete_invalidates_lookup() {
    let r = delete(
        &owner(),
        &user("alice"),
        &format!("/runs/crons/{ALICE_CRON}"),
    );
    assert_eq!(
        r.forward(),
        &Forward {
            invalidate: vec![cron(ALICE_CRON)],
            ..forward()
        }
    );
}

#[test]
fn cron_search_filters_crons_upstream_and_threads_on_results() {
    // Scenario 37: the cron filter is pushed, the thread filter applies to each cron's thread.
    let r = post(
        &owner(),
        &user("alice"),
        "/runs/crons/search",
        r#"{"limit":20}"#,
    );
    assert_eq!(
        r.body(),
        json!({"limit": 20, "metadata": {"owner": "alice"}})
    );
    assert_eq!(
        r.forward().response,
        ResponsePlan::Search(SearchPlan {
            path: "/runs/crons/search",
            count: false,
            filter: None,
            thread_filter: Some(filter(json!({"owner": "alice"}))),
            limit: 20,
            offset: 0,
            access: vec![],
        })
    );
    assert_eq!(r.events(), ["crons:search", "threads:search"]);
}

#[test]
fn cron_count_plan_is_a_count() {
    let r = post(&owner(), &user("alice"), "/runs/crons/count", "{}");
    let ResponsePlan::Search(plan) = &r.forward().response else {
        panic!("expected a search plan")
    };
    assert!(plan.count);
    assert_eq!(plan.path, "/runs/crons/search");
}

#[test]
fn cron_search_on_foreign_thread_is_an_empty_page() {
    let body = format!(r#"{{"thread_id":"{ALICE_T}"}}"#);
    let r = post(&owner(), &user("bob"), "/runs/crons/search", &body);
    let reply = r.reply();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"[]");
    assert_eq!(reply.headers.len(), 1);
    assert_eq!(reply.headers[0].0, "x-pagination-total");
    assert_eq!(reply.headers[0].1, "0");
    assert_eq!(r.events(), ["crons:search", "threads:read"]);
}

#[test]
fn cron_count_on_missing_thread_is_zero() {
    let body = format!(r#"{{"thread_id":"{NEW_T}"}}"#);
    let r = post(&owner(), &user("alice"), "/runs/crons/count", &body);
    assert_eq!(r.reply().body, b"0");
    assert!(r.reply().headers.is_empty());
}

#[test]
fn cron_search_on_own_thread_is_pushed_down_only() {
    let body = format!(r#"{{"thread_id":"{ALICE_T}"}}"#);
    let r = post(&owner(), &user("alice"), "/runs/crons/search", &body);
    assert_eq!(
        r.body(),
        json!({"thread_id": ALICE_T, "metadata": {"owner": "alice"}})
    );
    assert_eq!(r.forward().response, ResponsePlan::Stream);
}

#[test]
fn cron_search_stamping_narrows_even_an_empty_client_metadata() {
    // Design question: the server hands crons.search a fresh `{}` when the client sent no
    // metadata, so a stamping-only handler does not narrow the search there; the gateway
    // stamps anyway (fails closed). Asserts the current behaviour.
    let p = inline(
        "handlers:\n  crons:search: {metadata: {team: x}}\n  threads:search: {allow: true}\n",
    );
    let r = post(&p, &user("alice"), "/runs/crons/search", "{}");
    assert_eq!(r.body(), json!({"metadata": {"team": "x"}}));
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

#[test]
fn store_require_mode_refuses_foreign_namespace() {
    // Scenario 25, put.
    let r = put(
        &resource(),
        &user("alice"),
        "/store/items",
        r#"{"namespace":["bob","n"],"key":"k1","value":{}}"#,
    );
    r.assert_refused(403, "Not authorized");
    assert_eq!(r.handlers(), ["store"]);
}

#[test]
fn store_require_mode_refuses_foreign_get() {
    // Scenario 25, get.
    get(
        &resource(),
        &user("alice"),
        "/store/items?namespace=bob.n&key=k1",
    )
    .assert_refused(403, "Not authorized");
}

#[test]
fn store_require_mode_forwards_own_namespace_unchanged() {
    // Scenario 25, own namespace.
    put(
        &resource(),
        &user("alice"),
        "/store/items",
        r#"{"namespace":["alice","n"],"key":"k1","value":{}}"#,
    )
    .assert_plain_forward();
    get(
        &resource(),
        &user("alice"),
        "/store/items?namespace=alice.n&key=k1",
    )
    .assert_plain_forward();
    run(
        &resource(),
        &user("alice"),
        Method::DELETE,
        "/store/items",
        r#"{"namespace":["alice"],"key":"k1"}"#,
    )
    .assert_plain_forward();
}

#[test]
fn store_require_mode_refuses_missing_prefix() {
    // Scenario 26: the server crashes (500); the gateway fails closed.
    post(&resource(), &user("alice"), "/store/namespaces", "{}")
        .assert_refused(403, "Not authorized");
    post(
        &resource(),
        &user("alice"),
        "/store/items/search",
        r#"{"namespace_prefix":[]}"#,
    )
    .assert_refused(403, "Not authorized");
}

#[test]
fn store_rewrite_prefixes_namespace_in_body_and_query() {
    // Scenario 28.
    let r = put(
        &store_rewrite(),
        &user("alice"),
        "/store/items",
        r#"{"namespace":["notes"],"key":"k1","value":{"a":1}}"#,
    );
    assert_eq!(
        r.body(),
        json!({"namespace": ["alice", "notes"], "key": "k1", "value": {"a": 1}})
    );
    let r = get(
        &store_rewrite(),
        &user("bob"),
        "/store/items?namespace=alice.notes&key=k1",
    );
    let f = r.forward();
    assert_eq!(f.query.as_deref(), Some("namespace=bob.alice.notes&key=k1"));
    assert_eq!(f.body, None);
}

#[test]
fn store_rewrite_adds_missing_namespace_to_the_query() {
    let r = get(&store_rewrite(), &user("bob"), "/store/items?key=k1");
    assert_eq!(r.forward().query.as_deref(), Some("key=k1&namespace=bob"));
}

#[test]
fn store_rewrite_keeps_an_already_prefixed_namespace() {
    put(
        &store_rewrite(),
        &user("alice"),
        "/store/items",
        r#"{"namespace":["alice","notes"],"key":"k1","value":{}}"#,
    )
    .assert_plain_forward();
}

#[test]
fn store_rewrite_list_namespaces_without_prefix_lists_own_only() {
    // Scenario 28: bob sees only ["bob", ...].
    let r = post(
        &store_rewrite(),
        &user("bob"),
        "/store/namespaces",
        r#"{"max_depth":2}"#,
    );
    assert_eq!(r.body(), json!({"max_depth": 2, "prefix": ["bob"]}));
    assert_eq!(r.events(), ["store:list_namespaces"]);
}

#[test]
fn store_rewrite_search_and_delete_rewrite_their_namespace() {
    let r = post(
        &store_rewrite(),
        &user("bob"),
        "/store/items/search",
        r#"{"namespace_prefix":["alice"]}"#,
    );
    assert_eq!(r.body(), json!({"namespace_prefix": ["bob", "alice"]}));
    let r = run(
        &store_rewrite(),
        &user("bob"),
        Method::DELETE,
        "/store/items",
        r#"{"namespace":["alice","notes"],"key":"k1"}"#,
    );
    assert_eq!(
        r.body(),
        json!({"namespace": ["bob", "alice", "notes"], "key": "k1"})
    );
}

#[test]
fn store_owner_filter_on_search_is_pushed_into_the_item_filter() {
    // Scenario 27: the global owner filter applies to item values; a client's spoof is
    // overwritten.
    let r = post(
        &owner(),
        &user("alice"),
        "/store/items/search",
        r#"{"namespace_prefix":["alice"],"filter":{"owner":"bob"}}"#,
    );
    assert_eq!(
        r.body(),
        json!({"namespace_prefix": ["alice"], "filter": {"owner": "alice"}})
    );
    assert_eq!(r.forward().response, ResponsePlan::Stream);
}

#[test]
fn store_global_handler_gives_no_isolation_on_get() {
    // Scenario 27: the return value of a get handler is ignored.
    get(
        &owner(),
        &user("alice"),
        "/store/items?namespace=bob.n&key=k1",
    )
    .assert_plain_forward();
}

#[test]
fn store_contains_filter_becomes_an_item_plan() {
    let p = inline(
        "handlers:\n  store:search: {filter: {owner: \"{user.identity}\", tags: {$contains: x}}}\n",
    );
    let r = post(
        &p,
        &user("alice"),
        "/store/items/search",
        r#"{"namespace_prefix":["a"]}"#,
    );
    assert_eq!(
        r.body(),
        json!({"namespace_prefix": ["a"], "filter": {"owner": "alice"}})
    );
    assert_eq!(
        r.forward().response,
        ResponsePlan::StoreItems {
            filter: Some(filter(json!({"tags": {"$contains": "x"}}))),
            access: vec![],
        }
    );
}

#[test]
fn store_search_rewrite_and_filter_apply_together() {
    let p = inline(
        "handlers:\n  store:search:\n    namespace: {prefix: [\"{user.identity}\"], mode: rewrite}\n    filter: {owner: \"{user.identity}\"}\n",
    );
    let r = post(
        &p,
        &user("alice"),
        "/store/items/search",
        r#"{"namespace_prefix":["docs"],"limit":5}"#,
    );
    assert_eq!(
        r.body(),
        json!({"namespace_prefix": ["alice", "docs"], "limit": 5, "filter": {"owner": "alice"}})
    );
}

#[test]
fn store_invalid_label_is_unprocessable_even_when_denied() {
    // semantics §6: labels are validated before the handler runs.
    let p = inline("handlers:\n  store: {allow: false}\n");
    let r = put(
        &p,
        &user("alice"),
        "/store/items",
        r#"{"namespace":["a.b"],"key":"k","value":{}}"#,
    );
    r.assert_refused(
        422,
        "Namespace label 'a.b' must be a non-empty string without periods",
    );
    assert!(r.decision.steps.is_empty());
    let r = get(&p, &user("alice"), "/store/items?namespace=&key=k");
    r.assert_refused(
        422,
        "Namespace label '' must be a non-empty string without periods",
    );
}

#[test]
fn store_get_with_repeated_namespace_is_bad_request() {
    let r = get(
        &store_rewrite(),
        &user("alice"),
        "/store/items?namespace=alice&namespace=bob&key=k",
    );
    r.assert_refused(400, "Repeated query parameter 'namespace'");
}

#[test]
fn store_non_string_label_is_unprocessable() {
    let r = put(
        &store_rewrite(),
        &user("alice"),
        "/store/items",
        r#"{"namespace":[1],"key":"k","value":{}}"#,
    );
    r.assert_refused(422, "namespace labels must be strings");
}

// ---------------------------------------------------------------------------------------------
// Body parsing differentials
// ---------------------------------------------------------------------------------------------

#[test]
fn escaped_owner_key_spoof_is_overwritten_not_duplicated() {
    let r = post(
        &owner(),
        &user("alice"),
        "/threads/search",
        r#"{"metadata":{"own\u0065r":"bob"}}"#,
    );
    let raw = r.sent();
    // The rewritten body must still parse strictly (no duplicate `owner`).
    crate::body::splice::ObjectBody::parse(&raw, MAX_JSON_DEPTH).expect("no duplicate keys");
    assert_eq!(r.body(), json!({"metadata": {"owner": "alice"}}));
}

#[test]
fn duplicate_metadata_key_is_refused_before_any_handler() {
    let e = try_run(
        &owner(),
        &user("alice"),
        Method::POST,
        "/threads",
        r#"{"metadata":{"owner":"a","owner":"b"}}"#,
        &world(),
    )
    .unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    let e = try_run(
        &owner(),
        &user("alice"),
        Method::POST,
        "/threads/search",
        r#"{"metadata":{},"metadata":{}}"#,
        &world(),
    )
    .unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
}

#[test]
fn malformed_json_body_is_unprocessable() {
    let e = try_run(
        &owner(),
        &user("alice"),
        Method::POST,
        "/threads",
        "{",
        &world(),
    )
    .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.detail.as_str()),
        (422, "Invalid JSON in request body")
    );
    let e = try_run(
        &owner(),
        &user("alice"),
        Method::POST,
        "/threads",
        "[]",
        &world(),
    )
    .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.detail.as_str()),
        (422, "Request body must be a JSON object")
    );
}

#[test]
fn empty_object_body_reads_as_empty_object() {
    let r = post(&owner(), &user("alice"), "/threads", "  ");
    assert_eq!(r.body(), json!({"metadata": {"owner": "alice"}}));
}

// ---------------------------------------------------------------------------------------------
// Every row of the route table
// ---------------------------------------------------------------------------------------------

/// A concrete request for a row: alice's resources in every parameter.
fn row_request(row: &crate::routes::Route) -> (String, &'static str) {
    let path = row
        .template
        .replace("{thread_id}", ALICE_T)
        .replace("{run_id}", RUN)
        .replace("{cron_id}", ALICE_CRON)
        .replace("{assistant_id}", ALICE_A)
        .replace("{checkpoint_id}", "cp1")
        .replace("{namespace}", "sub")
        .replace("{*rest}", "x/y");
    let body = match row.body {
        crate::routes::BodyKind::Opaque => "",
        crate::routes::BodyKind::Object(_) => "{}",
        crate::routes::BodyKind::Array(_) => "[]",
    };
    (path, body)
}

#[test]
fn every_row_raises_only_its_declared_events() {
    for row in crate::routes::TABLE.iter() {
        let (path, body) = row_request(row);
        let r = run(&owner(), &user("alice"), row.method.clone(), &path, body);
        if let Outcome::Refuse(e) = &r.decision.outcome {
            assert_ne!(
                e.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{} {}: {e}",
                row.method,
                row.template
            );
        }
        for s in &r.decision.steps {
            assert!(
                row.events.contains(&s.event),
                "{} {} raised {} (declared {:?})",
                row.method,
                row.template,
                s.event,
                row.events
            );
        }
    }
}

#[test]
fn deny_all_policy_refuses_every_mediated_row() {
    let p = inline("handlers:\n  \"*\": {allow: false}\n");
    for row in crate::routes::TABLE.iter() {
        let (path, body) = row_request(row);
        let r = run(&p, &user("alice"), row.method.clone(), &path, body);
        let mediated = !row.events.is_empty();
        // An empty prune list or batch has nothing to authorize (no handler call).
        let nothing_to_authorize = matches!(row.op, Op::ThreadPrune | Op::RunBatch);
        match &r.decision.outcome {
            Outcome::Refuse(e) => {
                assert_eq!(
                    e.status,
                    StatusCode::FORBIDDEN,
                    "{} {}: {e}",
                    row.method,
                    row.template
                );
            }
            o => assert!(
                !mediated || nothing_to_authorize,
                "{} {} was not refused: {o:?}",
                row.method,
                row.template
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Roles (RBAC) and access policies (ABAC) through the decision
// ---------------------------------------------------------------------------------------------

const ABAC: &str = r#"
roles:
  member: ["threads:*", "assistants:read", "store:*"]
  auditor: []
access_policies:
  - name: Block PII
    effect: deny
    condition_groups:
      - permission: threads:read
        resource_type: thread
        conditions:
          - {attribute_name: resource_tag_key, attribute_key: Contains-PII, operator: equals, attribute_value: "true"}
      - permission: threads:create_run
        resource_type: thread
        conditions:
          - {attribute_name: resource_tag_key, attribute_key: Contains-PII, operator: equals, attribute_value: "true"}
  - name: Auditors read team A
    effect: allow
    role_ids: [auditor]
    condition_groups:
      - permission: threads:read
        resource_type: thread
        conditions:
          - {attribute_name: resource_tag_key, attribute_key: Team, operator: equals, attribute_value: A}
      - permission: threads:search
        resource_type: thread
        conditions:
          - {attribute_name: resource_tag_key, attribute_key: Team, operator: equals, attribute_value: A}
handlers: {}
"#;

fn with_roles(id: &str, roles: &[&str]) -> User {
    User {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..user(id)
    }
}

fn abac_world(md: Value) -> HashMap<Target, Option<Value>> {
    HashMap::from([
        (
            Target::Thread(NEW_T.into()),
            Some(json!({"thread_id": NEW_T, "metadata": md})),
        ),
        (
            Target::Assistant(system_a()),
            Some(json!({"assistant_id": system_a(), "graph_id": "agent", "metadata": {}})),
        ),
    ])
}

#[test]
fn abac_deny_on_tag_wins_over_rbac() {
    let p = inline(ABAC);
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "GET",
        &format!("/threads/{NEW_T}"),
        "",
        abac_world(json!({"Contains-PII": "true"})),
    );
    r.assert_refused(403, "Forbidden: threads:read is denied by an access policy");
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "GET",
        &format!("/threads/{NEW_T}"),
        "",
        abac_world(json!({"Contains-PII": "false"})),
    );
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    assert_eq!(r.decision.access.len(), 1);
}

#[test]
fn abac_allow_grants_without_rbac_and_rbac_fallback_denies() {
    let p = inline(ABAC);
    let auditor = with_roles("aud", &["auditor"]);
    let r = run_with(
        &p,
        &auditor,
        "GET",
        &format!("/threads/{NEW_T}"),
        "",
        abac_world(json!({"Team": "A"})),
    );
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    assert_eq!(
        r.decision.access[0].reason,
        crate::policy::access::Reason::AllowGrants
    );
    let r = run_with(
        &p,
        &auditor,
        "GET",
        &format!("/threads/{NEW_T}"),
        "",
        abac_world(json!({"Team": "B"})),
    );
    r.assert_refused(
        403,
        "Forbidden: no role or access policy grants threads:read",
    );
    let r = run_with(
        &p,
        &auditor,
        "DELETE",
        &format!("/threads/{NEW_T}"),
        "",
        abac_world(json!({"Team": "A"})),
    );
    r.assert_refused(
        403,
        "Forbidden: no role or access policy grants threads:delete",
    );
}

#[test]
fn abac_runs_are_evaluated_against_their_thread() {
    let p = inline(ABAC);
    let body = r#"{"assistant_id":"agent"}"#;
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        &format!("/threads/{NEW_T}/runs/wait"),
        body,
        abac_world(json!({"Contains-PII": "true"})),
    );
    r.assert_refused(
        403,
        "Forbidden: threads:create_run is denied by an access policy",
    );
}

#[test]
fn abac_create_reads_the_stamped_body_metadata() {
    let p = inline(
        &ABAC
            .replace(
                "handlers: {}",
                "handlers:\n  threads:create: {metadata: {Contains-PII: \"true\"}}\n",
            )
            .replace(
                "permission: threads:create_run",
                "permission: threads:create",
            ),
    );
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        "/threads",
        r#"{"metadata":{"Contains-PII":"false"}}"#,
        HashMap::new(),
    );
    r.assert_refused(
        403,
        "Forbidden: threads:create is denied by an access policy",
    );
}

#[test]
fn abac_search_becomes_a_per_item_plan() {
    let p = inline(ABAC);
    let r = run_with(
        &p,
        &with_roles("aud", &["auditor"]),
        "POST",
        "/threads/search",
        r#"{"limit":5}"#,
        HashMap::new(),
    );
    match &r.forward().response {
        ResponsePlan::Search(plan) => {
            assert_eq!(
                plan.access,
                vec![Event::new(Resource::Threads, crate::event::Action::Search)]
            );
            assert_eq!((plan.limit, plan.offset), (5, 0));
        }
        other => panic!("expected a search plan, got {other:?}"),
    }
}

#[test]
fn abac_without_applicable_policies_needs_no_lookup() {
    let p = inline(ABAC);
    // Members' policies for threads:update: none apply, RBAC (threads:*) decides.
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        &format!("/threads/{NEW_T}/runs/{RUN}/cancel"),
        "",
        HashMap::new(),
    );
    assert!(r.needed.is_empty(), "{:?}", r.needed);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}

fn run_with(p: &Policy, u: &User, method: &str, uri: &str, body: &str, w: World) -> Ran {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    try_run(p, u, m, uri, body, &w).unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Resource identity: the resource authorized is the resource the server touches
// ---------------------------------------------------------------------------------------------

/// Spellings Python's `uuid.UUID()` reads as `id`, none of them canonical.
fn spellings(id: &str) -> Vec<String> {
    let hex = id.replace('-', "");
    vec![
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        format!("uuid:{id}"),
        id.to_uppercase(),
        hex.clone(),
        format!("{{{{{hex}"),
        format!("{}-{}", &hex[..5], &hex[5..]),
    ]
}

#[test]
fn every_spelling_of_an_assistant_in_a_run_body_is_refused() {
    // Bob names alice's private assistant in another spelling: the server would run it.
    let run_routes = [
        format!("/threads/{BOB_T}/runs"),
        format!("/threads/{BOB_T}/runs/wait"),
        format!("/threads/{BOB_T}/runs/stream"),
        "/runs".to_string(),
        "/runs/wait".to_string(),
        "/runs/stream".to_string(),
    ];
    for spelled in spellings(ALICE_A) {
        assert_eq!(crate::ids::py_uuid(&spelled).unwrap().to_string(), ALICE_A);
        let body = json!({"assistant_id": spelled}).to_string();
        for path in &run_routes {
            let r = post(&owner(), &user("bob"), path, &body);
            let e = r.refusal();
            assert_eq!(
                e.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {spelled}"
            );
            assert!(e.detail.contains("canonical form"), "{}", e.detail);
            assert!(r.needed.is_empty(), "nothing looked up: {:?}", r.needed);
        }
        let batch = format!("[{body}]");
        post(&owner(), &user("bob"), "/runs/batch", &batch).refusal();
        let cmd = json!({"id": 1, "method": "run.start", "params": {"assistant_id": spelled}});
        let r = post(
            &owner(),
            &user("bob"),
            &format!("/threads/{BOB_T}/commands"),
            &cmd.to_string(),
        );
        assert_eq!(r.refusal().status, StatusCode::UNPROCESSABLE_ENTITY);
        let cron = json!({"assistant_id": spelled, "schedule": "* * * * *"});
        post(&owner(), &user("bob"), "/runs/crons", &cron.to_string()).refusal();
    }
}

#[test]
fn a_graph_name_is_authorized_as_the_assistant_the_server_resolves_it_to() {
    // Bob's own assistant sits at the id a graph name `evil` would resolve to: naming the
    // graph is naming that assistant, checked like any other (never exempt as a graph name).
    let evil = system_assistant_id("evil").to_string();
    let mut w = world();
    w.insert(
        assistant(&evil),
        Some(json!({"assistant_id": evil, "graph_id": "agent", "metadata": {"owner": "bob"}})),
    );
    let body = r#"{"assistant_id":"evil"}"#;
    let r = try_run(&owner(), &user("alice"), Method::POST, "/runs", body, &w).unwrap();
    r.assert_refused(404, "Thread or assistant not found.");
    assert!(r.needed.contains(&assistant(&evil)));
    // A graph whose system assistant does not exist is not a graph: 404, nothing forwarded.
    post(
        &owner(),
        &user("alice"),
        "/runs",
        r#"{"assistant_id":"nosuchgraph"}"#,
    )
    .assert_refused(404, "Thread or assistant not found.");
    // The real system assistant is exempt.
    assert!(matches!(
        post(
            &owner(),
            &user("alice"),
            "/runs",
            r#"{"assistant_id":"agent"}"#
        )
        .decision
        .outcome,
        Outcome::Forward(_)
    ));
}

#[test]
fn every_body_id_must_be_canonical() {
    let alt = BOB_T.to_uppercase();
    for (path, body) in [
        ("/threads".to_string(), json!({"thread_id": alt})),
        (
            "/threads/prune".to_string(),
            json!({"thread_ids": [ALICE_T, alt]}),
        ),
        ("/threads/search".to_string(), json!({"ids": [alt]})),
        (
            "/runs/cancel".to_string(),
            json!({"thread_id": alt, "run_ids": [RUN]}),
        ),
        (
            "/runs/cancel".to_string(),
            json!({"thread_id": BOB_T, "run_ids": [RUN.to_uppercase()]}),
        ),
        ("/runs/crons/search".to_string(), json!({"thread_id": alt})),
        ("/runs/crons/count".to_string(), json!({"thread_id": alt})),
        (
            "/assistants".to_string(),
            json!({"assistant_id": ALICE_A.to_uppercase(), "graph_id": "agent"}),
        ),
    ] {
        let r = post(&owner(), &user("alice"), &path, &body.to_string());
        let e = r.refusal();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}");
        assert!(e.detail.contains("canonical form"), "{path}: {}", e.detail);
    }
    post(
        &owner(),
        &user("alice"),
        "/threads",
        r#"{"thread_id":"nope"}"#,
    )
    .assert_refused(422, "Invalid thread ID: must be a UUID");
}

#[test]
fn path_ids_must_be_canonical() {
    for path in [
        format!("/threads/{}", ALICE_T.to_uppercase()),
        format!("/threads/{}/state", ALICE_T.replace('-', "")),
        format!("/threads/urn:uuid:{ALICE_T}/history"),
        format!("/threads/{ALICE_T}/runs/{}", RUN.to_uppercase()),
        format!("/runs/crons/{}", ALICE_CRON.to_uppercase()),
        format!("/assistants/{}", ALICE_A.to_uppercase()),
        format!("/assistants/urn:uuid:{ALICE_A}/graph"),
    ] {
        let m = classify(&Method::GET, &path).unwrap();
        let e = validate_params(&m).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert!(e.detail.contains("canonical form"), "{path}: {}", e.detail);
    }
}

#[test]
fn do_nothing_on_an_existing_thread_needs_the_read_check() {
    // H3's threads:create only stamps (no filter): LangGraph hands back bob's... carol's
    // thread to anyone who names it with do_nothing. graphguard runs the read check.
    let body = json!({"thread_id": CAROL_T, "if_exists": "do_nothing"}).to_string();
    let r = post(&participants(), &user("dave"), "/threads", &body);
    r.assert_refused(409, &format!("Thread with ID {CAROL_T} already exists"));
    assert_eq!(r.events(), ["threads:create", "threads:read"]);
    // A participant may.
    let r = post(&participants(), &user("shared"), "/threads", &body);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    // `raise` (the default) is left to the server, which answers 409 itself.
    let body = json!({"thread_id": CAROL_T}).to_string();
    let r = post(&participants(), &user("dave"), "/threads", &body);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    assert!(r.needed.is_empty());
}

#[test]
fn supersteps_on_an_existing_thread_need_its_update_check() {
    let p = inline(
        "handlers:\n  threads:create: {allow: true}\n  threads:read: {allow: true}\n  \
         threads:update: {filter: {owner: '{user.identity}'}}\n",
    );
    let body = json!({"thread_id": BOB_T, "if_exists": "do_nothing",
        "supersteps": [{"updates": [{"values": {"x": 1}, "as_node": "n"}]}]})
    .to_string();
    post(&p, &user("alice"), "/threads", &body)
        .assert_refused(409, &format!("Thread with ID {BOB_T} already exists"));
    let r = post(&p, &user("bob"), "/threads", &body);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}

#[test]
fn do_nothing_on_an_existing_thread_reads_access_policies_on_its_tags() {
    // The Block PII policy denies reading the thread; naming it in a create must not return it.
    let p = inline(ABAC);
    let body = json!({"thread_id": NEW_T, "if_exists": "do_nothing"}).to_string();
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        "/threads",
        &body,
        abac_world(json!({"Contains-PII": "true"})),
    );
    r.assert_refused(409, &format!("Thread with ID {NEW_T} already exists"));
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        "/threads",
        &body,
        abac_world(json!({"Contains-PII": "false"})),
    );
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}

#[test]
fn do_nothing_on_an_existing_assistant_needs_the_read_check() {
    let p = inline(
        "handlers:\n  assistants:create: {allow: true}\n  \
         assistants:read: {filter: {owner: '{user.identity}'}}\n",
    );
    let body = json!({"assistant_id": ALICE_A, "graph_id": "agent", "if_exists": "do_nothing"})
        .to_string();
    post(&p, &user("bob"), "/assistants", &body)
        .assert_refused(409, &format!("Assistant {ALICE_A} already exists"));
    let r = post(&p, &user("alice"), "/assistants", &body);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}

#[test]
fn identity_keys_are_removed_from_every_configuration_a_body_carries() {
    let spoof = json!({"x-graphguard-user-id": "root", "X-GraphGuard-User-Permissions": "[\"*\"]",
        "langgraph_auth_user_id": "root", "x-graphguard-anything": 1, "keep": "me"});
    let clean = json!({"keep": "me"});
    let run = json!({"assistant_id": "agent", "config": {"tags": ["t"], "configurable": spoof},
        "context": spoof, "checkpoint": spoof});
    for path in [format!("/threads/{ALICE_T}/runs"), "/runs/wait".to_string()] {
        let r = post(&owner(), &user("alice"), &path, &run.to_string());
        let b = r.body();
        assert_eq!(
            b["config"],
            json!({"tags": ["t"], "configurable": clean}),
            "{path}"
        );
        assert_eq!(b["context"], clean, "{path}");
        assert_eq!(b["checkpoint"], clean, "{path}");
        assert_eq!(b["metadata"], json!({"owner": "alice"}), "{path}");
    }
    let r = post(
        &owner(),
        &user("alice"),
        "/runs/batch",
        &format!("[{run},{run}]"),
    );
    for item in r.body().as_array().unwrap() {
        assert_eq!(item["config"]["configurable"], clean);
        assert_eq!(item["context"], clean);
    }
    let cron = json!({"assistant_id": "agent", "schedule": "* * * * *",
        "config": {"configurable": spoof}, "context": spoof});
    let r = post(&owner(), &user("alice"), "/runs/crons", &cron.to_string());
    assert_eq!(r.body()["config"]["configurable"], clean);
    assert_eq!(r.body()["context"], clean);
    let r = patch(
        &owner(),
        &user("alice"),
        &format!("/runs/crons/{ALICE_CRON}"),
        &json!({"config": {"configurable": spoof}}).to_string(),
    );
    assert_eq!(r.body()["config"]["configurable"], clean);
    let a = json!({"graph_id": "agent", "config": {"configurable": spoof}, "context": spoof});
    let r = post(&owner(), &user("alice"), "/assistants", &a.to_string());
    assert_eq!(r.body()["config"]["configurable"], clean);
    assert_eq!(r.body()["context"], clean);
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/state"),
        &json!({"values": {}, "checkpoint": spoof}).to_string(),
    );
    assert_eq!(r.body()["checkpoint"], clean);
    let cmd = json!({"id": 1, "method": "run.start",
        "params": {"assistant_id": "agent", "config": {"configurable": spoof}}});
    let r = post(
        &owner(),
        &user("alice"),
        &format!("/threads/{ALICE_T}/commands"),
        &cmd.to_string(),
    );
    assert_eq!(r.body()["params"]["config"]["configurable"], clean);
    assert_eq!(r.body()["params"]["metadata"], json!({"owner": "alice"}));
}

#[test]
fn renamed_identity_headers_are_removed_by_their_configured_names() {
    let p = inline(
        "settings:\n  user_headers: {identity: x-user, permissions: x-perms, strip: [x-tenant]}\n",
    );
    let spoof = json!({"X-User": "root", "x-perms": "*", "x-tenant": "t", "keep": 1});
    let r = post(
        &p,
        &user("alice"),
        "/runs",
        &json!({"assistant_id": "agent", "context": spoof}).to_string(),
    );
    assert_eq!(r.body()["context"], json!({"keep": 1}));
}

#[test]
fn a_body_without_identity_keys_is_forwarded_untouched() {
    let body = r#"{"assistant_id":"agent","config":{"configurable":{"a":1}},"context":{"b":2}}"#;
    let p = inline("handlers: {}\n");
    let r = post(&p, &user("alice"), "/runs", body);
    assert_eq!(r.forward().body, None);
}

#[test]
fn unknown_fields_are_refused_where_they_could_change_the_target() {
    for (path, body) in [
        ("/threads", r#"{"values":{}}"#),
        ("/runs", r#"{"assistant_id":"agent","thread_id":"x"}"#),
        (
            "/runs/crons",
            r#"{"assistant_id":"agent","schedule":"* * * * *","checkpoint":{}}"#,
        ),
        (
            "/assistants",
            r#"{"graph_id":"agent","if_not_exists":"create"}"#,
        ),
        (
            "/store/items/search",
            r#"{"namespace_prefix":[],"namespace":["x"]}"#,
        ),
    ] {
        let r = post(&owner(), &user("alice"), path, body);
        let e = r.refusal();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert!(
            e.detail.starts_with("Unknown field"),
            "{path}: {}",
            e.detail
        );
    }
}

#[test]
fn webhooks_to_private_addresses_are_refused() {
    for url in [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://8.8.8.8/hook",
        "https://localhost/hook",
        "/runs/x",
    ] {
        let body = json!({"assistant_id": "agent", "webhook": url}).to_string();
        for path in ["/runs", "/runs/crons"] {
            let body = if path == "/runs/crons" {
                json!({"assistant_id": "agent", "webhook": url, "schedule": "* * * * *"})
                    .to_string()
            } else {
                body.clone()
            };
            let r = post(&owner(), &user("alice"), path, &body);
            assert_eq!(r.refusal().status, StatusCode::FORBIDDEN, "{path} {url}");
        }
    }
    let r = post(
        &owner(),
        &user("alice"),
        "/runs",
        r#"{"assistant_id":"agent","webhook":"https://8.8.8.8/hook"}"#,
    );
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}

#[test]
fn webhook_host_names_are_resolved_and_every_address_checked() {
    let body = r#"{"assistant_id":"agent","webhook":"https://hooks.example.com/x"}"#;
    let mut w = world();
    w.insert(
        Target::Host("hooks.example.com".into()),
        Some(json!(["93.184.216.34", "10.1.2.3"])),
    );
    let r = try_run(&owner(), &user("alice"), Method::POST, "/runs", body, &w).unwrap();
    assert_eq!(r.refusal().status, StatusCode::FORBIDDEN);
    assert!(r.needed.contains(&Target::Host("hooks.example.com".into())));
    w.insert(
        Target::Host("hooks.example.com".into()),
        Some(json!(["93.184.216.34"])),
    );
    let r = try_run(&owner(), &user("alice"), Method::POST, "/runs", body, &w).unwrap();
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    // A name that does not resolve is refused.
    let r = post(&owner(), &user("alice"), "/runs", body);
    assert_eq!(r.refusal().status, StatusCode::FORBIDDEN);
}

#[test]
fn cancelling_by_status_is_refused_when_access_depends_on_the_thread() {
    let p = inline(ABAC);
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        "/runs/cancel",
        r#"{"status":"running"}"#,
        HashMap::new(),
    );
    // member holds threads:* and no policy reads tags for threads:update: allowed.
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    let p = inline(&ABAC.replace(
        "permission: threads:create_run",
        "permission: threads:update",
    ));
    let r = run_with(
        &p,
        &with_roles("m", &["member"]),
        "POST",
        "/runs/cancel",
        r#"{"status":"running"}"#,
        HashMap::new(),
    );
    assert_eq!(r.refusal().status, StatusCode::FORBIDDEN);
}

#[test]
fn deleting_an_assistants_threads_is_refused_when_access_depends_on_the_thread() {
    // The server deletes every thread that ran with the assistant, whoever owns it.
    let abac = ABAC.replace("\"assistants:read\"", "\"assistants:*\"");
    let p = inline(&abac.replace(
        "permission: threads:create_run",
        "permission: threads:delete",
    ));
    let mut w = abac_world(json!({}));
    w.insert(
        assistant(ALICE_A),
        Some(json!({"assistant_id": ALICE_A, "graph_id": "agent", "metadata": {}})),
    );
    let member = with_roles("m", &["member"]);
    let uri = format!("/assistants/{ALICE_A}");
    let r = run_with(
        &p,
        &member,
        "DELETE",
        &format!("{uri}?delete_threads=true"),
        "",
        w.clone(),
    );
    assert_eq!(r.refusal().status, StatusCode::FORBIDDEN);
    assert!(
        r.refusal().detail.contains("delete_threads"),
        "{:?}",
        r.refusal()
    );
    let r = run_with(
        &inline(&abac),
        &member,
        "DELETE",
        &format!("{uri}?delete_threads=true"),
        "",
        w,
    );
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
}
