//! The management API (roles and access policies, LangSmith's paths) on the embedded policy
//! store, through the gateway: who may call it, what it answers, what it refuses (and stores
//! nothing of), concurrency with `If-Match`, history and restore, and that a change is enforced
//! at once. Nothing of it ever reaches the agent server. The fleet (PostgreSQL, three replicas)
//! is tests/e2e/test_fleet_policies.py.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use graphguard::ops::manage::Manager;
use graphguard::ops::metrics::Metrics;
use graphguard::ops::reload::{self, Reloader};
use graphguard::policy::managed::ManagedState;
use http::{Method, StatusCode};
use serde_json::{json, Value};

const API: &str = "/api/v1/platform/orgs/current/access-policies";
const ROLES: &str = "/api/v1/orgs/current/roles";
const REVISIONS: &str = "/api/v1/graphguard/policy-store/revisions";
const ADMIN_KEY: &str = "admin-demo-key";

fn pii_policy(name: &str) -> Value {
    json!({"name": name, "effect": "deny", "role_ids": ["engineer"], "condition_groups": [
        {"permission": "threads:read", "resource_type": "thread", "conditions": [
            {"attribute_name": "resource_tag_key", "attribute_key": "Contains-PII",
             "operator": "equals", "attribute_value": "true"}]}]})
}

