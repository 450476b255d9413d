//! The fleet backend: every replica shares one PostgreSQL database.
//!
//! Tables live in one schema (`graphguard` by default), which [`PgStore::open`] creates and
//! migrates itself: `schema_migrations(version, applied_at)` records what was applied, and the
//! whole migration runs in one transaction under `pg_advisory_xact_lock`, so replicas starting
//! together take turns and each finds the schema complete. `revisions(number, committed_at,
//! actor, summary, state jsonb)` holds the history.
//!
//! A commit is one transaction: insert `base + 1` only if the newest row is `base` (two racers
//! on the same base meet on the primary key; the second gets a unique violation, reported as
//! [`StoreError::Conflict`]), prune what falls out of the kept window, and
//! `pg_notify('<schema>_policy', '<number>')`, which PostgreSQL delivers exactly when the
//! transaction commits.
//!
//! Connections. One client serves the store's operations, behind a mutex, reconnected on
//! demand; a second, dedicated connection carries the change feed. One client rather than a
//! pool, because the store is off the request path (the gateway serves a compiled snapshot and
//! reads the store only when the feed reports a new head, and the API writes at human pace),
//! so operations never contend enough for a pool to pay for itself, and a commit needs a
//! connection to itself for its transaction anyway. Every operation, including the wait for
//! the client and a reconnect, has one deadline ([`PgOptions::query_timeout`]); past it the
//! connection is dropped (PostgreSQL rolls back whatever was open) and the caller gets
//! [`StoreError::Unavailable`] instead of waiting on a stuck database.
//!
//! The feed connection `LISTEN`s (before [`PgStore::open`] returns, so no later commit can go
//! unnoticed) and moves the [`PolicyStore::subscribe`] channel forward on each notification. A notification is lost while the feed is disconnected, so the feed polls
//! `max(number)` whenever it (re)connects and every [`PgOptions::poll_interval`] as a safety
//! net; the poll also notices a silently dead connection. When the connection fails it
//! reconnects forever, with a backoff doubling from 100 ms up to 5 s.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, MutexGuard};
use tokio::time::{error::Elapsed, timeout, timeout_at, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Connection, Row};

use super::pgtls::{self, Target};
use super::{
    check_storable, error_chain, PolicyStore, Revision, RevisionInfo, StoreError, KEEP_REVISIONS,
};

/// How a [`PgStore`] behaves; [`PgOptions::default`] is what production uses.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The deadline of each operation, connecting included (default 2 s).
    pub query_timeout: Duration,
    /// How often the change feed polls the head as a safety net (default 5 s).
    pub poll_interval: Duration,
    /// How many revisions to keep (default [`KEEP_REVISIONS`]).
    pub keep: usize,
    /// The schema holding the tables (default `graphguard`): lower-case letters, digits and
    /// `_`, at most 56 characters (the notification channel is `<schema>_policy`).
    pub schema: String,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            query_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_secs(5),
            keep: KEEP_REVISIONS,
            schema: "graphguard".to_string(),
        }
    }
}

