//! The decision: from a classified request, the user and the facts looked up so far, either
//! the next fact needed or the final [`Decision`].
//!
//! Pure: no I/O, no clock. The proxy calls [`decide`] in a loop, fetching each [`Target`] it
//! asks for (a resource's metadata from the upstream, cached), until it gets a decision. Each
//! [`Op`] below follows the route's row in docs/semantics.md §5: which handlers run,
//! in which order, what the filter is checked against, and what a mismatch looks like.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

use crate::body::splice::{merge_object_pairs, pairs, BodyError, NewBody, ObjectBody};
use crate::error::GatewayError;
use crate::event::{Action, Event, Resource};
use crate::policy::config::NamespaceMode;
use crate::policy::filter::ResolvedFilter;
use crate::policy::webhook::{self, Verdict};
use crate::policy::{Grant, Policy};
use crate::routes::fields::{Kind, Shape, RESERVED_CONFIGURABLE_KEYS};
use crate::routes::{
    assistant_ref, canonical_id, system_assistant_id, Admission, BodyKind, Miss, Op, RouteMatch,
};
use crate::user::User;

/// Maximum JSON nesting accepted in a body the gateway reads.
pub const MAX_JSON_DEPTH: usize = 64;

/// A resource whose metadata a decision needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A thread by id.
    Thread(String),
    /// An assistant by id (or graph name).
    Assistant(String),
    /// A cron by id.
    Cron(String),
    /// A store item by namespace (dot-joined) and key.
    StoreItem(String, String),
    /// The addresses a host name resolves to (a webhook's host), as a JSON list of strings.
    Host(String),
}

impl Target {
    /// The upstream path that returns the resource as JSON.
    pub fn path(&self) -> String {
        match self {
            Target::Thread(id) => format!("/threads/{id}"),
            Target::Assistant(id) => format!("/assistants/{id}"),
            Target::Cron(id) => format!("/runs/crons/{id}"),
            Target::StoreItem(ns, key) => {
                let q = form_urlencoded::Serializer::new(String::new())
                    .append_pair("namespace", ns)
                    .append_pair("key", key)
                    .finish();
                format!("/store/items?{q}")
            }
            Target::Host(host) => format!("dns:{host}"),
        }
    }

    /// The tags access policies read: a store item's `value`, anything else's `metadata`.
    pub fn tags(&self, v: &Value) -> Map<String, Value> {
        match self {
            Target::StoreItem(..) => v
                .get("value")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            _ => metadata_of(v),
        }
    }
}

/// A looked-up resource: its JSON, or `None` if it does not exist.
pub type Fetched = Option<Arc<Value>>;

/// Facts gathered for one request.
#[derive(Debug, Default, Clone)]
pub struct Facts(Vec<(Target, Fetched)>);

impl Facts {
    /// Record a fact.
    pub fn insert(&mut self, t: Target, f: Fetched) {
        self.0.push((t, f));
    }
    fn get(&self, t: &Target) -> Option<&Fetched> {
        self.0.iter().find(|(k, _)| k == t).map(|(_, v)| v)
    }
}

/// The parsed request body, as the route's [`BodyKind`] wants it.
#[derive(Debug)]
pub enum Body<'a> {
    /// Not read.
    Opaque,
    /// A JSON object.
    Object(ObjectBody<'a>),
    /// A JSON array (run batch).
    Array(Vec<ObjectBody<'a>>),
}

/// Parse a body for a route. Errors are the 4xx the client gets.
pub fn parse_body<'a>(route: &RouteMatch, raw: &'a [u8]) -> Result<Body<'a>, GatewayError> {
    match route.route.body {
        BodyKind::Opaque => Ok(Body::Opaque),
        BodyKind::Object(_) => {
            let src: &'a [u8] = if raw.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                raw
            };
            ObjectBody::parse(src, MAX_JSON_DEPTH)
                .map(Body::Object)
                .map_err(body_error)
        }
        BodyKind::Array(_) => {
            // Each element is spliced like an object body, so numbers and every other byte
            // the client sent reach the server unchanged.
            let items: Vec<&'a serde_json::value::RawValue> =
                serde_json::from_slice(raw).map_err(|_| {
                    GatewayError::unprocessable("Request body must be a JSON array of objects")
                })?;
            let items = items
                .into_iter()
                .map(|item| {
                    ObjectBody::parse(item.get().as_bytes(), MAX_JSON_DEPTH).map_err(|e| match e {
                        BodyError::NotAnObject => {
                            GatewayError::unprocessable("Each batch item must be a JSON object")
                        }
                        other => body_error(other),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Body::Array(items))
        }
    }
}

fn body_error(e: BodyError) -> GatewayError {
    match e {
        BodyError::InvalidJson(_) => GatewayError::unprocessable("Invalid JSON in request body"),
        BodyError::NotAnObject => GatewayError::unprocessable("Request body must be a JSON object"),
        BodyError::DuplicateKey(k) => {
            GatewayError::bad_request(format!("Duplicate key {k:?} in request body"))
        }
        BodyError::TooDeep => GatewayError::bad_request(format!(
            "Request body nests deeper than {MAX_JSON_DEPTH} levels"
        )),
    }
}

/// What the proxy does with the upstream's response.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponsePlan {
    /// Stream it back unchanged.
    Stream,
    /// The filter cannot be pushed into the upstream search: page through the upstream's
    /// results from offset 0, keep the items that pass, and answer the requested window (or
    /// the count) with honest pagination headers.
    Search(SearchPlan),
    /// Drop the items of a JSON array response whose metadata fails the filter; if none is
    /// left, answer `empty` instead.
    FilterList {
        /// The filter on each item's `metadata`.
        filter: ResolvedFilter,
        /// The refusal when nothing passes.
        empty: Option<GatewayError>,
    },
    /// Store search: drop items whose `value` fails the filter.
    StoreItems {
        /// The filter on each item's `value`.
        filter: Option<ResolvedFilter>,
        /// Access-policy events evaluated on each item's `value`.
        access: Vec<Event>,
    },
}

/// A search the gateway completes itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    /// The upstream search path (`/threads/search` ...), also for counts.
    pub path: &'static str,
    /// Whether the client asked for a count.
    pub count: bool,
    /// Filter on each item's `metadata`.
    pub filter: Option<ResolvedFilter>,
    /// Filter on the metadata of each item's thread (cron search), looked up by `thread_id`.
    pub thread_filter: Option<ResolvedFilter>,
    /// The client's window.
    pub limit: u64,
    /// The client's window.
    pub offset: u64,
    /// Access-policy events evaluated on each item's tags.
    pub access: Vec<Event>,
}

/// The request to send upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Replacement body (`None`: forward the original bytes).
    pub body: Option<NewBody>,
    /// Replacement query string (`None`: unchanged).
    pub query: Option<String>,
    /// What to do with the response.
    pub response: ResponsePlan,
    /// Cached lookups made stale by this request.
    pub invalidate: Vec<Target>,
    /// Whether the user is forwarded in headers (false for public routes).
    pub authenticated: bool,
}

/// A response the gateway answers itself (not an error), e.g. an empty search.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The final outcome. (Not boxed: one outcome per request, moved out of the decision.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Forward upstream.
    Forward(Forward),
    /// Refuse.
    Refuse(GatewayError),
    /// Answer directly.
    Reply(Reply),
}

