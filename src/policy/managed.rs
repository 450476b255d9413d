//! Roles and access policies managed through the API: the state the policy store keeps, and
//! the changes the management API makes to it, as pure functions.
//!
//! The state is one document ([`ManagedState`]) per store revision. A change is computed here
//! from the head it was read from ([`Change::apply`]); the gateway then compiles the policy set
//! it would produce (files plus this state: [`ManagedState::policy_file`]) before committing it,
//! so a change that would not load is refused with 422 and never stored. Roles and policies
//! from files are part of every listing, marked `source: "file"`, and cannot be changed here.
//!
//! LangSmith's shapes (docs/access-control.md): an access policy is `{id, name, description,
//! effect, condition_groups, role_ids, created_at, updated_at}`, a role `{id, name,
//! display_name, description, permissions}`. Ids are UUIDs (v4) for what the API creates; a file
//! role's id is its name (the name users carry), a file policy's a UUID derived from its file
//! and name. Timestamps are RFC 3339 in UTC. Each object has an entity tag, the SHA-256 of its
//! JSON, for `If-Match`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::policy::access::{AccessPolicyConfig, ConditionGroupConfig, Effect};
use crate::policy::config::PolicyFile;

/// Everything the API manages, as stored (one document per revision).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedState {
    /// Roles created through the API.
    #[serde(default)]
    pub roles: Vec<ManagedRole>,
    /// Access policies created through the API.
    #[serde(default)]
    pub access_policies: Vec<ManagedPolicy>,
}

/// A role created through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedRole {
    /// A UUID.
    pub id: String,
    /// What users carry in their `roles` (unique across files and the API).
    pub name: String,
    /// For people.
    pub display_name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Granted permissions (`threads:read`, `threads:*`, `*`, the management permission).
    pub permissions: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// An access policy created through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedPolicy {
    /// A UUID.
    pub id: String,
    /// Unique across files and the API.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// OR of groups, LangSmith's JSON.
    pub condition_groups: Vec<ConditionGroupConfig>,
    /// Ids of the roles it is attached to (API role ids, file role names); empty: every user.
    pub role_ids: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// Roles and policies that come from policy files, as the API lists them.
#[derive(Debug, Clone, Default)]
pub struct FileView {
    /// Whether a file has a `roles` section (even empty): RBAC is on. Without one, roles only
    /// from the store would switch it on for every user, so the API creates none.
    pub rbac: bool,
    /// Role name to permissions.
    pub roles: BTreeMap<String, Vec<String>>,
    /// The files' access policies, with the id the API gives each.
    pub policies: Vec<(String, AccessPolicyConfig)>,
}

/// What a policy snapshot was built with, for the management API's answers: the store's state
/// at a revision, and the files' roles and policies.
#[derive(Debug, Clone, Default)]
pub struct Managed {
    /// The store revision (0: no store, or nothing committed yet).
    pub revision: u64,
    /// The store's state at that revision.
    pub state: ManagedState,
    /// What the files define.
    pub files: FileView,
}

/// The name the store's state compiles under (errors and the version name it).
pub const STORE_FILE: &str = "policy-store";

impl FileView {
    /// The roles and access policies of parsed policy files. A file policy's id is a UUID
    /// derived from its file's name and its own, so it is stable across reloads.
    pub fn of(files: &[(PathBuf, String, PolicyFile)]) -> FileView {
        const NAMESPACE: uuid::Uuid = uuid::uuid!("4d1b3a52-9c1f-4d55-8f0e-6a7b2c9d0e11");
        let mut view = FileView::default();
        for (path, _, file) in files {
            if let Some(roles) = &file.roles {
                view.rbac = true;
                view.roles
                    .extend(roles.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            for p in &file.access_policies {
                let seed = format!("{file_name}\0{}", p.name);
                let id = uuid::Uuid::new_v5(&NAMESPACE, seed.as_bytes()).to_string();
                view.policies.push((id, p.clone()));
            }
        }
        view
    }
}

/// A refusal of the API: the status and the `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The `detail` text.
    pub detail: String,
}

impl ApiError {
    fn new(status: u16, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }
    /// 404.
    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(404, format!("{what} {id} not found"))
    }
    /// 409.
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(409, detail)
    }
    /// 412: the caller's `If-Match` names another version.
    pub fn stale(what: &str, id: &str) -> ApiError {
        ApiError::new(
            412,
            format!("{what} {id} changed since you read it (If-Match does not match its ETag)"),
        )
    }
    /// 422.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(422, detail)
    }
}

