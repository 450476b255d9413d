//! The `jwt` authenticator: verify a bearer token and map its claims to the [`User`].
//!
//! Order of checks, each with its own 401 reason (`WWW-Authenticate: Bearer
//! error="invalid_token", error_description="..."`, same text in the JSON `detail`; reasons come
//! from a fixed set and never echo key material or token content):
//!
//! 1. shape: three base64url segments; header is JSON with a string `alg`;
//! 2. `alg`: `none` is always refused, then the per-authenticator allow-list; a `crit` header
//!    is refused (no extension is understood);
//! 3. issuer routing: with `issuer` set, a token naming another issuer (or none) is declined,
//!    so that a later authenticator may take it; the reason is used if none does;
//! 4. key: by `kid` (refetched once per cooldown when unknown), and only a key whose type
//!    verifies the token's `alg` (an HS token is never checked with an RSA key: keys are typed,
//!    and HMAC and public-key algorithms cannot be allowed together);
//! 5. signature, then `exp`, `nbf` (with leeway), `iss`, `aud` (one of several), `iat` (not in
//!    the future beyond the leeway; `max_age_s`), required claims;
//! 6. claim mapping: identity (default `sub`), display name, permissions and roles (a list, or a
//!    space-separated string such as `scope`), attributes; paths as in [`ClaimPath`].
//!
//! Verified tokens are remembered in a [`TokenCache`] until they expire.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::auth::AuthOutcome;
use crate::config::{ClaimPathConfig, JwtConfig, KeyMaterialConfig, TokenSourceConfig};
use crate::error::GatewayError;
use crate::jwks::{
    self, KeyMatch, KeySet, KeySource, RemoteConfig, RemoteKeys, VerifyKey, HMAC_ALGS,
};
use crate::token_cache::{now_unix, TokenCache};
use crate::user::User;

/// Every asymmetric algorithm.
pub const ASYMMETRIC_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Entries of the verified-token cache live at most this long (tokens without `exp`).
const CACHE_MAX_TTL: Duration = Duration::from_secs(3600);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url segments, or a header or payload that is not JSON.
    Malformed,
    /// `alg: none`.
    Unsigned,
    /// An algorithm outside the allow-list (its name if it is a known one).
    AlgorithmNotAllowed(Option<Algorithm>),
    /// A `crit` header.
    CriticalHeader,
    /// No key with the token's `kid`.
    UnknownKid,
    /// A key exists for the token, but of another type than its `alg`.
    KeyTypeMismatch,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `iat` is older than `max_age_s`.
    TooOld,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// No `aud` value is accepted.
    WrongAudience,
    /// A required claim is missing.
    MissingClaim(&'static str),
    /// A standard claim has the wrong type.
    BadClaim(&'static str),
    /// The identity claim is missing, empty, not a string, or not forwardable in a header.
    NoIdentity(String),
    /// Keys could not be fetched yet (provider down since start).
    KeysUnavailable,
}

fn claim_name(c: &str) -> &'static str {
    match c {
        "exp" => "exp",
        "nbf" => "nbf",
        "iat" => "iat",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "unknown",
    }
}

impl JwtError {
    /// The reason, as shown after `Invalid token: `.
    pub fn reason(&self) -> String {
        match self {
            JwtError::Malformed => "malformed".into(),
            JwtError::Unsigned => "unsigned tokens (alg none) are refused".into(),
            JwtError::AlgorithmNotAllowed(Some(a)) => format!("algorithm {a:?} is not allowed"),
            JwtError::AlgorithmNotAllowed(None) => "unsupported algorithm".into(),
            JwtError::CriticalHeader => "unsupported critical header parameter".into(),
            JwtError::UnknownKid => "signing key not found".into(),
            JwtError::KeyTypeMismatch => "algorithm does not match the signing key".into(),
            JwtError::BadSignature => "signature verification failed".into(),
            JwtError::Expired => "expired".into(),
            JwtError::NotYetValid => "not yet valid (nbf)".into(),
            JwtError::IssuedInFuture => "issued in the future (iat)".into(),
            JwtError::TooOld => "too old (iat)".into(),
            JwtError::WrongIssuer => "issuer not accepted".into(),
            JwtError::WrongAudience => "audience not accepted".into(),
            JwtError::MissingClaim(c) => format!("missing required claim {c}"),
            JwtError::BadClaim(c) => format!("claim {c} is malformed"),
            JwtError::NoIdentity(path) => format!("identity claim {path} missing or unusable"),
            JwtError::KeysUnavailable => "signing keys unavailable".into(),
        }
    }

