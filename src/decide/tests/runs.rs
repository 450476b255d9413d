//! Runs: commands, creation, batches, listing, cancelling.

use super::*;

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
    // `/wait` answers with the thread's state: its read check follows (semantics §5.2 step 9).
    assert_eq!(
        r.events(),
        ["threads:create_run", "assistants:read", "threads:read"]
    );
    assert_eq!(r.handlers(), ["*", "*", "*"]);
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
    assert_eq!(r.events(), ["threads:create_run", "threads:read"]);
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

#[test]
fn a_run_that_answers_with_the_state_needs_the_read_check_on_the_thread() {
    // Starting runs on a thread is not reading it: `/wait` and `/stream` answer with the
    // thread's state, so a caller who may create runs but not read must not get them.
    let p = inline(
        "handlers:\n  threads:create_run: {allow: true}\n  threads:read: {filter: {owner: '{user.identity}'}}\n",
    );
    let body = format!(r#"{{"assistant_id":"{}"}}"#, system_a());
    for route in ["runs/wait", "runs/stream"] {
        post(
            &p,
            &user("bob"),
            &format!("/threads/{ALICE_T}/{route}"),
            &body,
        )
        .assert_refused(404, "Thread or assistant not found.");
        let own = post(
            &p,
            &user("alice"),
            &format!("/threads/{ALICE_T}/{route}"),
            &body,
        );
        assert!(
            matches!(own.decision.outcome, Outcome::Forward(_)),
            "{route}"
        );
    }
    // A background run answers with the run only: the create_run permission suffices.
    let r = post(&p, &user("bob"), &format!("/threads/{ALICE_T}/runs"), &body);
    assert!(matches!(r.decision.outcome, Outcome::Forward(_)));
    assert_eq!(r.events(), ["threads:create_run"]);
}