/// A policy as the API writes it: LangSmith's fields plus `source`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Effect.
    pub effect: Effect,
    /// Groups.
    pub condition_groups: Vec<ConditionGroupConfig>,
    /// Attached roles.
    pub role_ids: Vec<String>,
    /// Creation time (absent for file policies).
    pub created_at: Option<String>,
    /// Last change (absent for file policies).
    pub updated_at: Option<String>,
    /// `api` or `file`.
    pub source: &'static str,
}

/// A role as the API writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoleView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: Option<String>,
    /// Permissions.
    pub permissions: Vec<String>,
    /// `api` or `file`.
    pub source: &'static str,
}

/// The entity tag of an object: its JSON's SHA-256, quoted.
pub fn etag<T: Serialize>(object: &T) -> String {
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    format!("\"{}\"", hex::encode(&Sha256::digest(&bytes)[..16]))
}

impl ManagedPolicy {
    /// The API's view.
    pub fn view(&self) -> PolicyView {
        PolicyView {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            effect: self.effect,
            condition_groups: self.condition_groups.clone(),
            role_ids: self.role_ids.clone(),
            created_at: Some(self.created_at.clone()),
            updated_at: Some(self.updated_at.clone()),
            source: "api",
        }
    }
}

impl ManagedRole {
    /// The API's view.
    pub fn view(&self) -> RoleView {
        RoleView {
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self
                .display_name
                .clone()
                .unwrap_or_else(|| self.name.clone()),
            description: self.description.clone(),
            permissions: self.permissions.clone(),
            source: "api",
        }
    }
}

/// A file policy's view; its id is derived from the file's name and the policy's.
pub fn file_policy_view(id: &str, p: &AccessPolicyConfig) -> PolicyView {
    PolicyView {
        id: id.to_string(),
        name: p.name.clone(),
        description: p.description.clone(),
        effect: p.effect,
        condition_groups: p.condition_groups.clone(),
        role_ids: p.role_ids.clone().unwrap_or_default(),
        created_at: None,
        updated_at: None,
        source: "file",
    }
}

/// A file role's view; its id is its name.
pub fn file_role_view(name: &str, permissions: &[String]) -> RoleView {
    RoleView {
        id: name.to_string(),
        name: name.to_string(),
        display_name: name.to_string(),
        description: None,
        permissions: permissions.to_vec(),
        source: "file",
    }
}

/// `POST .../access-policies`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCreate {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Effect.
    pub effect: Effect,
    /// Groups.
    pub condition_groups: Vec<ConditionGroupConfig>,
    /// Roles to attach it to at once.
    #[serde(default)]
    pub role_ids: Vec<String>,
}

/// `PATCH .../access-policies/{id}`: the fields given change; `role_ids` is refused
/// (attach and detach instead, as in LangSmith).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    /// Name.
    pub name: Option<String>,
    /// Description (`null` clears it).
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    /// Effect.
    pub effect: Option<Effect>,
    /// Groups.
    pub condition_groups: Option<Vec<ConditionGroupConfig>>,
    /// Refused when given.
    pub role_ids: Option<Value>,
}

/// `POST /api/v1/orgs/current/roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleCreate {
    /// What users carry; default: the display name, lower-cased, spaces as `-`.
    pub name: Option<String>,
    /// For people.
    pub display_name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Permissions.
    pub permissions: Vec<String>,
}

/// `PATCH /api/v1/orgs/current/roles/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    /// Name.
    pub name: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Description (`null` clears it).
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    /// Permissions.
    pub permissions: Option<Vec<String>>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// One change the API makes.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create a policy.
    CreatePolicy(PolicyCreate),
    /// Update one.
    UpdatePolicy {
        /// Its id.
        id: String,
        /// The fields.
        patch: PolicyPatch,
        /// `If-Match`.
        if_match: Option<String>,
    },
    /// Delete one.
    DeletePolicy {
        /// Its id.
        id: String,
        /// `If-Match`.
        if_match: Option<String>,
    },
    /// Attach policies to a role.
    Attach {
        /// The role.
        role_id: String,
        /// The policies.
        policy_ids: Vec<String>,
    },
    /// Detach policies from a role.
    Detach {
        /// The role.
        role_id: String,
        /// The policies.
        policy_ids: Vec<String>,
    },
    /// Create a role.
    CreateRole(RoleCreate),
    /// Update one.
    UpdateRole {
        /// Its id.
        id: String,
        /// The fields.
        patch: RolePatch,
        /// `If-Match`.
        if_match: Option<String>,
    },
    /// Delete one (and detach it from every policy).
    DeleteRole {
        /// Its id.
        id: String,
        /// `If-Match`.
        if_match: Option<String>,
    },
    /// Make the state what it was at an earlier revision.
    Restore {
        /// The revision.
        revision: u64,
        /// Its state.
        state: Box<ManagedState>,
    },
}

