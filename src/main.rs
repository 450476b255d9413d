//! The `graphguard` command: `serve` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use graphguard::gateway::server::{self, ServerConfig};
use graphguard::gateway::upstream::{Upstream, UpstreamConfig};
use graphguard::gateway::{Gateway, ProxyConfig};
use graphguard::ops::admin;
use graphguard::ops::logwriter::{BufferedLog, FlushGuard, LogSink};
use graphguard::ops::metrics::Metrics;
use graphguard::ops::reload::Reloader;
use graphguard::policy::Policy;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser, Debug)]
#[command(
    name = "graphguard",
    version,
    about = "Authorization gateway for LangGraph agent servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Load and validate a policy directory; print errors as file:line: key: message.
    Check {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Run a policy set's test cases (user, action or request, expectations).
    Test {
        /// The policy directory.
        dir: PathBuf,
        /// The test files (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Explain one decision: handler, roles, access policies, filter, effect.
    Explain {
        /// The policy directory.
        #[arg(long)]
        policies: PathBuf,
        /// The user as JSON: {"identity": ..., "permissions": [...], "roles": [...], "attributes": {...}}.
        #[arg(long)]
        user: String,
        /// The permission, RESOURCE:ACTION (e.g. threads:read).
        #[arg(long)]
        action: String,
        /// The resource's metadata (tags) as JSON, e.g. {"owner": "alice", "Team": "A"}.
        #[arg(long)]
        resource: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GRAPHGUARD_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// The agent server, e.g. http://127.0.0.1:2024.
    #[arg(long, env = "GRAPHGUARD_UPSTREAM")]
    upstream: String,
    /// Policy directory (every *.yaml, *.yml, *.json in it).
    #[arg(long, env = "GRAPHGUARD_POLICIES")]
    policies: PathBuf,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "GRAPHGUARD_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Request-body bytes held at once across all requests; a request whose body does not
    /// fit gets 503 before its body is read.
    #[arg(
        long,
        env = "GRAPHGUARD_MAX_BODY_BYTES_IN_FLIGHT",
        default_value_t = 128 * 1024 * 1024
    )]
    max_body_bytes_in_flight: usize,
    /// Seconds a client has to send request headers.
    #[arg(long, env = "GRAPHGUARD_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds to connect to the upstream.
    #[arg(long, env = "GRAPHGUARD_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    connect_timeout_secs: u64,
    /// Seconds to wait for the upstream's response headers.
    #[arg(long, env = "GRAPHGUARD_RESPONSE_TIMEOUT_SECS", default_value_t = 60)]
    response_timeout_secs: u64,
    /// Seconds a streaming response may stay silent before it is cut.
    #[arg(long, env = "GRAPHGUARD_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    idle_timeout_secs: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, env = "GRAPHGUARD_DRAIN_SECS", default_value_t = 20)]
    drain_secs: u64,
    /// Admin listener (/healthz, /readyz, /metrics, /reload, /policies); "off" disables it.
    #[arg(
        long,
        env = "GRAPHGUARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    admin_listen: String,
    /// Log format: json (default), pretty or compact.
    #[arg(long, env = "GRAPHGUARD_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Fraction of allowed decisions written to the audit log (0.0 to 1.0; denials always are).
    #[arg(long, env = "GRAPHGUARD_AUDIT_SAMPLE_ALLOWED", default_value_t = 1.0)]
    audit_sample_allowed: f64,
    /// Request-serving threads (0: one per CPU). A sidecar in front of a Python agent server
    /// needs far less than a core.
    #[arg(long, env = "GRAPHGUARD_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    /// How requests are scheduled. `per-core`: each serving thread runs its own
    /// single-threaded runtime and keeps a connection, its requests and the upstream
    /// connections they use to itself, so a request wakes no other thread. `work-stealing`:
    /// one multi-threaded runtime whose threads share the work; it spreads a few very busy
    /// HTTP/2 connections over the cores, at a cost in wake-ups per request
    /// (docs/benchmarks.md).
    #[arg(long, env = "GRAPHGUARD_RUNTIME", value_enum, default_value_t = Runtime::PerCore)]
    runtime: Runtime,
    /// Do not send x-graphguard-policy-version on responses.
    #[arg(long, env = "GRAPHGUARD_NO_POLICY_VERSION_HEADER")]
    no_policy_version_header: bool,
    /// A candidate policy directory evaluated beside the enforced one on every request;
    /// disagreements are logged and counted, never enforced.
    #[arg(long, env = "GRAPHGUARD_SHADOW_POLICIES")]
    shadow_policies: Option<PathBuf>,
    /// Seconds between safety-net re-reads of the policy directory (the watcher reacts at once).
    #[arg(long, env = "GRAPHGUARD_RELOAD_POLL_SECS", default_value_t = 10)]
    reload_poll_secs: u64,
}

