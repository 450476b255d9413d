//! Crons.

use super::*;

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
