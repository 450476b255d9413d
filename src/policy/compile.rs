//! Compiling policy files into a [`Policy`], in named steps: each file is hashed into the
//! version and contributes settings, authenticators, roles, access policies and handlers;
//! then the settings are checked, the access control compiled, and every event resolved to
//! its handler. Every problem is a [`ConfigError`] located at its file, line and key; all of
//! them are reported, not only the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;
use crate::authn::anonymous::anonymous_user;
use crate::authn::config::{ApiKeyConfig, AuthenticatorConfig};
use crate::authn::forward::ForwardAuthenticator;
use crate::authn::jwt::JwtAuthenticator;
use crate::authn::{ApiKeys, Authenticator};
use crate::policy::access::{AccessControl, AccessPolicyConfig};
use crate::policy::config::{self, ConfigError, DefaultDecision, PolicyFile, SettingsConfig};
use crate::policy::limits::{Limit, Limits};
use crate::policy::webhook::WebhookPolicy;

/// What compiling has gathered from the files so far.
#[derive(Default)]
struct Compiler {
    errors: Vec<ConfigError>,
    settings: Option<(PathBuf, SettingsConfig)>,
    authenticators: Vec<Authenticator>,
    handlers: Vec<(String, Handler)>,
    roles: Option<HashMap<String, Vec<String>>>,
    access_policies: Vec<AccessPolicyConfig>,
    limits: Vec<Limit>,
    /// The policy version: every file's name and text (and API key files).
    hasher: Sha256,
}

/// One file being read: its path and text, to locate errors.
#[derive(Clone, Copy)]
struct Source<'f> {
    path: &'f Path,
    text: &'f str,
}

impl Source<'_> {
    fn error(&self, key: &str, needle: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at_key(self.path, self.text, key, needle, message)
    }
}

/// A settings error (settings have no line of their own once merged).
fn settings_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: PathBuf::from("settings"),
        line: None,
        key: key.into(),
        message: message.into(),
    }
}

impl Policy {
    /// A policy from already-parsed files (tests and the directory loader).
    pub fn compile(files: &[(PathBuf, String, PolicyFile)]) -> Result<Policy, Vec<ConfigError>> {
        let mut c = Compiler::default();
        for (path, text, file) in files {
            let src = Source { path, text };
            c.hash(src);
            c.take_settings(src, file);
            for (i, a) in file.authenticators.iter().enumerate() {
                c.add_authenticator(src, i, a);
            }
            c.add_roles(src, file);
            c.access_policies
                .extend(file.access_policies.iter().cloned());
            c.add_handlers(src, file);
            c.add_limits(src, file);
        }
        c.finish(files)
    }
}