/// policies/abac without its PII policy, with the management API on.
fn policy_dir(root: &Path, management: bool) -> std::path::PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(policy_dir_of("abac")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let file = dir.join("access-policies.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    doc["access_policies"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["name"] != "Block PII Threads");
    std::fs::write(&file, doc.to_string()).unwrap();
    if management {
        std::fs::write(
            dir.join("management.yaml"),
            "settings:\n  management: { permission: \"organization:manage\" }\n",
        )
        .unwrap();
    }
    dir
}

fn policy_dir_of(name: &str) -> std::path::PathBuf {
    common::policy_dir(name)
}

struct Stack {
    up: MockUpstream,
    gw: TestGateway,
    dir: std::path::PathBuf,
    reloader: Option<Arc<Reloader>>,
    _root: tempfile::TempDir,
}

/// A gateway on `policies/abac` with a file store in a temporary directory (`store: false`:
/// none, so the API is off).
async fn stack(management: bool, store: bool) -> Stack {
    let root = tempfile::tempdir().unwrap();
    let dir = policy_dir(root.path(), management);
    stack_on(root, dir, store).await
}

/// A gateway on the policy directory `dir` (in `root`), with a file store in `root`.
async fn stack_on(root: tempfile::TempDir, dir: std::path::PathBuf, store: bool) -> Stack {
    let up = MockUpstream::start().await;
    let gw = start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Dir(dir.clone()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let mut kept = None;
    if store {
        let store = graphguard::store::open(root.path().join("state").to_str().unwrap())
            .await
            .unwrap();
        let head = store.head().await.unwrap();
        let state = ManagedState::from_value(&head.state).unwrap();
        let reloader = Arc::new(
            Reloader::new(dir.clone(), gw.gw.clone(), Arc::new(Metrics::new()))
                .with_store_state(head.number, state),
        );
        let manager = Manager::new(store.clone(), reloader.clone(), dir.clone());
        let _ = gw.gw.management.set(Arc::new(manager));
        reload::follow_store(reloader.clone(), store);
        kept = Some(reloader);
    }
    Stack {
        up,
        gw,
        dir,
        reloader: kept,
        _root: root,
    }
}

async fn api(s: &Stack, method: Method, path: &str, body: Option<Value>) -> Resp {
    let r = req(method, path).header("x-api-key", ADMIN_KEY);
    match body {
        Some(b) => r.json(&b).send(&s.gw).await,
        None => r.send(&s.gw).await,
    }
}

async fn bob_reads(s: &Stack, tid: &str) -> StatusCode {
    req(Method::GET, format!("/threads/{tid}"))
        .auth(BOB)
        .send(&s.gw)
        .await
        .status
}

/// A thread bob (role engineer) reads through a file policy, tagged PII.
fn pii_thread(s: &Stack) -> String {
    let tid = new_id();
    s.up.put_thread(
        &tid,
        json!({"thread_id": tid, "metadata": {"Application": "chatbot-support", "Contains-PII": "true"}}),
    );
    tid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_a_store_or_the_setting_and_never_forwarded() {
    for (management, store) in [(true, false), (false, true), (false, false)] {
        let s = stack(management, store).await;
        let r = api(&s, Method::GET, API, None).await;
        let d = json_error(&r, 404);
        assert!(d.contains("not enabled"), "{d}");
        s.up.assert_nothing_forwarded();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_holders_of_the_management_permission_may_call_it() {
    let s = stack(true, true).await;
    let anon = req(Method::GET, API).send(&s.gw).await;
    json_error(&anon, 401);
    let alice = req(Method::GET, API).auth(ALICE).send(&s.gw).await;
    assert!(json_error(&alice, 403).contains("organization:manage"));
    // The admin role grants "*": a bearer token and X-API-Key both work.
    req(Method::GET, API)
        .auth(ADMIN)
        .send(&s.gw)
        .await
        .assert_status(200);
    api(&s, Method::GET, API, None).await.assert_status(200);
    // Other paths under the prefix are the API's too: never forwarded.
    json_error(&api(&s, Method::GET, "/api/v1/no/such", None).await, 404);
    s.up.assert_nothing_forwarded();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_policy_is_enforced_at_once_and_its_removal_too() {
    let s = stack(true, true).await;
    let tid = pii_thread(&s);
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::OK);
    let r = api(&s, Method::POST, API, Some(pii_policy("Block PII Threads"))).await;
    r.assert_status(200);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(r.header("etag").is_some());
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::FORBIDDEN);
    let got = api(&s, Method::GET, &format!("{API}/{id}"), None).await;
    got.assert_status(200);
    assert_eq!(got.json()["role_ids"], json!(["engineer"]));
    assert_eq!(got.json()["source"], "api");
    // Update (allow), detach, attach, delete: each enforced at once.
    let r = api(
        &s,
        Method::PATCH,
        &format!("{API}/{id}"),
        Some(json!({"effect": "allow"})),
    )
    .await;
    assert_eq!(r.json()["effect"], "allow");
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::OK);
    api(
        &s,
        Method::PATCH,
        &format!("{API}/{id}"),
        Some(json!({"effect": "deny"})),
    )
    .await;
    let role = "/api/v1/platform/orgs/current/roles/engineer/access-policies";
    api(
        &s,
        Method::DELETE,
        &format!("{role}?access_policy_ids={id}"),
        None,
    )
    .await
    .assert_status(204);
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::OK);
    api(
        &s,
        Method::POST,
        role,
        Some(json!({"access_policy_ids": [id]})),
    )
    .await
    .assert_status(204);
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::FORBIDDEN);
    api(&s, Method::DELETE, &format!("{API}/{id}"), None)
        .await
        .assert_status(204);
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::OK);
    json_error(
        &api(&s, Method::GET, &format!("{API}/{id}"), None).await,
        404,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_if_match_is_412_and_changes_nothing() {
    let s = stack(true, true).await;
    let id = api(&s, Method::POST, API, Some(pii_policy("P")))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{API}/{id}");
    let tag = api(&s, Method::GET, &path, None)
        .await
        .header("etag")
        .unwrap();
    let patch = |d: &str| {
        req(Method::PATCH, path.clone())
            .header("x-api-key", ADMIN_KEY)
            .header("if-match", &tag)
            .json(&json!({"description": d}))
    };
    let (first, second) = (patch("first"), patch("second"));
    let (a, b) = tokio::join!(first.send(&s.gw), second.send(&s.gw));
    let mut codes = [a.status.as_u16(), b.status.as_u16()];
    codes.sort();
    assert_eq!(codes, [200, 412], "{} {}", a.text(), b.text());
    let winner = if a.status == StatusCode::OK {
        "first"
    } else {
        "second"
    };
    assert_eq!(
        api(&s, Method::GET, &path, None).await.json()["description"],
        winner
    );
    let stale = req(Method::DELETE, path.clone())
        .header("x-api-key", ADMIN_KEY)
        .header("if-match", &tag)
        .send(&s.gw)
        .await;
    assert!(json_error(&stale, 412).contains("If-Match"));
    api(&s, Method::GET, &path, None).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_422_naming_the_field_and_nothing_is_stored() {
    let s = stack(true, true).await;
    let cond = |name: &str, op: &str| json!({"attribute_name": name, "attribute_key": "k", "operator": op, "attribute_value": "v"});
    let group = |perm: &str, rt: &str, conds: Value| json!([{"permission": perm, "resource_type": rt, "conditions": conds}]);
    let cases = [
        (
            "operator",
            json!({"condition_groups": group("threads:read", "thread", json!([cond("resource_tag_key", "eq")]))}),
        ),
        (
            "frobnicate",
            json!({"condition_groups": group("threads:frobnicate", "thread", json!([]))}),
        ),
        (
            "project",
            json!({"condition_groups": group("threads:read", "project", json!([]))}),
        ),
        (
            "attribute_name",
            json!({"condition_groups": group("threads:read", "thread", json!([cond("resource_name", "equals")]))}),
        ),
        ("effect", json!({"effect": "maybe"})),
        ("priority", json!({"priority": 1})),
        ("condition_groups", json!({"condition_groups": []})),
        (
            "assistant",
            json!({"condition_groups": group("threads:read", "assistant", json!([]))}),
        ),
        ("no-such-role", json!({"role_ids": ["no-such-role"]})),
    ];
    for (i, (needle, change)) in cases.iter().enumerate() {
        let mut body = pii_policy(&format!("invalid {i}"));
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = api(&s, Method::POST, API, Some(body)).await;
        let d = json_error(&r, 422);
        assert!(d.contains(needle), "{needle}: {d}");
    }
    let r = api(&s, Method::POST, API, None).await;
    json_error(&r, 422);
    let revisions = api(&s, Method::GET, REVISIONS, None).await.json();
    assert_eq!(revisions["revisions"], json!([]), "nothing was stored");
    // role_ids cannot change in an update.
    let id = api(&s, Method::POST, API, Some(pii_policy("ok")))
        .await
        .json()["id"]
        .clone();
    let r = api(
        &s,
        Method::PATCH,
        &format!("{API}/{}", id.as_str().unwrap()),
        Some(json!({"role_ids": []})),
    )
    .await;
    assert!(json_error(&r, 422).contains("role_ids"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_roles_and_policies_are_listed_and_read_only() {
    let s = stack(true, true).await;
    let all = api(&s, Method::GET, API, None).await.json();
    let file = all["access_policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Chatbot Apps Access")
        .unwrap()
        .clone();
    assert_eq!(file["source"], "file");
    let path = format!("{API}/{}", file["id"].as_str().unwrap());
    api(&s, Method::GET, &path, None).await.assert_status(200);
    let r = api(&s, Method::PATCH, &path, Some(json!({"effect": "deny"}))).await;
    assert!(json_error(&r, 409).contains("policy file"));
    json_error(&api(&s, Method::DELETE, &path, None).await, 409);
    let roles = api(&s, Method::GET, ROLES, None).await.json();
    assert!(roles
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "engineer" && r["source"] == "file"));
    let r = api(
        &s,
        Method::PATCH,
        &format!("{ROLES}/engineer"),
        Some(json!({"permissions": ["*"]})),
    )
    .await;
    json_error(&r, 409);
    // A stored policy may be attached to a file role (above); a role of the API's own too.
    let r = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"display_name": "Night Shift", "permissions": ["threads:read"]})),
    )
    .await;
    r.assert_status(200);
    assert_eq!(r.json()["name"], "night-shift");
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let r = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"name": "engineer", "permissions": []})),
    )
    .await;
    json_error(&r, 409);
    let r = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"name": "bad", "permissions": ["threads:frobnicate"]})),
    )
    .await;
    assert!(json_error(&r, 422).contains("frobnicate"));
    api(&s, Method::DELETE, &format!("{ROLES}/{rid}"), None)
        .await
        .assert_status(204);
}