impl PgOptions {
    fn validate(&self) -> Result<(), StoreError> {
        let s = &self.schema;
        let identifier = s.len() <= 56
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !identifier {
            return Err(StoreError::Invalid(format!(
                "schema {s:?} must be lower-case letters, digits and _, at most 56 characters"
            )));
        }
        if self.keep == 0 || self.query_timeout.is_zero() || self.poll_interval.is_zero() {
            return Err(StoreError::Invalid(
                "keep, query_timeout and poll_interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Revisions in PostgreSQL. See the module documentation.
pub struct PgStore {
    shared: Arc<Shared>,
    feed_task: tokio::task::AbortHandle,
}

/// What the store's operations and its feed task share.
struct Shared {
    target: Target,
    timeout: Duration,
    poll_interval: Duration,
    keep: i64,
    schema: String,
    channel: String,
    sql: Sql,
    client: tokio::sync::Mutex<Option<Client>>,
    feed: watch::Sender<u64>,
    op_error: Mutex<Option<StoreError>>,
    feed_error: Mutex<Option<StoreError>>,
}

/// The statements, with the schema spliced in once (it is a checked identifier).
struct Sql {
    head: String,
    one: String,
    page: String,
    max: String,
    insert: String,
    prune: String,
}

/// `committed_at` as RFC 3339 UTC with microseconds, the format the file store writes.
const COMMITTED_AT: &str =
    r#"to_char(committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

impl Sql {
    fn new(s: &str) -> Sql {
        let full = format!("number, {COMMITTED_AT}, actor, summary, state FROM {s}.revisions");
        Sql {
            head: format!("SELECT {full} ORDER BY number DESC LIMIT 1"),
            one: format!("SELECT {full} WHERE number = $1"),
            page: format!(
                "SELECT number, {COMMITTED_AT}, actor, summary FROM {s}.revisions \
                 WHERE number < $1 ORDER BY number DESC LIMIT $2"
            ),
            max: format!("SELECT coalesce(max(number), 0) FROM {s}.revisions"),
            // Inserts nothing unless the newest revision is the base; a racer on the same base
            // waits for the first one's row and then fails on the primary key.
            insert: format!(
                "INSERT INTO {s}.revisions (number, actor, summary, state) \
                 SELECT $1::bigint, $2::text, $3::text, $4::jsonb \
                 WHERE coalesce((SELECT max(number) FROM {s}.revisions), 0) = $1::bigint - 1"
            ),
            prune: format!("DELETE FROM {s}.revisions WHERE number <= $1"),
        }
    }
}

/// The schema's migrations, in order; `{schema}` is replaced. Never edit one that shipped:
/// append a new version.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE {schema}.revisions (
        number bigint PRIMARY KEY CHECK (number > 0),
        committed_at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        summary text NOT NULL,
        state jsonb NOT NULL
    )",
)];

/// Why a query function stopped: PostgreSQL's error, or an outcome of the store's own.
enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl PgStore {
    /// Connect to `url` (libpq's `postgres://` or `postgresql://` URL; `sslmode` as libpq
    /// means it: `disable`, `prefer` (the default) and `require` do not check the server's
    /// certificate, `verify-ca` checks its chain, `verify-full` its chain and name, against
    /// `sslrootcert` (a PEM file) or the system's roots), migrate the schema and start the
    /// change feed. Fails with
    /// [`StoreError::Unavailable`] when the database cannot be reached: a replica without the
    /// managed policies must not serve as if there were none.
    pub async fn open(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        options.validate()?;
        let target = pgtls::parse(url)?;
        let shared = Arc::new(Shared::new(target, options));
        let mut slot = shared.checkout(Instant::now() + shared.timeout).await?;
        let deadline = Instant::now() + shared.timeout;
        let migrated = timeout_at(deadline, migrate(connected(&mut slot)?, &shared.schema)).await;
        shared.settle(&mut slot, migrated)?;
        drop(slot);
        // Listening before open returns: no commit made after it can go unnoticed.
        let session = shared.connect_feed().await?;
        let feed_task = tokio::spawn(run_feed(shared.clone(), session)).abort_handle();
        let head = *shared.feed.borrow();
        tracing::info!(store = %shared.target.describe, head, "postgres policy store opened");
        Ok(PgStore { shared, feed_task })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The feed task holds the other reference to the shared state and its connection.
        self.feed_task.abort();
    }
}

#[async_trait]
impl PolicyStore for PgStore {
    async fn head(&self) -> Result<Revision, StoreError> {
        let s = &self.shared;
        let deadline = Instant::now() + s.timeout;
        let mut slot = s.checkout(deadline).await?;
        let r = timeout_at(deadline, select_head(connected(&mut slot)?, &s.sql)).await;
        s.settle(&mut slot, r)
    }

    async fn commit(
        &self,
        base: u64,
        state: &Value,
        actor: &str,
        summary: &str,
    ) -> Result<u64, StoreError> {
        check_storable(state)?;
        let next = i64::try_from(base)
            .ok()
            .and_then(|b| b.checked_add(1))
            .ok_or_else(|| StoreError::Invalid("revision numbers exhausted".into()))?;
        let s = &self.shared;
        let deadline = Instant::now() + s.timeout;
        let mut slot = s.checkout(deadline).await?;
        let change = Change {
            next,
            state,
            actor,
            summary,
        };
        let r = timeout_at(deadline, s.insert(connected(&mut slot)?, change)).await;
        s.settle(&mut slot, r)?;
        // `next` fits an i64, so base + 1 cannot overflow.
        let committed = base + 1;
        s.advance(committed);
        Ok(committed)
    }

    async fn revisions(
        &self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<RevisionInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let s = &self.shared;
        let deadline = Instant::now() + s.timeout;
        let mut slot = s.checkout(deadline).await?;
        let r = timeout_at(
            deadline,
            select_page(connected(&mut slot)?, &s.sql, before, limit),
        );
        let r = r.await;
        s.settle(&mut slot, r)
    }

    async fn revision(&self, number: u64) -> Result<Revision, StoreError> {
        let number = match i64::try_from(number) {
            Ok(n) if n > 0 => n,
            _ => return Err(StoreError::NotFound),
        };
        let s = &self.shared;
        let deadline = Instant::now() + s.timeout;
        let mut slot = s.checkout(deadline).await?;
        let r = timeout_at(deadline, select_one(connected(&mut slot)?, &s.sql, number)).await;
        s.settle(&mut slot, r)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.feed.subscribe()
    }

    fn describe(&self) -> String {
        self.shared.target.describe.clone()
    }

    /// The feed connection's state first (while it is down this replica misses changes), then
    /// the last operation's.
    fn health(&self) -> Result<(), StoreError> {
        let get = |m: &Mutex<Option<StoreError>>| m.lock().ok().and_then(|e| e.clone());
        match get(&self.shared.feed_error).or_else(|| get(&self.shared.op_error)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A commit's data.
struct Change<'a> {
    next: i64,
    state: &'a Value,
    actor: &'a str,
    summary: &'a str,
}

impl Shared {
    fn new(target: Target, o: PgOptions) -> Shared {
        let (feed, _) = watch::channel(0);
        Shared {
            target,
            timeout: o.query_timeout,
            poll_interval: o.poll_interval,
            keep: i64::try_from(o.keep).unwrap_or(i64::MAX),
            channel: format!("{}_policy", o.schema),
            sql: Sql::new(&o.schema),
            schema: o.schema,
            client: tokio::sync::Mutex::new(None),
            feed,
            op_error: Mutex::new(None),
            feed_error: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let connecting = self.target.config.connect(self.target.tls.clone());
        let (client, connection) = timeout(self.timeout, connecting)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.classify(e).0)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "policy store connection ended");
            }
        });
        Ok(client)
    }

