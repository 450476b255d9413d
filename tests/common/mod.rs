//! Shared fixtures for the gateway integration tests: a scriptable mock agent server, an
//! in-process gateway, and HTTP/1.1, raw-TCP and h2c clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod keys;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use graphguard::gateway::server::{self, ServerConfig};
use graphguard::gateway::upstream::{Upstream, UpstreamConfig};
use graphguard::gateway::{Gateway, ProxyConfig};
use graphguard::ops::metrics::Metrics;
use graphguard::policy::Policy;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// `Authorization` values of the demo keys (policies/demo-keys.txt).
pub const ALICE: &str = "Bearer alice-demo-key";
/// Bob's key.
pub const BOB: &str = "Bearer bob-demo-key";
/// Admin's key (permission `assistants:create`, role `admin`).
pub const ADMIN: &str = "Bearer admin-demo-key";

/// The id of the graph `agent`'s system assistant: `uuid5(6ba7b821-..., "agent")`.
pub const SYSTEM_AGENT: &str = "fe096781-5601-53d2-b2f6-0d3403f7e9ca";

/// Upper bound on any single client exchange, so a broken gateway fails a test instead of
/// hanging the suite.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The example policy directory `policies/<name>`.
pub fn policy_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name)
}

/// A fresh thread id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The JSON the agent server returns for a thread.
pub fn thread_json(id: &str, owner: &str) -> Value {
    json!({
        "thread_id": id,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00",
        "metadata": {"owner": owner},
        "status": "idle",
        "values": {},
    })
}

// ---------------------------------------------------------------------------------------------
// Mock upstream
// ---------------------------------------------------------------------------------------------

/// One request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query, as sent.
    pub uri: String,
    /// Headers, as sent.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Seen {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
    /// The query, if any.
    pub fn query(&self) -> Option<&str> {
        self.uri.split_once('?').map(|(_, q)| q)
    }
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
    }
    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
            .collect()
    }
    /// Whether this is a gateway lookup: a by-id `GET` the gateway made itself (forwarded
    /// requests always carry `X-Forwarded-For`).
    pub fn is_lookup(&self) -> bool {
        self.method == Method::GET
            && !self.headers.contains_key("x-forwarded-for")
            && is_by_id_path(self.path())
    }
}

fn is_by_id_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    matches!(
        segs.as_slice(),
        ["threads", _] | ["assistants", _] | ["runs", "crons", _]
    )
}

