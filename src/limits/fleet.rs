//! The Redis limiter: exact across every replica that shares one Redis.
//!
//! A request's checks go to Redis as one script (`check.lua`, by EVALSHA, loaded again on
//! NOSCRIPT), which decides them all by Redis' own clock and writes only if all pass: one round
//! trip, and replica clocks do not matter. Rates store their GCRA arrival time under
//! `graphguard:limit:r:{key}` and expire once it has passed; concurrency limits are sorted sets
//! `graphguard:limit:c:{key}` of lease ids scored by expiry, so a replica that dies holding
//! leases gives their slots back when they are not renewed. One multiplexed connection
//! (`ConnectionManager`, which reconnects in the background) serves every thread; every call
//! fails after the configured timeout instead of waiting for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script};

use super::gcra::{self, Plan, Raw};
use super::{redact, Check, Held, Lease, LimitError, Limiter, LimitsConfig, Verdict, KEY_PREFIX};

/// The check script.
const CHECK_LUA: &str = include_str!("check.lua");
/// The renewal script.
const RENEW_LUA: &str = include_str!("renew.lua");

/// Reconnection: a handful of tries per attempt, quickly, so that a Redis that comes back is
/// used again within a second; calls meanwhile fail after their timeout.
const RECONNECT_TRIES: usize = 4;
const RECONNECT_MIN: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// The Redis limiter.
pub struct Fleet {
    conn: ConnectionManager,
    check: Script,
    renew: Script,
    timeout: Duration,
    ids: LeaseIds,
    about: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.about)
    }
}

/// Lease ids unique across the fleet: a random prefix per limiter and a counter.
struct LeaseIds {
    prefix: String,
    next: AtomicU64,
}

impl LeaseIds {
    fn new() -> LeaseIds {
        let mut prefix = uuid::Uuid::new_v4().simple().to_string();
        prefix.truncate(16);
        LeaseIds {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// A Redis lease's member of its key's sorted set. Dropped unreleased, it removes itself on a
/// spawned task (or, outside any runtime, expires).
#[derive(Debug)]
pub(crate) struct Slot {
    key: String,
    id: String,
    conn: Option<ConnectionManager>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let pairs = [(std::mem::take(&mut self.key), std::mem::take(&mut self.id))];
            spawn_release(conn, Vec::from(pairs));
        }
    }
}

/// How long a release spawned from `Drop` (or after a failed check) may wait for Redis.
const SPAWNED_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Remove leases on a spawned task, if there is a runtime to spawn on.
fn spawn_release(conn: ConnectionManager, pairs: Vec<(String, String)>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if pairs.is_empty() {
        return;
    }
    rt.spawn(async move {
        // Best effort: a lease that is not removed expires by itself.
        match tokio::time::timeout(SPAWNED_RELEASE_TIMEOUT, zrem(conn, &pairs)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "lease release failed; it will expire"),
            Err(_) => tracing::debug!("lease release timed out; it will expire"),
        }
    });
}

async fn zrem(mut conn: ConnectionManager, pairs: &[(String, String)]) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    for (key, id) in pairs {
        pipe.zrem(key, id).ignore();
    }
    pipe.query_async::<()>(&mut conn).await
}

fn rate_key(key: &str) -> String {
    format!("{KEY_PREFIX}r:{key}")
}

fn slot_key(key: &str) -> String {
    format!("{KEY_PREFIX}c:{key}")
}

/// What a failed Redis call means for the caller: the script's own failures (and answers of
/// the wrong shape) are `Script`; everything else, refused credentials and permissions
/// included, says Redis cannot serve us now: `Unavailable`.
fn failed(e: &RedisError) -> LimitError {
    let from_script = match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        // Redis 7 says `ERR user_script:N: ...`, Redis 6 `ERR Error running script ...`.
        _ => {
            e.code() == Some("WRONGTYPE")
                || (e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("script")))
        }
    };
    if from_script {
        LimitError::Script(e.to_string())
    } else {
        LimitError::Unavailable(e.to_string())
    }
}

/// Run a Redis call within `timeout`.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, LimitError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(&e)),
        Err(_) => Err(LimitError::Timeout),
    }
}

