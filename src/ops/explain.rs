//! `graphguard explain`: one decision, as data and in words.
//!
//! Answers the troubleshooting questions of docs/access-control.md directly: which handler ran and what it
//! returned, whether RBAC permitted and through which role, every access policy group that
//! matched or failed (and the condition that failed), whether deny won or RBAC decided by
//! fallback, and whether the handler's filter lets this resource through.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::event::Event;
use crate::policy::access::{AccessDecision, ConditionFailure, Reason};
use crate::policy::filter::ResolvedFilter;
use crate::policy::{Grant, Policy};
use crate::user::User;

/// The explanation of one decision.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    /// `allow` or `deny`.
    pub effect: &'static str,
    /// The event.
    pub permission: String,
    /// The handler that ran (None: no handler; the default decision applied).
    pub handler: Option<String>,
    /// The rule index that applied.
    pub rule: Option<usize>,
    /// The handler's refusal, if it refused.
    pub handler_denied: Option<String>,
    /// The filter the handler returned, as JSON.
    pub filter: Option<Value>,
    /// The metadata the handler stamps.
    pub metadata: Option<Map<String, Value>>,
    /// Whether the given resource passes the filter (None: no resource given or no filter).
    pub filter_matches: Option<bool>,
    /// The access-policy decision.
    pub access: AccessDecision,
    /// The limits this action counts against, with their keys (none: no field).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitApplied>,
    /// The same, in sentences.
    pub words: Vec<String>,
}

/// A limit an action counts against.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LimitApplied {
    /// The limit's name.
    pub name: String,
    /// The key it counts under (`name:value`), or why none can be rendered (the request
    /// would then be refused).
    #[serde(serialize_with = "key_or_error")]
    pub key: Result<String, String>,
    /// What it allows: `30 per 1m`, `5 at once`.
    pub allows: String,
}

/// A key as a string, an unrenderable one as `{"error": why}`.
fn key_or_error<S: serde::Serializer>(
    key: &Result<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match key {
        Ok(k) => s.serialize_str(k),
        Err(e) => serde_json::json!({ "error": e }).serialize(s),
    }
}

/// The limits `user` doing `event` counts against, one at a time (so a key that cannot be
/// rendered is reported on its own limit).
fn limits_applied(policy: &Policy, user: &User, event: Event) -> Vec<LimitApplied> {
    let mut out = Vec::new();
    for l in policy.limits.all() {
        let one = crate::policy::limits::Limits::new(vec![l.clone()]);
        let key = match one.applicable(&[event], 1, user) {
            Ok(a) if a.is_empty() => continue,
            Ok(a) => Ok(a[0].key.clone()),
            Err(e) => Err(e),
        };
        out.push(LimitApplied {
            name: l.name.to_string(),
            key,
            allows: l.describe(),
        });
    }
    out
}

/// A filter back to its JSON form (for display).
pub fn filter_json(f: &ResolvedFilter) -> Value {
    // A filter's keys are strings and its values JSON: this cannot fail.
    serde_json::to_value(f).unwrap_or_default()
}

