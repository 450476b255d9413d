//! The policy files' typed model: what operators write, before compilation.
//!
//! Every struct denies unknown fields: a typo in a security policy must be an error, never
//! silently ignored. Errors carry the file, line and key path (`file:line: key: message`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::authn::config::{ApiKeyEntry, AuthenticatorConfig};
use crate::routes::UnmediatedGroup;
use serde_json::{Map, Value};

/// One policy file. Sections from all files in the directory are merged.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Gateway-wide settings; at most one file may have them.
    #[serde(default)]
    pub settings: Option<SettingsConfig>,
    /// Authenticators, tried in order (files in name order).
    #[serde(default)]
    pub authenticators: Vec<AuthenticatorConfig>,
    /// Handlers keyed `"*"`, `"*:ACTION"`, `RESOURCE`, `RESOURCE:ACTION`.
    #[serde(default)]
    pub handlers: HandlerMap,
    /// RBAC roles: role name (or id) to permissions (`threads:read`, `threads:*`, `*`).
    #[serde(default)]
    pub roles: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// ABAC access policies, LangSmith's JSON.
    #[serde(default)]
    pub access_policies: Vec<crate::policy::access::AccessPolicyConfig>,
    /// Quotas and rate limits.
    #[serde(default)]
    pub limits: Vec<crate::policy::limits::LimitConfig>,
}

/// Decision for an event no handler covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DefaultDecision {
    /// LangGraph's behaviour: allow.
    #[default]
    Allow,
    /// Fail closed: 403.
    Deny,
}

/// Gateway-wide settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SettingsConfig {
    /// Decision for events without a handler (`allow`, LangGraph's default, or `deny`).
    pub default: Option<DefaultDecision>,
    /// Paths served without authentication (exact, GET/HEAD only). Default: `/`, `/ok`,
    /// `/info`, `/docs`, `/openapi.json`.
    pub public_paths: Option<Vec<String>>,
    /// Route groups forwarded after authentication although their inner calls bypass the
    /// handlers. Default: none (they are refused).
    pub unmediated_routes: Option<Vec<UnmediatedGroup>>,
    /// Names of the headers that carry the user to the agent server.
    pub user_headers: Option<UserHeadersConfig>,
    /// Resource lookup cache.
    pub lookup_cache: Option<LookupCacheConfig>,
    /// URLs a request body may make the agent server call (run and cron webhooks).
    pub webhooks: Option<WebhooksConfig>,
    /// Searches the gateway completes itself (filters the agent server cannot apply).
    pub search: Option<SearchConfig>,
    /// The management API for roles and access policies (off when absent).
    pub management: Option<ManagementConfig>,
    /// Send the `RateLimit-Policy` and `RateLimit` headers on allowed responses that a limit
    /// counted (default true; refusals always carry them).
    pub rate_limit_headers: Option<bool>,
}

/// Who may call the management API (docs/access-control.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// The permission a caller must hold, directly or through a role (e.g.
    /// `organization:manage`, LangSmith's name for organization admins).
    pub permission: String,
}

/// Which webhook URLs are forwarded. A refused one is 403.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allowed schemes (default `[https]`; `http` may be added).
    pub schemes: Option<Vec<String>>,
    /// Hosts that may be called: names, `*.domain`, IP addresses or CIDRs. Absent: any public
    /// host (IP literals checked, names resolved and every address checked). Listed hosts may
    /// be private. An empty list refuses every webhook.
    pub allowed_hosts: Option<Vec<String>>,
}

/// Bounds on searches the gateway completes by paging through the agent server's results.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Upstream requests (result pages of 200, and lookups of the resources a filter reads)
    /// one search may make before it is refused (default 10).
    pub max_upstream_requests: Option<u32>,
}

/// Header names for forwarding the user upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserHeadersConfig {
    /// Identity header (default `x-graphguard-user-id`).
    pub identity: Option<String>,
    /// Display-name header (default `x-graphguard-user-display-name`).
    pub display_name: Option<String>,
    /// Permissions header, a JSON list (default `x-graphguard-user-permissions`).
    pub permissions: Option<String>,
    /// Roles header, a JSON list (default `x-graphguard-user-roles`).
    pub roles: Option<String>,
    /// Extra client headers to strip (case-insensitive), beyond the four above.
    #[serde(default)]
    pub strip: Vec<String>,
}

/// Resource lookup cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupCacheConfig {
    /// Time to live of a looked-up resource's metadata, in milliseconds (default 2000; 0 disables).
    pub ttl_ms: Option<u64>,
    /// Maximum number of cached resources (default 10000).
    pub capacity: Option<usize>,
}

/// Handlers in file order; duplicate keys are rejected while parsing.
#[derive(Debug, Default)]
pub struct HandlerMap(pub Vec<(String, Vec<RuleConfig>)>);