/// What a change produced: the next state, the object it made or changed (as the API answers
/// it), and a one-line summary for the history and the audit log.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The next state.
    pub state: ManagedState,
    /// The object after the change (`None` for a delete, attach, detach or restore).
    pub object: Option<Value>,
    /// The object before the change, for the audit log.
    pub before: Option<Value>,
    /// `create access policy "Block PII" (id)` ...
    pub summary: String,
}

/// What a change needs besides the state: the files' roles and policies, a clock and ids.
pub struct Context<'a> {
    /// Roles and policies from files.
    pub files: &'a FileView,
    /// Now, RFC 3339 UTC.
    pub now: String,
    /// A fresh id (a UUID v4 in the gateway; fixed in tests).
    pub new_id: &'a (dyn Fn() -> String + Sync),
}

impl Change {
    /// The next state, or why the change is refused (404, 409, 412, 422). The caller still
    /// compiles the result before committing it.
    pub fn apply(self, state: &ManagedState, cx: &Context<'_>) -> Result<Applied, ApiError> {
        let mut next = state.clone();
        match self {
            Change::CreatePolicy(c) => create_policy(&mut next, c, cx),
            Change::UpdatePolicy {
                id,
                patch,
                if_match,
            } => update_policy(&mut next, &id, patch, if_match.as_deref(), cx),
            Change::DeletePolicy { id, if_match } => {
                delete_policy(&mut next, &id, if_match.as_deref(), cx)
            }
            Change::Attach {
                role_id,
                policy_ids,
            } => attach(&mut next, &role_id, &policy_ids, true, cx),
            Change::Detach {
                role_id,
                policy_ids,
            } => attach(&mut next, &role_id, &policy_ids, false, cx),
            Change::CreateRole(c) => create_role(&mut next, c, cx),
            Change::UpdateRole {
                id,
                patch,
                if_match,
            } => update_role(&mut next, &id, patch, if_match.as_deref(), cx),
            Change::DeleteRole { id, if_match } => {
                delete_role(&mut next, &id, if_match.as_deref(), cx)
            }
            Change::Restore { revision, state } => {
                check_restorable(&state, cx)?;
                Ok(Applied {
                    state: *state,
                    object: None,
                    before: None,
                    summary: format!("restore revision {revision}"),
                })
            }
        }
    }
}

fn json<T: Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

fn check_etag<T: Serialize>(
    object: &T,
    if_match: Option<&str>,
    what: &str,
    id: &str,
) -> Result<(), ApiError> {
    match if_match {
        Some(header) if !if_match_holds(header, &etag(object)) => Err(ApiError::stale(what, id)),
        _ => Ok(()),
    }
}

/// RFC 9110 13.1.1: `*`, or a list of entity tags one of which is `current` by the strong
/// comparison (a weak tag, `W/"..."`, never matches).
fn if_match_holds(header: &str, current: &str) -> bool {
    let header = header.trim();
    header == "*"
        || header
            .split(',')
            .map(str::trim)
            .any(|tag| !tag.starts_with("W/") && tag == current)
}

fn file_policy_id(cx: &Context<'_>, id: &str) -> bool {
    cx.files.policies.iter().any(|(pid, _)| pid == id)
}

fn policy_name_taken(state: &ManagedState, cx: &Context<'_>, name: &str, except: &str) -> bool {
    cx.files.policies.iter().any(|(_, p)| p.name == name)
        || state
            .access_policies
            .iter()
            .any(|p| p.name == name && p.id != except)
}

fn role_exists(state: &ManagedState, cx: &Context<'_>, id: &str) -> bool {
    cx.files.roles.contains_key(id) || state.roles.iter().any(|r| r.id == id)
}

