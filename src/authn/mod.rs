//! Authentication: turn a request's credentials into a [`User`].
//!
//! [`Authenticator`] is the seam: each variant recognises its own credential and either
//! authenticates it, rejects it, or declines so that the next authenticator may try. JWT/JWKS
//! and external (`forward`) authenticators are further variants of the same enum.

pub mod anonymous;
pub mod api_key;
pub mod config;
pub mod forward;
pub mod http_client;
pub mod jwt;

pub use api_key::ApiKeys;

use std::sync::Arc;

use http::HeaderMap;

use crate::error::{AuthFailure, GatewayError};
use crate::user::User;

/// What an authenticator made of a request.
#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// The credential is valid: this is the caller.
    Authenticated(Arc<User>),
    /// The request carries no credential of this authenticator's kind.
    NotMine,
    /// The credential is this authenticator's kind but invalid.
    Rejected(GatewayError),
    /// The credential is not this authenticator's (e.g. a token from another issuer); the
    /// error is the answer if no later authenticator takes it.
    Declined(GatewayError),
}

/// A configured authenticator.
#[derive(Debug)]
pub enum Authenticator {
    /// Static API keys.
    ApiKey(ApiKeys),
    /// JWT bearer tokens.
    Jwt(Arc<crate::authn::jwt::JwtAuthenticator>),
    /// An external authentication service.
    Forward(Arc<crate::authn::forward::ForwardAuthenticator>),
    /// A fixed identity for requests no other authenticator recognised (opt-in).
    Anonymous(Arc<User>),
}

impl Authenticator {
    /// Authenticate a request from its headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> AuthOutcome {
        match self {
            Authenticator::ApiKey(k) => k.authenticate(headers),
            Authenticator::Jwt(j) => j.authenticate(headers).await,
            Authenticator::Forward(f) => Box::pin(f.authenticate(headers)).await,
            Authenticator::Anonymous(u) => AuthOutcome::Authenticated(u.clone()),
        }
    }

    /// Remove this authenticator's credential headers from a request going upstream (unless
    /// it is configured with `forward_credentials: true`). API keys are left as they are.
    pub fn strip_credentials(&self, headers: &mut HeaderMap) {
        match self {
            Authenticator::ApiKey(k) => {
                if !k.forward_credentials {
                    headers.remove(&k.header);
                }
            }
            Authenticator::Anonymous(_) => {}
            Authenticator::Jwt(j) => j.strip_credentials(headers),
            Authenticator::Forward(f) => f.strip_credentials(headers),
        }
    }
}

const BEARER_CHALLENGE: &str = "Bearer";

