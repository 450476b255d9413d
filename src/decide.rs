//! The decision: from a classified request, the user and the facts looked up so far, either
//! the next fact needed or the final [`Decision`].
//!
//! Pure: no I/O, no clock. The proxy calls [`decide`] in a loop, fetching each [`Target`] it
//! asks for (a resource's metadata from the upstream, cached), until it gets a decision. Each
//! [`Op`] below follows the route's row in the semantics spec (section 5): which handlers run,
//! in which order, what the filter is checked against, and what a mismatch looks like.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

use crate::config::NamespaceMode;
use crate::error::GatewayError;
use crate::event::{Action, Event, Resource};
use crate::filter::ResolvedFilter;
use crate::policy::{Grant, Policy};
use crate::rewrite::{merge_object_pairs, pairs, BodyError, NewBody, ObjectBody};
use crate::routes::{is_uuid, BodyKind, Miss, Op, RouteMatch};
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
        }
    }

    /// The same target with its id in canonical form (a UUID lower-case and hyphenated), so
    /// every spelling of one resource shares one cache entry.
    pub fn normalized(&self) -> Target {
        let canon = |id: &str| match uuid::Uuid::try_parse(id) {
            Ok(u) if crate::routes::is_uuid(id) => u.to_string(),
            _ => id.to_string(),
        };
        match self {
            Target::Thread(id) => Target::Thread(canon(id)),
            Target::Assistant(id) => Target::Assistant(canon(id)),
            Target::Cron(id) => Target::Cron(canon(id)),
            Target::StoreItem(ns, k) => Target::StoreItem(ns.clone(), k.clone()),
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
        BodyKind::Object => {
            let src: &'a [u8] = if raw.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                raw
            };
            ObjectBody::parse(src, MAX_JSON_DEPTH)
                .map(Body::Object)
                .map_err(body_error)
        }
        BodyKind::Array => {
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

/// The final outcome.
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
    pub access: Vec<crate::abac::AccessDecision>,
    /// The outcome.
    pub outcome: Outcome,
}

/// The result of one call to [`decide`].
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

type R<T> = Result<T, Stop>;

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
    access: Vec<crate::abac::AccessDecision>,
    /// What access policies read tags from for the next events.
    subject: Subject,
    /// Access events to evaluate on each result item (searches).
    per_item: Vec<Event>,
}

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

