//! The agent server's HTTP surface as one declarative table, and strict path classification.
//!
//! Every `(method, path template)` that `langgraph-api` serves is a [`Route`] row saying what
//! the gateway does with it: which authorization events it raises (in order), what its body
//! is, and which [`Op`] decides it. Anything not in the table is refused (404, or 405 on a known
//! path): the gateway never forwards what it cannot classify.

pub mod fields;
pub mod table;

use http::{HeaderValue, Method, StatusCode};

use crate::error::GatewayError;
use crate::event::Event;
use crate::ids::{self, IdForm};
use crate::routes::fields::{Of, Shape};
use serde::Deserialize;

/// Route groups whose inner calls the gateway cannot mediate (they loop back inside the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum UnmediatedGroup {
    /// `/mcp`
    Mcp,
    /// `/a2a/...` and `/.well-known/agent-card.json`
    A2a,
    /// `POST /ui/{graph_id}`
    Ui,
}

impl UnmediatedGroup {
    /// The name used in `settings.unmediated_routes`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnmediatedGroup::Mcp => "mcp",
            UnmediatedGroup::A2a => "a2a",
            UnmediatedGroup::Ui => "ui",
        }
    }
}

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

/// How a route is decided. Each variant's rules are in the `decide` module, with its section of docs/semantics.md.
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

pub use table::TABLE;

/// What the table alone decides about a request, before anyone is authenticated. This is the
/// one place public and blocked routes are decided: the gateway asks it before
/// authentication, and the decision core refuses a blocked row with [`Admission::refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Forwarded to anyone, unauthenticated and without a body: an [`Op::Public`] row whose
    /// path is listed in `settings.public_paths` (the UI's static files always are).
    Public,
    /// Never forwarded (`/internal/*`, `/deploy*`).
    Blocked,
    /// Authenticate first; the route's rules decide (an [`Op::Public`] row whose path is not
    /// listed public is then forwarded with no handler).
    Authenticate,
}

impl Admission {
    /// The refusal of a blocked route.
    pub fn refusal() -> GatewayError {
        GatewayError::forbidden(
            "graphguard never forwards the agent server's /internal and /deploy routes",
        )
    }
}

/// How the table admits a classified request for `path`, given the public paths.
pub fn admission(m: &RouteMatch, path: &str, public_paths: &[String]) -> Admission {
    match m.route.op {
        Op::Blocked => Admission::Blocked,
        Op::Public
            if m.route.template == "/ui/{*rest}" || public_paths.iter().any(|p| p == path) =>
        {
            Admission::Public
        }
        _ => Admission::Authenticate,
    }
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
    for (id, of) in [
        (&m.params.thread_id, Of::Thread),
        (&m.params.run_id, Of::Run),
        (&m.params.cron_id, Of::Cron),
    ] {
        if let Some(id) = id {
            canonical_id(of, id)?;
        }
    }
    // Assistant routes take UUIDs; only `/graph` also takes a graph name (the server maps it
    // to the graph's system assistant).
    if let Some(id) = &m.params.assistant_id {
        let by_name = m.route.template == "/assistants/{assistant_id}/graph"
            || !m.route.template.starts_with("/assistants/");
        match ids::read(id) {
            IdForm::NotUuid if by_name => {}
            _ => {
                canonical_id(Of::Assistant, id)?;
            }
        }
    }
    Ok(())
}

/// A canonical id, or the 422 the server gives for an invalid one (and graphguard for another
/// spelling of a valid one: what is authorized must be byte for byte what the server touches).
pub fn canonical_id(of: Of, s: &str) -> Result<&str, GatewayError> {
    match ids::read(s) {
        IdForm::Canonical(_) => Ok(s),
        IdForm::Variant(u) => Err(GatewayError::unprocessable(format!(
            "Invalid {} ID: graphguard accepts a UUID only in canonical form ({u})",
            of.word()
        ))),
        IdForm::NotUuid => Err(GatewayError::unprocessable(format!(
            "Invalid {} ID: must be a UUID",
            of.word()
        ))),
    }
}

/// The assistant a run or cron names, resolved as the server resolves it: a canonical UUID,
/// or a graph name, which means the graph's system assistant (`uuid5(namespace, name)`).
/// Another spelling of a UUID is refused (the server would read it as that UUID).
pub fn assistant_ref(s: &str) -> Result<String, GatewayError> {
    match ids::read(s) {
        IdForm::Canonical(_) => Ok(s.to_string()),
        IdForm::NotUuid => Ok(system_assistant_id(s).to_string()),
        IdForm::Variant(_) => canonical_id(Of::Assistant, s).map(str::to_string),
    }
}

/// The id of a graph's default (system) assistant: `uuid5(6ba7b821-..., graph_id)`.
pub fn system_assistant_id(graph_id: &str) -> uuid::Uuid {
    const NAMESPACE: uuid::Uuid = uuid::uuid!("6ba7b821-9dad-11d1-80b4-00c04fd430c8");
    uuid::Uuid::new_v5(&NAMESPACE, graph_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::table::*;

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
        assert_eq!(m.route.events, &[T_RUN, A_READ, T_READ]);
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