fn check_role_ids(state: &ManagedState, cx: &Context<'_>, ids: &[String]) -> Result<(), ApiError> {
    match ids.iter().find(|id| !role_exists(state, cx, id)) {
        Some(id) => Err(ApiError::invalid(format!("role_ids: no role {id}"))),
        None => Ok(()),
    }
}

/// An earlier state still holds with today's files: every policy is attached to roles that
/// exist (in that state or the files). What compiling checks (names, permissions, conditions)
/// the caller checks after.
fn check_restorable(state: &ManagedState, cx: &Context<'_>) -> Result<(), ApiError> {
    if !state.roles.is_empty() {
        check_rbac_on(cx)?;
    }
    let gone: Vec<String> = state
        .access_policies
        .iter()
        .flat_map(|p| {
            p.role_ids
                .iter()
                .filter(|id| !role_exists(state, cx, id))
                .map(move |id| format!("access policy {:?} is attached to role {id}", p.name))
        })
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "this revision no longer holds: {}, which no longer exists",
        gone.join("; ")
    )))
}

/// Roles are defined in the store only where the files turned RBAC on (docs/access-control.md:
/// with no `roles` handlers alone decide; with roles, a user needs one granting each
/// permission). A first role from the API would otherwise refuse everything to every user
/// holding none of the API's roles, and deleting it would lift that again.
fn check_rbac_on(cx: &Context<'_>) -> Result<(), ApiError> {
    if cx.files.rbac {
        return Ok(());
    }
    Err(ApiError::invalid(
        "roles: the policy files define no roles, so RBAC is off and handlers alone decide; \
         a role here would make every user need a role for every permission. \
         Give a policy file a `roles:` section (it may be empty) to manage roles here",
    ))
}

/// What every update checks before it changes anything: the ETag the admin last saw, then a
/// new name (not empty, not another object's of the kind).
fn check_update<T: Serialize>(
    current: &T,
    if_match: Option<&str>,
    what: &str,
    id: &str,
    name: Option<&str>,
    taken: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    check_etag(current, if_match, what, id)?;
    let Some(name) = name else { return Ok(()) };
    non_empty("name", name)?;
    if taken(name) {
        let a = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Err(ApiError::conflict(format!(
            "{a} {what} named {name:?} already exists"
        )));
    }
    Ok(())
}

/// The change an update made: the object after and before, and the state it leaves.
fn updated<T: Serialize>(
    what: &str,
    id: &str,
    name: &str,
    after: &T,
    before: &T,
    state: &ManagedState,
) -> Applied {
    Applied {
        summary: format!("update {what} {name:?} ({id})"),
        state: state.clone(),
        object: json(after),
        before: json(before),
    }
}

fn non_empty(field: &str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be empty")));
    }
    Ok(())
}

fn create_policy(
    next: &mut ManagedState,
    c: PolicyCreate,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    non_empty("name", &c.name)?;
    if policy_name_taken(next, cx, &c.name, "") {
        return Err(ApiError::conflict(format!(
            "an access policy named {:?} already exists",
            c.name
        )));
    }
    check_role_ids(next, cx, &c.role_ids)?;
    let p = ManagedPolicy {
        id: (cx.new_id)(),
        name: c.name,
        description: c.description,
        effect: c.effect,
        condition_groups: c.condition_groups,
        role_ids: dedup(c.role_ids),
        created_at: cx.now.clone(),
        updated_at: cx.now.clone(),
    };
    let summary = format!("create access policy {:?} ({})", p.name, p.id);
    let object = json(&p.view());
    next.access_policies.push(p);
    Ok(Applied {
        state: next.clone(),
        object,
        before: None,
        summary,
    })
}

fn policy_index(next: &ManagedState, cx: &Context<'_>, id: &str) -> Result<usize, ApiError> {
    if file_policy_id(cx, id) {
        return Err(ApiError::conflict(format!(
            "access policy {id} comes from a policy file and cannot be changed through the API"
        )));
    }
    next.access_policies
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(|| ApiError::not_found("access policy", id))
}

