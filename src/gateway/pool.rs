//! Keep-alive HTTP/1.1 connections to the one upstream.
//!
//! graphguard talks to exactly one agent server, so the pool is a stack of idle connections
//! (the most recently used first: its socket is the one most likely still open) rather than a
//! map from host to connections: no key to hash, no per-request task. A connection goes back
//! on the stack when its response body has been read to the end and hyper has it ready for the
//! next request; a body dropped before its end takes the connection with it (HTTP/1 cannot
//! abandon a response and keep the connection).
//!
//! Each serving thread keeps its own stack (see [`set_home`]): a connection's task runs on the
//! runtime that opened it, so a request sent on another thread's connection would wake that
//! thread for every read and write. With one single-threaded runtime per serving thread (the
//! default), a request is read, decided, sent and answered on one thread with no wake-up of
//! another.
//!
//! A request that a reused connection refuses before writing a byte of it (the server closed
//! the idle connection as the request was handed over) is sent again on another connection,
//! as hyper-util's pool does; a fresh connection's failure is final.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Request body type sent upstream.
pub type UpBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// `host:port` to connect to.
    pub authority: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// Idle connections kept at most per serving thread (the oldest is closed beyond).
    pub max_idle: usize,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, timed out).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed while the request was sent or its response head read.
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
}

/// The upstream's connections.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: PoolConfig,
    host: HeaderValue,
    /// One stack per home (see [`set_home`]).
    idle: [Mutex<Vec<Idle>>; HOMES],
    opened: AtomicU64,
    resent: AtomicU64,
}

/// What the pool has done, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Idle connections held now.
    pub idle: usize,
    /// Connections opened since start.
    pub opened: u64,
    /// Requests sent again after a reused connection refused them unsent.
    pub resent: u64,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<UpBody>,
    since: Instant,
}

/// Idle stacks: serving threads beyond this many share stacks (still correct, with some
/// cross-thread wake-ups).
const HOMES: usize = 32;

thread_local! {
    static HOME: Cell<usize> = const { Cell::new(0) };
}

/// Make the calling thread home `n` (serving threads are 1, 2, ...; other threads share 0):
/// the connections it opens go back on its own idle stack and are reused by it alone.
pub fn set_home(n: usize) {
    HOME.with(|h| h.set(n % HOMES));
}

fn home() -> usize {
    HOME.with(Cell::get)
}

/// Sends on reused connections that refused a request unsent before a fresh one is opened.
const MAX_STALE_RETRIES: usize = 3;

