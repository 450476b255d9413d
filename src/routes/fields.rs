//! The inventory: every top-level field the agent server reads from a request body, route by
//! route, and what each one is to authorization.
//!
//! Taken from `langgraph-api` 0.16.7: its `openapi.json` request schemas, the fields its handlers
//! read although the schemas do not list them (`checkpoint_id`, `on_completion`,
//! `langsmith_tracer`), and the fields the official SDK sends (`strict_resume`). The schemas accept
//! unknown fields everywhere, and a cron stores its whole body as the payload of every run it
//! fires, so a field graphguard does not know is refused (422), never forwarded: it could change
//! what the server touches. `docs/inventory.md` gives each field's effect on the server, with the
//! server code it was read from.
//!
//! The decision core enforces the [`Kind`] of every field present before a route's own rules run
//! (see `decide::Cx::check_fields`): ids must be canonical, assistants resolve as the server
//! resolves them, identity keys are removed from configuration objects, webhook URLs are checked.

/// What a field is to authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Does not change which resource the server reads or writes.
    Plain,
    /// The resource's metadata: stamped by handlers, or a search's containment filter.
    Metadata,
    /// The id of the resource the route creates or acts on: a canonical UUID (422 otherwise).
    Id(Of),
    /// A list of such ids, each canonical.
    Ids(Of),
    /// An assistant the request uses: a canonical UUID, or a graph name meaning the graph's
    /// system assistant (`uuid5(6ba7b821-..., name)`), authorized as that assistant.
    Assistant,
    /// A run configuration: identity keys are removed from its `configurable`.
    Config,
    /// A run context: identity keys are removed from it.
    Context,
    /// A checkpoint selector, merged into the run's `configurable`: identity keys are removed.
    Checkpoint,
    /// A URL the server calls (checked against `settings.webhooks`).
    Webhook,
    /// Decided by the route's own rule (create on an existing resource, the store namespace,
    /// the thread a cancel or cron search names, a command's method and parameters).
    Route,
}

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// A thread.
    Thread,
    /// A run.
    Run,
    /// An assistant.
    Assistant,
    /// A cron.
    Cron,
}

impl Of {
    /// The word in the server's error messages (`Invalid thread ID: ...`).
    pub fn word(self) -> &'static str {
        match self {
            Of::Thread => "thread",
            Of::Run => "run",
            Of::Assistant => "assistant",
            Of::Cron => "cron",
        }
    }
}

/// One field of a body.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: &'static str,
    /// What it is.
    pub kind: Kind,
}

/// The fields of one kind of body.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    /// The server's schema name (for messages and docs).
    pub name: &'static str,
    /// Every field the server reads.
    pub fields: &'static [Field],
}

impl Shape {
    /// A field's kind, or `None` for a field the server's schema does not have.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.field(name).map(|f| f.kind)
    }

    /// A field by name. On every body of every request: the length and first byte rule most
    /// fields out before a full comparison.
    pub fn field(&self, name: &str) -> Option<&Field> {
        let first = name.as_bytes().first();
        self.fields.iter().find(|f| {
            f.name.len() == name.len() && f.name.as_bytes().first() == first && f.name == name
        })
    }
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

use Kind::*;

/// The fields every run creation reads (stateful, stateless, batch items, both variants).
const RUN: &[Field] = &[
    f("assistant_id", Assistant),
    f("input", Plain),
    f("command", Plain),
    f("metadata", Metadata),
    f("config", Config),
    f("context", Context),
    f("checkpoint", Checkpoint),
    f("checkpoint_id", Plain),
    f("webhook", Webhook),
    f("if_not_exists", Route),
    f("multitask_strategy", Plain),
    f("on_completion", Plain),
    f("on_disconnect", Plain),
    f("interrupt_before", Plain),
    f("interrupt_after", Plain),
    f("stream_mode", Plain),
    f("stream_subgraphs", Plain),
    f("stream_resumable", Plain),
    f("feedback_keys", Plain),
    f("after_seconds", Plain),
    f("checkpoint_during", Plain),
    f("durability", Plain),
    f("langsmith_tracer", Plain),
    f("strict_resume", Plain),
];

