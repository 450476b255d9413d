//! A fast stand-in for the LangGraph agent server, used by `scripts/bench-load`, plus the two
//! small load-side clients the harness needs (SSE time to first event, idle keep-alive
//! connections).
//!
//! ```text
//! fake_upstream serve 127.0.0.1:0
//!     answers like the agent server and prints `listening 127.0.0.1:PORT` once bound:
//!       GET  /ok                         {"ok":true}
//!       GET  /threads/{id}               a thread, metadata {"owner": $FAKE_OWNER (alice)}
//!       GET  /assistants/{id}            an assistant of graph "agent", same metadata
//!       POST /threads                    a created thread (the body is read and counted)
//!       POST /threads/search             a JSON list of 10 threads (~3 KB)
//!       POST /threads/{id}/runs/stream   SSE: `metadata` at once, `values` after
//!       POST /runs/stream                $FAKE_SSE_GAP_MS (5) ms, then the end of the stream
//!     With `x-bench-echo: 1` a POST answers its own request body verbatim (the harness's
//!     correctness checks read the stamped metadata and the injected filter from it), and
//!     every response carries `x-bench-seen-user` (the x-graphguard-user-id it received).
//! fake_upstream sse-probe URL N [HEADER:VALUE]...
//!     N POSTs of a run body on one keep-alive connection (after 20 unmeasured); prints JSON:
//!     time from sending the request to the first complete SSE event, in microseconds.
//! fake_upstream proxy LISTEN UPSTREAM_HOST:PORT
//!     a minimal hyper reverse proxy (the floor for any hyper-based proxy): every request is
//!     forwarded unchanged, bodies streamed both ways, on pooled keep-alive connections; prints
//!     `listening ADDR`.
//! fake_upstream hold-conns HOST:PORT N PATH [HEADER:VALUE]...
//!     opens N connections, sends one keep-alive GET PATH on each and reads the answer, prints
//!     `ready N`, then holds them open until standard input closes (at most 120 s).
//! ```

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => die(&format!("runtime: {e}")),
    };
    let r = match args.first().map(String::as_str) {
        Some("serve") => rt.block_on(serve(args.get(1).map_or("127.0.0.1:0", |s| s.as_str()))),
        Some("sse-probe") => rt.block_on(sse_probe(&args[1..])),
        Some("proxy") => rt.block_on(proxy(&args[1..])),
        Some("hold-conns") => hold_conns(&rt, &args[1..]),
        _ => Err("usage: fake_upstream serve ADDR | proxy ADDR UPSTREAM | sse-probe URL N [H:V].. | hold-conns HOST:PORT N PATH [H:V]..".into()),
    };
    if let Err(e) = r {
        die(&e.to_string());
    }
}

fn die(msg: &str) -> ! {
    eprintln!("fake_upstream: {msg}");
    std::process::exit(2)
}