/// A scripted answer of the mock upstream.
pub enum Reply {
    /// 200 JSON `{"method", "path", "query", "body"}` describing the request (the default).
    Echo,
    /// This status and JSON body.
    Json(StatusCode, Value),
    /// This status, headers and body, verbatim.
    Raw {
        /// Status.
        status: StatusCode,
        /// Headers (added with `append`, so duplicates are possible).
        headers: Vec<(&'static str, String)>,
        /// Body.
        body: Bytes,
    },
    /// 200 `text/event-stream` whose frames are whatever the test sends on the channel; the
    /// stream ends when the sender is dropped. Serves one request.
    Sse(Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>),
    /// A search endpoint over these items, like the in-memory agent server: keeps the items
    /// whose `metadata` contains the body's `metadata` (top-level equality), then applies the
    /// body's `limit` (default 10) and `offset` (default 0); answers a JSON array.
    Search(Vec<Value>),
    /// Never answer (stall before the response headers).
    Stall,
    /// Send the headers (with a `Content-Length` of `declared`) and `first`, then abort the
    /// connection mid-body.
    ResetMidBody {
        /// Declared length.
        declared: usize,
        /// Bytes sent before the abort.
        first: Bytes,
    },
}

struct RouteRule {
    method: Method,
    path: String,
    reply: Arc<Reply>,
}

#[derive(Default)]
struct MockState {
    seen: Mutex<Vec<Seen>>,
    threads: Mutex<HashMap<String, Value>>,
    rules: Mutex<Vec<RouteRule>>,
    lookup_delay: Mutex<Duration>,
    /// Raw bytes answered on every connection instead of HTTP (protocol garbage).
    garbage: Mutex<Option<Bytes>>,
    seen_tx: Mutex<Option<watch::Sender<usize>>>,
}

/// A mock agent server on 127.0.0.1:0, running on the test's runtime.
pub struct MockUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<MockState>,
    seen_rx: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type MockBody = BoxBody<Bytes, std::io::Error>;

fn mock_full(b: impl Into<Bytes>) -> MockBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A body fed from a channel; an `Err` item aborts it.
pub struct ChanBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

impl MockUpstream {
    /// Start the mock.
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(MockState::default());
        let (tx, seen_rx) = watch::channel(0usize);
        *state.seen_tx.lock().unwrap() = Some(tx);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let garbage = st.garbage.lock().unwrap().clone();
                    if let Some(g) = garbage {
                        answer_garbage(stream, &st, g).await;
                        return;
                    }
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(mock_handle(st, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        MockUpstream {
            addr,
            state,
            seen_rx,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Store a thread (served by `GET /threads/{id}`).
    pub fn put_thread(&self, id: &str, v: Value) {
        self.state.threads.lock().unwrap().insert(id.to_string(), v);
    }

    /// Remove a thread.
    pub fn remove_thread(&self, id: &str) {
        self.state.threads.lock().unwrap().remove(id);
    }

    /// Store a thread owned by `owner` and return its id.
    pub fn add_thread(&self, owner: &str) -> String {
        let id = new_id();
        self.put_thread(&id, thread_json(&id, owner));
        id
    }

    /// Answer `method path` (exact path, query ignored) with `reply`; later rules win.
    pub fn on(&self, method: Method, path: &str, reply: Reply) {
        self.state.rules.lock().unwrap().insert(
            0,
            RouteRule {
                method,
                path: path.to_string(),
                reply: Arc::new(reply),
            },
        );
    }

    /// Answer `method path` with an SSE stream fed by the returned sender.
    pub fn sse(&self, method: Method, path: &str) -> mpsc::UnboundedSender<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.on(method, path, Reply::Sse(Mutex::new(Some(rx))));
        tx
    }

    /// Delay every `GET /threads/{id}` answer.
    pub fn set_lookup_delay(&self, d: Duration) {
        *self.lock_delay() = d;
    }

    fn lock_delay(&self) -> std::sync::MutexGuard<'_, Duration> {
        self.state.lookup_delay.lock().unwrap()
    }

    /// Answer every new connection with these bytes instead of HTTP, then close.
    pub fn set_garbage(&self, bytes: Option<&'static [u8]>) {
        *self.state.garbage.lock().unwrap() = bytes.map(Bytes::from_static);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests that were not gateway lookups.
    pub fn forwarded(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| !s.is_lookup())
            .collect()
    }

    /// The only forwarded request (panics unless there is exactly one).
    pub fn one_forwarded(&self) -> Seen {
        let f = self.forwarded();
        assert_eq!(
            f.len(),
            1,
            "expected exactly one forwarded request, got {:#?}",
            summary(&f)
        );
        f.into_iter().next().unwrap()
    }

    /// Lookups of `GET /threads/{id}`.
    pub fn thread_lookups(&self, id: &str) -> usize {
        let p = format!("/threads/{id}");
        self.requests()
            .iter()
            .filter(|s| s.is_lookup() && s.path() == p)
            .count()
    }

    /// All lookups.
    pub fn lookups(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(Seen::is_lookup)
            .collect()
    }

    /// Forget the recorded requests.
    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Wait until at least `n` requests were recorded (or panic after `within`).
    pub async fn wait_for_requests(&self, n: usize, within: Duration) {
        let mut rx = self.seen_rx.clone();
        let r = tokio::time::timeout(within, rx.wait_for(|c| *c >= n)).await;
        assert!(
            r.is_ok(),
            "upstream saw {} requests, expected {n}",
            self.requests().len()
        );
    }

    /// Assert the upstream saw nothing but lookups.
    pub fn assert_nothing_forwarded(&self) {
        let f = self.forwarded();
        assert!(
            f.is_empty(),
            "expected nothing forwarded, upstream saw {:#?}",
            summary(&f)
        );
    }
}

/// `METHOD uri` of each request, for assertion messages.
pub fn summary(s: &[Seen]) -> Vec<String> {
    s.iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect()
}

fn record(st: &MockState, seen: Seen) {
    let n = {
        let mut v = st.seen.lock().unwrap();
        v.push(seen);
        v.len()
    };
    if let Some(tx) = st.seen_tx.lock().unwrap().as_ref() {
        tx.send_replace(n);
    }
}

async fn answer_garbage(mut stream: TcpStream, st: &MockState, g: Bytes) {
    // Read the request head so the peer is not reset before it sent everything, then answer.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first
        .next()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let uri = first.next().unwrap_or("").to_string();
    let mut headers = HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    record(
        st,
        Seen {
            method,
            uri,
            headers,
            body: Bytes::new(),
        },
    );
    let _ = stream.write_all(&g).await;
    let _ = stream.shutdown().await;
}

async fn mock_handle(st: Arc<MockState>, req: Request<Incoming>) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.clone(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    record(&st, seen.clone());
    let path = seen.path().to_string();
    let rule = {
        let rules = st.rules.lock().unwrap();
        rules
            .iter()
            .find(|r| r.method == parts.method && r.path == path)
            .map(|r| r.reply.clone())
    };
    if let Some(reply) = rule {
        return scripted(&reply, &seen).await;
    }
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    if parts.method == Method::GET {
        if let ["threads", id] = segs.as_slice() {
            let delay = *st.lookup_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // Like the agent server (Python's `UUID()`), any spelling of a UUID names the thread.
            let key = uuid::Uuid::try_parse(id)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| id.to_string());
            let t = st.threads.lock().unwrap().get(&key).cloned();
            return match t {
                Some(v) => json_response(StatusCode::OK, &v),
                None => json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not Found"})),
            };
        }
        // The graph `agent`'s system assistant, which the agent server creates at start-up.
        if let ["assistants", id] = segs.as_slice() {
            if *id == SYSTEM_AGENT {
                return json_response(
                    StatusCode::OK,
                    &json!({"assistant_id": id, "graph_id": "agent", "metadata": {"created_by": "system"}}),
                );
            }
        }
    }
    scripted(&Reply::Echo, &seen).await
}

fn json_response(status: StatusCode, v: &Value) -> Response<MockBody> {
    let mut r = Response::new(mock_full(serde_json::to_vec(v).unwrap()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn scripted(reply: &Reply, seen: &Seen) -> Response<MockBody> {
    match reply {
        Reply::Echo => {
            let body: Value = serde_json::from_slice(&seen.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&seen.body).into_owned())
            });
            json_response(
                StatusCode::OK,
                &json!({"method": seen.method.as_str(), "path": seen.path(), "query": seen.query(), "body": body}),
            )
        }
        Reply::Json(status, v) => json_response(*status, v),
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(mock_full(body.clone()));
            *r.status_mut() = *status;
            for (k, v) in headers {
                r.headers_mut().append(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            r
        }
        Reply::Sse(rx) => {
            let Some(mut frames) = rx.lock().unwrap().take() else {
                return json_response(
                    StatusCode::GONE,
                    &json!({"detail": "SSE route already used"}),
                );
            };
            let (tx, body_rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(f) = frames.recv().await {
                    if tx.send(Ok(f)).is_err() {
                        break;
                    }
                }
            });
            let mut r = Response::new(ChanBody { rx: body_rx }.boxed());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            r
        }
        Reply::Search(items) => {
            let b: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
            let want = b
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let limit = b.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
            let offset = b.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
            let page: Vec<Value> = items
                .iter()
                .filter(|i| {
                    want.iter()
                        .all(|(k, v)| i.get("metadata").and_then(|m| m.get(k)) == Some(v))
                })
                .skip(offset)
                .take(limit)
                .cloned()
                .collect();
            json_response(StatusCode::OK, &Value::Array(page))
        }
        Reply::Stall => std::future::pending::<Response<MockBody>>().await,
        Reply::ResetMidBody { declared, first } => {
            let (tx, body_rx) = mpsc::unbounded_channel();
            let first = first.clone();
            tokio::spawn(async move {
                let _ = tx.send(Ok(first));
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock reset",
                )));
            });
            let mut r = Response::new(ChanBody { rx: body_rx }.boxed());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(*declared));
            r
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Local services (JWKS and discovery, an external authenticator)
// ---------------------------------------------------------------------------------------------

