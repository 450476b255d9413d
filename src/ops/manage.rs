//! The management API: LangSmith's access-policy and role endpoints, on the policy store.
//!
//! The gateway routes `/api/v1/...` here once the caller is authenticated and holds the
//! management permission (`settings.management`); nothing of it reaches the agent server. Reads
//! answer from the snapshot being enforced (so they keep working while the store is down).
//! A write reads the store's head, computes the next state ([`Change::apply`]: 404, 409, 412,
//! 422), compiles it with the policy files (a state that would not load is 422 and is never
//! stored), commits it on top of the head it read (a concurrent commit makes it retry, and a
//! stale `If-Match` then answers 412), serves it at once on this replica, and writes one audit
//! event. The store's change feed carries it to every other replica.
//!
//! Paths, shapes and conventions: docs/access-control.md.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::ops::reload::Reloader;
use crate::policy::managed::{
    etag, file_policy_view, file_role_view, ApiError, Applied, Change, Context, Managed,
    ManagedState, PolicyCreate, PolicyPatch, RoleCreate, RolePatch,
};
use crate::policy::Policy;
use crate::store::{PolicyStore, StoreError};
use crate::user::User;

/// The access-policy collection.
pub const POLICIES: &str = "/api/v1/platform/orgs/current/access-policies";
/// Attach and detach, under a role: `{ROLE_POLICIES}/{role_id}/access-policies`.
pub const ROLE_POLICIES: &str = "/api/v1/platform/orgs/current/roles";
/// The role collection.
pub const ROLES: &str = "/api/v1/orgs/current/roles";
/// The store's history.
pub const REVISIONS: &str = "/api/v1/graphguard/policy-store/revisions";

/// How many times a write re-reads the head after another writer committed first.
const RETRIES: usize = 8;

/// An answer of the API: status, JSON body (`None`: empty), headers.
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Option<Value>,
    /// Extra headers (`ETag`, `Location`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn empty() -> Answer {
        Answer {
            status: StatusCode::NO_CONTENT,
            body: None,
            headers: Vec::new(),
        }
    }
    fn with_etag(mut self, tag: String) -> Answer {
        if let Ok(v) = HeaderValue::from_str(&tag) {
            self.headers.push((header::ETAG, v));
        }
        self
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Bytes> {
        let body = self
            .body
            .map(|b| Bytes::from(serde_json::to_vec(&b).unwrap_or_default()))
            .unwrap_or_default();
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        if self.status != StatusCode::NO_CONTENT {
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (n, v) in self.headers {
            r.headers_mut().insert(n, v);
        }
        r
    }
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Answer {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Answer::json(status, json!({ "detail": e.detail }))
    }
}

/// One request to the API, as the gateway read it.
pub struct ApiRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path.
    pub path: &'a str,
    /// Query string.
    pub query: Option<&'a str>,
    /// Headers (`If-Match`).
    pub headers: &'a HeaderMap,
    /// Body.
    pub body: &'a [u8],
}

/// The management API of one replica.
pub struct Manager {
    store: Arc<dyn PolicyStore>,
    reloader: Arc<Reloader>,
    dir: PathBuf,
}

/// What a request asks for.
enum Route<'p> {
    ListPolicies,
    CreatePolicy,
    Policy(&'p str),
    RolePolicies(&'p str),
    ListRoles,
    CreateRole,
    Role(&'p str),
    Revisions,
    Revision(u64),
    Restore(u64),
}

fn route<'p>(method: &Method, path: &'p str) -> Result<Route<'p>, ApiError> {
    let not_found = || ApiError::new_status(404, "Not Found");
    let seg = |rest: &'p str| -> Option<&'p str> {
        rest.strip_prefix('/')
            .filter(|s| !s.is_empty() && !s.contains('/'))
    };
    let r = if let Some(rest) = path.strip_prefix(POLICIES) {
        match (rest, method) {
            ("", &Method::GET) => Route::ListPolicies,
            ("", &Method::POST) => Route::CreatePolicy,
            _ => Route::Policy(seg(rest).ok_or_else(not_found)?),
        }
    } else if let Some(rest) = path.strip_prefix(ROLE_POLICIES) {
        let role = rest
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix("/access-policies"))
            .filter(|r| !r.is_empty() && !r.contains('/'))
            .ok_or_else(not_found)?;
        Route::RolePolicies(role)
    } else if let Some(rest) = path.strip_prefix(ROLES) {
        match (rest, method) {
            ("", &Method::GET) => Route::ListRoles,
            ("", &Method::POST) => Route::CreateRole,
            _ => Route::Role(seg(rest).ok_or_else(not_found)?),
        }
    } else if let Some(rest) = path.strip_prefix(REVISIONS) {
        let number = |s: &str| s.parse::<u64>().map_err(|_| not_found());
        match rest.strip_prefix('/').map(|r| r.split_once('/')) {
            None if rest.is_empty() => Route::Revisions,
            Some(None) => Route::Revision(number(&rest[1..])?),
            Some(Some((n, "restore"))) => Route::Restore(number(n)?),
            _ => return Err(not_found()),
        }
    } else {
        return Err(not_found());
    };
    Ok(r)
}

