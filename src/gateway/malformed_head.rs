//! The gateway's JSON error in place of hyper's bare automatic responses.
//!
//! hyper refuses some HTTP/1 requests before the gateway sees them: a malformed request line
//! or header field (obsolete line folding, an invalid name or value, a bad version), a request
//! head over the size limit, a URI too long. It answers them itself with a status line and
//! `content-length: 0`, and closes the connection. Every other refusal of the gateway is a
//! JSON `{"detail": ...}` (the agent server's error shape); this module makes these ones too.
//!
//! hyper writes such a response only between requests: when no response of the service is
//! open and everything written before has been flushed. Each connection shares a
//! [`ConnState`] between its socket wrapper ([`GuardedIo`]) and the requests the service
//! handles: each holds an [`OpenResponse`] from the moment the service is called until hyper
//! drops its response body (or the request is abandoned), so the state knows how many
//! responses are open, and whether the socket has been flushed since the last one closed. A
//! write that starts with an HTTP/1 `4xx` status line at such a point, without the request id
//! every gateway response carries, can only be hyper's own; it is replaced whole, and the
//! refusal is counted and audited like any other.
//!
//! The cost on the request path is three relaxed atomic operations per request and one
//! boolean test per write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use http::{HeaderValue, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::GatewayError;

/// What one connection's socket, service and response bodies share.
#[derive(Debug)]
pub struct ConnState {
    /// Responses handed to hyper whose bodies hyper has not yet dropped.
    open: AtomicU32,
    /// The socket was flushed while no response was open, and nothing was written since.
    idle: AtomicBool,
    /// An HTTP/2 connection: hyper never writes an HTTP/1 status line on it.
    h2: AtomicBool,
    /// The refusal put in place of hyper's response: status and request id.
    refused: Mutex<Option<(StatusCode, HeaderValue)>>,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            open: AtomicU32::new(0),
            // Nothing written yet: the first request can be refused by hyper too.
            idle: AtomicBool::new(true),
            h2: AtomicBool::new(false),
            refused: Mutex::new(None),
        }
    }
}

impl ConnState {
    /// A new connection's state.
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState::default())
    }

    /// The service was called: a response of the gateway's is coming. It is open until the
    /// returned guard is dropped (move it into the response body with
    /// [`Guarded`](crate::body::guarded::Guarded)).
    pub fn request_started(self: &Arc<Self>, version: Version) -> OpenResponse {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        OpenResponse(self.clone())
    }

    /// The refusal that replaced hyper's automatic response, if one did (taken once).
    pub fn take_refusal(&self) -> Option<(StatusCode, HeaderValue)> {
        self.refused.lock().ok().and_then(|mut r| r.take())
    }

    /// The status of hyper's automatic response if `first` (the start of a write) is one.
    fn automatic_status(&self, first: &[u8]) -> Option<StatusCode> {
        if !self.idle.load(Ordering::Relaxed)
            || self.open.load(Ordering::Relaxed) != 0
            || self.h2.load(Ordering::Relaxed)
        {
            return None;
        }
        let rest = first
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| first.strip_prefix(b"HTTP/1.0 "))?;
        let code = rest.get(..3)?;
        if code.first() != Some(&b'4') {
            return None;
        }
        // Every response of the gateway's carries a request id; hyper's own carry none.
        let head_end = first.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = first.get(..head_end)?;
        if head
            .windows(14)
            .any(|w| w.eq_ignore_ascii_case(b"\r\nx-request-id"))
        {
            return None;
        }
        StatusCode::from_bytes(code).ok()
    }
}