    /// The operations' client, connected, within `deadline`.
    async fn checkout(
        &self,
        deadline: Instant,
    ) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let mut slot = timeout_at(deadline, self.client.lock())
            .await
            .map_err(|_| self.record(self.timed_out()))?;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            let client = timeout_at(deadline, self.connect())
                .await
                .map_err(|_| self.timed_out())
                .and_then(|r| r)
                .map_err(|e| self.record(e))?;
            *slot = Some(client);
        }
        Ok(slot)
    }

    /// The outcome of an operation on the client in `slot`, which is dropped when the
    /// connection can no longer be trusted (a timeout, a broken connection).
    fn settle<T>(
        &self,
        slot: &mut Option<Client>,
        r: Result<Result<T, Fail>, Elapsed>,
    ) -> Result<T, StoreError> {
        let r = match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Fail::Store(e))) => Err(e),
            Ok(Err(Fail::Pg(e))) => {
                let (e, keep_connection) = self.classify(e);
                if !keep_connection {
                    *slot = None;
                }
                Err(e)
            }
            Err(_) => {
                *slot = None;
                Err(self.timed_out())
            }
        };
        if let Ok(mut last) = self.op_error.lock() {
            *last = match &r {
                Err(e @ StoreError::Unavailable(_)) => Some(e.clone()),
                _ => None,
            };
        }
        r
    }

    fn record(&self, e: StoreError) -> StoreError {
        if let Ok(mut last) = self.op_error.lock() {
            *last = Some(e.clone());
        }
        e
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "{}: no answer within {} ms",
            self.target.describe,
            self.timeout.as_millis()
        ))
    }

    /// The store's meaning of a PostgreSQL error, and whether the connection is still usable.
    fn classify(&self, e: tokio_postgres::Error) -> (StoreError, bool) {
        let Some(db) = e.as_db_error() else {
            let why = format!("{}: {}", self.target.describe, error_chain(&e));
            return (StoreError::Unavailable(why), false);
        };
        if *db.code() == SqlState::UNIQUE_VIOLATION {
            return (StoreError::Conflict, true);
        }
        let code = db.code().code();
        let why = format!(
            "{}: PostgreSQL error {code}: {}",
            self.target.describe,
            db.message()
        );
        // Class 22 is "data exception": the state, not the database, is at fault.
        if code.starts_with("22") {
            return (StoreError::Invalid(why), true);
        }
        (StoreError::Unavailable(why), true)
    }

    async fn insert(&self, client: &mut Client, c: Change<'_>) -> Result<(), Fail> {
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(&self.sql.insert, &[&c.next, &c.actor, &c.summary, c.state])
            .await?;
        if inserted == 0 {
            // Dropping the transaction rolls it back.
            return Err(Fail::Store(StoreError::Conflict));
        }
        tx.execute(&self.sql.prune, &[&(c.next - self.keep)])
            .await?;
        let payload = c.next.to_string();
        tx.execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Move the known head forward (never back: notifications can arrive out of order).
    fn advance(&self, number: u64) {
        self.feed.send_if_modified(|known| {
            let newer = number > *known;
            if newer {
                *known = number;
            }
            newer
        });
    }
}

