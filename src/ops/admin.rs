//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /reload`, `GET /policies`.
//! Bind it to loopback or a pod-internal port; it is not authenticated.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::unix_now;
use crate::policy::Policy;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::limits::Verdict;
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::ops::reload::{ReloadResult, Reloader};

/// Admin state.
pub struct Admin {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The reloader (None when serving a fixed policy).
    pub reloader: Option<Arc<Reloader>>,
    /// How recent the upstream's last good health check must be for readiness.
    pub upstream_fresh: Duration,
    /// The policy store, when one is configured.
    pub store: Option<Arc<dyn crate::store::PolicyStore>>,
}

/// A time as fractional seconds since the Unix epoch (`null` when unknown).
fn epoch_seconds(t: Option<SystemTime>) -> serde_json::Value {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| json!(d.as_secs_f64()))
        .unwrap_or(serde_json::Value::Null)
}

/// The loaded policy: version, default, authenticators, public paths, each event's handler,
/// warnings.
fn policies(policy: &Policy) -> Response<Full<Bytes>> {
    let handlers: Vec<_> = crate::event::Event::all()
        .map(|e| json!({"event": e.to_string(), "handler": policy.handler_for(e).map(|h| h.key.clone())}))
        .collect();
    let body = json!({
        "version": policy.version,
        "default": format!("{:?}", policy.default).to_lowercase(),
        "authenticators": policy.authenticators.len(),
        "public_paths": policy.public_paths,
        "handlers": handlers,
        "warnings": policy.warnings,
    });
    resp(StatusCode::OK, "application/json", body.to_string())
}