fn workers() -> usize {
    std::env::var("FAKE_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(2)
        .max(1)
}

// ------------------------------------------------------------------------------------------
// The server
// ------------------------------------------------------------------------------------------

struct State {
    owner: String,
    sse_gap: Duration,
    search_page: Bytes,
    created: AtomicU64,
}

type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn thread_json(id: &str, owner: &str) -> String {
    format!(
        "{{\"thread_id\":\"{id}\",\"created_at\":\"2025-01-01T00:00:00+00:00\",\
         \"updated_at\":\"2025-01-01T00:00:00+00:00\",\"metadata\":{{\"owner\":\"{owner}\",\
         \"graph_id\":\"agent\"}},\"status\":\"idle\",\"config\":{{}},\"values\":null,\
         \"interrupts\":{{}}}}"
    )
}

fn uuid_of(n: u64) -> String {
    uuid::Uuid::from_u128(0x6f1d_1a52_3d6a_4a4e_9a57_0000_0000_0000 | u128::from(n)).to_string()
}

async fn serve(addr: &str) -> Result<(), Error> {
    let owner = std::env::var("FAKE_OWNER").unwrap_or_else(|_| "alice".to_string());
    let gap_ms = std::env::var("FAKE_SSE_GAP_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5u64);
    let page: Vec<String> = (0..10).map(|i| thread_json(&uuid_of(i), &owner)).collect();
    let state = Arc::new(State {
        search_page: Bytes::from(format!("[{}]", page.join(","))),
        owner,
        sse_gap: Duration::from_millis(gap_ms),
        created: AtomicU64::new(1_000_000),
    });
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).boxed_unsync()
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    // Read (and count) the whole request body, as the agent server would.
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return json(StatusCode::BAD_REQUEST, "{\"detail\":\"bad body\"}"),
    };
    let echo = parts.headers.contains_key("x-bench-echo");
    let seen_user = parts.headers.get("x-graphguard-user-id").cloned();
    let path = parts.uri.path();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut resp = match (&parts.method, segs.as_slice()) {
        (&Method::GET, ["ok"]) => json(StatusCode::OK, "{\"ok\":true}"),
        (&Method::GET, ["threads", id]) => json(StatusCode::OK, thread_json(id, &state.owner)),
        (&Method::GET, ["assistants", id]) => json(
            StatusCode::OK,
            format!(
                "{{\"assistant_id\":\"{id}\",\"graph_id\":\"agent\",\"name\":\"a\",\
                 \"metadata\":{{\"owner\":\"{}\"}},\"config\":{{}},\"version\":1}}",
                state.owner
            ),
        ),
        (&Method::POST, _) if echo => json(StatusCode::OK, body),
        (&Method::POST, ["threads"]) => {
            let n = state.created.fetch_add(1, Ordering::Relaxed);
            json(
                StatusCode::OK,
                format!(
                    "{{\"thread_id\":\"{}\",\"created_at\":\"2025-01-01T00:00:00+00:00\",\
                     \"metadata\":{{\"owner\":\"{}\"}},\"status\":\"idle\",\"bytes_received\":{}}}",
                    uuid_of(n),
                    state.owner,
                    body.len()
                ),
            )
        }
        (&Method::POST, ["threads", "search"]) => json(StatusCode::OK, state.search_page.clone()),
        (&Method::POST, ["threads", _, "runs", "stream"]) | (&Method::POST, ["runs", "stream"]) => {
            sse(state)
        }
        _ => json(StatusCode::NOT_FOUND, "{\"detail\":\"Not Found\"}"),
    };
    if let Some(u) = seen_user {
        resp.headers_mut().insert("x-bench-seen-user", u);
    }
    resp
}

/// A response body fed by a channel: each message is one frame, sent as soon as it arrives.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

