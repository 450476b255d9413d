//! The `jwt` authenticator's configuration, as written in a policy file (every struct denies
//! unknown fields).

use std::path::PathBuf;

use serde::Deserialize;

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl StringOrList {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// The path of a claim inside a token's payload.
///
/// A string is split on `.` (`realm_access.roles`), except that a string containing `://` names
/// one top-level claim (Auth0-style namespaced claims such as `https://example.com/roles`). A
/// string starting with `/` is a JSON pointer (RFC 6901: `/https:~1~1example.com~1app/roles`).
/// A list gives the segments verbatim (`["https://example.com/app", "roles"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimPathConfig {
    /// Dotted path, namespaced URL claim, or JSON pointer.
    Path(String),
    /// Segments, each an object key.
    Segments(Vec<String>),
}

/// JWT bearer tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms (`HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`,
    /// `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA`). Default: `[HS256]` with `secret`, every
    /// asymmetric algorithm otherwise. HMAC and public-key algorithms never mix.
    pub algorithms: Option<Vec<String>>,
    /// Expected `iss`. With no key source, the keys are found by OIDC discovery from it.
    pub issuer: Option<String>,
    /// Accepted `aud` values (the token must name one of them).
    pub audience: Option<StringOrList>,
    /// HMAC shared secret (HS*), from an env var or a file.
    pub secret: Option<KeyMaterialConfig>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519), from an env var or a file.
    pub public_key: Option<KeyMaterialConfig>,
    /// A static JWKS file (relative paths are relative to the policy file).
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched and refreshed in the background.
    pub jwks_url: Option<String>,
    /// An OIDC discovery document URL (default `{issuer}/.well-known/openid-configuration`).
    pub discovery_url: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (default 60).
    pub leeway_s: Option<u64>,
    /// Refuse tokens issued (`iat`) longer ago than this, in seconds (then `iat` is required).
    pub max_age_s: Option<u64>,
    /// Claims that must be present (default `[exp]`; any of `exp`, `nbf`, `iat`, `iss`, `aud`,
    /// `sub`).
    pub required_claims: Option<Vec<String>>,
    /// How claims become the user.
    pub claims: Option<ClaimsConfig>,
    /// Where the token is read from (default `Authorization: Bearer`).
    pub token: Option<TokenSourceConfig>,
    /// Forward the credential header (or cookie) to the agent server (default false).
    #[serde(default)]
    pub forward_credentials: bool,
    /// JWKS refresh timing (for `jwks_url` and discovery).
    pub jwks_refresh: Option<JwksRefreshConfig>,
    /// Verified-token cache size (default 10000; 0 disables).
    pub cache_capacity: Option<usize>,
}

/// Secret or key material read from the environment or a file, never written in the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMaterialConfig {
    /// Environment variable holding the material.
    pub env: Option<String>,
    /// File holding the material (relative paths are relative to the policy file).
    pub file: Option<PathBuf>,
    /// Used when `env` is unset (development only; a warning is logged).
    pub default: Option<String>,
    /// The secret is base64 (standard or URL-safe) encoded (default false: raw bytes).
    #[serde(default)]
    pub base64: bool,
}

/// Claim mapping.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimsConfig {
    /// Identity claim (default `sub`).
    pub identity: Option<ClaimPathConfig>,
    /// Display-name claim (default: the identity).
    pub display_name: Option<ClaimPathConfig>,
    /// Permissions: a list claim, or a space-separated string such as `scope`.
    pub permissions: Option<ClaimPathConfig>,
    /// Roles: a list claim, or a space-separated string.
    pub roles: Option<ClaimPathConfig>,
    /// Extra attributes, `name: claim path`, readable as `{user.attributes.name}`.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, ClaimPathConfig>,
}

/// Where a token is read from: exactly one of `header` or `cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceConfig {
    /// `authorization` (then `Bearer <token>`) or another header carrying the raw token.
    pub header: Option<String>,
    /// A cookie carrying the raw token.
    pub cookie: Option<String>,
}

/// JWKS refresh timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksRefreshConfig {
    /// Refresh interval when the provider sends no `Cache-Control: max-age` (default 300 s).
    pub interval_s: Option<u64>,
    /// Lower bound on the refresh interval, also the retry delay after a failure (default 60 s).
    pub min_interval_s: Option<u64>,
    /// Upper bound on the refresh interval (default 86400 s).
    pub max_interval_s: Option<u64>,
    /// At most one fetch per this many seconds for tokens with an unknown `kid` (default 30).
    pub unknown_kid_cooldown_s: Option<u64>,
    /// Timeout of one fetch, in milliseconds (default 5000).
    pub timeout_ms: Option<u64>,
}
