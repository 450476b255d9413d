//! The policy's `limits:` section: quotas and rate limits per user, role or tenant.
//!
//! ```yaml
//! limits:
//!   - name: free-runs
//!     events: [threads:create_run]   # handler events; a batch counts once per run
//!     when: { roles: [free] }        # the same `when` as handler rules
//!     key: "{user.identity}"         # a template: identity, an attribute (tenant), a role
//!     rate: { requests: 20, per: 1h, burst: 5 }
//!   - name: tenant-streams
//!     events: [threads:create_run]
//!     key: "{user.attributes.org}"
//!     concurrent: 5                  # responses graphguard holds open at once
//!     on_error: allow                # what an unreachable limiter means (default: deny)
//! ```
//!
//! Compiled once with the policy (templates parsed, periods read, events validated); per
//! request, [`Limits::applicable`] says which limits match the request's events and user, with
//! the rendered key and the cost. Pure: the limiter that counts is elsewhere
//! (the top-level `limits` module).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::event::Event;
use crate::policy::config::WhenConfig;
use crate::policy::template::StrTemplate;
use crate::user::User;

/// One entry of `limits:`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Unique; names the limit in 429s, headers, metrics and the audit log.
    pub name: String,
    /// The handler events it counts (`threads:create_run`, `threads:create`, ...).
    pub events: Vec<String>,
    /// Applies only to users this holds for.
    pub when: Option<WhenConfig>,
    /// The key template (default `{user.identity}`).
    pub key: Option<String>,
    /// A rate: at most `requests` per `per`.
    pub rate: Option<RateConfig>,
    /// At most this many responses held open at once.
    pub concurrent: Option<u32>,
    /// `deny` (503, the default) or `allow` when the limiter cannot be reached.
    pub on_error: Option<OnError>,
}

/// A rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Requests per period.
    pub requests: u32,
    /// The period: `30s`, `1m`, `1h`, `1d`, `500ms`.
    pub per: String,
    /// Extra requests a fresh key may make at once (default 0).
    #[serde(default)]
    pub burst: u32,
}

/// What a limiter failure means for a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse with 503 (fail closed, the default).
    #[default]
    Deny,
    /// Let the request through as if the limit passed.
    Allow,
}

/// What a compiled limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// GCRA.
    Rate {
        /// Per period.
        requests: u32,
        /// The period.
        period: Duration,
        /// Extra at once.
        burst: u32,
    },
    /// Concurrent responses.
    Concurrent {
        /// At most this many.
        limit: u32,
    },
}

/// A compiled limit.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Its name (shared: metrics label it without a copy).
    pub name: Arc<str>,
    /// Its `RateLimit-Policy` list member, written once: `"free-runs";q=20;w=3600`.
    policy_member: Box<str>,
    events: Vec<Event>,
    when: Option<WhenConfig>,
    key: StrTemplate,
    /// What it counts.
    pub quota: Quota,
    /// What a limiter failure means.
    pub on_error: OnError,
}

/// A limit that applies to one request.
#[derive(Debug, Clone)]
pub struct Applied<'a> {
    /// The limit.
    pub limit: &'a Limit,
    /// The rendered key (`name:value`).
    pub key: String,
    /// Units the request takes.
    pub cost: u32,
}

impl Limit {
    /// The events it counts.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Its member of the IETF `RateLimit-Policy` field (draft-ietf-httpapi-ratelimit-headers):
    /// the name as a structured-field string, the quota and the window in seconds.
    pub fn policy_member(&self) -> &str {
        &self.policy_member
    }

    /// Its name as a structured-field string, as the `RateLimit` field's members start.
    pub fn header_name(&self) -> &str {
        // The member starts with the quoted name; a name is letters, digits, '-', '_' and '.'
        // (checked at compile), so the first `;` ends it.
        self.policy_member
            .split_once(';')
            .map_or(&*self.policy_member, |(n, _)| n)
    }

    /// The quota as the `RateLimit-Policy` header and the docs write it: `30 per 1m`.
    pub fn describe(&self) -> String {
        match self.quota {
            Quota::Rate {
                requests, period, ..
            } => format!("{requests} per {}", format_period(period)),
            Quota::Concurrent { limit } => format!("{limit} at once"),
        }
    }
}

/// `"name";q=20;w=3600` (a rate) or `"name";q=5` (concurrency).
fn policy_member(name: &str, quota: Quota) -> String {
    let name = sf_string(name);
    match quota {
        Quota::Rate {
            requests, period, ..
        } => format!("{name};q={requests};w={}", crate::clock::ceil_secs(period)),
        Quota::Concurrent { limit } => format!("{name};q={limit}"),
    }
}

