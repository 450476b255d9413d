//! The in-process limiter: exact for one replica, shared by every serving thread.
//!
//! Keys live in shards (a power of two, sixteen per core, at least 64), each a mutex over two
//! hash maps: a rate key's theoretical arrival time and a concurrency key's lease counter. A
//! request locks the distinct shards of its keys in ascending order (so two requests can never
//! wait on each other in a cycle), decides every check, and writes only if all pass: that is
//! the all-or-nothing `governor` cannot give, having no way to un-spend. A lock is held for a
//! few hash lookups; two threads meet on one only when their keys share a shard.
//!
//! Memory is bounded: a rate key whose arrival time has passed is the same as no key, and a
//! concurrency key no lease refers to is zero; each shard drops such keys every few seconds,
//! and when it is full. A request that needs a new key in a shard still full after that is
//! refused with `Unavailable` (the caller's error policy decides), rather than forgetting a
//! live key and letting its holder start over.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use foldhash::fast::RandomState;

use super::gcra::{self, Plan, Raw};
use super::{Check, Held, Lease, LimitError, Limiter, Verdict};

/// How often a shard looks for idle keys, in microseconds.
const SWEEP_EVERY: u64 = 5_000_000;

/// The in-process limiter.
pub struct Local {
    shards: Box<[Shard]>,
    /// Picks a key's shard; a different seed from the maps' own, so the keys of one shard do
    /// not share their low hash bits inside its map.
    spread: RandomState,
    epoch: Instant,
    max_per_shard: usize,
}

/// One shard, on its own cache lines so that two shards' locks never share one.
#[repr(align(128))]
struct Shard(Mutex<Table>);

#[derive(Default)]
struct Table {
    /// Rate key → theoretical arrival time (microseconds since `epoch`).
    rates: HashMap<Box<str>, u64, RandomState>,
    /// Concurrency key → leases held. Incremented only under the shard's lock; decremented by
    /// a dropped lease without it, which can only make a concurrent count too high, never too
    /// low.
    slots: HashMap<Box<str>, Arc<AtomicU64>, RandomState>,
    next_sweep: u64,
}

/// A local lease's hold on its key's counter.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Local {
    /// A limiter holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Local {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cores * 16).next_power_of_two().clamp(64, 1024);
        let shards = (0..n).map(|_| Shard(Mutex::default())).collect();
        Local {
            shards,
            spread: RandomState::default(),
            epoch: Instant::now(),
            max_per_shard: max_keys.div_ceil(n).max(1),
        }
    }

    /// [`Limiter::check`] without the future: the limiter never waits.
    pub fn check_now(&self, checks: &[Check]) -> Result<(Vec<Verdict>, Vec<Lease>), LimitError> {
        self.run(checks, self.now(), true)
    }

    /// Keys held now, idle ones not yet evicted included.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let t = lock(s);
                t.rates.len() + t.slots.len()
            })
            .sum()
    }

    /// Microseconds since the limiter was made, from 1 (0 is a fresh key's arrival time).
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    fn shard_of(&self, key: &str) -> usize {
        // The shard count is a power of two.
        (self.spread.hash_one(key) as usize) & (self.shards.len() - 1)
    }

    /// Decide `checks` at `now`; spend them if `spend` and all pass.
    fn run(
        &self,
        checks: &[Check],
        now: u64,
        spend: bool,
    ) -> Result<(Vec<Verdict>, Vec<Lease>), LimitError> {
        let plans = gcra::plans(checks)?;
        let homes: Vec<usize> = checks.iter().map(|c| self.shard_of(c.key())).collect();
        let mut order = homes.clone();
        order.sort_unstable();
        order.dedup();
        let mut locked: Vec<(usize, MutexGuard<'_, Table>)> =
            order.iter().map(|&i| (i, lock(&self.shards[i]))).collect();
        let mut tables: Vec<&mut Table> = Vec::with_capacity(checks.len());
        for (_, guard) in &mut locked {
            if now >= guard.next_sweep {
                guard.sweep(now);
            }
        }
        let at = |home: usize| order.partition_point(|&i| i < home);
        let (raws, tats) = {
            let view: Vec<&Table> = locked.iter().map(|(_, g)| &**g).collect();
            evaluate(checks, &plans, |i| view[at(homes[i])], now)
        };
        let pass = raws.iter().all(|r| r.allowed);
        let mut leases = Vec::new();
        if pass && spend {
            tables.extend(locked.iter_mut().map(|(_, g)| &mut **g));
            self.make_room(checks, &homes, &order, &mut tables, now)?;
            for (i, check) in checks.iter().enumerate() {
                let table = &mut *tables[at(homes[i])];
                match (plans[i], tats[i]) {
                    (Plan::Rate(_), Some(tat)) => table.set_tat(check.key(), tat),
                    (Plan::Slots { ttl, .. }, _) => leases.push(table.acquire(check.key(), ttl)),
                    (Plan::Rate(_), None) => {}
                }
            }
        }
        Ok((gcra::verdicts(&plans, &raws, pass && spend), leases))
    }

    /// Refuse (before anything is written) a request whose new keys do not fit in their shards
    /// even after idle keys are dropped.
    fn make_room(
        &self,
        checks: &[Check],
        homes: &[usize],
        order: &[usize],
        tables: &mut [&mut Table],
        now: u64,
    ) -> Result<(), LimitError> {
        for (slot, &shard) in order.iter().enumerate() {
            let table = &mut *tables[slot];
            let new = checks
                .iter()
                .zip(homes)
                .filter(|(c, &h)| h == shard && !table.holds(c))
                .count();
            if new == 0 || table.len() + new <= self.max_per_shard {
                continue;
            }
            table.sweep(now);
            if table.len() + new > self.max_per_shard {
                return Err(LimitError::Unavailable(format!(
                    "the local limiter is full ({} keys per shard)",
                    self.max_per_shard
                )));
            }
        }
        Ok(())
    }
}