/// One handler call, for logs, metrics and explain.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The event.
    pub event: Event,
    /// The handler that ran (None: no handler).
    pub handler: Option<Arc<str>>,
    /// The rule that applied.
    pub rule: Option<usize>,
    /// Whether the handler allowed (a filter may still hide the resource).
    pub allowed: bool,
    /// The filter the handler returned (non-empty only).
    pub filter: Option<Arc<ResolvedFilter>>,
    /// The metadata keys the handler stamps.
    pub stamped: Arc<[String]>,
}

/// A decision with the steps that led to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The handler calls, in order.
    pub steps: Vec<Step>,
    /// Access-policy decisions made (roles and policies), in order.
    pub access: Vec<crate::policy::access::AccessDecision>,
    /// The outcome.
    pub outcome: Outcome,
}

/// The result of one call to [`decide`]. (Not boxed: a decision is made once per request.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Look this up and call again.
    Need(Target),
    /// Done.
    Done(Decision),
}

/// Everything a decision reads.
#[derive(Debug)]
pub struct Input<'a> {
    /// The classified route.
    pub route: &'a RouteMatch,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The parsed body.
    pub body: &'a Body<'a>,
}

/// Decide a request (see the module doc).
pub fn decide(policy: &Policy, user: &User, input: &Input<'_>, facts: &Facts) -> Next {
    decide_with_cache(policy, user, input, facts, &|_| None)
}

/// [`decide`], reading facts missing from `facts` from `cached` first (a look into the
/// lookup cache, no I/O) and asking for a lookup only when that has nothing. A warm cache
/// then decides in one pass instead of one per fact. Each fact is read from the cache at most
/// once per call, so one decision sees one version of each resource.
pub fn decide_with_cache(
    policy: &Policy,
    user: &User,
    input: &Input<'_>,
    facts: &Facts,
    cached: &dyn Fn(&Target) -> Option<Fetched>,
) -> Next {
    let mut cx = Cx {
        policy,
        user,
        input,
        facts,
        cached,
        peeked: std::cell::RefCell::new(Vec::new()),
        steps: Vec::new(),
        access: Vec::new(),
        subject: Subject::None,
        per_item: Vec::new(),
        edits: Vec::new(),
        item_edits: Vec::new(),
    };
    let outcome = match cx.run() {
        Ok(o) => o,
        Err(Stop::Need(t)) => return Next::Need(t),
        Err(Stop::Refuse(e)) => Outcome::Refuse(e),
    };
    Next::Done(Decision {
        steps: cx.steps,
        access: cx.access,
        outcome,
    })
}

enum Stop {
    Need(Target),
    Refuse(GatewayError),
}

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Self {
        Stop::Refuse(e)
    }
}

/// A step of the decision: its value, or the end of the decision (a refusal, or a fact to
/// look up before deciding again).
type Decided<THREADS> = Result<THREADS, Stop>;

struct Cx<'a> {
    policy: &'a Policy,
    user: &'a User,
    input: &'a Input<'a>,
    facts: &'a Facts,
    /// Facts found in the lookup cache (see [`decide_with_cache`]).
    cached: &'a dyn Fn(&Target) -> Option<Fetched>,
    /// The facts read from `cached` so far.
    peeked: std::cell::RefCell<Vec<(Target, Fetched)>>,
    steps: Vec<Step>,
    access: Vec<crate::policy::access::AccessDecision>,
    /// What access policies read tags from for the next events.
    subject: Subject,
    /// Access events to evaluate on each result item (searches).
    per_item: Vec<Event>,
    /// Edits of the body's top-level members that every forward carries (identity keys
    /// removed from configuration objects), made by [`Cx::check_fields`].
    edits: Vec<Edit>,
    /// The same for each item of an array body (run batch).
    item_edits: Vec<Vec<Edit>>,
}

/// A body member's new raw value.
type Edit = (&'static str, Vec<u8>);

/// Where the resource's tags come from for access policies.
#[derive(Clone)]
enum Subject {
    /// No resource (tags empty).
    None,
    /// A looked-up resource.
    Target(Target),
    /// Known tags (a create body's metadata after stamping, a store put's value).
    Tags(Map<String, Value>),
    /// Each item of the response (searches).
    PerItem,
    /// A create body: its `metadata` after the handler's stamping (the handler runs first).
    CreateBody,
    /// Checked later by the op itself (the store: the item's final namespace is known only
    /// after the handler's namespace rule).
    Deferred,
}

const THREADS: Resource = Resource::Threads;
const ASSISTANTS: Resource = Resource::Assistants;
const CRONS: Resource = Resource::Crons;
const STORE: Resource = Resource::Store;

fn forward() -> Forward {
    Forward {
        body: None,
        query: None,
        response: ResponsePlan::Stream,
        invalidate: Vec::new(),
        authenticated: true,
    }
}

/// A resource's `metadata` object (empty when absent or not an object).
pub fn metadata_of(v: &Value) -> Map<String, Value> {
    metadata_ref(v).clone()
}

/// A resource's `metadata` object, borrowed (empty when absent or not an object).
pub fn metadata_ref(v: &Value) -> &Map<String, Value> {
    v.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| empty_map())
}

/// An empty JSON object, for borrowed defaults.
pub fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    &EMPTY
}

impl<'a> Cx<'a> {
    /// Roles and access policies for an event on the current subject (the tables of docs/access-control.md),
    /// before the handler runs on what they allow.
    fn check_access(&mut self, event: Event) -> Decided<()> {
        let ac = &self.policy.access;
        if !ac.is_enabled() {
            return Ok(());
        }
        let needs_tags = ac.needs_tags(self.user, event);
        let tags = match (&self.subject, needs_tags) {
            (Subject::Deferred, _) => return Ok(()),
            (_, false) | (Subject::None, _) | (Subject::CreateBody, _) => Map::new(),
            (Subject::PerItem, true) => {
                if !self.per_item.contains(&event) {
                    self.per_item.push(event);
                }
                return Ok(());
            }
            (Subject::Tags(t), true) => t.clone(),
            (Subject::Target(t), true) => {
                let t = t.clone();
                match self.fact(t.clone())? {
                    Some(v) => t.tags(&v),
                    None => Map::new(),
                }
            }
        };
        let d = ac.decide(self.user, event, &tags);
        let allowed = d.allowed;
        let reason = d.reason;
        self.access.push(d);
        if !allowed {
            return Err(GatewayError::forbidden(match reason {
                crate::policy::access::Reason::DenyWins => {
                    format!("Forbidden: {event} is denied by an access policy")
                }
                _ => format!("Forbidden: no role or access policy grants {event}"),
            })
            .into());
        }
        Ok(())
    }

    /// A create: the handler stamps first, then access policies read the stamped metadata.
    fn grant_create(&mut self, event: Event) -> Decided<Grant> {
        let r = self.policy.evaluate(event, self.user);
        self.record(event, &r);
        let g = r?;
        if self.policy.access.is_enabled() {
            let mut tags = match self.input.body {
                Body::Object(o) => match o.get::<Value>("metadata").map_err(body_error)? {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                },
                _ => Map::new(),
            };
            if let Some(md) = &g.metadata {
                for (k, v) in md {
                    tags.insert(k.clone(), v.clone());
                }
            }
            let saved = std::mem::replace(&mut self.subject, Subject::Tags(tags));
            let checked = self.check_access(event);
            self.subject = saved;
            if let Err(e) = checked {
                if let Some(last) = self.steps.last_mut() {
                    last.allowed = false;
                }
                return Err(e);
            }
        }
        Ok(g)
    }

