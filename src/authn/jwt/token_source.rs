//! Where a token is read from (the `Authorization` bearer, another header, or a cookie), and
//! stripping it from a request going upstream.

use super::*;

#[derive(Debug, Clone)]
pub(super) enum TokenSource {
    Bearer,
    Header(HeaderName),
    Cookie(String),
}

pub(super) enum Found<'a> {
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
    pub(super) fn from_config(c: Option<&TokenSourceConfig>) -> Result<TokenSource, String> {
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

    pub(super) fn find<'a>(&self, headers: &'a HeaderMap) -> Found<'a> {
        let single = |name: &HeaderName| -> Result<Option<&'a str>, GatewayError> {
            let mut all = headers.get_all(name).iter();
            let Some(v) = all.next() else { return Ok(None) };
            if all.next().is_some() {
                return Err(invalid_token(&format!("More than one {name} header"))
                    .with_auth_failure(AuthFailure::Other));
            }
            v.to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| JwtError::Malformed.to_gateway_error())
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

    pub(super) fn strip(&self, headers: &mut HeaderMap) {
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
