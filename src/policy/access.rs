//! Roles (RBAC) and access policies (ABAC), as LangSmith defines them (docs/access-control.md), over the
//! agent server's resources.
//!
//! A policy's JSON is LangSmith's, unchanged: `name`, `description`, `effect`,
//! `condition_groups` (OR) of `permission`, `resource_type`, `conditions` (AND) of
//! `attribute_name` (`resource_tag_key`), `attribute_key`, `operator`, `attribute_value`;
//! `role_ids`. Resource types: `thread` (runs are evaluated against their thread's tags, as
//! LangSmith evaluates runs against their project's), `assistant`, `cron`, `store_item`. A
//! resource's tags are its `metadata` (for the store, the item's `value`).
//!
//! Combination, exactly the tables of docs/access-control.md: with neither roles nor policies everything is
//! allowed; with roles only, RBAC decides; with both, deny always wins, a matching allow grants
//! even without the RBAC permission, and with no match RBAC decides (fallback). Policies
//! without roles configured are evaluated with RBAC taken as permitting.
//!
//! Evaluation is a pure function of the compiled set, the user's roles and the resource's tags.
//! Condition groups are indexed by (permission, resource type), so the cost does not grow with
//! policies that cannot match the request.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::event::{Action, Event, Resource};
use crate::user::User;

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Grant when a group matches.
    Allow,
    /// Block when a group matches.
    Deny,
}

/// An access policy, LangSmith's JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicyConfig {
    /// Name (unique in the set).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// OR of groups.
    pub condition_groups: Vec<ConditionGroupConfig>,
    /// Roles the policy applies to; absent or empty: every user (in a policy file).
    pub role_ids: Option<Vec<String>>,
    /// Applies only to the roles it is attached to, none meaning nobody: a policy managed
    /// through the API, as in LangSmith (never set from a file).
    #[serde(skip)]
    pub attached_only: bool,
}

/// A condition group.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionGroupConfig {
    /// `RESOURCE:ACTION`, e.g. `threads:read`.
    pub permission: String,
    /// `thread`, `assistant`, `cron` or `store_item`.
    pub resource_type: String,
    /// AND of conditions.
    pub conditions: Vec<ConditionConfig>,
}

/// A condition.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Only `resource_tag_key`.
    pub attribute_name: String,
    /// The tag (metadata key).
    pub attribute_key: String,
    /// One of the twelve operators.
    pub operator: String,
    /// The value (scalars are taken as their text).
    #[serde(deserialize_with = "scalar_text")]
    pub attribute_value: String,
}

fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        v @ (Value::Bool(_) | Value::Number(_)) => Ok(v.to_string()),
        _ => Err(serde::de::Error::custom("attribute_value must be a string")),
    }
}

/// A resource type of access policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// Threads (and their runs).
    Thread,
    /// Assistants.
    Assistant,
    /// Crons.
    Cron,
    /// Store items.
    StoreItem,
}

impl ResourceType {
    /// The resource type an event's resource is evaluated as.
    pub fn of(r: Resource) -> ResourceType {
        match r {
            Resource::Threads => ResourceType::Thread,
            Resource::Assistants => ResourceType::Assistant,
            Resource::Crons => ResourceType::Cron,
            Resource::Store => ResourceType::StoreItem,
        }
    }
    fn parse(s: &str) -> Option<ResourceType> {
        match s {
            "thread" => Some(ResourceType::Thread),
            "assistant" => Some(ResourceType::Assistant),
            "cron" => Some(ResourceType::Cron),
            "store_item" => Some(ResourceType::StoreItem),
            _ => None,
        }
    }
    fn resource(self) -> Resource {
        match self {
            ResourceType::Thread => Resource::Threads,
            ResourceType::Assistant => Resource::Assistants,
            ResourceType::Cron => Resource::Crons,
            ResourceType::StoreItem => Resource::Store,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Equals,
    NotEquals,
    EqualsIgnoreCase,
    NotEqualsIgnoreCase,
    Matches,
    NotMatches,
}

/// A compiled condition.
#[derive(Debug, Clone)]
struct Condition {
    key: String,
    cmp: Cmp,
    if_exists: bool,
    value: String,
    value_lower: String,
    glob: Option<GlobMatcher>,
    operator: String,
}

/// Why a condition failed (for explain).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum ConditionFailure {
    /// The tag is absent (and the operator is not an `_if_exists` variant).
    KeyAbsent {
        /// The tag.
        key: String,
    },
    /// The value differs only by case under a case-sensitive operator.
    CaseMismatch {
        /// The tag.
        key: String,
        /// The resource's value.
        actual: String,
        /// The policy's value.
        expected: String,
    },
    /// The comparison is false.
    Mismatch {
        /// The tag.
        key: String,
        /// The operator.
        operator: String,
        /// The resource's value.
        actual: String,
        /// The policy's value.
        expected: String,
    },
}

/// The text a tag value is compared by: strings as they are, anything else as compact JSON
/// (`true`, `3`, `["a","b"]`, `null`).
pub fn tag_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

impl Condition {
    fn compile(c: &ConditionConfig) -> Result<Condition, String> {
        if c.attribute_name != "resource_tag_key" {
            return Err(format!(
                "attribute_name {:?} is not supported (only resource_tag_key)",
                c.attribute_name
            ));
        }
        let (base, if_exists) = match c.operator.strip_suffix("_if_exists") {
            Some(b) => (b, true),
            None => (c.operator.as_str(), false),
        };
        let cmp = match base {
            "equals" => Cmp::Equals,
            "not_equals" => Cmp::NotEquals,
            "equals_ignore_case" => Cmp::EqualsIgnoreCase,
            "not_equals_ignore_case" => Cmp::NotEqualsIgnoreCase,
            "matches" => Cmp::Matches,
            "not_matches" => Cmp::NotMatches,
            _ => return Err(format!("unknown operator {:?}", c.operator)),
        };
        let glob = match cmp {
            Cmp::Matches | Cmp::NotMatches => Some(compile_glob(&c.attribute_value)?),
            _ => None,
        };
        Ok(Condition {
            key: c.attribute_key.clone(),
            cmp,
            if_exists,
            value_lower: c.attribute_value.to_lowercase(),
            value: c.attribute_value.clone(),
            glob,
            operator: c.operator.clone(),
        })
    }

