//! `graphguard test DIR TESTS.yaml`: a policy set's own test cases, the `opa test` of graphguard.
//!
//! A case names a user and either an action with the resource's metadata (checked with the
//! same evaluation `explain` uses) or a whole request (method, path, body) with the resources
//! it touches (checked with the request path's own decision loop, no network). Expectations
//! are the effect, and optionally the filter, the stamped metadata, the handler, the status and
//! the detail. Failures print a readable diff.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::body::splice::NewBody;
use crate::decide::{decide, parse_body, Facts, Input, Next, Outcome, Target};
use crate::event::Event;
use crate::ops::explain::explain;
use crate::policy::Policy;
use crate::routes::{check_path, classify, validate_params};
use crate::user::User;

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The cases.
    pub tests: Vec<Case>,
}

/// The user of a case.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CaseUser {
    /// Identity.
    pub identity: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// A request case.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// HTTP method.
    pub method: String,
    /// Path with optional query.
    pub path: String,
    /// JSON body.
    pub body: Option<Value>,
}

/// Expected results.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow` or `deny`.
    pub effect: Option<String>,
    /// The filter the handler returns (action cases).
    pub filter: Option<Value>,
    /// The metadata the handler stamps (action cases) or the forwarded body's metadata
    /// (request cases).
    pub metadata: Option<Value>,
    /// The handler key that runs (action cases).
    pub handler: Option<String>,
    /// The status of a refusal (request cases).
    pub status: Option<u16>,
    /// The detail of a refusal (request cases).
    pub detail: Option<String>,
    /// The limits the action counts against, by name, with the key each counts under
    /// (action cases; `{}`: none).
    pub limits: Option<Map<String, Value>>,
}

/// One case.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Name.
    pub name: String,
    /// The user.
    pub user: CaseUser,
    /// `RESOURCE:ACTION` (action case).
    pub action: Option<String>,
    /// The resource's metadata (action case).
    pub resource: Option<Map<String, Value>>,
    /// A request (request case).
    pub request: Option<CaseRequest>,
    /// Resources the request touches: `threads/<id>`, `assistants/<id>`, `crons/<id>` to the
    /// resource's JSON (at least `metadata`); absent ones do not exist.
    #[serde(default)]
    pub resources: HashMap<String, Value>,
    /// Expectations.
    pub expect: Expect,
}

impl CaseUser {
    /// The user this describes (display name defaults to the identity).
    pub fn to_user(&self) -> User {
        User {
            identity: self.identity.clone(),
            display_name: self
                .display_name
                .clone()
                .unwrap_or_else(|| self.identity.clone()),
            permissions: self.permissions.clone(),
            roles: self.roles.clone(),
            attributes: self.attributes.clone(),
            ..User::default()
        }
    }
}

fn diff(out: &mut Vec<String>, what: &str, want: &Value, got: &Value) {
    if want != got {
        out.push(format!("  {what}:\n    want: {want}\n    got:  {got}"));
    }
}

/// Run one case; `Err` holds the failure lines.
pub fn run_case(policy: &Policy, case: &Case) -> Result<(), Vec<String>> {
    let user = case.user.to_user();
    let mut fails = Vec::new();
    match (&case.action, &case.request) {
        (Some(action), None) => check_action(policy, &user, action, case, &mut fails)?,
        (None, Some(req)) => check_request(policy, &user, req, case, &mut fails)?,
        _ => fails.push("  a case needs exactly one of action or request".into()),
    }
    if fails.is_empty() {
        Ok(())
    } else {
        Err(fails)
    }
}

/// An action case: `explain`'s effect, filter, stamped metadata and handler.
fn check_action(
    policy: &Policy,
    user: &User,
    action: &str,
    case: &Case,
    fails: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    let e = &case.expect;
    let event = action
        .parse::<Event>()
        .map_err(|_| vec![format!("  action {action:?} is not RESOURCE:ACTION")])?;
    let ex = explain(policy, user, event, case.resource.as_ref());
    if let Some(want) = &e.effect {
        let got = Value::String(ex.effect.into());
        diff(fails, "effect", &Value::String(want.clone()), &got);
    }
    if let Some(want) = &e.filter {
        diff(
            fails,
            "filter",
            want,
            &ex.filter.clone().unwrap_or(Value::Null),
        );
    }
    if let Some(want) = &e.metadata {
        let got = ex
            .metadata
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null);
        diff(fails, "metadata", want, &got);
    }
    if let Some(want) = &e.handler {
        let got = ex.handler.clone().map(Value::String).unwrap_or(Value::Null);
        diff(fails, "handler", &Value::String(want.clone()), &got);
    }
    if let Some(want) = &e.limits {
        let got: Map<String, Value> = ex
            .limits
            .iter()
            .map(|l| {
                let key = l.key.clone().unwrap_or_else(|e| format!("error: {e}"));
                (l.name.clone(), Value::String(key))
            })
            .collect();
        diff(
            fails,
            "limits",
            &Value::Object(want.clone()),
            &Value::Object(got),
        );
    }
    if !fails.is_empty() {
        fails.push(format!("  explain: {}", ex.words.join(" ")));
    }
    Ok(())
}