impl ApiError {
    fn new_status(status: u16, detail: &str) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new_status(405, "Method Not Allowed")
}

fn unavailable(e: &StoreError) -> ApiError {
    ApiError::new_status(
        503,
        &format!("The policy store is unavailable; nothing was changed ({e})"),
    )
}

/// The body as `T`; a field-naming 422 otherwise.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid("Invalid JSON in request body");
        }
        match at.as_str() {
            "." | "" => ApiError::invalid(inner.to_string()),
            _ => ApiError::invalid(format!("{at}: {inner}")),
        }
    })
}

/// Every `If-Match` field, as one list (a value that is not text matches nothing).
fn if_match(headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(header::IF_MATCH)
        .iter()
        .map(|v| v.to_str().unwrap_or("\"\""))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// `access_policy_ids` of a detach: repeated, or comma-separated.
fn ids_from_query(query: Option<&str>) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "access_policy_ids")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn now() -> String {
    crate::clock::rfc3339_now()
}

#[async_trait::async_trait]
impl crate::gateway::Management for Manager {
    async fn answer(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        policy: &Policy,
        user: &User,
    ) -> Response<Bytes> {
        let req = ApiRequest {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        };
        self.handle(&req, policy, user).await.into_response()
    }
}

impl Manager {
    /// The API on `store`, serving changes through `reloader` (whose policy directory the
    /// changes are compiled with).
    pub fn new(store: Arc<dyn PolicyStore>, reloader: Arc<Reloader>, dir: PathBuf) -> Manager {
        Manager {
            store,
            reloader,
            dir,
        }
    }

    /// The store, for readiness and metrics.
    pub fn store(&self) -> &Arc<dyn PolicyStore> {
        &self.store
    }

    /// Answer one request of an authorized caller, with the snapshot being enforced.
    pub async fn handle(&self, req: &ApiRequest<'_>, policy: &Policy, user: &User) -> Answer {
        match self.answer(req, policy, user).await {
            Ok(a) => a,
            Err(e) => e.into(),
        }
    }

