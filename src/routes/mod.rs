//! The agent server's HTTP surface as one declarative table, and strict path classification.
//!
//! Every `(method, path template)` that `langgraph-api` serves is a [`Route`] row saying what
//! the gateway does with it: which authorization events it raises (in order), what its body
//! is, and which [`Op`] decides it. Anything not in the table is refused (404, or 405 on a known
//! path): the gateway never forwards what it cannot classify.

pub mod fields;

use std::sync::LazyLock;

use http::{HeaderValue, Method, StatusCode};

use crate::error::GatewayError;
use crate::event::{Action, Event, Resource};
use crate::policy::config::UnmediatedGroup;
use crate::routes::fields::{self as sh, Shape};

/// What the request body is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Not read for authorization; forwarded unchanged.
    Opaque,
    /// A JSON object of this shape, which the decision reads and may rewrite.
    Object(&'static Shape),
    /// A JSON array of objects of this shape (run batch).
    Array(&'static Shape),
}

/// The status and detail the agent server gives when a filter does not match on this route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// 404 `Thread with ID <id> not found`
    ThreadWithId,
    /// 404 `Thread with ID '<id>' not found. Please verify ...` (thread crons)
    ThreadWithIdVerbose,
    /// 404 `Thread not found` (join)
    ThreadNotFound,
    /// 200 SSE `event: error` with `404: Thread not found`
    ThreadNotFoundSse,
    /// 404 `Not Found`
    NotFound,
    /// 409 `Conflict` (copy)
    Conflict,
    /// 404 `Thread or assistant not found.` (run creation)
    ThreadOrAssistant,
    /// 404 `No runs found to cancel.`
    NoRunsToCancel,
    /// 404 `Assistant <id> not found`
    Assistant,
    /// 404 `Assistant with ID <id> not found`
    AssistantWithId,
    /// 404 `Cron '<id>' not found`
    Cron,
}

impl Miss {
    /// The refusal for a resource id.
    pub fn error(self, id: &str) -> GatewayError {
        use Miss::*;
        match self {
            ThreadWithId => GatewayError::not_found(format!("Thread with ID {id} not found")),
            ThreadWithIdVerbose => GatewayError::not_found(format!(
                "Thread with ID '{id}' not found. Please verify the ID is correct and the thread \
                 hasn't been deleted or expired."
            )),
            ThreadNotFound => GatewayError::not_found("Thread not found"),
            ThreadNotFoundSse => GatewayError::not_found("Thread not found").as_sse(),
            NotFound => GatewayError::not_found("Not Found"),
            Conflict => GatewayError::conflict("Conflict"),
            ThreadOrAssistant => GatewayError::not_found("Thread or assistant not found."),
            NoRunsToCancel => GatewayError::not_found("No runs found to cancel."),
            Assistant => GatewayError::not_found(format!("Assistant {id} not found")),
            AssistantWithId => GatewayError::not_found(format!("Assistant with ID {id} not found")),
            Cron => GatewayError::not_found(format!("Cron '{id}' not found")),
        }
    }
}