    /// Record a handler call.
    fn record(&mut self, event: Event, r: &Result<Grant, GatewayError>) {
        let step = match r {
            Ok(g) => Step {
                event,
                handler: g.handler.clone(),
                rule: g.rule,
                allowed: true,
                filter: g.filter.clone().filter(|f| !f.is_empty()),
                stamped: g.stamped.clone(),
            },
            Err(_) => Step {
                event,
                handler: self.policy.handler_for(event).map(|h| h.shared_key.clone()),
                rule: None,
                allowed: false,
                filter: None,
                stamped: Arc::default(),
            },
        };
        self.steps.push(step);
    }

    /// Set where access policies read tags from.
    fn on(&mut self, s: Subject) {
        self.subject = s;
    }

    /// Run the access check and then the handler for an event; a refusal stops the decision.
    fn grant(&mut self, resource: Resource, action: Action) -> Decided<Grant> {
        let event = Event::new(resource, action);
        if matches!(self.subject, Subject::CreateBody) {
            return self.grant_create(event);
        }
        if let Err(e) = self.check_access(event) {
            if let Stop::Refuse(_) = &e {
                self.steps.push(Step {
                    event,
                    handler: None,
                    rule: None,
                    allowed: false,
                    filter: None,
                    stamped: Arc::default(),
                });
            }
            return Err(e);
        }
        let r = self.policy.evaluate(event, self.user);
        self.record(event, &r);
        Ok(r?)
    }

    /// A looked-up fact, or stop and ask for it.
    fn fact(&self, t: Target) -> Decided<Option<Arc<Value>>> {
        if let Some(f) = self.facts.get(&t) {
            return Ok(f.clone());
        }
        let mut peeked = self.peeked.borrow_mut();
        if let Some((_, f)) = peeked.iter().find(|(k, _)| *k == t) {
            return Ok(f.clone());
        }
        match (self.cached)(&t) {
            Some(f) => {
                peeked.push((t, f.clone()));
                Ok(f)
            }
            None => Err(Stop::Need(t)),
        }
    }

    /// LangGraph's by-id check: with an active filter the resource must exist and pass.
    fn check(&self, g: &Grant, t: Target, miss: Miss, id: &str) -> Decided<()> {
        if let Some(f) = g.active_filter() {
            match self.fact(t)? {
                Some(v) if f.matches(metadata_ref(&v)) => {}
                _ => return Err(miss.error(id).into()),
            }
        }
        Ok(())
    }

    fn obj(&self) -> Decided<&'a ObjectBody<'a>> {
        match self.input.body {
            Body::Object(o) => Ok(o),
            _ => Err(GatewayError::internal("route body kind mismatch").into()),
        }
    }

