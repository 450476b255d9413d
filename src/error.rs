//! One error type for every refusal the gateway makes.
//!
//! As in Pingora's `pingora-error`, an error knows which side is at fault; the side and the kind
//! decide the status. The body is always the agent server's own shape, `{"detail": "..."}`, so a
//! client (and the official SDK) cannot tell a gateway refusal from a server one by its format.

use http::{HeaderName, HeaderValue, StatusCode};

/// Who caused a refusal; used for logs and metrics, never shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request itself (bad path, bad body, no credentials, not allowed).
    Client,
    /// The agent server behind the gateway (down, slow, garbage).
    Upstream,
    /// The gateway (policy could not be evaluated).
    Internal,
}

/// How the refusal is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A JSON body `{"detail": ...}` with the status.
    Json,
    /// An SSE stream: HTTP 200 `text/event-stream` whose first frame is `event: error`, which is
    /// how the agent server reports authorization failures on its streaming endpoints.
    SseErrorEvent,
}

/// A refusal: status, detail text, extra headers and how to deliver it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {detail}", status.as_u16())]
pub struct GatewayError {
    /// HTTP status (for `SseErrorEvent`, the status named inside the event).
    pub status: StatusCode,
    /// The `detail` text.
    pub detail: String,
    /// Extra response headers (e.g. `WWW-Authenticate`, `Allow`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Who is at fault.
    pub side: Side,
    /// JSON or SSE error event.
    pub delivery: Delivery,
    /// Why authentication failed, when it did (the `reason` of the auth-failure metric).
    pub auth_failure: Option<AuthFailure>,
    /// The limit that refused the request, when one did (for the audit log).
    pub limit: Option<Box<LimitHit>>,
}

/// A limit that refused a request (429), or could not be checked (503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// The limit's name.
    pub name: String,
    /// The key it counted (`name:value`).
    pub key: String,
}

/// Why a request could not be authenticated: set by the authenticator that refused it, read
/// by the metrics (`graphguard_auth_failures_total{reason}`) without looking at the detail
/// text (which may come from an external service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No authenticator recognised a credential.
    Missing,
    /// The token has expired.
    Expired,
    /// An API key that is not configured.
    InvalidApiKey,
    /// A token from another issuer.
    WrongIssuer,
    /// A token for another audience.
    WrongAudience,
    /// A token whose signature does not verify.
    BadSignature,
    /// Any other unusable token or credential header.
    InvalidToken,
    /// Refused for another reason (e.g. by an external authentication service).
    Other,
}

impl AuthFailure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Expired => "expired",
            AuthFailure::InvalidApiKey => "invalid_api_key",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::Other => "other",
        }
    }
}

impl GatewayError {
    /// A client-side refusal with this status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        GatewayError {
            status,
            detail: detail.into(),
            headers: Vec::new(),
            side: Side::Client,
            delivery: Delivery::Json,
            auth_failure: None,
            limit: None,
        }
    }
    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    /// 401 with `WWW-Authenticate` (unlike LangGraph, which drops it).
    pub fn unauthorized(detail: impl Into<String>, challenge: &'static str) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, detail);
        e.headers.push((
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        ));
        e
    }
    /// 403 Forbidden.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    /// 409 Conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }
    /// 422 Unprocessable Entity.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
    /// 502/503/504: the upstream failed us.
    pub fn upstream(status: StatusCode, detail: impl Into<String>) -> Self {
        let mut e = Self::new(status, detail);
        e.side = Side::Upstream;
        e
    }
    /// 500: the gateway could not decide; fail closed.
    pub fn internal(detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail);
        e.side = Side::Internal;
        e
    }
    /// Deliver as an SSE `error` event instead of a JSON error.
    pub fn as_sse(mut self) -> Self {
        self.delivery = Delivery::SseErrorEvent;
        self
    }
    /// Record why authentication failed.
    pub fn with_auth_failure(mut self, why: AuthFailure) -> Self {
        self.auth_failure = Some(why);
        self
    }
    /// Add a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The JSON body `{"detail": ...}`.
    pub fn json_body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "detail": self.detail }))
            .unwrap_or_else(|_| b"{\"detail\":\"error\"}".to_vec())
    }

    /// The SSE body: one `error` event in the agent server's format, then the stream ends.
    pub fn sse_body(&self) -> Vec<u8> {
        let data = serde_json::json!({
            "error": "HTTPException",
            "message": format!("{}: {}", self.status.as_u16(), self.detail),
        });
        let mut out = b"event: error\r\ndata: ".to_vec();
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_is_detail_object() {
        let e = GatewayError::not_found("Thread with ID x not found");
        let v: serde_json::Value = serde_json::from_slice(&e.json_body()).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"detail": "Thread with ID x not found"})
        );
    }

    #[test]
    fn sse_body_matches_agent_server_error_frame() {
        let e = GatewayError::not_found("Thread not found").as_sse();
        let body = String::from_utf8(e.sse_body()).unwrap_or_default();
        assert!(body.starts_with("event: error\r\ndata: "));
        assert!(body.contains("\"message\":\"404: Thread not found\""));
        assert!(body.ends_with("\r\n\r\n"));
    }
}
