//! THE TABLE: every `(method, path template)` the agent server serves, one row per line, with
//! the events it raises, its body and the [`Op`] that decides it (each group cites its section
//! of docs/semantics.md). [`TABLE`] is built from [`ROWS`] once, on first use.

use std::sync::LazyLock;

use http::Method;

use super::fields::{self as sh};
use super::{BodyKind, Miss, Op, Route, Seg, UnmediatedGroup};
use crate::event::{Action, Event, Resource};

const fn ev(r: Resource, a: Action) -> Event {
    Event::new(r, a)
}
use Action::*;
use Resource::*;
pub(crate) const T_CREATE: Event = ev(Threads, Create);
pub(crate) const T_READ: Event = ev(Threads, Read);
pub(crate) const T_UPDATE: Event = ev(Threads, Update);
pub(crate) const T_DELETE: Event = ev(Threads, Delete);
pub(crate) const T_SEARCH: Event = ev(Threads, Search);
pub(crate) const T_RUN: Event = ev(Threads, CreateRun);
pub(crate) const A_CREATE: Event = ev(Assistants, Create);
pub(crate) const A_READ: Event = ev(Assistants, Read);
pub(crate) const A_UPDATE: Event = ev(Assistants, Update);
pub(crate) const A_DELETE: Event = ev(Assistants, Delete);
pub(crate) const A_SEARCH: Event = ev(Assistants, Search);
pub(crate) const C_CREATE: Event = ev(Crons, Create);
pub(crate) const C_READ: Event = ev(Crons, Read);
pub(crate) const C_UPDATE: Event = ev(Crons, Update);
pub(crate) const C_DELETE: Event = ev(Crons, Delete);
pub(crate) const C_SEARCH: Event = ev(Crons, Search);
pub(crate) const S_PUT: Event = ev(Store, Put);
pub(crate) const S_GET: Event = ev(Store, Get);
pub(crate) const S_DELETE: Event = ev(Store, Delete);
pub(crate) const S_SEARCH: Event = ev(Store, Search);
pub(crate) const S_LIST: Event = ev(Store, ListNamespaces);

