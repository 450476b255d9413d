//! Roles (RBAC) and access policies (ABAC) through the decision.

use super::*;

// ---------------------------------------------------------------------------------------------
// Roles (RBAC) and access policies (ABAC) through the decision
// ---------------------------------------------------------------------------------------------

pub(super) const ABAC: &str = r#"
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

pub(super) fn with_roles(id: &str, roles: &[&str]) -> User {
    User {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..user(id)
    }
}

pub(super) fn abac_world(md: Value) -> HashMap<Target, Option<Value>> {
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

pub(super) fn run_with(p: &Policy, u: &User, method: &str, uri: &str, body: &str, w: World) -> Ran {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    try_run(p, u, m, uri, body, &w).unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
}

#[test]
fn each_batch_item_is_evaluated_on_the_thread_it_creates() {
    // Runs are granted by a policy on the thread's tags; a batch item's thread takes the
    // item's own metadata.
    let p = inline(
        "roles:\n  member: [\"threads:create\"]\naccess_policies:\n  - name: team runs\n    \
         effect: allow\n    role_ids: [member]\n    condition_groups:\n      - permission: \
         threads:create_run\n        resource_type: thread\n        conditions:\n          - \
         {attribute_name: resource_tag_key, attribute_key: Team, operator: equals, \
         attribute_value: A}\n",
    );
    let m = with_roles("m", &["member"]);
    let sys = system_a();
    let ok = format!(r#"[{{"assistant_id":"{sys}","metadata":{{"Team":"A"}}}}]"#);
    let r = run_with(&p, &m, "POST", "/runs/batch", &ok, world());
    assert!(
        matches!(r.decision.outcome, Outcome::Forward(_)),
        "{:?}",
        r.decision.outcome
    );
    let mixed = format!(
        r#"[{{"assistant_id":"{sys}","metadata":{{"Team":"A"}}}},{{"assistant_id":"{sys}","metadata":{{"Team":"B"}}}}]"#
    );
    let r = run_with(&p, &m, "POST", "/runs/batch", &mixed, world());
    assert_eq!(r.refusal().status, StatusCode::FORBIDDEN);
}
