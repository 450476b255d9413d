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
//! concurrency key no lease refers to is zero. A shard drops such keys when a request finds
//! its last sweep five seconds old, and when it is full; [`Local::evict_idle`] sweeps every
//! shard (for a timer, so that memory also comes back when traffic stops). A request that
//! needs a new key in a shard still full after a sweep is refused with `Unavailable` (the
//! caller's error policy decides), rather than forgetting a live key and letting its holder
//! start over.

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

/// Requests of up to this many checks are decided without allocating (but for the verdicts
/// and leases they return).
const INLINE: usize = 4;

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
    /// a dropped lease without it, so a count read meanwhile may still include a lease being
    /// dropped (too strict for an instant), never miss one that is held.
    slots: HashMap<Arc<str>, Arc<AtomicU64>, RandomState>,
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

    /// Drop idle keys from every shard now (each shard is locked in turn, briefly).
    pub fn evict_idle(&self) {
        let now = self.now();
        for shard in self.shards.iter() {
            lock(shard).sweep(now);
        }
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
        let n = checks.len();
        if n <= INLINE {
            let mut steps = [Step::EMPTY; INLINE];
            let mut locked: [Option<MutexGuard<'_, Table>>; INLINE] = Default::default();
            self.decide(checks, now, spend, &mut steps[..n], &mut locked)
        } else {
            let mut steps = vec![Step::EMPTY; n];
            let mut locked: Vec<Option<MutexGuard<'_, Table>>> = (0..n).map(|_| None).collect();
            self.decide(checks, now, spend, &mut steps, &mut locked)
        }
    }

    /// [`Local::run`] with room for a step and a guard per check.
    fn decide<'a>(
        &'a self,
        checks: &[Check],
        now: u64,
        spend: bool,
        steps: &mut [Step],
        locked: &mut [Option<MutexGuard<'a, Table>>],
    ) -> Result<(Vec<Verdict>, Vec<Lease>), LimitError> {
        for (step, check) in steps.iter_mut().zip(checks) {
            *step = Step::new(gcra::plan(check)?, self.shard_of(check.key()));
        }
        let locked = self.lock_homes(steps, locked);
        for table in locked.iter_mut().flatten() {
            if now >= table.next_sweep {
                table.sweep(now);
            }
        }
        evaluate(checks, steps, locked, now);
        let spent = spend && steps.iter().all(|s| s.raw.allowed);
        let mut leases = Vec::new();
        if spent {
            self.make_room(steps, locked, now)?;
            for (check, step) in checks.iter().zip(&*steps) {
                let Some(table) = locked[step.at].as_deref_mut() else {
                    continue; // every step's shard is locked
                };
                match (step.plan, step.tat) {
                    (Plan::Rate(_), Some(tat)) => table.set_tat(check.key(), tat),
                    (Plan::Slots { ttl, .. }, _) => leases.push(table.acquire(check.key(), ttl)),
                    (Plan::Rate(_), None) => {}
                }
            }
        }
        let verdicts = steps
            .iter()
            .map(|s| gcra::verdict(&s.plan, &s.raw, spent))
            .collect();
        Ok((verdicts, leases))
    }

    /// Lock the distinct shards of the steps in ascending order into the first places of
    /// `room`, noting in each step its shard's place; returns the places used. Ascending order:
    /// of two requests that share shards, neither can hold one the other waits for while
    /// waiting for one it holds.
    fn lock_homes<'r, 'a>(
        &'a self,
        steps: &mut [Step],
        room: &'r mut [Option<MutexGuard<'a, Table>>],
    ) -> &'r mut [Option<MutexGuard<'a, Table>>] {
        let mut used = 0;
        let mut above = None;
        // A request has a handful of checks: finding the next shard by scanning beats sorting.
        while let Some(home) = steps
            .iter()
            .map(|s| s.home)
            .filter(|&h| above.is_none_or(|a| h > a))
            .min()
        {
            for step in steps.iter_mut().filter(|s| s.home == home) {
                step.at = used;
            }
            room[used] = Some(lock(&self.shards[home]));
            used += 1;
            above = Some(home);
        }
        &mut room[..used]
    }

    /// Refuse (before anything is written) a request whose new keys do not fit in their shards
    /// even after idle keys are dropped.
    fn make_room(
        &self,
        steps: &[Step],
        locked: &mut [Option<MutexGuard<'_, Table>>],
        now: u64,
    ) -> Result<(), LimitError> {
        for (at, table) in locked.iter_mut().enumerate() {
            let Some(table) = table.as_deref_mut() else {
                continue;
            };
            let new = steps.iter().filter(|s| s.at == at && !s.known).count();
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

/// One check on its way through a request.
#[derive(Debug, Clone, Copy)]
struct Step {
    plan: Plan,
    /// Its shard.
    home: usize,
    /// Its shard's place among the request's locked shards.
    at: usize,
    /// Its outcome.
    raw: Raw,
    /// For a passing rate, the arrival time to store.
    tat: Option<u64>,
    /// Whether its key is in its table already (a new one needs room).
    known: bool,
}

impl Step {
    /// A placeholder, overwritten before use.
    const EMPTY: Step = Step::new(Plan::Slots { limit: 0, ttl: 0 }, 0);

    const fn new(plan: Plan, home: usize) -> Step {
        Step {
            plan,
            home,
            at: 0,
            raw: Raw::EMPTY,
            tat: None,
            known: false,
        }
    }
}

/// Decide every check against the tables as they are, with the effect of the request's own
/// earlier checks on the same key.
fn evaluate(
    checks: &[Check],
    steps: &mut [Step],
    locked: &[Option<MutexGuard<'_, Table>>],
    now: u64,
) {
    for (i, check) in checks.iter().enumerate() {
        let (done, rest) = steps.split_at_mut(i);
        let Some(step) = rest.first_mut() else {
            return;
        };
        let Some(table) = locked[step.at].as_deref() else {
            continue; // every step's shard is locked; a step left as is refuses
        };
        let key = check.key();
        let same = |j: &usize| same_limit(&checks[*j], check) && done[*j].raw.allowed;
        (step.raw, step.tat) = match step.plan {
            Plan::Rate(g) => {
                let stored = table.rates.get(key).copied();
                step.known = stored.is_some();
                let earlier = (0..i).rev().find(same).and_then(|j| done[j].tat);
                g.decide(now, earlier.or(stored).unwrap_or(0))
            }
            Plan::Slots { limit, .. } => {
                let stored = table.slots.get(key).map(|c| c.load(Ordering::Acquire));
                step.known = stored.is_some();
                let mine = (0..i).filter(same).count() as u64;
                (gcra::slots(limit, stored.unwrap_or(0) + mine), None)
            }
        };
    }
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
        // The lease shares the map's key: acquiring a known key allocates nothing.
        let (key, held) = match self.slots.get_key_value(key) {
            Some((k, h)) => (Arc::clone(k), Arc::clone(h)),
            None => {
                let (k, h): (Arc<str>, _) = (key.into(), Arc::new(AtomicU64::new(0)));
                self.slots.insert(Arc::clone(&k), Arc::clone(&h));
                (k, h)
            }
        };
        held.fetch_add(1, Ordering::AcqRel);
        Lease {
            key,
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