/// The refusal written in place of hyper's automatic response.
fn refusal(status: StatusCode, max_head_bytes: usize, request_id: &HeaderValue) -> Vec<u8> {
    let detail = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            format!(
                "Request header fields too large: the request head exceeds {max_head_bytes} bytes"
            )
        }
        StatusCode::URI_TOO_LONG => "Request URI too long".to_owned(),
        _ => "Malformed HTTP request: invalid request line or header field".to_owned(),
    };
    let body = GatewayError::new(status, detail).json_body();
    let mut out = Vec::with_capacity(200 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        status
            .canonical_reason()
            .unwrap_or("Bad Request")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\nx-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

/// A client socket that puts the gateway's JSON refusal in place of hyper's automatic
/// response (see the module documentation). Everything else passes through unchanged.
#[derive(Debug)]
pub struct GuardedIo<S> {
    inner: S,
    state: Arc<ConnState>,
    max_head_bytes: usize,
    /// The replacement being written, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> GuardedIo<S> {
    /// Wrap a client socket; `max_head_bytes` is the request head limit (for the 431 message).
    pub fn new(inner: S, state: Arc<ConnState>, max_head_bytes: usize) -> GuardedIo<S> {
        GuardedIo {
            inner,
            state,
            max_head_bytes,
            replacement: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> GuardedIo<S> {
    /// Replace hyper's automatic response if `first` starts one; true if it did.
    fn intercept(&mut self, first: &[u8]) -> bool {
        if self.replacement.is_some() {
            return true;
        }
        let Some(status) = self.state.automatic_status(first) else {
            self.state.idle.store(false, Ordering::Relaxed);
            return false;
        };
        let id = crate::gateway::new_request_id();
        self.replacement = Some((refusal(status, self.max_head_bytes, &id), 0));
        if let Ok(mut r) = self.state.refused.lock() {
            *r = Some((status, id));
        }
        true
    }

    /// Write out what is left of the replacement.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.replacement {
            let Some(rest) = bytes.get(*done..).filter(|r| !r.is_empty()) else {
                return Poll::Ready(Ok(()));
            };
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.intercept(buf) {
            // hyper's bytes are taken whole; the replacement goes out in their place (the
            // rest of it on flush or shutdown if the socket is full now).
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if this.intercept(first) {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.state.open.load(Ordering::Relaxed) == 0 {
            this.state.idle.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// One open response of a connection: from the service call until dropped, whether with
/// the response body hyper is done with or with a request future that was abandoned.
#[derive(Debug)]
pub struct OpenResponse(Arc<ConnState>);

impl Drop for OpenResponse {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 12:00:00 GMT\r\n\r\n";

    #[test]
    fn recognizes_hyper_automatic_responses_only_between_responses() {
        let s = ConnState::new();
        assert_eq!(s.automatic_status(HYPER_400), Some(StatusCode::BAD_REQUEST));
        // A response of the gateway's is open.
        let open = s.request_started(Version::HTTP_11);
        assert_eq!(s.automatic_status(HYPER_400), None);
        drop(open);
        // Closed but not yet flushed.
        assert_eq!(s.automatic_status(HYPER_400), None);
        s.idle.store(true, Ordering::Relaxed);
        assert_eq!(s.automatic_status(HYPER_400), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn gateway_responses_and_other_bytes_are_never_taken_for_hyper_s() {
        let s = ConnState::new();
        for bytes in [
            &b"HTTP/1.1 403 Forbidden\r\nx-request-id: 1\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 403 Forbidden\r\nX-Request-Id: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"HTTP/2.0 400 Bad Request\r\n\r\n",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
            b"data: HTTP/1.1 400 Bad Request\r\n\r\n",
        ] {
            assert_eq!(s.automatic_status(bytes), None, "{bytes:?}");
        }
        drop(s.request_started(Version::HTTP_2));
        s.idle.store(true, Ordering::Relaxed);
        assert_eq!(s.automatic_status(HYPER_400), None, "HTTP/2 connection");
    }

    #[test]
    fn refusal_is_a_json_error_with_a_request_id() {
        let id = HeaderValue::from_static("abc");
        let out = String::from_utf8(refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            65536,
            &id,
        ))
        .unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert!(head.ends_with("\r\nx-request-id: abc"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["detail"],
            "Request header fields too large: the request head exceeds 65536 bytes"
        );
    }
}