    async fn answer(
        &self,
        req: &ApiRequest<'_>,
        policy: &Policy,
        user: &User,
    ) -> Result<Answer, ApiError> {
        let m = &policy.managed;
        match (route(req.method, req.path)?, req.method) {
            (Route::ListPolicies, _) => Ok(list_policies(m)),
            (Route::CreatePolicy, _) => {
                let c: PolicyCreate = parse(req.body)?;
                let applied = self.write(Change::CreatePolicy(c), policy, user).await?;
                created(applied)
            }
            (Route::Policy(id), &Method::GET) => get_policy(m, id),
            (Route::Policy(id), &Method::PATCH) => {
                let patch: PolicyPatch = parse(req.body)?;
                let change = Change::UpdatePolicy {
                    id: id.to_string(),
                    patch,
                    if_match: if_match(req.headers),
                };
                updated(self.write(change, policy, user).await?)
            }
            (Route::Policy(id), &Method::DELETE) => {
                let change = Change::DeletePolicy {
                    id: id.to_string(),
                    if_match: if_match(req.headers),
                };
                self.write(change, policy, user)
                    .await
                    .map(|_| Answer::empty())
            }
            (Route::RolePolicies(role), &Method::POST) => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Ids {
                    access_policy_ids: Vec<String>,
                }
                let ids: Ids = parse(req.body)?;
                let change = Change::Attach {
                    role_id: role.to_string(),
                    policy_ids: ids.access_policy_ids,
                };
                self.write(change, policy, user)
                    .await
                    .map(|_| Answer::empty())
            }
            (Route::RolePolicies(role), &Method::DELETE) => {
                let change = Change::Detach {
                    role_id: role.to_string(),
                    policy_ids: ids_from_query(req.query),
                };
                self.write(change, policy, user)
                    .await
                    .map(|_| Answer::empty())
            }
            (Route::ListRoles, _) => Ok(list_roles(m)),
            (Route::CreateRole, _) => {
                let c: RoleCreate = parse(req.body)?;
                updated(self.write(Change::CreateRole(c), policy, user).await?)
            }
            (Route::Role(id), &Method::GET) => get_role(m, id),
            (Route::Role(id), &Method::PATCH) => {
                let patch: RolePatch = parse(req.body)?;
                let change = Change::UpdateRole {
                    id: id.to_string(),
                    patch,
                    if_match: if_match(req.headers),
                };
                updated(self.write(change, policy, user).await?)
            }
            (Route::Role(id), &Method::DELETE) => {
                let change = Change::DeleteRole {
                    id: id.to_string(),
                    if_match: if_match(req.headers),
                };
                self.write(change, policy, user)
                    .await
                    .map(|_| Answer::empty())
            }
            (Route::Revisions, &Method::GET) => self.revisions(req.query).await,
            (Route::Revision(n), &Method::GET) => self.revision(n).await,
            (Route::Restore(n), &Method::POST) => self.restore(n, policy, user).await,
            _ => Err(method_not_allowed()),
        }
    }

    /// Apply a change on the store's head, validate, commit (retrying when another writer
    /// committed first), serve it here, audit it.
    async fn write(
        &self,
        change: Change,
        policy: &Policy,
        user: &User,
    ) -> Result<Applied, ApiError> {
        self.commit(change, policy, user).await.map(|(a, _)| a)
    }

    /// [`Manager::write`], with the revision committed.
    async fn commit(
        &self,
        change: Change,
        policy: &Policy,
        user: &User,
    ) -> Result<(Applied, u64), ApiError> {
        for _ in 0..RETRIES {
            let head = self.store.head().await.map_err(|e| unavailable(&e))?;
            let state =
                ManagedState::from_value(&head.state).map_err(|e| ApiError::new_status(500, &e))?;
            let cx = Context {
                files: &policy.managed.files,
                now: now(),
                new_id: &|| uuid::Uuid::new_v4().to_string(),
            };
            let applied = change.clone().apply(&state, &cx)?;
            self.validate(head.number + 1, &applied.state).await?;
            let committed = self
                .store
                .commit(
                    head.number,
                    &applied.state.to_value(),
                    &user.identity,
                    &applied.summary,
                )
                .await;
            match committed {
                Ok(n) => {
                    self.reloader
                        .apply_store(n, applied.state.clone(), "api")
                        .await;
                    audit(user, &applied, n, &self.reloader);
                    self.reloader.metrics().policy_changes.inc();
                    return Ok((applied, n));
                }
                Err(StoreError::Conflict) => continue,
                // What no store can hold (a NUL character) is the request's, not an outage.
                Err(StoreError::Invalid(why)) => {
                    return Err(ApiError::invalid(format!("nothing was changed: {why}")))
                }
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Err(ApiError::new_status(
            503,
            "The policy store is changing too fast to apply this change; retry",
        ))
    }

    /// The policy the files and this state would make: 422 with every error if it does not
    /// load.
    async fn validate(&self, revision: u64, state: &ManagedState) -> Result<(), ApiError> {
        let dir = self.dir.clone();
        let state = state.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Policy::load_dir_with(&dir, Some((revision, &state))).map(drop)
        })
        .await
        .map_err(|e| ApiError::new_status(500, &e.to_string()))?;
        loaded.map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            ApiError::invalid(lines.join("; "))
        })
    }

    async fn revisions(&self, query: Option<&str>) -> Result<Answer, ApiError> {
        let mut limit = 50;
        let mut before = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let n = v
                .parse::<u64>()
                .map_err(|_| ApiError::invalid(format!("{k}: must be a whole number")))?;
            match k.as_ref() {
                "limit" => limit = n.clamp(1, 1000) as usize,
                "before" => before = Some(n),
                _ => {}
            }
        }
        let list = self
            .store
            .revisions(limit, before)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Answer::json(StatusCode::OK, json!({ "revisions": list })))
    }

    async fn revision(&self, n: u64) -> Result<Answer, ApiError> {
        match self.store.revision(n).await {
            Ok(r) => Ok(Answer::json(StatusCode::OK, json!(r))),
            Err(StoreError::NotFound) => Err(ApiError::not_found("revision", &n.to_string())),
            Err(e) => Err(unavailable(&e)),
        }
    }

    async fn restore(&self, n: u64, policy: &Policy, user: &User) -> Result<Answer, ApiError> {
        let old = match self.store.revision(n).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => {
                return Err(ApiError::not_found("revision", &n.to_string()))
            }
            Err(e) => return Err(unavailable(&e)),
        };
        let state =
            ManagedState::from_value(&old.state).map_err(|e| ApiError::new_status(500, &e))?;
        let change = Change::Restore {
            revision: n,
            state: Box::new(state),
        };
        // The revision this restore committed (the store may be further on already).
        let (applied, revision) = self.commit(change, policy, user).await?;
        tracing::info!(restored = n, revision, summary = %applied.summary, "policy store restored");
        Ok(Answer::json(
            StatusCode::OK,
            json!({ "revision": revision, "restored": n }),
        ))
    }
}