    /// The refusal: 401 with a `Bearer error="invalid_token"` challenge, or 503 when the keys
    /// cannot be had.
    pub fn to_gateway_error(&self) -> GatewayError {
        if *self == JwtError::KeysUnavailable {
            return GatewayError::upstream(
                StatusCode::SERVICE_UNAVAILABLE,
                "Token signing keys unavailable",
            );
        }
        invalid_token(&format!("Invalid token: {}", self.reason()))
    }
}

/// 401 with `WWW-Authenticate: Bearer error="invalid_token", error_description="<detail>"`.
pub fn invalid_token(detail: &str) -> GatewayError {
    let clean: String = detail
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c))
        .collect();
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{clean}\"");
    let value = HeaderValue::from_str(&challenge)
        .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
    GatewayError::new(StatusCode::UNAUTHORIZED, detail)
        .with_header(http::header::WWW_AUTHENTICATE, value)
}

// ---------------------------------------------------------------------------------------------
// Claim paths
// ---------------------------------------------------------------------------------------------

/// A path to a claim: object keys from the payload's root (a number also indexes a list).
///
/// Syntax (see [`ClaimPathConfig`]): `a.b.c`; a string containing `://` is one key (namespaced
/// URL claims); `/a/b` is a JSON pointer (`~1` is `/`, `~0` is `~`); a YAML list gives the
/// segments verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Vec<String>,
    shown: String,
}

