//! Policy hot reload: build a complete new snapshot off the request path, validate it, swap it
//! in whole. A broken set never replaces a working one.
//!
//! Triggers: the policy directory changing (watched with `notify`, debounced on the trailing
//! edge; the directory is watched, not the files, so Kubernetes ConfigMap updates, which swap
//! the `..data` symlink atomically, are seen), a periodic re-read as a safety net (a watch on a
//! directory that was itself replaced sees nothing), SIGHUP, and `POST /reload` on the admin
//! listener.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::gateway::Gateway;
use crate::ops::metrics::{Metrics, ReasonLabel};
use crate::policy::managed::ManagedState;
use crate::policy::Policy;
use crate::store::PolicyStore;

/// The outcome of the last reload attempts, for `/readyz` and `/policies`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// When the current set was loaded.
    pub loaded_at: Option<SystemTime>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the last attempt ran.
    pub last_attempt: Option<SystemTime>,
}

/// Reloads the policy directory into the gateway's snapshot.
pub struct Reloader {
    dir: PathBuf,
    shadow: bool,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    status: Mutex<ReloadStatus>,
    lock: tokio::sync::Mutex<()>,
    /// Reloads attempted, whatever triggered them (for tests and `/policies`).
    pub attempts: std::sync::atomic::AtomicU64,
    /// The policy store's latest state known here (revision, state), compiled with the files.
    store: Mutex<Option<(u64, ManagedState)>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new version is serving.
    Swapped(String),
    /// The files did not change.
    Unchanged(String),
    /// The files do not load; the previous version keeps serving.
    Failed(String),
}

impl Reloader {
    /// A reloader for `dir`, whose current snapshot is already in the gateway.
    pub fn new(dir: PathBuf, gateway: Arc<Gateway>, metrics: Arc<Metrics>) -> Reloader {
        let status = ReloadStatus {
            loaded_at: Some(SystemTime::now()),
            ..ReloadStatus::default()
        };
        metrics.set_version(&gateway.policy.load().version);
        Reloader {
            dir,
            shadow: false,
            gateway,
            metrics,
            status: Mutex::new(status),
            lock: tokio::sync::Mutex::new(()),
            attempts: std::sync::atomic::AtomicU64::new(0),
            store: Mutex::new(None),
        }
    }

    /// A reloader for the shadow policy directory (its snapshot is `gateway.shadow`).
    pub fn for_shadow(dir: PathBuf, gateway: Arc<Gateway>, metrics: Arc<Metrics>) -> Reloader {
        Reloader {
            dir,
            shadow: true,
            gateway,
            metrics,
            status: Mutex::new(ReloadStatus {
                loaded_at: Some(SystemTime::now()),
                ..ReloadStatus::default()
            }),
            lock: tokio::sync::Mutex::new(()),
            attempts: std::sync::atomic::AtomicU64::new(0),
            store: Mutex::new(None),
        }
    }

    /// Compile the policy store's state with the files from now on (the snapshot in the
    /// gateway was built with it already).
    pub fn with_store_state(self, revision: u64, state: ManagedState) -> Reloader {
        if let Ok(mut s) = self.store.lock() {
            *s = Some((revision, state));
        }
        self
    }

    /// The metrics the reloader reports into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The policy version being served.
    pub fn version(&self) -> String {
        self.gateway.policy.load().version.clone()
    }