/// A structured-field string (RFC 8941): quoted, `\` and `"` escaped, only printable ASCII
/// (others become `?`).
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// `1h`, `30s`, `250ms`: the largest unit that divides the period.
pub fn format_period(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// Every compiled limit.
#[derive(Debug, Clone, Default)]
pub struct Limits(Vec<Limit>);

/// Read `30s`, `5m`, `1h`, `1d`, `250ms`.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("period {s:?} needs a unit (ms, s, m, h, d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("period {s:?} must start with a whole number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "period {s:?}: unknown unit {unit:?} (ms, s, m, h, d)"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("period {s:?} must be longer than zero"));
    }
    if d > Duration::from_secs(366 * 86_400) {
        return Err(format!("period {s:?} is longer than a year"));
    }
    Ok(d)
}

impl Limits {
    /// The limits, in the order written.
    pub fn new(limits: Vec<Limit>) -> Limits {
        Limits(limits)
    }

    /// Whether any limit is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every limit.
    pub fn all(&self) -> &[Limit] {
        &self.0
    }

    /// The limits a request counts against: those with one of the request's events whose
    /// `when` holds for the user. `units` is how many of the event the request makes (a batch
    /// of runs: one per run). A key that cannot be rendered (a missing attribute) is an error,
    /// never an empty key that would pool unrelated users.
    pub fn applicable<'a>(
        &'a self,
        events: &[Event],
        units: u32,
        user: &User,
    ) -> Result<Vec<Applied<'a>>, String> {
        let mut out = Vec::new();
        for l in &self.0 {
            if !l.events.iter().any(|e| events.contains(e)) {
                continue;
            }
            if !l.when.as_ref().is_none_or(|w| super::when_holds(w, user)) {
                continue;
            }
            let mut key = String::with_capacity(l.name.len() + 1 + user.identity.len());
            key.push_str(&l.name);
            key.push(':');
            l.key
                .render_into(user, &mut key)
                .map_err(|e| format!("limit {}: key: {e}", l.name))?;
            let cost = match l.quota {
                Quota::Rate { .. } => units.max(1),
                Quota::Concurrent { .. } => 1,
            };
            out.push(Applied {
                limit: l,
                key,
                cost,
            });
        }
        Ok(out)
    }
}

impl Limit {
    /// Compile one entry; an error is `(key under the entry, message)`.
    pub fn compile(c: &LimitConfig) -> Result<Limit, (String, String)> {
        compile_one(c)
    }
}

