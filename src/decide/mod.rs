//! The decision: from a classified request, the user and the facts looked up so far, either
//! the next fact needed or the final [`Decision`].
//!
//! Pure: no I/O, no clock. The proxy calls [`decide`] in a loop, fetching each [`Target`] it
//! asks for (a resource's metadata from the upstream, cached), until it gets a decision. Each
//! [`Op`] below follows the route's row in docs/semantics.md §5: which handlers run,
//! in which order, what the filter is checked against, and what a mismatch looks like.

mod assistants;
mod context;
mod crons;
mod fields;
mod runs;
mod search;
mod store;
mod threads;

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

    /// The target a [`Target::path`] names (how replicas name stale lookups to each other).
    pub fn from_path(path: &str) -> Option<Target> {
        if let Some(host) = path.strip_prefix("dns:") {
            return Some(Target::Host(host.to_string()));
        }
        if let Some(q) = path.strip_prefix("/store/items?") {
            let (mut ns, mut key) = (None, None);
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                match k.as_ref() {
                    "namespace" => ns = Some(v.into_owned()),
                    "key" => key = Some(v.into_owned()),
                    _ => return None,
                }
            }
            return Some(Target::StoreItem(ns?, key?));
        }
        let one = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|id| !id.is_empty() && !id.contains(['/', '?']))
                .map(str::to_string)
        };
        one("/threads/")
            .map(Target::Thread)
            .or_else(|| one("/assistants/").map(Target::Assistant))
            .or_else(|| one("/runs/crons/").map(Target::Cron))
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

    /// The route's own rules (docs/semantics.md §5), once the fields are known to be sound.
    fn route(&mut self) -> Decided<Outcome> {
        let op = self.input.route.route.op;
        Ok(Outcome::Forward(match op {
            Op::Public => Forward {
                authenticated: false,
                ..forward()
            },
            // Refused before authentication by the gateway (`routes::admission`); here for
            // every other caller of the decision (policy tests, explain, fuzzing).
            Op::Blocked => return Ok(Outcome::Refuse(Admission::refusal())),
            Op::Unmediated(group) => return self.unmediated(group),
            Op::ThreadCreate => self.thread_create()?,
            Op::ThreadSearch { count } => {
                return self.search(THREADS, "/threads/search", count, None)
            }
            Op::ThreadPrune => self.thread_prune()?,
            Op::ThreadById { miss } => self.thread_by_id(miss)?,
            Op::ThreadPatch => self.thread_patch()?,
            Op::ThreadStateUpdate => self.thread_state_update()?,
            Op::ThreadCopy => self.thread_copy()?,
            Op::ThreadCommands => self.thread_commands()?,
            Op::RunCreate { on_thread } => self.run_create(on_thread)?,
            Op::RunBatch => self.run_batch()?,
            Op::RunList => self.run_list()?,
            Op::RunsCancel => self.runs_cancel()?,
            Op::AssistantCreate => self.assistant_create()?,
            Op::AssistantSearch { count } => {
                return self.search(ASSISTANTS, "/assistants/search", count, None)
            }
            Op::AssistantById { miss, stamp } => self.assistant_by_id(miss, stamp)?,
            Op::AssistantVersions => self.assistant_versions()?,
            Op::AssistantDelete => self.assistant_delete()?,
            Op::CronCreate { on_thread } => self.cron_create(on_thread)?,
            Op::CronById { miss, stamp } => self.cron_by_id(miss, stamp)?,
            Op::CronSearch { count } => return self.cron_search(count),
            Op::StorePut
            | Op::StoreDelete
            | Op::StoreSearch
            | Op::StoreNamespaces
            | Op::StoreGet => self.store(op)?,
        }))
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
