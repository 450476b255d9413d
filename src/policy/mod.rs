//! The compiled policy: a complete, validated, immutable snapshot.
//!
//! Built once per load from every policy file of a directory; handler resolution is precomputed
//! for every (resource, action) event, templates and filters are pre-parsed. The request path
//! only reads it. A reload builds a new snapshot and swaps it in whole.

pub mod access;
pub mod config;
pub mod filter;
pub mod template;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::authn::{ApiKeys, Authenticator};
use crate::error::GatewayError;
use crate::event::{Action, Event, Resource};
use crate::policy::access::AccessControl;
use crate::policy::config::{
    ConfigError, DefaultDecision, NamespaceMode, PolicyFile, RuleConfig, SettingsConfig, WhenConfig,
};
use crate::policy::filter::{FilterTemplate, ResolvedFilter};
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

    /// A policy from already-parsed files (tests and the directory loader).
    pub fn compile(files: &[(PathBuf, String, PolicyFile)]) -> Result<Policy, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut settings: Option<(PathBuf, SettingsConfig)> = None;
        let mut authenticators = Vec::new();
        let mut handlers: Vec<(String, Handler)> = Vec::new();
        let mut roles: Option<HashMap<String, Vec<String>>> = None;
        let mut access_policies = Vec::new();
        let mut hasher = Sha256::new();
        for (path, text, file) in files {
            hasher.update(
                path.file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            if let Some(s) = &file.settings {
                if let Some((first, _)) = &settings {
                    errors.push(ConfigError::at_key(
                        path,
                        text,
                        "settings",
                        "settings",
                        format!("settings are already given in {}", first.display()),
                    ));
                } else {
                    settings = Some((path.clone(), s.clone()));
                }
            }
            for (i, a) in file.authenticators.iter().enumerate() {
                let kinds = [
                    a.api_key.is_some(),
                    a.jwt.is_some(),
                    a.forward.is_some(),
                    a.anonymous.is_some(),
                ];
                let built = match (
                    kinds.iter().filter(|k| **k).count(),
                    &a.jwt,
                    &a.forward,
                    &a.anonymous,
                ) {
                    (1, Some(c), _, _) => Some(
                        crate::authn::jwt::JwtAuthenticator::from_config(c, path.parent())
                            .map(|j| Authenticator::Jwt(Arc::new(j)))
                            .map_err(|m| ("jwt", m)),
                    ),
                    (1, _, Some(c), _) => Some(
                        crate::authn::forward::ForwardAuthenticator::from_config(c)
                            .map(|f| Authenticator::Forward(Arc::new(f)))
                            .map_err(|m| ("forward", m)),
                    ),
                    (1, _, _, Some(c)) => Some(
                        crate::authn::forward::anonymous_user(c)
                            .map(Authenticator::Anonymous)
                            .map_err(|m| ("anonymous", m)),
                    ),
                    _ => None,
                };
                match built {
                    Some(Ok(a)) => {
                        authenticators.push(a);
                        continue;
                    }
                    Some(Err((kind, m))) => {
                        errors.push(ConfigError::at_key(
                            path,
                            text,
                            &format!("authenticators[{i}].{kind}"),
                            kind,
                            m,
                        ));
                        continue;
                    }
                    None => {}
                }
                let (1, Some(c)) = (kinds.iter().filter(|k| **k).count(), &a.api_key) else {
                    errors.push(ConfigError::at_key(
                        path,
                        text,
                        &format!("authenticators[{i}]"),
                        "authenticators",
                        "an authenticator needs exactly one kind (api_key, jwt, forward, anonymous)",
                    ));
                    continue;
                };
                let mut entries = c.keys.clone();
                if let Some(kf) = &c.keys_file {
                    let kf = path
                        .parent()
                        .map(|d| d.join(kf))
                        .unwrap_or_else(|| kf.clone());
                    match std::fs::read_to_string(&kf) {
                        Ok(t) => {
                            // The keys are part of the version: rotating a mounted Secret is
                            // a reload like any policy change.
                            hasher.update(t.as_bytes());
                            hasher.update([0]);
                            match config::parse_keys_file(&kf, &t) {
                                Ok(more) => entries.extend(more),
                                Err(e) => errors.push(e),
                            }
                        }
                        Err(e) => errors.push(ConfigError::at_key(
                            path,
                            text,
                            &format!("authenticators[{i}].api_key.keys_file"),
                            "keys_file",
                            format!("cannot read {}: {e}", kf.display()),
                        )),
                    }
                }
                match ApiKeys::new(c.header.as_deref(), &entries).map(|mut k| {
                    k.forward_credentials = c.forward_credentials;
                    k
                }) {
                    Ok(k) => authenticators.push(Authenticator::ApiKey(k)),
                    Err(m) => errors.push(ConfigError::at_key(
                        path,
                        text,
                        &format!("authenticators[{i}].api_key"),
                        "api_key",
                        m,
                    )),
                }
            }
            if let Some(r) = &file.roles {
                let all = roles.get_or_insert_with(HashMap::new);
                for (name, perms) in r {
                    if all.insert(name.clone(), perms.clone()).is_some() {
                        errors.push(ConfigError::at_key(
                            path,
                            text,
                            &format!("roles.{name}"),
                            name,
                            format!("role {name:?} is defined in more than one file"),
                        ));
                    }
                }
            }
            access_policies.extend(file.access_policies.iter().cloned());
            for (key, rules) in &file.handlers.0 {
                let at =
                    |m: String| ConfigError::at_key(path, text, &format!("handlers.{key}"), key, m);
                if let Err(m) = validate_handler_key(key) {
                    errors.push(at(m));
                    continue;
                }
                if handlers.iter().any(|(k, _)| k == key) {
                    errors.push(at(format!(
                        "handler {key:?} is defined in more than one file"
                    )));
                    continue;
                }
                let mut compiled = Vec::with_capacity(rules.len());
                for (i, r) in rules.iter().enumerate() {
                    match compile_rule(r) {
                        Ok(c) => compiled.push(c),
                        Err(m) => errors.push(at(if rules.len() > 1 {
                            format!("rule {i}: {m}")
                        } else {
                            m
                        })),
                    }
                }
                handlers.push((
                    key.clone(),
                    Handler {
                        key: key.clone(),
                        shared_key: Arc::from(key.as_str()),
                        rules: compiled,
                    },
                ));
            }
        }
        let settings = settings.map(|(_, s)| s).unwrap_or_default();
        let mut user_headers = match build_user_headers(&settings) {
            Ok(h) => Some(h),
            Err(m) => {
                errors.push(ConfigError {
                    file: PathBuf::from("settings"),
                    line: None,
                    key: "settings.user_headers".into(),
                    message: m,
                });
                None
            }
        };
        let webhooks = settings
            .webhooks
            .as_ref()
            .map(WebhookPolicy::compile)
            .transpose()
            .unwrap_or_else(|m| {
                errors.push(ConfigError {
                    file: PathBuf::from("settings"),
                    line: None,
                    key: "settings.webhooks".into(),
                    message: m,
                });
                None
            })
            .unwrap_or_default();
        let search_max_requests = settings
            .search
            .as_ref()
            .and_then(|s| s.max_upstream_requests)
            .unwrap_or(10);
        if search_max_requests == 0 {
            errors.push(ConfigError {
                file: PathBuf::from("settings"),
                line: None,
                key: "settings.search.max_upstream_requests".into(),
                message: "must be at least 1".into(),
            });
        }
        let access = match AccessControl::compile(roles.as_ref(), &access_policies) {
            Ok(a) => Some(a),
            Err(es) => {
                for e in es {
                    let needle = e.key.rsplit('.').next().unwrap_or(&e.key);
                    let (file, text) = files
                        .iter()
                        .find(|(_, t, _)| config::find_key_line(t, needle).is_some())
                        .or(files.first())
                        .map(|(p, t, _)| (p.clone(), t.as_str()))
                        .unwrap_or_default();
                    errors.push(ConfigError::at_key(&file, text, &e.key, needle, e.message));
                }
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let access = access.unwrap_or_default();
        let mut table: Vec<Option<Arc<Handler>>> = vec![None; Event::INDEX_SPACE];
        let by_key: Vec<(String, Arc<Handler>)> = handlers
            .into_iter()
            .map(|(k, h)| (k, Arc::new(h)))
            .collect();
        let find = |k: &str| by_key.iter().find(|(x, _)| x == k).map(|(_, h)| h.clone());
        let mut warnings = Vec::new();
        let default = settings.default.unwrap_or_default();
        for e in Event::all() {
            let r = e.resource.as_str();
            let a = e.action.as_str();
            let h = find(&format!("{r}:{a}"))
                .or_else(|| find(r))
                .or_else(|| find(&format!("{r}:*")))
                .or_else(|| find(&format!("*:{a}")))
                .or_else(|| find("*"))
                .or_else(|| find("*:*"));
            if h.is_none() && default == DefaultDecision::Allow && !by_key.is_empty() {
                warnings.push(format!(
                    "no handler covers {e}: it is allowed (settings.default: allow)"
                ));
            }
            if let Some(slot) = table.get_mut(e.index()) {
                *slot = h;
            }
        }
        let version = hex::encode(hasher.finalize())
            .get(..12)
            .unwrap_or_default()
            .to_string();
        let cache = settings.lookup_cache.clone();
        Ok(Policy {
            version_header: http::HeaderValue::from_str(&version)
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
            version,
            default,
            public_paths: settings
                .public_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_PUBLIC.iter().map(|s| s.to_string()).collect()),
            unmediated: settings
                .unmediated_routes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            user_headers: user_headers.take().unwrap_or_else(default_user_headers),
            lookup_ttl: Duration::from_millis(
                cache.as_ref().and_then(|c| c.ttl_ms).unwrap_or(2000),
            ),
            lookup_capacity: cache.as_ref().and_then(|c| c.capacity).unwrap_or(10_000),
            webhooks,
            search_max_requests,
            authenticators,
            handlers: table,
            access,
            warnings,
        })
    }

    /// Load every `*.yaml`, `*.yml` and `*.json` file of a directory (not recursive; hidden
    /// entries such as Kubernetes' `..data` are skipped, symlinks are followed).
    pub fn load_dir(dir: &Path) -> Result<Policy, Vec<ConfigError>> {
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
        let policy = Policy::compile(&files)?;
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

fn validate_handler_key(key: &str) -> Result<(), String> {
    let (r, a) = match key.split_once(':') {
        Some((r, a)) => (r, Some(a)),
        None => (key, None),
    };
    let known = "keys are \"*\", \"*:ACTION\", \"RESOURCE\" or \"RESOURCE:ACTION\"";
    match (r, a) {
        ("*", None) | ("*", Some("*")) => Ok(()),
        ("*", Some(a)) => Action::parse(a)
            .map(|_| ())
            .ok_or_else(|| format!("unknown action {a:?} ({known})")),
        (r, a) => {
            let res = Resource::parse(r).ok_or_else(|| {
                format!(
                    "unknown resource {r:?} (threads, assistants, crons, store; runs are threads)"
                )
            })?;
            match a {
                None | Some("*") => Ok(()),
                Some(a) => {
                    let act = Action::parse(a)
                        .ok_or_else(|| format!("unknown action {a:?} ({known})"))?;
                    if Event::new(res, act).is_valid() {
                        Ok(())
                    } else {
                        Err(format!("{r} has no action {a:?}"))
                    }
                }
            }
        }
    }
}

fn compile_rule(r: &RuleConfig) -> Result<Rule, String> {
    let effects =
        r.metadata.is_some() || r.filter.is_some() || r.namespace.is_some() || r.require.is_some();
    if r.allow.is_some() && r.deny.is_some() {
        return Err("a rule cannot both allow and deny".into());
    }
    if (r.allow.is_some() || r.deny.is_some()) && effects {
        return Err(
            "allow/deny stand alone: put metadata, filter, namespace or require in another rule"
                .into(),
        );
    }
    let metadata = r
        .metadata
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    ValueTemplate::compile(v)
                        .map(|t| (k.clone(), t))
                        .map_err(|e| format!("metadata.{k}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let filter = r
        .filter
        .as_ref()
        .map(|f| FilterTemplate::compile(f).map_err(|e| format!("filter: {e}")))
        .transpose()?;
    let namespace = r
        .namespace
        .as_ref()
        .map(|ns| {
            if ns.prefix.is_empty() {
                return Err("namespace.prefix must have at least one label".to_string());
            }
            let prefix = ns
                .prefix
                .iter()
                .map(|p| StrTemplate::parse(p).map_err(|e| format!("namespace.prefix: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(NamespaceRule {
                prefix,
                mode: ns.mode.unwrap_or(NamespaceMode::Require),
                message: ns
                    .message
                    .clone()
                    .unwrap_or_else(|| "Not authorized".into()),
            })
        })
        .transpose()?;
    if let Some(w) = &r.when {
        if w.roles.is_none() && w.permissions.is_none() && w.identity.is_none() {
            return Err("when: give at least one of roles, permissions, identity".into());
        }
    }
    let stamped: Arc<[String]> = metadata
        .as_ref()
        .map(|m| m.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    Ok(Rule {
        when: r.when.clone(),
        allow: r.allow,
        deny: r.deny.clone(),
        require: r.require.clone(),
        stamped,
        metadata,
        filter,
        namespace,
    })
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