/// Run the authenticators in order; the first that recognises the credential decides. A
/// credential every authenticator declined gets the first decline's reason, never `anonymous`.
pub async fn authenticate(
    authenticators: &[Authenticator],
    headers: &HeaderMap,
) -> Result<Arc<User>, GatewayError> {
    let mut declined: Option<GatewayError> = None;
    for a in authenticators {
        if matches!(a, Authenticator::Anonymous(_)) {
            if let Some(e) = declined {
                return Err(e);
            }
        }
        match a.authenticate(headers).await {
            AuthOutcome::Authenticated(u) => return Ok(u),
            AuthOutcome::Rejected(e) => return Err(e),
            AuthOutcome::Declined(e) => {
                declined.get_or_insert(e);
            }
            AuthOutcome::NotMine => {}
        }
    }
    if let Some(e) = declined {
        return Err(e);
    }
    Err(
        GatewayError::unauthorized("Missing authentication credentials", BEARER_CHALLENGE)
            .with_auth_failure(AuthFailure::Missing),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::config::ApiKeyEntry;
    use http::HeaderValue;
    use sha2::{Digest, Sha256};

    /// The async `authenticate`, driven to completion (API keys never wait).
    fn authenticate(a: &[Authenticator], h: &HeaderMap) -> Result<Arc<User>, GatewayError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(super::authenticate(a, h))
    }

    fn entry(key: &str, id: &str) -> ApiKeyEntry {
        ApiKeyEntry {
            sha256: hex::encode(Sha256::digest(key.as_bytes())),
            identity: id.into(),
            display_name: None,
            permissions: vec!["p".into()],
            roles: vec![],
            attributes: Default::default(),
        }
    }

    fn headers(name: &str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    fn bearer_keys() -> Vec<Authenticator> {
        vec![Authenticator::ApiKey(
            ApiKeys::new(None, &[entry("k1", "alice"), entry("k2", "bob")]).unwrap(),
        )]
    }

    #[test]
    fn bearer_key_authenticates_its_user() {
        let u = authenticate(&bearer_keys(), &headers("authorization", "Bearer k2")).unwrap();
        assert_eq!(u.identity, "bob");
        assert_eq!(u.display_name, "bob");
        assert_eq!(u.permissions, vec!["p".to_string()]);
    }

    #[test]
    fn each_of_many_keys_finds_its_own_user() {
        let entries: Vec<ApiKeyEntry> = (0..2_000)
            .map(|i| entry(&format!("key-{i}"), &format!("user-{i}")))
            .collect();
        let a = vec![Authenticator::ApiKey(ApiKeys::new(None, &entries).unwrap())];
        for i in (0..2_000).step_by(97) {
            let u =
                authenticate(&a, &headers("authorization", &format!("Bearer key-{i}"))).unwrap();
            assert_eq!(u.identity, format!("user-{i}"));
        }
        // A digest's hex form, or a near miss, is not a key.
        for wrong in [entries[5].sha256.as_str(), "key-20000", "Key-1", "key-1x"] {
            let e = authenticate(&a, &headers("authorization", &format!("Bearer {wrong}")));
            assert_eq!(e.unwrap_err().detail, "Invalid API key", "{wrong}");
        }
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert!(authenticate(&bearer_keys(), &headers("authorization", "bearer k1")).is_ok());
    }

    #[test]
    fn unknown_key_is_401_with_challenge() {
        let e = authenticate(&bearer_keys(), &headers("authorization", "Bearer nope")).unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(e.detail, "Invalid API key");
        assert!(e
            .headers
            .iter()
            .any(|(n, _)| n == http::header::WWW_AUTHENTICATE));
    }

    #[test]
    fn missing_credentials_is_401() {
        let e = authenticate(&bearer_keys(), &HeaderMap::new()).unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(e.detail, "Missing authentication credentials");
    }

    #[test]
    fn one_word_authorization_is_401_not_400() {
        let e = authenticate(&bearer_keys(), &headers("authorization", "k1")).unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn other_scheme_declines_and_falls_through_to_missing() {
        let e = authenticate(&bearer_keys(), &headers("authorization", "Basic YTpi")).unwrap_err();
        assert_eq!(e.detail, "Missing authentication credentials");
    }

    #[test]
    fn duplicate_authorization_headers_are_rejected() {
        let mut h = headers("authorization", "Bearer k1");
        h.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer k2"),
        );
        assert!(authenticate(&bearer_keys(), &h).is_err());
    }

    #[test]
    fn raw_key_header_is_supported() {
        let a = vec![Authenticator::ApiKey(
            ApiKeys::new(Some("X-Api-Key"), &[entry("k1", "alice")]).unwrap(),
        )];
        assert_eq!(
            authenticate(&a, &headers("x-api-key", "k1"))
                .unwrap()
                .identity,
            "alice"
        );
        assert!(authenticate(&a, &headers("authorization", "Bearer k1")).is_err());
    }

    #[test]
    fn bad_digest_and_duplicate_digest_are_load_errors() {
        let mut bad = entry("k", "a");
        bad.sha256 = "xyz".into();
        assert!(ApiKeys::new(None, &[bad]).is_err());
        assert!(ApiKeys::new(None, &[entry("k", "a"), entry("k", "b")]).is_err());
    }
}