/// How a route is decided. Each variant's rules are in `decide.rs`, with the spec section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Served without authentication (health, docs, static UI).
    Public,
    /// Never forwarded (`/internal/*`, `/deploy*`).
    Blocked,
    /// Inner calls loop back inside the server, unmediated; forwarded only if enabled.
    Unmediated(UnmediatedGroup),
    /// `POST /threads`
    ThreadCreate,
    /// `POST /threads/search` (`count: false`) and `/threads/count`.
    ThreadSearch {
        /// The count endpoint.
        count: bool,
    },
    /// `POST /threads/prune`
    ThreadPrune,
    /// A by-id thread operation whose filter gates existence.
    ThreadById {
        /// What a mismatch looks like here.
        miss: Miss,
    },
    /// `PATCH /threads/{id}`: the handler runs only if the thread exists.
    ThreadPatch,
    /// `POST /threads/{id}/state`: update then read.
    ThreadStateUpdate,
    /// `POST /threads/{id}/copy`: read the source, create is a veto.
    ThreadCopy,
    /// `POST /threads/{id}/commands` (v2): run creation through a command.
    ThreadCommands,
    /// Run creation; `on_thread` for `/threads/{id}/runs...`.
    RunCreate {
        /// Whether the path names a thread.
        on_thread: bool,
    },
    /// `POST /runs/batch`
    RunBatch,
    /// `GET /threads/{id}/runs`: read and search on the thread.
    RunList,
    /// `POST /runs/cancel`
    RunsCancel,
    /// `POST /assistants`
    AssistantCreate,
    /// `POST /assistants/search` and `/count`.
    AssistantSearch {
        /// The count endpoint.
        count: bool,
    },
    /// A by-id assistant operation (read, update, delete, graph ...).
    AssistantById {
        /// What a mismatch looks like here.
        miss: Miss,
        /// Whether the body's `metadata` is stamped (PATCH).
        stamp: bool,
    },
    /// `POST /assistants/{id}/versions`: each version's metadata is filtered.
    AssistantVersions,
    /// `DELETE /assistants/{id}`
    AssistantDelete,
    /// Cron creation; `on_thread` for `/threads/{id}/runs/crons`.
    CronCreate {
        /// Whether the path names a thread.
        on_thread: bool,
    },
    /// A by-id cron operation.
    CronById {
        /// What a mismatch looks like here.
        miss: Miss,
        /// Whether the body's `metadata` is stamped (PATCH, only if sent).
        stamp: bool,
    },
    /// `POST /runs/crons/search` and `/count`.
    CronSearch {
        /// The count endpoint.
        count: bool,
    },
    /// `PUT /store/items`
    StorePut,
    /// `GET /store/items?namespace=a.b&key=k`
    StoreGet,
    /// `DELETE /store/items`
    StoreDelete,
    /// `POST /store/items/search`
    StoreSearch,
    /// `POST /store/namespaces`
    StoreNamespaces,
}

/// One row of the table.
#[derive(Debug)]
pub struct Route {
    /// HTTP method (GET rows also match HEAD, as Starlette does).
    pub method: Method,
    /// Path template, `{name}` for a parameter, `{*rest}` for any remainder.
    pub template: &'static str,
    /// How it is decided.
    pub op: Op,
    /// The authorization events it raises, in order (documentation and tests; `decide` raises
    /// them).
    pub events: &'static [Event],
    /// What the body is.
    pub body: BodyKind,
    segments: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(&'static str),
    Param(&'static str),
    Rest,
}

/// Path parameters of a match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `{thread_id}`
    pub thread_id: Option<String>,
    /// `{run_id}`
    pub run_id: Option<String>,
    /// `{assistant_id}` (a UUID or a graph name)
    pub assistant_id: Option<String>,
    /// `{cron_id}`
    pub cron_id: Option<String>,
}

/// A classified request.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The row.
    pub route: &'static Route,
    /// Its parameters.
    pub params: Params,
}

const fn ev(r: Resource, a: Action) -> Event {
    Event::new(r, a)
}
use Action::*;
use Resource::*;
const T_CREATE: Event = ev(Threads, Create);
const T_READ: Event = ev(Threads, Read);
const T_UPDATE: Event = ev(Threads, Update);
const T_DELETE: Event = ev(Threads, Delete);
const T_SEARCH: Event = ev(Threads, Search);
const T_RUN: Event = ev(Threads, CreateRun);
const A_CREATE: Event = ev(Assistants, Create);
const A_READ: Event = ev(Assistants, Read);
const A_UPDATE: Event = ev(Assistants, Update);
const A_DELETE: Event = ev(Assistants, Delete);
const A_SEARCH: Event = ev(Assistants, Search);
const C_CREATE: Event = ev(Crons, Create);
const C_READ: Event = ev(Crons, Read);
const C_UPDATE: Event = ev(Crons, Update);
const C_DELETE: Event = ev(Crons, Delete);
const C_SEARCH: Event = ev(Crons, Search);
const S_PUT: Event = ev(Store, Put);
const S_GET: Event = ev(Store, Get);
const S_DELETE: Event = ev(Store, Delete);
const S_SEARCH: Event = ev(Store, Search);
const S_LIST: Event = ev(Store, ListNamespaces);

