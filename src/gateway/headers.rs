//! Headers: what is forwarded upstream (hop-by-hop and spoofable headers dropped, forwarding headers set), the Host check, and request ids.

use super::*;

/// Headers that belong to one connection (RFC 9110 7.6.1), never forwarded.
pub(super) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Client headers that claim an identity or a network position; the gateway sets its own.
pub(super) const SPOOFABLE: [HeaderName; 9] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// The peer's address as a header value, formatted without a heap string.
pub(super) fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write as _;
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let n = match write!(cursor, "{ip}") {
        Ok(()) => cursor.position() as usize,
        Err(_) => 0,
    };
    HeaderValue::from_bytes(buf.get(..n).unwrap_or_default())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

pub(super) const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a header belongs to one connection: the standard ones and `Proxy-Connection`.
pub(super) fn is_hop_by_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(n) || *n == PROXY_CONNECTION
}

/// The header names listed in `Connection` (hop-by-hop too); no allocation when none is.
pub(super) fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Remove hop-by-hop headers (a response's): one pass over the names, removals only for
/// those present.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named = connection_named(h);
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_hop_by_hop(n) || named.contains(n))
        .cloned()
        .collect();
    for n in doomed {
        h.remove(n);
    }
}

/// The client's headers that may reach the upstream, filtered in place: no hop-by-hop header
/// (RFC 9110 7.6.1, including those named in `Connection`), no identity or position claim,
/// no configured identity header, nothing under the gateway's own `x-graphguard-` prefix, no
/// name with an underscore, no `Expect`, at most one request id. `Host` and `Content-Length` stay: the caller overwrites
/// or removes them. One pass over the names; a typical request loses nothing here, so the
/// map is neither copied nor rebuilt and nothing is allocated.
pub(super) fn forwardable_headers(policy: &Policy, mut headers: HeaderMap) -> HeaderMap {
    let named = connection_named(&headers);
    let unforwardable = |n: &HeaderName| {
        is_hop_by_hop(n)
            || SPOOFABLE.contains(n)
            || *n == header::EXPECT
            || named.contains(n)
            || policy.user_headers.strip.contains(n)
            || n.as_str().starts_with("x-graphguard-")
            // The server copies headers its `configurable_headers` match into a run's
            // configuration, some after the path's `thread_id`: a header named `thread_id`
            // could name another thread. No standard header has an underscore (nginx drops
            // them by default too).
            || n.as_str().bytes().any(|b| b == b'_')
    };
    if headers.keys().any(unforwardable) {
        // Exactly one request id (the gateway's choice), even if a client named it in
        // `Connection`.
        let request_id = headers.get(X_REQUEST_ID).cloned();
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| unforwardable(n))
            .cloned()
            .collect();
        for n in doomed {
            headers.remove(n);
        }
        if let Some(id) = request_id {
            headers.insert(X_REQUEST_ID, id);
        }
    }
    headers.reserve(8);
    headers
}

/// Whether `v` is `n` in canonical decimal (no sign, no leading zero).
pub(super) fn is_length(v: &HeaderValue, n: usize) -> bool {
    let b = v.as_bytes();
    (b.len() == 1 || b.first() != Some(&b'0'))
        && b.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            == Some(n)
}

/// HTTP/1.1 requires exactly one Host (RFC 9112 3.2); HTTP/2 carries `:authority` instead.
pub(super) fn host_check(req: &Request<Incoming>) -> Result<(), GatewayError> {
    if req.version() != http::Version::HTTP_11 {
        return Ok(());
    }
    match req.headers().get_all(header::HOST).iter().count() {
        1 => Ok(()),
        0 => Err(GatewayError::bad_request("Missing Host header")),
        _ => Err(GatewayError::bad_request("More than one Host header")),
    }
}

/// The request id: the client's `x-request-id` if it is sane, else a new one; written back
/// into the request so the upstream sees the same id.
pub(super) fn request_id(req: &mut Request<Incoming>) -> HeaderValue {
    let sane = |v: &HeaderValue| v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic);
    if let Some(v) = req.headers().get(X_REQUEST_ID).filter(|v| sane(v)) {
        return v.clone();
    }
    let id = new_request_id();
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
}

pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A fresh version-4 UUID from a per-thread generator (splitmix64) seeded once per thread by
/// the operating system: ids must be unique, not secret, and a system call per request for
/// them costs more than the rest of the id.
pub(crate) fn new_request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    fn splitmix(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (hi, lo) = STATE.with(|s| (splitmix(s), splitmix(s)));
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&hi.to_le_bytes());
    random[8..].copy_from_slice(&lo.to_le_bytes());
    let id = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}