fn list_policies(m: &Managed) -> Answer {
    let mut all: Vec<Value> = m
        .files
        .policies
        .iter()
        .map(|(id, p)| json!(file_policy_view(id, p)))
        .collect();
    all.extend(m.state.access_policies.iter().map(|p| json!(p.view())));
    Answer::json(StatusCode::OK, json!({ "access_policies": all }))
}

fn get_policy(m: &Managed, id: &str) -> Result<Answer, ApiError> {
    if let Some((_, p)) = m.files.policies.iter().find(|(pid, _)| pid == id) {
        let view = file_policy_view(id, p);
        let tag = etag(&view);
        return Ok(Answer::json(StatusCode::OK, json!(view)).with_etag(tag));
    }
    let p = m
        .state
        .access_policies
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ApiError::not_found("access policy", id))?;
    let view = p.view();
    let tag = etag(&view);
    Ok(Answer::json(StatusCode::OK, json!(view)).with_etag(tag))
}

fn list_roles(m: &Managed) -> Answer {
    let mut all: Vec<Value> = m
        .files
        .roles
        .iter()
        .map(|(name, perms)| json!(file_role_view(name, perms)))
        .collect();
    all.extend(m.state.roles.iter().map(|r| json!(r.view())));
    Answer::json(StatusCode::OK, Value::Array(all))
}

fn get_role(m: &Managed, id: &str) -> Result<Answer, ApiError> {
    if let Some(perms) = m.files.roles.get(id) {
        return Ok(Answer::json(
            StatusCode::OK,
            json!(file_role_view(id, perms)),
        ));
    }
    let r = m
        .state
        .roles
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found("role", id))?;
    let view = r.view();
    let tag = etag(&view);
    Ok(Answer::json(StatusCode::OK, json!(view)).with_etag(tag))
}

/// A create's answer: LangSmith's `{"id": ...}`, with the new object's `ETag` and `Location`.
fn created(applied: Applied) -> Result<Answer, ApiError> {
    let object = applied.object.unwrap_or_default();
    let id = object["id"].as_str().unwrap_or_default().to_string();
    let tag = etag(&object);
    let mut a = Answer::json(StatusCode::OK, json!({ "id": id })).with_etag(tag);
    if let Ok(v) = HeaderValue::from_str(&format!("{POLICIES}/{id}")) {
        a.headers.push((header::LOCATION, v));
    }
    Ok(a)
}

/// An update's (or a role create's) answer: the object, with its new `ETag`.
fn updated(applied: Applied) -> Result<Answer, ApiError> {
    let object = applied.object.unwrap_or_default();
    let tag = etag(&object);
    Ok(Answer::json(StatusCode::OK, object).with_etag(tag))
}

/// One audit event per change: who, what, the object before and after, the new revision and
/// policy version. Roles and policies hold no secrets.
fn audit(user: &User, applied: &Applied, revision: u64, reloader: &Reloader) {
    let before = applied.before.as_ref().map(Value::to_string);
    let after = applied.object.as_ref().map(Value::to_string);
    tracing::info!(
        target: "graphguard::audit",
        kind = "policy_change",
        actor = %user.identity,
        summary = %applied.summary,
        before = before.as_deref().unwrap_or("null"),
        after = after.as_deref().unwrap_or("null"),
        revision,
        policy = %reloader.version(),
        "policy change"
    );
}