async fn migrate(client: &mut Client, schema: &str) -> Result<(), Fail> {
    let tx = client.transaction().await?;
    let lock_key = format!("graphguard migrations {schema}");
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
        .await?;
    // Checked rather than CREATE SCHEMA IF NOT EXISTS, which needs the CREATE privilege on
    // the database even when the schema exists (a DBA may have made it for us).
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?;
    if exists.is_none() {
        tx.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (\
         version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let rows = tx
        .query(
            &format!("SELECT version FROM {schema}.schema_migrations"),
            &[],
        )
        .await?;
    let applied = rows
        .iter()
        .map(|r| r.try_get::<_, i32>(0))
        .collect::<Result<Vec<i32>, _>>()?;
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(&sql.replace("{schema}", schema)).await?;
        let record = format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)");
        tx.execute(&record, &[version]).await?;
        tracing::info!(schema, version, "policy store schema migrated");
    }
    let known = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
    if let Some(newer) = applied.iter().filter(|v| **v > known).max() {
        tracing::warn!(
            schema,
            version = newer,
            "policy store schema was migrated by a newer graphguard; continuing"
        );
    }
    tx.commit().await?;
    Ok(())
}

fn connected(slot: &mut Option<Client>) -> Result<&mut Client, StoreError> {
    slot.as_mut()
        .ok_or_else(|| StoreError::Unavailable("no connection".into()))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Fail {
    Fail::Store(StoreError::Corrupt(format!("{what}: {e}")))
}

fn number_of(row: &Row) -> Result<u64, Fail> {
    let n: i64 = row.try_get(0)?;
    u64::try_from(n).map_err(|e| corrupt("revision number", e))
}

fn info_of(row: &Row) -> Result<RevisionInfo, Fail> {
    Ok(RevisionInfo {
        number: number_of(row)?,
        committed_at: row.try_get(1)?,
        actor: row.try_get(2)?,
        summary: row.try_get(3)?,
    })
}

fn revision_of(row: &Row) -> Result<Revision, Fail> {
    let info = info_of(row)?;
    let state: Value = row
        .try_get(4)
        .map_err(|e| corrupt(&format!("revision {}", info.number), e))?;
    Ok(Revision {
        number: info.number,
        committed_at: info.committed_at,
        actor: info.actor,
        summary: info.summary,
        state,
    })
}

async fn select_head(client: &mut Client, sql: &Sql) -> Result<Revision, Fail> {
    match client.query_opt(&sql.head, &[]).await? {
        Some(row) => revision_of(&row),
        None => Ok(Revision::empty()),
    }
}

async fn select_one(client: &mut Client, sql: &Sql, number: i64) -> Result<Revision, Fail> {
    match client.query_opt(&sql.one, &[&number]).await? {
        Some(row) => revision_of(&row),
        None => Err(Fail::Store(StoreError::NotFound)),
    }
}

async fn select_page(
    client: &mut Client,
    sql: &Sql,
    before: i64,
    limit: i64,
) -> Result<Vec<RevisionInfo>, Fail> {
    let rows = client.query(&sql.page, &[&before, &limit]).await?;
    rows.iter().map(info_of).collect()
}

async fn max_number(client: &Client, sql: &Sql) -> Result<u64, Fail> {
    number_of(&client.query_one(&sql.max, &[]).await?)
}

// ---------------------------------------------------------------------------------------------
// Change feed
// ---------------------------------------------------------------------------------------------

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the feed connection's driver reports.
enum FeedEvent {
    Notified(String),
    Closed(StoreError),
}

/// Follows `session`, then reconnects whenever the feed fails, forever; runs until the store
/// is dropped (which aborts it).
async fn run_feed(shared: Arc<Shared>, mut session: FeedSession) {
    loop {
        let error = shared.follow(session).await;
        shared.feed_down(error);
        let mut backoff = BACKOFF_MIN;
        session = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            match shared.connect_feed().await {
                Ok(s) => break s,
                Err(e) => shared.feed_down(e),
            }
        };
        shared.feed_up();
    }
}