/// Explain the decision for `user` doing `event` on a resource with `resource` metadata.
pub fn explain(
    policy: &Policy,
    user: &User,
    event: Event,
    resource: Option<&Map<String, Value>>,
) -> Explain {
    let empty = Map::new();
    let tags = resource.unwrap_or(&empty);
    let access = policy.access.decide(user, event, tags);
    let mut words = Vec::new();
    let grant = policy.evaluate(event, user);
    let (handler, rule, handler_denied, filter, metadata) = grant_summary(policy, event, &grant);
    let filter_matches = match (&grant, resource) {
        (Ok(g), Some(md)) => g.active_filter().map(|f| f.matches(md)),
        _ => None,
    };
    words.push(handler_words(
        policy,
        event,
        &handler,
        rule,
        &handler_denied,
        &filter,
        &metadata,
    ));
    match filter_matches {
        Some(true) => words.push("The resource passes the filter.".into()),
        Some(false) => words.push("The resource fails the filter: for this user it does not exist (404, or 409 where the server says so).".into()),
        None => {}
    }
    access_words(event, user, &access, &mut words);
    for g in &access.groups {
        let eff = format!("{:?}", g.effect).to_lowercase();
        match &g.failed {
            None => words.push(format!("Access policy {:?} ({eff}) group {} matched.", g.policy, g.group)),
            Some(ConditionFailure::KeyAbsent { key }) => {
                words.push(format!("Access policy {:?} ({eff}) group {} did not match: tag {key:?} is absent.", g.policy, g.group))
            }
            Some(ConditionFailure::CaseMismatch { key, actual, expected }) => words.push(format!(
                "Access policy {:?} ({eff}) group {} did not match: tag {key:?} is {actual:?}, which differs from {expected:?} only by case (the operator is case sensitive).",
                g.policy, g.group
            )),
            Some(ConditionFailure::Mismatch { key, operator, actual, expected }) => words.push(format!(
                "Access policy {:?} ({eff}) group {} did not match: tag {key:?} = {actual:?} fails {operator} {expected:?}.",
                g.policy, g.group
            )),
        }
    }
    words.push(reason_words(access.reason));
    let limits = limits_applied(policy, user, event);
    for l in &limits {
        words.push(match &l.key {
            Ok(k) => format!("Limit {:?} counts it ({}) under key {k:?}.", l.name, l.allows),
            Err(e) => format!("Limit {:?} applies but its key cannot be rendered ({e}): the request is refused (403).", l.name),
        });
    }
    let allowed = access.allowed
        && handler_denied.is_none()
        && filter_matches != Some(false)
        && limits.iter().all(|l| l.key.is_ok());
    words.push(if allowed {
        format!("Effect: allow {event}.")
    } else {
        format!("Effect: deny {event}.")
    });
    Explain {
        effect: if allowed { "allow" } else { "deny" },
        permission: event.to_string(),
        handler,
        rule,
        handler_denied,
        filter,
        metadata,
        filter_matches,
        access,
        limits,
        words,
    }
}

/// What the handler granted, or refused: handler key, rule, refusal, filter, metadata.
#[allow(clippy::type_complexity)]
fn grant_summary(
    policy: &Policy,
    event: Event,
    grant: &Result<Grant, GatewayError>,
) -> (
    Option<String>,
    Option<usize>,
    Option<String>,
    Option<Value>,
    Option<Map<String, Value>>,
) {
    match grant {
        Ok(g) => (
            g.handler.as_deref().map(str::to_owned),
            g.rule,
            None,
            g.active_filter().map(filter_json),
            g.metadata.clone(),
        ),
        Err(e) => (
            policy.handler_for(event).map(|h| h.key.clone()),
            None,
            Some(e.detail.clone()),
            None,
            None,
        ),
    }
}

/// What the handler made of the event, in words.
fn handler_words(
    policy: &Policy,
    event: Event,
    handler: &Option<String>,
    rule: Option<usize>,
    handler_denied: &Option<String>,
    filter: &Option<Value>,
    metadata: &Option<Map<String, Value>>,
) -> String {
    match (handler, handler_denied) {
        (None, None) => format!(
            "No handler covers {event}; the default decision ({}) applies.",
            format!("{:?}", policy.default).to_lowercase()
        ),
        (None, Some(d)) => format!("No handler covers {event} and the default is deny: {d}."),
        (Some(h), Some(d)) => format!("Handler {h:?} refuses {event}: 403 {d:?}."),
        (Some(h), None) => {
            let mut s = format!("Handler {h:?} (rule {}) allows {event}", rule.unwrap_or(0));
            if let Some(f) = filter {
                s.push_str(&format!(" with filter {f}"));
            }
            if let Some(m) = metadata {
                s.push_str(&format!(", stamping {}", Value::Object(m.clone())));
            }
            s.push('.');
            s
        }
    }
}

/// What roles (RBAC) and each access-policy group made of the event, in words.
fn access_words(event: Event, user: &User, access: &AccessDecision, words: &mut Vec<String>) {
    if let Some(r) = &access.rbac {
        match &r.via_role {
            Some(role) => words.push(format!("RBAC permits {event} through role {role:?}.")),
            None => words.push(format!(
                "RBAC does not permit {event}: none of the user's roles {:?} grants it.",
                user.roles
            )),
        }
    }
}