fn update_policy(
    next: &mut ManagedState,
    id: &str,
    patch: PolicyPatch,
    if_match: Option<&str>,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    if patch.role_ids.is_some() {
        return Err(ApiError::invalid(
            "role_ids: an update cannot change the roles; attach or detach the policy instead",
        ));
    }
    let i = policy_index(next, cx, id)?;
    let current = next.access_policies[i].clone();
    let taken = |name: &str| policy_name_taken(next, cx, name, id);
    let name = patch.name.as_deref();
    check_update(&current.view(), if_match, "access policy", id, name, taken)?;
    let p = &mut next.access_policies[i];
    if let Some(name) = patch.name {
        p.name = name;
    }
    if let Some(d) = patch.description {
        p.description = d;
    }
    if let Some(e) = patch.effect {
        p.effect = e;
    }
    if let Some(g) = patch.condition_groups {
        p.condition_groups = g;
    }
    p.updated_at = cx.now.clone();
    let (after, name) = (p.view(), p.name.clone());
    Ok(updated(
        "access policy",
        id,
        &name,
        &after,
        &current.view(),
        next,
    ))
}

fn delete_policy(
    next: &mut ManagedState,
    id: &str,
    if_match: Option<&str>,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    let i = policy_index(next, cx, id)?;
    let gone = next.access_policies.remove(i);
    check_etag(&gone.view(), if_match, "access policy", id)?;
    Ok(Applied {
        summary: format!("delete access policy {:?} ({id})", gone.name),
        state: next.clone(),
        object: None,
        before: json(&gone.view()),
    })
}

fn attach(
    next: &mut ManagedState,
    role_id: &str,
    policy_ids: &[String],
    on: bool,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    // A detach may name a role that no longer exists (the files dropped it) as long as a
    // policy is still attached to it: users may still carry the name, and this is the only
    // way to take the policy off it.
    let attached = || {
        next.access_policies
            .iter()
            .any(|p| policy_ids.contains(&p.id) && p.role_ids.iter().any(|r| r == role_id))
    };
    if !role_exists(next, cx, role_id) && (on || !attached()) {
        return Err(ApiError::not_found("role", role_id));
    }
    if policy_ids.is_empty() {
        return Err(ApiError::invalid("access_policy_ids: give at least one"));
    }
    for pid in policy_ids {
        let i = policy_index(next, cx, pid)?;
        let ids = &mut next.access_policies[i].role_ids;
        let had = ids.iter().any(|r| r == role_id);
        if on && !had {
            ids.push(role_id.to_string());
        } else if !on && had {
            ids.retain(|r| r != role_id);
        }
        if on != had {
            next.access_policies[i].updated_at = cx.now.clone();
        }
    }
    Ok(Applied {
        summary: format!(
            "{} access policies {} {} role {role_id}",
            if on { "attach" } else { "detach" },
            policy_ids.join(", "),
            if on { "to" } else { "from" }
        ),
        state: next.clone(),
        object: None,
        before: None,
    })
}