impl Compiler {
    fn hash(&mut self, src: Source<'_>) {
        self.hasher.update(
            src.path
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        self.hasher.update([0]);
        self.hasher.update(src.text.as_bytes());
        self.hasher.update([0]);
    }

    /// Settings may be given in one file only.
    fn take_settings(&mut self, src: Source<'_>, file: &PolicyFile) {
        let Some(s) = &file.settings else { return };
        if let Some((first, _)) = &self.settings {
            let message = format!("settings are already given in {}", first.display());
            self.errors.push(src.error("settings", "settings", message));
        } else {
            self.settings = Some((src.path.to_path_buf(), s.clone()));
        }
    }

    /// Exactly one kind per authenticator entry.
    fn add_authenticator(&mut self, src: Source<'_>, i: usize, a: &AuthenticatorConfig) {
        let kinds = [
            a.api_key.is_some(),
            a.jwt.is_some(),
            a.forward.is_some(),
            a.anonymous.is_some(),
        ];
        let one_kind = kinds.iter().filter(|k| **k).count() == 1;
        match (one_kind, &a.api_key) {
            (true, Some(c)) => self.add_api_keys(src, i, c),
            (true, None) => match built_authenticator(src.path, a) {
                Ok(built) => self.authenticators.push(built),
                Err((kind, m)) => {
                    let key = format!("authenticators[{i}].{kind}");
                    self.errors.push(src.error(&key, kind, m));
                }
            },
            (false, _) => self.errors.push(src.error(
                &format!("authenticators[{i}]"),
                "authenticators",
                "an authenticator needs exactly one kind (api_key, jwt, forward, anonymous)",
            )),
        }
    }

    /// API keys, inline and from a keys file (whose text is part of the version: rotating a
    /// mounted Secret is a reload like any policy change).
    fn add_api_keys(&mut self, src: Source<'_>, i: usize, c: &ApiKeyConfig) {
        let mut entries = c.keys.clone();
        if let Some(kf) = &c.keys_file {
            let kf = src
                .path
                .parent()
                .map(|d| d.join(kf))
                .unwrap_or_else(|| kf.clone());
            match std::fs::read_to_string(&kf) {
                Ok(t) => {
                    self.hasher.update(t.as_bytes());
                    self.hasher.update([0]);
                    match config::parse_keys_file(&kf, &t) {
                        Ok(more) => entries.extend(more),
                        Err(e) => self.errors.push(e),
                    }
                }
                Err(e) => self.errors.push(src.error(
                    &format!("authenticators[{i}].api_key.keys_file"),
                    "keys_file",
                    format!("cannot read {}: {e}", kf.display()),
                )),
            }
        }
        match ApiKeys::new(c.header.as_deref(), &entries) {
            Ok(mut k) => {
                k.forward_credentials = c.forward_credentials;
                self.authenticators.push(Authenticator::ApiKey(k));
            }
            Err(m) => {
                let key = format!("authenticators[{i}].api_key");
                self.errors.push(src.error(&key, "api_key", m));
            }
        }
    }

    /// Roles may be defined in any file, each name once.
    fn add_roles(&mut self, src: Source<'_>, file: &PolicyFile) {
        let Some(r) = &file.roles else { return };
        let all = self.roles.get_or_insert_with(HashMap::new);
        for (name, perms) in r {
            if all.insert(name.clone(), perms.clone()).is_some() {
                self.errors.push(src.error(
                    &format!("roles.{name}"),
                    name,
                    format!("role {name:?} is defined in more than one file"),
                ));
            }
        }
    }

    /// Each handler key once across the files, each of its rules compiled.
    fn add_handlers(&mut self, src: Source<'_>, file: &PolicyFile) {
        for (key, rules) in &file.handlers.0 {
            let at = |m: String| src.error(&format!("handlers.{key}"), key, m);
            if let Err(m) = validate_handler_key(key) {
                self.errors.push(at(m));
                continue;
            }
            if self.handlers.iter().any(|(k, _)| k == key) {
                let m = format!("handler {key:?} is defined in more than one file");
                self.errors.push(at(m));
                continue;
            }
            let mut compiled = Vec::with_capacity(rules.len());
            for (i, r) in rules.iter().enumerate() {
                match compile_rule(r) {
                    Ok(c) => compiled.push(c),
                    Err(m) if rules.len() > 1 => self.errors.push(at(format!("rule {i}: {m}"))),
                    Err(m) => self.errors.push(at(m)),
                }
            }
            let handler = Handler {
                key: key.clone(),
                shared_key: Arc::from(key.as_str()),
                rules: compiled,
            };
            self.handlers.push((key.clone(), handler));
        }
    }

    /// Limits may be written in any file, each name once.
    fn add_limits(&mut self, src: Source<'_>, file: &PolicyFile) {
        for (i, c) in file.limits.iter().enumerate() {
            // Located inside entry i: every entry writes the same keys.
            let error = |key: &str, message: String| ConfigError {
                file: src.path.to_path_buf(),
                line: config::find_item_key_line(
                    src.text,
                    "limits",
                    i,
                    key.split(['.', '[']).next().unwrap_or(key),
                ),
                key: format!("limits[{i}].{key}"),
                message,
            };
            if self.limits.iter().any(|l| *l.name == *c.name) {
                let m = format!("a limit named {:?} is already defined", c.name);
                self.errors.push(error("name", m));
                continue;
            }
            match Limit::compile(c) {
                Ok(l) => self.limits.push(l),
                Err((key, m)) => self.errors.push(error(&key, m)),
            }
        }
    }

    /// Check the settings, compile the access control, resolve every event's handler.
    fn finish(
        mut self,
        files: &[(PathBuf, String, PolicyFile)],
    ) -> Result<Policy, Vec<ConfigError>> {
        let settings = self.settings.take().map(|(_, s)| s).unwrap_or_default();
        let user_headers = build_user_headers(&settings)
            .map_err(|m| self.errors.push(settings_error("settings.user_headers", m)))
            .ok();
        let webhooks = settings
            .webhooks
            .as_ref()
            .map(WebhookPolicy::compile)
            .transpose()
            .unwrap_or_else(|m| {
                self.errors.push(settings_error("settings.webhooks", m));
                None
            })
            .unwrap_or_default();
        let search_max_requests = settings
            .search
            .as_ref()
            .and_then(|s| s.max_upstream_requests)
            .unwrap_or(10);
        if search_max_requests == 0 {
            let e = settings_error(
                "settings.search.max_upstream_requests",
                "must be at least 1",
            );
            self.errors.push(e);
        }
        let management = settings.management.as_ref().map(|m| m.permission.clone());
        if management.as_deref().is_some_and(|p| p.trim().is_empty()) {
            let e = settings_error("settings.management.permission", "must not be empty");
            self.errors.push(e);
        }
        let access = self.access_control(files, management.as_slice());
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let default = settings.default.unwrap_or_default();
        let (handlers, warnings) = resolve_handlers(self.handlers, default);
        let version = hex::encode(self.hasher.finalize())
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
            user_headers: user_headers.unwrap_or_else(default_user_headers),
            lookup_ttl: Duration::from_millis(
                cache.as_ref().and_then(|c| c.ttl_ms).unwrap_or(2000),
            ),
            lookup_capacity: cache.as_ref().and_then(|c| c.capacity).unwrap_or(10_000),
            webhooks,
            search_max_requests,
            authenticators: self.authenticators,
            handlers,
            access: access.unwrap_or_default(),
            limits: Limits::new(self.limits),
            rate_limit_headers: settings.rate_limit_headers.unwrap_or(true),
            management,
            managed: Arc::default(),
            warnings,
        })
    }

    /// Roles and access policies; each error is located in the first file whose text has
    /// the last segment of its key (else the first file).
    fn access_control(
        &mut self,
        files: &[(PathBuf, String, PolicyFile)],
        also: &[String],
    ) -> Option<AccessControl> {
        let compiled =
            AccessControl::compile_with(self.roles.as_ref(), &self.access_policies, also);
        let errors = match compiled {
            Ok(a) => return Some(a),
            Err(es) => es,
        };
        for e in errors {
            let needle = e.key.rsplit('.').next().unwrap_or(&e.key);
            let (file, text) = defining_file(files, &e.key)
                .or_else(|| {
                    files
                        .iter()
                        .find(|(_, t, _)| config::find_key_line(t, needle).is_some())
                })
                .or(files.first())
                .map(|(p, t, _)| (p.clone(), t.as_str()))
                .unwrap_or_default();
            self.errors
                .push(ConfigError::at_key(&file, text, &e.key, needle, e.message));
        }
        None
    }
}