/// An update may rename, but never onto a name another policy or role (from the files or the
/// store) has: 409 naming it, and the object stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_onto_a_taken_name_is_409_and_changes_nothing() {
    let s = stack(true, true).await;
    let created = |r: Resp| r.json()["id"].as_str().unwrap().to_string();
    let p1 = created(api(&s, Method::POST, API, Some(pii_policy("P1"))).await);
    api(&s, Method::POST, API, Some(pii_policy("P2")))
        .await
        .assert_status(200);
    let path = format!("{API}/{p1}");
    for taken in ["P2", "Chatbot Apps Access"] {
        let r = api(
            &s,
            Method::PATCH,
            &path,
            Some(json!({"name": taken, "description": "x"})),
        )
        .await;
        let detail = json_error(&r, 409);
        assert_eq!(
            detail,
            format!("an access policy named {taken:?} already exists")
        );
    }
    let r = api(&s, Method::PATCH, &path, Some(json!({"name": "  "}))).await;
    assert!(json_error(&r, 422).contains("name"));
    let now = api(&s, Method::GET, &path, None).await.json();
    assert_eq!(now["name"], "P1");
    assert_ne!(
        now["description"], "x",
        "a refused update changed the description"
    );
    let r = api(
        &s,
        Method::PATCH,
        &path,
        Some(json!({"name": "P1 renamed"})),
    )
    .await;
    assert_eq!(r.json()["name"], "P1 renamed");

    let role = |name: &str| json!({"name": name, "permissions": ["threads:read"]});
    let r1 = created(api(&s, Method::POST, ROLES, Some(role("night"))).await);
    api(&s, Method::POST, ROLES, Some(role("day")))
        .await
        .assert_status(200);
    let path = format!("{ROLES}/{r1}");
    for taken in ["day", "engineer"] {
        let r = api(
            &s,
            Method::PATCH,
            &path,
            Some(json!({"name": taken, "permissions": []})),
        )
        .await;
        assert_eq!(
            json_error(&r, 409),
            format!("a role named {taken:?} already exists")
        );
    }
    let now = api(&s, Method::GET, &path, None).await.json();
    assert_eq!(now["name"], "night");
    assert_eq!(now["permissions"], json!(["threads:read"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_every_change_and_restore_brings_one_back() {
    let s = stack(true, true).await;
    let tid = pii_thread(&s);
    let id = api(&s, Method::POST, API, Some(pii_policy("Block PII Threads")))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api(&s, Method::DELETE, &format!("{API}/{id}"), None)
        .await
        .assert_status(204);
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::OK);
    let revs = api(&s, Method::GET, REVISIONS, None).await.json();
    let revs = revs["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["number"], 2);
    assert_eq!(revs[1]["actor"], "admin");
    assert!(revs[1]["summary"]
        .as_str()
        .unwrap()
        .contains("Block PII Threads"));
    let one = api(&s, Method::GET, &format!("{REVISIONS}/1"), None)
        .await
        .json();
    assert_eq!(one["state"]["access_policies"][0]["id"], id);
    let r = api(&s, Method::POST, &format!("{REVISIONS}/1/restore"), None).await;
    r.assert_status(200);
    assert_eq!(r.json()["revision"], 3);
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::FORBIDDEN);
    json_error(
        &api(&s, Method::POST, &format!("{REVISIONS}/99/restore"), None).await,
        404,
    );
}

// ---------------------------------------------------------------------------------------------
// Attacks: what the API must refuse, and what it must still allow.
// ---------------------------------------------------------------------------------------------

/// Rewrite roles.yaml (the files' roles) and reload.
async fn set_file_roles(s: &Stack, yaml: &str) {
    std::fs::write(s.dir.join("roles.yaml"), yaml).unwrap();
    let r = s.reloader.as_ref().unwrap().reload("test").await;
    assert!(
        matches!(r, graphguard::ops::reload::ReloadResult::Swapped(_)),
        "{r:?}"
    );
}

const ROLES_WITHOUT_TRAINER: &str = "roles:\n  admin: [\"*\"]\n  annotator-team-a: [\"threads:create\", \"assistants:read\"]\n  engineer: [\"threads:create\", \"assistants:read\"]\n  consultant: []\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_method_tricks_never_reach_the_api_or_the_server_without_the_permission() {
    let s = stack(true, true).await;
    let paths = [
        ROLES.to_string(),
        format!("{ROLES}/"),
        "/API/v1/orgs/current/roles".to_string(),
        "/api/V1/orgs/current/roles".to_string(),
        "/api/v1//orgs/current/roles".to_string(),
        "/api/v1/%6frgs/current/roles".to_string(),
        "/api%2fv1/orgs/current/roles".to_string(),
        "/api/v1/x/../orgs/current/roles".to_string(),
        "/api/v1/./orgs/current/roles".to_string(),
        format!("{ROLES}?x=/../../threads"),
        format!("{API}/..;/x"),
        format!("{REVISIONS}/+1"),
        "/api/v1".to_string(),
    ];
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::DELETE,
    ];
    for path in &paths {
        for m in &methods {
            let body = json!({"name": "x", "permissions": ["*"]});
            for who in [None, Some(ALICE)] {
                let mut r = req(m.clone(), path.clone()).json(&body);
                if let Some(a) = who {
                    r = r.auth(a);
                }
                let r = r.send(&s.gw).await;
                assert!(
                    [400, 401, 403, 404, 405].contains(&r.status.as_u16()),
                    "{m} {path} as {who:?}: {} {}",
                    r.status,
                    r.text()
                );
            }
        }
    }
    s.up.assert_nothing_forwarded();
    let revisions = api(&s, Method::GET, REVISIONS, None).await.json();
    assert_eq!(revisions["revisions"], json!([]), "nothing was stored");
}

