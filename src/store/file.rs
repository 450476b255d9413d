//! The embedded backend: a state directory on local disk, for a single replica.
//!
//! Each revision is a file `rev-000000000123.json` holding the whole [`Revision`]. A commit
//! writes `.tmp-rev-….json`, fsyncs it, renames it into place and fsyncs the directory, so a
//! revision file is either absent or complete; a crash leaves at most a temporary file, removed
//! at the next open. The head is the highest revision file that parses and names its own
//! number; one that does not (a damaged disk, a hand edit) is set aside as `….json.corrupt`
//! with a warning and the previous revision is the head.
//!
//! One process writes a directory: [`FileStore::open`] takes an exclusive `flock` on
//! `dir/lock` and refuses when another process (or another store in this one) holds it. Within
//! the process a mutex serialises commits, so the in-memory head is authoritative and a commit
//! on a stale base is a [`StoreError::Conflict`] without touching the disk.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::watch;

use super::{check_storable, PolicyStore, Revision, RevisionInfo, StoreError};
use crate::clock::rfc3339_micros;

/// Revisions in a local state directory. See the module documentation.
pub struct FileStore {
    dir: PathBuf,
    keep: u64,
    /// Holds the directory's `flock` for as long as the store lives.
    _lock: File,
    /// The head; held across a whole commit, which makes read-head-then-write atomic.
    head: tokio::sync::Mutex<Arc<Revision>>,
    feed: watch::Sender<u64>,
    last_error: Mutex<Option<StoreError>>,
}