const T: Resource = Resource::Threads;
const A: Resource = Resource::Assistants;
const C: Resource = Resource::Crons;
const S: Resource = Resource::Store;

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
    /// Roles and access policies for an event on the current subject (seed 002's tables),
    /// before the handler runs on what they allow.
    fn check_access(&mut self, event: Event) -> R<()> {
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
                crate::abac::Reason::DenyWins => {
                    format!("Forbidden: {event} is denied by an access policy")
                }
                _ => format!("Forbidden: no role or access policy grants {event}"),
            })
            .into());
        }
        Ok(())
    }

    /// A create: the handler stamps first, then access policies read the stamped metadata.
    fn grant_create(&mut self, event: Event) -> R<Grant> {
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
    fn grant(&mut self, resource: Resource, action: Action) -> R<Grant> {
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
    fn fact(&self, t: Target) -> R<Option<Arc<Value>>> {
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
    fn check(&self, g: &Grant, t: Target, miss: Miss, id: &str) -> R<()> {
        if let Some(f) = g.active_filter() {
            match self.fact(t)? {
                Some(v) if f.matches(metadata_ref(&v)) => {}
                _ => return Err(miss.error(id).into()),
            }
        }
        Ok(())
    }

    fn obj(&self) -> R<&'a ObjectBody<'a>> {
        match self.input.body {
            Body::Object(o) => Ok(o),
            _ => Err(GatewayError::internal("route body kind mismatch").into()),
        }
    }

    fn str_field(&self, key: &str) -> R<Option<String>> {
        match self.obj()?.get::<Value>(key).map_err(body_error)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(GatewayError::unprocessable(format!("{key} must be a string")).into()),
        }
    }

    fn param(&self, v: &Option<String>) -> R<String> {
        v.clone()
            .ok_or_else(|| GatewayError::internal("missing path parameter").into())
    }

    fn run(&mut self) -> R<Outcome> {
        let p = &self.input.route.params;
        let op = self.input.route.route.op;
        Ok(Outcome::Forward(match op {
            Op::Public => Forward {
                authenticated: false,
                ..forward()
            },
            Op::Blocked => {
                return Ok(Outcome::Refuse(GatewayError::forbidden(
                    "graphguard never forwards the agent server's /internal and /deploy routes",
                )))
            }
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
                return self.search(T, "/threads/search", count, None);
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
                let g = match self.grant(T, action) {
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
                let g = match self.grant(T, Action::Update) {
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
                let upd = self.grant(T, Action::Update)?;
                let read = self.grant(T, Action::Read)?;
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
                let read = self.grant(T, Action::Read)?;
                self.check(&read, Target::Thread(tid.clone()), Miss::Conflict, &tid)?;
                // The create handler is only a veto: the copy keeps the source's metadata.
                self.grant(T, Action::Create)?;
                forward()
            }
            Op::ThreadCommands => {
                let tid = self.param(&p.thread_id)?;
                self.on(Subject::Target(Target::Thread(tid.clone())));
                let g = self.grant(T, Action::CreateRun)?;
                self.check(
                    &g,
                    Target::Thread(tid.clone()),
                    Miss::ThreadOrAssistant,
                    &tid,
                )?;
                let read = self.grant(T, Action::Read)?;
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
                let read = self.grant(T, Action::Read)?;
                self.check(&read, Target::Thread(tid.clone()), Miss::ThreadWithId, &tid)?;
                let search = self.grant(T, Action::Search)?;
                self.check(
                    &search,
                    Target::Thread(tid.clone()),
                    Miss::ThreadWithId,
                    &tid,
                )?;
                forward()
            }
            Op::RunsCancel => {
                if let Some(tid) = self.str_field("thread_id")?.filter(|t| is_uuid(t)) {
                    self.on(Subject::Target(Target::Thread(tid)));
                }
                let g = self.grant(T, Action::Update)?;
                if g.active_filter().is_some() {
                    match self.str_field("thread_id")? {
                        Some(tid) if is_uuid(&tid) => {
                            self.check(
                                &g,
                                Target::Thread(tid.clone()),
                                Miss::NoRunsToCancel,
                                &tid,
                            )?;
                        }
                        Some(_) => {
                            return Err(GatewayError::unprocessable(
                                "Invalid thread ID: must be a UUID",
                            )
                            .into())
                        }
                        None => {
                            return Err(GatewayError::forbidden(
                                "Cancelling runs by status cannot be authorized thread by thread \
                                 behind graphguard; cancel with thread_id and run_ids",
                            )
                            .into())
                        }
                    }
                }
                forward()
            }
            Op::AssistantCreate => {
                self.on(Subject::CreateBody);
                let g = self.grant(A, Action::Create)?;
                if let Some(aid) = self.str_field("assistant_id")? {
                    if g.active_filter().is_some() && is_uuid(&aid) {
                        let miss = |id: &str| {
                            GatewayError::conflict(format!("Assistant {id} already exists"))
                        };
                        if let Some(v) = self.fact(Target::Assistant(aid.clone()))? {
                            if g.active_filter()
                                .is_some_and(|f| !f.matches(metadata_ref(&v)))
                            {
                                return Err(miss(&aid).into());
                            }
                        }
                    }
                }
                let mut f = self.stamped(&g, false)?;
                // As for threads: a cached "missing" for a client-chosen id is stale once created.
                if let Some(aid) = self.str_field("assistant_id")? {
                    f.invalidate.push(Target::Assistant(aid));
                }
                f
            }
            Op::AssistantSearch { count } => {
                return self.search(A, "/assistants/search", count, None)
            }
            Op::AssistantById { miss, stamp } => {
                let aid = self.param(&p.assistant_id)?;
                // `/graph` also takes a graph name: it means the graph's system assistant.
                let aid = if is_uuid(&aid) {
                    aid
                } else {
                    crate::routes::system_assistant_id(&aid).to_string()
                };
                self.on(Subject::Target(Target::Assistant(aid.clone())));
                let action = self
                    .input
                    .route
                    .route
                    .events
                    .first()
                    .map(|e| e.action)
                    .unwrap_or(Action::Read);
                let g = self.grant(A, action)?;
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
                let g = self.grant(A, Action::Read)?;
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
                let g = self.grant(A, Action::Delete)?;
                self.check(
                    &g,
                    Target::Assistant(aid.clone()),
                    Miss::AssistantWithId,
                    &aid,
                )?;
                if query_flag(self.input.query, "delete_threads") {
                    let td = self.grant(T, Action::Delete)?;
                    if td.active_filter().is_some() {
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
                let g = self.grant(C, action)?;
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
    fn stamped(&self, g: &Grant, _search: bool) -> R<Forward> {
        let mut f = forward();
        if let Some(md) = g.metadata.as_ref().filter(|m| !m.is_empty()) {
            let o = self.obj()?;
            let merged = o.merge_metadata(pairs(md)).map_err(|e| match e {
                BodyError::NotAnObject => GatewayError::unprocessable("metadata must be an object"),
                other => body_error(other),
            })?;
            f.body = Some(o.splice_body(&[("metadata", Some(&merged))]));
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

    /// A v2 protocol command `{id, method, params}`. `run.start` starts a run: its assistant
    /// is checked as on run creation and the handler's metadata is stamped into
    /// `params.metadata`.
    fn command(&mut self, g: &Grant) -> R<Forward> {
        if self.str_field("method")?.as_deref() != Some("run.start") {
            return Ok(forward());
        }
        let mut params = match self.obj()?.get::<Value>("params").map_err(body_error)? {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(GatewayError::unprocessable("params must be an object").into()),
        };
        let miss = GatewayError::not_found("Thread or assistant not found.");
        if let Some(Value::String(aid)) = params.get("assistant_id") {
            let aid = aid.clone();
            self.assistant_read_check(&aid, miss)?;
        }
        let mut f = forward();
        if let Some(md) = g.metadata.as_ref().filter(|m| !m.is_empty()) {
            let target = params
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if target.is_null() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(m) = target else {
                return Err(
                    GatewayError::unprocessable("params.metadata must be an object").into(),
                );
            };
            for (k, v) in md {
                m.insert(k.clone(), v.clone());
            }
            let raw = serde_json::to_vec(&Value::Object(params))
                .map_err(|e| GatewayError::internal(e.to_string()))?;
            f.body = Some(self.obj()?.splice_body(&[("params", Some(&raw))]));
        }
        Ok(f)
    }

    fn thread_create(&mut self) -> R<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(T, Action::Create)?;
        self.on(Subject::None);
        let tid = self.str_field("thread_id")?;
        if let (Some(tid), Some(filter)) = (&tid, g.active_filter()) {
            if is_uuid(tid) {
                if let Some(v) = self.fact(Target::Thread(tid.clone()))? {
                    if !filter.matches(metadata_ref(&v)) {
                        return Err(GatewayError::conflict(format!(
                            "Thread with ID {tid} already exists"
                        ))
                        .into());
                    }
                }
            }
        }
        if self.obj()?.get_raw("supersteps").is_some() {
            self.grant(T, Action::Update)?;
            self.grant(T, Action::Read)?;
        }
        let mut f = self.stamped(&g, false)?;
        if let Some(tid) = tid {
            f.invalidate.push(Target::Thread(tid));
        }
        Ok(f)
    }

    fn thread_prune(&mut self) -> R<Forward> {
        let ids: Vec<String> = self
            .obj()?
            .get::<Vec<String>>("thread_ids")
            .map_err(|_| GatewayError::unprocessable("thread_ids must be a list of strings"))?
            .unwrap_or_default();
        if ids.is_empty() {
            return Ok(forward());
        }
        let g = self.grant(T, Action::Delete)?;
        if self
            .policy
            .access
            .needs_tags(self.user, Event::new(T, Action::Delete))
        {
            for id in ids.iter().filter(|i| is_uuid(i)) {
                self.on(Subject::Target(Target::Thread(id.clone())));
                self.check_access(Event::new(T, Action::Delete))?;
            }
        }
        let none = || GatewayError::not_found("At least one thread not found or not authorized");
        if let Some(filter) = g.active_filter() {
            for id in &ids {
                if !is_uuid(id) {
                    return Err(none().into());
                }
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

    /// Check the run's assistant: graph names and system assistants are exempt (spec 5.2 step 4).
    /// A system assistant is recognised by its id (`uuid5(namespace, graph_id)`), never by a
    /// `created_by: system` metadata value, which any creator could write.
    fn assistant_read_check(&mut self, aid: &str, miss: GatewayError) -> R<()> {
        if !is_uuid(aid) {
            // A graph name resolves to the graph's system assistant.
            return Ok(());
        }
        let Some(v) = self.fact(Target::Assistant(aid.to_string()))? else {
            return Err(miss.into());
        };
        let md = metadata_ref(&v);
        let is_system = v
            .get("graph_id")
            .and_then(Value::as_str)
            .and_then(|g| {
                uuid::Uuid::try_parse(aid)
                    .ok()
                    .map(|id| id == crate::routes::system_assistant_id(g))
            })
            .unwrap_or(false);
        if is_system {
            return Ok(());
        }
        let saved = std::mem::replace(
            &mut self.subject,
            Subject::Target(Target::Assistant(aid.to_string())),
        );
        let g = self.grant(A, Action::Read);
        self.subject = saved;
        let g = g?;
        if g.active_filter().is_some_and(|f| !f.matches(md)) {
            return Err(miss.into());
        }
        Ok(())
    }

    fn run_create(&mut self, on_thread: bool) -> R<Forward> {
        let miss = GatewayError::not_found("Thread or assistant not found.");
        let aid = self.str_field("assistant_id")?;
        // An unknown assistant is 404 before any handler runs (spec 5.2 step 2).
        if let Some(aid) = aid.as_deref().filter(|a| is_uuid(a)) {
            if self.fact(Target::Assistant(aid.to_string()))?.is_none() {
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
                .needs_tags(self.user, Event::new(T, Action::CreateRun))
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
        let g = self.grant(T, Action::CreateRun)?;
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

    fn run_batch(&mut self) -> R<Forward> {
        let Body::Array(items) = self.input.body else {
            return Err(GatewayError::internal("route body kind mismatch").into());
        };
        let miss = GatewayError::not_found("Thread or assistant not found.");
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(items.len());
        for item in items {
            let aid = match item.get::<Value>("assistant_id").map_err(body_error)? {
                Some(Value::String(aid)) => Some(aid),
                None | Some(Value::Null) => None,
                Some(_) => {
                    return Err(GatewayError::unprocessable("assistant_id must be a string").into())
                }
            };
            if let Some(aid) = aid.as_deref().filter(|a| is_uuid(a)) {
                if self.fact(Target::Assistant(aid.to_string()))?.is_none() {
                    return Err(miss.clone().into());
                }
            }
            let g = self.grant(T, Action::CreateRun)?;
            if let Some(aid) = &aid {
                self.assistant_read_check(aid, miss.clone())?;
            }
            let stamped = match g.metadata.as_ref().filter(|m| !m.is_empty()) {
                Some(md) => {
                    let merged = item.merge_metadata(pairs(md)).map_err(|e| match e {
                        BodyError::NotAnObject => {
                            GatewayError::unprocessable("metadata must be an object")
                        }
                        other => body_error(other),
                    })?;
                    Some(item.splice(&[("metadata", Some(&merged))]))
                }
                None => None,
            };
            out.push(stamped);
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

    /// Thread, assistant and cron search and count (spec 4.3 and section 9): stamped metadata
    /// and scalar equalities are written over the client's own `metadata`; the rest is
    /// evaluated on the results by the proxy.
    fn search(
        &mut self,
        res: Resource,
        path: &'static str,
        count: bool,
        thread_filter: Option<ResolvedFilter>,
    ) -> R<Outcome> {
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
    ) -> R<Forward> {
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
            let num = |k: &str, d: u64| -> R<u64> {
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

    fn cron_create(&mut self, on_thread: bool) -> R<Forward> {
        self.on(Subject::CreateBody);
        let g = self.grant(C, Action::Create)?;
        self.on(Subject::None);
        if let Some(aid) = self.str_field("assistant_id")? {
            let miss = GatewayError::not_found(format!("Assistant '{aid}' not found"));
            self.assistant_read_check(&aid, miss)?;
        }
        let f = self.stamped(&g, false)?;
        if on_thread {
            let tid = self.param(&self.input.route.params.thread_id)?;
            self.on(Subject::Target(Target::Thread(tid.clone())));
            let read = self.grant(T, Action::Read)?;
            self.check(
                &read,
                Target::Thread(tid.clone()),
                Miss::ThreadWithIdVerbose,
                &tid,
            )?;
        }
        Ok(f)
    }

    fn cron_search(&mut self, count: bool) -> R<Outcome> {
        self.on(Subject::PerItem);
        let g = self.grant(C, Action::Search)?;
        self.on(Subject::None);
        let tid = self.str_field("thread_id")?;
        let thread_filter = match &tid {
            Some(tid) => {
                if is_uuid(tid) {
                    self.on(Subject::Target(Target::Thread(tid.clone())));
                }
                let read = self.grant(T, Action::Read)?;
                if read.active_filter().is_some() {
                    let visible = is_uuid(tid)
                        && match self.fact(Target::Thread(tid.clone()))? {
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
            None => self.grant(T, Action::Search)?.active_filter().cloned(),
        };
        Ok(Outcome::Forward(self.search_forward(
            &g,
            "/runs/crons/search",
            count,
            thread_filter,
        )?))
    }

    fn store(&mut self, op: Op) -> R<Forward> {
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
        // Labels are validated before the handler runs (spec 6).
        self.on(Subject::Deferred);
        let g = self.grant(S, action)?;
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
        let event = Event::new(S, action);
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
            match k.as_ref() {
                "namespace" => {
                    if namespace.replace(v.into_owned()).is_some() {
                        return Err(GatewayError::bad_request(
                            "Repeated query parameter 'namespace'",
                        ));
                    }
                }
                "key" => {
                    if key.replace(v.into_owned()).is_some() {
                        return Err(GatewayError::bad_request("Repeated query parameter 'key'"));
                    }
                }
                _ => {}
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
#[path = "decide_tests.rs"]
mod tests;