/// A role name from a display name: lower case, runs of other characters as one `-`.
fn slug(display: &str) -> String {
    let mut out = String::new();
    for c in display.trim().chars() {
        if c.is_alphanumeric() || c == '_' {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn role_name_taken(next: &ManagedState, cx: &Context<'_>, name: &str, except: &str) -> bool {
    cx.files.roles.contains_key(name) || next.roles.iter().any(|r| r.name == name && r.id != except)
}

fn create_role(
    next: &mut ManagedState,
    c: RoleCreate,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    check_rbac_on(cx)?;
    let name = match (&c.name, &c.display_name) {
        (Some(n), _) => n.clone(),
        (None, Some(d)) => slug(d),
        (None, None) => return Err(ApiError::invalid("name: give a name or a display_name")),
    };
    non_empty("name", &name)?;
    if role_name_taken(next, cx, &name, "") {
        return Err(ApiError::conflict(format!(
            "a role named {name:?} already exists"
        )));
    }
    let r = ManagedRole {
        id: (cx.new_id)(),
        name,
        display_name: c.display_name,
        description: c.description,
        permissions: c.permissions,
        created_at: cx.now.clone(),
        updated_at: cx.now.clone(),
    };
    let summary = format!("create role {:?} ({})", r.name, r.id);
    let object = json(&r.view());
    next.roles.push(r);
    Ok(Applied {
        state: next.clone(),
        object,
        before: None,
        summary,
    })
}

fn role_index(next: &ManagedState, cx: &Context<'_>, id: &str) -> Result<usize, ApiError> {
    if cx.files.roles.contains_key(id) {
        return Err(ApiError::conflict(format!(
            "role {id} comes from a policy file and cannot be changed through the API"
        )));
    }
    next.roles
        .iter()
        .position(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found("role", id))
}

fn update_role(
    next: &mut ManagedState,
    id: &str,
    patch: RolePatch,
    if_match: Option<&str>,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    let i = role_index(next, cx, id)?;
    let current = next.roles[i].clone();
    let taken = |name: &str| role_name_taken(next, cx, name, id);
    check_update(
        &current.view(),
        if_match,
        "role",
        id,
        patch.name.as_deref(),
        taken,
    )?;
    let r = &mut next.roles[i];
    if let Some(n) = patch.name {
        r.name = n;
    }
    if let Some(d) = patch.display_name {
        r.display_name = Some(d);
    }
    if let Some(d) = patch.description {
        r.description = d;
    }
    if let Some(p) = patch.permissions {
        r.permissions = p;
    }
    r.updated_at = cx.now.clone();
    let (after, name) = (r.view(), r.name.clone());
    Ok(updated("role", id, &name, &after, &current.view(), next))
}

fn delete_role(
    next: &mut ManagedState,
    id: &str,
    if_match: Option<&str>,
    cx: &Context<'_>,
) -> Result<Applied, ApiError> {
    let i = role_index(next, cx, id)?;
    let gone = next.roles.remove(i);
    check_etag(&gone.view(), if_match, "role", id)?;
    // Users keep carrying the role's name (their tokens say so): deleting it would quietly
    // lift the deny policies attached to it. Allow policies are simply detached.
    let denies: Vec<&str> = next
        .access_policies
        .iter()
        .filter(|p| p.effect == Effect::Deny && p.role_ids.iter().any(|r| r == id))
        .map(|p| p.name.as_str())
        .collect();
    if !denies.is_empty() {
        return Err(ApiError::conflict(format!(
            "role {:?} has deny access policies attached ({}): detach or delete them first, \
             deleting the role would lift them for every user who still carries it",
            gone.name,
            denies.join(", ")
        )));
    }
    for p in &mut next.access_policies {
        if p.role_ids.iter().any(|r| r == id) {
            p.role_ids.retain(|r| r != id);
            p.updated_at = cx.now.clone();
        }
    }
    Ok(Applied {
        summary: format!("delete role {:?} ({id})", gone.name),
        state: next.clone(),
        object: None,
        before: json(&gone.view()),
    })
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

impl ManagedState {
    /// Read a store revision's document (`{}` for a store never written).
    pub fn from_value(v: &Value) -> Result<ManagedState, String> {
        serde_json::from_value(v.clone()).map_err(|e| format!("the policy store's state: {e}"))
    }

    /// The document to store.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The state as one more parsed policy file, named [`STORE_FILE`], whose text (the state's
    /// JSON) is part of the policy version.
    pub fn as_policy_file(&self) -> (PathBuf, String, PolicyFile) {
        let text = serde_json::to_string(self).unwrap_or_default();
        (PathBuf::from(STORE_FILE), text, self.policy_file())
    }

    /// The state as one more policy file, for compiling with the files: its roles by name, its
    /// policies with their role ids turned into the role names users carry.
    pub fn policy_file(&self) -> PolicyFile {
        let name_of = |id: &str| {
            self.roles
                .iter()
                .find(|r| r.id == id)
                .map_or_else(|| id.to_string(), |r| r.name.clone())
        };
        PolicyFile {
            roles: (!self.roles.is_empty()).then(|| {
                self.roles
                    .iter()
                    .map(|r| (r.name.clone(), r.permissions.clone()))
                    .collect()
            }),
            access_policies: self
                .access_policies
                .iter()
                .map(|p| AccessPolicyConfig {
                    name: p.name.clone(),
                    description: p.description.clone(),
                    effect: p.effect,
                    condition_groups: p.condition_groups.clone(),
                    role_ids: Some(p.role_ids.iter().map(|id| name_of(id)).collect()),
                    attached_only: true,
                })
                .collect(),
            ..PolicyFile::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_is_a_list_compared_strongly() {
        let t = "\"abc\"";
        for ok in [
            "\"abc\"",
            " \"abc\" ",
            "*",
            " * ",
            "\"x\", \"abc\"",
            "\"abc\",\"x\"",
        ] {
            assert!(if_match_holds(ok, t), "{ok}");
        }
        for stale in [
            "W/\"abc\"",
            "\"x\"",
            "abc",
            "\"x\", W/\"abc\"",
            "",
            "*, \"x\"",
        ] {
            assert!(!if_match_holds(stale, t), "{stale}");
        }
    }
}