fn resp(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

impl Admin {
    /// Answer one admin request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let policy = self.gateway.policy.load();
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, "/healthz") => {
                resp(StatusCode::OK, "application/json", r#"{"status":"ok"}"#)
            }
            (Method::GET, "/readyz") => self.readyz(&policy),
            (Method::GET, "/metrics") => self.metrics(&policy),
            (Method::POST, "/reload") => self.reload().await,
            (Method::GET, "/policies") => policies(&policy),
            (Method::GET, "/limits/usage") => self.usage(&policy, req.uri().query()).await,
            _ => resp(
                StatusCode::NOT_FOUND,
                "application/json",
                r#"{"detail":"Not Found"}"#,
            ),
        }
    }

    /// Ready when the upstream answered its health check recently and the gateway is not
    /// draining; the policy's version and reload status either way.
    fn readyz(&self, policy: &Policy) -> Response<Full<Bytes>> {
        let ok_at = self.gateway.upstream_ok_at.load(Ordering::Relaxed);
        let upstream_ok =
            ok_at > 0 && unix_now().saturating_sub(ok_at) <= self.upstream_fresh.as_secs();
        let draining = self.gateway.draining.load(Ordering::Relaxed);
        let status = self
            .reloader
            .as_ref()
            .map(|r| r.status())
            .unwrap_or_default();
        let ready = upstream_ok && !draining;
        let mut body = json!({
            "ready": ready,
            "policy": {
                "version": policy.version,
                "loaded_at": epoch_seconds(status.loaded_at),
                "last_reload_error": status.last_error,
            },
            "upstream": { "ok": upstream_ok, "last_ok": ok_at },
            "draining": draining,
        });
        // A store that does not answer does not make the replica unready: it keeps enforcing
        // its last good snapshot; only changes wait.
        if let Some(store) = &self.store {
            let health = store.health();
            body["store"] = json!({
                "backend": store.describe(),
                "healthy": health.is_ok(),
                "error": health.err().map(|e| e.to_string()),
                "revision": policy.managed.revision,
            });
        }
        if !policy.limits.is_empty() {
            body["limits"] = json!({
                "backend": self.gateway.limits.limiter.describe(),
                "count": policy.limits.all().len(),
            });
        }
        let code = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        resp(code, "application/json", body.to_string())
    }

    /// `GET /limits/usage?limit=NAME&value=VALUE`: what is left of one key of a limit (VALUE is
    /// what the key template renders to, e.g. the user's identity), spending nothing.
    async fn usage(&self, policy: &Policy, query: Option<&str>) -> Response<Full<Bytes>> {
        let bad = |m: String| {
            resp(
                StatusCode::BAD_REQUEST,
                "application/json",
                json!({"detail": m}).to_string(),
            )
        };
        let (mut name, mut value) = (None, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "limit" => name = Some(v.into_owned()),
                "value" => value = Some(v.into_owned()),
                other => return bad(format!("unknown parameter {other:?} (limit, value)")),
            }
        }
        let (Some(name), Some(value)) = (name, value) else {
            return bad("give limit=NAME and value=VALUE (what the limit's key renders to)".into());
        };
        let Some(limit) = policy.limits.all().iter().find(|l| *l.name == *name) else {
            let detail = json!({"detail": format!("no limit named {name:?}")}).to_string();
            return resp(StatusCode::NOT_FOUND, "application/json", detail);
        };
        let applied = crate::policy::limits::Applied {
            limit,
            key: format!("{name}:{value}"),
            cost: 1,
        };
        let backend = &self.gateway.limits;
        let check = crate::limits::check_of(&applied, backend.lease_ttl);
        match backend.limiter.usage(&check).await {
            Ok(v) => {
                let (reset, retry_after) = match v {
                    Verdict::Allowed { reset, .. } => (reset, None),
                    Verdict::Limited {
                        reset, retry_after, ..
                    } => (reset, Some(retry_after.as_secs_f64())),
                };
                let body = json!({
                    "limit": name,
                    "key": applied.key,
                    "allows": limit.describe(),
                    "backend": backend.limiter.describe(),
                    "remaining": v.remaining(),
                    "reset_seconds": reset.as_secs_f64(),
                    "retry_after_seconds": retry_after,
                });
                resp(StatusCode::OK, "application/json", body.to_string())
            }
            Err(e) => {
                let detail =
                    json!({"detail": format!("the limiter cannot answer: {e}")}).to_string();
                resp(StatusCode::SERVICE_UNAVAILABLE, "application/json", detail)
            }
        }
    }

    /// The metrics, with the authenticators' and the pool's counters read now.
    fn metrics(&self, policy: &Policy) -> Response<Full<Bytes>> {
        let metrics = &self.gateway.metrics;
        metrics.observe_authenticators(&policy.authenticators);
        metrics.observe_pool(self.gateway.upstream.pool_stats());
        if let Some(store) = &self.store {
            metrics
                .policy_store_up
                .set(i64::from(store.health().is_ok()));
            let revision = i64::try_from(policy.managed.revision).unwrap_or(i64::MAX);
            metrics.policy_store_revision.set(revision);
        }
        resp(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    }

    /// Reload the policy directory now.
    async fn reload(&self) -> Response<Full<Bytes>> {
        let Some(r) = &self.reloader else {
            return resp(
                StatusCode::NOT_FOUND,
                "application/json",
                r#"{"detail":"reload is not enabled"}"#,
            );
        };
        let (code, body) = match r.reload("admin").await {
            ReloadResult::Swapped(v) => {
                (StatusCode::OK, json!({"result": "swapped", "version": v}))
            }
            ReloadResult::Unchanged(v) => {
                (StatusCode::OK, json!({"result": "unchanged", "version": v}))
            }
            ReloadResult::Failed(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"result": "failed", "detail": e, "version": self.gateway.policy.load().version}),
            ),
        };
        resp(code, "application/json", body.to_string())
    }
}

/// Serve the admin listener until the process ends.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, std::convert::Infallible>(admin.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Check the upstream's `/ok` every `every`; record successes for `/readyz`.
pub fn spawn_health_checks(gateway: Arc<Gateway>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match gateway.upstream.json(Method::GET, "/ok", None).await {
                Ok((s, _, _)) if s.is_success() => {
                    gateway.upstream_ok_at.store(unix_now(), Ordering::Relaxed)
                }
                Ok((s, _, _)) => tracing::warn!(status = %s, "upstream health check failed"),
                Err(e) => tracing::warn!(error = %e, "upstream health check failed"),
            }
        }
    });
}