    /// Whether the condition holds, without building an explanation (no allocation for string
    /// tags under the case-sensitive and glob operators, nor for ASCII under the others).
    fn holds(&self, tags: &Map<String, Value>) -> bool {
        let Some(v) = tags.get(&self.key) else {
            return self.if_exists;
        };
        let actual = tag_text(v);
        let ci_eq = |a: &str| {
            if a.is_ascii() && self.value.is_ascii() {
                a.eq_ignore_ascii_case(&self.value)
            } else {
                a.to_lowercase() == self.value_lower
            }
        };
        match self.cmp {
            Cmp::Equals => *actual == *self.value,
            Cmp::NotEquals => *actual != *self.value,
            Cmp::EqualsIgnoreCase => ci_eq(&actual),
            Cmp::NotEqualsIgnoreCase => !ci_eq(&actual),
            Cmp::Matches => self
                .glob
                .as_ref()
                .is_some_and(|g| g.is_match(actual.as_ref())),
            Cmp::NotMatches => !self
                .glob
                .as_ref()
                .is_some_and(|g| g.is_match(actual.as_ref())),
        }
    }

    fn eval(&self, tags: &Map<String, Value>) -> Result<(), ConditionFailure> {
        let Some(v) = tags.get(&self.key) else {
            return if self.if_exists {
                Ok(())
            } else {
                Err(ConditionFailure::KeyAbsent {
                    key: self.key.clone(),
                })
            };
        };
        let actual = tag_text(v);
        let ok = match self.cmp {
            Cmp::Equals => *actual == *self.value,
            Cmp::NotEquals => *actual != *self.value,
            Cmp::EqualsIgnoreCase => actual.to_lowercase() == self.value_lower,
            Cmp::NotEqualsIgnoreCase => actual.to_lowercase() != self.value_lower,
            Cmp::Matches => self
                .glob
                .as_ref()
                .is_some_and(|g| g.is_match(actual.as_ref())),
            Cmp::NotMatches => !self
                .glob
                .as_ref()
                .is_some_and(|g| g.is_match(actual.as_ref())),
        };
        if ok {
            return Ok(());
        }
        if self.cmp == Cmp::Equals && actual.to_lowercase() == self.value_lower {
            return Err(ConditionFailure::CaseMismatch {
                key: self.key.clone(),
                actual: actual.into_owned(),
                expected: self.value.clone(),
            });
        }
        Err(ConditionFailure::Mismatch {
            key: self.key.clone(),
            operator: self.operator.clone(),
            actual: actual.into_owned(),
            expected: self.value.clone(),
        })
    }
}

/// A glob where only `*` (any run of characters, `/` included) and `?` (one character) are
/// special, as the seed defines; every other character is literal.
fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    let mut escaped = String::with_capacity(pattern.len());
    for ch in pattern.chars() {
        match ch {
            '[' | ']' | '{' | '}' | '\\' | '!' => {
                escaped.push('[');
                escaped.push(ch);
                escaped.push(']');
            }
            c => escaped.push(c),
        }
    }
    GlobBuilder::new(&escaped)
        .literal_separator(false)
        .backslash_escape(false)
        .case_insensitive(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob {pattern:?}: {e}"))
}

#[derive(Debug, Clone)]
struct Group {
    policy: usize,
    index: usize,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct PolicyMeta {
    name: String,
    effect: Effect,
}

/// The condition groups of one permission, split by who they apply to, so evaluation never
/// visits the groups of other permissions or of roles the user does not have.
#[derive(Debug, Clone, Default)]
struct EventGroups {
    /// Groups of policies without `role_ids`.
    everyone: Vec<Group>,
    /// Groups of policies with `role_ids`, under each role.
    by_role: HashMap<String, Vec<Group>>,
}

/// Permissions granted by a role (`*`, `threads:*`, `*:read` wildcards).
#[derive(Debug, Clone, Default)]
pub struct Roles(HashMap<String, Vec<String>>);

fn permission_matches(granted: &str, wanted: Event) -> bool {
    let (r, a) = granted.split_once(':').unwrap_or((granted, "*"));
    (r == "*" || r == wanted.resource.as_str()) && (a == "*" || a == wanted.action.as_str())
}

fn parse_permission(p: &str) -> Result<Event, String> {
    let (r, a) = p
        .split_once(':')
        .ok_or_else(|| format!("permission {p:?} must be RESOURCE:ACTION"))?;
    let r =
        Resource::parse(r).ok_or_else(|| format!("permission {p:?}: unknown resource {r:?}"))?;
    let a = Action::parse(a).ok_or_else(|| format!("permission {p:?}: unknown action {a:?}"))?;
    let e = Event::new(r, a);
    if !e.is_valid() {
        return Err(format!(
            "permission {p:?}: {} has no action {}",
            r.as_str(),
            a.as_str()
        ));
    }
    Ok(e)
}

fn validate_granted(p: &str, also: &[String]) -> Result<(), String> {
    // `*`, one of `also`, or `R:*` for the resource `R` of one of `also` (what
    // [`AccessControl::role_grants`] honours).
    let also_resource = |r: &str| {
        also.iter()
            .any(|a| a.split_once(':').is_some_and(|(ar, _)| ar == r))
    };
    if p == "*" || also.iter().any(|a| a == p) || p.strip_suffix(":*").is_some_and(also_resource) {
        return Ok(());
    }
    let (r, a) = p
        .split_once(':')
        .ok_or_else(|| format!("permission {p:?} must be RESOURCE:ACTION (wildcards: *)"))?;
    if r != "*" && Resource::parse(r).is_none() {
        return Err(format!("permission {p:?}: unknown resource {r:?}"));
    }
    if a != "*" && Action::parse(a).is_none() {
        return Err(format!("permission {p:?}: unknown action {a:?}"));
    }
    Ok(())
}

/// The compiled roles and access policies.
#[derive(Debug, Clone, Default)]
pub struct AccessControl {
    roles: Option<Roles>,
    policies: Vec<PolicyMeta>,
    index: HashMap<Event, EventGroups>,
    enabled_abac: bool,
}

/// RBAC's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RbacResult {
    /// Whether a role grants the permission.
    pub permitted: bool,
    /// The role that granted it.
    pub via_role: Option<String>,
}

/// One condition group's evaluation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupTrace {
    /// Policy name.
    pub policy: String,
    /// Policy effect.
    pub effect: Effect,
    /// Group index in the policy.
    pub group: usize,
    /// Whether every condition held.
    pub matched: bool,
    /// The first condition that failed.
    pub failed: Option<ConditionFailure>,
}

