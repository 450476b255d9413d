//! The policy store: roles, access policies and their attachments, managed through the API and
//! shared by every replica, kept as a versioned document.
//!
//! The whole managed state is one JSON document per revision. A change reads the head,
//! computes the next state in memory (pure code, outside this module) and commits it on top of
//! the revision it read: [`PolicyStore::commit`] is optimistic concurrency and fails with
//! [`StoreError::Conflict`] when another writer got there first, so the caller re-reads and
//! retries. Every revision is kept (pruned to the last [`KEEP_REVISIONS`]), which gives history
//! and restore without a second mechanism.
//!
//! Two backends: [`FileStore`], a state directory for a single replica, and [`PgStore`],
//! PostgreSQL for a fleet. [`open`] picks one from a spec. Neither is ever on the request
//! path: the gateway serves a compiled snapshot and rebuilds it when [`PolicyStore::subscribe`]
//! reports a new head.

mod file;
mod pg;
mod pgtls;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use file::FileStore;
pub use pg::{PgOptions, PgStore};

/// How many revisions a store keeps by default; older ones are pruned on commit.
pub const KEEP_REVISIONS: usize = 1000;

/// One committed revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// 1, 2, 3, ... in commit order; 0 only for the empty head of a store never written.
    pub number: u64,
    /// When it was committed, RFC 3339 in UTC with microseconds (empty for revision 0).
    pub committed_at: String,
    /// Who committed it, as the caller named them.
    pub actor: String,
    /// What the change was, in the caller's words.
    pub summary: String,
    /// The whole managed state.
    pub state: Value,
}

impl Revision {
    /// The head of a store nothing was ever committed to: number 0, state `{}`.
    pub fn empty() -> Revision {
        Revision {
            number: 0,
            committed_at: String::new(),
            actor: String::new(),
            summary: String::new(),
            state: Value::Object(serde_json::Map::new()),
        }
    }

    /// The revision without its state.
    pub fn info(&self) -> RevisionInfo {
        RevisionInfo {
            number: self.number,
            committed_at: self.committed_at.clone(),
            actor: self.actor.clone(),
            summary: self.summary.clone(),
        }
    }
}

/// A revision without its state, for history listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// The revision number.
    pub number: u64,
    /// When it was committed (RFC 3339, UTC).
    pub committed_at: String,
    /// Who committed it.
    pub actor: String,
    /// What the change was.
    pub summary: String,
}

/// What a store operation failed with. Messages name what happened and where, never a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The head is no longer the revision the change was computed from: re-read and retry.
    #[error("the policy store changed since it was read (another writer committed first)")]
    Conflict,
    /// No such revision (never committed, or pruned).
    #[error("no such revision")]
    NotFound,
    /// The backend cannot be reached or did not answer in time; the operation may be retried.
    /// For a commit the outcome is then unknown, as with any remote commit: re-read the head.
    #[error("policy store unavailable: {0}")]
    Unavailable(String),
    /// What the backend holds cannot be read back (a damaged file or row).
    #[error("policy store data is corrupt: {0}")]
    Corrupt(String),
    /// The store cannot be used as asked: a bad spec, a state directory held by another
    /// process, a state no backend can store. Retrying does not help.
    #[error("policy store: {0}")]
    Invalid(String),
}

/// A versioned document store holding the managed policy state.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The latest committed revision ([`Revision::empty`] when nothing was ever committed).
    async fn head(&self) -> Result<Revision, StoreError>;

    /// Commit `state` as revision `base + 1`, atomically; [`StoreError::Conflict`] if the head
    /// is not `base`. Returns the new revision number.
    async fn commit(
        &self,
        base: u64,
        state: &Value,
        actor: &str,
        summary: &str,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` revisions, newest first, numbered below `before` when given (the number of
    /// the last one of the previous page).
    async fn revisions(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<RevisionInfo>, StoreError>;

    /// One revision with its state; [`StoreError::NotFound`] if it was never committed or was
    /// pruned.
    async fn revision(&self, number: u64) -> Result<Revision, StoreError>;

    /// The latest head number this process knows of, updated on this process's commits and by
    /// the backend's change feed.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A short description for logs and `/readyz`: `file:/var/lib/graphguard`,
    /// `postgres://host:port/db`, never a credential.
    fn describe(&self) -> String;

    /// Whether the backend was reachable at the last contact: `Ok`, or the error that contact
    /// failed with (for `/readyz` and a metric; it never blocks).
    fn health(&self) -> Result<(), StoreError>;
}

