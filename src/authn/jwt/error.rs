//! Why a token was refused ([`JwtError`]), whether another authenticator may take it
//! ([`Refusal`]), and the 401 a refusal becomes.

use super::*;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url segments, or a header or payload that is not JSON.
    #[error("malformed")]
    Malformed,
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are refused")]
    Unsigned,
    /// An algorithm outside the allow-list (its name if it is a known one).
    #[error("{}", algorithm_refusal(.0))]
    AlgorithmNotAllowed(Option<Algorithm>),
    /// A `crit` header.
    #[error("unsupported critical header parameter")]
    CriticalHeader,
    /// No key with the token's `kid`.
    #[error("signing key not found")]
    UnknownKid,
    /// A key exists for the token, but of another type than its `alg`.
    #[error("algorithm does not match the signing key")]
    KeyTypeMismatch,
    /// The signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("not yet valid (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    /// `iat` is older than `max_age_s`.
    #[error("too old (iat)")]
    TooOld,
    /// `iss` is not the configured issuer.
    #[error("issuer not accepted")]
    WrongIssuer,
    /// No `aud` value is accepted.
    #[error("audience not accepted")]
    WrongAudience,
    /// A required claim is missing.
    #[error("missing required claim {0}")]
    MissingClaim(&'static str),
    /// A standard claim has the wrong type.
    #[error("claim {0} is malformed")]
    BadClaim(&'static str),
    /// The identity claim is missing, empty, not a string, or not forwardable in a header.
    #[error("identity claim {0} missing or unusable")]
    NoIdentity(String),
    /// Keys could not be fetched yet (provider down since start).
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

fn algorithm_refusal(a: &Option<Algorithm>) -> String {
    match a {
        Some(a) => format!("algorithm {a:?} is not allowed"),
        None => "unsupported algorithm".into(),
    }
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
        self.to_string()
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
            .with_auth_failure(self.failure())
    }

    /// The auth-failure metric's reason. A missing claim or identity counts as `missing`, as
    /// the label has always read.
    pub fn failure(&self) -> AuthFailure {
        match self {
            JwtError::MissingClaim(_) | JwtError::NoIdentity(_) => AuthFailure::Missing,
            JwtError::Expired => AuthFailure::Expired,
            JwtError::WrongIssuer => AuthFailure::WrongIssuer,
            JwtError::WrongAudience => AuthFailure::WrongAudience,
            JwtError::BadSignature => AuthFailure::BadSignature,
            _ => AuthFailure::InvalidToken,
        }
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

pub(super) fn map_error(k: &ErrorKind) -> JwtError {
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