/// A local HTTP/1.1 service on 127.0.0.1 (the JWKS server, the authentication service): each
/// request answered by `answer`. Stopping it (or dropping it) stops listening and drops every
/// open connection.
pub struct LocalService {
    /// Where it listens.
    pub addr: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl LocalService {
    /// Start answering.
    pub async fn start<F, Fut>(answer: F) -> LocalService
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        Self::start_with(|_| answer).await
    }

    /// Start answering with what `make` builds from the service's own address (for
    /// documents that name the service, such as an OIDC discovery document).
    pub async fn start_with<M, F, Fut>(make: M) -> LocalService
    where
        M: FnOnce(SocketAddr) -> F,
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = make(addr);
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let ts = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let answer = answer.clone();
                        async move { Ok::<_, Infallible>(answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                ts.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        LocalService { addr, tasks }
    }

    /// Stop listening and drop every open connection.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// In-process gateway
// ---------------------------------------------------------------------------------------------

/// Where the policy comes from.
pub enum PolicySource {
    /// A directory (e.g. [`policy_dir`]).
    Dir(PathBuf),
    /// YAML text written to `policy.yaml` in a temporary directory.
    Yaml(String),
}

/// How to build the gateway.
pub struct GatewayOptions {
    /// The policy.
    pub policy: PolicySource,
    /// Data-plane limits.
    pub proxy: ProxyConfig,
    /// Connection settings.
    pub server: ServerConfig,
    /// Upstream response-header timeout.
    pub response_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Serve on this many threads of their own (`serve_on_threads`, the binary's default);
    /// `None`: `serve` on the test's runtime.
    pub threads: Option<usize>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            policy: PolicySource::Dir(policy_dir("owner")),
            proxy: ProxyConfig::default(),
            server: ServerConfig {
                drain: Duration::from_secs(1),
                ..ServerConfig::default()
            },
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            threads: None,
        }
    }
}

/// A running gateway. Dropping it starts the shutdown.
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared state (policy swaps, counters).
    pub gw: Arc<Gateway>,
    /// Sending `true` stops the listener and drains.
    pub shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestGateway {
    /// Stop and wait for the drain.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Load a policy from a source; the temp dir (if any) must outlive nothing but the load.
pub fn load_policy(src: &PolicySource) -> (Policy, Option<tempfile::TempDir>) {
    match src {
        PolicySource::Dir(d) => (
            Policy::load_dir(d).unwrap_or_else(|e| panic!("policy {}: {e:?}", d.display())),
            None,
        ),
        PolicySource::Yaml(text) => {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("policy.yaml"), text).unwrap();
            let p = Policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("policy yaml: {e:?}"));
            (p, Some(dir))
        }
    }
}