/// One rule of a handler. A handler is one rule or an ordered list; the first rule whose
/// `when` matches applies.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Condition on the user; absent means always.
    pub when: Option<WhenConfig>,
    /// `true`: allow with no filter. `false`: 403 `Forbidden`.
    pub allow: Option<bool>,
    /// Deny with 403 and this message.
    pub deny: Option<String>,
    /// Required permissions (all) and roles (any); 403 with `message` otherwise.
    pub require: Option<RequireConfig>,
    /// Metadata stamped into create and update bodies (values are templates).
    pub metadata: Option<Map<String, Value>>,
    /// Filter returned for this event (values are templates).
    pub filter: Option<Value>,
    /// Store namespace rule.
    pub namespace: Option<NamespaceConfig>,
}

/// A condition on the user. Every field given must hold.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// The user has at least one of these roles.
    pub roles: Option<Vec<String>>,
    /// The user has all of these permissions.
    pub permissions: Option<Vec<String>>,
    /// The user's identity is one of these.
    pub identity: Option<Vec<String>>,
}

/// Requirements; failing them gives 403.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequireConfig {
    /// All of these permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// At least one of these roles (if any are listed).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The 403 detail (default `Forbidden`).
    pub message: Option<String>,
}

/// How a store namespace rule acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    /// The namespace must start with the prefix; 403 otherwise.
    Require,
    /// The prefix is prepended unless the namespace already starts with it.
    Rewrite,
}

/// Store namespace rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Prefix labels (templates), e.g. `["{user.identity}"]`.
    pub prefix: Vec<String>,
    /// `require` (default) or `rewrite`.
    pub mode: Option<NamespaceMode>,
    /// The 403 detail in `require` mode (default `Not authorized`).
    pub message: Option<String>,
}

struct OneOrMany(Vec<RuleConfig>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rule (a map) or a list of rules")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<OneOrMany, A::Error> {
                RuleConfig::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|r| OneOrMany(vec![r]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(r) = s.next_element::<RuleConfig>()? {
                    out.push(r);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("a handler's list of rules is empty"));
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for HandlerMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HandlerMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of handler keys to rules")
            }
            fn visit_unit<E>(self) -> Result<HandlerMap, E> {
                Ok(HandlerMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<HandlerMap, A::Error> {
                let mut out: Vec<(String, Vec<RuleConfig>)> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.iter().any(|(x, _)| *x == k) {
                        return Err(de::Error::custom(format!("duplicate handler key {k:?}")));
                    }
                    let rules = m.next_value::<OneOrMany>()?;
                    out.push((k, rules.0));
                }
                Ok(HandlerMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A problem in a policy file, located as precisely as the parser allows: every policy
/// load and compile error is one (`file:line: key: message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.located())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// The key path, e.g. `handlers.threads:read[0].filter`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// `file:line: key: message`; without a key, `file:line: message`; without a line (a
    /// directory, or a key the parser cannot place), `file: ...`.
    fn located(&self) -> String {
        let at = match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        };
        if self.key.is_empty() {
            format!("{at}: {}", self.message)
        } else {
            format!("{at}: {}: {}", self.key, self.message)
        }
    }

    /// An error at a key, with the line found by searching the file text for the key.
    pub fn at_key(
        file: &Path,
        text: &str,
        key_path: &str,
        needle: &str,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: find_key_line(text, needle),
            key: key_path.to_string(),
            message: message.into(),
        }
    }
}

/// The first line where `key` appears as a mapping key (`key:`, `"key":` or `'key':`).
pub fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|p| t.starts_with(p.as_str()))
        })
        .map(|i| i + 1)
}

/// The line of `key` inside item `index` of the block list under the top-level key `list`
/// (`limits:`), or of the item's first line when the item does not write `key`; entries of
/// a list share their keys, so a search of the whole file would name the first entry's line.
/// A list the scan cannot follow (flow style, JSON) falls back to [`find_key_line`].
pub fn find_item_key_line(text: &str, list: &str, index: usize, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let fallback = || find_key_line(text, key).or_else(|| find_key_line(text, list));
    let Some(start) = lines
        .iter()
        .position(|l| l.starts_with(&format!("{list}:")))
    else {
        return fallback();
    };
    let mut items = Vec::new();
    let mut end = lines.len();
    let mut item_indent = None;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.len() - t.len();
        let dash = t == "-" || t.starts_with("- ");
        if indent == 0 && !dash {
            end = i;
            break;
        }
        if dash && *item_indent.get_or_insert(indent) == indent {
            items.push(i);
        }
    }
    let Some(&first) = items.get(index) else {
        return fallback();
    };
    let last = items.get(index + 1).copied().unwrap_or(end);
    let inside = find_key_line(&lines[first..last].join("\n"), key);
    Some(first + inside.unwrap_or(1))
}