/// `POST /threads/{id}/runs[/wait|/stream]`, `/runs[/wait|/stream]`, `/runs/batch` items.
pub static RUN_CREATE: Shape = Shape {
    name: "RunCreate",
    fields: RUN,
};

/// The fields of a cron (create and patch); the whole body becomes the payload of every run the
/// cron fires.
const CRON: &[Field] = &[
    f("schedule", Plain),
    f("timezone", Plain),
    f("end_time", Plain),
    f("enabled", Plain),
    f("input", Plain),
    f("metadata", Metadata),
    f("config", Config),
    f("context", Context),
    f("webhook", Webhook),
    f("interrupt_before", Plain),
    f("interrupt_after", Plain),
    f("on_run_completed", Plain),
    f("multitask_strategy", Plain),
    f("stream_mode", Plain),
    f("stream_subgraphs", Plain),
    f("stream_resumable", Plain),
    f("checkpoint_during", Plain),
    f("durability", Plain),
];

/// `POST /runs/crons`, `POST /threads/{id}/runs/crons`.
pub static CRON_CREATE: Shape = Shape {
    name: "CronCreate",
    fields: &[
        f("assistant_id", Assistant),
        f("schedule", Plain),
        f("timezone", Plain),
        f("end_time", Plain),
        f("enabled", Plain),
        f("input", Plain),
        f("metadata", Metadata),
        f("config", Config),
        f("context", Context),
        f("webhook", Webhook),
        f("interrupt_before", Plain),
        f("interrupt_after", Plain),
        f("on_run_completed", Plain),
        f("multitask_strategy", Plain),
        f("stream_mode", Plain),
        f("stream_subgraphs", Plain),
        f("stream_resumable", Plain),
        f("checkpoint_during", Plain),
        f("durability", Plain),
    ],
};

/// `PATCH /runs/crons/{id}` (the assistant cannot change).
pub static CRON_PATCH: Shape = Shape {
    name: "CronPatch",
    fields: CRON,
};

/// `POST /runs/crons/search`.
pub static CRON_SEARCH: Shape = Shape {
    name: "CronSearch",
    fields: &[
        f("assistant_id", Id(Of::Assistant)),
        f("thread_id", Id(Of::Thread)),
        f("enabled", Plain),
        f("metadata", Metadata),
        f("limit", Plain),
        f("offset", Plain),
        f("sort_by", Plain),
        f("sort_order", Plain),
        f("select", Plain),
    ],
};

/// `POST /runs/crons/count`.
pub static CRON_COUNT: Shape = Shape {
    name: "CronCountRequest",
    fields: &[
        f("assistant_id", Id(Of::Assistant)),
        f("thread_id", Id(Of::Thread)),
        f("metadata", Metadata),
    ],
};

/// `POST /threads`.
pub static THREAD_CREATE: Shape = Shape {
    name: "ThreadCreate",
    fields: &[
        f("thread_id", Id(Of::Thread)),
        f("if_exists", Route),
        f("supersteps", Route),
        f("metadata", Metadata),
        f("ttl", Plain),
    ],
};

/// `POST /threads/search`.
pub static THREAD_SEARCH: Shape = Shape {
    name: "ThreadSearchRequest",
    fields: &[
        f("ids", Ids(Of::Thread)),
        f("metadata", Metadata),
        f("values", Plain),
        f("status", Plain),
        f("limit", Plain),
        f("offset", Plain),
        f("sort_by", Plain),
        f("sort_order", Plain),
        f("select", Plain),
        f("extract", Plain),
    ],
};

/// `POST /threads/count`.
pub static THREAD_COUNT: Shape = Shape {
    name: "ThreadCountRequest",
    fields: &[
        f("metadata", Metadata),
        f("values", Plain),
        f("status", Plain),
    ],
};

