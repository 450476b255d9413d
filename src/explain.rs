//! `graphguard explain`: one decision, as data and in words.
//!
//! Answers the seed's troubleshooting questions directly: which handler ran and what it
//! returned, whether RBAC permitted and through which role, every access policy group that
//! matched or failed (and the condition that failed), whether deny won or RBAC decided by
//! fallback, and whether the handler's filter lets this resource through.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::abac::{AccessDecision, ConditionFailure, Reason};
use crate::event::Event;
use crate::filter::{Cond, ResolvedFilter};
use crate::policy::Policy;
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
    /// The same, in sentences.
    pub words: Vec<String>,
}

/// A filter back to its JSON form (for display).
pub fn filter_json(f: &ResolvedFilter) -> Value {
    let mut m = Map::new();
    for c in &f.conds {
        match c {
            Cond::Eq(k, v) => m.insert(k.clone(), v.clone()),
            Cond::Contains(k, v) => m.insert(k.clone(), serde_json::json!({"$contains": v})),
        };
    }
    if let Some(any) = &f.any {
        m.insert(
            "$or".into(),
            Value::Array(any.iter().map(filter_json).collect()),
        );
    }
    if let Some(all) = &f.all {
        m.insert(
            "$and".into(),
            Value::Array(all.iter().map(filter_json).collect()),
        );
    }
    Value::Object(m)
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
    let (handler, rule, handler_denied, filter, metadata) = match &grant {
        Ok(g) => (
            g.handler.clone(),
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
    };
    let filter_matches = match (&grant, resource) {
        (Ok(g), Some(md)) => g.active_filter().map(|f| f.matches(md)),
        _ => None,
    };
    match (&handler, &handler_denied) {
        (None, None) => words.push(
            format!(
                "No handler covers {event}; the default decision ({:?}) applies.",
                policy.default
            )
            .to_lowercase(),
        ),
        (None, Some(d)) => words.push(format!(
            "No handler covers {event} and the default is deny: {d}."
        )),
        (Some(h), Some(d)) => words.push(format!("Handler {h:?} refuses {event}: 403 {d:?}.")),
        (Some(h), None) => {
            let mut s = format!("Handler {h:?} (rule {}) allows {event}", rule.unwrap_or(0));
            if let Some(f) = &filter {
                s.push_str(&format!(" with filter {f}"));
            }
            if let Some(m) = &metadata {
                s.push_str(&format!(", stamping {}", Value::Object(m.clone())));
            }
            s.push('.');
            words.push(s);
        }
    }
    match filter_matches {
        Some(true) => words.push("The resource passes the filter.".into()),
        Some(false) => words.push("The resource fails the filter: for this user it does not exist (404, or 409 where the server says so).".into()),
        None => {}
    }
    if let Some(r) = &access.rbac {
        match &r.via_role {
            Some(role) => words.push(format!("RBAC permits {event} through role {role:?}.")),
            None => words.push(format!(
                "RBAC does not permit {event}: none of the user's roles {:?} grants it.",
                user.roles
            )),
        }
    }
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
    words.push(match access.reason {
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
    });
    let allowed = access.allowed && handler_denied.is_none() && filter_matches != Some(false);
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
        words,
    }
}