/// Why roles and access policies decided as they did, in words.
fn reason_words(reason: Reason) -> String {
    match reason {
        Reason::Disabled => {
            "Roles and access policies are not configured: handlers alone decide.".into()
        }
        Reason::DenyWins => "A deny policy matched: deny wins.".into(),
        Reason::AllowGrants => {
            "An allow policy matched: access is granted (even without the RBAC permission).".into()
        }
        Reason::RbacFallbackAllow => {
            "No access policy matched: RBAC decides (fallback), and permits.".into()
        }
        Reason::RbacFallbackDeny => {
            "No access policy matched: RBAC decides (fallback), and does not permit.".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Resource};
    use serde_json::json;

    fn policy() -> Policy {
        Policy::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/abac"))
            .unwrap()
    }
    fn user(id: &str, role: &str) -> User {
        User {
            identity: id.into(),
            display_name: id.into(),
            roles: vec![role.into()],
            ..User::default()
        }
    }
    const READ: Event = Event::new(Resource::Threads, Action::Read);
    fn read(u: &User, tags: Value) -> Explain {
        explain(&policy(), u, READ, Some(tags.as_object().unwrap()))
    }

    #[test]
    fn scenario_1_annotators_see_only_their_team() {
        let alice = user("alice", "annotator-team-a");
        assert_eq!(
            read(&alice, json!({"Annotation-Team": "Team-A"})).effect,
            "allow"
        );
        let e = read(&alice, json!({"Annotation-Team": "Team-B"}));
        assert_eq!(e.effect, "deny");
        assert!(
            e.words
                .iter()
                .any(|w| w.contains("RBAC decides (fallback), and does not permit")),
            "{:?}",
            e.words
        );
    }

    #[test]
    fn scenario_2_pii_deny_beats_allow_and_rbac() {
        let alice = user("alice", "annotator-team-a");
        let e = read(
            &alice,
            json!({"Annotation-Team": "Team-A", "Contains-PII": "true"}),
        );
        assert_eq!(e.effect, "deny");
        assert_eq!(e.access.reason, crate::policy::access::Reason::DenyWins);
        let admin = user("admin", "admin");
        assert_eq!(read(&admin, json!({"Contains-PII": "true"})).effect, "deny");
        assert_eq!(
            read(&admin, json!({"Contains-PII": "false"})).effect,
            "allow"
        );
    }

    #[test]
    fn scenario_3_glob_matches_the_chatbot_family() {
        let bob = user("bob", "engineer");
        assert_eq!(
            read(&bob, json!({"Application": "chatbot-support"})).effect,
            "allow"
        );
        let e = read(&bob, json!({"Application": "search"}));
        assert_eq!(e.effect, "deny");
        assert!(
            e.words
                .iter()
                .any(|w| w.contains("fails matches \"chatbot-*\"")),
            "{:?}",
            e.words
        );
    }

    #[test]
    fn scenario_4_both_conditions_must_hold() {
        let dave = user("dave", "trainer");
        assert_eq!(
            read(&dave, json!({"Purpose": "Training", "Client": "Acme-Corp"})).effect,
            "allow"
        );
        assert_eq!(
            read(
                &dave,
                json!({"Purpose": "Training", "Client": "Other-Corp"})
            )
            .effect,
            "deny"
        );
        assert_eq!(read(&dave, json!({"Client": "Acme-Corp"})).effect, "deny");
    }

    #[test]
    fn scenario_5_if_exists_admits_untagged_resources() {
        let carol = user("carol", "consultant");
        assert_eq!(read(&carol, json!({"Client": "Acme-Corp"})).effect, "allow");
        assert_eq!(read(&carol, json!({})).effect, "allow");
        assert_eq!(read(&carol, json!({"Client": "Other-Corp"})).effect, "deny");
    }

    #[test]
    fn explain_reports_case_mismatch_and_rbac_role() {
        let alice = user("alice", "annotator-team-a");
        let e = read(&alice, json!({"Annotation-Team": "team-a"}));
        assert!(
            e.words.iter().any(|w| w.contains("only by case")),
            "{:?}",
            e.words
        );
        let admin = user("admin", "admin");
        let e = read(&admin, json!({}));
        assert!(
            e.words
                .iter()
                .any(|w| w.contains("RBAC permits threads:read through role \"admin\"")),
            "{:?}",
            e.words
        );
    }

    #[test]
    fn explain_reports_the_handler_filter_and_its_match() {
        let p = crate::policy::tests::policy(
            "handlers:\n  \"*\": {filter: {owner: \"{user.identity}\"}}\n",
        );
        let u = User {
            identity: "bob".into(),
            ..User::default()
        };
        let e = explain(
            &p,
            &u,
            READ,
            Some(json!({"owner": "alice"}).as_object().unwrap()),
        );
        assert_eq!(e.effect, "deny");
        assert_eq!(e.filter, Some(json!({"owner": "bob"})));
        assert_eq!(e.filter_matches, Some(false));
    }
}
