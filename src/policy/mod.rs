//! The compiled policy: a complete, validated, immutable snapshot.
//!
//! Built once per load from every policy file of a directory; handler resolution is precomputed
//! for every (resource, action) event, templates and filters are pre-parsed. The request path
//! only reads it. A reload builds a new snapshot and swaps it in whole.

pub mod access;
mod compile;
pub mod config;
pub mod filter;
pub mod limits;
pub mod managed;
pub mod template;
pub mod webhook;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde_json::{Map, Value};

use crate::authn::Authenticator;
use crate::error::GatewayError;
use crate::event::{Action, Event, Resource};
use crate::policy::access::AccessControl;
use crate::policy::config::{
    ConfigError, DefaultDecision, NamespaceMode, RuleConfig, SettingsConfig, WhenConfig,
};
use crate::policy::filter::{FilterTemplate, ResolvedFilter};
use crate::policy::managed::{FileView, Managed, ManagedState};
use crate::policy::template::{StrTemplate, ValueTemplate};
use crate::policy::webhook::WebhookPolicy;
use crate::routes::UnmediatedGroup;
use crate::user::User;

/// Names of the headers that carry the user upstream.
#[derive(Debug, Clone)]
pub struct UserHeaders {
    /// Identity.
    pub identity: HeaderName,
    /// Display name.
    pub display_name: HeaderName,
    /// Permissions (JSON list).
    pub permissions: HeaderName,
    /// Roles (JSON list).
    pub roles: HeaderName,
    /// Every header stripped from client requests (the four above and any configured extras).
    pub strip: Vec<HeaderName>,
}

/// A compiled store namespace rule.
#[derive(Debug, Clone)]
pub struct NamespaceRule {
    /// Prefix labels.
    pub prefix: Vec<StrTemplate>,
    /// Require or rewrite.
    pub mode: NamespaceMode,
    /// 403 detail in require mode.
    pub message: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    when: Option<WhenConfig>,
    allow: Option<bool>,
    deny: Option<String>,
    require: Option<config::RequireConfig>,
    metadata: Option<Vec<(String, ValueTemplate)>>,
    /// The metadata keys, shared by every grant of this rule.
    stamped: Arc<[String]>,
    filter: Option<FilterTemplate>,
    namespace: Option<NamespaceRule>,
}

/// A compiled handler: its key and rules.
#[derive(Debug, Clone)]
pub struct Handler {
    /// The key it was registered under (`"*"`, `"threads:read"` ...).
    pub key: String,
    /// The key, shared by every grant and step that names this handler.
    pub shared_key: Arc<str>,
    /// Rules; the first whose `when` matches applies.
    pub rules: Vec<Rule>,
}

/// What a handler grants for one event: LangGraph's "allow, maybe with a filter", plus stamping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// The handler that decided (None: no handler, default decision).
    pub handler: Option<Arc<str>>,
    /// Index of the rule that applied.
    pub rule: Option<usize>,
    /// Metadata to stamp into create and update bodies.
    pub metadata: Option<Map<String, Value>>,
    /// The filter (None or empty: no filter), shared with the decision's record.
    pub filter: Option<Arc<ResolvedFilter>>,
    /// The metadata keys stamped (the rule's, shared).
    pub stamped: Arc<[String]>,
    /// Store namespace rule, rendered: (prefix labels, mode, message).
    pub namespace: Option<(Vec<String>, NamespaceMode, String)>,
}

impl Grant {
    /// The filter if it is non-empty.
    pub fn active_filter(&self) -> Option<&ResolvedFilter> {
        self.filter.as_deref().filter(|f| !f.is_empty())
    }
}

