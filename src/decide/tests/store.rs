//! The store.

use super::*;

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