fn compile_one(c: &LimitConfig) -> Result<Limit, (String, String)> {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if c.name.is_empty() || !c.name.chars().all(name_ok) {
        // A name is the prefix of every key the limit counts (`name:value`): a `:` in it could
        // make two limits count in one bucket.
        return Err((
            "name".into(),
            format!("{:?}: a name is letters, digits, '-', '_' and '.'", c.name),
        ));
    }
    let mut events = Vec::with_capacity(c.events.len());
    if c.events.is_empty() {
        return Err(("events".into(), "name at least one event".into()));
    }
    for (j, e) in c.events.iter().enumerate() {
        let ev: Event = e
            .parse()
            .map_err(|m: crate::event::EventParseError| (format!("events[{j}]"), m.to_string()))?;
        events.push(ev);
    }
    let key = StrTemplate::parse(c.key.as_deref().unwrap_or("{user.identity}"))
        .map_err(|m| ("key".to_string(), m))?;
    if key.is_list() {
        return Err((
            "key".into(),
            "a key is one value: for a bucket shared by a role, write a literal key and name \
             the role in `when`"
                .into(),
        ));
    }
    if let Some(w) = &c.when {
        if w.roles.is_none() && w.permissions.is_none() && w.identity.is_none() {
            return Err((
                "when".into(),
                "give at least one of roles, permissions, identity".into(),
            ));
        }
    }
    let quota = match (&c.rate, c.concurrent) {
        (Some(r), None) => {
            let period = parse_period(&r.per).map_err(|m| ("rate.per".to_string(), m))?;
            if r.requests == 0 {
                return Err(("rate.requests".into(), "must be at least 1".into()));
            }
            if period / r.requests < Duration::from_micros(1) {
                return Err((
                    "rate".into(),
                    format!(
                        "{} per {} is more than one per microsecond",
                        r.requests, r.per
                    ),
                ));
            }
            if r.requests.checked_add(r.burst).is_none() {
                return Err(("rate.burst".into(), "requests + burst is too large".into()));
            }
            Quota::Rate {
                requests: r.requests,
                period,
                burst: r.burst,
            }
        }
        (None, Some(0)) => return Err(("concurrent".into(), "must be at least 1".into())),
        (None, Some(n)) => Quota::Concurrent { limit: n },
        _ => {
            return Err((
                "rate".into(),
                "give exactly one of rate and concurrent".into(),
            ))
        }
    };
    Ok(Limit {
        name: c.name.as_str().into(),
        policy_member: policy_member(&c.name, quota).into(),
        events,
        when: c.when.clone(),
        key,
        quota,
        on_error: c.on_error.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> LimitConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn user(identity: &str, roles: &[&str], org: Option<&str>) -> User {
        let mut u = User {
            identity: identity.into(),
            ..User::default()
        };
        u.roles = roles.iter().map(|r| r.to_string()).collect();
        if let Some(org) = org {
            u.attributes.insert("org".into(), org.into());
        }
        u
    }

    #[test]
    fn periods_read_their_unit_and_refuse_the_rest() {
        assert_eq!(parse_period("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_period("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_period("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_period("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["1w", "h", "10", "0s", "-1s", "1.5h", "400d"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        assert_eq!(format_period(Duration::from_secs(3600)), "1h");
        assert_eq!(format_period(Duration::from_secs(90)), "90s");
        assert_eq!(format_period(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn compile_refuses_impossible_limits_naming_the_key() {
        let cases = [
            (
                "name: a\nevents: []\nrate: {requests: 1, per: 1s}",
                "events",
            ),
            (
                "name: a\nevents: [threads:fly]\nrate: {requests: 1, per: 1s}",
                "events[0]",
            ),
            (
                "name: a\nevents: [threads:create]\nrate: {requests: 0, per: 1s}",
                "rate.requests",
            ),
            (
                "name: a\nevents: [threads:create]\nrate: {requests: 2000000, per: 1s}",
                "rate",
            ),
            (
                "name: a\nevents: [threads:create]\nconcurrent: 0",
                "concurrent",
            ),
            ("name: a\nevents: [threads:create]", "rate"),
            (
                "name: a\nevents: [threads:create]\nconcurrent: 1\nrate: {requests: 1, per: 1s}",
                "rate",
            ),
            (
                "name: a\nevents: [threads:create]\nconcurrent: 1\nkey: '{user.roles}'",
                "key",
            ),
            (
                "name: a\nevents: [threads:create]\nconcurrent: 1\nkey: '{user.nope}'",
                "key",
            ),
            (
                "name: a\nevents: [threads:create]\nconcurrent: 1\nwhen: {}",
                "when",
            ),
            ("name: ' '\nevents: [threads:create]\nconcurrent: 1", "name"),
            (
                "name: 'a:b'\nevents: [threads:create]\nconcurrent: 1",
                "name",
            ),
        ];
        for (yaml, key) in cases {
            let err = Limit::compile(&config(yaml)).unwrap_err();
            assert_eq!(err.0, key, "{yaml}: {err:?}");
        }
        assert!(serde_yaml_ng::from_str::<LimitConfig>(
            "name: a\nevents: []\nrate: {requests: 1, per: 1s, every: 2}"
        )
        .is_err());
    }

    #[test]
    fn names_are_structured_field_strings() {
        assert_eq!(sf_string("free-runs"), "\"free-runs\"");
        assert_eq!(sf_string("a\"b\\c\u{e9}"), "\"a\\\"b\\\\c?\"");
    }

    #[test]
    fn header_members_are_written_at_compile() {
        let rate = Limit::compile(&config(
            "name: free\nevents: [threads:create_run]\nrate: {requests: 20, per: 1500ms}",
        ))
        .unwrap();
        assert_eq!(rate.policy_member(), "\"free\";q=20;w=2");
        assert_eq!(rate.header_name(), "\"free\"");
        let conc = Limit::compile(&config(
            "name: org.streams\nevents: [threads:create_run]\nconcurrent: 5",
        ))
        .unwrap();
        assert_eq!(conc.policy_member(), "\"org.streams\";q=5");
        assert_eq!(conc.header_name(), "\"org.streams\"");
    }

    #[test]
    fn applicable_matches_events_and_when_and_renders_the_key() {
        let limits = Limits::new(vec![
            Limit::compile(&config("name: free\nevents: [threads:create_run]\nwhen: {roles: [free]}\nrate: {requests: 20, per: 1h, burst: 5}")).unwrap(),
            Limit::compile(&config("name: org\nevents: [threads:create_run, threads:create]\nkey: '{user.attributes.org}'\nconcurrent: 5")).unwrap(),
        ]);
        let run: Event = "threads:create_run".parse().unwrap();
        let create: Event = "threads:create".parse().unwrap();
        let alice = user("alice", &["free"], Some("acme"));
        let got = limits.applicable(&[run], 3, &alice).unwrap();
        let keys: Vec<_> = got.iter().map(|a| (a.key.as_str(), a.cost)).collect();
        assert_eq!(keys, [("free:alice", 3), ("org:acme", 1)]);
        assert_eq!(got[0].limit.describe(), "20 per 1h");
        // Outside `when`, and for an event no limit names.
        let paid = user("bob", &["paid"], Some("acme"));
        assert_eq!(limits.applicable(&[run], 1, &paid).unwrap().len(), 1);
        assert!(limits
            .applicable(&["threads:read".parse().unwrap()], 1, &alice)
            .unwrap()
            .is_empty());
        assert_eq!(
            limits.applicable(&[create], 1, &paid).unwrap()[0].key,
            "org:acme"
        );
        // A key that cannot be rendered is an error, never a shared empty key.
        let nobody = user("carol", &[], None);
        assert!(limits
            .applicable(&[create], 1, &nobody)
            .unwrap_err()
            .contains("org"));
    }
}