/// A policy attached to a file role the files then dropped stays attached to that name (users
/// may still carry it): it must be possible to detach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_attached_to_a_role_the_files_dropped_can_be_detached() {
    let s = stack(true, true).await;
    let mut body = pii_policy("P");
    body["role_ids"] = json!(["trainer"]);
    let id = api(&s, Method::POST, API, Some(body)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    set_file_roles(&s, ROLES_WITHOUT_TRAINER).await;
    let role = "/api/v1/platform/orgs/current/roles/trainer/access-policies";
    let r = api(
        &s,
        Method::DELETE,
        &format!("{role}?access_policy_ids={id}"),
        None,
    )
    .await;
    r.assert_status(204);
    let got = api(&s, Method::GET, &format!("{API}/{id}"), None).await;
    assert_eq!(got.json()["role_ids"], json!([]));
    // Attaching to it again is refused: it is no role any more.
    let r = api(
        &s,
        Method::POST,
        role,
        Some(json!({"access_policy_ids": [id]})),
    )
    .await;
    json_error(&r, 404);
}

/// A restore is validated like any change: a revision that names a role that no longer exists,
/// or that no longer compiles with the files, is 422 and the snapshot keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_no_longer_holds_is_422_and_changes_nothing() {
    let s = stack(true, true).await;
    let tid = pii_thread(&s);
    // Revision 1: a policy on the file role trainer; 2: gone; 3: a store role "ops"; 4: gone.
    let mut body = pii_policy("P");
    body["role_ids"] = json!(["trainer"]);
    let id = api(&s, Method::POST, API, Some(body)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api(&s, Method::DELETE, &format!("{API}/{id}"), None)
        .await
        .assert_status(204);
    let rid = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"name": "ops", "permissions": ["threads:read"]})),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api(&s, Method::DELETE, &format!("{ROLES}/{rid}"), None)
        .await
        .assert_status(204);
    // The files drop trainer and define ops themselves.
    set_file_roles(
        &s,
        &format!("{ROLES_WITHOUT_TRAINER}  ops: [\"threads:read\"]\n"),
    )
    .await;
    let version = api(&s, Method::GET, API, None)
        .await
        .header("x-graphguard-policy-version");
    for n in [1, 3] {
        let r = api(&s, Method::POST, &format!("{REVISIONS}/{n}/restore"), None).await;
        let d = json_error(&r, 422);
        let needle = if n == 1 { "trainer" } else { "ops" };
        assert!(d.contains(needle), "{n}: {d}");
    }
    let revs = api(&s, Method::GET, REVISIONS, None).await.json();
    assert_eq!(revs["revisions"][0]["number"], 4, "nothing was stored");
    assert_eq!(
        api(&s, Method::GET, API, None)
            .await
            .header("x-graphguard-policy-version"),
        version
    );
    assert_eq!(bob_reads(&s, &tid).await, StatusCode::OK);
}

