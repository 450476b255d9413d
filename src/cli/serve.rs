//! `graphguard serve`: load the policy, start the gateway, the reloaders and the admin
//! listener, serve until a signal, then drain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::decide::Target;
use crate::gateway::server::{self, ServerConfig};
use crate::gateway::upstream::{Upstream, UpstreamConfig};
use crate::gateway::{Gateway, LimitBackend, ProxyConfig};
use crate::limits::bus::{Bus, Invalidation, Subscription};
use crate::limits::local::Local;
use crate::limits::{self, LimitsConfig};
use crate::ops::admin;
use crate::ops::logwriter::{BufferedLog, FlushGuard, LogSink};
use crate::ops::manage::Manager;
use crate::ops::metrics::Metrics;
use crate::ops::reload::{self, Reloader};
use crate::policy::managed::ManagedState;
use crate::policy::Policy;
use crate::store::PolicyStore;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GRAPHGUARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// The agent server, e.g. http://127.0.0.1:2024.
    #[arg(long, env = "GRAPHGUARD_UPSTREAM")]
    pub upstream: String,
    /// Policy directory (every *.yaml, *.yml, *.json in it).
    #[arg(long, env = "GRAPHGUARD_POLICIES")]
    pub policies: PathBuf,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "GRAPHGUARD_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Request-body bytes held at once across all requests; a request whose body does not
    /// fit gets 503 before its body is read.
    #[arg(
        long,
        env = "GRAPHGUARD_MAX_BODY_BYTES_IN_FLIGHT",
        default_value_t = 128 * 1024 * 1024
    )]
    pub max_body_bytes_in_flight: usize,
    /// Seconds a client has to send request headers.
    #[arg(long, env = "GRAPHGUARD_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds to connect to the upstream.
    #[arg(long, env = "GRAPHGUARD_CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the upstream's response headers.
    #[arg(long, env = "GRAPHGUARD_RESPONSE_TIMEOUT_SECS", default_value_t = 60)]
    pub response_timeout_secs: u64,
    /// Seconds a streaming response may stay silent before it is cut.
    #[arg(long, env = "GRAPHGUARD_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, env = "GRAPHGUARD_DRAIN_SECS", default_value_t = 20)]
    pub drain_secs: u64,
    /// Admin listener (/healthz, /readyz, /metrics, /reload, /policies); "off" disables it.
    #[arg(
        long,
        env = "GRAPHGUARD_ADMIN_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub admin_listen: String,
    /// Log format: json (default), pretty or compact.
    #[arg(long, env = "GRAPHGUARD_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// Fraction of allowed decisions written to the audit log (0.0 to 1.0; denials always are).
    #[arg(long, env = "GRAPHGUARD_AUDIT_SAMPLE_ALLOWED", default_value_t = 1.0)]
    pub audit_sample_allowed: f64,
    /// Request-serving threads (0: one per CPU). A sidecar in front of a Python agent server
    /// needs far less than a core.
    #[arg(long, env = "GRAPHGUARD_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// How requests are scheduled. `per-core`: each serving thread runs its own
    /// single-threaded runtime and keeps a connection, its requests and the upstream
    /// connections they use to itself, so a request wakes no other thread. `work-stealing`:
    /// one multi-threaded runtime whose threads share the work; it spreads a few very busy
    /// HTTP/2 connections over the cores, at a cost in wake-ups per request
    /// (docs/benchmarks.md).
    #[arg(long, env = "GRAPHGUARD_RUNTIME", value_enum, default_value_t = Runtime::PerCore)]
    pub runtime: Runtime,
    /// Do not send x-graphguard-policy-version on responses.
    #[arg(long, env = "GRAPHGUARD_NO_POLICY_VERSION_HEADER")]
    pub no_policy_version_header: bool,
    /// A candidate policy directory evaluated beside the enforced one on every request;
    /// disagreements are logged and counted, never enforced.
    #[arg(long, env = "GRAPHGUARD_SHADOW_POLICIES")]
    pub shadow_policies: Option<PathBuf>,
    /// Seconds between safety-net re-reads of the policy directory (the watcher reacts at once).
    #[arg(long, env = "GRAPHGUARD_RELOAD_POLL_SECS", default_value_t = 10)]
    pub reload_poll_secs: u64,
    /// Where roles and access policies managed through the API are kept: a state directory
    /// (one replica) or `postgres://USER:PASSWORD@HOST/DB` (a fleet). With
    /// `settings.management`, it turns the management API on (docs/access-control.md).
    #[arg(long, env = "GRAPHGUARD_POLICY_STORE")]
    pub policy_store: Option<String>,
    /// Where the policy's `limits:` are counted: `local` (the default: in-process, exact for
    /// one replica) or `redis://[USER:PASSWORD@]HOST:PORT[/DB]` (`rediss://` for TLS), shared
    /// by a fleet and exact across it; the same Redis carries the replicas' cache
    /// invalidations (docs/limits.md).
    #[arg(long, env = "GRAPHGUARD_LIMITS_STORE")]
    pub limits_store: Option<String>,
    /// How long a concurrency slot outlives its holder's last renewal (renewed every third of
    /// it): a replica that dies frees its slots within this.
    #[arg(long, env = "GRAPHGUARD_LIMITS_LEASE_SECS", default_value_t = 30)]
    pub limits_lease_secs: u64,
    /// Longest a call to Redis may take before the limits' `on_error` decides.
    #[arg(long, env = "GRAPHGUARD_LIMITS_TIMEOUT_MS", default_value_t = 50)]
    pub limits_timeout_ms: u64,
}