fn sse(state: &State) -> Response<RespBody> {
    let (tx, rx) = mpsc::channel(4);
    let gap = state.sse_gap;
    let run = uuid_of(state.created.fetch_add(1, Ordering::Relaxed));
    tokio::spawn(async move {
        let first = format!("event: metadata\ndata: {{\"run_id\":\"{run}\",\"attempt\":1}}\n\n");
        if tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        tokio::time::sleep(gap).await;
        let values = "event: values\ndata: {\"messages\":[{\"role\":\"assistant\",\"content\":\"echo: hi\"}],\"counter\":1}\n\n";
        let _ = tx.send(Bytes::from_static(values.as_bytes())).await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

// ------------------------------------------------------------------------------------------
// The minimal hyper proxy
// ------------------------------------------------------------------------------------------

type ProxyClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Incoming,
>;

async fn proxy(args: &[String]) -> Result<(), Error> {
    let listen = args.first().ok_or("proxy: LISTEN missing")?;
    let upstream = Arc::new(args.get(1).ok_or("proxy: UPSTREAM missing")?.clone());
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    let client: ProxyClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(conn);
    let listener = TcpListener::bind(listen.as_str()).await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn forward(
    client: &ProxyClient,
    upstream: &str,
    req: Request<Incoming>,
) -> Response<http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>> {
    let bad_gateway = || {
        let mut r = Response::new(
            Full::new(Bytes::from_static(b"{\"detail\":\"bad gateway\"}"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    };
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match http::Uri::builder()
        .scheme("http")
        .authority(upstream)
        .path_and_query(pq)
        .build()
    {
        Ok(u) => u,
        Err(_) => return bad_gateway(),
    };
    if let Ok(h) = HeaderValue::from_str(upstream) {
        parts.headers.insert(http::header::HOST, h);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.boxed_unsync()),
        Err(_) => bad_gateway(),
    }
}

// ------------------------------------------------------------------------------------------
// Clients
// ------------------------------------------------------------------------------------------

fn parse_headers(args: &[String]) -> Result<Vec<(String, String)>, Error> {
    args.iter()
        .map(|a| {
            a.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("header {a:?} is not NAME:VALUE").into())
        })
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn sse_probe(args: &[String]) -> Result<(), Error> {
    let url: http::Uri = args.first().ok_or("sse-probe: URL missing")?.parse()?;
    let n: usize = args.get(1).ok_or("sse-probe: N missing")?.parse()?;
    let headers = parse_headers(args.get(2..).unwrap_or(&[]))?;
    let authority = url.authority().ok_or("sse-probe: URL has no host")?.clone();
    let stream = TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let body = Bytes::from_static(
        br#"{"assistant_id":"agent","input":{"messages":[{"role":"user","content":"hi"}]},"stream_mode":["values"]}"#,
    );
    let warmup = 20;
    let mut first_us = Vec::with_capacity(n);
    for i in 0..(n + warmup) {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "text/event-stream");
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Full::new(body.clone()))?;
        sender.ready().await?;
        let t0 = Instant::now();
        let mut resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(format!("sse-probe: status {}", resp.status()).into());
        }
        let mut seen = Vec::new();
        let mut first = None;
        while let Some(f) = resp.body_mut().frame().await {
            if let Ok(d) = f?.into_data() {
                seen.extend_from_slice(&d);
                if first.is_none() && seen.windows(2).any(|w| w == b"\n\n") {
                    first = Some(t0.elapsed());
                }
            }
        }
        let first = first.ok_or("sse-probe: the stream ended without an event")?;
        if i >= warmup {
            first_us.push(first.as_micros() as u64);
        }
    }
    first_us.sort_unstable();
    let mean = first_us.iter().sum::<u64>() as f64 / first_us.len().max(1) as f64;
    println!(
        "{{\"n\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"mean_us\":{:.1},\"min_us\":{}}}",
        first_us.len(),
        percentile(&first_us, 50.0),
        percentile(&first_us, 90.0),
        percentile(&first_us, 99.0),
        mean,
        first_us.first().copied().unwrap_or(0)
    );
    Ok(())
}

async fn open_one(addr: SocketAddr, request: Arc<Vec<u8>>) -> Result<TcpStream, Error> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&request).await?;
    // Read one response: the head, then Content-Length bytes of body.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let k = s.read(&mut chunk).await?;
        if k == 0 {
            return Err("connection closed before the response".into());
        }
        buf.extend_from_slice(&chunk[..k]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(
                    format!("unexpected answer: {}", head.lines().next().unwrap_or("")).into(),
                );
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(s);
            }
        }
    }
}

fn hold_conns(rt: &tokio::runtime::Runtime, args: &[String]) -> Result<(), Error> {
    let addr: SocketAddr = args
        .first()
        .ok_or("hold-conns: HOST:PORT missing")?
        .parse()?;
    let n: usize = args.get(1).ok_or("hold-conns: N missing")?.parse()?;
    let path = args.get(2).map_or("/ok", |s| s.as_str());
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in parse_headers(args.get(3..).unwrap_or(&[]))? {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let request = Arc::new(request.into_bytes());
    let streams = rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let batch = left.min(50);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..batch {
                set.spawn(open_one(addr, request.clone()));
            }
            while let Some(r) = set.join_next().await {
                held.push(r.map_err(|e| -> Error { e.to_string().into() })??);
            }
            left -= batch;
        }
        Ok::<_, Error>(held)
    })?;
    println!("ready {}", streams.len());
    std::io::stdout().flush()?;
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(0);
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(streams);
    Ok(())
}
