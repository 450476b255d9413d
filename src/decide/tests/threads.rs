//! Threads: create, search and count, prune, by-id routes, patch, state, copy.

use super::*;

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