/// `POST /threads/prune`.
pub static THREAD_PRUNE: Shape = Shape {
    name: "ThreadPruneRequest",
    fields: &[f("thread_ids", Ids(Of::Thread)), f("strategy", Plain)],
};

/// `PATCH /threads/{id}`.
pub static THREAD_PATCH: Shape = Shape {
    name: "ThreadPatch",
    fields: &[f("metadata", Metadata), f("ttl", Plain)],
};

/// `POST /threads/{id}/state`.
pub static THREAD_STATE_UPDATE: Shape = Shape {
    name: "ThreadStateUpdate",
    fields: &[
        f("values", Plain),
        f("as_node", Plain),
        f("checkpoint", Checkpoint),
        f("checkpoint_id", Plain),
    ],
};

/// `POST /threads/{id}/state/checkpoint`.
pub static THREAD_STATE_CHECKPOINT: Shape = Shape {
    name: "ThreadStateCheckpointRequest",
    fields: &[f("checkpoint", Checkpoint), f("subgraphs", Plain)],
};

/// `POST /threads/{id}/history`.
pub static THREAD_HISTORY: Shape = Shape {
    name: "ThreadStateSearch",
    fields: &[
        f("limit", Plain),
        f("before", Checkpoint),
        f("metadata", Plain),
        f("checkpoint", Checkpoint),
        f("select", Plain),
    ],
};

/// `POST /threads/{id}/commands` (protocol v2; parameters are checked per method).
pub static THREAD_COMMAND: Shape = Shape {
    name: "ProtocolCommand",
    fields: &[f("id", Plain), f("method", Route), f("params", Route)],
};

/// `params` of a `run.start` command.
pub static RUN_START_PARAMS: Shape = Shape {
    name: "run.start params",
    fields: &[
        f("assistant_id", Assistant),
        f("input", Plain),
        f("config", Config),
        f("context", Context),
        f("metadata", Metadata),
        f("multitaskStrategy", Plain),
        f("langsmith_tracer", Plain),
        f("webhook", Plain),
    ],
};

/// `params` of an `input.respond` command (the assistant is the thread's own).
pub static INPUT_RESPOND_PARAMS: Shape = Shape {
    name: "input.respond params",
    fields: &[
        f("interrupt_id", Plain),
        f("response", Plain),
        f("responses", Plain),
        f("namespace", Plain),
        f("update", Plain),
        f("goto", Plain),
        f("config", Config),
        f("metadata", Metadata),
    ],
};

/// `POST /runs/cancel`.
pub static RUNS_CANCEL: Shape = Shape {
    name: "RunsCancel",
    fields: &[
        f("thread_id", Id(Of::Thread)),
        f("run_ids", Ids(Of::Run)),
        f("status", Route),
    ],
};

/// `POST /assistants`.
pub static ASSISTANT_CREATE: Shape = Shape {
    name: "AssistantCreate",
    fields: &[
        f("assistant_id", Id(Of::Assistant)),
        f("if_exists", Route),
        f("graph_id", Plain),
        f("config", Config),
        f("context", Context),
        f("metadata", Metadata),
        f("name", Plain),
        f("description", Plain),
    ],
};

/// `PATCH /assistants/{id}`.
pub static ASSISTANT_PATCH: Shape = Shape {
    name: "AssistantPatch",
    fields: &[
        f("graph_id", Plain),
        f("config", Config),
        f("context", Context),
        f("metadata", Metadata),
        f("name", Plain),
        f("description", Plain),
    ],
};

/// `POST /assistants/search`.
pub static ASSISTANT_SEARCH: Shape = Shape {
    name: "AssistantSearchRequest",
    fields: &[
        f("graph_id", Plain),
        f("metadata", Metadata),
        f("name", Plain),
        f("limit", Plain),
        f("offset", Plain),
        f("sort_by", Plain),
        f("sort_order", Plain),
        f("select", Plain),
    ],
};

/// `POST /assistants/count`.
pub static ASSISTANT_COUNT: Shape = Shape {
    name: "AssistantCountRequest",
    fields: &[
        f("graph_id", Plain),
        f("metadata", Metadata),
        f("name", Plain),
    ],
};