    fn str_field(&self, key: &str) -> Decided<Option<String>> {
        match self.obj()?.get::<Value>(key).map_err(body_error)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(GatewayError::unprocessable(format!("{key} must be a string")).into()),
        }
    }

    fn param(&self, v: &Option<String>) -> Decided<String> {
        v.clone()
            .ok_or_else(|| GatewayError::internal("missing path parameter").into())
    }

    /// Check the body's fields against the route's inventory, decide the route, and carry the
    /// field edits into whatever is forwarded.
    fn run(&mut self) -> Decided<Outcome> {
        self.check_fields()?;
        let mut outcome = self.route()?;
        if let Outcome::Forward(f) = &mut outcome {
            if f.body.is_none() && !self.edits.is_empty() {
                f.body = Some(self.body_with(&[])?);
            }
        }
        Ok(outcome)
    }

    /// Every top-level field of the body must be in the route's inventory
    /// ([`crate::routes::fields`]); each one present is checked for its kind: ids canonical,
    /// assistants resolvable, webhooks allowed, identity keys removed from configuration
    /// objects (the edits are kept for the forward).
    fn check_fields(&mut self) -> Decided<()> {
        match (self.input.body, self.input.route.route.body) {
            (Body::Object(o), BodyKind::Object(shape)) => {
                self.edits = self.vet(o, shape)?;
            }
            (Body::Array(items), BodyKind::Array(shape)) => {
                let mut all = Vec::with_capacity(items.len());
                for item in items {
                    all.push(self.vet(item, shape)?);
                }
                self.item_edits = all;
            }
            _ => {}
        }
        Ok(())
    }

    /// [`Cx::check_fields`] for one object of a shape.
    fn vet(&self, o: &ObjectBody<'_>, shape: &'static Shape) -> Decided<Vec<Edit>> {
        let mut edits = Vec::new();
        for field in shape.fields {
            let Some(raw) = o.get_raw(field.name) else {
                continue;
            };
            let v = || -> Decided<Value> {
                serde_json::from_slice(raw).map_err(|_| body_error(BodyError::NotAnObject).into())
            };
            match field.kind {
                Kind::Plain | Kind::Metadata | Kind::Route => {}
                Kind::Id(of) => match v()? {
                    Value::Null => {}
                    Value::String(id) => canonical_id(of, &id).map(drop)?,
                    _ => return Err(must_be(field.name, "a string")),
                },
                Kind::Ids(of) => match v()? {
                    Value::Null => {}
                    Value::Array(items) => {
                        for item in items {
                            match item {
                                Value::String(id) => canonical_id(of, &id).map(drop)?,
                                _ => return Err(must_be(field.name, "a list of strings")),
                            }
                        }
                    }
                    _ => return Err(must_be(field.name, "a list of strings")),
                },
                Kind::Assistant => match v()? {
                    Value::Null => {}
                    Value::String(a) => assistant_ref(&a).map(drop)?,
                    _ => return Err(must_be(field.name, "a string")),
                },
                Kind::Config => {
                    if let Some(config) = self.scrub_config(raw)? {
                        edits.push((field.name, config));
                    }
                }
                Kind::Context | Kind::Checkpoint => {
                    if let Some(scrubbed) = self.scrub(raw)? {
                        edits.push((field.name, scrubbed));
                    }
                }
                Kind::Webhook => match v()? {
                    Value::Null => {}
                    Value::String(url) => self.check_webhook(&url)?,
                    _ => return Err(must_be(field.name, "a string")),
                },
            }
        }
        if let Some(unknown) = o.keys().find(|k| shape.kind(k).is_none()) {
            return Err(GatewayError::unprocessable(format!(
                "Unknown field {unknown:?} in {}: graphguard forwards only the fields the agent \
                 server's schema names",
                shape.name
            ))
            .into());
        }
        Ok(edits)
    }

    /// A run configuration with identity keys removed from its `configurable`, if any were.
    fn scrub_config(&self, raw: &[u8]) -> Decided<Option<Vec<u8>>> {
        if raw.first() != Some(&b'{') {
            return Ok(None);
        }
        let config = ObjectBody::parse(raw, MAX_JSON_DEPTH).map_err(body_error)?;
        let Some(inner) = config.get_raw("configurable") else {
            return Ok(None);
        };
        Ok(self
            .scrub(inner)?
            .map(|c| config.splice(&[("configurable", Some(&c))])))
    }

    /// A JSON object with identity keys removed, if it had any: the names of the headers that
    /// carry the user (whatever `settings.user_headers` calls them, in any case, and anything
    /// under `x-graphguard-`), and LangGraph's reserved keys. A run fired by a cron has no
    /// request headers, so a client's copy would be all its graph sees.
    fn scrub(&self, raw: &[u8]) -> Decided<Option<Vec<u8>>> {
        if raw.first() != Some(&b'{') {
            return Ok(None);
        }
        let o = ObjectBody::parse(raw, MAX_JSON_DEPTH).map_err(body_error)?;
        let doomed: Vec<(&str, Option<&[u8]>)> = o
            .keys()
            .filter(|k| self.is_identity_key(k))
            .map(|k| (k, None))
            .collect();
        Ok((!doomed.is_empty()).then(|| o.splice(&doomed)))
    }

    fn is_identity_key(&self, key: &str) -> bool {
        let lower = key.to_ascii_lowercase();
        lower.starts_with("x-graphguard-")
            || self
                .policy
                .user_headers
                .strip
                .iter()
                .any(|h| h.as_str() == lower)
            || RESERVED_CONFIGURABLE_KEYS.contains(&key)
    }

    /// A webhook URL the server would call: refused (403) unless `settings.webhooks` allows it.
    fn check_webhook(&self, url: &str) -> Decided<()> {
        let refuse = |why: String| -> Stop { GatewayError::forbidden(why).into() };
        match self.policy.webhooks.check(url).map_err(refuse)? {
            Verdict::Allowed => Ok(()),
            Verdict::IfPublic(host) => {
                let addrs: Vec<std::net::IpAddr> = self
                    .fact(Target::Host(host.clone()))?
                    .as_deref()
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                if addrs.is_empty() {
                    return Err(refuse(format!("webhook host {host} does not resolve")));
                }
                if !webhook::all_public(&addrs) {
                    return Err(refuse(format!(
                        "webhook host {host} resolves to an address that is not public"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The body with `op`'s edits and the field edits of [`Cx::check_fields`].
    fn body_with(&self, op: &[(&str, Option<&[u8]>)]) -> Decided<NewBody> {
        let o = self.obj()?;
        if self.edits.is_empty() {
            return Ok(o.splice_body(op));
        }
        let mut all: Vec<(&str, Option<&[u8]>)> = self
            .edits
            .iter()
            .map(|(k, v)| (*k, Some(v.as_slice())))
            .collect();
        all.extend_from_slice(op);
        Ok(o.splice_body(&all))
    }

    /// The route's own rules (docs/semantics.md §5), once the fields are known to be sound.
    fn route(&mut self) -> Decided<Outcome> {
        let p = &self.input.route.params;
        let op = self.input.route.route.op;
        Ok(Outcome::Forward(match op {
            Op::Public => Forward {
                authenticated: false,
                ..forward()
            },
            // Refused before authentication by the gateway (`routes::admission`); here for
            // every other caller of the decision (policy tests, explain, fuzzing).
            Op::Blocked => return Ok(Outcome::Refuse(Admission::refusal())),
            Op::Unmediated(g) => {
                if !self.policy.unmediated.contains(&g) {
                    return Ok(Outcome::Refuse(GatewayError::forbidden(format!(
                        "This route's inner calls bypass authorization handlers; enable it with \
                         settings.unmediated_routes: [{}]",
                        g.as_str()
                    ))));
                }
                forward()
            }
            Op::ThreadCreate => self.thread_create()?,
            Op::ThreadSearch { count } => {
                return self.search(THREADS, "/threads/search", count, None);
            }
            Op::ThreadPrune => self.thread_prune()?,
            Op::ThreadById { miss } => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let action = self
                    .input
                    .route
                    .route
                    .events
                    .first()
                    .map(|e| e.action)
                    .unwrap_or(Action::Read);
                let g = match self.grant(THREADS, action) {
                    Err(Stop::Refuse(e)) if miss == Miss::ThreadNotFoundSse => {
                        return Err(self.sse_headers(e.as_sse()).into())
                    }
                    other => other?,
                };
                self.check(&g, Target::Thread(tid.clone()), miss, &tid)
                    .map_err(|s| match s {
                        Stop::Refuse(e) if miss == Miss::ThreadNotFoundSse => {
                            Stop::Refuse(self.sse_headers(e))
                        }
                        other => other,
                    })?;
                let mut f = forward();
                if action != Action::Read {
                    f.invalidate.push(Target::Thread(tid));
                }
                f
            }
            Op::ThreadPatch => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                // The handler runs only if the thread exists: a missing thread is 404 even
                // when the handler would deny.
                let g = match self.grant(THREADS, Action::Update) {
                    Ok(g) => g,
                    Err(Stop::Refuse(e)) => {
                        return match self.fact(Target::Thread(tid.clone()))? {
                            None => Err(Miss::NotFound.error(&tid).into()),
                            Some(_) => Err(e.into()),
                        }
                    }
                    Err(s) => return Err(s),
                };
                self.check(&g, Target::Thread(tid.clone()), Miss::NotFound, &tid)?;
                let mut f = self.stamped(&g, false)?;
                f.invalidate.push(Target::Thread(tid));
                f
            }
            Op::ThreadStateUpdate => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let upd = self.grant(THREADS, Action::Update)?;
                let read = self.grant(THREADS, Action::Read)?;
                self.check(&read, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)?;
                if upd.active_filter().is_some() {
                    self.check(&upd, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)
                        .map_err(|s| match s {
                            Stop::Refuse(_) => Stop::Refuse(GatewayError::forbidden("Forbidden")),
                            other => other,
                        })?;
                }
                Forward {
                    invalidate: vec![Target::Thread(tid)],
                    ..forward()
                }
            }
            Op::ThreadCopy => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let read = self.grant(THREADS, Action::Read)?;
                self.check(&read, Target::Thread(tid.clone()), Miss::Conflict, &tid)?;
                // The create handler is only a veto: the copy keeps the source's metadata.
                self.grant(THREADS, Action::Create)?;
                forward()
            }
            Op::ThreadCommands => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let g = self.grant(THREADS, Action::CreateRun)?;
                self.check(
                    &g,
                    Target::Thread(tid.clone()),
                    Miss::ThreadOrAssistant,
                    &tid,
                )?;
                let read = self.grant(THREADS, Action::Read)?;
                self.check(
                    &read,
                    Target::Thread(tid.clone()),
                    Miss::ThreadOrAssistant,
                    &tid,
                )?;
                let mut f = self.command(&g)?;
                f.invalidate.push(Target::Thread(tid));
                f
            }
            Op::RunCreate { on_thread } => self.run_create(on_thread)?,
            Op::RunBatch => self.run_batch()?,
            Op::RunList => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let read = self.grant(THREADS, Action::Read)?;
                self.check(&read, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)?;
                let search = self.grant(THREADS, Action::Search)?;
                self.check(
                    &search,
                    Target::Thread(tid.clone()),
                    Miss::ThreadWithId,
                    &tid,
                )?;
                forward()
            }
            Op::RunsCancel => self.runs_cancel()?,
            Op::AssistantCreate => self.assistant_create()?,
            Op::AssistantSearch { count } => {
                return self.search(ASSISTANTS, "/assistants/search", count, None)
            }
            Op::AssistantById { miss, stamp } => {
                // `/graph` also takes a graph name: it means the graph's system assistant
                // (`validate_params` refused every other spelling that is not canonical).
                let aid = assistant_ref(&self.param(&p.assistant_id)?)?;
                self.on(Subject::Target(Target::Assistant(aid.clone())));
                let action = self
                    .input
                    .route
                    .route
                    .events
                    .first()
                    .map(|e| e.action)
                    .unwrap_or(Action::Read);
                let g = self.grant(ASSISTANTS, action)?;
                self.check(&g, Target::Assistant(aid.clone()), miss, &aid)?;
                let mut f = if stamp {
                    self.stamped(&g, false)?
                } else {
                    forward()
                };
                if action != Action::Read {
                    f.invalidate.push(Target::Assistant(aid));
                }
                f
            }
            Op::AssistantVersions => {
                let aid = self.param(&p.assistant_id)?;
                self.on(Subject::Target(Target::Assistant(aid.clone())));
                let g = self.grant(ASSISTANTS, Action::Read)?;
                let mut f = forward();
                if let Some(filter) = g.active_filter() {
                    if self.fact(Target::Assistant(aid.clone()))?.is_none() {
                        return Err(Miss::Assistant.error(&aid).into());
                    }
                    f.response = ResponsePlan::FilterList {
                        filter: filter.clone(),
                        empty: Some(Miss::Assistant.error(&aid)),
                    };
                }
                f
            }
            Op::AssistantDelete => {
                let aid = self.param(&p.assistant_id)?;
                self.on(Subject::Target(Target::Assistant(aid.clone())));
                let g = self.grant(ASSISTANTS, Action::Delete)?;
                self.check(
                    &g,
                    Target::Assistant(aid.clone()),
                    Miss::AssistantWithId,
                    &aid,
                )?;
                if query_flag(self.input.query, "delete_threads") {
                    // The server deletes every thread that ran with this assistant, whoever
                    // owns it: only a caller whose thread deletes depend on nothing may.
                    let td = self.grant(THREADS, Action::Delete)?;
                    let per_thread = td.active_filter().is_some()
                        || self
                            .policy
                            .access
                            .needs_tags(self.user, Event::new(THREADS, Action::Delete));
                    if per_thread {
                        return Err(GatewayError::forbidden(
                            "delete_threads cannot be authorized thread by thread behind graphguard; \
                             delete the threads first",
                        )
                        .into());
                    }
                }
                Forward {
                    invalidate: vec![Target::Assistant(aid)],
                    ..forward()
                }
            }
            Op::CronCreate { on_thread } => self.cron_create(on_thread)?,
            Op::CronById { miss, stamp } => {
                let cid = self.param(&p.cron_id)?;
                self.on(Subject::Target(Target::Cron(cid.clone())));
                let action = self
                    .input
                    .route
                    .route
                    .events
                    .first()
                    .map(|e| e.action)
                    .unwrap_or(Action::Read);
                let g = self.grant(CRONS, action)?;
                self.check(&g, Target::Cron(cid.clone()), miss, &cid)?;
                let stamp = stamp
                    && self
                        .obj()
                        .map(|o| o.get_raw("metadata").is_some())
                        .unwrap_or(false);
                let mut f = if stamp {
                    self.stamped(&g, false)?
                } else {
                    forward()
                };
                if action != Action::Read {
                    f.invalidate.push(Target::Cron(cid));
                }
                f
            }
            Op::CronSearch { count } => return self.cron_search(count),
            Op::StorePut
            | Op::StoreDelete
            | Op::StoreSearch
            | Op::StoreNamespaces
            | Op::StoreGet => self.store(op)?,
        }))
    }

    /// Stamp the grant's metadata into the body's `metadata` (overwriting client values).
    /// `search`: the body's metadata is a containment filter; stamping narrows it, exactly as
    /// LangGraph's in-place mutation does.
    fn stamped(&self, g: &Grant, _search: bool) -> Decided<Forward> {
        let mut f = forward();
        if let Some(md) = g.metadata.as_ref().filter(|m| !m.is_empty()) {
            let o = self.obj()?;
            let merged = o.merge_metadata(pairs(md)).map_err(|e| match e {
                BodyError::NotAnObject => GatewayError::unprocessable("metadata must be an object"),
                other => body_error(other),
            })?;
            f.body = Some(self.body_with(&[("metadata", Some(&merged))])?);
        }
        Ok(f)
    }

    /// The headers the server sends on a run's join stream, kept on a refusal delivered as an
    /// SSE error event (the SDK reconnects to `Location`).
    fn sse_headers(&self, e: GatewayError) -> GatewayError {
        let p = &self.input.route.params;
        match (&p.thread_id, &p.run_id) {
            (Some(t), Some(r)) => {
                let loc = HeaderValue::from_str(&format!("/threads/{t}/runs/{r}/stream"));
                let cloc = HeaderValue::from_str(&format!("/threads/{t}/runs/{r}"));
                match (loc, cloc) {
                    (Ok(l), Ok(c)) => e
                        .with_header(http::header::LOCATION, l)
                        .with_header(http::header::CONTENT_LOCATION, c),
                    _ => e,
                }
            }
            _ => e,
        }
    }

    /// A v2 protocol command `{id, method, params}`. `run.start` starts a run and
    /// `input.respond` resumes one: their parameters are checked against the inventory like a
    /// run's body (the server sanitizes neither), `run.start`'s assistant is checked as on run
    /// creation, and the handler's metadata is stamped into its `params.metadata`.
    fn command(&mut self, g: &Grant) -> Decided<Forward> {
        let shape = match self.str_field("method")?.as_deref() {
            Some("run.start") => &crate::routes::fields::RUN_START_PARAMS,
            Some("input.respond") => &crate::routes::fields::INPUT_RESPOND_PARAMS,
            _ => return Ok(forward()),
        };
        let params = match self.obj()?.get_raw("params") {
            None | Some(b"null") => ObjectBody::parse(b"{}", MAX_JSON_DEPTH),
            Some(raw) => ObjectBody::parse(raw, MAX_JSON_DEPTH),
        }
        .map_err(|e| match e {
            BodyError::NotAnObject => GatewayError::unprocessable("params must be an object"),
            other => body_error(other),
        })?;
        let fields = self.vet(&params, shape)?;
        let start = std::ptr::eq(shape, &crate::routes::fields::RUN_START_PARAMS);
        if start {
            if let Some(Value::String(aid)) =
                params.get::<Value>("assistant_id").map_err(body_error)?
            {
                let miss = GatewayError::not_found("Thread or assistant not found.");
                if self
                    .fact(Target::Assistant(assistant_ref(&aid)?))?
                    .is_none()
                {
                    return Err(miss.into());
                }
                self.assistant_read_check(&aid, miss)?;
            }
        }
        let mut edits: Vec<(&str, Option<&[u8]>)> = fields
            .iter()
            .map(|(k, v)| (*k, Some(v.as_slice())))
            .collect();
        let merged = match g.metadata.as_ref().filter(|m| start && !m.is_empty()) {
            Some(md) => Some(params.merge_metadata(pairs(md)).map_err(|e| match e {
                BodyError::NotAnObject => {
                    GatewayError::unprocessable("params.metadata must be an object")
                }
                other => body_error(other),
            })?),
            None => None,
        };
        if let Some(m) = &merged {
            edits.push(("metadata", Some(m)));
        }
        if edits.is_empty() {
            return Ok(forward());
        }
        let new_params = params.splice(&edits);
        Ok(Forward {
            body: Some(self.body_with(&[("params", Some(&new_params))])?),
            ..forward()
        })
    }

    fn thread_create(&mut self) -> Decided<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(THREADS, Action::Create)?;
        self.on(Subject::None);
        let tid = self.str_field("thread_id")?;
        let do_nothing = self.str_field("if_exists")?.as_deref() == Some("do_nothing");
        let supersteps = self
            .obj()?
            .get_raw("supersteps")
            .is_some_and(|r| r != b"null");
        if let Some(tid) = &tid {
            if g.active_filter().is_some() || do_nothing {
                if let Some(v) = self.fact(Target::Thread(tid.clone()))? {
                    self.create_on_existing(THREADS, &g, tid, &v, do_nothing, supersteps)?;
                }
            }
        }
        if supersteps {
            self.grant(THREADS, Action::Update)?;
            self.grant(THREADS, Action::Read)?;
        }
        let mut f = self.stamped(&g, false)?;
        if let Some(tid) = tid {
            f.invalidate.push(Target::Thread(tid));
        }
        Ok(f)
    }

    /// A create that names an existing thread or assistant. LangGraph's create filter decides
    /// first (409 on a mismatch). With `if_exists: do_nothing` the server answers with the
    /// existing resource, so the caller must be able to read it (handler filter and access
    /// policies on its own tags), and with `supersteps` it writes the thread's state, so the
    /// caller must be able to update it: LangGraph checks neither; graphguard answers 409 as
    /// for a mismatch (docs/compatibility.md). With `raise` the server answers 409 itself.
    fn create_on_existing(
        &mut self,
        res: Resource,
        g: &Grant,
        id: &str,
        existing: &Value,
        do_nothing: bool,
        supersteps: bool,
    ) -> Decided<()> {
        let (target, exists) = match res {
            THREADS => (
                Target::Thread(id.to_string()),
                format!("Thread with ID {id} already exists"),
            ),
            _ => (
                Target::Assistant(id.to_string()),
                format!("Assistant {id} already exists"),
            ),
        };
        let md = metadata_ref(existing);
        if g.active_filter().is_some_and(|f| !f.matches(md)) {
            return Err(GatewayError::conflict(exists).into());
        }
        if !do_nothing {
            return Ok(());
        }
        let mut actions = vec![Action::Read];
        if supersteps && res == THREADS {
            actions.push(Action::Update);
        }
        let saved = std::mem::replace(&mut self.subject, Subject::Target(target));
        let mut verdict = Ok(());
        for action in actions {
            match self.grant(res, action) {
                Ok(g) if g.active_filter().is_none_or(|f| f.matches(md)) => {}
                Ok(_) | Err(Stop::Refuse(_)) => {
                    verdict = Err(GatewayError::conflict(exists.clone()).into());
                    break;
                }
                Err(need) => {
                    verdict = Err(need);
                    break;
                }
            }
        }
        self.subject = saved;
        verdict
    }

    fn assistant_create(&mut self) -> Decided<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(ASSISTANTS, Action::Create)?;
        self.on(Subject::None);
        let aid = self.str_field("assistant_id")?;
        let do_nothing = self.str_field("if_exists")?.as_deref() == Some("do_nothing");
        if let Some(aid) = &aid {
            if g.active_filter().is_some() || do_nothing {
                if let Some(v) = self.fact(Target::Assistant(aid.clone()))? {
                    self.create_on_existing(ASSISTANTS, &g, aid, &v, do_nothing, false)?;
                }
            }
        }
        let mut f = self.stamped(&g, false)?;
        // As for threads: a cached "missing" for a client-chosen id is stale once created.
        if let Some(aid) = aid {
            f.invalidate.push(Target::Assistant(aid));
        }
        Ok(f)
    }

    /// `POST /runs/cancel`: by thread and runs, or by status. Cancelling by status reaches
    /// every thread on the server, so it is refused whenever the caller's access depends on
    /// the thread (a handler filter, or access policies that read its tags).
    fn runs_cancel(&mut self) -> Decided<Forward> {
        let tid = self.str_field("thread_id")?;
        if let Some(tid) = &tid {
            self.on(Subject::Target(Target::Thread(tid.clone())));
        }
        let g = self.grant(THREADS, Action::Update)?;
        let per_thread = g.active_filter().is_some()
            || self
                .policy
                .access
                .needs_tags(self.user, Event::new(THREADS, Action::Update));
        match tid {
            Some(tid) => {
                self.check(&g, Target::Thread(tid.clone()), Miss::NoRunsToCancel, &tid)?;
                Ok(Forward {
                    invalidate: vec![Target::Thread(tid)],
                    ..forward()
                })
            }
            None if per_thread => Err(GatewayError::forbidden(
                "Cancelling runs by status cannot be authorized thread by thread behind \
                 graphguard; cancel with thread_id and run_ids",
            )
            .into()),
            None => Ok(forward()),
        }
    }

    fn thread_prune(&mut self) -> Decided<Forward> {
        let ids: Vec<String> = self
            .obj()?
            .get::<Vec<String>>("thread_ids")
            .map_err(|_| GatewayError::unprocessable("thread_ids must be a list of strings"))?
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(forward());
        }
        let g = self.grant(THREADS, Action::Delete)?;
        if self
            .policy
            .access
            .needs_tags(self.user, Event::new(THREADS, Action::Delete))
        {
            for id in &ids {
                self.on(Subject::Target(Target::Thread(id.clone())));
                self.check_access(Event::new(THREADS, Action::Delete))?;
            }
        }
        let none = || GatewayError::not_found("At least one thread not found or not authorized");
        if let Some(filter) = g.active_filter() {
            for id in &ids {
                match self.fact(Target::Thread(id.clone()))? {
                    Some(v) if filter.matches(metadata_ref(&v)) => {}
                    _ => return Err(none().into()),
                }
            }
        }
        Ok(Forward {
            invalidate: ids.into_iter().map(Target::Thread).collect(),
            ..forward()
        })
    }

    /// Check the assistant a run or cron uses, named as the client wrote it (a canonical UUID
    /// or a graph name, see [`assistant_ref`]): it must exist (the server answers `miss`
    /// before any handler runs, semantics §5.2 step 2), and unless it is a graph's system assistant,
    /// the caller must be able to read it (step 4). A system assistant is recognised by its id
    /// (`uuid5(namespace, graph_id)` of its own graph), never by a `created_by: system`
    /// metadata value, which any creator could write.
    fn assistant_read_check(&mut self, named: &str, miss: GatewayError) -> Decided<()> {
        let aid = assistant_ref(named)?;
        let aid = aid.as_str();
        let Some(v) = self.fact(Target::Assistant(aid.to_string()))? else {
            return Err(miss.into());
        };
        let md = metadata_ref(&v);
        let is_system = v
            .get("graph_id")
            .and_then(Value::as_str)
            .is_some_and(|g| system_assistant_id(g).to_string() == aid);
        if is_system {
            return Ok(());
        }
        let saved = std::mem::replace(
            &mut self.subject,
            Subject::Target(Target::Assistant(aid.to_string())),
        );
        let g = self.grant(ASSISTANTS, Action::Read);
        self.subject = saved;
        let g = g?;
        if g.active_filter().is_some_and(|f| !f.matches(md)) {
            return Err(miss.into());
        }
        Ok(())
    }

    fn run_create(&mut self, on_thread: bool) -> Decided<Forward> {
        let miss = GatewayError::not_found("Thread or assistant not found.");
        let aid = self.str_field("assistant_id")?;
        // An unknown assistant is 404 before any handler runs (semantics §5.2 step 2).
        if let Some(aid) = &aid {
            if self.fact(Target::Assistant(assistant_ref(aid)?))?.is_none() {
                return Err(miss.into());
            }
        }
        // Runs are evaluated against their thread's tags; a thread the run will create has the
        // run's stamped metadata.
        let subject = if on_thread {
            let tid = self.param(&self.input.route.params.thread_id)?;
            let t = Target::Thread(tid);
            if self
                .policy
                .access
                .needs_tags(self.user, Event::new(THREADS, Action::CreateRun))
                && self.fact(t.clone())?.is_none()
            {
                Subject::CreateBody
            } else {
                Subject::Target(t)
            }
        } else {
            Subject::CreateBody
        };
        self.on(subject);
        let g = self.grant(THREADS, Action::CreateRun)?;
        if let Some(aid) = aid {
            self.assistant_read_check(&aid, miss.clone())?;
        }
        let mut f = self.stamped(&g, false)?;
        if on_thread {
            let tid = self.param(&self.input.route.params.thread_id)?;
            if let Some(filter) = g.active_filter() {
                match self.fact(Target::Thread(tid.clone()))? {
                    Some(v) if filter.matches(metadata_ref(&v)) => {}
                    Some(_) => return Err(miss.into()),
                    None => {
                        if self.str_field("if_not_exists")?.as_deref() != Some("create") {
                            return Err(miss.into());
                        }
                    }
                }
            }
            f.invalidate.push(Target::Thread(tid));
        }
        Ok(f)
    }

    fn run_batch(&mut self) -> Decided<Forward> {
        let Body::Array(items) = self.input.body else {
            return Err(GatewayError::internal("route body kind mismatch").into());
        };
        let miss = GatewayError::not_found("Thread or assistant not found.");
        let item_edits = std::mem::take(&mut self.item_edits);
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let fields = item_edits.get(i).map_or(&[][..], Vec::as_slice);
            let aid = match item.get::<Value>("assistant_id").map_err(body_error)? {
                Some(Value::String(aid)) => Some(aid),
                None | Some(Value::Null) => None,
                Some(_) => {
                    return Err(GatewayError::unprocessable("assistant_id must be a string").into())
                }
            };
            if let Some(aid) = &aid {
                if self.fact(Target::Assistant(assistant_ref(aid)?))?.is_none() {
                    return Err(miss.clone().into());
                }
            }
            let g = self.grant(THREADS, Action::CreateRun)?;
            if let Some(aid) = &aid {
                self.assistant_read_check(aid, miss.clone())?;
            }
            let mut edits: Vec<(&str, Option<&[u8]>)> = fields
                .iter()
                .map(|(k, v)| (*k, Some(v.as_slice())))
                .collect();
            let merged = match g.metadata.as_ref().filter(|m| !m.is_empty()) {
                Some(md) => Some(item.merge_metadata(pairs(md)).map_err(|e| match e {
                    BodyError::NotAnObject => {
                        GatewayError::unprocessable("metadata must be an object")
                    }
                    other => body_error(other),
                })?),
                None => None,
            };
            if let Some(m) = &merged {
                edits.push(("metadata", Some(m)));
            }
            out.push((!edits.is_empty()).then(|| item.splice(&edits)));
        }
        let mut f = forward();
        if out.iter().any(Option::is_some) {
            let mut body = b"[".to_vec();
            for (i, (item, stamped)) in items.iter().zip(&out).enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                match stamped {
                    Some(b) => body.extend_from_slice(b),
                    None => body.extend_from_slice(&item.splice(&[])),
                }
            }
            body.push(b']');
            f.body = Some(body.into());
        }
        Ok(f)
    }

    /// Thread, assistant and cron search and count (semantics §4.3 and §9): stamped metadata
    /// and scalar equalities are written over the client's own `metadata`; the rest is
    /// evaluated on the results by the proxy.
    fn search(
        &mut self,
        res: Resource,
        path: &'static str,
        count: bool,
        thread_filter: Option<ResolvedFilter>,
    ) -> Decided<Outcome> {
        self.on(Subject::PerItem);
        let g = self.grant(res, Action::Search)?;
        Ok(Outcome::Forward(self.search_forward(
            &g,
            path,
            count,
            thread_filter,
        )?))
    }

    fn search_forward(
        &self,
        g: &Grant,
        path: &'static str,
        count: bool,
        thread_filter: Option<ResolvedFilter>,
    ) -> Decided<Forward> {
        let o = self.obj()?;
        // The stamped metadata, then the filter's equalities (a later value for a key wins).
        let mut set: Vec<(&str, &Value)> = Vec::with_capacity(
            g.metadata.as_ref().map_or(0, Map::len)
                + g.filter.as_ref().map_or(0, |f| f.conds.len()),
        );
        set.extend(g.metadata.iter().flat_map(pairs));
        let mut residual = None;
        if let Some(filter) = g.active_filter() {
            let (push, rest) = filter.split_pushable();
            set.extend(push);
            residual = rest;
        }
        let mut f = forward();
        if !set.is_empty() {
            let merged = o.merge_metadata(set.iter().copied()).map_err(|e| match e {
                BodyError::NotAnObject => GatewayError::unprocessable("metadata must be an object"),
                other => body_error(other),
            })?;
            f.body = Some(o.splice(&[("metadata", Some(&merged))]).into());
        }
        if residual.is_some() || thread_filter.is_some() || !self.per_item.is_empty() {
            if o.get_raw("select").is_some() {
                return Err(GatewayError::bad_request(
                    "select cannot be combined with a filter graphguard evaluates on results",
                )
                .into());
            }
            let num = |k: &str, d: u64| -> Decided<u64> {
                match o.get::<Value>(k).map_err(body_error)? {
                    None | Some(Value::Null) => Ok(d),
                    Some(v) => v.as_u64().ok_or_else(|| {
                        Stop::Refuse(GatewayError::unprocessable(format!(
                            "{k} must be a non-negative integer"
                        )))
                    }),
                }
            };
            f.response = ResponsePlan::Search(SearchPlan {
                path,
                count,
                filter: residual,
                thread_filter,
                limit: num("limit", 10)?,
                offset: num("offset", 0)?,
                access: self.per_item.clone(),
            });
        }
        Ok(f)
    }

    fn cron_create(&mut self, on_thread: bool) -> Decided<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(CRONS, Action::Create)?;
        self.on(Subject::None);
        if let Some(aid) = self.str_field("assistant_id")? {
            let miss = GatewayError::not_found(format!("Assistant '{aid}' not found"));
            self.assistant_read_check(&aid, miss)?;
        }
        let f = self.stamped(&g, false)?;
        if on_thread {
            let tid = self.param(&self.input.route.params.thread_id)?;
            self.on(Subject::Target(Target::Thread(tid.clone())));
            let read = self.grant(THREADS, Action::Read)?;
            self.check(
                &read,
                Target::Thread(tid.clone()),
                Miss::ThreadWithIdVerbose,
                &tid,
            )?;
        }
        Ok(f)
    }

    fn cron_search(&mut self, count: bool) -> Decided<Outcome> {
        self.on(Subject::PerItem);
        let g = self.grant(CRONS, Action::Search)?;
        self.on(Subject::None);
        let tid = self.str_field("thread_id")?;
        let thread_filter = match &tid {
            Some(tid) => {
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let read = self.grant(THREADS, Action::Read)?;
                if read.active_filter().is_some() {
                    let visible = match self.fact(Target::Thread(tid.clone()))? {
                        Some(v) => read
                            .active_filter()
                            .is_some_and(|f| f.matches(metadata_ref(&v))),
                        None => false,
                    };
                    if !visible {
                        return Ok(Outcome::Reply(empty_search(count)));
                    }
                }
                None
            }
            None => self
                .grant(THREADS, Action::Search)?
                .active_filter()
                .cloned(),
        };
        Ok(Outcome::Forward(self.search_forward(
            &g,
            "/runs/crons/search",
            count,
            thread_filter,
        )?))
    }

    fn store(&mut self, op: Op) -> Decided<Forward> {
        let (action, field) = match op {
            Op::StorePut => (Action::Put, "namespace"),
            Op::StoreGet => (Action::Get, "namespace"),
            Op::StoreDelete => (Action::Delete, "namespace"),
            Op::StoreSearch => (Action::Search, "namespace_prefix"),
            _ => (Action::ListNamespaces, "prefix"),
        };
        let mut f = forward();
        // The namespace, from the query (get) or the body.
        let ns: Option<Vec<String>> = if op == Op::StoreGet {
            let q = StoreQuery::parse(self.input.query)?;
            q.namespace
                .map(|n| n.split('.').map(String::from).collect())
        } else {
            match self.obj()?.get::<Value>(field).map_err(body_error)? {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .into_iter()
                        .map(|i| match i {
                            Value::String(s) => Ok(s),
                            _ => Err(GatewayError::unprocessable(format!(
                                "{field} labels must be strings"
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(_) => {
                    return Err(GatewayError::unprocessable(format!(
                        "{field} must be a list of strings"
                    ))
                    .into())
                }
            }
        };
        if let Some(ns) = &ns {
            if let Some(bad) = ns.iter().find(|l| l.is_empty() || l.contains('.')) {
                return Err(GatewayError::unprocessable(format!(
                    "Namespace label '{bad}' must be a non-empty string without periods"
                ))
                .into());
            }
        }
        // Labels are validated before the handler runs (semantics §6).
        self.on(Subject::Deferred);
        let g = self.grant(STORE, action)?;
        if let Some((prefix, mode, message)) = &g.namespace {
            let current = ns.clone().unwrap_or_default();
            let has_prefix =
                current.len() >= prefix.len() && current.iter().zip(prefix).all(|(a, b)| a == b);
            let new_ns = match mode {
                NamespaceMode::Require if has_prefix => None,
                NamespaceMode::Require => {
                    return Err(GatewayError::forbidden(message.clone()).into())
                }
                NamespaceMode::Rewrite if has_prefix => None,
                NamespaceMode::Rewrite => {
                    Some(prefix.iter().cloned().chain(current).collect::<Vec<_>>())
                }
            };
            if let Some(new_ns) = new_ns {
                if op == Op::StoreGet {
                    f.query = Some(StoreQuery::rewrite(self.input.query, &new_ns.join(".")));
                } else {
                    let raw = serde_json::to_vec(&new_ns)
                        .map_err(|e| GatewayError::internal(e.to_string()))?;
                    f.body = Some(self.obj()?.splice(&[(field, Some(&raw))]).into());
                }
            }
        }
        // Access policies read the item at its final namespace.
        let event = Event::new(STORE, action);
        let final_ns = match (&g.namespace, &ns) {
            (Some((prefix, NamespaceMode::Rewrite, _)), cur) => {
                let cur = cur.clone().unwrap_or_default();
                if cur.len() >= prefix.len() && cur.iter().zip(prefix).all(|(a, b)| a == b) {
                    cur
                } else {
                    prefix.iter().cloned().chain(cur).collect()
                }
            }
            (_, cur) => cur.clone().unwrap_or_default(),
        };
        match op {
            Op::StorePut => {
                let value = match self.obj()?.get::<Value>("value").map_err(body_error)? {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                self.on(Subject::Tags(value));
            }
            Op::StoreGet | Op::StoreDelete => {
                let key = if op == Op::StoreGet {
                    StoreQuery::parse(self.input.query)?.key
                } else {
                    self.str_field("key")?
                };
                match key {
                    Some(k) => self.on(Subject::Target(Target::StoreItem(final_ns.join("."), k))),
                    None => self.on(Subject::None),
                }
            }
            Op::StoreSearch => self.on(Subject::PerItem),
            _ => self.on(Subject::None),
        }
        if let Err(e) = self.check_access(event) {
            if let (Stop::Refuse(_), Some(last)) = (&e, self.steps.last_mut()) {
                last.allowed = false;
            }
            return Err(e);
        }
        if op == Op::StoreSearch && !self.per_item.is_empty() {
            f.response = ResponsePlan::StoreItems {
                filter: None,
                access: self.per_item.clone(),
            };
        }
        if op == Op::StoreSearch {
            if let Some(filter) = g.active_filter() {
                let (push, rest) = filter.split_pushable();
                let o = self.obj()?;
                let mut edited: Option<Vec<u8>> = None;
                if !push.is_empty() {
                    let merged = merge_object_pairs(o.get_raw("filter"), push.iter().copied())
                        .map_err(|e| match e {
                            BodyError::NotAnObject => {
                                GatewayError::unprocessable("filter must be an object")
                            }
                            other => body_error(other),
                        })?;
                    // Apply on top of a namespace rewrite if there was one.
                    edited = Some(match &f.body {
                        Some(b) => {
                            let b = b.bytes(o.source());
                            let reparsed =
                                ObjectBody::parse(&b, MAX_JSON_DEPTH).map_err(body_error)?;
                            reparsed.splice(&[("filter", Some(&merged))])
                        }
                        None => o.splice(&[("filter", Some(&merged))]),
                    });
                }
                if let Some(e) = edited {
                    f.body = Some(e.into());
                }
                if let Some(rest) = rest {
                    f.response = ResponsePlan::StoreItems {
                        filter: Some(rest),
                        access: self.per_item.clone(),
                    };
                }
            }
        }
        Ok(f)
    }
}

fn must_be(field: &str, what: &str) -> Stop {
    GatewayError::unprocessable(format!("{field} must be {what}")).into()
}

fn empty_search(count: bool) -> Reply {
    let mut headers = Vec::new();
    if !count {
        headers.push((
            HeaderName::from_static("x-pagination-total"),
            HeaderValue::from_static("0"),
        ));
    }
    Reply {
        status: StatusCode::OK,
        body: if count { b"0".to_vec() } else { b"[]".to_vec() },
        headers,
    }
}

fn query_flag(query: Option<&str>, name: &str) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, v)| {
        k == name && matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
    })
}

/// `GET /store/items` query parameters that matter for authorization.
struct StoreQuery {
    namespace: Option<String>,
    key: Option<String>,
}

impl StoreQuery {
    fn parse(query: Option<&str>) -> Result<StoreQuery, GatewayError> {
        let mut namespace = None;
        let mut key: Option<String> = None;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "namespace" => &mut namespace,
                "key" => &mut key,
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return Err(GatewayError::bad_request(format!(
                    "Repeated query parameter '{k}'"
                )));
            }
        }
        Ok(StoreQuery { namespace, key })
    }

    fn rewrite(query: Option<&str>, namespace: &str) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        let mut done = false;
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k == "namespace" {
                out.append_pair("namespace", namespace);
                done = true;
            } else {
                out.append_pair(&k, &v);
            }
        }
        if !done {
            out.append_pair("namespace", namespace);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests;