/// Decide every check against the tables as they are, with the effect of the request's own
/// earlier checks on the same key. Returns the outcomes and, per passing rate, the arrival
/// time to store.
fn evaluate<'t>(
    checks: &[Check],
    plans: &[Plan],
    table: impl Fn(usize) -> &'t Table,
    now: u64,
) -> (Vec<Raw>, Vec<Option<u64>>) {
    let mut raws: Vec<Raw> = Vec::with_capacity(checks.len());
    let mut tats: Vec<Option<u64>> = Vec::with_capacity(checks.len());
    for (i, (check, plan)) in checks.iter().zip(plans).enumerate() {
        let key = check.key();
        let same = |j: &usize| same_limit(&checks[*j], check) && raws[*j].allowed;
        let (raw, tat) = match *plan {
            Plan::Rate(g) => {
                let earlier = (0..i).rev().find(same).and_then(|j| tats[j]);
                let tat = earlier.or_else(|| table(i).rates.get(key).copied());
                g.decide(now, tat.unwrap_or(0))
            }
            Plan::Slots { limit, .. } => {
                let held = table(i)
                    .slots
                    .get(key)
                    .map_or(0, |c| c.load(Ordering::Acquire));
                let mine = (0..i).filter(same).count() as u64;
                (gcra::slots(limit, held + mine), None)
            }
        };
        raws.push(raw);
        tats.push(tat);
    }
    (raws, tats)
}

/// Whether two checks count against the same stored key (a rate and a concurrency limit
/// with one key name are kept apart).
fn same_limit(a: &Check, b: &Check) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && a.key() == b.key()
}

fn lock(shard: &Shard) -> MutexGuard<'_, Table> {
    // A panic while a shard was locked leaves it consistent: every write is one store.
    shard.0.lock().unwrap_or_else(|p| p.into_inner())
}

impl Table {
    fn len(&self) -> usize {
        self.rates.len() + self.slots.len()
    }

    fn holds(&self, check: &Check) -> bool {
        match check {
            Check::Rate { key, .. } => self.rates.contains_key(key.as_str()),
            Check::Concurrent { key, .. } => self.slots.contains_key(key.as_str()),
        }
    }

    /// Drop keys that are the same as no key: rates fully replenished, counters no lease
    /// refers to (leases clone the counter only under this lock, so none can appear meanwhile).
    fn sweep(&mut self, now: u64) {
        self.rates.retain(|_, tat| *tat > now);
        self.slots.retain(|_, held| Arc::strong_count(held) > 1);
        self.next_sweep = now.saturating_add(SWEEP_EVERY);
    }

    fn set_tat(&mut self, key: &str, tat: u64) {
        match self.rates.get_mut(key) {
            Some(t) => *t = tat,
            None => {
                self.rates.insert(key.into(), tat);
            }
        }
    }

    fn acquire(&mut self, key: &str, ttl: u64) -> Lease {
        let held = match self.slots.get(key) {
            Some(h) => Arc::clone(h),
            None => {
                let h = Arc::new(AtomicU64::new(0));
                self.slots.insert(key.into(), Arc::clone(&h));
                h
            }
        };
        held.fetch_add(1, Ordering::AcqRel);
        Lease {
            key: key.to_string(),
            ttl: Duration::from_micros(ttl),
            held: Held::Local(Slot(held)),
        }
    }
}

#[async_trait]
impl Limiter for Local {
    async fn check(&self, checks: &[Check]) -> Result<(Vec<Verdict>, Vec<Lease>), LimitError> {
        self.check_now(checks)
    }

    async fn release(&self, leases: Vec<Lease>) {
        drop(leases);
    }

    /// Local leases live as long as their holder; nothing to renew.
    async fn renew(&self, _leases: &[Lease]) -> Result<(), LimitError> {
        Ok(())
    }

    async fn usage(&self, check: &Check) -> Result<Verdict, LimitError> {
        let (verdicts, _) = self.run(std::slice::from_ref(check), self.now(), false)?;
        verdicts
            .into_iter()
            .next()
            .ok_or_else(|| LimitError::Script("no verdict".into()))
    }

    async fn ping(&self) -> Result<(), LimitError> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "local (in-process, {} shards, up to {} keys)",
            self.shards.len(),
            self.max_per_shard * self.shards.len()
        )
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