/// How the outcome was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Neither roles nor policies are configured.
    Disabled,
    /// A deny policy matched.
    DenyWins,
    /// An allow policy matched.
    AllowGrants,
    /// No policy matched; RBAC permitted.
    RbacFallbackAllow,
    /// No policy matched; RBAC did not permit.
    RbacFallbackDeny,
}

impl Reason {
    /// The reason's name, as `Debug` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Disabled => "Disabled",
            Reason::DenyWins => "DenyWins",
            Reason::AllowGrants => "AllowGrants",
            Reason::RbacFallbackAllow => "RbacFallbackAllow",
            Reason::RbacFallbackDeny => "RbacFallbackDeny",
        }
    }
}

/// The access decision for one permission on one resource, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessDecision {
    /// The permission checked.
    pub permission: String,
    /// Allowed?
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// RBAC's answer (None when roles are not configured).
    pub rbac: Option<RbacResult>,
    /// Every group evaluated for the user's applicable policies.
    pub groups: Vec<GroupTrace>,
}

/// One condition group of a policy: its event (from its permission, which must apply to
/// its resource type) and its compiled conditions; `None` after recording what is wrong.
fn compile_group(
    p: &AccessPolicyConfig,
    pi: usize,
    gi: usize,
    g: &ConditionGroupConfig,
    errors: &mut Vec<AccessError>,
) -> Option<(Event, Group)> {
    let at = format!("access_policies.{}.condition_groups[{gi}]", p.name);
    let event = match parse_permission(&g.permission) {
        Ok(e) => e,
        Err(e) => {
            errors.push(AccessError::at(at.clone(), e));
            return None;
        }
    };
    match ResourceType::parse(&g.resource_type) {
        None => {
            errors.push(AccessError::at(
                at.clone(),
                format!(
                    "unknown resource_type {:?} (thread, assistant, cron, store_item)",
                    g.resource_type
                ),
            ));
            return None;
        }
        Some(rt) if rt.resource() != event.resource => {
            errors.push(AccessError::at(
                at.clone(),
                format!(
                    "permission {} does not apply to resource_type {}",
                    g.permission, g.resource_type
                ),
            ));
            return None;
        }
        Some(_) => {}
    }
    let mut conditions = Vec::new();
    for (ci, c) in g.conditions.iter().enumerate() {
        match Condition::compile(c) {
            Ok(c) => conditions.push(c),
            Err(e) => errors.push(AccessError::at(format!("{at}.conditions[{ci}]"), e)),
        }
    }
    Some((
        event,
        Group {
            policy: pi,
            index: gi,
            conditions,
        },
    ))
}