fn route_of(&(ref method, template, op, events, body): &Row) -> Route {
    let method = method.clone();
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

/// A row as written: method, path template, op, events raised in order, body.
pub type Row = (Method, &'static str, Op, &'static [Event], BodyKind);

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

/// The rows, in the order classification tries them.
#[rustfmt::skip]
pub static ROWS: &[Row] = {
    use BodyKind::*;
    use Miss as M;
    use Op::*;
    &[
        // Meta. Public paths are configurable; these rows make them routable.
        (GET, "/", Public, &[], Opaque),
        (GET, "/ok", Public, &[], Opaque),
        (GET, "/info", Public, &[], Opaque),
        (GET, "/docs", Public, &[], Opaque),
        (GET, "/openapi.json", Public, &[], Opaque),
        (GET, "/metrics", Public, &[], Opaque),
        (GET, "/ui/{*rest}", Public, &[], Opaque),
        // In-memory test routes: unauthenticated on the server, one wipes everything.
        (POST, "/internal/{*rest}", Blocked, &[], Opaque),
        (GET, "/internal/{*rest}", Blocked, &[], Opaque),
        (GET, "/deploy", Blocked, &[], Opaque),
        (POST, "/deploy", Blocked, &[], Opaque),
        (GET, "/deploy/{*rest}", Blocked, &[], Opaque),
        (POST, "/deploy/{*rest}", Blocked, &[], Opaque),
        // Threads (semantics §5.1).
        (POST, "/threads", ThreadCreate, &[T_CREATE], Object(&sh::THREAD_CREATE)),
        (POST, "/threads/search", ThreadSearch { count: false }, &[T_SEARCH], Object(&sh::THREAD_SEARCH)),
        (POST, "/threads/count", ThreadSearch { count: true }, &[T_SEARCH], Object(&sh::THREAD_COUNT)),
        (POST, "/threads/prune", ThreadPrune, &[T_DELETE], Object(&sh::THREAD_PRUNE)),
        (GET, "/threads/{thread_id}", ThreadById { miss: M::ThreadWithId }, &[T_READ], Opaque),
        (PATCH, "/threads/{thread_id}", ThreadPatch, &[T_UPDATE], Object(&sh::THREAD_PATCH)),
        (DELETE, "/threads/{thread_id}", ThreadById { miss: M::ThreadWithId }, &[T_DELETE], Opaque),
        (GET, "/threads/{thread_id}/state", ThreadById { miss: M::ThreadWithId }, &[T_READ], Opaque),
        (POST, "/threads/{thread_id}/state", ThreadStateUpdate, &[T_UPDATE, T_READ], Object(&sh::THREAD_STATE_UPDATE)),
        (GET, "/threads/{thread_id}/state/{checkpoint_id}", ThreadById { miss: M::ThreadWithId }, &[T_READ], Opaque),
        (POST, "/threads/{thread_id}/state/checkpoint", ThreadById { miss: M::ThreadWithId }, &[T_READ], Object(&sh::THREAD_STATE_CHECKPOINT)),
        (GET, "/threads/{thread_id}/storage", ThreadById { miss: M::ThreadWithId }, &[T_READ], Opaque),
        (GET, "/threads/{thread_id}/history", ThreadById { miss: M::ThreadWithId }, &[T_READ], Opaque),
        (POST, "/threads/{thread_id}/history", ThreadById { miss: M::ThreadWithId }, &[T_READ], Object(&sh::THREAD_HISTORY)),
        (POST, "/threads/{thread_id}/copy", ThreadCopy, &[T_READ, T_CREATE], Opaque),
        (GET, "/threads/{thread_id}/stream", ThreadById { miss: M::ThreadNotFoundSse }, &[T_READ], Opaque),
        (POST, "/threads/{thread_id}/stream/events", ThreadById { miss: M::ThreadNotFoundSse }, &[T_READ], Opaque),
        (POST, "/threads/{thread_id}/commands", ThreadCommands, &[T_RUN, T_READ, A_READ], Object(&sh::THREAD_COMMAND)),
        // Runs on a thread (semantics §5.2).
        (POST, "/threads/{thread_id}/runs", RunCreate { on_thread: true }, &[T_RUN, A_READ], Object(&sh::RUN_CREATE)),
        (POST, "/threads/{thread_id}/runs/wait", RunCreate { on_thread: true }, &[T_RUN, A_READ, T_READ], Object(&sh::RUN_CREATE)),
        (POST, "/threads/{thread_id}/runs/stream", RunCreate { on_thread: true }, &[T_RUN, A_READ, T_READ], Object(&sh::RUN_CREATE)),
        (GET, "/threads/{thread_id}/runs", RunList, &[T_READ, T_SEARCH], Opaque),
        (GET, "/threads/{thread_id}/runs/{run_id}", ThreadById { miss: M::ThreadWithId }, &[T_READ], Opaque),
        (DELETE, "/threads/{thread_id}/runs/{run_id}", ThreadById { miss: M::NotFound }, &[T_DELETE], Opaque),
        (GET, "/threads/{thread_id}/runs/{run_id}/join", ThreadById { miss: M::ThreadNotFound }, &[T_READ], Opaque),
        (GET, "/threads/{thread_id}/runs/{run_id}/stream", ThreadById { miss: M::ThreadNotFoundSse }, &[T_READ], Opaque),
        (POST, "/threads/{thread_id}/runs/{run_id}/cancel", ThreadById { miss: M::NoRunsToCancel }, &[T_UPDATE], Opaque),
        (POST, "/threads/{thread_id}/runs/crons", CronCreate { on_thread: true }, &[C_CREATE, A_READ, T_READ], Object(&sh::CRON_CREATE)),
        // Stateless runs (semantics §5.3).
        (POST, "/runs", RunCreate { on_thread: false }, &[T_RUN, A_READ], Object(&sh::RUN_CREATE)),
        (POST, "/runs/wait", RunCreate { on_thread: false }, &[T_RUN, A_READ], Object(&sh::RUN_CREATE)),
        (POST, "/runs/stream", RunCreate { on_thread: false }, &[T_RUN, A_READ], Object(&sh::RUN_CREATE)),
        (POST, "/runs/batch", RunBatch, &[T_RUN, A_READ], Array(&sh::RUN_CREATE)),
        (POST, "/runs/cancel", RunsCancel, &[T_UPDATE], Object(&sh::RUNS_CANCEL)),
        // Crons (semantics §5.5).
        (POST, "/runs/crons", CronCreate { on_thread: false }, &[C_CREATE, A_READ], Object(&sh::CRON_CREATE)),
        (POST, "/runs/crons/search", CronSearch { count: false }, &[C_SEARCH, T_SEARCH], Object(&sh::CRON_SEARCH)),
        (POST, "/runs/crons/count", CronSearch { count: true }, &[C_SEARCH, T_SEARCH], Object(&sh::CRON_COUNT)),
        (GET, "/runs/crons/{cron_id}", CronById { miss: M::NotFound, stamp: false }, &[C_READ], Opaque),
        (PATCH, "/runs/crons/{cron_id}", CronById { miss: M::Cron, stamp: true }, &[C_UPDATE], Object(&sh::CRON_PATCH)),
        (DELETE, "/runs/crons/{cron_id}", CronById { miss: M::NotFound, stamp: false }, &[C_DELETE], Opaque),
        // Assistants (semantics §5.4).
        (POST, "/assistants", AssistantCreate, &[A_CREATE], Object(&sh::ASSISTANT_CREATE)),
        (POST, "/assistants/search", AssistantSearch { count: false }, &[A_SEARCH], Object(&sh::ASSISTANT_SEARCH)),
        (POST, "/assistants/count", AssistantSearch { count: true }, &[A_SEARCH], Object(&sh::ASSISTANT_COUNT)),
        (GET, "/assistants/{assistant_id}", AssistantById { miss: M::NotFound, stamp: false }, &[A_READ], Opaque),
        (PATCH, "/assistants/{assistant_id}", AssistantById { miss: M::Assistant, stamp: true }, &[A_UPDATE], Object(&sh::ASSISTANT_PATCH)),
        (DELETE, "/assistants/{assistant_id}", AssistantDelete, &[A_DELETE], Opaque),
        (GET, "/assistants/{assistant_id}/graph", AssistantById { miss: M::NotFound, stamp: false }, &[A_READ], Opaque),
        (GET, "/assistants/{assistant_id}/schemas", AssistantById { miss: M::NotFound, stamp: false }, &[A_READ], Opaque),
        (GET, "/assistants/{assistant_id}/subgraphs", AssistantById { miss: M::NotFound, stamp: false }, &[A_READ], Opaque),
        (GET, "/assistants/{assistant_id}/subgraphs/{namespace}", AssistantById { miss: M::NotFound, stamp: false }, &[A_READ], Opaque),
        (POST, "/assistants/{assistant_id}/versions", AssistantVersions, &[A_READ], Object(&sh::ASSISTANT_VERSIONS)),
        (POST, "/assistants/{assistant_id}/latest", AssistantById { miss: M::Assistant, stamp: false }, &[A_UPDATE], Object(&sh::ASSISTANT_LATEST)),
        // Store (semantics §5.6 and §6).
        (PUT, "/store/items", StorePut, &[S_PUT], Object(&sh::STORE_PUT)),
        (GET, "/store/items", StoreGet, &[S_GET], Opaque),
        (DELETE, "/store/items", StoreDelete, &[S_DELETE], Object(&sh::STORE_DELETE)),
        (POST, "/store/items/search", StoreSearch, &[S_SEARCH], Object(&sh::STORE_SEARCH)),
        (POST, "/store/namespaces", StoreNamespaces, &[S_LIST], Object(&sh::STORE_NAMESPACES)),
        // Loopback surfaces (semantics §5.7): refused unless enabled.
        (GET, "/mcp", Unmediated(UnmediatedGroup::Mcp), &[], Opaque),
        (POST, "/mcp", Unmediated(UnmediatedGroup::Mcp), &[], Opaque),
        (DELETE, "/mcp", Unmediated(UnmediatedGroup::Mcp), &[], Opaque),
        (GET, "/a2a/{assistant_id}", Unmediated(UnmediatedGroup::A2a), &[], Opaque),
        (POST, "/a2a/{assistant_id}", Unmediated(UnmediatedGroup::A2a), &[], Opaque),
        (DELETE, "/a2a/{assistant_id}", Unmediated(UnmediatedGroup::A2a), &[], Opaque),
        (GET, "/a2a/{assistant_id}/.well-known/agent-card.json", Unmediated(UnmediatedGroup::A2a), &[], Opaque),
        (GET, "/a2a/{assistant_id}/.well-known/agent.json", Unmediated(UnmediatedGroup::A2a), &[], Opaque),
        (GET, "/.well-known/agent-card.json", Unmediated(UnmediatedGroup::A2a), &[], Opaque),
        (POST, "/ui/{assistant_id}", Unmediated(UnmediatedGroup::Ui), &[], Opaque),
    ]
};

/// The whole table.
pub static TABLE: LazyLock<Vec<Route>> = LazyLock::new(|| ROWS.iter().map(route_of).collect());