impl FileStore {
    /// Open (creating it if needed) the state directory `dir`, keeping the last `keep`
    /// revisions. Blocking: call it from a blocking thread in async code.
    pub fn open(dir: &Path, keep: usize) -> Result<FileStore, StoreError> {
        if keep == 0 {
            return Err(StoreError::Invalid(
                "a store must keep at least one revision".into(),
            ));
        }
        fs::create_dir_all(dir).map_err(|e| {
            StoreError::Invalid(format!(
                "cannot create state directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = lock_dir(dir)?;
        remove_temporaries(dir);
        let head = find_head(dir)?;
        tracing::info!(dir = %dir.display(), head = head.number, "file policy store opened");
        let (feed, _) = watch::channel(head.number);
        Ok(FileStore {
            dir: dir.to_path_buf(),
            keep: keep as u64,
            _lock: lock,
            head: tokio::sync::Mutex::new(Arc::new(head)),
            feed,
            last_error: Mutex::new(None),
        })
    }

    /// Keep the outcome's I/O health for [`PolicyStore::health`].
    fn record<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Ok(mut last) = self.last_error.lock() {
            match &r {
                Err(e @ StoreError::Unavailable(_)) => *last = Some(e.clone()),
                _ => *last = None,
            }
        }
        r
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dir = self.dir.clone();
        let r = tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| StoreError::Unavailable(format!("file store task failed: {e}")))
            .and_then(|r| r);
        self.record(r)
    }
}

#[async_trait]
impl PolicyStore for FileStore {
    async fn head(&self) -> Result<Revision, StoreError> {
        Ok(Revision::clone(&*self.head.lock().await))
    }

    async fn commit(
        &self,
        base: u64,
        state: &Value,
        actor: &str,
        summary: &str,
    ) -> Result<u64, StoreError> {
        let mut head = self.head.lock().await;
        if head.number != base {
            return Err(StoreError::Conflict);
        }
        check_storable(state)?;
        let number = base
            .checked_add(1)
            .ok_or_else(|| StoreError::Invalid("revision numbers exhausted".into()))?;
        let rev = Arc::new(Revision {
            number,
            committed_at: rfc3339_micros(SystemTime::now()),
            actor: actor.to_string(),
            summary: summary.to_string(),
            state: state.clone(),
        });
        let (written, keep) = (rev.clone(), self.keep);
        let outcome = self
            .blocking(move |dir| {
                let visible = write_revision(dir, &written)?;
                prune(dir, written.number.saturating_sub(keep));
                Ok(visible)
            })
            .await?;
        // Once renamed into place the revision is the head, even if the directory fsync
        // failed: it is what a restart would most likely find, so a retry must see Conflict.
        *head = rev.clone();
        self.feed.send_replace(rev.number);
        self.record(outcome.map(|()| rev.number))
    }

    async fn revisions(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<RevisionInfo>, StoreError> {
        // Held so that a concurrent commit's prune cannot remove a file between list and read.
        let head = self.head.lock().await;
        let top = before.map_or(head.number, |b| b.saturating_sub(1).min(head.number));
        self.blocking(move |dir| {
            let mut numbers: Vec<u64> = list_revisions(dir)?
                .into_iter()
                .filter(|&n| n <= top)
                .collect();
            numbers.sort_unstable_by(|a, b| b.cmp(a));
            numbers.truncate(limit);
            numbers
                .into_iter()
                .map(|n| read_revision(dir, n).map(|r| r.info()))
                .collect()
        })
        .await
    }

    async fn revision(&self, number: u64) -> Result<Revision, StoreError> {
        let head = self.head.lock().await;
        if number == 0 || number > head.number {
            return Err(StoreError::NotFound);
        }
        if number == head.number {
            return Ok(Revision::clone(&head));
        }
        self.blocking(move |dir| read_revision(dir, number)).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.feed.subscribe()
    }

    fn describe(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    fn health(&self) -> Result<(), StoreError> {
        match self.last_error.lock() {
            Ok(last) => last.clone().map_or(Ok(()), Err),
            Err(_) => Ok(()),
        }
    }
}

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Invalid(format!(
            "state directory {} is in use by another graphguard process (it holds {}); \
             a file store has a single writer: use a postgres:// store for several replicas",
            dir.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StoreError::Invalid(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

fn file_name(number: u64) -> String {
    format!("rev-{number:012}.json")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("rev-")?.strip_suffix(".json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// The revision numbers present in `dir`, in no particular order.
fn list_revisions(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))?;
    let mut numbers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_file_name) {
            numbers.push(n);
        }
    }
    Ok(numbers)
}

fn read_revision(dir: &Path, number: u64) -> Result<Revision, StoreError> {
    let path = dir.join(file_name(number));
    let bytes = fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::NotFound,
        _ => io_error("cannot read", &path, e),
    })?;
    let rev: Revision = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
    if rev.number != number {
        return Err(StoreError::Corrupt(format!(
            "{} holds revision {}",
            path.display(),
            rev.number
        )));
    }
    Ok(rev)
}

/// The newest readable revision; damaged newer files are set aside so that the next commit,
/// which reuses their number, does not meet them.
fn find_head(dir: &Path) -> Result<Revision, StoreError> {
    let mut numbers = list_revisions(dir)?;
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    for n in numbers {
        match read_revision(dir, n) {
            Ok(rev) => return Ok(rev),
            Err(StoreError::Corrupt(why)) => set_aside(dir, n, &why)?,
            Err(e) => return Err(e),
        }
    }
    Ok(Revision::empty())
}

fn set_aside(dir: &Path, number: u64, why: &str) -> Result<(), StoreError> {
    let from = dir.join(file_name(number));
    let to = dir.join(format!("{}.corrupt", file_name(number)));
    tracing::warn!(file = %from.display(), error = why,
        "policy store revision is damaged; set aside, the previous revision is the head");
    fs::rename(&from, &to).map_err(|e| io_error("cannot set aside", &from, e))
}

/// Leftovers of commits a crash interrupted: never renamed into place, so never committed.
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let path = entry.path();
            tracing::info!(file = %path.display(), "removing an interrupted commit's temporary file");
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove temporary file");
            }
        }
    }
}

/// Write `rev` durably. `Err`: nothing was committed. `Ok(Err)`: the file is in place (the
/// revision is visible) but the directory fsync failed, so it may not survive a power loss.
fn write_revision(dir: &Path, rev: &Revision) -> Result<Result<(), StoreError>, StoreError> {
    let bytes = serde_json::to_vec(rev)
        .map_err(|e| StoreError::Invalid(format!("cannot serialise the state: {e}")))?;
    let name = file_name(rev.number);
    let tmp = dir.join(format!(".tmp-{name}"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("cannot write", &tmp, e));
    }
    let path = dir.join(name);
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("cannot rename into", &path, e));
    }
    // The rename is durable only once the directory entry is.
    Ok(File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot fsync", dir, e)))
}

/// Remove revisions numbered `upto` and below; failures only cost disk space, so they are
/// logged, not returned.
fn prune(dir: &Path, upto: u64) {
    if upto == 0 {
        return;
    }
    let numbers = match list_revisions(dir) {
        Ok(n) => n,
        Err(e) => return tracing::warn!(error = %e, "cannot prune old revisions"),
    };
    for n in numbers.into_iter().filter(|&n| n <= upto) {
        let path = dir.join(file_name(n));
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %path.display(), error = %e, "cannot prune revision");
            }
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