/// Open the store `spec` names: `postgres://...` or `postgresql://...` for [`PgStore`] (with
/// [`PgOptions::default`]), `file:PATH` or a plain path for [`FileStore`].
pub async fn open(spec: &str) -> Result<Arc<dyn PolicyStore>, StoreError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let store = PgStore::open(spec, PgOptions::default()).await?;
        return Ok(Arc::new(store));
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    // A URL of another kind is a mistake, not a directory named "mysql:".
    if path.contains("://") || path.is_empty() {
        return Err(StoreError::Invalid(format!(
            "unsupported store {:?}: use postgres://..., file:PATH or a directory path",
            redact_spec(spec)
        )));
    }
    let dir = std::path::PathBuf::from(path);
    let store = tokio::task::spawn_blocking(move || FileStore::open(&dir, KEEP_REVISIONS))
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the state directory: {e}")))??;
    Ok(Arc::new(store))
}

/// A spec safe to print: anything between `://` and `@` (user and password) is dropped.
fn redact_spec(spec: &str) -> String {
    match (spec.find("://"), spec.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://{}", &spec[..s], &spec[at + 1..]),
        _ => spec.to_string(),
    }
}

/// Refuse states one backend could store and another could not, so that both accept the
/// same documents: PostgreSQL's `jsonb` has no NUL character.
fn check_storable(state: &Value) -> Result<(), StoreError> {
    let nul = |s: &str| s.contains('\0');
    let bad = match state {
        Value::String(s) => nul(s),
        Value::Array(items) => return items.iter().try_for_each(check_storable),
        Value::Object(map) => {
            for (k, v) in map {
                if nul(k) {
                    return Err(nul_error());
                }
                check_storable(v)?;
            }
            false
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    };
    if bad {
        return Err(nul_error());
    }
    Ok(())
}

fn nul_error() -> StoreError {
    StoreError::Invalid(
        "the state contains a NUL character (\\u0000), which cannot be stored".into(),
    )
}

/// An error with its causes, `outer: inner: ...`: drivers keep the useful part ("connection
/// refused") in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc_micros() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_394_123_283_994);
        assert_eq!(
            crate::clock::rfc3339_micros(t),
            "2026-11-23T00:35:23.283994Z"
        );
        assert_eq!(
            crate::clock::rfc3339_micros(UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn nul_characters_are_refused_anywhere() {
        assert!(check_storable(&json!({"a": [1, "x", {"b": null}]})).is_ok());
        for bad in [
            json!("a\u{0}"),
            json!({"k\u{0}": 1}),
            json!([{"k": ["\u{0}"]}]),
        ] {
            assert!(
                matches!(check_storable(&bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn specs_are_redacted() {
        assert_eq!(
            redact_spec("mysql://u:secret@db:3306/x"),
            "mysql://db:3306/x"
        );
        assert_eq!(redact_spec("/var/lib/x"), "/var/lib/x");
    }

    #[tokio::test]
    async fn open_refuses_unknown_schemes_without_leaking_credentials() {
        let err = open("mysql://u:hunter2@db/x").await.err().unwrap();
        assert!(matches!(err, StoreError::Invalid(_)));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn open_picks_the_file_store_for_paths() {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("file:{}", dir.path().display());
        let store = open(&spec).await.unwrap();
        assert_eq!(store.describe(), spec);
        assert_eq!(store.head().await.unwrap(), Revision::empty());
    }
}