/// The owner policy's authenticators (the demo keys), to prepend to a YAML test policy.
pub fn demo_authenticators() -> String {
    std::fs::read_to_string(policy_dir("owner").join("authenticators.yaml")).unwrap()
}

/// Start a gateway in front of `upstream` (a base URL).
pub async fn start_gateway(upstream: &str, opts: GatewayOptions) -> TestGateway {
    let (policy, dir) = load_policy(&opts.policy);
    let up = Upstream::new(
        UpstreamConfig {
            base: upstream.parse().unwrap(),
            connect_timeout: opts.connect_timeout,
            response_timeout: opts.response_timeout,
            max_lookup_bytes: 1024 * 1024,
        },
        policy.lookup_capacity,
        policy.lookup_ttl,
    )
    .unwrap();
    let gw = Arc::new(Gateway::new(
        policy,
        Arc::new(up),
        opts.proxy,
        Arc::new(Metrics::new()),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server::local_addr(&listener).unwrap();
    let (tx, rx) = watch::channel(false);
    let task = match opts.threads {
        None => tokio::spawn(server::serve(listener, gw.clone(), opts.server, rx)),
        Some(n) => {
            let gw = gw.clone();
            tokio::spawn(async move {
                server::serve_on_threads(listener, n, gw, opts.server, rx)
                    .await
                    .expect("serving threads");
            })
        }
    };
    TestGateway {
        addr,
        gw,
        shutdown: tx,
        task: Some(task),
        _dir: dir,
    }
}

/// A mock upstream and the owner-policy gateway in front of it.
pub async fn owner_setup() -> (MockUpstream, TestGateway) {
    let up = MockUpstream::start().await;
    let gw = start_gateway(&up.url(), GatewayOptions::default()).await;
    (up, gw)
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A fully read response.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {} {:?}",
                self.status,
                self.text()
            )
        })
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
    }
    /// The `detail` of a JSON error body.
    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail in {}", self.text()))
            .to_string()
    }
    /// Assert the status, showing the body on failure.
    #[track_caller]
    pub fn assert_status(&self, s: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            s,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }
}

