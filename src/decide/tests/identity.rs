//! Resource identity: the resource authorized is the resource the server touches.

use super::access::{abac_world, run_with, with_roles, ABAC};
use super::*;

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