/// A connection manager for `client` that reconnects quickly in the background.
pub(crate) fn manager(
    client: redis::Client,
    cfg: &LimitsConfig,
) -> Result<ConnectionManager, LimitError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(LimitError::Unavailable(
            "a Redis connection must be opened inside a Tokio runtime".into(),
        ));
    }
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_number_of_retries(RECONNECT_TRIES)
        .set_min_delay(RECONNECT_MIN)
        .set_max_delay(RECONNECT_MAX);
    ConnectionManager::new_lazy_with_config(client, manager)
        .map_err(|e| LimitError::Unavailable(e.to_string()))
}

/// A client for `url`, refusing a URL that does not parse (without echoing its password).
pub(crate) fn client(url: &str) -> Result<redis::Client, LimitError> {
    redis::Client::open(url).map_err(|e| LimitError::Invalid(format!("{}: {e}", redact(url))))
}

impl Fleet {
    /// A limiter on the Redis at `url` (`redis://` or `rediss://`, user and password in it).
    /// Connects lazily; must be called within a Tokio runtime that outlives the limiter.
    pub fn open(url: &str, cfg: &LimitsConfig) -> Result<Fleet, LimitError> {
        let client = client(url)?;
        let about = describe(&client);
        let conn = manager(client, cfg)?;
        Ok(Fleet {
            conn,
            check: Script::new(CHECK_LUA),
            renew: Script::new(RENEW_LUA),
            timeout: cfg.timeout,
            ids: LeaseIds::new(),
            about,
        })
    }

    /// Run a Redis call within the timeout.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LimitError> {
        timed(self.timeout, call).await
    }

    /// Run the check script: `spend` writes if all pass, otherwise it only looks. `ids` has a
    /// lease id for each concurrency check.
    async fn run(
        &self,
        checks: &[Check],
        plans: &[Plan],
        ids: &[Option<String>],
        spend: bool,
    ) -> Result<(bool, Vec<Raw>), LimitError> {
        let mut call = self.check.prepare_invoke();
        call.arg(if spend { "1" } else { "0" });
        for ((check, plan), id) in checks.iter().zip(plans).zip(ids) {
            match plan {
                Plan::Rate(g) => {
                    call.key(rate_key(check.key()));
                    call.arg("r").arg(g.interval).arg(g.tolerance).arg(g.cost);
                }
                Plan::Slots { limit, ttl } => {
                    call.key(slot_key(check.key()));
                    call.arg("c")
                        .arg(limit)
                        .arg(ttl)
                        .arg(id.as_deref().unwrap_or("-"));
                }
            }
        }
        let mut conn = self.conn.clone();
        let out: Vec<i64> = self.timed(call.invoke_async(&mut conn)).await?;
        parse(&out, checks.len())
    }

    fn lease(&self, check: &Check, ttl: u64, id: String) -> Lease {
        Lease {
            key: check.key().into(),
            ttl: Duration::from_micros(ttl),
            held: Held::Fleet(Slot {
                key: slot_key(check.key()),
                id,
                conn: Some(self.conn.clone()),
            }),
        }
    }
}

/// The script's answer: whether it spent, then four numbers per check.
fn parse(out: &[i64], n: usize) -> Result<(bool, Vec<Raw>), LimitError> {
    let wrong = || LimitError::Script(format!("answer of {} numbers for {n} checks", out.len()));
    let (spent, rest) = out.split_first().ok_or_else(wrong)?;
    if rest.len() != 4 * n {
        return Err(wrong());
    }
    let num = |v: i64| u64::try_from(v).map_err(|_| wrong());
    let raws = rest
        .chunks_exact(4)
        .map(|c| {
            Ok(Raw {
                allowed: c[0] == 1,
                remaining: num(c[1])?,
                reset: num(c[2])?,
                retry: num(c[3])?,
            })
        })
        .collect::<Result<Vec<_>, LimitError>>()?;
    Ok((*spent == 1, raws))
}

/// `redis host:port/db` with the user, never the password.
fn describe(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    let user = info
        .redis_settings()
        .username()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    format!(
        "{}://{user}{}/{} (timed by Redis, one script per request)",
        if tls { "rediss" } else { "redis" },
        info.addr(),
        info.redis_settings().db()
    )
}

