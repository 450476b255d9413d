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

pub mod cache;
mod claims;
pub mod config;
mod error;
pub mod keys;
pub mod remote;
mod token_source;

pub use claims::{ClaimMap, ClaimPath};
use error::map_error;
pub use error::{invalid_token, JwtError, Refusal};
pub use token_source::looks_like_jwt;
use token_source::{Found, TokenSource};

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

use crate::authn::http_client;
use crate::authn::jwt::cache::TokenCache;
use crate::authn::jwt::config::{ClaimPathConfig, JwtConfig, KeyMaterialConfig, TokenSourceConfig};
use crate::authn::jwt::keys::{KeyMatch, KeySet, VerifyKey, HMAC_ALGS};
use crate::authn::jwt::remote::{KeySource, RemoteConfig, RemoteKeys};
use crate::authn::AuthOutcome;
use crate::clock::unix_now;
use crate::error::{AuthFailure, GatewayError};
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

/// Keys loaded once, with the policy: an HMAC secret (32 bytes at least), a PEM public key,
/// or a JWKS file; `None` when the keys are remote.
fn static_keys(
    c: &JwtConfig,
    base: Option<&Path>,
    algorithms: &[Algorithm],
) -> Result<Option<Vec<VerifyKey>>, String> {
    if let Some(m) = &c.secret {
        let secret = decode_secret(&read_material(m, base, "secret")?, m.base64)?;
        if secret.len() < 32 {
            return Err(
                "secret: shorter than 32 bytes (an HMAC secret that short can be brute-forced)"
                    .into(),
            );
        }
        return Ok(Some(vec![VerifyKey {
            kid: None,
            key: jsonwebtoken::DecodingKey::from_secret(&secret),
            algorithms: algorithms.to_vec(),
        }]));
    }
    if let Some(m) = &c.public_key {
        if m.base64 {
            return Err("public_key: `base64` applies to secrets only".into());
        }
        let pem = read_material(m, base, "public_key")?;
        let key = keys::pem_key(&pem, algorithms).map_err(|e| format!("public_key: {e}"))?;
        return Ok(Some(vec![key]));
    }
    let Some(f) = &c.jwks_file else {
        return Ok(None);
    };
    let f = base.map_or_else(|| f.clone(), |d| d.join(f));
    let bytes =
        std::fs::read(&f).map_err(|e| format!("jwks_file: cannot read {}: {e}", f.display()))?;
    let keys = keys::parse_jwks(&bytes, algorithms, true).map_err(|e| format!("jwks_file: {e}"))?;
    if keys.is_empty() {
        return Err(format!(
            "jwks_file: {} has no key usable with `algorithms`",
            f.display()
        ));
    }
    Ok(Some(keys))
}

/// Keys fetched from a JWKS URL, a discovery URL, or the issuer's OIDC discovery document,
/// refreshed on `jwks_refresh`'s timing.
fn remote_keys(
    c: &JwtConfig,
    algorithms: &[Algorithm],
    issuer: Option<&str>,
) -> Result<RemoteKeys, String> {
    let r = c
        .jwks_refresh
        .clone()
        .unwrap_or(crate::authn::jwt::config::JwksRefreshConfig {
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
        return Err("jwks_refresh: need 0 < min_interval_s <= interval_s <= max_interval_s".into());
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
        .map(http_client::parse_http_url)
        .transpose()
        .map_err(|e| format!("jwks_url: {e}"))?;
    let discovery_url = match jwks_url {
        Some(_) => None,
        None => Some(discovery_url(c, issuer)?),
    };
    RemoteKeys::new(RemoteConfig {
        jwks_url,
        discovery_url,
        issuer: issuer.map(str::to_string),
        algorithms: algorithms.to_vec(),
        interval: secs(interval),
        min_interval: secs(min),
        max_interval: secs(max),
        cooldown: secs(cooldown),
        timeout: Duration::from_millis(timeout),
    })
}

/// The discovery document's URL: `discovery_url`, else the issuer's well-known one.
fn discovery_url(c: &JwtConfig, issuer: Option<&str>) -> Result<http::Uri, String> {
    match (&c.discovery_url, issuer) {
        (Some(d), _) => http_client::parse_http_url(d).map_err(|e| format!("discovery_url: {e}")),
        (None, Some(iss)) => http_client::parse_http_url(&format!(
            "{}/.well-known/openid-configuration",
            iss.trim_end_matches('/')
        ))
        .map_err(|e| format!("issuer (for OIDC discovery): {e}")),
        (None, None) => Err("no key source".into()),
    }
}

/// At most one key source; none only with an issuer (OIDC discovery).
fn check_key_sources(c: &JwtConfig) -> Result<(), String> {
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
            "give one key source: secret, public_key, jwks_file, jwks_url or discovery_url".into(),
        );
    }
    if sources == 0 && c.issuer.is_none() {
        return Err("no key source: give secret, public_key, jwks_file, jwks_url, discovery_url, or issuer (for OIDC discovery)".into());
    }
    Ok(())
}