/// The scheduling of request-serving work (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Runtime {
    /// One single-threaded runtime per serving thread.
    PerCore,
    /// One multi-threaded, work-stealing runtime.
    WorkStealing,
}

/// Print to stdout; a closed pipe (`graphguard explain ... | head`) is not an error.
macro_rules! say {
    () => {{
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), b"\n");
    }};
    ($($arg:tt)*) => {{
        let _ = std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// Logs go to stderr. The server buffers them (see `logwriter`: one `write(2)` per 32 KiB or
/// per 50 ms, never a dropped line, flushed at exit through the returned guard).
fn init_logs(format: &str, buffered: bool) -> Option<FlushGuard<std::io::Stderr>> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRAPHGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let sink = buffered
        .then(|| BufferedLog::start(std::io::stderr(), 32 * 1024, Duration::from_millis(50)));
    let writer = match &sink {
        Some(log) => BoxMakeWriter::new(LogSink(log.clone())),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        "pretty" => b.pretty().init(),
        "compact" => b.compact().init(),
        _ => b.json().flatten_event(true).init(),
    }
    sink.map(FlushGuard)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = match &cli.cmd {
        Cmd::Serve(a) => init_logs(&a.log_format, true),
        Cmd::Check { .. } | Cmd::Explain { .. } | Cmd::Test { .. } => init_logs("compact", false),
    };
    match cli.cmd {
        Cmd::Check { dir } => check(&dir),
        Cmd::Test { dir, files } => policy_test(&dir, &files),
        Cmd::Explain {
            policies,
            user,
            action,
            resource,
        } => explain(&policies, &user, &action, resource.as_deref()),
        Cmd::Serve(args) => match serve_runtime(args.runtime, args.worker_threads) {
            Ok(rt) => {
                // JSON audit lines are written straight into the log sink.
                let sink = logs
                    .as_ref()
                    .map(|g| g.0.clone())
                    .filter(|_| !matches!(args.log_format.as_str(), "pretty" | "compact"));
                rt.block_on(serve(args, sink))
            }
            Err(e) => {
                eprintln!("graphguard: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The main runtime. Work-stealing: it serves requests too, on `worker_threads` threads (0:
/// one per CPU). Per-core: it runs the control tasks (signals, reloads, the admin listener,
/// health checks) on the main thread, and the serving threads have their own runtimes.
fn serve_runtime(
    runtime: Runtime,
    worker_threads: usize,
) -> std::io::Result<tokio::runtime::Runtime> {
    match runtime {
        Runtime::PerCore => tokio::runtime::Builder::new_current_thread(),
        Runtime::WorkStealing => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if worker_threads > 0 {
                rt.worker_threads(worker_threads);
            }
            rt
        }
    }
    .enable_all()
    .build()
}

fn explain(dir: &std::path::Path, user: &str, action: &str, resource: Option<&str>) -> ExitCode {
    let policy = match Policy::load_dir(dir) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let user = match serde_json::from_str::<graphguard::ops::policytest::CaseUser>(user) {
        Ok(u) => u.to_user(),
        Err(e) => {
            eprintln!("graphguard: --user is not a user object: {e}");
            return ExitCode::FAILURE;
        }
    };
    let event = match action.parse::<graphguard::event::Event>() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("graphguard: --action: {e}");
            return ExitCode::FAILURE;
        }
    };
    let md = match resource
        .map(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>)
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("graphguard: --resource must be a JSON object of metadata: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ex = graphguard::ops::explain::explain(&policy, &user, event, md.as_ref());
    for w in &ex.words {
        say!("{w}");
    }
    say!();
    say!("{}", serde_json::to_string_pretty(&ex).unwrap_or_default());
    ExitCode::SUCCESS
}

fn policy_test(dir: &std::path::Path, files: &[PathBuf]) -> ExitCode {
    let policy = match Policy::load_dir(dir) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                say!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let file: graphguard::ops::policytest::TestFile = match std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_yaml_ng::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(file) => file,
            Err(e) => {
                say!("{}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        };
        let (p, failures) = graphguard::ops::policytest::run_file(&policy, &file);
        passed += p;
        failed += failures.len();
        for fl in failures {
            say!("{}: {fl}", f.display());
        }
    }
    say!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(dir: &std::path::Path) -> ExitCode {
    match Policy::load_dir(dir) {
        Ok(p) => {
            for w in &p.warnings {
                say!("warning: {w}");
            }
            say!(
                "ok: policy version {} ({} authenticators)",
                p.version,
                p.authenticators.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                say!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(a: ServeArgs, audit_sink: Option<Arc<BufferedLog<std::io::Stderr>>>) -> ExitCode {
    if a.max_body_bytes_in_flight < a.max_body_bytes {
        eprintln!(
            "graphguard: --max-body-bytes-in-flight ({}) is below --max-body-bytes ({}): a \
             largest body could never be read",
            a.max_body_bytes_in_flight, a.max_body_bytes
        );
        return ExitCode::FAILURE;
    }
    let policy = match Policy::load_dir(&a.policies) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            eprintln!("graphguard: the policy directory does not load; nothing to serve");
            return ExitCode::FAILURE;
        }
    };
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let base = match a.upstream.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("graphguard: invalid --upstream {:?}: {e}", a.upstream);
            return ExitCode::FAILURE;
        }
    };
    let upstream = match Upstream::new(
        UpstreamConfig {
            base,
            connect_timeout: Duration::from_secs(a.connect_timeout_secs),
            response_timeout: Duration::from_secs(a.response_timeout_secs),
            max_lookup_bytes: 16 * 1024 * 1024,
        },
        policy.lookup_capacity,
        policy.lookup_ttl,
    ) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            eprintln!("graphguard: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&a.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("graphguard: cannot listen on {}: {e}", a.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %a.listen, upstream = %a.upstream, policy = %policy.version, "graphguard serving");
    let metrics = Arc::new(Metrics::new());
    let mut gateway = Gateway::new(
        policy,
        upstream,
        ProxyConfig {
            max_body: a.max_body_bytes,
            body_budget: a.max_body_bytes_in_flight,
            idle_timeout: Duration::from_secs(a.idle_timeout_secs),
            policy_version_header: !a.no_policy_version_header,
            audit_sample_allowed: a.audit_sample_allowed,
            ..ProxyConfig::default()
        },
        metrics.clone(),
    );
    if let Some(sink) = audit_sink {
        gateway = gateway.with_audit_sink(sink);
    }
    let gw = Arc::new(gateway);
    if let Some(dir) = &a.shadow_policies {
        match Policy::load_dir(dir) {
            Ok(p) => {
                tracing::info!(shadow = %p.version, "shadow policy loaded");
                gw.shadow.store(Some(Arc::new(p)));
                let r = Arc::new(Reloader::for_shadow(
                    dir.clone(),
                    gw.clone(),
                    metrics.clone(),
                ));
                r.spawn(
                    Duration::from_millis(200),
                    Duration::from_secs(a.reload_poll_secs.max(1)),
                );
            }
            Err(errors) => {
                for e in errors {
                    eprintln!("{e}");
                }
                eprintln!("graphguard: the shadow policy directory does not load");
                return ExitCode::FAILURE;
            }
        }
    }
    let reloader = Arc::new(Reloader::new(a.policies.clone(), gw.clone(), metrics));
    reloader.spawn(
        Duration::from_millis(200),
        Duration::from_secs(a.reload_poll_secs.max(1)),
    );
    admin::spawn_health_checks(gw.clone(), Duration::from_secs(2));
    if a.admin_listen != "off" {
        match tokio::net::TcpListener::bind(&a.admin_listen).await {
            Ok(l) => {
                tracing::info!(admin = %a.admin_listen, "admin listener");
                let adm = Arc::new(admin::Admin {
                    gateway: gw.clone(),
                    reloader: Some(reloader.clone()),
                    upstream_fresh: Duration::from_secs(10),
                });
                tokio::spawn(admin::serve(l, adm));
            }
            Err(e) => {
                eprintln!(
                    "graphguard: cannot listen on admin address {}: {e}",
                    a.admin_listen
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let draining = gw.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        draining
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tx.send(true);
    });
    let cfg = ServerConfig {
        header_read_timeout: Duration::from_secs(a.header_timeout_secs),
        drain: Duration::from_secs(a.drain_secs),
        ..ServerConfig::default()
    };
    match a.runtime {
        Runtime::WorkStealing => server::serve(listener, gw, cfg, rx).await,
        Runtime::PerCore => {
            let threads = match a.worker_threads {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            };
            if let Err(e) = server::serve_on_threads(listener, threads, gw, cfg, rx).await {
                eprintln!("graphguard: cannot serve: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