/// The whole compiled policy set.
#[derive(Debug)]
pub struct Policy {
    /// Content hash of the loaded files (short hex).
    pub version: String,
    /// The version as a response header value (sent on every response).
    pub version_header: http::HeaderValue,
    /// Decision for uncovered events.
    pub default: DefaultDecision,
    /// Public paths.
    pub public_paths: Vec<String>,
    /// Unmediated route groups that are allowed.
    pub unmediated: HashSet<UnmediatedGroup>,
    /// User header names.
    pub user_headers: UserHeaders,
    /// Lookup cache TTL (zero: no caching).
    pub lookup_ttl: Duration,
    /// Lookup cache capacity.
    pub lookup_capacity: usize,
    /// Which webhook URLs request bodies may carry.
    pub webhooks: WebhookPolicy,
    /// Upstream requests one gateway-completed search may make.
    pub search_max_requests: u32,
    /// Authenticators in order.
    pub authenticators: Vec<Authenticator>,
    handlers: Vec<Option<Arc<Handler>>>,
    /// Roles and access policies.
    pub access: AccessControl,
    /// Quotas and rate limits.
    pub limits: limits::Limits,
    /// Send `RateLimit-Policy` and `RateLimit` on allowed responses a limit counted.
    pub rate_limit_headers: bool,
    /// The permission the management API requires (None: the API is off).
    pub management: Option<String>,
    /// What the management API lists: the store's state this snapshot was built with, and the
    /// files' roles and policies.
    pub managed: Arc<Managed>,
    /// Non-fatal findings (uncovered events ...).
    pub warnings: Vec<String>,
}

const DEFAULT_PUBLIC: [&str; 5] = ["/", "/ok", "/info", "/docs", "/openapi.json"];

impl Policy {
    /// The handler that runs for an event, LangGraph's resolution order:
    /// `(resource, action)` > `(resource, *)` > `(*, action)` > `*`.
    pub fn handler_for(&self, event: Event) -> Option<&Arc<Handler>> {
        self.handlers.get(event.index()).and_then(|h| h.as_ref())
    }