/// The allow-list: HMAC with a secret, public-key algorithms otherwise, never `none`,
/// never mixed (algorithm confusion).
fn allowed_algorithms(c: &JwtConfig) -> Result<Vec<Algorithm>, String> {
    let symmetric = c.secret.is_some();
    let algorithms: Vec<Algorithm> = match &c.algorithms {
        None if symmetric => HMAC_ALGS.to_vec(),
        None => ASYMMETRIC_ALGS.to_vec(),
        Some(names) => named_algorithms(names)?,
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
    Ok(algorithms)
}

/// The algorithms as named in the policy, without duplicates.
fn named_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
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
    Ok(out)
}

/// The validation every algorithm's copy starts from (required claims, issuer, audience,
/// leeway), and whether `iat` is required.
fn validation_template(
    c: &JwtConfig,
    first: Algorithm,
    leeway: u64,
    issuer: Option<&str>,
) -> Result<(Validation, bool), String> {
    let mut required: HashSet<String> = c
        .required_claims
        .clone()
        .unwrap_or_else(|| vec!["exp".into()])
        .into_iter()
        .collect();
    if let Some(r) = required
        .iter()
        .find(|r| !["exp", "nbf", "iat", "iss", "aud", "sub"].contains(&r.as_str()))
    {
        return Err(format!(
            "required_claims: unknown claim {r:?} (exp, nbf, iat, iss, aud, sub)"
        ));
    }
    let require_iat = required.remove("iat") || c.max_age_s.is_some();
    let mut v = Validation::new(first);
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    if let Some(iss) = issuer {
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
    Ok((v, require_iat))
}

impl JwtAuthenticator {
    /// Compile a `jwt` section. `base` is the directory of the policy file (for relative
    /// paths). Reads env vars and files; never touches the network.
    pub fn from_config(c: &JwtConfig, base: Option<&Path>) -> Result<JwtAuthenticator, String> {
        check_key_sources(c)?;
        let algorithms = allowed_algorithms(c)?;
        let leeway = c.leeway_s.unwrap_or(60);
        if leeway > 3600 {
            return Err("leeway_s: at most 3600".into());
        }
        let issuer = c.issuer.clone().filter(|s| !s.is_empty());
        if c.issuer.is_some() && issuer.is_none() {
            return Err("issuer: must not be empty".into());
        }
        let keys = Self::key_source(c, base, &algorithms, issuer.as_deref())?;
        let (v, require_iat) = validation_template(c, algorithms[0], leeway, issuer.as_deref())?;
        // One validation per allowed algorithm.
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
        match static_keys(c, base, algorithms)? {
            Some(keys) => Ok(KeySource::Static(Arc::new(KeySet {
                generation: 1,
                keys,
            }))),
            None => Ok(KeySource::Remote(Arc::new(remote_keys(
                c, algorithms, issuer,
            )?))),
        }
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
            KeySource::Remote(r) => {
                if r.loaded().is_none() {
                    // Nothing fetched yet: refuse or decline what needs no key first, so that a
                    // foreign or broken token never waits on (or fails with) our provider.
                    self.inspect(token)?;
                }
                Box::pin(r.current())
                    .await
                    .ok_or(Refusal::Rejected(JwtError::KeysUnavailable))?
            }
        };
        match self.authenticate_with_keys(token, &keys) {
            Err(Refusal::Rejected(JwtError::UnknownKid)) => match &self.keys {
                KeySource::Remote(r) => match Box::pin(r.refetch(keys.generation)).await {
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
        let now = unix_now();
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
        self.verify(token, keys, unix_now())
            .map(|v| Arc::new(v.user))
    }

    /// The checks that need no key: shape, `alg` (none, allow-list), `crit`, issuer routing.
    /// Returns the algorithm, the `kid` and the payload segment.
    fn inspect<'t>(&self, token: &'t str) -> Result<(Algorithm, Option<String>, &'t str), Refusal> {
        use Refusal::Rejected as R;
        if !looks_like_jwt(token) {
            return Err(R(JwtError::Malformed));
        }
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
            Some(Value::String(k)) => Some(k.clone()),
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
        Ok((alg, kid, p))
    }

    fn verify(&self, token: &str, keys: &KeySet, now: u64) -> Result<Verified, Refusal> {
        use Refusal::Rejected as R;
        let (alg, kid, p) = self.inspect(token)?;
        let candidates = match keys.find(kid.as_deref(), alg) {
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
                    if let JwtError::MissingClaim(c) = last {
                        // Present but not a number/string: say so (the signature is valid here).
                        if decode_json(p).is_some_and(|m| m.contains_key(c)) {
                            last = JwtError::BadClaim(c);
                        }
                    }
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

#[cfg(test)]
#[path = "../../../tests/common/keys.rs"]
pub(crate) mod test_keys;

#[cfg(test)]
mod tests {
    use super::test_keys::{keys, Pair};
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

    fn now() -> i64 {
        unix_now() as i64
    }

    fn cfg(yaml: &str) -> JwtConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn build(yaml: &str) -> JwtAuthenticator {
        JwtAuthenticator::from_config(&cfg(yaml), None).unwrap()
    }

    fn build_err(yaml: &str) -> String {
        JwtAuthenticator::from_config(&cfg(yaml), None).unwrap_err()
    }

    /// A temp file holding `text`, kept alive for the test run.
    fn file(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap().keep();
        let p = dir.join("k");
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn pem_auth(pair: &Pair, extra: &str) -> JwtAuthenticator {
        build(&format!(
            "public_key: {{file: {}}}\n{extra}",
            file(&pair.public_pem)
        ))
    }

    fn secret_auth(extra: &str) -> JwtAuthenticator {
        build(&format!("secret: {{file: {}}}\n{extra}", file(SECRET)))
    }

    fn sign(alg: Algorithm, pem_or_secret: &str, claims: &Value, kid: Option<&str>) -> String {
        let key = match alg.family() {
            jsonwebtoken::AlgorithmFamily::Hmac => {
                EncodingKey::from_secret(pem_or_secret.as_bytes())
            }
            jsonwebtoken::AlgorithmFamily::Rsa => {
                EncodingKey::from_rsa_pem(pem_or_secret.as_bytes()).unwrap()
            }
            jsonwebtoken::AlgorithmFamily::Ec => {
                EncodingKey::from_ec_pem(pem_or_secret.as_bytes()).unwrap()
            }
            jsonwebtoken::AlgorithmFamily::Ed => {
                EncodingKey::from_ed_pem(pem_or_secret.as_bytes()).unwrap()
            }
        };
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn claims(sub: &str) -> Value {
        json!({"sub": sub, "exp": now() + 600, "iat": now()})
    }

    fn check(a: &JwtAuthenticator, token: &str) -> Result<Arc<User>, Refusal> {
        let keys = a.static_keys().unwrap().clone();
        a.authenticate_with_keys(token, &keys)
    }

    fn rejected(a: &JwtAuthenticator, token: &str) -> JwtError {
        match check(a, token) {
            Err(Refusal::Rejected(e)) => e,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn every_hmac_algorithm_verifies() {
        let a = secret_auth("");
        for alg in HMAC_ALGS {
            let t = sign(alg, SECRET, &claims("alice"), None);
            assert_eq!(check(&a, &t).unwrap().identity, "alice", "{alg:?}");
        }
    }

    #[test]
    fn every_rsa_algorithm_verifies() {
        let a = pem_auth(&keys().rsa, "");
        for alg in crate::authn::jwt::keys::RSA_ALGS {
            let t = sign(alg, &keys().rsa.private_pem, &claims("bob"), None);
            assert_eq!(check(&a, &t).unwrap().identity, "bob", "{alg:?}");
        }
    }

    #[test]
    fn ec_and_eddsa_verify() {
        for (pair, alg) in [
            (&keys().p256, Algorithm::ES256),
            (&keys().p384, Algorithm::ES384),
            (&keys().ed, Algorithm::EdDSA),
        ] {
            let a = pem_auth(pair, "");
            let t = sign(alg, &pair.private_pem, &claims("carol"), None);
            assert_eq!(check(&a, &t).unwrap().identity, "carol", "{alg:?}");
        }
        // ES384 against a P-256 key: the key does not verify that algorithm.
        let a = pem_auth(&keys().p256, "");
        let t = sign(
            Algorithm::ES384,
            &keys().p384.private_pem,
            &claims("x"),
            None,
        );
        assert_eq!(rejected(&a, &t), JwtError::KeyTypeMismatch);
    }

    #[test]
    fn allow_list_is_enforced() {
        let a = pem_auth(&keys().rsa, "algorithms: [RS256]");
        let ok = sign(
            Algorithm::RS256,
            &keys().rsa.private_pem,
            &claims("a"),
            None,
        );
        assert!(check(&a, &ok).is_ok());
        let t = sign(
            Algorithm::PS256,
            &keys().rsa.private_pem,
            &claims("a"),
            None,
        );
        assert_eq!(
            rejected(&a, &t),
            JwtError::AlgorithmNotAllowed(Some(Algorithm::PS256))
        );
        let e = rejected(&a, &t).to_gateway_error();
        assert_eq!(e.detail, "Invalid token: algorithm PS256 is not allowed");
    }

    #[test]
    fn none_is_refused() {
        let a = secret_auth("");
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims("a").to_string().as_bytes())
        );
        // The empty signature still has JWT shape for our parser only if it has three parts.
        assert_eq!(rejected(&a, &t), JwtError::Unsigned);
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"NoNe"}"#),
            b64(claims("a").to_string().as_bytes())
        );
        assert_eq!(rejected(&a, &t), JwtError::Unsigned);
        assert!(build_err(&format!(
            "secret: {{file: {}}}\nalgorithms: [none]",
            file(SECRET)
        ))
        .contains("never"));
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // The classic attack: HS256 signed with the RSA public key's PEM as the HMAC secret.
        let a = pem_auth(&keys().rsa, "");
        let t = sign(
            Algorithm::HS256,
            &keys().rsa.public_pem,
            &claims("mallory"),
            None,
        );
        assert_eq!(
            rejected(&a, &t),
            JwtError::AlgorithmNotAllowed(Some(Algorithm::HS256))
        );
        // And it cannot be configured.
        let e = build_err(&format!(
            "public_key: {{file: {}}}\nalgorithms: [RS256, HS256]",
            file(&keys().rsa.public_pem)
        ));
        assert!(e.contains("confusion"), "{e}");
        let e = build_err("jwks_url: http://127.0.0.1:1/jwks\nalgorithms: [HS256]");
        assert!(e.contains("confusion"), "{e}");
        let e = build_err(&format!(
            "secret: {{file: {}}}\nalgorithms: [RS256]",
            file(SECRET)
        ));
        assert!(e.contains("confusion"), "{e}");
        // A JWKS file with an RSA key and an oct key: an HS token naming the RSA key's kid is refused.
        let mut rsa = keys().rsa.jwk.clone();
        rsa["kid"] = json!("r");
        let jwks = json!({"keys": [rsa, {"kty": "oct", "kid": "s", "k": b64(SECRET.as_bytes())}]});
        let a = build(&format!(
            "jwks_file: {}\nalgorithms: [RS256]",
            file(&jwks.to_string())
        ));
        let t = sign(
            Algorithm::HS256,
            &keys().rsa.public_pem,
            &claims("mallory"),
            Some("r"),
        );
        assert_eq!(
            rejected(&a, &t),
            JwtError::AlgorithmNotAllowed(Some(Algorithm::HS256))
        );
        let a = build(&format!(
            "jwks_file: {}\nalgorithms: [HS256]",
            file(&jwks.to_string())
        ));
        assert_eq!(
            rejected(&a, &t),
            JwtError::UnknownKid,
            "the RSA key is not usable for HS256, so its kid is unknown"
        );
        let t = sign(Algorithm::HS256, SECRET, &claims("sam"), Some("s"));
        assert_eq!(check(&a, &t).unwrap().identity, "sam");
    }

    #[test]
    fn wrong_key_and_tampered_payload_fail_the_signature() {
        let a = pem_auth(&keys().rsa, "");
        let t = sign(
            Algorithm::RS256,
            &keys().rsa2.private_pem,
            &claims("a"),
            None,
        );
        assert_eq!(rejected(&a, &t), JwtError::BadSignature);
        let good = sign(
            Algorithm::RS256,
            &keys().rsa.private_pem,
            &claims("alice"),
            None,
        );
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(claims("admin").to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(rejected(&a, &forged), JwtError::BadSignature);
        let e = rejected(&a, &forged).to_gateway_error();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(e.detail, "Invalid token: signature verification failed");
        let challenge = e
            .headers
            .iter()
            .find(|(n, _)| n == http::header::WWW_AUTHENTICATE)
            .unwrap()
            .1
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(challenge, "Bearer error=\"invalid_token\", error_description=\"Invalid token: signature verification failed\"");
        let hs = secret_auth("");
        let t = sign(
            Algorithm::HS256,
            "another-secret-another-secret-another-secret",
            &claims("a"),
            None,
        );
        assert_eq!(rejected(&hs, &t), JwtError::BadSignature);
    }

    #[test]
    fn malformed_tokens() {
        let a = secret_auth("");
        for t in [
            "a.b.c",
            "x",
            "..",
            "eyJhbGciOiJIUzI1NiJ9.e30",
            "eyJhbGciOiJIUzI1NiJ9.!!.sig",
        ] {
            assert!(
                matches!(check(&a, t), Err(Refusal::Rejected(JwtError::Malformed))),
                "{t}"
            );
        }
        let t = format!(
            "{}.{}.sig",
            b64(br#"{"alg":"HS256","crit":["exp"]}"#),
            b64(b"{}")
        );
        assert_eq!(rejected(&a, &t), JwtError::CriticalHeader);
        let t = format!("{}.{}.sig", b64(br#"{"alg":"XX999"}"#), b64(b"{}"));
        assert_eq!(rejected(&a, &t), JwtError::AlgorithmNotAllowed(None));
    }

    #[test]
    fn exp_nbf_iat_with_leeway() {
        let a = secret_auth("leeway_s: 30");
        let t = |c: Value| sign(Algorithm::HS256, SECRET, &c, None);
        assert_eq!(
            rejected(&a, &t(json!({"sub": "a", "exp": now() - 31}))),
            JwtError::Expired
        );
        assert!(
            check(&a, &t(json!({"sub": "a", "exp": now() - 20}))).is_ok(),
            "within leeway"
        );
        assert_eq!(
            rejected(
                &a,
                &t(json!({"sub": "a", "exp": now() + 60, "nbf": now() + 40}))
            ),
            JwtError::NotYetValid
        );
        assert!(check(
            &a,
            &t(json!({"sub": "a", "exp": now() + 60, "nbf": now() + 20}))
        )
        .is_ok());
        assert_eq!(
            rejected(
                &a,
                &t(json!({"sub": "a", "exp": now() + 60, "iat": now() + 40}))
            ),
            JwtError::IssuedInFuture
        );
        assert!(check(
            &a,
            &t(json!({"sub": "a", "exp": now() + 60, "iat": now() + 20}))
        )
        .is_ok());
        assert_eq!(
            rejected(&a, &t(json!({"sub": "a"}))),
            JwtError::MissingClaim("exp")
        );
        assert_eq!(
            rejected(&a, &t(json!({"sub": "a", "exp": "soon"}))),
            JwtError::BadClaim("exp")
        );
        assert_eq!(
            rejected(&a, &t(json!({"sub": "a", "exp": now() + 60, "iat": "x"}))),
            JwtError::BadClaim("iat")
        );
        let strict = secret_auth("leeway_s: 0\nmax_age_s: 100");
        assert_eq!(
            rejected(
                &strict,
                &t(json!({"sub": "a", "exp": now() + 60, "iat": now() - 101}))
            ),
            JwtError::TooOld
        );
        assert_eq!(
            rejected(&strict, &t(json!({"sub": "a", "exp": now() + 60}))),
            JwtError::MissingClaim("iat")
        );
        assert_eq!(
            rejected(&strict, &t(json!({"sub": "a", "exp": now() - 1}))),
            JwtError::Expired
        );
        let no_exp = secret_auth("required_claims: []");
        assert!(check(&no_exp, &t(json!({"sub": "a"}))).is_ok());
    }

    #[test]
    fn issuer_and_audience() {
        let a = secret_auth("issuer: https://idp.example.com/\naudience: [api-a, api-b]");
        let t = |c: Value| sign(Algorithm::HS256, SECRET, &c, None);
        let base =
            |iss: &str, aud: Value| json!({"sub": "a", "exp": now() + 60, "iss": iss, "aud": aud});
        assert!(check(&a, &t(base("https://idp.example.com/", json!("api-b")))).is_ok());
        assert!(
            check(
                &a,
                &t(base("https://idp.example.com/", json!(["other", "api-a"])))
            )
            .is_ok(),
            "one of several"
        );
        assert_eq!(
            rejected(&a, &t(base("https://idp.example.com/", json!("other")))),
            JwtError::WrongAudience
        );
        assert_eq!(
            rejected(
                &a,
                &t(json!({"sub": "a", "exp": now() + 60, "iss": "https://idp.example.com/"}))
            ),
            JwtError::MissingClaim("aud")
        );
        // Another issuer, or none, is declined: a later authenticator may own it.
        assert_eq!(
            check(&a, &t(base("https://evil.example.com/", json!("api-a")))),
            Err(Refusal::Declined(JwtError::WrongIssuer))
        );
        assert_eq!(
            check(
                &a,
                &t(json!({"sub": "a", "exp": now() + 60, "aud": "api-a"}))
            ),
            Err(Refusal::Declined(JwtError::MissingClaim("iss")))
        );
        // Without an audience configured, tokens carrying one are accepted.
        let open = secret_auth("");
        assert!(check(&open, &t(base("x", json!("anything")))).is_ok());
    }

    #[test]
    fn claim_paths() {
        let p = |s: &str| ClaimPath::parse(&ClaimPathConfig::Path(s.into())).unwrap();
        let c = json!({
            "sub": "u1",
            "realm_access": {"roles": ["admin", "user"]},
            "https://example.com/roles": ["editor"],
            "https://example.com/app": {"tier": "gold", "a.b": 1},
            "groups": [{"name": "g0"}],
        });
        let c = c.as_object().unwrap();
        assert_eq!(
            p("realm_access.roles").get(c),
            Some(&json!(["admin", "user"]))
        );
        assert_eq!(
            p("https://example.com/roles").get(c),
            Some(&json!(["editor"]))
        );
        assert_eq!(
            p("/https:~1~1example.com~1app/tier").get(c),
            Some(&json!("gold"))
        );
        assert_eq!(p("/https:~1~1example.com~1app/a.b").get(c), Some(&json!(1)));
        assert_eq!(p("groups.0.name").get(c), Some(&json!("g0")));
        assert_eq!(p("realm_access.nope").get(c), None);
        let seg = ClaimPath::parse(&ClaimPathConfig::Segments(vec![
            "https://example.com/app".into(),
            "tier".into(),
        ]))
        .unwrap();
        assert_eq!(seg.get(c), Some(&json!("gold")));
        assert!(ClaimPath::parse(&ClaimPathConfig::Path("a..b".into())).is_err());
        assert!(ClaimPath::parse(&ClaimPathConfig::Path(String::new())).is_err());
        assert!(ClaimPath::parse(&ClaimPathConfig::Segments(vec![])).is_err());
    }

    #[test]
    fn claim_mapping_to_the_user() {
        let a = secret_auth(
            "claims:\n  identity: email\n  display_name: name\n  permissions: scope\n  roles: realm_access.roles\n  attributes:\n    org: https://example.com/org\n    tier: [\"https://example.com/app\", tier]\n    missing: nope\n",
        );
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "u1", "email": "alice@example.com", "name": "Alice", "scope": "threads:read  threads:create",
                    "realm_access": {"roles": ["admin"]}, "https://example.com/org": "acme",
                    "https://example.com/app": {"tier": "gold"}, "exp": now() + 60}),
            None,
        );
        let u = check(&a, &t).unwrap();
        assert_eq!(u.identity, "alice@example.com");
        assert_eq!(u.display_name, "Alice");
        assert_eq!(u.permissions, ["threads:read", "threads:create"]);
        assert_eq!(u.roles, ["admin"]);
        assert_eq!(
            Value::Object(u.attributes.clone()),
            json!({"org": "acme", "tier": "gold"})
        );
        // Permissions from a list claim; numeric identity; display name falls back.
        let a = secret_auth("claims: {identity: uid, permissions: permissions}");
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"uid": 42, "permissions": ["p1", 7, {"x": 1}], "exp": now() + 60}),
            None,
        );
        let u = check(&a, &t).unwrap();
        assert_eq!((u.identity.as_str(), u.display_name.as_str()), ("42", "42"));
        assert_eq!(u.permissions, ["p1", "7"]);
        // Missing or unusable identity.
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "x", "exp": now() + 60}),
            None,
        );
        assert_eq!(rejected(&a, &t), JwtError::NoIdentity("uid".into()));
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"uid": "line\nbreak", "exp": now() + 60}),
            None,
        );
        assert_eq!(rejected(&a, &t), JwtError::NoIdentity("uid".into()));
    }

    #[test]
    fn verified_tokens_are_cached_until_expiry() {
        let a = pem_auth(&keys().ed, "");
        let t = sign(Algorithm::EdDSA, &keys().ed.private_pem, &claims("a"), None);
        assert!(check(&a, &t).is_ok());
        assert!(check(&a, &t).is_ok());
        assert_eq!(a.verification_count(), 1);
        let uncached = pem_auth(&keys().ed, "cache_capacity: 0");
        assert!(check(&uncached, &t).is_ok());
        assert!(check(&uncached, &t).is_ok());
        assert_eq!(uncached.verification_count(), 2);
        // An expired token is never served from the cache: it expires with the token.
        let short = secret_auth("leeway_s: 0");
        let t = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "a", "exp": now() + 1}),
            None,
        );
        assert!(check(&short, &t).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(rejected(&short, &t), JwtError::Expired);
    }

    #[test]
    fn kids_select_keys_from_a_jwks_file() {
        let mut r = keys().rsa.jwk.clone();
        r["kid"] = json!("rsa-1");
        let mut e = keys().p256.jwk.clone();
        e["kid"] = json!("ec-1");
        let a = build(&format!(
            "jwks_file: {}",
            file(&json!({"keys": [r, e]}).to_string())
        ));
        let t = sign(
            Algorithm::RS256,
            &keys().rsa.private_pem,
            &claims("a"),
            Some("rsa-1"),
        );
        assert!(check(&a, &t).is_ok());
        let t = sign(
            Algorithm::ES256,
            &keys().p256.private_pem,
            &claims("a"),
            Some("ec-1"),
        );
        assert!(check(&a, &t).is_ok());
        let t = sign(
            Algorithm::ES256,
            &keys().p256.private_pem,
            &claims("a"),
            None,
        );
        assert!(
            check(&a, &t).is_ok(),
            "no kid: every key of the algorithm is tried"
        );
        let t = sign(
            Algorithm::RS256,
            &keys().rsa.private_pem,
            &claims("a"),
            Some("ec-1"),
        );
        assert_eq!(rejected(&a, &t), JwtError::KeyTypeMismatch);
        let t = sign(
            Algorithm::RS256,
            &keys().rsa.private_pem,
            &claims("a"),
            Some("nope"),
        );
        assert_eq!(rejected(&a, &t), JwtError::UnknownKid);
    }

    fn hdr(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn token_sources_and_credential_stripping() {
        let t = sign(Algorithm::HS256, SECRET, &claims("alice"), None);
        let bearer = secret_auth("");
        assert!(matches!(
            run(bearer.authenticate(&hdr("authorization", &format!("Bearer {t}")))),
            AuthOutcome::Authenticated(_)
        ));
        assert!(matches!(
            run(bearer.authenticate(&hdr("authorization", "Bearer opaque-api-key"))),
            AuthOutcome::Declined(_)
        ));
        assert!(matches!(
            run(bearer.authenticate(&hdr("authorization", "Basic YTpi"))),
            AuthOutcome::NotMine
        ));
        assert!(matches!(
            run(bearer.authenticate(&HeaderMap::new())),
            AuthOutcome::NotMine
        ));
        let mut two = hdr("authorization", &format!("Bearer {t}"));
        two.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer x.y.z"),
        );
        assert!(matches!(
            run(bearer.authenticate(&two)),
            AuthOutcome::Rejected(_)
        ));

        let header = secret_auth("token: {header: X-Auth-Token}");
        assert!(matches!(
            run(header.authenticate(&hdr("x-auth-token", &t))),
            AuthOutcome::Authenticated(_)
        ));
        assert!(matches!(
            run(header.authenticate(&hdr("x-auth-token", "garbage"))),
            AuthOutcome::Rejected(_)
        ));
        assert!(matches!(
            run(header.authenticate(&hdr("authorization", &format!("Bearer {t}")))),
            AuthOutcome::NotMine
        ));

        let cookie = secret_auth("token: {cookie: sb-access-token}");
        let jar = format!("theme=dark; sb-access-token={t}; other=1");
        assert!(matches!(
            run(cookie.authenticate(&hdr("cookie", &jar))),
            AuthOutcome::Authenticated(_)
        ));
        let mut h = hdr("cookie", &jar);
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer x"),
        );
        cookie.strip_credentials(&mut h);
        assert_eq!(h.get(http::header::COOKIE).unwrap(), "theme=dark; other=1");
        assert!(
            h.contains_key(http::header::AUTHORIZATION),
            "only the configured credential is stripped"
        );
        let mut h = hdr("authorization", "Bearer x");
        bearer.strip_credentials(&mut h);
        assert!(h.is_empty());
        let keep = secret_auth("forward_credentials: true");
        let mut h = hdr("authorization", "Bearer x");
        keep.strip_credentials(&mut h);
        assert_eq!(h.len(), 1);
        assert!(build_err(&format!(
            "secret: {{file: {}}}\ntoken: {{header: a, cookie: b}}",
            file(SECRET)
        ))
        .contains("exactly one"));
    }

    #[test]
    fn key_material_from_env_with_default() {
        std::env::set_var("GG_TEST_JWT_SECRET_SET", SECRET);
        let a = build("secret: {env: GG_TEST_JWT_SECRET_SET}");
        let t = sign(Algorithm::HS256, SECRET, &claims("a"), None);
        assert!(check(&a, &t).is_ok());
        let e = build_err("secret: {env: GG_TEST_JWT_SECRET_UNSET_1}");
        assert!(e.contains("GG_TEST_JWT_SECRET_UNSET_1 is not set"), "{e}");
        let d = build(&format!(
            "secret: {{env: GG_TEST_JWT_SECRET_UNSET_2, default: {SECRET}}}"
        ));
        assert!(check(&d, &t).is_ok());
        assert!(
            build_err("secret: {env: GG_TEST_JWT_SECRET_UNSET_3, default: short}")
                .contains("32 bytes")
        );
        let b64secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
        let a = build(&format!(
            "secret: {{file: {}, base64: true}}",
            file(&b64secret)
        ));
        assert!(check(&a, &t).is_ok());
        std::env::set_var("GG_TEST_JWT_PEM", &keys().p256.public_pem);
        let a = build("public_key: {env: GG_TEST_JWT_PEM}");
        let t = sign(
            Algorithm::ES256,
            &keys().p256.private_pem,
            &claims("a"),
            None,
        );
        assert!(check(&a, &t).is_ok());
    }

    #[test]
    fn config_errors_are_precise() {
        assert!(build_err("leeway_s: 5").contains("no key source"));
        assert!(build_err(&format!(
            "secret: {{file: {}}}\njwks_url: http://x/j",
            file(SECRET)
        ))
        .contains("one key source"));
        assert!(
            build_err(&format!("public_key: {{file: {}}}", file("not a pem")))
                .contains("not a PEM")
        );
        assert!(build_err(&format!(
            "public_key: {{file: {}}}\nalgorithms: [RS256]",
            file(&keys().ed.public_pem)
        ))
        .contains("EdDSA"));
        assert!(build_err("jwks_url: ftp://x/jwks").contains("jwks_url"));
        assert!(
            build_err("jwks_url: http://x/jwks\nalgorithms: [RS999]").contains("unknown algorithm")
        );
        assert!(build_err(
            "jwks_url: http://x/jwks\njwks_refresh: {min_interval_s: 10, interval_s: 5}"
        )
        .contains("min_interval_s"));
        assert!(
            build_err("jwks_url: http://x/jwks\nrequired_claims: [jti]").contains("unknown claim")
        );
        assert!(
            build_err("jwks_url: http://x/jwks\nclaims: {roles: \"a..b\"}")
                .contains("claims.roles")
        );
        assert!(build_err("jwks_file: /nonexistent/jwks.json").contains("cannot read"));
        // Issuer alone means OIDC discovery, nothing fetched at load.
        let a = build("issuer: https://idp.example.com");
        assert!(matches!(a.key_source_ref(), KeySource::Remote(_)));
    }

    #[test]
    fn relative_key_files_resolve_against_the_policy_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pub.pem"), &keys().rsa.public_pem).unwrap();
        let a =
            JwtAuthenticator::from_config(&cfg("public_key: {file: pub.pem}"), Some(dir.path()))
                .unwrap();
        let t = sign(
            Algorithm::RS256,
            &keys().rsa.private_pem,
            &claims("a"),
            None,
        );
        assert!(check(&a, &t).is_ok());
    }
}