/// A request case: the decision loop's effect, status, detail and forwarded metadata.
fn check_request(
    policy: &Policy,
    user: &User,
    req: &CaseRequest,
    case: &Case,
    fails: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    let e = &case.expect;
    let got =
        run_request(policy, user, req, &case.resources).map_err(|m| vec![format!("  {m}")])?;
    let (effect, status, detail, md) = match &got {
        Outcome::Forward(f) => {
            let md = f
                .body
                .as_ref()
                // run_request made every body whole.
                .and_then(|b| serde_json::from_slice::<Value>(&b.bytes(&[])).ok())
                .and_then(|v| v.get("metadata").cloned())
                .or_else(|| req.body.as_ref().and_then(|b| b.get("metadata").cloned()));
            ("allow", None, None, md)
        }
        Outcome::Reply(r) => ("allow", Some(r.status.as_u16()), None, None),
        Outcome::Refuse(e) => (
            "deny",
            Some(e.status.as_u16()),
            Some(e.detail.clone()),
            None,
        ),
    };
    if let Some(want) = &e.effect {
        let got = Value::String(effect.into());
        diff(fails, "effect", &Value::String(want.clone()), &got);
    }
    if let Some(want) = e.status {
        let got = status.map(Value::from).unwrap_or(Value::Null);
        diff(fails, "status", &Value::from(want), &got);
    }
    if let Some(want) = &e.detail {
        let got = detail.map(Value::String).unwrap_or(Value::Null);
        diff(fails, "detail", &Value::String(want.clone()), &got);
    }
    if let Some(want) = &e.metadata {
        diff(
            fails,
            "forwarded metadata",
            want,
            &md.unwrap_or(Value::Null),
        );
    }
    if e.filter.is_some() || e.handler.is_some() {
        fails.push("  filter/handler expectations apply to action cases only".into());
    }
    Ok(())
}

fn run_request(
    policy: &Policy,
    user: &User,
    req: &CaseRequest,
    resources: &HashMap<String, Value>,
) -> Result<Outcome, String> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("bad method {:?}", req.method))?;
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path.as_str(), None),
    };
    let refused = |e: crate::error::GatewayError| Outcome::Refuse(e);
    if let Err(e) = check_path(path) {
        return Ok(refused(e));
    }
    let m = match classify(&method, path) {
        Ok(m) => m,
        Err(e) => return Ok(refused(e)),
    };
    if let Err(e) = validate_params(&m) {
        return Ok(refused(e));
    }
    let raw = match &req.body {
        Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let body = match parse_body(&m, &raw) {
        Ok(b) => b,
        Err(e) => return Ok(refused(e)),
    };
    let input = Input {
        route: &m,
        query,
        body: &body,
    };
    let mut facts = Facts::default();
    for _ in 0..64 {
        match decide(policy, user, &input, &facts) {
            Next::Done(d) => {
                let mut outcome = d.outcome;
                // A spliced body refers to `raw`, which ends here: make it whole.
                if let Outcome::Forward(f) = &mut outcome {
                    f.body = f
                        .body
                        .take()
                        .map(|b| NewBody::Whole(b.bytes(&raw).into_owned()));
                }
                return Ok(outcome);
            }
            Next::Need(t) => {
                let key = match &t {
                    Target::Thread(id) => format!("threads/{id}"),
                    Target::Assistant(id) => format!("assistants/{id}"),
                    Target::Cron(id) => format!("crons/{id}"),
                    Target::StoreItem(ns, k) => format!("store/{ns}/{k}"),
                    Target::Host(h) => format!("hosts/{h}"),
                };
                let v = resources.get(&key).cloned().map(Arc::new);
                facts.insert(t, v);
            }
        }
    }
    Err("the decision did not finish".into())
}

/// Run a file's cases; returns (passed, failures as printable blocks).
pub fn run_file(policy: &Policy, file: &TestFile) -> (usize, Vec<String>) {
    let mut passed = 0;
    let mut failures = Vec::new();
    for c in &file.tests {
        match run_case(policy, c) {
            Ok(()) => passed += 1,
            Err(lines) => failures.push(format!("FAIL {}\n{}", c.name, lines.join("\n"))),
        }
    }
    (passed, failures)
}

/// `graphguard test DIR FILES...`: run the files' cases; `N passed, M failed`.
pub(super) fn test(dir: &std::path::Path, files: &[std::path::PathBuf]) -> ExitCode {
    let policy = match Policy::load_dir(dir) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                say!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let file: TestFile = match std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_yaml_ng::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(file) => file,
            Err(e) => {
                say!("{}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        let (p, failures) = run_file(&policy, &file);
        passed += p;
        failed += failures.len();
        for fl in failures {
            say!("{}: {fl}", f.display());
        }
    }
    say!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_example_policy_passes_its_test_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut files = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if let Some(set) = name.strip_suffix(".tests.yaml") {
                let policy = Policy::load_dir(&root.join(set)).unwrap();
                let file: TestFile =
                    serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                let (passed, failures) = run_file(&policy, &file);
                assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
                assert!(passed > 0);
                files += 1;
            }
        }
        assert!(files >= 3, "example test files: {files}");
    }

    #[test]
    fn a_wrong_expectation_fails_with_a_diff() {
        let policy = crate::policy::tests::policy(
            "handlers:\n  \"*\": {filter: {owner: \"{user.identity}\"}}\n",
        );
        let case: Case = serde_yaml_ng::from_str(
            "name: x\nuser: {identity: bob}\naction: threads:read\nresource: {owner: alice}\nexpect: {effect: allow}\n",
        )
        .unwrap();
        let err = run_case(&policy, &case).unwrap_err().join("\n");
        assert!(err.contains("want: \"allow\""), "{err}");
        assert!(err.contains("got:  \"deny\""), "{err}");
    }
}