/// A request to the gateway.
pub struct Req {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

/// Start building a request.
pub fn req(method: Method, path: impl Into<String>) -> Req {
    Req {
        method,
        path: path.into(),
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

impl Req {
    /// `Authorization: <value>`.
    pub fn auth(self, value: &str) -> Self {
        self.header("authorization", value)
    }
    /// Add a header (appended: call twice for a duplicate).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        ));
        self
    }
    /// A JSON body.
    pub fn json(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
    /// A raw body.
    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = b.into();
        self
    }

    fn build(&self, authority: SocketAddr, absolute: bool) -> Request<Full<Bytes>> {
        let uri = if absolute {
            format!("http://{authority}{}", self.path)
        } else {
            self.path.clone()
        };
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .body(Full::new(self.body.clone()))
            .unwrap();
        for (n, v) in &self.headers {
            r.headers_mut().append(n.clone(), v.clone());
        }
        r
    }

    /// Send over HTTP/1.1 and read the whole response.
    pub async fn send(&self, gw: &TestGateway) -> Resp {
        let resp = self.send_streaming(gw).await;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(CLIENT_TIMEOUT, body.collect())
            .await
            .expect("response body not received in time")
            .expect("response body failed")
            .to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Send over HTTP/1.1 and return as soon as the headers arrive.
    pub async fn send_streaming(&self, gw: &TestGateway) -> Response<Incoming> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        tokio::time::timeout(CLIENT_TIMEOUT, client.request(self.build(gw.addr, true)))
            .await
            .expect("response headers not received in time")
            .expect("request failed")
    }

    /// Send over an h2c (prior knowledge) connection.
    pub async fn send_h2(&self, conn: &mut H2Conn) -> Resp {
        conn.send(self.build(conn.addr, true)).await
    }
}

/// An HTTP/2 prior-knowledge connection to the gateway.
pub struct H2Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    /// Connect and handshake.
    pub async fn connect(gw: &TestGateway) -> H2Conn {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn {
            addr: gw.addr,
            sender,
        }
    }

    async fn send(&mut self, r: Request<Full<Bytes>>) -> Resp {
        let fut = async {
            self.sender.ready().await.unwrap();
            let resp = self.sender.send_request(r).await.unwrap();
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(CLIENT_TIMEOUT, fut)
            .await
            .expect("h2 exchange timed out")
    }
}

/// A raw TCP connection for byte-level HTTP/1.1.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response parsed from raw bytes (body not de-chunked).
#[derive(Debug)]
pub struct RawResp {
    /// Status code.
    pub status: u16,
    /// The head, lower-cased header names.
    pub headers: Vec<(String, String)>,
    /// The raw body bytes as text.
    pub body: String,
}

impl RawResp {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RawConn {
    /// Connect.
    pub async fn connect(gw: &TestGateway) -> RawConn {
        RawConn {
            stream: TcpStream::connect(gw.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }
    /// Write bytes (errors ignored: the peer may have answered and closed already).
    pub async fn write(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b).await;
    }
    /// Read until `pat` is in the buffer; return everything up to and including it.
    pub async fn read_until(&mut self, pat: &[u8]) -> String {
        let fut = async {
            loop {
                if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                    let out: Vec<u8> = self.buf.drain(..i + pat.len()).collect();
                    return String::from_utf8_lossy(&out).into_owned();
                }
                let mut chunk = [0u8; 8192];
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    panic!(
                        "connection closed before {:?}; got {:?}",
                        String::from_utf8_lossy(pat),
                        String::from_utf8_lossy(&self.buf)
                    );
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(CLIENT_TIMEOUT, fut)
            .await
            .expect("raw read timed out")
    }
    /// Read one response head and its body (by Content-Length, chunked terminator, or EOF).
    pub async fn read_response(&mut self) -> RawResp {
        let head = self.read_until(b"\r\n\r\n").await;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if status == 100 || status == 204 || status == 304 {
            String::new()
        } else if let Some(cl) = get("content-length") {
            let n: usize = cl.parse().unwrap();
            self.read_exact_buf(n).await
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            self.read_until(b"0\r\n\r\n").await
        } else {
            self.read_to_end().await
        };
        RawResp {
            status,
            headers,
            body,
        }
    }
    async fn read_exact_buf(&mut self, n: usize) -> String {
        let fut = async {
            while self.buf.len() < n {
                let mut chunk = [0u8; 8192];
                let r = self.stream.read(&mut chunk).await.unwrap_or(0);
                if r == 0 {
                    break;
                }
                self.buf.extend_from_slice(&chunk[..r]);
            }
            let take = n.min(self.buf.len());
            let out: Vec<u8> = self.buf.drain(..take).collect();
            String::from_utf8_lossy(&out).into_owned()
        };
        tokio::time::timeout(CLIENT_TIMEOUT, fut)
            .await
            .expect("raw body read timed out")
    }
    /// Read until the peer closes (a reset counts as the end).
    pub async fn read_to_end(&mut self) -> String {
        let fut = async {
            loop {
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
            let out = std::mem::take(&mut self.buf);
            String::from_utf8_lossy(&out).into_owned()
        };
        tokio::time::timeout(CLIENT_TIMEOUT, fut)
            .await
            .expect("raw read to EOF timed out")
    }
}

/// Send raw request bytes on a fresh connection and read one response.
pub async fn raw_exchange(gw: &TestGateway, request: &[u8]) -> RawResp {
    let mut c = RawConn::connect(gw).await;
    c.write(request).await;
    c.read_response().await
}

/// An address nothing listens on.
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Parse a JSON object keeping every key in order, duplicates included.
pub fn object_keys(raw: &[u8]) -> Vec<(String, Value)> {
    struct Keys(Vec<(String, Value)>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, Value>()? {
                        out.push((k, v));
                    }
                    Ok(Keys(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(raw)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {}", String::from_utf8_lossy(raw)))
        .0
}

// ---------------------------------------------------------------------------------------------
// Hardening helpers (tests/hardening_*.rs)
// ---------------------------------------------------------------------------------------------

/// Assert a raw response is a JSON `{"detail": ...}` error with this status; return the detail.
#[track_caller]
pub fn raw_json_error(r: &RawResp, status: u16) -> String {
    assert_eq!(r.status, status, "unexpected status; body: {:?}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "refusal is not JSON: {r:?}"
    );
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("refusal body is not JSON ({e}): {:?}", r.body));
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {v}"))
        .to_string()
}

/// Assert a parsed response is a JSON `{"detail": ...}` error with this status; return the detail.
#[track_caller]
pub fn json_error(r: &Resp, status: u16) -> String {
    r.assert_status(status);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json"),
        "refusal is not JSON: {} {}",
        r.status,
        r.text()
    );
    r.detail()
}

/// One raw HTTP/1.1 request with `Connection: close` and the given extra header lines
/// (each ending in `\r\n`).
pub fn raw_request(method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: gw.test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Send raw bytes and read until the peer closes; `None` if the gateway closed without
/// answering (or reset), else the status line's code and the whole text.
pub async fn raw_answer(gw: &TestGateway, request: &[u8]) -> (Option<u16>, String) {
    let mut c = RawConn::connect(gw).await;
    c.write(request).await;
    let all = c.read_to_end().await;
    let status = all
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    (status, all)
}

/// The gateway with the owner policy and these proxy limits.
pub async fn gateway_with(up: &MockUpstream, proxy: ProxyConfig) -> TestGateway {
    start_gateway(
        &up.url(),
        GatewayOptions {
            proxy,
            ..GatewayOptions::default()
        },
    )
    .await
}

/// The gateway with a YAML policy (the demo authenticators are prepended).
pub async fn gateway_with_yaml(up: &MockUpstream, handlers_yaml: &str) -> TestGateway {
    start_gateway(
        &up.url(),
        GatewayOptions {
            policy: PolicySource::Yaml(format!("{}\n{handlers_yaml}", demo_authenticators())),
            ..GatewayOptions::default()
        },
    )
    .await
}