#[async_trait]
impl Limiter for Fleet {
    /// A call that fails (a timeout above all) may still have run, or run later: the lease ids
    /// it would have added are removed right behind it on the same connection, so a failed
    /// call holds no slot. Its rate units, if it ran, stay spent: the error errs on the strict
    /// side.
    async fn check(&self, checks: &[Check]) -> Result<(Vec<Verdict>, Vec<Lease>), LimitError> {
        let plans = gcra::plans(checks)?;
        if checks.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids: Vec<Option<String>> = plans
            .iter()
            .map(|p| matches!(p, Plan::Slots { .. }).then(|| self.ids.next()))
            .collect();
        let (spent, raws) = match self.run(checks, &plans, &ids, true).await {
            Ok(v) => v,
            Err(e) => {
                let pairs = checks.iter().zip(&ids);
                let taken = pairs.filter_map(|(c, id)| Some((slot_key(c.key()), id.clone()?)));
                spawn_release(self.conn.clone(), taken.collect());
                return Err(e);
            }
        };
        let mut leases = Vec::new();
        if spent {
            for ((check, plan), id) in checks.iter().zip(&plans).zip(ids) {
                if let (Plan::Slots { ttl, .. }, Some(id)) = (plan, id) {
                    leases.push(self.lease(check, *ttl, id));
                }
            }
        }
        Ok((gcra::verdicts(&plans, &raws, spent), leases))
    }

    async fn release(&self, leases: Vec<Lease>) {
        let mut pairs = Vec::with_capacity(leases.len());
        for mut lease in leases {
            if let Held::Fleet(slot) = &mut lease.held {
                if slot.conn.take().is_some() {
                    pairs.push((std::mem::take(&mut slot.key), std::mem::take(&mut slot.id)));
                }
            }
        }
        if pairs.is_empty() {
            return;
        }
        if let Err(e) = self.timed(zrem(self.conn.clone(), &pairs)).await {
            tracing::debug!(error = %e, "lease release failed; the leases will expire");
        }
    }

    async fn renew(&self, leases: &[Lease]) -> Result<(), LimitError> {
        let mut call = self.renew.prepare_invoke();
        let mut any = false;
        for lease in leases {
            if let Held::Fleet(slot) = &lease.held {
                call.key(&slot.key);
                call.arg(&slot.id)
                    .arg(u64::try_from(lease.ttl.as_micros()).unwrap_or(u64::MAX));
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let lost: u64 = self.timed(call.invoke_async(&mut conn)).await?;
        match lost {
            0 => Ok(()),
            n => Err(LimitError::LeaseLost(
                usize::try_from(n).unwrap_or(usize::MAX),
            )),
        }
    }

    async fn usage(&self, check: &Check) -> Result<Verdict, LimitError> {
        let checks = std::slice::from_ref(check);
        let plans = gcra::plans(checks)?;
        let (_, raws) = self.run(checks, &plans, &[None], false).await?;
        gcra::verdicts(&plans, &raws, false)
            .pop()
            .ok_or_else(|| LimitError::Script("no verdict".into()))
    }

    async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        self.timed(redis::cmd("PING").query_async::<()>(&mut conn))
            .await
    }

    fn describe(&self) -> String {
        self.about.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_the_wrong_shape_are_script_errors() {
        assert!(matches!(parse(&[], 0), Err(LimitError::Script(_))));
        assert!(matches!(
            parse(&[1, 1, 0, 0], 1),
            Err(LimitError::Script(_))
        ));
        assert!(matches!(
            parse(&[1, 1, -1, 0, 0], 1),
            Err(LimitError::Script(_))
        ));
        let (spent, raws) = parse(&[1, 1, 4, 10, 0], 1).unwrap();
        assert!(spent);
        assert_eq!(
            raws[0],
            Raw {
                allowed: true,
                remaining: 4,
                reset: 10,
                retry: 0
            }
        );
    }

    #[test]
    fn lease_ids_are_unique_and_keys_prefixed() {
        let (a, b) = (LeaseIds::new(), LeaseIds::new());
        let ids = [a.next(), a.next(), b.next()];
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
        assert_eq!(
            rate_key("free-runs:alice"),
            "graphguard:limit:r:free-runs:alice"
        );
        assert_eq!(slot_key("t:acme"), "graphguard:limit:c:t:acme");
    }

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        let r = Fleet::open("redis://127.0.0.1:1", &LimitsConfig::default());
        assert!(matches!(r, Err(LimitError::Unavailable(_))));
        let r = Fleet::open("redis://[bad", &LimitsConfig::default());
        assert!(matches!(r, Err(LimitError::Invalid(_))));
    }
}
