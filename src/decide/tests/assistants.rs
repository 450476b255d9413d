//! Assistants.

use super::*;

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