    /// Run the handler for an event. `Err` is the refusal (403 ...).
    pub fn evaluate(&self, event: Event, user: &User) -> Result<Grant, GatewayError> {
        let Some(handler) = self.handler_for(event) else {
            return match self.default {
                DefaultDecision::Allow => Ok(Grant::default()),
                DefaultDecision::Deny => Err(GatewayError::forbidden(format!(
                    "Forbidden: no handler covers {event}"
                ))),
            };
        };
        let Some((i, rule)) = handler
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.when.as_ref().is_none_or(|w| when_holds(w, user)))
        else {
            return Err(GatewayError::forbidden("Forbidden"));
        };
        let mut grant = Grant {
            handler: Some(handler.shared_key.clone()),
            rule: Some(i),
            ..Grant::default()
        };
        let render_err = |e: String| {
            tracing::warn!(handler = %handler.key, rule = i, error = %e, "handler could not be evaluated");
            GatewayError::forbidden(format!(
                "Forbidden: handler {} could not be evaluated: {e}",
                handler.key
            ))
        };
        if rule.allow == Some(false) {
            return Err(GatewayError::forbidden("Forbidden"));
        }
        if let Some(msg) = &rule.deny {
            return Err(GatewayError::forbidden(msg.clone()));
        }
        if let Some(req) = &rule.require {
            let perms = req.permissions.iter().all(|p| user.has_permission(p));
            let roles = req.roles.is_empty() || req.roles.iter().any(|r| user.has_role(r));
            if !(perms && roles) {
                return Err(GatewayError::forbidden(
                    req.message.clone().unwrap_or_else(|| "Forbidden".into()),
                ));
            }
        }
        if let Some(md) = &rule.metadata {
            let mut m = Map::new();
            for (k, t) in md {
                m.insert(k.clone(), t.render(user).map_err(render_err)?);
            }
            grant.metadata = Some(m);
            grant.stamped = rule.stamped.clone();
        }
        if let Some(f) = &rule.filter {
            grant.filter = Some(Arc::new(f.render(user).map_err(render_err)?));
        }
        if let Some(ns) = &rule.namespace {
            let mut labels = Vec::with_capacity(ns.prefix.len());
            for t in &ns.prefix {
                match t.render(user).map_err(render_err)? {
                    Value::String(s) if !s.is_empty() && !s.contains('.') => labels.push(s),
                    other => {
                        return Err(render_err(format!(
                            "namespace label {other} is not a non-empty string without periods"
                        )))
                    }
                }
            }
            grant.namespace = Some((labels, ns.mode, ns.message.clone()));
        }
        Ok(grant)
    }

    /// Load every `*.yaml`, `*.yml` and `*.json` file of a directory (not recursive; hidden
    /// entries such as Kubernetes' `..data` are skipped, symlinks are followed).
    pub fn load_dir(dir: &Path) -> Result<Policy, Vec<ConfigError>> {
        Self::load_dir_with(dir, None)
    }

    /// [`Policy::load_dir`] joined with the policy store's state at a revision: its roles
    /// and access policies compile as one more file (`policy-store`), part of the version.
    pub fn load_dir_with(
        dir: &Path,
        store: Option<(u64, &ManagedState)>,
    ) -> Result<Policy, Vec<ConfigError>> {
        let err = |m: String| {
            vec![ConfigError {
                file: dir.to_path_buf(),
                line: None,
                key: String::new(),
                message: m,
            }]
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| err(format!("cannot read policy directory: {e}")))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.')
                    && matches!(
                        p.extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                    && p.is_file()
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(err(
                "no policy files (*.yaml, *.yml, *.json) in the directory".into(),
            ));
        }
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match std::fs::read_to_string(&p) {
                Ok(text) => match config::parse_file(&p, &text) {
                    Ok(f) => files.push((p, text, f)),
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(ConfigError {
                    file: p,
                    line: None,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let file_view = FileView::of(&files);
        if let Some((_, state)) = store {
            files.push(state.as_policy_file());
        }
        let mut policy = Policy::compile(&files)?;
        policy.managed = Arc::new(Managed {
            revision: store.map_or(0, |(n, _)| n),
            state: store.map(|(_, s)| s.clone()).unwrap_or_default(),
            files: file_view,
        });
        if policy.authenticators.is_empty() {
            return Err(err(
                "no authenticator is configured: every request would be refused".into(),
            ));
        }
        Ok(policy)
    }
}

fn when_holds(w: &WhenConfig, user: &User) -> bool {
    w.roles
        .as_ref()
        .is_none_or(|rs| rs.iter().any(|r| user.has_role(r)))
        && w.permissions
            .as_ref()
            .is_none_or(|ps| ps.iter().all(|p| user.has_permission(p)))
        && w.identity
            .as_ref()
            .is_none_or(|ids| ids.contains(&user.identity))
}

fn default_user_headers() -> UserHeaders {
    let h = HeaderName::from_static;
    let (i, d, p, r) = (
        h("x-graphguard-user-id"),
        h("x-graphguard-user-display-name"),
        h("x-graphguard-user-permissions"),
        h("x-graphguard-user-roles"),
    );
    UserHeaders {
        strip: vec![i.clone(), d.clone(), p.clone(), r.clone()],
        identity: i,
        display_name: d,
        permissions: p,
        roles: r,
    }
}

fn build_user_headers(s: &SettingsConfig) -> Result<UserHeaders, String> {
    let Some(c) = &s.user_headers else {
        return Ok(default_user_headers());
    };
    let d = default_user_headers();
    let name = |v: &Option<String>, dflt: HeaderName| -> Result<HeaderName, String> {
        match v {
            None => Ok(dflt),
            Some(n) => HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name {n:?}")),
        }
    };
    let identity = name(&c.identity, d.identity)?;
    let display_name = name(&c.display_name, d.display_name)?;
    let permissions = name(&c.permissions, d.permissions)?;
    let roles = name(&c.roles, d.roles)?;
    let mut strip = vec![
        identity.clone(),
        display_name.clone(),
        permissions.clone(),
        roles.clone(),
    ];
    for n in &c.strip {
        strip.push(name(&Some(n.clone()), identity.clone())?);
    }
    Ok(UserHeaders {
        identity,
        display_name,
        permissions,
        roles,
        strip,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A policy from YAML handlers text (plus one API key so it is complete).
    pub fn policy(yaml: &str) -> Policy {
        let text = yaml.to_string();
        let file = config::parse_file(Path::new("t.yaml"), &text).unwrap();
        Policy::compile(&[(PathBuf::from("t.yaml"), text, file)]).unwrap()
    }

    fn compile_err(yaml: &str) -> String {
        let file = config::parse_file(Path::new("t.yaml"), yaml).unwrap();
        Policy::compile(&[(PathBuf::from("t.yaml"), yaml.to_string(), file)])
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn user(id: &str) -> User {
        User {
            identity: id.into(),
            display_name: id.into(),
            ..User::default()
        }
    }

    fn ev(r: Resource, a: Action) -> Event {
        Event::new(r, a)
    }

    fn key_for(p: &Policy, e: Event) -> Option<String> {
        p.handler_for(e).map(|h| h.key.clone())
    }

    #[test]
    fn most_specific_handler_wins() {
        let p = policy("handlers:\n  threads:create: {allow: true}\n  threads: {allow: true}\n  \"*:read\": {allow: true}\n  \"*\": {allow: true}\n");
        use Action::*;
        use Resource::*;
        assert_eq!(
            key_for(&p, ev(Threads, Create)).as_deref(),
            Some("threads:create")
        );
        assert_eq!(
            key_for(&p, ev(Threads, Read)).as_deref(),
            Some("threads"),
            "resource-wide beats action-wide"
        );
        assert_eq!(key_for(&p, ev(Assistants, Read)).as_deref(), Some("*:read"));
        assert_eq!(key_for(&p, ev(Crons, Delete)).as_deref(), Some("*"));
    }

    #[test]
    fn resource_star_is_the_same_as_the_bare_resource() {
        let p = policy("handlers:\n  \"store:*\": {allow: true}\n");
        assert_eq!(
            key_for(&p, ev(Resource::Store, Action::Put)).as_deref(),
            Some("store:*")
        );
    }

    #[test]
    fn no_handler_uses_the_default_decision() {
        let p = policy("handlers:\n  threads:create: {allow: true}\n");
        assert!(p
            .evaluate(ev(Resource::Threads, Action::Read), &user("a"))
            .is_ok());
        assert!(p.warnings.iter().any(|w| w.contains("threads:read")));
        let p = policy("settings: {default: deny}\nhandlers:\n  threads:create: {allow: true}\n");
        let e = p
            .evaluate(ev(Resource::Threads, Action::Read), &user("a"))
            .unwrap_err();
        assert_eq!(e.status, http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn only_one_handler_runs_without_fallthrough() {
        // threads:read allows with no filter; the global filter must not be added.
        let p = policy("handlers:\n  threads:read: {allow: true}\n  \"*\": {filter: {owner: \"{user.identity}\"}}\n");
        let g = p
            .evaluate(ev(Resource::Threads, Action::Read), &user("a"))
            .unwrap();
        assert!(g.active_filter().is_none());
        assert_eq!(g.handler.as_deref(), Some("threads:read"));
    }

    #[test]
    fn first_matching_rule_applies_and_no_match_denies() {
        let p = policy("handlers:\n  threads:read:\n    - when: {roles: [admin]}\n      allow: true\n    - when: {identity: [bob]}\n      filter: {owner: \"{user.identity}\"}\n");
        let mut admin = user("root");
        admin.roles = vec!["admin".into()];
        let g = p
            .evaluate(ev(Resource::Threads, Action::Read), &admin)
            .unwrap();
        assert_eq!(g.rule, Some(0));
        assert!(g.active_filter().is_none());
        let g = p
            .evaluate(ev(Resource::Threads, Action::Read), &user("bob"))
            .unwrap();
        assert_eq!(g.rule, Some(1));
        assert!(g.active_filter().is_some());
        let e = p
            .evaluate(ev(Resource::Threads, Action::Read), &user("carol"))
            .unwrap_err();
        assert_eq!(e.status, http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn deny_and_allow_false_give_403() {
        let p = policy("handlers:\n  assistants: {deny: \"User lacks the required permissions.\"}\n  crons: {allow: false}\n");
        let e = p
            .evaluate(ev(Resource::Assistants, Action::Read), &user("a"))
            .unwrap_err();
        assert_eq!(e.detail, "User lacks the required permissions.");
        let e = p
            .evaluate(ev(Resource::Crons, Action::Read), &user("a"))
            .unwrap_err();
        assert_eq!(e.detail, "Forbidden");
    }

    #[test]
    fn require_checks_permissions_then_applies_the_rest() {
        let p = policy("handlers:\n  assistants:create:\n    require: {permissions: [\"assistants:create\"], message: nope}\n    metadata: {owner: \"{user.identity}\"}\n");
        let e = p
            .evaluate(ev(Resource::Assistants, Action::Create), &user("a"))
            .unwrap_err();
        assert_eq!(e.detail, "nope");
        let mut admin = user("admin");
        admin.permissions = vec!["assistants:create".into()];
        let g = p
            .evaluate(ev(Resource::Assistants, Action::Create), &admin)
            .unwrap();
        assert_eq!(g.metadata, json!({"owner": "admin"}).as_object().cloned());
    }

    #[test]
    fn metadata_and_filter_render_from_the_user() {
        let p = policy("handlers:\n  \"*\":\n    metadata: {owner: \"{user.identity}\"}\n    filter: {owner: \"{user.identity}\"}\n");
        let g = p
            .evaluate(ev(Resource::Threads, Action::Create), &user("alice"))
            .unwrap();
        assert_eq!(
            Value::Object(g.metadata.unwrap()),
            json!({"owner": "alice"})
        );
        let f = g.filter.unwrap();
        assert!(f.matches(json!({"owner": "alice"}).as_object().unwrap()));
    }

    #[test]
    fn missing_attribute_fails_closed() {
        let p = policy("handlers:\n  \"*\": {filter: {org: \"{user.attributes.org}\"}}\n");
        let e = p
            .evaluate(ev(Resource::Threads, Action::Read), &user("a"))
            .unwrap_err();
        assert_eq!(e.status, http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn namespace_rule_renders_labels() {
        let p = policy(
            "handlers:\n  store: {namespace: {prefix: [\"{user.identity}\"], mode: rewrite}}\n",
        );
        let g = p
            .evaluate(ev(Resource::Store, Action::Put), &user("alice"))
            .unwrap();
        assert_eq!(
            g.namespace,
            Some((
                vec!["alice".to_string()],
                NamespaceMode::Rewrite,
                "Not authorized".into()
            ))
        );
    }

    #[test]
    fn bad_handler_keys_are_load_errors() {
        assert!(
            compile_err("handlers:\n  runs: {allow: true}\n").contains("unknown resource \"runs\"")
        );
        assert!(compile_err("handlers:\n  threads:put: {allow: true}\n")
            .contains("threads has no action \"put\""));
        assert!(
            compile_err("handlers:\n  \"*:frobnicate\": {allow: true}\n")
                .contains("unknown action")
        );
    }

    #[test]
    fn bad_filters_and_templates_are_load_errors_with_lines() {
        let e = compile_err("handlers:\n  threads:\n    filter: {owner: {$ne: x}}\n");
        assert!(e.starts_with("t.yaml:2: handlers.threads: filter:"), "{e}");
        assert!(
            compile_err("handlers:\n  threads: {metadata: {owner: \"{user.mail}\"}}\n")
                .contains("unknown placeholder")
        );
    }

    #[test]
    fn allow_with_effects_is_a_load_error() {
        assert!(
            compile_err("handlers:\n  threads: {allow: true, filter: {a: 1}}\n")
                .contains("stand alone")
        );
    }

    #[test]
    fn duplicate_handler_across_files_is_an_error() {
        let a = "handlers:\n  threads: {allow: true}\n";
        let b = "\nhandlers:\n  threads: {allow: false}\n";
        let fa = config::parse_file(Path::new("a.yaml"), a).unwrap();
        let fb = config::parse_file(Path::new("b.yaml"), b).unwrap();
        let errs = Policy::compile(&[
            (PathBuf::from("a.yaml"), a.into(), fa),
            (PathBuf::from("b.yaml"), b.into(), fb),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "b.yaml:3: handlers.threads: handler \"threads\" is defined in more than one file"
        );
    }

    #[test]
    fn example_policies_all_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut n = 0;
        for d in std::fs::read_dir(root).unwrap() {
            let d = d.unwrap().path();
            if d.is_dir() {
                let p = Policy::load_dir(&d).unwrap_or_else(|e| panic!("{}: {e:?}", d.display()));
                assert!(!p.authenticators.is_empty());
                n += 1;
            }
        }
        assert!(n >= 4);
    }

    #[test]
    fn version_changes_with_content() {
        let a = policy("handlers:\n  threads: {allow: true}\n");
        let b = policy("handlers:\n  threads: {allow: false}\n");
        assert_ne!(a.version, b.version);
        assert_eq!(a.version.len(), 12);
    }
}