/// A feed connection that is listening.
struct FeedSession {
    client: Client,
    events: mpsc::UnboundedReceiver<FeedEvent>,
    /// Owns the task polling the connection; dropping the session closes it.
    _driver: AbortOnDrop,
}

/// Aborts a task when dropped, so a feed session that ends takes its connection with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Poll the connection: it must be polled for queries to progress and for notifications to
/// arrive, which `Client` alone does not do.
async fn drive<S, T>(mut connection: Connection<S, T>, events: mpsc::UnboundedSender<FeedEvent>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let closed = loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if events
                    .send(FeedEvent::Notified(n.payload().to_string()))
                    .is_err()
                {
                    return;
                }
            }
            Some(Ok(_notice)) => {}
            Some(Err(e)) => break format!("feed connection failed: {}", error_chain(&e)),
            None => break "feed connection closed".to_string(),
        }
    };
    let _ = events.send(FeedEvent::Closed(StoreError::Unavailable(closed)));
}

impl Shared {
    /// Connect, LISTEN, then poll the head (after LISTEN, so that a commit made while
    /// disconnected is seen now and none made from here on can be missed).
    async fn connect_feed(&self) -> Result<FeedSession, StoreError> {
        let connecting = self.target.config.connect(self.target.tls.clone());
        let (client, connection) = timeout(self.timeout, connecting)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.classify(e).0)?;
        let (tx, events) = mpsc::unbounded_channel();
        let driver = AbortOnDrop(tokio::spawn(drive(connection, tx)));
        let listen = format!("LISTEN {}", self.channel);
        timeout(self.timeout, client.batch_execute(&listen))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.classify(e).0)?;
        self.poll(&client).await?;
        Ok(FeedSession {
            client,
            events,
            _driver: driver,
        })
    }

    /// Follow notifications and poll every interval until something fails; why it did.
    async fn follow(&self, mut session: FeedSession) -> StoreError {
        let start = Instant::now() + self.poll_interval;
        let mut tick = tokio::time::interval_at(start, self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = session.events.recv() => match event {
                    Some(FeedEvent::Notified(payload)) => self.notified(&payload),
                    Some(FeedEvent::Closed(e)) => return e,
                    None => return StoreError::Unavailable("feed driver ended".into()),
                },
                _ = tick.tick() => {
                    if let Err(e) = self.poll(&session.client).await {
                        return e;
                    }
                }
            }
        }
    }

    async fn poll(&self, client: &Client) -> Result<(), StoreError> {
        match timeout(self.timeout, max_number(client, &self.sql)).await {
            Err(_) => Err(self.timed_out()),
            Ok(Err(Fail::Pg(e))) => Err(self.classify(e).0),
            Ok(Err(Fail::Store(e))) => Err(e),
            Ok(Ok(n)) => {
                self.advance(n);
                // The store answered: an earlier operation's outage is over, even if no
                // operation has run since to say so.
                if let Ok(mut last) = self.op_error.lock() {
                    *last = None;
                }
                Ok(())
            }
        }
    }

    fn notified(&self, payload: &str) {
        match payload.parse::<u64>() {
            Ok(n) => self.advance(n),
            Err(_) => tracing::debug!(payload, "ignoring a notification that names no revision"),
        }
    }

    fn feed_up(&self) {
        if let Ok(mut last) = self.feed_error.lock() {
            if last.take().is_some() {
                tracing::info!(store = %self.target.describe, "policy store change feed reconnected");
            }
        }
    }

    fn feed_down(&self, error: StoreError) {
        if let Ok(mut last) = self.feed_error.lock() {
            // Warn on the transition only: a database that stays down would otherwise log at
            // every backoff step.
            if last.is_none() {
                tracing::warn!(error = %error, "policy store change feed lost; reconnecting");
            } else {
                tracing::debug!(error = %error, "policy store change feed still down");
            }
            *last = Some(error);
        }
    }
}