/// File a group under its event: for everyone, or for each of the policy's roles.
fn index_group(
    index: &mut HashMap<Event, EventGroups>,
    role_ids: Option<&[String]>,
    event: Event,
    group: Group,
) {
    let slot = index.entry(event).or_default();
    match role_ids {
        None | Some([]) => slot.everyone.push(group),
        Some(roles) => {
            for r in roles {
                slot.by_role
                    .entry(r.clone())
                    .or_default()
                    .push(group.clone());
            }
        }
    }
}

/// A roles or access-policy compile error: the dotted key it is at, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AccessError {
    /// Where, e.g. `access_policies.team.condition_groups[0]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl AccessError {
    fn at(key: String, message: impl Into<String>) -> AccessError {
        AccessError {
            key,
            message: message.into(),
        }
    }
}

impl AccessControl {
    /// Compile roles and policies; errors name the policy, group and condition.
    pub fn compile(
        roles: Option<&HashMap<String, Vec<String>>>,
        policies: &[AccessPolicyConfig],
    ) -> Result<AccessControl, Vec<AccessError>> {
        Self::compile_with(roles, policies, &[])
    }

    /// [`AccessControl::compile`], with permissions beyond the handler events that roles may
    /// grant (the management API's, from the settings).
    pub fn compile_with(
        roles: Option<&HashMap<String, Vec<String>>>,
        policies: &[AccessPolicyConfig],
        also: &[String],
    ) -> Result<AccessControl, Vec<AccessError>> {
        let mut errors = Vec::new();
        let roles = roles.map(|r| {
            for (name, perms) in r {
                for p in perms {
                    if let Err(e) = validate_granted(p, also) {
                        errors.push(AccessError::at(format!("roles.{name}"), e));
                    }
                }
            }
            Roles(r.clone())
        });
        let mut metas = Vec::new();
        let mut index: HashMap<Event, EventGroups> = HashMap::new();
        for (pi, p) in policies.iter().enumerate() {
            if metas.iter().any(|m: &PolicyMeta| m.name == p.name) {
                errors.push(AccessError::at(
                    format!("access_policies[{pi}]"),
                    format!("duplicate policy name {:?}", p.name),
                ));
            }
            if p.condition_groups.is_empty() {
                errors.push(AccessError::at(
                    format!("access_policies.{}", p.name),
                    "condition_groups is empty",
                ));
            }
            for (gi, g) in p.condition_groups.iter().enumerate() {
                let Some((event, group)) = compile_group(p, pi, gi, g, &mut errors) else {
                    continue;
                };
                let unattached = p.role_ids.as_deref().is_none_or(<[String]>::is_empty);
                if !(p.attached_only && unattached) {
                    index_group(&mut index, p.role_ids.as_deref(), event, group);
                }
            }
            metas.push(PolicyMeta {
                name: p.name.clone(),
                effect: p.effect,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(AccessControl {
            roles,
            enabled_abac: !policies.is_empty(),
            policies: metas,
            index,
        })
    }

    /// Whether one of the user's roles grants `permission` (`*`, `RESOURCE:*`, or the
    /// permission itself), for permissions that are not handler events.
    pub fn role_grants(&self, user: &User, permission: &str) -> bool {
        let Some(roles) = &self.roles else {
            return false;
        };
        let prefix = permission.split_once(':').map(|(r, _)| r);
        user.roles
            .iter()
            .filter_map(|r| roles.0.get(r))
            .flatten()
            .any(|g| {
                g == "*"
                    || g == permission
                    || g.strip_suffix(":*").is_some_and(|r| Some(r) == prefix)
            })
    }

    /// Whether roles or policies are configured.
    pub fn is_enabled(&self) -> bool {
        self.roles.is_some() || self.enabled_abac
    }

    /// Whether any policy could depend on the resource's tags for this event (if not, the
    /// decision needs no lookup).
    pub fn needs_tags(&self, user: &User, event: Event) -> bool {
        self.applicable(user, event).next().is_some()
    }

    /// The groups of `event` that apply to `user` (a group may repeat when the user has two
    /// of its policy's roles; that changes no outcome).
    fn applicable<'a>(
        &'a self,
        user: &'a User,
        event: Event,
    ) -> impl Iterator<Item = &'a Group> + 'a {
        let eg = self.index.get(&event);
        eg.into_iter().flat_map(move |eg| {
            eg.everyone.iter().chain(
                user.roles
                    .iter()
                    .flat_map(move |r| eg.by_role.get(r).into_iter().flatten()),
            )
        })
    }

    /// RBAC's answer for an event (None when roles are not configured).
    pub fn rbac(&self, user: &User, event: Event) -> Option<RbacResult> {
        let roles = self.roles.as_ref()?;
        let via = user.roles.iter().find(|r| {
            roles
                .0
                .get(r.as_str())
                .is_some_and(|ps| ps.iter().any(|p| permission_matches(p, event)))
        });
        Some(RbacResult {
            permitted: via.is_some(),
            via_role: via.cloned(),
        })
    }

    /// The same answer as [`AccessControl::decide`], without the explanation: the per-item
    /// fast path of searches.
    pub fn allows(&self, user: &User, event: Event, tags: &Map<String, Value>) -> bool {
        if !self.is_enabled() {
            return true;
        }
        let (mut allow, mut deny) = (false, false);
        for g in self.applicable(user, event) {
            if g.conditions.iter().all(|c| c.holds(tags)) {
                match self.policies.get(g.policy).map(|m| m.effect) {
                    Some(Effect::Allow) => allow = true,
                    Some(Effect::Deny) => deny = true,
                    None => {}
                }
            }
        }
        if deny {
            return false;
        }
        if allow {
            return true;
        }
        match &self.roles {
            None => true,
            Some(roles) => user.roles.iter().any(|r| {
                roles
                    .0
                    .get(r.as_str())
                    .is_some_and(|ps| ps.iter().any(|p| permission_matches(p, event)))
            }),
        }
    }

    /// Decide one permission on a resource with these tags (`None`: tags unknown, e.g. a
    /// resource that does not exist yet is evaluated with no tags).
    pub fn decide(&self, user: &User, event: Event, tags: &Map<String, Value>) -> AccessDecision {
        let permission = event.to_string();
        if !self.is_enabled() {
            return AccessDecision {
                permission,
                allowed: true,
                reason: Reason::Disabled,
                rbac: None,
                groups: Vec::new(),
            };
        }
        let rbac = self.rbac(user, event);
        let mut groups = Vec::new();
        let (mut allow, mut deny) = (false, false);
        {
            for g in self.applicable(user, event) {
                let Some(meta) = self.policies.get(g.policy) else {
                    continue;
                };
                if groups
                    .iter()
                    .any(|t: &GroupTrace| t.policy == meta.name && t.group == g.index)
                {
                    continue;
                }
                let failed = g.conditions.iter().find_map(|c| c.eval(tags).err());
                let matched = failed.is_none();
                if matched {
                    match meta.effect {
                        Effect::Allow => allow = true,
                        Effect::Deny => deny = true,
                    }
                }
                groups.push(GroupTrace {
                    policy: meta.name.clone(),
                    effect: meta.effect,
                    group: g.index,
                    matched,
                    failed,
                });
            }
        }
        // Without roles, RBAC is taken as permitting: only deny policies can refuse.
        let rbac_permits = rbac.as_ref().is_none_or(|r| r.permitted);
        let (allowed, reason) = if deny {
            (false, Reason::DenyWins)
        } else if allow {
            (true, Reason::AllowGrants)
        } else if rbac_permits {
            (true, Reason::RbacFallbackAllow)
        } else {
            (false, Reason::RbacFallbackDeny)
        };
        AccessDecision {
            permission,
            allowed,
            reason,
            rbac,
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_may_grant_the_management_permission_as_role_grants_reads_it() {
        let also = ["organization:manage".to_string()];
        for ok in ["*", "organization:manage", "organization:*", "threads:*"] {
            assert!(validate_granted(ok, &also).is_ok(), "{ok}");
        }
        for bad in ["organization:read", "org:*", "organization"] {
            assert!(validate_granted(bad, &also).is_err(), "{bad}");
        }
        assert!(validate_granted("organization:*", &[]).is_err());
        let roles: HashMap<String, Vec<String>> =
            [("m".to_string(), vec!["organization:*".to_string()])].into();
        let ac = AccessControl::compile_with(Some(&roles), &[], &also).unwrap();
        let user = User {
            roles: vec!["m".into()],
            ..User::default()
        };
        assert!(ac.role_grants(&user, "organization:manage"));
    }

    fn user(roles: &[&str]) -> User {
        User {
            identity: "u".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            ..User::default()
        }
    }
    fn tags(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }
    fn policy(effect: &str, op: &str, key: &str, value: &str) -> AccessPolicyConfig {
        serde_json::from_value(json!({
            "name": format!("{effect}-{op}-{key}-{value}"),
            "effect": effect,
            "condition_groups": [{
                "permission": "threads:read",
                "resource_type": "thread",
                "conditions": [{"attribute_name": "resource_tag_key", "attribute_key": key, "operator": op, "attribute_value": value}]
            }]
        }))
        .unwrap()
    }
    const READ: Event = Event::new(Resource::Threads, Action::Read);

    fn cond(op: &str, value: &str, t: Value) -> bool {
        let ac = AccessControl::compile(None, &[policy("deny", op, "k", value)]).unwrap();
        !ac.decide(&user(&[]), READ, &tags(t)).allowed
    }

    #[test]
    fn equals_is_case_sensitive() {
        assert!(cond("equals", "Prod", json!({"k": "Prod"})));
        assert!(!cond("equals", "Prod", json!({"k": "prod"})));
        assert!(!cond("equals", "Prod", json!({})));
    }

    #[test]
    fn not_equals_is_case_sensitive_and_needs_the_key() {
        assert!(cond("not_equals", "Prod", json!({"k": "prod"})));
        assert!(!cond("not_equals", "Prod", json!({"k": "Prod"})));
        assert!(!cond("not_equals", "Prod", json!({})));
    }

    #[test]
    fn ignore_case_variants() {
        assert!(cond("equals_ignore_case", "Prod", json!({"k": "pROD"})));
        assert!(!cond("equals_ignore_case", "Prod", json!({"k": "dev"})));
        assert!(cond("not_equals_ignore_case", "Prod", json!({"k": "dev"})));
        assert!(!cond(
            "not_equals_ignore_case",
            "Prod",
            json!({"k": "PROD"})
        ));
        assert!(!cond("equals_ignore_case", "Prod", json!({})));
        assert!(!cond("not_equals_ignore_case", "Prod", json!({})));
    }

    #[test]
    fn globs_use_star_and_question_mark_only() {
        assert!(cond("matches", "chatbot-*", json!({"k": "chatbot-v2/eu"})));
        assert!(!cond("matches", "chatbot-*", json!({"k": "Chatbot-v2"})));
        assert!(cond("matches", "v?", json!({"k": "v2"})));
        assert!(!cond("matches", "v?", json!({"k": "v22"})));
        assert!(
            cond("matches", "[a]", json!({"k": "[a]"})),
            "brackets are literal"
        );
        assert!(!cond("matches", "[a]", json!({"k": "a"})));
        assert!(
            cond("matches", "{x,y}", json!({"k": "{x,y}"})),
            "braces are literal"
        );
        assert!(cond("not_matches", "chatbot-*", json!({"k": "search"})));
        assert!(!cond("not_matches", "chatbot-*", json!({"k": "chatbot-1"})));
        assert!(!cond("matches", "*", json!({})));
        assert!(!cond("not_matches", "x", json!({})));
    }

    #[test]
    fn if_exists_variants_match_absent_keys_and_otherwise_compare() {
        for op in [
            "equals",
            "not_equals",
            "equals_ignore_case",
            "not_equals_ignore_case",
            "matches",
            "not_matches",
        ] {
            let v = format!("{op}_if_exists");
            assert!(cond(&v, "A", json!({})), "{v} on an absent key");
        }
        assert!(cond("equals_if_exists", "A", json!({"k": "A"})));
        assert!(!cond("equals_if_exists", "A", json!({"k": "B"})));
        assert!(cond("not_equals_if_exists", "A", json!({"k": "B"})));
        assert!(!cond("not_equals_if_exists", "A", json!({"k": "A"})));
        assert!(cond("equals_ignore_case_if_exists", "A", json!({"k": "a"})));
        assert!(!cond(
            "not_equals_ignore_case_if_exists",
            "A",
            json!({"k": "a"})
        ));
        assert!(cond("matches_if_exists", "a*", json!({"k": "abc"})));
        assert!(!cond("not_matches_if_exists", "a*", json!({"k": "abc"})));
    }

    #[test]
    fn non_string_tags_compare_by_json_text() {
        assert!(cond("equals", "true", json!({"k": true})));
        assert!(cond("equals", "3", json!({"k": 3})));
        assert!(
            !cond("equals", "3", json!({"k": 3.0})),
            "3.0 is the text 3.0"
        );
        assert!(cond("equals", r#"["a","b"]"#, json!({"k": ["a", "b"]})));
        assert!(
            cond("equals", "null", json!({"k": null})),
            "a present null is the text null"
        );
    }

    #[test]
    fn unknown_operator_and_attribute_are_load_errors() {
        let mut p = policy("allow", "contains", "k", "v");
        assert!(AccessControl::compile(None, &[p.clone()]).is_err());
        p = policy("allow", "equals", "k", "v");
        p.condition_groups[0].conditions[0].attribute_name = "user_id".into();
        assert!(AccessControl::compile(None, &[p.clone()]).is_err());
        p = policy("allow", "equals", "k", "v");
        p.condition_groups[0].resource_type = "project".into();
        assert!(AccessControl::compile(None, &[p.clone()]).is_err());
        p = policy("allow", "equals", "k", "v");
        p.condition_groups[0].permission = "assistants:read".into();
        assert!(
            AccessControl::compile(None, &[p]).is_err(),
            "permission and resource type disagree"
        );
    }

    fn table_case(rbac: bool, allow_matches: bool, deny_matches: bool) -> bool {
        let mut roles = HashMap::new();
        roles.insert(
            "r".to_string(),
            if rbac {
                vec!["threads:read".to_string()]
            } else {
                vec![]
            },
        );
        let allow = policy(
            "allow",
            "equals",
            "a",
            if allow_matches { "1" } else { "x" },
        );
        let deny = policy("deny", "equals", "d", if deny_matches { "1" } else { "x" });
        let ac = AccessControl::compile(Some(&roles), &[allow, deny]).unwrap();
        ac.decide(&user(&["r"]), READ, &tags(json!({"a": "1", "d": "1"})))
            .allowed
    }

    #[test]
    fn seed_outcome_table_row_by_row() {
        // (RBAC permits, allow matches, deny matches) -> result, the seven rows of docs/access-control.md.
        assert!(table_case(true, true, false));
        assert!(table_case(true, false, false));
        assert!(!table_case(true, true, true));
        assert!(!table_case(true, false, true));
        assert!(table_case(false, true, false));
        assert!(!table_case(false, false, false));
        assert!(!table_case(false, true, true));
    }

    #[test]
    fn feature_combinations() {
        let off = AccessControl::compile(None, &[]).unwrap();
        let d = off.decide(&user(&[]), READ, &Map::new());
        assert!(d.allowed);
        assert_eq!(d.reason, Reason::Disabled);
        let mut roles = HashMap::new();
        roles.insert("reader".to_string(), vec!["threads:*".to_string()]);
        let rbac = AccessControl::compile(Some(&roles), &[]).unwrap();
        assert!(rbac.decide(&user(&["reader"]), READ, &Map::new()).allowed);
        let d = rbac.decide(&user(&["other"]), READ, &Map::new());
        assert!(!d.allowed);
        assert_eq!(d.reason, Reason::RbacFallbackDeny);
    }

    #[test]
    fn role_wildcards() {
        for (granted, ok) in [
            ("*", true),
            ("threads:*", true),
            ("*:read", true),
            ("threads:read", true),
            ("threads:update", false),
            ("assistants:*", false),
        ] {
            assert_eq!(permission_matches(granted, READ), ok, "{granted}");
        }
        let mut roles = HashMap::new();
        roles.insert("x".to_string(), vec!["runs:*".to_string()]);
        assert!(AccessControl::compile(Some(&roles), &[]).is_err());
    }

    #[test]
    fn policies_apply_only_to_their_roles() {
        let mut p = policy("deny", "equals", "k", "v");
        p.role_ids = Some(vec!["contractor".into()]);
        let ac = AccessControl::compile(None, &[p]).unwrap();
        assert!(
            !ac.decide(&user(&["contractor"]), READ, &tags(json!({"k": "v"})))
                .allowed
        );
        assert!(
            ac.decide(&user(&["employee"]), READ, &tags(json!({"k": "v"})))
                .allowed
        );
        assert!(!ac.needs_tags(&user(&["employee"]), READ));
        assert!(ac.needs_tags(&user(&["contractor"]), READ));
    }

    #[test]
    fn groups_are_ored_and_conditions_anded() {
        let p: AccessPolicyConfig = serde_json::from_value(json!({
            "name": "p", "effect": "allow",
            "condition_groups": [
                {"permission": "threads:read", "resource_type": "thread", "conditions": [
                    {"attribute_name": "resource_tag_key", "attribute_key": "Purpose", "operator": "equals", "attribute_value": "Training"},
                    {"attribute_name": "resource_tag_key", "attribute_key": "Client", "operator": "equals", "attribute_value": "Acme-Corp"}]},
                {"permission": "threads:read", "resource_type": "thread", "conditions": [
                    {"attribute_name": "resource_tag_key", "attribute_key": "Public", "operator": "equals", "attribute_value": "yes"}]}
            ]
        }))
        .unwrap();
        let mut roles = HashMap::new();
        roles.insert("none".to_string(), vec![]);
        let ac = AccessControl::compile(Some(&roles), &[p]).unwrap();
        let u = user(&["none"]);
        assert!(
            ac.decide(
                &u,
                READ,
                &tags(json!({"Purpose": "Training", "Client": "Acme-Corp"}))
            )
            .allowed
        );
        assert!(
            !ac.decide(
                &u,
                READ,
                &tags(json!({"Purpose": "Training", "Client": "Other"}))
            )
            .allowed
        );
        assert!(ac.decide(&u, READ, &tags(json!({"Public": "yes"}))).allowed);
    }

    #[test]
    fn explain_names_the_failed_condition() {
        let ac = AccessControl::compile(None, &[policy("allow", "equals", "Env", "Prod")]).unwrap();
        let d = ac.decide(&user(&[]), READ, &tags(json!({"Env": "prod"})));
        assert_eq!(
            d.groups[0].failed,
            Some(ConditionFailure::CaseMismatch {
                key: "Env".into(),
                actual: "prod".into(),
                expected: "Prod".into()
            })
        );
        let d = ac.decide(&user(&[]), READ, &tags(json!({})));
        assert_eq!(
            d.groups[0].failed,
            Some(ConditionFailure::KeyAbsent { key: "Env".into() })
        );
    }

    /// A small deterministic generator (no extra dependency): xorshift64*.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
            &xs[(self.next() % xs.len() as u64) as usize]
        }
    }
    const KEYS: [&str; 3] = ["Team", "Env", "Client"];
    const VALUES: [&str; 5] = ["a", "A", "b", "a*", "?"];
    const OPS: [&str; 12] = [
        "equals",
        "not_equals",
        "equals_ignore_case",
        "not_equals_ignore_case",
        "matches",
        "not_matches",
        "equals_if_exists",
        "not_equals_if_exists",
        "equals_ignore_case_if_exists",
        "not_equals_ignore_case_if_exists",
        "matches_if_exists",
        "not_matches_if_exists",
    ];
    const ROLES: [&str; 3] = ["r0", "r1", "r2"];

    fn random_policy(g: &mut Gen, i: usize, effect: &str) -> AccessPolicyConfig {
        let groups: Vec<Value> = (0..1 + g.next() % 2)
            .map(|_| {
                let conds: Vec<Value> = (0..1 + g.next() % 2)
                    .map(|_| json!({"attribute_name": "resource_tag_key", "attribute_key": g.pick(&KEYS), "operator": g.pick(&OPS), "attribute_value": g.pick(&VALUES)}))
                    .collect();
                json!({"permission": "threads:read", "resource_type": "thread", "conditions": conds})
            })
            .collect();
        let roles: Vec<&str> = if g.next().is_multiple_of(3) {
            vec![]
        } else {
            vec![*g.pick(&ROLES)]
        };
        serde_json::from_value(json!({"name": format!("p{i}"), "effect": effect, "condition_groups": groups, "role_ids": roles})).unwrap()
    }

    fn random_tags(g: &mut Gen) -> Map<String, Value> {
        let mut m = Map::new();
        for k in KEYS {
            match g.next() % 4 {
                0 => {}
                1 => {
                    m.insert(k.into(), json!(true));
                }
                _ => {
                    m.insert(k.into(), json!(g.pick(&VALUES)));
                }
            }
        }
        m
    }

    /// Roles, policies, a user and a resource's tags.
    type World = (
        HashMap<String, Vec<String>>,
        Vec<AccessPolicyConfig>,
        User,
        Map<String, Value>,
    );

    fn world(g: &mut Gen) -> World {
        let mut roles = HashMap::new();
        for r in ROLES {
            roles.insert(
                r.to_string(),
                if g.next().is_multiple_of(2) {
                    vec!["threads:read".into()]
                } else {
                    vec![]
                },
            );
        }
        let n = g.next() % 5;
        let policies = (0..n as usize)
            .map(|i| {
                let eff = if g.next().is_multiple_of(2) {
                    "allow"
                } else {
                    "deny"
                };
                random_policy(g, i, eff)
            })
            .collect();
        let r = *g.pick(&ROLES);
        let u = user(&[r]);
        (roles, policies, u, random_tags(g))
    }

    #[test]
    fn property_fast_path_agrees_with_the_explained_decision() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        for _ in 0..1000 {
            let (roles, policies, u, tags) = world(&mut g);
            let ac = AccessControl::compile(Some(&roles), &policies).unwrap();
            let d = ac.decide(&u, READ, &tags);
            assert_eq!(
                ac.allows(&u, READ, &tags),
                d.allowed,
                "{policies:?} {tags:?}"
            );
            // The explanation is consistent with the outcome.
            let deny = d
                .groups
                .iter()
                .any(|x| x.matched && x.effect == Effect::Deny);
            let allow = d
                .groups
                .iter()
                .any(|x| x.matched && x.effect == Effect::Allow);
            assert_eq!(d.reason == Reason::DenyWins, deny);
            if !deny && allow {
                assert_eq!(d.reason, Reason::AllowGrants);
            }
            assert!(d.groups.iter().all(|x| x.matched == x.failed.is_none()));
        }
    }

    #[test]
    fn property_adding_a_deny_never_grants_access() {
        let mut g = Gen(0xD1B5_4A32_D192_ED03);
        for i in 0..1000 {
            let (roles, mut policies, u, tags) = world(&mut g);
            let before = AccessControl::compile(Some(&roles), &policies)
                .unwrap()
                .allows(&u, READ, &tags);
            policies.push(random_policy(&mut g, 100 + i, "deny"));
            let after = AccessControl::compile(Some(&roles), &policies)
                .unwrap()
                .allows(&u, READ, &tags);
            assert!(
                !after || before,
                "a deny granted access: {policies:?} {tags:?}"
            );
        }
    }

    #[test]
    fn property_adding_an_allow_never_removes_access() {
        let mut g = Gen(0x94D0_49BB_1331_11EB);
        for i in 0..1000 {
            let (roles, mut policies, u, tags) = world(&mut g);
            let before = AccessControl::compile(Some(&roles), &policies)
                .unwrap()
                .allows(&u, READ, &tags);
            policies.push(random_policy(&mut g, 100 + i, "allow"));
            let after = AccessControl::compile(Some(&roles), &policies)
                .unwrap()
                .allows(&u, READ, &tags);
            assert!(
                !before || after,
                "an allow removed access: {policies:?} {tags:?}"
            );
        }
    }

    #[test]
    fn seed_json_pastes_unchanged() {
        let text = r#"{"name": "Block PII Datasets", "description": "x", "effect": "deny", "role_ids": ["r1"],
            "condition_groups": [{"permission": "threads:read", "resource_type": "thread",
            "conditions": [{"attribute_name": "resource_tag_key", "attribute_key": "Contains-PII", "operator": "equals", "attribute_value": "true"}]}]}"#;
        let p: AccessPolicyConfig = serde_json::from_str(text).unwrap();
        assert!(AccessControl::compile(None, &[p]).is_ok());
    }
}
