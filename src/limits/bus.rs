//! The invalidation bus: replicas tell each other which cached resources a write made stale.
//!
//! A replica that passes a write publishes the resource's key on `graphguard:invalidate`;
//! every replica (the publisher too) hears it and evicts the key from its lookup cache. Redis
//! pub/sub keeps nothing for a subscriber that is away, so whenever the subscriber
//! (re)connects the callback first hears [`Invalidation::Resync`]: whatever was published
//! meanwhile is lost, and the cache must be dropped whole. The subscriber reconnects with
//! backoff and pings the server now and then, so a silently dead connection is noticed too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;

use super::fleet::{client, manager, timed};
use super::{redact, LimitError, LimitsConfig};

/// The channel every replica listens on.
pub const CHANNEL: &str = "graphguard:invalidate";

/// Backoff between subscription attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often an idle subscription pings, and how long the answer may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the subscriber hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation<'a> {
    /// This resource key is stale.
    Key(&'a str),
    /// The subscription (re)started: messages published while it was down are lost, so every
    /// cached entry is suspect.
    Resync,
    /// The subscription is down: until the next [`Invalidation::Resync`] nothing is heard, so
    /// nothing cached can be trusted to be fresh.
    Down,
}

/// The bus on one Redis.
pub struct Bus {
    client: redis::Client,
    conn: ConnectionManager,
    timeout: Duration,
    connect_timeout: Duration,
    url: String,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("url", &self.url).finish()
    }
}

/// A running subscriber; dropping it stops it.
#[derive(Debug)]
pub struct Subscription {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Bus {
    /// The bus on the Redis at `url` (as for the limiter). Connects lazily; must be called
    /// within a Tokio runtime that outlives the bus.
    pub fn open(url: &str, cfg: &LimitsConfig) -> Result<Bus, LimitError> {
        let client = client(url)?;
        let conn = manager(client.clone(), cfg)?;
        Ok(Bus {
            client,
            conn,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            url: redact(url),
        })
    }

    /// Tell every replica that `key` is stale. Returns how many subscribers heard it. A
    /// connection that broke since the last call (Redis restarted) is noticed by the first
    /// attempt and replaced for a second one, so a message is not lost to a stale socket.
    pub async fn publish(&self, key: &str) -> Result<usize, LimitError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(CHANNEL).arg(key);
        let mut conn = self.conn.clone();
        match timed(self.timeout, cmd.query_async::<usize>(&mut conn)).await {
            Err(LimitError::Unavailable(_)) => {
                let mut conn = self.conn.clone();
                timed(self.timeout, cmd.query_async::<usize>(&mut conn)).await
            }
            other => other,
        }
    }

    /// Call `on` for every message on the channel, from a task spawned on the current runtime,
    /// until the returned handle is dropped. `on` runs on that task: it must not block. Until
    /// the first [`Invalidation::Resync`] the subscriber is not yet listening.
    pub fn subscribe(&self, on: impl Fn(Invalidation<'_>) + Send + Sync + 'static) -> Subscription {
        let client = self.client.clone();
        let connect_timeout = self.connect_timeout;
        let task = tokio::spawn(listen(client, connect_timeout, Arc::new(on)));
        Subscription { task }
    }
}

type Callback = Arc<dyn Fn(Invalidation<'_>) + Send + Sync>;

/// Subscribe again and again, backing off while Redis is away.
async fn listen(client: redis::Client, connect_timeout: Duration, on: Callback) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let (subscribed, why) = session(&client, connect_timeout, &on).await;
        if subscribed {
            backoff = BACKOFF_MIN;
            on(Invalidation::Down);
        }
        tracing::warn!(reason = %why, retry_in = ?backoff, "invalidation bus disconnected");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription, until its connection fails. Returns whether it got as far as
/// subscribing, and why it ended.
async fn session(
    client: &redis::Client,
    connect_timeout: Duration,
    on: &Callback,
) -> (bool, String) {
    let (mut sink, mut stream) = match timed(connect_timeout, client.get_async_pubsub()).await {
        Ok(p) => p.split(),
        Err(e) => return (false, e.to_string()),
    };
    if let Err(e) = timed(connect_timeout, sink.subscribe(CHANNEL)).await {
        return (false, e.to_string());
    }
    on(Invalidation::Resync);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => match std::str::from_utf8(msg.get_payload_bytes()) {
                    Ok(key) => on(Invalidation::Key(key)),
                    Err(_) => tracing::warn!("invalidation message is not UTF-8; ignored"),
                },
                None => return (true, "connection closed".into()),
            },
            _ = tokio::time::sleep(PING_EVERY) => {
                if let Err(e) = timed(PING_TIMEOUT, sink.ping::<()>()).await {
                    return (true, format!("ping: {e}"));
                }
            }
        }
    }
}
