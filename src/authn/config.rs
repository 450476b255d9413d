//! Authenticators as written in a policy file's `authenticators:` list (every struct denies
//! unknown fields); the `jwt` kind's settings are in [`crate::authn::jwt::config`].

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::authn::jwt::config::JwtConfig;

/// An authenticator: a map with exactly one key naming its kind (`api_key: {...}`).
/// The first authenticator that recognises the request's credential decides.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorConfig {
    /// Static API keys, stored as SHA-256 digests.
    pub api_key: Option<ApiKeyConfig>,
    /// JWT bearer tokens (OIDC providers, Supabase, your own issuer).
    pub jwt: Option<JwtConfig>,
    /// An external authentication service (the `@auth.authenticate` equivalent).
    pub forward: Option<ForwardConfig>,
    /// A fixed identity for requests without credentials (opt-in, public deployments).
    pub anonymous: Option<AnonymousConfig>,
}

/// An external authentication service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// The endpoint (`http://` or `https://`).
    pub url: String,
    /// `GET` (default) or `POST`.
    pub method: Option<String>,
    /// Request headers sent to the service; the authenticator applies when one is present
    /// (default `[authorization]`).
    pub headers: Option<Vec<String>>,
    /// Timeout of one call in milliseconds (default 2000); a timeout gives 503.
    pub timeout_ms: Option<u64>,
    /// How long an accepted credential is cached, in milliseconds (default 30000; 0 disables).
    pub cache_ttl_ms: Option<u64>,
    /// How long a refused (401/403) credential is cached, in milliseconds (default 5000).
    pub deny_cache_ttl_ms: Option<u64>,
    /// Cache size (default 10000).
    pub cache_capacity: Option<usize>,
    /// Forward the credential headers to the agent server (default false).
    #[serde(default)]
    pub forward_credentials: bool,
}

/// A fixed identity for requests without credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// The identity (e.g. `anonymous`).
    pub identity: String,
    /// Display name (defaults to the identity).
    pub display_name: Option<String>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Attributes for templates.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// Static API keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Header carrying the key: `authorization` (then `Bearer <key>`) or any other header
    /// (then the raw key). Default `authorization`.
    pub header: Option<String>,
    /// Keys listed inline.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A YAML or JSON file holding a list of keys (relative paths are relative to the policy
    /// file), e.g. mounted from a Kubernetes Secret.
    pub keys_file: Option<PathBuf>,
    /// Forward the key header to the agent server (default false: it is stripped).
    #[serde(default)]
    pub forward_credentials: bool,
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Lower-case hex SHA-256 of the key (never the key itself).
    pub sha256: String,
    /// The user's identity.
    pub identity: String,
    /// Display name (defaults to the identity).
    pub display_name: Option<String>,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Attributes for templates.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}