    /// The store revision the reloader knows (0: none).
    pub fn store_revision(&self) -> u64 {
        self.store
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(n, _)| *n))
            .unwrap_or(0)
    }

    /// A new state of the policy store: compile it with the files and serve it. A state that
    /// does not compile keeps the last good snapshot serving (reported like any failed reload).
    pub async fn apply_store(&self, revision: u64, state: ManagedState, why: &str) -> ReloadResult {
        if let Ok(mut s) = self.store.lock() {
            if s.as_ref().is_some_and(|(n, _)| *n > revision) {
                return ReloadResult::Unchanged(self.gateway.policy.load().version.clone());
            }
            *s = Some((revision, state));
        }
        self.reload(why).await
    }

    /// A copy of the status.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Load the directory and swap if it loads and differs. Never blocks requests: loading
    /// happens on a blocking thread and the swap is one atomic store.
    pub async fn reload(&self, why: &str) -> ReloadResult {
        let _one_at_a_time = self.lock.lock().await;
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.clone();
        let store = self.store.lock().ok().and_then(|s| s.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            Policy::load_dir_with(&dir, store.as_ref().map(|(n, s)| (*n, s)))
        })
        .await;
        let now = SystemTime::now();
        let result = match loaded {
            Err(e) => ReloadResult::Failed(format!("reload task failed: {e}")),
            Ok(Err(errors)) => ReloadResult::Failed(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Ok(Ok(p)) => self.swap(p),
        };
        self.record_status(&result, now);
        self.report(&result, why);
        result
    }

    /// Serve the loaded policy unless its version is the one already served.
    fn swap(&self, p: Policy) -> ReloadResult {
        let current = if self.shadow {
            self.gateway
                .shadow
                .load()
                .as_ref()
                .map(|p| p.version.clone())
                .unwrap_or_default()
        } else {
            self.gateway.policy.load().version.clone()
        };
        if p.version == current {
            return ReloadResult::Unchanged(p.version);
        }
        let v = p.version.clone();
        for w in &p.warnings {
            tracing::warn!("{w}");
        }
        if self.shadow {
            self.gateway.shadow.store(Some(Arc::new(p)));
        } else {
            self.gateway.policy.store(Arc::new(p));
        }
        ReloadResult::Swapped(v)
    }

    /// What `/readyz` reports: the last attempt, the last load, the last error.
    fn record_status(&self, result: &ReloadResult, now: SystemTime) {
        let Ok(mut s) = self.status.lock() else {
            return;
        };
        s.last_attempt = Some(now);
        match result {
            ReloadResult::Swapped(_) => {
                s.loaded_at = Some(now);
                s.last_error = None;
            }
            ReloadResult::Unchanged(_) => s.last_error = None,
            ReloadResult::Failed(e) => s.last_error = Some(e.clone()),
        }
    }

    /// Log and count the reload.
    fn report(&self, result: &ReloadResult, why: &str) {
        match result {
            ReloadResult::Swapped(v) => {
                tracing::info!(version = %v, trigger = why, shadow = self.shadow, "policy reloaded");
                let reason = if self.shadow { "shadow_ok" } else { "ok" };
                self.metrics
                    .reloads
                    .get_or_create(&ReasonLabel {
                        reason: reason.into(),
                    })
                    .inc();
                if !self.shadow {
                    self.metrics.set_version(v);
                }
            }
            ReloadResult::Unchanged(_) => {}
            ReloadResult::Failed(e) => {
                tracing::error!(trigger = why, error = %e, "policy reload failed; the previous policy keeps serving");
                self.metrics
                    .reloads
                    .get_or_create(&ReasonLabel {
                        reason: "error".into(),
                    })
                    .inc();
            }
        }
    }

    /// Watch the directory, re-read it every `poll`, reload on SIGHUP. Runs until the process
    /// ends.
    pub fn spawn(self: &Arc<Self>, debounce: Duration, poll: Duration) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watch_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Only a change counts: reading the files (this reload's own reads among them)
            // raises open and close events too, and reacting to those made every reload
            // trigger the next one.
            if ev.is_ok_and(|e| !e.kind.is_access()) {
                let _ = watch_tx.send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => match w.watch(&self.dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %self.dir.display(), "cannot watch the policy directory; relying on periodic re-reads");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; relying on periodic re-reads");
                None
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _keep = watcher;
            loop {
                if rx.recv().await.is_none() {
                    return;
                }
                // Trailing-edge debounce: wait until the directory has been quiet.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                me.reload("watch").await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.reload("poll").await;
            }
        });
        #[cfg(unix)]
        {
            let me = self.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    me.reload("sighup").await;
                }
            });
        }
        drop(tx);
    }
}

/// Follow the policy store: each new head a replica hears of (its own commits, the backend's
/// change feed) is read and applied. A head that cannot be read is retried every second until
/// it is, or a newer one is announced. Runs until the process ends.
pub fn follow_store(reloader: Arc<Reloader>, store: Arc<dyn PolicyStore>) {
    tokio::spawn(async move {
        let mut heads = store.subscribe();
        loop {
            let announced = *heads.borrow_and_update();
            if announced > reloader.store_revision() {
                apply_head(&reloader, store.as_ref()).await;
            }
            let retry = announced > reloader.store_revision();
            let wait = if retry {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(3600)
            };
            if let Ok(Err(_)) = tokio::time::timeout(wait, heads.changed()).await {
                return;
            }
        }
    });
}

/// Read the store's head and serve it.
async fn apply_head(reloader: &Reloader, store: &dyn PolicyStore) {
    let head = match store.head().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "the policy store's new head cannot be read yet");
            return;
        }
    };
    match ManagedState::from_value(&head.state) {
        Ok(state) => {
            reloader.apply_store(head.number, state, "store").await;
        }
        Err(e) => {
            tracing::error!(revision = head.number, error = %e, "the policy store holds a state graphguard cannot read")
        }
    }
}