fn row(
    method: Method,
    template: &'static str,
    op: Op,
    events: &'static [Event],
    body: BodyKind,
) -> Route {
    let segments = template
        .split('/')
        .skip(1)
        .map(|s| {
            if s == "{*rest}" {
                Seg::Rest
            } else if let Some(p) = s.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Seg::Param(p)
            } else {
                Seg::Lit(s)
            }
        })
        .collect();
    Route {
        method,
        template,
        op,
        events,
        body,
        segments,
    }
}

/// The whole table.
pub static TABLE: LazyLock<Vec<Route>> = LazyLock::new(build_table);

fn build_table() -> Vec<Route> {
    use BodyKind::*;
    use Miss as M;
    use Op::*;
    let (get, post, put, patch, delete) = (
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    );
    let by_id = |miss| ThreadById { miss };
    vec![
        // Meta. Public paths are configurable; these rows make them routable.
        row(get.clone(), "/", Public, &[], Opaque),
        row(get.clone(), "/ok", Public, &[], Opaque),
        row(get.clone(), "/info", Public, &[], Opaque),
        row(get.clone(), "/docs", Public, &[], Opaque),
        row(get.clone(), "/openapi.json", Public, &[], Opaque),
        row(get.clone(), "/metrics", Public, &[], Opaque),
        row(get.clone(), "/ui/{*rest}", Public, &[], Opaque),
        // In-memory test routes: unauthenticated on the server, one wipes everything.
        row(post.clone(), "/internal/{*rest}", Blocked, &[], Opaque),
        row(get.clone(), "/internal/{*rest}", Blocked, &[], Opaque),
        row(get.clone(), "/deploy", Blocked, &[], Opaque),
        row(post.clone(), "/deploy", Blocked, &[], Opaque),
        row(get.clone(), "/deploy/{*rest}", Blocked, &[], Opaque),
        row(post.clone(), "/deploy/{*rest}", Blocked, &[], Opaque),
        // Threads (spec 5.1).
        row(
            post.clone(),
            "/threads",
            ThreadCreate,
            &[T_CREATE],
            Object(&sh::THREAD_CREATE),
        ),
        row(
            post.clone(),
            "/threads/search",
            ThreadSearch { count: false },
            &[T_SEARCH],
            Object(&sh::THREAD_SEARCH),
        ),
        row(
            post.clone(),
            "/threads/count",
            ThreadSearch { count: true },
            &[T_SEARCH],
            Object(&sh::THREAD_COUNT),
        ),
        row(
            post.clone(),
            "/threads/prune",
            ThreadPrune,
            &[T_DELETE],
            Object(&sh::THREAD_PRUNE),
        ),
        row(
            get.clone(),
            "/threads/{thread_id}",
            by_id(M::ThreadWithId),
            &[T_READ],
            Opaque,
        ),
        row(
            patch.clone(),
            "/threads/{thread_id}",
            ThreadPatch,
            &[T_UPDATE],
            Object(&sh::THREAD_PATCH),
        ),
        row(
            delete.clone(),
            "/threads/{thread_id}",
            ThreadById {
                miss: M::ThreadWithId,
            },
            &[T_DELETE],
            Opaque,
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/state",
            by_id(M::ThreadWithId),
            &[T_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/state",
            ThreadStateUpdate,
            &[T_UPDATE, T_READ],
            Object(&sh::THREAD_STATE_UPDATE),
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/state/{checkpoint_id}",
            by_id(M::ThreadWithId),
            &[T_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/state/checkpoint",
            by_id(M::ThreadWithId),
            &[T_READ],
            Object(&sh::THREAD_STATE_CHECKPOINT),
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/storage",
            by_id(M::ThreadWithId),
            &[T_READ],
            Opaque,
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/history",
            by_id(M::ThreadWithId),
            &[T_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/history",
            by_id(M::ThreadWithId),
            &[T_READ],
            Object(&sh::THREAD_HISTORY),
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/copy",
            ThreadCopy,
            &[T_READ, T_CREATE],
            Opaque,
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/stream",
            by_id(M::ThreadNotFoundSse),
            &[T_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/stream/events",
            by_id(M::ThreadNotFoundSse),
            &[T_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/commands",
            ThreadCommands,
            &[T_RUN, T_READ, A_READ],
            Object(&sh::THREAD_COMMAND),
        ),
        // Runs on a thread (spec 5.2).
        row(
            post.clone(),
            "/threads/{thread_id}/runs",
            RunCreate { on_thread: true },
            &[T_RUN, A_READ],
            Object(&sh::RUN_CREATE),
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/runs/wait",
            RunCreate { on_thread: true },
            &[T_RUN, A_READ],
            Object(&sh::RUN_CREATE),
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/runs/stream",
            RunCreate { on_thread: true },
            &[T_RUN, A_READ],
            Object(&sh::RUN_CREATE),
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/runs",
            RunList,
            &[T_READ, T_SEARCH],
            Opaque,
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/runs/{run_id}",
            by_id(M::ThreadWithId),
            &[T_READ],
            Opaque,
        ),
        row(
            delete.clone(),
            "/threads/{thread_id}/runs/{run_id}",
            ThreadById { miss: M::NotFound },
            &[T_DELETE],
            Opaque,
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/runs/{run_id}/join",
            by_id(M::ThreadNotFound),
            &[T_READ],
            Opaque,
        ),
        row(
            get.clone(),
            "/threads/{thread_id}/runs/{run_id}/stream",
            by_id(M::ThreadNotFoundSse),
            &[T_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/runs/{run_id}/cancel",
            ThreadById {
                miss: M::NoRunsToCancel,
            },
            &[T_UPDATE],
            Opaque,
        ),
        row(
            post.clone(),
            "/threads/{thread_id}/runs/crons",
            CronCreate { on_thread: true },
            &[C_CREATE, A_READ, T_READ],
            Object(&sh::CRON_CREATE),
        ),
        // Stateless runs (spec 5.3).
        row(
            post.clone(),
            "/runs",
            RunCreate { on_thread: false },
            &[T_RUN, A_READ],
            Object(&sh::RUN_CREATE),
        ),
        row(
            post.clone(),
            "/runs/wait",
            RunCreate { on_thread: false },
            &[T_RUN, A_READ],
            Object(&sh::RUN_CREATE),
        ),
        row(
            post.clone(),
            "/runs/stream",
            RunCreate { on_thread: false },
            &[T_RUN, A_READ],
            Object(&sh::RUN_CREATE),
        ),
        row(
            post.clone(),
            "/runs/batch",
            RunBatch,
            &[T_RUN, A_READ],
            Array(&sh::RUN_CREATE),
        ),
        row(
            post.clone(),
            "/runs/cancel",
            RunsCancel,
            &[T_UPDATE],
            Object(&sh::RUNS_CANCEL),
        ),
        // Crons (spec 5.5).
        row(
            post.clone(),
            "/runs/crons",
            CronCreate { on_thread: false },
            &[C_CREATE, A_READ],
            Object(&sh::CRON_CREATE),
        ),
        row(
            post.clone(),
            "/runs/crons/search",
            CronSearch { count: false },
            &[C_SEARCH, T_SEARCH],
            Object(&sh::CRON_SEARCH),
        ),
        row(
            post.clone(),
            "/runs/crons/count",
            CronSearch { count: true },
            &[C_SEARCH, T_SEARCH],
            Object(&sh::CRON_COUNT),
        ),
        row(
            get.clone(),
            "/runs/crons/{cron_id}",
            CronById {
                miss: M::NotFound,
                stamp: false,
            },
            &[C_READ],
            Opaque,
        ),
        row(
            patch.clone(),
            "/runs/crons/{cron_id}",
            CronById {
                miss: M::Cron,
                stamp: true,
            },
            &[C_UPDATE],
            Object(&sh::CRON_PATCH),
        ),
        row(
            delete.clone(),
            "/runs/crons/{cron_id}",
            CronById {
                miss: M::NotFound,
                stamp: false,
            },
            &[C_DELETE],
            Opaque,
        ),
        // Assistants (spec 5.4).
        row(
            post.clone(),
            "/assistants",
            AssistantCreate,
            &[A_CREATE],
            Object(&sh::ASSISTANT_CREATE),
        ),
        row(
            post.clone(),
            "/assistants/search",
            AssistantSearch { count: false },
            &[A_SEARCH],
            Object(&sh::ASSISTANT_SEARCH),
        ),
        row(
            post.clone(),
            "/assistants/count",
            AssistantSearch { count: true },
            &[A_SEARCH],
            Object(&sh::ASSISTANT_COUNT),
        ),
        row(
            get.clone(),
            "/assistants/{assistant_id}",
            AssistantById {
                miss: M::NotFound,
                stamp: false,
            },
            &[A_READ],
            Opaque,
        ),
        row(
            patch.clone(),
            "/assistants/{assistant_id}",
            AssistantById {
                miss: M::Assistant,
                stamp: true,
            },
            &[A_UPDATE],
            Object(&sh::ASSISTANT_PATCH),
        ),
        row(
            delete.clone(),
            "/assistants/{assistant_id}",
            AssistantDelete,
            &[A_DELETE],
            Opaque,
        ),
        row(
            get.clone(),
            "/assistants/{assistant_id}/graph",
            AssistantById {
                miss: M::NotFound,
                stamp: false,
            },
            &[A_READ],
            Opaque,
        ),
        row(
            get.clone(),
            "/assistants/{assistant_id}/schemas",
            AssistantById {
                miss: M::NotFound,
                stamp: false,
            },
            &[A_READ],
            Opaque,
        ),
        row(
            get.clone(),
            "/assistants/{assistant_id}/subgraphs",
            AssistantById {
                miss: M::NotFound,
                stamp: false,
            },
            &[A_READ],
            Opaque,
        ),
        row(
            get.clone(),
            "/assistants/{assistant_id}/subgraphs/{namespace}",
            AssistantById {
                miss: M::NotFound,
                stamp: false,
            },
            &[A_READ],
            Opaque,
        ),
        row(
            post.clone(),
            "/assistants/{assistant_id}/versions",
            AssistantVersions,
            &[A_READ],
            Object(&sh::ASSISTANT_VERSIONS),
        ),
        row(
            post.clone(),
            "/assistants/{assistant_id}/latest",
            AssistantById {
                miss: M::Assistant,
                stamp: false,
            },
            &[A_UPDATE],
            Object(&sh::ASSISTANT_LATEST),
        ),
        // Store (spec 5.6 and 6).
        row(
            put.clone(),
            "/store/items",
            StorePut,
            &[S_PUT],
            Object(&sh::STORE_PUT),
        ),
        row(get.clone(), "/store/items", StoreGet, &[S_GET], Opaque),
        row(
            delete.clone(),
            "/store/items",
            StoreDelete,
            &[S_DELETE],
            Object(&sh::STORE_DELETE),
        ),
        row(
            post.clone(),
            "/store/items/search",
            StoreSearch,
            &[S_SEARCH],
            Object(&sh::STORE_SEARCH),
        ),
        row(
            post.clone(),
            "/store/namespaces",
            StoreNamespaces,
            &[S_LIST],
            Object(&sh::STORE_NAMESPACES),
        ),
        // Loopback surfaces (spec 5.7): refused unless enabled.
        row(
            get.clone(),
            "/mcp",
            Unmediated(UnmediatedGroup::Mcp),
            &[],
            Opaque,
        ),
        row(
            post.clone(),
            "/mcp",
            Unmediated(UnmediatedGroup::Mcp),
            &[],
            Opaque,
        ),
        row(
            delete.clone(),
            "/mcp",
            Unmediated(UnmediatedGroup::Mcp),
            &[],
            Opaque,
        ),
        row(
            get.clone(),
            "/a2a/{assistant_id}",
            Unmediated(UnmediatedGroup::A2a),
            &[],
            Opaque,
        ),
        row(
            post.clone(),
            "/a2a/{assistant_id}",
            Unmediated(UnmediatedGroup::A2a),
            &[],
            Opaque,
        ),
        row(
            delete.clone(),
            "/a2a/{assistant_id}",
            Unmediated(UnmediatedGroup::A2a),
            &[],
            Opaque,
        ),
        row(
            get.clone(),
            "/a2a/{assistant_id}/.well-known/agent-card.json",
            Unmediated(UnmediatedGroup::A2a),
            &[],
            Opaque,
        ),
        row(
            get.clone(),
            "/a2a/{assistant_id}/.well-known/agent.json",
            Unmediated(UnmediatedGroup::A2a),
            &[],
            Opaque,
        ),
        row(
            get.clone(),
            "/.well-known/agent-card.json",
            Unmediated(UnmediatedGroup::A2a),
            &[],
            Opaque,
        ),
        row(
            post,
            "/ui/{assistant_id}",
            Unmediated(UnmediatedGroup::Ui),
            &[],
            Opaque,
        ),
    ]
}

/// Refuse paths whose routing could differ between the gateway and the upstream.
///
/// Accepted: `/` followed by segments of RFC 3986 unreserved characters and `!$&'()*+,=:@`.
/// Refused with 400: empty segments (`//`), dot segments, any `%` (encoded `/`, `.`, `\` or
/// anything else: no decoding means no double decoding), `;` parameters, backslashes, control
/// and non-ASCII bytes, paths longer than 2048 bytes.
pub fn check_path(path: &str) -> Result<(), GatewayError> {
    const MAX: usize = 2048;
    let bad = |why: &str| {
        Err(GatewayError::bad_request(format!(
            "Ambiguous request path: {why}"
        )))
    };
    if path.len() > MAX {
        return Err(GatewayError::new(
            StatusCode::URI_TOO_LONG,
            "Request path too long",
        ));
    }
    if !path.starts_with('/') {
        return bad("it must start with '/'");
    }
    if path == "/" {
        return Ok(());
    }
    for b in path.bytes() {
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b);
        if !ok {
            return match b {
                b'%' => bad("percent-encoding is not accepted"),
                b';' => bad("';' parameters are not accepted"),
                b'\\' => bad("backslashes are not accepted"),
                _ => bad("invalid character"),
            };
        }
    }
    let body = path.get(1..).unwrap_or("");
    let trailing = body.strip_suffix('/').unwrap_or(body);
    for seg in trailing.split('/') {
        match seg {
            "" => return bad("empty segment ('//')"),
            "." | ".." => return bad("dot segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Classify a (checked) path and method against the table.
pub fn classify(method: &Method, path: &str) -> Result<RouteMatch, GatewayError> {
    let want = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let mut allowed: Vec<&Method> = Vec::new();
    for route in TABLE.iter() {
        if fits(&route.segments, &parts) {
            if route.method == *want {
                let params = capture(&route.segments, &parts);
                return Ok(RouteMatch { route, params });
            }
            if !allowed.contains(&&route.method) {
                allowed.push(&route.method);
            }
        }
    }
    if allowed.is_empty() {
        return Err(GatewayError::not_found("Not Found"));
    }
    let allow = allowed
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut e = GatewayError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    if let Ok(v) = HeaderValue::from_str(&allow) {
        e = e.with_header(http::header::ALLOW, v);
    }
    Err(e)
}

/// Whether the path's segments fit a route's template (no allocation: most routes are tried
/// and rejected on every request).
fn fits(segs: &[Seg], parts: &[&str]) -> bool {
    let mut i = 0;
    for seg in segs {
        match seg {
            Seg::Rest => return parts.get(i).is_some_and(|p| !p.is_empty()),
            Seg::Lit(l) => {
                if parts.get(i) != Some(l) {
                    return false;
                }
            }
            Seg::Param(_) => {
                if parts.get(i).is_none_or(|p| p.is_empty()) {
                    return false;
                }
            }
        }
        i += 1;
    }
    i == parts.len()
}

/// The parameters of a path that [`fits`] the template.
fn capture(segs: &[Seg], parts: &[&str]) -> Params {
    let mut params = Params::default();
    for (seg, part) in segs.iter().zip(parts) {
        if let Seg::Param(name) = seg {
            let v = Some((*part).to_string());
            match *name {
                "thread_id" => params.thread_id = v,
                "run_id" => params.run_id = v,
                "assistant_id" => params.assistant_id = v,
                "cron_id" => params.cron_id = v,
                _ => {}
            }
        }
    }
    params
}

/// Validate path ids before any handler runs, as the server does (422), and refuse every
/// spelling of a UUID but the canonical one: the forwarded path names exactly the resource
/// that was authorized.
pub fn validate_params(m: &RouteMatch) -> Result<(), GatewayError> {
    use crate::routes::fields::Of;
    for (id, of) in [
        (&m.params.thread_id, Of::Thread),
        (&m.params.run_id, Of::Run),
        (&m.params.cron_id, Of::Cron),
    ] {
        if let Some(id) = id {
            crate::decide::canonical_id(of, id)?;
        }
    }
    // Assistant routes take UUIDs; only `/graph` also takes a graph name (the server maps it
    // to the graph's system assistant).
    if let Some(id) = &m.params.assistant_id {
        let by_name = m.route.template == "/assistants/{assistant_id}/graph"
            || !m.route.template.starts_with("/assistants/");
        match crate::ids::read(id) {
            crate::ids::IdForm::NotUuid if by_name => {}
            _ => {
                crate::decide::canonical_id(Of::Assistant, id)?;
            }
        }
    }
    Ok(())
}

/// The id of a graph's default (system) assistant: `uuid5(6ba7b821-..., graph_id)`.
pub fn system_assistant_id(graph_id: &str) -> uuid::Uuid {
    const NAMESPACE: uuid::Uuid = uuid::uuid!("6ba7b821-9dad-11d1-80b4-00c04fd430c8");
    uuid::Uuid::new_v5(&NAMESPACE, graph_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, path: &str) -> Op {
        check_path(path).unwrap();
        classify(&method, path).unwrap().route.op
    }

    #[test]
    fn every_row_is_reachable_by_its_own_template() {
        for r in TABLE.iter() {
            let path: String = r
                .template
                .replace("{thread_id}", "6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e")
                .replace("{run_id}", "1ef1d1a5-3d6a-4a4e-9a57-2b1e1b1e1b1e")
                .replace("{cron_id}", "2ef1d1a5-3d6a-4a4e-9a57-2b1e1b1e1b1e")
                .replace("{assistant_id}", "agent")
                .replace("{checkpoint_id}", "cp1")
                .replace("{namespace}", "sub")
                .replace("{*rest}", "x/y");
            check_path(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let m =
                classify(&r.method, &path).unwrap_or_else(|e| panic!("{} {path}: {e}", r.method));
            assert!(
                std::ptr::eq(m.route, r),
                "{} {} matched {}",
                r.method,
                r.template,
                m.route.template
            );
        }
    }

    #[test]
    fn every_event_row_lists_valid_events() {
        for r in TABLE.iter() {
            for e in r.events {
                assert!(e.is_valid(), "{}: {e}", r.template);
            }
        }
    }

    #[test]
    fn no_two_rows_share_method_and_template() {
        let mut seen = std::collections::HashSet::new();
        for r in TABLE.iter() {
            assert!(
                seen.insert((r.method.clone(), r.template)),
                "{} {}",
                r.method,
                r.template
            );
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(
            op(Method::POST, "/threads/search"),
            Op::ThreadSearch { count: false }
        );
        assert_eq!(
            op(Method::POST, "/runs/crons"),
            Op::CronCreate { on_thread: false }
        );
        assert_eq!(
            op(
                Method::POST,
                "/threads/6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e/state/checkpoint"
            ),
            Op::ThreadById {
                miss: Miss::ThreadWithId
            }
        );
    }

    #[test]
    fn run_create_on_thread_and_stateless() {
        let t = "/threads/6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e/runs/wait";
        assert_eq!(op(Method::POST, t), Op::RunCreate { on_thread: true });
        assert_eq!(
            op(Method::POST, "/runs/stream"),
            Op::RunCreate { on_thread: false }
        );
        let m = classify(&Method::POST, t).unwrap();
        assert_eq!(m.route.events, &[T_RUN, A_READ]);
        assert_eq!(
            m.params.thread_id.as_deref(),
            Some("6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e")
        );
    }

    #[test]
    fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
        let e = classify(&Method::GET, "/no/such/path").unwrap_err();
        assert_eq!(
            (e.status, e.detail.as_str()),
            (StatusCode::NOT_FOUND, "Not Found")
        );
        let e = classify(&Method::PUT, "/threads").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(e
            .headers
            .iter()
            .any(|(n, v)| n == http::header::ALLOW && v == "POST"));
    }

    #[test]
    fn head_matches_get_rows() {
        assert_eq!(op(Method::HEAD, "/ok"), Op::Public);
    }

    #[test]
    fn trailing_slash_is_not_a_route() {
        assert!(classify(&Method::POST, "/threads/").is_err());
    }

    #[test]
    fn case_variants_are_not_routes() {
        assert!(classify(&Method::POST, "/Threads").is_err());
    }

    #[test]
    fn internal_and_deploy_are_blocked_rows() {
        assert_eq!(op(Method::POST, "/internal/truncate"), Op::Blocked);
        assert_eq!(op(Method::GET, "/internal/debug/thread/x"), Op::Blocked);
        assert_eq!(op(Method::GET, "/deploy"), Op::Blocked);
        assert_eq!(op(Method::GET, "/deploy/op1/stream"), Op::Blocked);
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/threads/../assistants",
            "/threads/./search",
            "/threads/%2e%2e/assistants",
            "/threads%2fsearch",
            "/threads/%252e",
            "//threads",
            "/threads//search",
            "/threads;x=1/search",
            "/threads\\search",
            "/threads/\u{0}",
            "/thréads",
            "threads",
            "/threads/..",
        ] {
            let e = check_path(p).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{p}");
        }
        assert_eq!(
            check_path(&format!("/{}", "a".repeat(5000)))
                .unwrap_err()
                .status,
            StatusCode::URI_TOO_LONG
        );
    }

    #[test]
    fn plain_paths_are_accepted() {
        for p in [
            "/",
            "/threads",
            "/assistants/my-graph_1",
            "/threads/6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e/state",
            "/ui/x.js",
        ] {
            check_path(p).unwrap();
        }
    }

    #[test]
    fn path_ids_must_be_uuids() {
        let m = classify(&Method::GET, "/threads/not-a-uuid").unwrap();
        let e = validate_params(&m).unwrap_err();
        assert_eq!(
            (e.status, e.detail.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid thread ID: must be a UUID"
            )
        );
        let m = classify(&Method::GET, "/assistants/agent").unwrap();
        let e = validate_params(&m).unwrap_err();
        assert_eq!(e.detail, "Invalid assistant ID: must be a UUID");
        let m = classify(&Method::GET, "/assistants/agent/graph").unwrap();
        assert!(
            validate_params(&m).is_ok(),
            "the graph route takes graph names"
        );
        assert!(
            validate_params(&m).is_ok(),
            "assistant ids may be graph names"
        );
    }

    #[test]
    fn system_assistant_id_matches_langgraph() {
        // uuid5(6ba7b821-9dad-11d1-80b4-00c04fd430c8, "agent"), as langgraph_api computes it.
        assert_eq!(
            system_assistant_id("agent").to_string(),
            "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
        );
    }
}