impl ClaimPath {
    /// Parse a configured path.
    pub fn parse(c: &ClaimPathConfig) -> Result<ClaimPath, String> {
        let (segments, shown) = match c {
            ClaimPathConfig::Path(s) if s.starts_with('/') => (
                s[1..]
                    .split('/')
                    .map(|p| p.replace("~1", "/").replace("~0", "~"))
                    .collect::<Vec<_>>(),
                s.clone(),
            ),
            ClaimPathConfig::Path(s) if s.contains("://") => (vec![s.clone()], s.clone()),
            ClaimPathConfig::Path(s) => (s.split('.').map(str::to_string).collect(), s.clone()),
            ClaimPathConfig::Segments(v) => (v.clone(), format!("{v:?}")),
        };
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!("claim path {shown:?} has an empty segment"));
        }
        Ok(ClaimPath { segments, shown })
    }

    /// A top-level claim.
    pub fn top(name: &str) -> ClaimPath {
        ClaimPath {
            segments: vec![name.to_string()],
            shown: name.to_string(),
        }
    }

    /// The value at this path.
    pub fn get<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut cur = claims.get(first)?;
        for s in rest {
            cur = match cur {
                Value::Object(m) => m.get(s)?,
                Value::Array(a) => a.get(s.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// How claims become the [`User`].
#[derive(Debug, Clone)]
pub struct ClaimMap {
    identity: ClaimPath,
    display_name: Option<ClaimPath>,
    permissions: Option<ClaimPath>,
    roles: Option<ClaimPath>,
    attributes: Vec<(String, ClaimPath)>,
}

fn as_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl ClaimMap {
    /// From the `claims` section (defaults: identity `sub`, nothing else).
    pub fn new(c: Option<&crate::config::ClaimsConfig>) -> Result<ClaimMap, String> {
        let path = |p: &Option<ClaimPathConfig>, what: &str| -> Result<Option<ClaimPath>, String> {
            p.as_ref()
                .map(|p| ClaimPath::parse(p).map_err(|e| format!("claims.{what}: {e}")))
                .transpose()
        };
        let Some(c) = c else {
            return Ok(ClaimMap {
                identity: ClaimPath::top("sub"),
                display_name: None,
                permissions: None,
                roles: None,
                attributes: Vec::new(),
            });
        };
        let mut attributes = Vec::with_capacity(c.attributes.len());
        for (name, p) in &c.attributes {
            let p = ClaimPath::parse(p).map_err(|e| format!("claims.attributes.{name}: {e}"))?;
            attributes.push((name.clone(), p));
        }
        Ok(ClaimMap {
            identity: path(&c.identity, "identity")?.unwrap_or_else(|| ClaimPath::top("sub")),
            display_name: path(&c.display_name, "display_name")?,
            permissions: path(&c.permissions, "permissions")?,
            roles: path(&c.roles, "roles")?,
            attributes,
        })
    }

    /// The user of a verified payload.
    pub fn user(&self, claims: &Map<String, Value>) -> Result<User, JwtError> {
        let no_identity = || JwtError::NoIdentity(self.identity.to_string());
        let identity = match self.identity.get(claims) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(no_identity()),
        };
        if identity.is_empty() || HeaderValue::from_str(&identity).is_err() {
            return Err(no_identity());
        }
        let display_name = self
            .display_name
            .as_ref()
            .and_then(|p| p.get(claims))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| identity.clone(), str::to_string);
        let mut attributes = Map::new();
        for (name, p) in &self.attributes {
            if let Some(v) = p.get(claims) {
                attributes.insert(name.clone(), v.clone());
            }
        }
        Ok(User {
            identity,
            display_name,
            permissions: as_list(self.permissions.as_ref().and_then(|p| p.get(claims))),
            roles: as_list(self.roles.as_ref().and_then(|p| p.get(claims))),
            attributes,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Token source
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum TokenSource {
    Bearer,
    Header(HeaderName),
    Cookie(String),
}

enum Found<'a> {
    Nothing,
    Token(&'a str),
    /// Not this authenticator's (e.g. an opaque API key), with the reason to use if nobody
    /// takes it.
    Declined(GatewayError),
    Refused(GatewayError),
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Whether a string has the shape of a compact JWS (three base64url segments).
pub fn looks_like_jwt(t: &str) -> bool {
    let mut n = 0;
    for seg in t.split('.') {
        n += 1;
        if n > 3
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    n == 3 && !t.starts_with('.')
}

impl TokenSource {
    fn from_config(c: Option<&TokenSourceConfig>) -> Result<TokenSource, String> {
        match c {
            None => Ok(TokenSource::Bearer),
            Some(TokenSourceConfig {
                header: Some(h),
                cookie: None,
            }) => {
                let h = HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("token.header: invalid header name {h:?}"))?;
                Ok(if h == http::header::AUTHORIZATION {
                    TokenSource::Bearer
                } else {
                    TokenSource::Header(h)
                })
            }
            Some(TokenSourceConfig {
                header: None,
                cookie: Some(c),
            }) => {
                if c.is_empty() || c.contains([';', '=', ' ', ',']) {
                    return Err(format!("token.cookie: invalid cookie name {c:?}"));
                }
                Ok(TokenSource::Cookie(c.clone()))
            }
            Some(_) => Err("token: give exactly one of header or cookie".into()),
        }
    }

    fn find<'a>(&self, headers: &'a HeaderMap) -> Found<'a> {
        let single = |name: &HeaderName| -> Result<Option<&'a str>, GatewayError> {
            let mut all = headers.get_all(name).iter();
            let Some(v) = all.next() else { return Ok(None) };
            if all.next().is_some() {
                return Err(invalid_token(&format!("More than one {name} header")));
            }
            v.to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| invalid_token("Invalid token: malformed"))
        };
        match self {
            TokenSource::Bearer => match single(&http::header::AUTHORIZATION) {
                Err(e) => Found::Refused(e),
                Ok(None) => Found::Nothing,
                Ok(Some(v)) => {
                    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
                    if !scheme.eq_ignore_ascii_case("bearer") {
                        // Another scheme (Basic ...) may be another authenticator's.
                        return Found::Nothing;
                    }
                    let token = token.trim();
                    if looks_like_jwt(token) {
                        Found::Token(token)
                    } else {
                        // An opaque bearer token (an API key?) is not ours.
                        Found::Declined(JwtError::Malformed.to_gateway_error())
                    }
                }
            },
            TokenSource::Header(h) => match single(h) {
                Err(e) => Found::Refused(e),
                Ok(None) => Found::Nothing,
                Ok(Some(v)) => {
                    let v = match v.split_once(' ') {
                        Some((s, t)) if s.eq_ignore_ascii_case("bearer") => t.trim(),
                        _ => v,
                    };
                    if looks_like_jwt(v) {
                        Found::Token(v)
                    } else {
                        Found::Refused(JwtError::Malformed.to_gateway_error())
                    }
                }
            },
            TokenSource::Cookie(name) => match cookie_value(headers, name) {
                None => Found::Nothing,
                Some(v) if looks_like_jwt(v) => Found::Token(v),
                Some(_) => Found::Refused(JwtError::Malformed.to_gateway_error()),
            },
        }
    }

    fn strip(&self, headers: &mut HeaderMap) {
        match self {
            TokenSource::Bearer => {
                headers.remove(http::header::AUTHORIZATION);
            }
            TokenSource::Header(h) => {
                headers.remove(h);
            }
            TokenSource::Cookie(name) => {
                let kept: Vec<String> = headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| {
                        !c.is_empty() && c.split_once('=').is_none_or(|(n, _)| n.trim() != name)
                    })
                    .map(str::to_string)
                    .collect();
                headers.remove(http::header::COOKIE);
                if !kept.is_empty() {
                    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                        headers.insert(http::header::COOKIE, v);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The authenticator
// ---------------------------------------------------------------------------------------------

/// A compiled `jwt` authenticator.
pub struct JwtAuthenticator {
    source: TokenSource,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
    validations: Vec<(Algorithm, Validation)>,
    issuer: Option<String>,
    leeway: u64,
    max_age: Option<u64>,
    require_iat: bool,
    claims: ClaimMap,
    cache: Option<TokenCache>,
    forward_credentials: bool,
    verifications: AtomicU64,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("source", &self.source)
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys)
            .finish()
    }
}

fn read_material(
    m: &KeyMaterialConfig,
    base: Option<&Path>,
    what: &str,
) -> Result<Vec<u8>, String> {
    match (&m.env, &m.file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v.into_bytes()),
            _ => match &m.default {
                Some(d) => {
                    tracing::warn!(env = %var, "{what}: environment variable unset, using the policy's development default");
                    Ok(d.clone().into_bytes())
                }
                None => Err(format!("{what}: environment variable {var} is not set")),
            },
        },
        (None, Some(f)) => {
            if m.default.is_some() {
                return Err(format!("{what}: `default` applies to `env` only"));
            }
            let f = base.map_or_else(|| f.clone(), |d| d.join(f));
            std::fs::read(&f).map_err(|e| format!("{what}: cannot read {}: {e}", f.display()))
        }
        _ => Err(format!("{what}: give exactly one of env or file")),
    }
}

fn decode_secret(raw: &[u8], base64: bool) -> Result<Vec<u8>, String> {
    if !base64 {
        return Ok(raw.to_vec());
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| "secret: not base64".to_string())?
        .trim();
    let e = &base64::engine::general_purpose::STANDARD;
    e.decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
        })
        .map_err(|_| "secret: not base64".to_string())
}