/// Parse one file's text (YAML; JSON is YAML).
pub fn parse_file(path: &Path, text: &str) -> Result<PolicyFile, ConfigError> {
    if text.trim().is_empty() {
        return Ok(PolicyFile::default());
    }
    // A first pass into YAML values rejects duplicate keys in every mapping (typed maps would
    // silently keep the last one).
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        let mut message = e.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let (key, message) = match message.split_once(": duplicate") {
            Some((k, rest)) => (k.to_string(), format!("duplicate{rest}")),
            None => (String::new(), message),
        };
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: e.location().map(|l| l.line()),
            key,
            message,
        });
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, PolicyFile>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let mut message = inner.to_string();
        // serde_yaml_ng appends " at line N column M"; the location is already in front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        ConfigError {
            file: path.to_path_buf(),
            line,
            key: if key == "." { String::new() } else { key },
            message,
        }
    })
}

/// A list of API keys in a keys file.
pub fn parse_keys_file(path: &Path, text: &str) -> Result<Vec<ApiKeyEntry>, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, Vec<ApiKeyEntry>>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            file: path.to_path_buf(),
            line: inner.location().map(|l| l.line()),
            key,
            message: inner.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyFile, ConfigError> {
        parse_file(Path::new("p.yaml"), text)
    }

    #[test]
    fn single_rule_and_rule_list_both_parse() {
        let p = parse(
            "handlers:\n  \"*\":\n    filter: {owner: x}\n  threads:read:\n    - when: {roles: [admin]}\n      allow: true\n    - filter: {owner: y}\n",
        )
        .unwrap();
        assert_eq!(p.handlers.0.len(), 2);
        assert_eq!(p.handlers.0[1].1.len(), 2);
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_path() {
        let e = parse("handlers:\n  threads:\n    filtr: {owner: x}\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.key.starts_with("handlers"), "{e}");
        assert!(e.message.contains("unknown field `filtr`"), "{e}");
        assert!(e.to_string().starts_with("p.yaml:3: handlers"), "{e}");
    }

    #[test]
    fn duplicate_handler_key_in_one_file_is_an_error() {
        let e =
            parse("handlers:\n  threads: {allow: true}\n  threads: {allow: false}\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn duplicate_keys_in_any_mapping_are_errors() {
        let e = parse("handlers:\n  threads:\n    metadata: {owner: a, owner: b}\n").unwrap_err();
        assert!(
            e.message.contains("duplicate entry with key \"owner\""),
            "{e}"
        );
        assert_eq!(e.line, Some(3));
        let e = parse("roles:\n  a: [\"*\"]\n  a: []\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn unknown_top_level_section_is_an_error() {
        let e = parse("handler:\n  threads: {allow: true}\n").unwrap_err();
        assert!(e.message.contains("unknown field `handler`"), "{e}");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn json_files_parse_as_yaml() {
        let p = parse(
            r#"{"handlers": {"threads:create": {"metadata": {"owner": "{user.identity}"}}}}"#,
        )
        .unwrap();
        assert_eq!(p.handlers.0[0].0, "threads:create");
    }

    #[test]
    fn api_key_authenticator_parses_and_rejects_typos() {
        let p = parse(
            "authenticators:\n  - api_key:\n      keys:\n        - {sha256: ab, identity: a}\n",
        )
        .unwrap();
        assert_eq!(p.authenticators.len(), 1);
        let e = parse("authenticators:\n  - api_key:\n      keys:\n        - {sha256: ab, identity: a, role: [x]}\n").unwrap_err();
        assert!(e.message.contains("unknown field `role`"), "{e}");
        let e = parse("authenticators:\n  - jwt_magic: {}\n").unwrap_err();
        assert!(e.message.contains("unknown field `jwt_magic`"), "{e}");
    }

    #[test]
    fn item_key_line_search_stays_inside_the_item() {
        let t = "limits:\n  - name: a\n    rate: {}\n  # b\n  - name: b\n\n    rate: {}\nhandlers: {}\n";
        assert_eq!(find_item_key_line(t, "limits", 0, "rate"), Some(3));
        assert_eq!(find_item_key_line(t, "limits", 1, "rate"), Some(7));
        assert_eq!(find_item_key_line(t, "limits", 1, "name"), Some(5));
        assert_eq!(find_item_key_line(t, "limits", 1, "when"), Some(5));
        let flat = "handlers: {}\nlimits:\n- name: a\n- name: b\n  key: x\n";
        assert_eq!(find_item_key_line(flat, "limits", 1, "key"), Some(5));
        assert_eq!(find_item_key_line(flat, "limits", 0, "key"), Some(3));
        let json = "{\"limits\": [{\"name\": \"a\"}]}";
        assert_eq!(find_item_key_line(json, "limits", 0, "name"), None);
    }

    #[test]
    fn key_line_search_finds_quoted_and_bare_keys() {
        let t = "handlers:\n  \"*\":\n    allow: true\n  threads:read: {}\n";
        assert_eq!(find_key_line(t, "*"), Some(2));
        assert_eq!(find_key_line(t, "threads:read"), Some(4));
    }
}