/// The file that defines the access policy or role an error key names
/// (`access_policies.NAME...`, `roles.NAME`).
fn defining_file<'f>(
    files: &'f [(PathBuf, String, PolicyFile)],
    key: &str,
) -> Option<&'f (PathBuf, String, PolicyFile)> {
    let name_after = |prefix: &str| {
        key.strip_prefix(prefix)
            .map(|rest| rest.split(['.', '[']).next().unwrap_or(rest))
    };
    if let Some(name) = name_after("access_policies.") {
        return files
            .iter()
            .find(|(_, _, f)| f.access_policies.iter().any(|p| p.name == name));
    }
    let name = name_after("roles.")?;
    files
        .iter()
        .find(|(_, _, f)| f.roles.as_ref().is_some_and(|r| r.contains_key(name)))
}

/// A `jwt`, `forward` or `anonymous` authenticator (`Err`: its kind and what is wrong).
fn built_authenticator(
    path: &Path,
    a: &AuthenticatorConfig,
) -> Result<Authenticator, (&'static str, String)> {
    if let Some(c) = &a.jwt {
        return JwtAuthenticator::from_config(c, path.parent())
            .map(|j| Authenticator::Jwt(Arc::new(j)))
            .map_err(|m| ("jwt", m));
    }
    if let Some(c) = &a.forward {
        return ForwardAuthenticator::from_config(c)
            .map(|f| Authenticator::Forward(Arc::new(f)))
            .map_err(|m| ("forward", m));
    }
    match &a.anonymous {
        Some(c) => anonymous_user(c)
            .map(Authenticator::Anonymous)
            .map_err(|m| ("anonymous", m)),
        None => Err(("authenticators", "no kind".into())),
    }
}

/// Every event's handler, LangGraph's resolution order: `(resource, action)` >
/// `resource` > `(resource, *)` > `(*, action)` > `*` > `*:*`; a warning for each event no
/// handler covers when uncovered events are allowed.
fn resolve_handlers(
    handlers: Vec<(String, Handler)>,
    default: DefaultDecision,
) -> (Vec<Option<Arc<Handler>>>, Vec<String>) {
    let mut table: Vec<Option<Arc<Handler>>> = vec![None; Event::INDEX_SPACE];
    let by_key: Vec<(String, Arc<Handler>)> = handlers
        .into_iter()
        .map(|(k, h)| (k, Arc::new(h)))
        .collect();
    let find = |k: &str| by_key.iter().find(|(x, _)| x == k).map(|(_, h)| h.clone());
    let mut warnings = Vec::new();
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
    (table, warnings)
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