impl JwtAuthenticator {
    /// Compile a `jwt` section. `base` is the directory of the policy file (for relative
    /// paths). Reads env vars and files; never touches the network.
    pub fn from_config(c: &JwtConfig, base: Option<&Path>) -> Result<JwtAuthenticator, String> {
        let sources = [
            c.secret.is_some(),
            c.public_key.is_some(),
            c.jwks_file.is_some(),
            c.jwks_url.is_some(),
            c.discovery_url.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources > 1 {
            return Err(
                "give one key source: secret, public_key, jwks_file, jwks_url or discovery_url"
                    .into(),
            );
        }
        if sources == 0 && c.issuer.is_none() {
            return Err("no key source: give secret, public_key, jwks_file, jwks_url, discovery_url, or issuer (for OIDC discovery)".into());
        }
        let symmetric = c.secret.is_some();
        let algorithms: Vec<Algorithm> = match &c.algorithms {
            None if symmetric => HMAC_ALGS.to_vec(),
            None => ASYMMETRIC_ALGS.to_vec(),
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    if n.eq_ignore_ascii_case("none") {
                        return Err("algorithms: `none` is never accepted".into());
                    }
                    let a = Algorithm::from_str(n).map_err(|_| {
                        format!("algorithms: unknown algorithm {n:?} (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)")
                    })?;
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
                if out.is_empty() {
                    return Err("algorithms: the list is empty".into());
                }
                out
            }
        };
        let has_hmac = algorithms.iter().any(|a| HMAC_ALGS.contains(a));
        let has_public = algorithms.iter().any(|a| ASYMMETRIC_ALGS.contains(a));
        if symmetric && has_public {
            return Err("algorithms: a secret verifies HS256/HS384/HS512 only (a public-key algorithm with a shared secret invites algorithm confusion)".into());
        }
        if !symmetric && has_hmac && c.jwks_file.is_none() {
            return Err("algorithms: HS256/HS384/HS512 need a `secret` (an HMAC algorithm with a public key is the algorithm-confusion attack)".into());
        }
        if has_hmac && has_public {
            return Err(
                "algorithms: HMAC and public-key algorithms cannot be mixed in one authenticator"
                    .into(),
            );
        }
        let leeway = c.leeway_s.unwrap_or(60);
        if leeway > 3600 {
            return Err("leeway_s: at most 3600".into());
        }
        let issuer = c.issuer.clone().filter(|s| !s.is_empty());
        if c.issuer.is_some() && issuer.is_none() {
            return Err("issuer: must not be empty".into());
        }
        let keys = Self::key_source(c, base, &algorithms, issuer.as_deref())?;

        // Required claims and the validation template, one per allowed algorithm.
        let mut required: HashSet<String> = c
            .required_claims
            .clone()
            .unwrap_or_else(|| vec!["exp".into()])
            .into_iter()
            .collect();
        for r in &required {
            if !["exp", "nbf", "iat", "iss", "aud", "sub"].contains(&r.as_str()) {
                return Err(format!(
                    "required_claims: unknown claim {r:?} (exp, nbf, iat, iss, aud, sub)"
                ));
            }
        }
        let require_iat = required.remove("iat") || c.max_age_s.is_some();
        let mut v = Validation::new(algorithms[0]);
        v.leeway = leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        if let Some(iss) = &issuer {
            v.set_issuer(&[iss]);
            required.insert("iss".into());
        }
        match &c.audience {
            Some(aud) => {
                let aud = aud.to_vec();
                if aud.is_empty() || aud.iter().any(String::is_empty) {
                    return Err("audience: give one or more non-empty values".into());
                }
                v.set_audience(&aud);
                v.validate_aud = true;
                required.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        v.required_spec_claims = required;
        let validations = algorithms
            .iter()
            .map(|a| {
                let mut v = v.clone();
                v.algorithms = vec![*a];
                (*a, v)
            })
            .collect();
        let capacity = c.cache_capacity.unwrap_or(10_000);
        Ok(JwtAuthenticator {
            source: TokenSource::from_config(c.token.as_ref())?,
            algorithms,
            keys,
            validations,
            issuer,
            leeway,
            max_age: c.max_age_s,
            require_iat,
            claims: ClaimMap::new(c.claims.as_ref())?,
            cache: (capacity > 0).then(|| TokenCache::new(capacity, CACHE_MAX_TTL)),
            forward_credentials: c.forward_credentials,
            verifications: AtomicU64::new(0),
        })
    }

    fn key_source(
        c: &JwtConfig,
        base: Option<&Path>,
        algorithms: &[Algorithm],
        issuer: Option<&str>,
    ) -> Result<KeySource, String> {
        let fixed = |keys: Vec<VerifyKey>| {
            KeySource::Static(Arc::new(KeySet {
                generation: 1,
                keys,
            }))
        };
        if let Some(m) = &c.secret {
            let secret = decode_secret(&read_material(m, base, "secret")?, m.base64)?;
            if secret.len() < 32 {
                return Err(
                    "secret: shorter than 32 bytes (an HMAC secret that short can be brute-forced)"
                        .into(),
                );
            }
            let key = VerifyKey {
                kid: None,
                key: jsonwebtoken::DecodingKey::from_secret(&secret),
                algorithms: algorithms.to_vec(),
            };
            return Ok(fixed(vec![key]));
        }
        if let Some(m) = &c.public_key {
            if m.base64 {
                return Err("public_key: `base64` applies to secrets only".into());
            }
            let pem = read_material(m, base, "public_key")?;
            return Ok(fixed(vec![
                jwks::pem_key(&pem, algorithms).map_err(|e| format!("public_key: {e}"))?
            ]));
        }
        if let Some(f) = &c.jwks_file {
            let f = base.map_or_else(|| f.clone(), |d| d.join(f));
            let bytes = std::fs::read(&f)
                .map_err(|e| format!("jwks_file: cannot read {}: {e}", f.display()))?;
            let keys = jwks::parse_jwks(&bytes, algorithms, true)
                .map_err(|e| format!("jwks_file: {e}"))?;
            if keys.is_empty() {
                return Err(format!(
                    "jwks_file: {} has no key usable with `algorithms`",
                    f.display()
                ));
            }
            return Ok(fixed(keys));
        }
        let r = c
            .jwks_refresh
            .clone()
            .unwrap_or(crate::config::JwksRefreshConfig {
                interval_s: None,
                min_interval_s: None,
                max_interval_s: None,
                unknown_kid_cooldown_s: None,
                timeout_ms: None,
            });
        let secs = Duration::from_secs;
        let (interval, min, max) = (
            r.interval_s.unwrap_or(300),
            r.min_interval_s.unwrap_or(60),
            r.max_interval_s.unwrap_or(86_400),
        );
        if min == 0 || min > interval || interval > max {
            return Err(
                "jwks_refresh: need 0 < min_interval_s <= interval_s <= max_interval_s".into(),
            );
        }
        let cooldown = r.unknown_kid_cooldown_s.unwrap_or(30);
        if cooldown == 0 {
            return Err("jwks_refresh.unknown_kid_cooldown_s: at least 1".into());
        }
        let timeout = r.timeout_ms.unwrap_or(5000);
        if timeout == 0 {
            return Err("jwks_refresh.timeout_ms: at least 1".into());
        }
        let jwks_url = c
            .jwks_url
            .as_deref()
            .map(jwks::parse_http_url)
            .transpose()
            .map_err(|e| format!("jwks_url: {e}"))?;
        let discovery_url = match (&jwks_url, &c.discovery_url, issuer) {
            (Some(_), _, _) => None,
            (None, Some(d), _) => {
                Some(jwks::parse_http_url(d).map_err(|e| format!("discovery_url: {e}"))?)
            }
            (None, None, Some(iss)) => Some(
                jwks::parse_http_url(&format!(
                    "{}/.well-known/openid-configuration",
                    iss.trim_end_matches('/')
                ))
                .map_err(|e| format!("issuer (for OIDC discovery): {e}"))?,
            ),
            (None, None, None) => return Err("no key source".into()),
        };
        let remote = RemoteKeys::new(RemoteConfig {
            jwks_url,
            discovery_url,
            issuer: issuer.map(str::to_string),
            algorithms: algorithms.to_vec(),
            interval: secs(interval),
            min_interval: secs(min),
            max_interval: secs(max),
            cooldown: secs(cooldown),
            timeout: Duration::from_millis(timeout),
        })?;
        Ok(KeySource::Remote(Arc::new(remote)))
    }

    /// The key source (tests and metrics read fetch counts from it).
    pub fn key_source_ref(&self) -> &KeySource {
        &self.keys
    }

    /// The keys loaded at compile time (PEM, secret, JWKS file), if that is the source.
    pub fn static_keys(&self) -> Option<&Arc<KeySet>> {
        match &self.keys {
            KeySource::Static(k) => Some(k),
            KeySource::Remote(_) => None,
        }
    }

    /// Signature verifications performed (cache misses that reached the crypto).
    pub fn verification_count(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Remove the credential from a request going upstream, unless `forward_credentials`.
    pub fn strip_credentials(&self, headers: &mut HeaderMap) {
        if !self.forward_credentials {
            self.source.strip(headers);
        }
    }

    /// Authenticate a request.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AuthOutcome {
        let token = match self.source.find(headers) {
            Found::Nothing => return AuthOutcome::NotMine,
            Found::Declined(e) => return AuthOutcome::Declined(e),
            Found::Refused(e) => return AuthOutcome::Rejected(e),
            Found::Token(t) => t,
        };
        match self.authenticate_token(token).await {
            Ok(u) => AuthOutcome::Authenticated(u),
            Err(Refusal::Declined(e)) => AuthOutcome::Declined(e.to_gateway_error()),
            Err(Refusal::Rejected(e)) => {
                tracing::debug!(reason = %e.reason(), "token refused");
                AuthOutcome::Rejected(e.to_gateway_error())
            }
        }
    }

    /// Authenticate one token: through the cache, fetching keys as needed.
    pub async fn authenticate_token(&self, token: &str) -> Result<Arc<User>, Refusal> {
        let keys = match &self.keys {
            KeySource::Static(k) => k.clone(),
            KeySource::Remote(r) => r
                .current()
                .await
                .ok_or(Refusal::Rejected(JwtError::KeysUnavailable))?,
        };
        match self.authenticate_with_keys(token, &keys) {
            Err(Refusal::Rejected(JwtError::UnknownKid)) => match &self.keys {
                KeySource::Remote(r) => match r.refetch(keys.generation).await {
                    Some(newer) => self.authenticate_with_keys(token, &newer),
                    None => Err(Refusal::Rejected(JwtError::UnknownKid)),
                },
                KeySource::Static(_) => Err(Refusal::Rejected(JwtError::UnknownKid)),
            },
            other => other,
        }
    }

    /// Authenticate one token against these keys, through the verified-token cache.
    pub fn authenticate_with_keys(&self, token: &str, keys: &KeySet) -> Result<Arc<User>, Refusal> {
        let now = now_unix();
        let digest = self.cache.as_ref().map(|_| TokenCache::digest(token));
        if let (Some(cache), Some(d)) = (&self.cache, &digest) {
            if let Some(hit) = cache.get(d, now) {
                if hit.kid.as_deref().is_none_or(|k| keys.has_kid(k)) {
                    return Ok(hit.user.clone());
                }
            }
        }
        let v = self.verify(token, keys, now)?;
        let user = Arc::new(v.user);
        if let (Some(cache), Some(d)) = (&self.cache, digest) {
            cache.put(d, user.clone(), v.kid, v.valid_until, now);
        }
        Ok(user)
    }

    /// Verify without the cache (benchmarks' cold path).
    pub fn verify_uncached(&self, token: &str, keys: &KeySet) -> Result<Arc<User>, Refusal> {
        self.verify(token, keys, now_unix())
            .map(|v| Arc::new(v.user))
    }

    fn verify(&self, token: &str, keys: &KeySet, now: u64) -> Result<Verified, Refusal> {
        use Refusal::Rejected as R;
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(R(JwtError::Malformed));
        };
        let header = decode_json(h).ok_or(R(JwtError::Malformed))?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) if a.eq_ignore_ascii_case("none") => {
                return Err(R(JwtError::Unsigned))
            }
            Some(Value::String(a)) => match Algorithm::from_str(a) {
                Ok(a) if self.algorithms.contains(&a) => a,
                Ok(a) => return Err(R(JwtError::AlgorithmNotAllowed(Some(a)))),
                Err(_) => return Err(R(JwtError::AlgorithmNotAllowed(None))),
            },
            _ => return Err(R(JwtError::Malformed)),
        };
        if header.contains_key("crit") {
            return Err(R(JwtError::CriticalHeader));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(R(JwtError::Malformed)),
        };
        if let Some(expected) = &self.issuer {
            let payload = decode_json(p).ok_or(R(JwtError::Malformed))?;
            match payload.get("iss") {
                Some(Value::String(iss)) if iss == expected => {}
                Some(_) => return Err(Refusal::Declined(JwtError::WrongIssuer)),
                None => return Err(Refusal::Declined(JwtError::MissingClaim("iss"))),
            }
        }
        let candidates = match keys.find(kid, alg) {
            KeyMatch::Keys(k) => k,
            KeyMatch::UnknownKid => return Err(R(JwtError::UnknownKid)),
            KeyMatch::WrongAlgorithm => return Err(R(JwtError::KeyTypeMismatch)),
        };
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(R(JwtError::AlgorithmNotAllowed(Some(alg))))?;
        let mut last = JwtError::BadSignature;
        for key in candidates {
            self.verifications.fetch_add(1, Ordering::Relaxed);
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    let claims = data.claims;
                    self.check_iat(&claims, now).map_err(R)?;
                    let user = self.claims.user(&claims).map_err(R)?;
                    let exp = claims
                        .get("exp")
                        .and_then(Value::as_f64)
                        .map(|e| e.max(0.0) as u64);
                    let valid_until = exp.map_or(u64::MAX, |e| e.saturating_add(self.leeway));
                    return Ok(Verified {
                        user,
                        kid: key.kid.clone(),
                        valid_until,
                    });
                }
                Err(e) => {
                    last = map_error(e.kind());
                    if last != JwtError::BadSignature {
                        break;
                    }
                }
            }
        }
        Err(R(last))
    }

    fn check_iat(&self, claims: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
        let iat = match claims.get("iat") {
            None if self.require_iat => return Err(JwtError::MissingClaim("iat")),
            None => return Ok(()),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or(JwtError::BadClaim("iat"))? as u64,
        };
        if iat > now.saturating_add(self.leeway) {
            return Err(JwtError::IssuedInFuture);
        }
        if let Some(max) = self.max_age {
            if now.saturating_sub(iat) > max.saturating_add(self.leeway) {
                return Err(JwtError::TooOld);
            }
        }
        Ok(())
    }
}

/// A refusal: `Declined` means "not this authenticator's token" (foreign or missing issuer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another authenticator may take the token; the reason applies if none does.
    Declined(JwtError),
    /// The token is refused.
    Rejected(JwtError),
}

impl Refusal {
    /// The underlying reason.
    pub fn error(&self) -> &JwtError {
        match self {
            Refusal::Declined(e) | Refusal::Rejected(e) => e,
        }
    }
}

struct Verified {
    user: User,
    kid: Option<String>,
    valid_until: u64,
}

fn decode_json(seg: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(seg)
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn map_error(k: &ErrorKind) -> JwtError {
    match k {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(claim_name(c)),
        ErrorKind::InvalidClaimFormat(c) => JwtError::BadClaim(claim_name(c)),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => JwtError::KeyTypeMismatch,
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => JwtError::Malformed,
        _ => JwtError::BadSignature,
    }
}
