//! Public, blocked and unmediated routes, body parsing differentials, and every row of the route table.

use super::*;

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