/// The docs: a role grants the management permission through "*", "organization:*" or the
/// permission itself; a role of the API's own may too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_role_may_grant_the_management_permission_by_its_resource_wildcard() {
    let s = stack(true, true).await;
    for perms in [json!(["organization:*"]), json!(["organization:manage"])] {
        let r = api(
            &s,
            Method::POST,
            ROLES,
            Some(json!({"display_name": format!("m {perms}"), "permissions": perms})),
        )
        .await;
        r.assert_status(200);
    }
}

/// What no store could hold is the caller's mistake (422), not an outage (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_no_store_can_hold_is_422() {
    let s = stack(true, true).await;
    let r = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"name": "a\u{0}b", "permissions": []})),
    )
    .await;
    json_error(&r, 422);
}

/// If-Match as RFC 9110 reads it: a list matches when one of its tags does; a weak tag never
/// does (strong comparison).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_lists_and_weak_tags() {
    let s = stack(true, true).await;
    let id = api(&s, Method::POST, API, Some(pii_policy("P")))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("{API}/{id}");
    let tag = api(&s, Method::GET, &path, None)
        .await
        .header("etag")
        .unwrap();
    let patch = |m: String| {
        req(Method::PATCH, path.clone())
            .header("x-api-key", ADMIN_KEY)
            .header("if-match", &m)
            .json(&json!({"description": "x"}))
    };
    json_error(&patch(format!("W/{tag}")).send(&s.gw).await, 412);
    let r = patch(format!("\"0000\", {tag}")).send(&s.gw).await;
    r.assert_status(200);
}

