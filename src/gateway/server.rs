//! The listener: accepts connections and serves HTTP/1.1 and h2c (prior knowledge) with hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::guarded::Guarded;
use crate::gateway::malformed_head::{ConnState, GuardedIo};
use crate::gateway::{Gateway, Peer};

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time allowed for a client to send a request's headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer).
    pub max_header_bytes: usize,
    /// How long in-flight requests may finish after shutdown starts.
    pub drain: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            drain: Duration::from_secs(20),
        }
    }
}

/// Serve until `shutdown` turns true, then drain.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    cfg: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    // The HTTP/1.1 head buffer (hyper needs at least 8 KiB); beyond it, 431.
    let max_head = cfg.max_header_bytes.max(8192);
    let builder = Arc::new(connection_builder(&cfg, max_head));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    gw: gw.clone(),
                    builder: builder.clone(),
                    drain: drain_rx.clone(),
                    first_byte: cfg.header_read_timeout,
                    max_head,
                };
                tasks.spawn(conn.serve(stream, peer));
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let _ = tokio::time::timeout(cfg.drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// HTTP/1 with a header timeout and a bounded head; HTTP/2 pinged when idle (a peer that
/// does not answer is closed).
fn connection_builder(cfg: &ServerConfig, max_head: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(max_head)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(cfg.header_read_timeout))
        .keep_alive_timeout(cfg.header_read_timeout)
        .max_header_list_size(cfg.max_header_bytes as u32);
    builder
}

/// What serving one accepted connection needs.
struct Connection {
    gw: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: watch::Receiver<bool>,
    first_byte: Duration,
    max_head: usize,
}

impl Connection {
    /// Serve the connection's requests until it ends or the server drains; account for a
    /// request hyper refused before the gateway saw it.
    async fn serve(mut self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        // A connection that never sends a byte is closed after the header timeout
        // (hyper's own timer starts with the first byte).
        let mut probe = [0u8; 1];
        if !matches!(tokio::time::timeout(self.first_byte, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
        {
            return;
        }
        let gw = self.gw.clone();
        gw.metrics.open_connections.inc();
        // hyper's own refusals of malformed HTTP/1 requests become JSON errors.
        let state = ConnState::new();
        let io = GuardedIo::new(stream, state.clone(), self.max_head);
        let svc_state = state.clone();
        let client = Peer::new(peer);
        let handler = gw.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let gw = handler.clone();
            let client = client.clone();
            let open = svc_state.request_started(req.version());
            async move {
                let resp = gw.handle(req, client).await;
                Ok::<_, std::convert::Infallible>(resp.map(|b| Guarded::new(b, open)))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, %peer, "connection ended"); } }
            _ = self.drain.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        if let Some((status, id)) = state.take_refusal() {
            gw.record_unparsed(status, &id);
        }
        gw.metrics.open_connections.dec();
    }
}

/// Serve on `threads` serving threads, each running [`serve`] on its own single-threaded
/// runtime with a clone of `listener` (thread per core, as nginx's workers or Pingora's
/// no-steal runtime): a connection, its requests and the upstream connections they use stay
/// on the thread that accepted it, so a request costs no wake-up of another thread. Returns
/// when every thread has drained after `shutdown`; an error if one could not start.
pub async fn serve_on_threads(
    listener: TcpListener,
    threads: usize,
    gw: Arc<Gateway>,
    cfg: ServerConfig,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shared = listener.into_std()?;
    let mut finished = Vec::with_capacity(threads.max(1));
    for i in 0..threads.max(1) {
        let own = shared.try_clone()?;
        let (gw, cfg, shutdown) = (gw.clone(), cfg.clone(), shutdown.clone());
        let (done, finish) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        std::thread::Builder::new()
            .name(format!("graphguard-serve-{i}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        crate::gateway::pool::set_home(i + 1);
                        rt.block_on(async move {
                            serve(TcpListener::from_std(own)?, gw, cfg, shutdown).await;
                            Ok(())
                        })
                    });
                let _ = done.send(served);
            })?;
        finished.push(finish);
    }
    drop(shared);
    for f in finished {
        match f.await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::other(
                    "a serving thread stopped unexpectedly",
                ))
            }
        }
    }
    Ok(())
}

/// The address a listener is bound to (tests bind port 0).
pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}