impl Pool {
    /// A pool with no connection yet; `host` is the `Host` of requests that carry none.
    pub fn new(cfg: PoolConfig, host: HeaderValue) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                cfg,
                host,
                idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
                opened: AtomicU64::new(0),
                resent: AtomicU64::new(0),
            }),
        }
    }

    /// Idle connections held now, over every home (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        (0..HOMES).map(|h| self.inner.lock(h).len()).sum()
    }

    /// Counts for metrics.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            idle: self.idle_count(),
            opened: self.inner.opened.load(Ordering::Relaxed),
            resent: self.inner.resent.load(Ordering::Relaxed),
        }
    }

    /// Send `req` (its URI in origin form) and return the response once its head arrived;
    /// its body hands the connection back when read to the end.
    pub async fn send(&self, mut req: Request<UpBody>) -> Result<Response<PooledBody>, SendError> {
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, self.inner.host.clone());
        }
        let mut stale = 0;
        let home = home();
        loop {
            let reused = if stale < MAX_STALE_RETRIES {
                self.inner.checkout(home)
            } else {
                None
            };
            let (mut tx, is_reused) = match reused {
                Some(tx) => (tx, true),
                None => (self.inner.connect().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let inner = self.inner.clone();
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        conn: Some((tx, inner, home)),
                        ended: false,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if is_reused => {
                        tracing::debug!(error = %e.error(), "reused upstream connection refused a request unsent; sending it again");
                        stale += 1;
                        self.inner.resent.fetch_add(1, Ordering::Relaxed);
                        req = unsent;
                    }
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }
}

impl Inner {
    fn lock(&self, home: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle[home % HOMES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The home's most recently returned connection that is still open, ready and young
    /// enough.
    fn checkout(&self, home: usize) -> Option<SendRequest<UpBody>> {
        let mut idle = self.lock(home);
        while let Some(c) = idle.pop() {
            if c.tx.is_ready() && c.since.elapsed() < self.cfg.idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    fn put(&self, tx: SendRequest<UpBody>, home: usize) {
        if self.cfg.max_idle == 0 {
            return;
        }
        let mut idle = self.lock(home);
        if idle.len() >= self.cfg.max_idle {
            // The oldest goes: it is the likeliest to have been closed by the server.
            idle.remove(0);
        }
        idle.push(Idle {
            tx,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<UpBody>, SendError> {
        let authority = self.cfg.authority.as_str();
        let stream =
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(authority))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
                Err(_) => return Err(SendError::Connect("timed out".into())),
            };
        let _ = stream.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }
}

/// An upstream response body that returns its connection to the pool once read to the end.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    /// The connection, its pool and its home.
    conn: Option<(SendRequest<UpBody>, Arc<Inner>, usize)>,
    /// The body polled to its end; one whose length ran out shows it by `is_end_stream`.
    ended: bool,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let Some((mut tx, inner, home)) = self.conn.take() else {
            return;
        };
        if !(self.ended || self.body.is_end_stream()) {
            // Abandoned mid-body: hyper closes the connection when its sender goes.
            return;
        }
        if tx.is_ready() {
            inner.put(tx, home);
        } else if !tx.is_closed() {
            // The connection has not yet taken in the end of the response: wait for it off
            // the request path.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if tx.ready().await.is_ok() {
                        inner.put(tx, home);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn body(b: &'static str) -> UpBody {
        Full::new(Bytes::from_static(b.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    fn pool(addr: std::net::SocketAddr) -> Pool {
        Pool::new(
            PoolConfig {
                authority: addr.to_string(),
                connect_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(60),
                max_idle: 4,
            },
            HeaderValue::from_static("upstream.test"),
        )
    }

    fn get(path: &str) -> Request<UpBody> {
        let mut r = Request::new(body(""));
        *r.uri_mut() = path.parse().unwrap_or_default();
        r
    }

    /// One request through the pool, its answer read to the end.
    async fn hello(p: &Pool) {
        let resp = p.send(get("/ok")).await.unwrap();
        let got = resp.into_body().collect().await.unwrap();
        assert_eq!(got.to_bytes(), "hello");
    }

    /// A server that answers each request on a connection with `hello`, counting connections;
    /// with `close_after_first`, it closes every connection after its first answer without
    /// saying so (as a server whose keep-alive timer just fired).
    async fn server(
        close_after_first: bool,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if s.write_all(answer).await.is_err() || close_after_first {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_was_read() {
        let (addr, conns) = server(false).await;
        let p = pool(addr);
        for _ in 0..5 {
            hello(&p).await;
            // The connection may still be finishing the response; it comes back shortly.
            for _ in 0..100 {
                if p.idle_count() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(p.idle_count(), 1);
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            p.stats(),
            PoolStats {
                idle: 1,
                opened: 1,
                resent: 0
            }
        );
    }

    #[tokio::test]
    async fn a_body_dropped_unread_takes_its_connection_with_it() {
        let (addr, conns) = server(false).await;
        let p = pool(addr);
        let resp = p.send(get("/ok")).await.unwrap();
        drop(resp);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(p.idle_count(), 0);
        hello(&p).await;
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_not_reused() {
        let (addr, conns) = server(true).await;
        let p = pool(addr);
        for _ in 0..3 {
            hello(&p).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        match pool(addr).send(get("/ok")).await {
            Err(SendError::Connect(_)) => {}
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    /// Each home reuses only the connections it opened: a request from another home opens
    /// its own, and each goes back on its own stack.
    #[tokio::test]
    async fn homes_keep_their_own_connections() {
        let (addr, conns) = server(false).await;
        let p = pool(addr);
        let count = || conns.load(std::sync::atomic::Ordering::SeqCst);
        set_home(1);
        hello(&p).await;
        hello(&p).await;
        assert_eq!(count(), 1, "home 1 reuses its connection");
        set_home(2);
        hello(&p).await;
        assert_eq!(count(), 2, "home 2 does not take home 1's connection");
        hello(&p).await;
        assert_eq!(count(), 2, "home 2 reuses its own");
        assert_eq!(p.idle_count(), 2);
        set_home(1);
        hello(&p).await;
        assert_eq!(count(), 2, "home 1's connection is still there");
        // Homes past the number of stacks share one; that is still correct.
        set_home(1 + HOMES);
        hello(&p).await;
        assert_eq!(count(), 2);
        set_home(0);
    }
}