/// Policy files without roles (RBAC off: handlers alone decide) and a manager by permission.
fn rbac_off_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let auth = std::fs::read_to_string(policy_dir_of("owner").join("authenticators.yaml"))
        .unwrap()
        .replace(
            "permissions: [\"assistants:create\"]",
            "permissions: [\"assistants:create\", \"organization:manage\"]",
        );
    std::fs::write(dir.join("authenticators.yaml"), auth).unwrap();
    std::fs::copy(
        policy_dir_of("owner").join("handlers.yaml"),
        dir.join("handlers.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("management.yaml"),
        "settings:\n  management: { permission: \"organization:manage\" }\n",
    )
    .unwrap();
    dir
}

/// With RBAC off in the files, a role created through the API must not switch it on for every
/// user (who would then need a role for everything): it is refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_cannot_switch_rbac_on_for_everyone() {
    let root = tempfile::tempdir().unwrap();
    let dir = rbac_off_dir(root.path());
    let s = stack_on(root, dir, true).await;
    let tid = s.up.add_thread("alice");
    let alice_reads = || async {
        req(Method::GET, format!("/threads/{tid}"))
            .auth(ALICE)
            .send(&s.gw)
            .await
            .status
    };
    assert_eq!(alice_reads().await, StatusCode::OK);
    let r = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"name": "contractor", "permissions": ["threads:read"]})),
    )
    .await;
    assert_eq!(alice_reads().await, StatusCode::OK, "{}", r.text());
    assert!(json_error(&r, 422).contains("roles"));
    // Turned on in the files (an empty section), the API manages roles.
    std::fs::write(s.dir.join("roles.yaml"), "roles: {}\n").unwrap();
    s.reloader.as_ref().unwrap().reload("test").await;
    api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"name": "contractor", "permissions": ["threads:read"]})),
    )
    .await
    .assert_status(200);
}

/// Bodies are bounded like every other, and deep nesting is a 422, not a stack overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_deeply_nested_bodies_are_refused() {
    let s = stack(true, true).await;
    let deep = format!(
        "{{\"name\": \"d\", \"effect\": \"deny\", \"condition_groups\": [{{\"permission\": \"threads:read\", \"resource_type\": \"thread\", \"conditions\": [{{\"attribute_name\": \"resource_tag_key\", \"attribute_key\": \"k\", \"operator\": \"equals\", \"attribute_value\": {}1{}}}]}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = req(Method::POST, API)
        .header("x-api-key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body(deep)
        .send(&s.gw)
        .await;
    json_error(&r, 422);
    // Declared larger than the limit: 413 before a byte of it is read (a client still
    // writing 64 MiB would only see the connection close under it).
    let head = format!(
        "POST {API} HTTP/1.1\r\nHost: gw.test\r\nX-API-Key: {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
        64 * 1024 * 1024
    );
    let r = raw_exchange(&s.gw, head.as_bytes()).await;
    raw_json_error(&r, 413);
    let revisions = api(&s, Method::GET, REVISIONS, None).await.json();
    assert_eq!(revisions["revisions"], json!([]), "nothing was stored");
}

/// Deleting a role would lift the deny policies attached to it for everyone who still carries
/// its name: refused (409) until they are detached; allow policies are simply detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_deny_policies_attached_cannot_be_deleted() {
    let s = stack(true, true).await;
    let role = api(
        &s,
        Method::POST,
        ROLES,
        Some(json!({"display_name": "Contractor", "permissions": ["threads:read"]})),
    )
    .await;
    role.assert_status(200);
    let rid = role.json()["id"].as_str().unwrap().to_string();
    let mut deny = pii_policy("contractor PII");
    deny["role_ids"] = json!([rid]);
    let pid = api(&s, Method::POST, API, Some(deny)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api(&s, Method::DELETE, &format!("{ROLES}/{rid}"), None).await;
    r.assert_status(409);
    assert!(r.text().contains("contractor PII"), "{}", r.text());
    let roles = api(&s, Method::GET, ROLES, None).await.json();
    assert!(roles.as_array().unwrap().iter().any(|r| r["id"] == rid));
    // Detached, the role goes.
    let detach = format!(
        "/api/v1/platform/orgs/current/roles/{rid}/access-policies?access_policy_ids={pid}"
    );
    api(&s, Method::DELETE, &detach, None)
        .await
        .assert_status(204);
    api(&s, Method::DELETE, &format!("{ROLES}/{rid}"), None)
        .await
        .assert_status(204);
}