/// The scheduling of request-serving work (`--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// One single-threaded runtime per serving thread.
    PerCore,
    /// One multi-threaded, work-stealing runtime.
    WorkStealing,
}

/// Logs go to stderr. The server buffers them (see `logwriter`: one `write(2)` per 32 KiB or
/// per 50 ms, never a dropped line, flushed at exit through the returned guard).
pub(super) fn init_logs(format: &str, buffered: bool) -> Option<FlushGuard<std::io::Stderr>> {
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

/// The main runtime. Work-stealing: it serves requests too, on `worker_threads` threads (0:
/// one per CPU). Per-core: it runs the control tasks (signals, reloads, the admin listener,
/// health checks) on the main thread, and the serving threads have their own runtimes.
pub(super) fn runtime(
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

/// Why serving could not start: the lines to print on stderr.
struct Fatal(Vec<String>);

impl From<String> for Fatal {
    fn from(line: String) -> Fatal {
        Fatal(vec![line])
    }
}

/// The audit sink: JSON audit lines are written straight into the buffered log.
type AuditSink = Option<Arc<BufferedLog<std::io::Stderr>>>;

/// Serve until a signal; print why if serving could not start.
pub(super) async fn serve(a: ServeArgs, audit_sink: AuditSink) -> std::process::ExitCode {
    match run(a, audit_sink).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Fatal(lines)) => {
            for l in lines {
                eprintln!("{l}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The start-up, step by step, then the serving loop.
async fn run(a: ServeArgs, audit_sink: AuditSink) -> Result<(), Fatal> {
    check_body_limits(&a)?;
    let store = open_store(&a).await?;
    let policy = load_policy(
        &a.policies,
        store.as_ref().map(|(_, n, s)| (*n, s)),
        "graphguard: the policy directory does not load; nothing to serve",
    )?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let upstream = upstream(&a, &policy)?;
    let listener = TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("graphguard: cannot listen on {}: {e}", a.listen))?;
    let version = policy.version.clone();
    let mut metrics = Metrics::new();
    if store.is_some() {
        metrics.register_store();
    }
    let metrics = Arc::new(metrics);
    let limits = open_limits(&a, &upstream)?;
    metrics.limits_backend_up.set(1);
    let gateway = gateway(&a, policy, upstream, metrics.clone(), audit_sink);
    let (gateway, _invalidations) = limits.install(gateway);
    let gw = Arc::new(gateway);
    if let Some(dir) = &a.shadow_policies {
        start_shadow(dir, &gw, &metrics, a.reload_poll_secs)?;
    }
    let mut reloader = Reloader::new(a.policies.clone(), gw.clone(), metrics);
    if let Some((_, revision, state)) = &store {
        reloader = reloader.with_store_state(*revision, state.clone());
    }
    let reloader = Arc::new(reloader);
    let store = store.map(|(s, _, _)| s);
    if let Some(s) = &store {
        start_management(s, &reloader, &gw, &a.policies);
    }
    reloader.spawn(
        Duration::from_millis(200),
        Duration::from_secs(a.reload_poll_secs.max(1)),
    );
    admin::spawn_health_checks(gw.clone(), Duration::from_secs(2));
    if a.admin_listen != "off" {
        start_admin(&a.admin_listen, &gw, &reloader, store).await?;
    }
    // Only once every listener is bound: a clash refuses to start, it is never "serving".
    tracing::info!(listen = %a.listen, upstream = %a.upstream, policy = %version, "graphguard serving");
    let shutdown = drain_on_signal(gw.clone());
    serve_requests(&a, listener, gw, shutdown).await
}

fn check_body_limits(a: &ServeArgs) -> Result<(), Fatal> {
    if a.max_body_bytes_in_flight < a.max_body_bytes {
        return Err(format!(
            "graphguard: --max-body-bytes-in-flight ({}) is below --max-body-bytes ({}): a \
             largest body could never be read",
            a.max_body_bytes_in_flight, a.max_body_bytes
        )
        .into());
    }
    Ok(())
}

/// The policy store `--policy-store` names, with its head's state: a store that cannot be
/// read stops the start (a replica that started without it would enforce less than the fleet
/// does); once running, an unreachable store keeps the last snapshot serving.
async fn open_store(
    a: &ServeArgs,
) -> Result<Option<(Arc<dyn PolicyStore>, u64, ManagedState)>, Fatal> {
    let Some(spec) = &a.policy_store else {
        return Ok(None);
    };
    let store = crate::store::open(spec)
        .await
        .map_err(|e| format!("graphguard: --policy-store: {e}"))?;
    let head = store
        .head()
        .await
        .map_err(|e| format!("graphguard: --policy-store {}: {e}", store.describe()))?;
    let state = ManagedState::from_value(&head.state)
        .map_err(|e| format!("graphguard: --policy-store {}: {e}", store.describe()))?;
    tracing::info!(store = %store.describe(), revision = head.number, "policy store");
    Ok(Some((store, head.number, state)))
}

/// The limiter `--limits-store` names, and with Redis the replicas' invalidation bus, already
/// subscribed (the subscription lives as long as the returned value).
struct LimitsSetup {
    backend: LimitBackend,
    bus: Option<(Arc<Bus>, Subscription)>,
}

impl LimitsSetup {
    /// The gateway counting against the limiter, and the bus subscription to keep.
    fn install(self, gateway: Gateway) -> (Gateway, Option<Subscription>) {
        let gateway = gateway.with_limits(self.backend);
        match self.bus {
            Some((bus, subscription)) => (gateway.with_bus(bus), Some(subscription)),
            None => (gateway, None),
        }
    }
}

fn open_limits(a: &ServeArgs, upstream: &Arc<Upstream>) -> Result<LimitsSetup, Fatal> {
    let cfg = LimitsConfig {
        timeout: Duration::from_millis(a.limits_timeout_ms.max(1)),
        ..LimitsConfig::default()
    };
    let lease_ttl = Duration::from_secs(a.limits_lease_secs.max(1));
    let spec = a
        .limits_store
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(url) = spec.filter(|s| *s != "local") else {
        let local = Arc::new(Local::new(cfg.local_max_keys));
        let sweeper = Arc::downgrade(&local);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(l) = sweeper.upgrade() else { return };
                l.evict_idle();
            }
        });
        let backend = LimitBackend {
            limiter: local,
            lease_ttl,
        };
        return Ok(LimitsSetup { backend, bus: None });
    };
    let limiter = limits::open_with(Some(url), &cfg)
        .map_err(|e| format!("graphguard: --limits-store: {e}"))?;
    let bus =
        Arc::new(Bus::open(url, &cfg).map_err(|e| format!("graphguard: --limits-store: {e}"))?);
    let cache = upstream.clone();
    // Until the bus is listening, another replica's write would go unheard: no cache.
    cache.suspend_cache(true);
    let subscription = bus.subscribe(move |heard| match heard {
        Invalidation::Key(path) => match Target::from_path(path) {
            Some(t) => cache.invalidate(&t),
            None => tracing::debug!(path, "ignoring an invalidation that names no resource"),
        },
        Invalidation::Resync => {
            cache.forget_all();
            cache.suspend_cache(false);
        }
        Invalidation::Down => cache.suspend_cache(true),
    });
    tracing::info!(limits = %limiter.describe(), "limits counted in Redis; lookups invalidated across replicas");
    let backend = LimitBackend { limiter, lease_ttl };
    Ok(LimitsSetup {
        backend,
        bus: Some((bus, subscription)),
    })
}

/// The management API on the gateway's listener, and every replica following the store.
fn start_management(
    store: &Arc<dyn PolicyStore>,
    reloader: &Arc<Reloader>,
    gw: &Arc<Gateway>,
    dir: &Path,
) {
    let manager = Manager::new(store.clone(), reloader.clone(), dir.to_path_buf());
    let _ = gw.management.set(Arc::new(manager));
    reload::follow_store(reloader.clone(), store.clone());
}

/// Load a policy directory (with the store's state); on errors, each error and then `last`.
fn load_policy(
    dir: &Path,
    store: Option<(u64, &ManagedState)>,
    last: &str,
) -> Result<Policy, Fatal> {
    Policy::load_dir_with(dir, store).map_err(|errors| {
        let mut lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        lines.push(last.to_string());
        Fatal(lines)
    })
}

fn upstream(a: &ServeArgs, policy: &Policy) -> Result<Arc<Upstream>, Fatal> {
    let base = a
        .upstream
        .parse()
        .map_err(|e| format!("graphguard: invalid --upstream {:?}: {e}", a.upstream))?;
    let config = UpstreamConfig {
        base,
        connect_timeout: Duration::from_secs(a.connect_timeout_secs),
        response_timeout: Duration::from_secs(a.response_timeout_secs),
        max_lookup_bytes: 16 * 1024 * 1024,
    };
    Upstream::new(config, policy.lookup_capacity, policy.lookup_ttl)
        .map(Arc::new)
        .map_err(|e| format!("graphguard: {e}").into())
}

fn gateway(
    a: &ServeArgs,
    policy: Policy,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
    audit_sink: AuditSink,
) -> Gateway {
    let config = ProxyConfig {
        max_body: a.max_body_bytes,
        body_budget: a.max_body_bytes_in_flight,
        idle_timeout: Duration::from_secs(a.idle_timeout_secs),
        policy_version_header: !a.no_policy_version_header,
        audit_sample_allowed: a.audit_sample_allowed,
        ..ProxyConfig::default()
    };
    let gateway = Gateway::new(policy, upstream, config, metrics);
    match audit_sink {
        Some(sink) => gateway.with_audit_sink(sink),
        None => gateway,
    }
}

/// Load the shadow policy and keep it reloaded.
fn start_shadow(
    dir: &Path,
    gw: &Arc<Gateway>,
    metrics: &Arc<Metrics>,
    poll_secs: u64,
) -> Result<(), Fatal> {
    let p = load_policy(
        dir,
        None,
        "graphguard: the shadow policy directory does not load",
    )?;
    tracing::info!(shadow = %p.version, "shadow policy loaded");
    gw.shadow.store(Some(Arc::new(p)));
    let r = Arc::new(Reloader::for_shadow(
        dir.to_path_buf(),
        gw.clone(),
        metrics.clone(),
    ));
    r.spawn(
        Duration::from_millis(200),
        Duration::from_secs(poll_secs.max(1)),
    );
    Ok(())
}

async fn start_admin(
    listen: &str,
    gw: &Arc<Gateway>,
    reloader: &Arc<Reloader>,
    store: Option<Arc<dyn PolicyStore>>,
) -> Result<(), Fatal> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("graphguard: cannot listen on admin address {listen}: {e}"))?;
    tracing::info!(admin = %listen, "admin listener");
    let adm = Arc::new(admin::Admin {
        gateway: gw.clone(),
        reloader: Some(reloader.clone()),
        upstream_fresh: Duration::from_secs(10),
        store,
    });
    tokio::spawn(admin::serve(l, adm));
    Ok(())
}

/// On SIGTERM or Ctrl-C: stop accepting, mark the gateway draining, and tell the servers.
fn drain_on_signal(gw: Arc<Gateway>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        gw.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tx.send(true);
    });
    rx
}

async fn serve_requests(
    a: &ServeArgs,
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Fatal> {
    let cfg = ServerConfig {
        header_read_timeout: Duration::from_secs(a.header_timeout_secs),
        drain: Duration::from_secs(a.drain_secs),
        ..ServerConfig::default()
    };
    match a.runtime {
        Runtime::WorkStealing => server::serve(listener, gw, cfg, shutdown).await,
        Runtime::PerCore => {
            let threads = match a.worker_threads {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            };
            server::serve_on_threads(listener, threads, gw, cfg, shutdown)
                .await
                .map_err(|e| format!("graphguard: cannot serve: {e}"))?;
        }
    }
    Ok(())
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