/// `POST /assistants/{id}/versions`.
pub static ASSISTANT_VERSIONS: Shape = Shape {
    name: "AssistantVersionsSearchRequest",
    fields: &[f("metadata", Plain), f("limit", Plain), f("offset", Plain)],
};

/// `POST /assistants/{id}/latest`.
pub static ASSISTANT_LATEST: Shape = Shape {
    name: "AssistantVersionChange",
    fields: &[f("version", Plain)],
};

/// `PUT /store/items`.
pub static STORE_PUT: Shape = Shape {
    name: "StorePutRequest",
    fields: &[
        f("namespace", Route),
        f("key", Route),
        f("value", Plain),
        f("index", Plain),
        f("ttl", Plain),
    ],
};

/// `DELETE /store/items`.
pub static STORE_DELETE: Shape = Shape {
    name: "StoreDeleteRequest",
    fields: &[f("namespace", Route), f("key", Route)],
};

/// `POST /store/items/search`.
pub static STORE_SEARCH: Shape = Shape {
    name: "StoreSearchRequest",
    fields: &[
        f("namespace_prefix", Route),
        f("filter", Route),
        f("limit", Plain),
        f("offset", Plain),
        f("query", Plain),
        f("refresh_ttl", Plain),
    ],
};

/// `POST /store/namespaces`.
pub static STORE_NAMESPACES: Shape = Shape {
    name: "StoreListNamespacesRequest",
    fields: &[
        f("prefix", Route),
        f("suffix", Plain),
        f("max_depth", Plain),
        f("limit", Plain),
        f("offset", Plain),
    ],
};

/// LangGraph's reserved `configurable` keys (`RESERVED_CONFIGURABLE_KEYS`), which the server
/// strips from some bodies but not from checkpoints or protocol commands; graphguard strips them
/// wherever it strips identity keys.
pub const RESERVED_CONFIGURABLE_KEYS: [&str; 13] = [
    "langgraph_auth_user",
    "langgraph_auth_user_id",
    "langgraph_auth_permissions",
    "langgraph_request_id",
    "__langsmith_project__",
    "__langsmith_example_id__",
    "__request_start_time_ms__",
    "__after_seconds__",
    "__otel_traceparent__",
    "__otel_tracestate__",
    "__dd_trace_headers__",
    "__pregel_node_finished",
    "__context_provided__",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shape_lists_a_field_twice() {
        for s in [
            &RUN_CREATE,
            &CRON_CREATE,
            &CRON_PATCH,
            &CRON_SEARCH,
            &CRON_COUNT,
            &THREAD_COUNT,
            &ASSISTANT_COUNT,
            &THREAD_CREATE,
            &THREAD_SEARCH,
            &THREAD_PRUNE,
            &THREAD_PATCH,
            &THREAD_STATE_UPDATE,
            &THREAD_STATE_CHECKPOINT,
            &THREAD_HISTORY,
            &THREAD_COMMAND,
            &RUN_START_PARAMS,
            &INPUT_RESPOND_PARAMS,
            &RUNS_CANCEL,
            &ASSISTANT_CREATE,
            &ASSISTANT_PATCH,
            &ASSISTANT_SEARCH,
            &ASSISTANT_VERSIONS,
            &ASSISTANT_LATEST,
            &STORE_PUT,
            &STORE_DELETE,
            &STORE_SEARCH,
            &STORE_NAMESPACES,
        ] {
            let mut seen = std::collections::HashSet::new();
            for f in s.fields {
                assert!(seen.insert(f.name), "{}: {}", s.name, f.name);
            }
        }
    }

    #[test]
    fn a_cron_patch_is_a_cron_create_without_its_assistant() {
        let create: Vec<_> = CRON_CREATE
            .fields
            .iter()
            .filter(|f| f.name != "assistant_id")
            .collect();
        let patch: Vec<_> = CRON_PATCH.fields.iter().collect();
        assert_eq!(create, patch);
    }
}
