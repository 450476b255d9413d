//! The `api_key` authenticator: static keys, in the `Authorization` bearer or a header of
//! their own.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::{AuthOutcome, BEARER_CHALLENGE};
use crate::authn::config::ApiKeyEntry;
use crate::error::{AuthFailure, GatewayError};
use crate::user::User;

/// Static API keys, held as SHA-256 digests and looked up by the digest of the presented
/// key.
///
/// The lookup is a hash-map probe, so its cost does not grow with the number of keys, and
/// its timing cannot leak a key: what an attacker varies is the SHA-256 preimage, and
/// learning how far a digest agrees with a stored one gives no way to choose the next guess
/// (that would need a preimage attack on SHA-256). Keys themselves are never stored.
#[derive(Debug)]
pub struct ApiKeys {
    pub(super) header: http::HeaderName,
    bearer: bool,
    /// Whether the key header is forwarded upstream.
    pub forward_credentials: bool,
    keys: HashMap<[u8; 32], Arc<User>>,
}

impl ApiKeys {
    /// Build from entries; errors name the offending entry.
    pub fn new(header: Option<&str>, entries: &[ApiKeyEntry]) -> Result<ApiKeys, String> {
        let header_name = header.unwrap_or("authorization").to_ascii_lowercase();
        let header = http::HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|_| format!("invalid header name {header_name:?}"))?;
        let bearer = header == http::header::AUTHORIZATION;
        let mut keys: HashMap<[u8; 32], Arc<User>> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let digest =
                parse_digest(&e.sha256).map_err(|m| format!("keys[{i}] ({}): {m}", e.identity))?;
            if e.identity.is_empty() {
                return Err(format!("keys[{i}]: identity must not be empty"));
            }
            if http::HeaderValue::from_str(&e.identity).is_err() {
                return Err(format!(
                    "keys[{i}]: identity {:?} must be visible ASCII (it is forwarded in a header)",
                    e.identity
                ));
            }
            let user = Arc::new(User {
                identity: e.identity.clone(),
                display_name: e.display_name.clone().unwrap_or_else(|| e.identity.clone()),
                permissions: e.permissions.clone(),
                roles: e.roles.clone(),
                attributes: e.attributes.clone(),
                ..User::default()
            });
            if keys.insert(digest, user).is_some() {
                return Err(format!(
                    "keys[{i}] ({}): the same key digest is listed twice",
                    e.identity
                ));
            }
        }
        Ok(ApiKeys {
            header,
            bearer,
            keys,
            forward_credentials: false,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(super) fn authenticate(&self, headers: &HeaderMap) -> AuthOutcome {
        let mut values = headers.get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return AuthOutcome::NotMine;
        };
        if values.next().is_some() {
            return AuthOutcome::Rejected(
                GatewayError::unauthorized(
                    format!("More than one {} header", self.header),
                    BEARER_CHALLENGE,
                )
                .with_auth_failure(AuthFailure::Other),
            );
        }
        let Ok(value) = value.to_str() else {
            return AuthOutcome::Rejected(invalid_key());
        };
        let key = if self.bearer {
            let mut parts = value.trim().splitn(2, ' ');
            match (parts.next(), parts.next()) {
                (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    token.trim()
                }
                // Another scheme (e.g. Basic) may belong to another authenticator.
                (Some(scheme), Some(_)) if !scheme.is_empty() => return AuthOutcome::NotMine,
                _ => {
                    return AuthOutcome::Rejected(
                        GatewayError::unauthorized(
                            "Invalid authorization header: expected 'Bearer <token>'",
                            BEARER_CHALLENGE,
                        )
                        .with_auth_failure(AuthFailure::InvalidToken),
                    )
                }
            }
        } else {
            value.trim()
        };
        if key.is_empty() {
            return AuthOutcome::Rejected(invalid_key());
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        match self.keys.get(&digest) {
            Some(u) => AuthOutcome::Authenticated(u.clone()),
            // Not a key of this list: a later authenticator on the same header (a JWT) may
            // recognise it; if none does, this is the answer.
            None => AuthOutcome::Declined(invalid_key()),
        }
    }
}

fn invalid_key() -> GatewayError {
    GatewayError::unauthorized("Invalid API key", "Bearer error=\"invalid_token\"")
        .with_auth_failure(AuthFailure::InvalidApiKey)
}

fn parse_digest(hexstr: &str) -> Result<[u8; 32], String> {
    let bytes =
        hex::decode(hexstr.trim()).map_err(|_| "sha256 must be 64 hex digits".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| "sha256 must be 64 hex digits (32 bytes)".to_string())
}
