"""The e2e scenarios, as data.

Each ``Scenario`` is a list of steps ``S(actor, op, args, expect, ...)``:

* ``actor``: a demo user (``alice``, ``bob``, ``admin``, ``carol``, ``dave``, ``shared``), or a
  pseudo actor: ``None`` (no Authorization header), ``"badkey"``, ``"nobearer"``, ``"basic"``.
* ``op``: an official SDK call (``"threads.create"`` = ``get_sync_client(...).threads.create``),
  ``"http"`` for a raw request (``args``: method, path, json, headers, params, sse), or the
  pseudo ops ``"let"`` (bind fresh UUIDs to aliases) and ``"sleep"``.
* ``args``: ``@name`` inside any string is replaced by the id bound to alias ``name``
  (``save="name"`` binds the id of a step's response; ``@agent_sys`` is the system assistant of
  graph ``agent``; ``@run`` is a token unique to each execution, used in store namespaces because
  ``/internal/truncate`` does not wipe the store).
* ``expect``: checked against the step's *observation* (ids already rewritten to ``@name``, unknown
  UUIDs to ``@?``): ``status`` (int, list, ``"2xx"``, ``"not2xx"``), ``detail``, ``metadata``
  (exact), ``metadata_has``, ``ids`` (listed ids, as a set), ``total`` (``X-Pagination-Total``),
  ``body``, ``output`` (what the graph returned / saw: ``echo``, ``counter``, ``user``,
  ``permissions``), ``gw_extra`` (gateway only: the forwarded headers the graph saw),
  ``sse_error`` / ``first_event`` / ``events_has`` / ``ctype`` for SSE, ``namespace`` /
  ``value`` / ``items`` / ``namespaces`` / ``first_labels`` for the store,
  ``www_authenticate`` (header present?).
* ``differs="reason"`` + ``gw={...}``: graphguard deliberately answers differently from LangGraph;
  the reference must meet ``expect`` and graphguard ``gw``.

The rows in ``rows`` refer to docs/semantics.md section 10.
"""

from __future__ import annotations

from harness import S, Scenario

HI = {"messages": [{"role": "user", "content": "hi"}]}


def msg(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


WWW = "graphguard sends WWW-Authenticate on 401 (LangGraph drops the header)"
BLOCKED = "graphguard refuses /internal/* and /deploy* (LangGraph serves them unauthenticated)"
EMPTY_NS = "the docs' store handler crashes (500) on an empty/absent namespace; graphguard answers 403"


def unauth(actor, op, args=None, label=""):
    """A request that must be refused with 401 on both sides."""
    return S(
        actor,
        op,
        args,
        {"status": 401, "www_authenticate": False},
        label=label,
        differs=WWW,
        gw={"status": 401, "www_authenticate": True},
    )


def sse_denied(actor, path, label):
    """SSE on a foreign thread: 200 text/event-stream whose first frame is an error event."""
    return S(
        actor,
        "http",
        {"method": "GET", "path": path, "sse": True},
        {
            "status": 200,
            "ctype": "text/event-stream",
            "first_event": "error",
            "sse_error": {"message": "404: Thread not found"},
        },
        label=label,
    )


NOT_FOUND_T = "Thread with ID @t not found"
RUN_404 = "Thread or assistant not found."
NO_PERM = "User lacks the required permissions."

# ==============================================================================================
# H1 owner
# ==============================================================================================

OWNER = [
    Scenario(
        "authn_401",
        "owner",
        "rows 1, 3",
        [
            unauth(None, "http", {"method": "POST", "path": "/threads/search", "json": {}}, "row1 anon POST /threads/search"),
            unauth("badkey", "threads.search", {}, "unknown key"),
            unauth("nobearer", "threads.search", {}, "Bearer without a token"),
            unauth("basic", "threads.search", {}, "Basic scheme"),
            unauth(None, "threads.create", {}, "anon create thread"),
            unauth(None, "http", {"method": "GET", "path": "/no/such/path"}, "row3 anon unknown path"),
            S("alice", "http", {"method": "GET", "path": "/no/such/path"}, {"status": 404, "detail": "Not Found"}, label="row3 alice unknown path"),
            S("alice", "threads.search", {}, {"status": 200, "ids": []}, label="alice with a good key"),
            S(None, "threads.search", {}, {"status": 401}, label="anon again", differs=WWW, gw={"status": 401, "www_authenticate": True}),
        ],
    ),
    Scenario(
        "meta_unauthenticated",
        "owner",
        "row 2",
        [
            S(None, "http", {"method": "GET", "path": "/ok"}, {"status": 200}, label="anon /ok", ignore=("body",)),
            S(None, "http", {"method": "GET", "path": "/info"}, {"status": 200}, label="anon /info", ignore=("body",)),
            S(None, "http", {"method": "GET", "path": "/openapi.json"}, {"status": 200}, label="anon /openapi.json", ignore=("body",)),
        ],
    ),
    Scenario(
        "create_stamps_owner",
        "owner",
        "row 4, §8.1",
        [
            S("alice", "threads.create", {"metadata": {"owner": "bob", "topic": "t"}}, {"status": 200, "metadata": {"owner": "alice", "topic": "t"}}, save="t", label="row4 create with spoofed owner"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200, "metadata": {"owner": "alice", "topic": "t"}}, label="stored metadata"),
            S("alice", "threads.update", {"thread_id": "@t", "metadata": {"owner": "bob", "x": 1}}, {"status": 200, "metadata": {"owner": "alice", "topic": "t", "x": 1}}, label="patch re-stamps owner"),
            S("bob", "threads.create", {"metadata": {"topic": "b"}}, {"status": 200, "metadata": {"owner": "bob", "topic": "b"}}, save="tb", label="bob's own"),
        ],
    ),
    Scenario(
        "foreign_thread",
        "owner",
        "rows 5-9, 12, 16",
        [
            S("alice", "threads.create", {"metadata": {"topic": "t"}}, {"status": 200}, save="t"),
            S("bob", "threads.get", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}, label="row5 bob GET"),
            S("bob", "threads.update", {"thread_id": "@t", "metadata": {"x": 1}}, {"status": 404, "detail": "Not Found"}, label="row6 bob PATCH"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200, "metadata": {"owner": "alice", "topic": "t"}}, label="row6 unchanged"),
            S("bob", "threads.delete", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}, label="row7 bob DELETE"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200}, label="row7 still there"),
            S("bob", "threads.copy", {"thread_id": "@t"}, {"status": 409, "detail": "Conflict"}, label="row8 bob copy"),
            S("alice", "threads.search", {}, {"status": 200, "ids": ["@t"]}, label="row8 no new thread"),
            S("bob", "threads.search", {}, {"status": 200, "ids": []}, label="row8 none for bob"),
            S("bob", "threads.create", {"thread_id": "@t", "if_exists": "do_nothing"}, {"status": 409, "detail": "Thread with ID @t already exists"}, label="row9 bob create same id"),
            S("alice", "threads.create", {"thread_id": "@t", "if_exists": "do_nothing"}, {"status": 200, "id": "@t", "metadata": {"owner": "alice", "topic": "t"}}, label="row9 alice do_nothing"),
            S("alice", "threads.create", {"thread_id": "@t"}, {"status": 409, "detail": "Thread with ID @t already exists"}, label="row9 alice raise"),
            S("bob", "threads.get_state", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}, label="row12 bob state"),
            S("bob", "threads.get_history", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}, label="row12 bob history"),
            S("bob", "threads.update_state", {"thread_id": "@t", "values": {}}, {"status": 404, "detail": NOT_FOUND_T}, label="row12 bob update state"),
            S("bob", "runs.list", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}, label="row16 bob list runs"),
            S("bob", "threads.count", {}, {"status": 200, "body": 0}, label="bob count"),
            S("alice", "threads.count", {}, {"status": 200, "body": 1}, label="alice count"),
            S("alice", "threads.delete", {"thread_id": "@t"}, {"status": 204}, label="alice deletes her own"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}, label="gone"),
        ],
    ),
    Scenario(
        "search_spoof",
        "owner",
        "rows 10, 11",
        [
            S("alice", "threads.create", {"metadata": {"n": 1}}, 200, save="a1"),
            S("alice", "threads.create", {"metadata": {"n": 2}}, 200, save="a2"),
            S("bob", "threads.create", {"metadata": {"n": 1}}, 200, save="b1"),
            S("alice", "threads.search", {"metadata": {"owner": "bob"}}, {"status": 200, "ids": ["@a1", "@a2"], "total": 2}, label="row10 search owner=bob returns alice's own"),
            S("alice", "threads.count", {"metadata": {"owner": "bob"}}, {"status": 200, "body": 2}, label="row11 count owner=bob"),
            S("alice", "threads.search", {"metadata": {"n": 1}}, {"status": 200, "ids": ["@a1"]}, label="client filter ANDed"),
            S("alice", "threads.search", {"limit": 1}, {"status": 200, "count": 1, "total": 2}, label="pagination after filtering"),
            S("bob", "threads.search", {"metadata": {"owner": "alice"}}, {"status": 200, "ids": ["@b1"], "total": 1}, label="bob spoof"),
            S("bob", "threads.count", {}, {"status": 200, "body": 1}),
        ],
    ),
    Scenario(
        "runs_own_and_foreign",
        "owner",
        "rows 13-16, runs wait + SSE stream",
        [
            S("alice", "threads.create", {}, 200, save="t"),
            S("alice", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"echo": "echo: hi", "counter": 1, "user": "alice"}}, label="alice wait on own thread"),
            S(
                "alice",
                "runs.stream",
                {"thread_id": "@t", "assistant_id": "agent", "input": msg("hi2"), "stream_mode": "values"},
                {"status": 200, "events_has": ["metadata", "values"], "output": {"echo": "echo: hi2", "counter": 2, "user": "alice"}},
                label="alice SSE stream on own thread",
            ),
            S("alice", "runs.create", {"thread_id": "@t", "assistant_id": "agent", "input": msg("hi3")}, {"status": 200, "kind": "run", "thread": "@t"}, save="r", label="alice background run"),
            S("alice", "runs.join", {"thread_id": "@t", "run_id": "@r"}, {"status": 200, "output": {"echo": "echo: hi3", "counter": 3}}, label="alice join"),
            S("bob", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}, label="row13 bob wait"),
            S("bob", "runs.create", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}, label="row13 bob create"),
            S("bob", "runs.stream", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}, label="row13 bob SSE stream"),
            S("alice", "runs.list", {"thread_id": "@t"}, {"status": 200, "count": 3}, label="row13 no run created by bob"),
            S("bob", "runs.get", {"thread_id": "@t", "run_id": "@r"}, {"status": 404, "detail": NOT_FOUND_T}, label="row14 bob GET run"),
            S("bob", "runs.join", {"thread_id": "@t", "run_id": "@r"}, {"status": 404, "detail": "Thread not found"}, label="row14 bob join"),
            S("bob", "runs.delete", {"thread_id": "@t", "run_id": "@r"}, {"status": 404, "detail": "Not Found"}, label="row14 bob DELETE run"),
            S("bob", "runs.cancel", {"thread_id": "@t", "run_id": "@r"}, {"status": 404, "detail": "No runs found to cancel."}, label="row14 bob cancel"),
            sse_denied("bob", "/threads/@t/runs/@r/stream", "row15 bob run stream"),
            sse_denied("bob", "/threads/@t/stream", "row15 bob thread stream"),
            S("alice", "runs.get", {"thread_id": "@t", "run_id": "@r"}, {"status": 200, "kind": "run", "metadata_has": {"owner": "alice"}}, label="alice GET run"),
            S("alice", "threads.get_state", {"thread_id": "@t"}, {"status": 200, "kind": "state"}, save={"ck": "checkpoint.checkpoint_id"}, label="alice state"),
            S("alice", "threads.get_history", {"thread_id": "@t"}, {"status": 200}, label="alice history"),
            S("alice", "http", {"method": "GET", "path": "/threads/@t/state/@ck"}, {"status": 200, "kind": "state"}, label="alice state at checkpoint"),
            S("bob", "http", {"method": "GET", "path": "/threads/@t/state/@ck"}, {"status": 404, "detail": NOT_FOUND_T}, label="bob state at checkpoint"),
            S("bob", "http", {"method": "POST", "path": "/threads/@t/state/checkpoint", "json": {"checkpoint": {"checkpoint_id": "@ck"}}}, {"status": 404, "detail": NOT_FOUND_T}, label="bob POST state/checkpoint"),
            S("bob", "threads.update_state", {"thread_id": "@t", "values": {"counter": 10}}, {"status": 404, "detail": NOT_FOUND_T}, label="bob update state"),
            S("alice", "threads.update_state", {"thread_id": "@t", "values": {"counter": 10}}, {"status": 200}, label="alice update state", ignore=("body",)),
            S("alice", "http", {"method": "GET", "path": "/threads/@t/runs", "params": {"limit": 1}}, {"status": 200, "count": 1}, label="runs list with query string"),
            S("alice", "threads.copy", {"thread_id": "@t"}, {"status": 200, "metadata_has": {"owner": "alice"}}, label="alice copies her thread"),
            S("alice", "runs.delete", {"thread_id": "@t", "run_id": "@r"}, {"status": 204}, label="alice deletes her run"),
            S("alice", "runs.list", {"thread_id": "@t"}, {"status": 200, "count": 2}),
        ],
    ),
    Scenario(
        "implicit_thread_create",
        "owner",
        "row 17",
        [
            S(None, "let", {"tnew": "uuid", "tmiss": "uuid"}, {}),
            S(
                "alice",
                "runs.wait",
                {"thread_id": "@tnew", "assistant_id": "agent", "input": HI, "if_not_exists": "create", "metadata": {"owner": "bob", "m": 1}},
                {"status": 200, "output": {"echo": "echo: hi", "user": "alice"}},
                label="row17 run creates the thread",
            ),
            S("alice", "threads.get", {"thread_id": "@tnew"}, {"status": 200, "metadata_has": {"owner": "alice", "m": 1, "graph_id": "agent", "assistant_id": "@agent_sys"}}, label="row17 stamped"),
            S("bob", "threads.get", {"thread_id": "@tnew"}, {"status": 404, "detail": "Thread with ID @tnew not found"}, label="bob cannot see it"),
            S("alice", "runs.wait", {"thread_id": "@tmiss", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}, label="missing thread, reject"),
        ],
    ),
    Scenario(
        "run_metadata",
        "owner",
        "row 18",
        [
            S("alice", "threads.create", {"metadata": {"topic": "t"}}, 200, save="t"),
            S(
                "alice",
                "runs.create",
                {"thread_id": "@t", "assistant_id": "agent", "input": HI, "metadata": {"rk": 2, "owner": "bob"}},
                {"status": 200, "metadata_has": {"owner": "alice", "topic": "t", "rk": 2, "assistant_id": "@agent_sys", "created_by": "system"}},
                save="r",
                label="row18 run metadata",
            ),
            S("alice", "runs.join", {"thread_id": "@t", "run_id": "@r"}, {"status": 200, "output": {"counter": 1}}),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200, "metadata_has": {"owner": "alice", "topic": "t", "graph_id": "agent", "assistant_id": "@agent_sys"}}, label="thread gains graph_id"),
        ],
    ),
    Scenario(
        "stateless_runs",
        "owner",
        "row 19",
        [
            S("alice", "runs.wait", {"thread_id": None, "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"echo": "echo: hi", "counter": 1, "user": "alice"}}, label="row19 stateless wait"),
            S(
                "alice",
                "runs.create_batch",
                {"payloads": [{"assistant_id": "agent", "input": msg("b1")}, {"assistant_id": "agent", "input": msg("b2")}]},
                {"status": 200, "count": 2},
                label="row19 batch",
            ),
            S(None, "sleep", {"seconds": 1.0}, {}),
        ],
    ),
    Scenario(
        "system_assistant",
        "owner",
        "row 20",
        [
            S("alice", "assistants.search", {}, {"status": 200, "ids": []}, label="row20 search hides system assistant"),
            S("alice", "assistants.count", {}, {"status": 200, "body": 0}),
            S("alice", "assistants.get", {"assistant_id": "@agent_sys"}, {"status": 404, "detail": "Not Found"}, label="row20 GET system assistant"),
            S("alice", "assistants.get", {"assistant_id": "agent"}, {"status": 422, "detail": "Invalid assistant ID: must be a UUID"}, label="GET by graph name is not resolved (validation first)"),
            S("alice", "threads.create", {}, 200, save="t"),
            S("alice", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"echo": "echo: hi"}}, label="row20 run with system assistant"),
            S("alice", "runs.wait", {"thread_id": "@t", "assistant_id": "@agent_sys", "input": HI}, {"status": 200, "output": {"counter": 2}}, label="run with system assistant id"),
        ],
    ),
    Scenario(
        "foreign_assistant",
        "owner",
        "row 21, §5.4",
        [
            S("alice", "assistants.create", {"graph_id": "agent", "metadata": {"owner": "bob", "k": 1}, "name": "a-alice"}, {"status": 200, "metadata": {"owner": "alice", "k": 1}}, save="A", label="alice creates A"),
            S("alice", "assistants.get", {"assistant_id": "@A"}, {"status": 200, "id": "@A"}),
            S("bob", "threads.create", {}, 200, save="tb"),
            S("bob", "runs.wait", {"thread_id": "@tb", "assistant_id": "@A", "input": HI}, {"status": 404, "detail": RUN_404}, label="row21 bob runs A"),
            S("alice", "threads.create", {}, 200, save="ta"),
            S("alice", "runs.wait", {"thread_id": "@ta", "assistant_id": "@A", "input": HI}, {"status": 200, "output": {"user": "alice"}}, label="alice runs A"),
            S("bob", "assistants.get", {"assistant_id": "@A"}, {"status": 404, "detail": "Not Found"}, label="bob GET A"),
            S("bob", "assistants.get_graph", {"assistant_id": "@A"}, {"status": 404, "detail": "Not Found"}, label="bob graph of A"),
            S("bob", "assistants.get_schemas", {"assistant_id": "@A"}, {"status": 404, "detail": "Not Found"}, label="bob schemas of A"),
            S("bob", "assistants.search", {}, {"status": 200, "ids": []}),
            S("alice", "assistants.search", {"metadata": {"owner": "bob"}}, {"status": 200, "ids": ["@A"]}, label="assistant search spoof"),
            S("bob", "assistants.update", {"assistant_id": "@A", "metadata": {"x": 1}}, {"status": 404, "detail": "Assistant @A not found"}, label="bob PATCH A"),
            S("bob", "assistants.get_versions", {"assistant_id": "@A"}, {"status": 404, "detail": "Assistant @A not found"}, label="bob versions of A"),
            S("bob", "assistants.delete", {"assistant_id": "@A"}, {"status": 404, "detail": "Assistant with ID @A not found"}, label="bob DELETE A"),
            S("bob", "assistants.create", {"graph_id": "agent", "assistant_id": "@A", "if_exists": "do_nothing"}, {"status": 409, "detail": "Assistant @A already exists"}, label="bob create with A's id"),
            S("alice", "assistants.update", {"assistant_id": "@A", "metadata": {"owner": "bob", "y": 2}}, {"status": 200, "metadata": {"owner": "alice", "k": 1, "y": 2}}, label="alice PATCH re-stamps"),
            S("alice", "assistants.get_versions", {"assistant_id": "@A"}, {"status": 200, "count": 2}, label="alice versions"),
            S("bob", "runs.wait", {"thread_id": None, "assistant_id": "@A", "input": HI}, {"status": 404, "detail": RUN_404}, label="bob stateless run with A"),
            S(
                "bob",
                "runs.create_batch",
                {"payloads": [{"assistant_id": "agent", "input": HI}, {"assistant_id": "@A", "input": HI}]},
                {"status": 404, "detail": RUN_404},
                label="bob batch with one foreign assistant",
            ),
            S("bob", "crons.create", {"assistant_id": "@A", "schedule": "0 0 1 1 *"}, {"status": 404, "detail": "Assistant '@A' not found"}, label="bob cron with A"),
            S("bob", "http", {"method": "POST", "path": "/assistants/@A/latest", "json": {"version": 1}}, {"status": 404, "detail": "Assistant @A not found"}, label="bob set latest version of A"),
            S("alice", "http", {"method": "POST", "path": "/assistants/@A/latest", "json": {"version": 1}}, {"status": 200, "id": "@A"}, label="alice set latest version"),
            S("alice", "assistants.get_schemas", {"assistant_id": "@A"}, {"status": 200}, label="alice schemas", ignore=("body",)),
            S("alice", "assistants.delete", {"assistant_id": "@A"}, {"status": 204}, label="alice deletes A"),
            S("alice", "assistants.search", {}, {"status": 200, "ids": []}),
        ],
    ),
    Scenario(
        "prune",
        "owner",
        "row 35",
        [
            S("alice", "threads.create", {}, 200, save="t"),
            S("bob", "threads.prune", {"thread_ids": ["@t"]}, {"status": 404, "detail": "At least one thread not found or not authorized"}, label="row35 bob prunes alice's"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200}),
            S("alice", "threads.prune", {"thread_ids": ["@t"]}, {"status": 200, "body": {"pruned_count": 1}}, label="row35 alice prunes her own"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}),
        ],
    ),
    Scenario(
        "crons_foreign",
        "owner",
        "row 36",
        [
            S("alice", "threads.create", {}, 200, save="t"),
            S("alice", "crons.create_for_thread", {"thread_id": "@t", "assistant_id": "agent", "schedule": "0 0 1 1 *", "input": HI}, {"status": 200, "metadata_has": {"owner": "alice"}}, save="c", label="alice thread cron"),
            S("bob", "http", {"method": "GET", "path": "/runs/crons/@c"}, {"status": 404, "detail": "Not Found"}, label="row36 bob GET cron"),
            S("bob", "crons.update", {"cron_id": "@c", "schedule": "0 1 * * *"}, {"status": 404, "detail": "Cron '@c' not found"}, label="row36 bob PATCH cron"),
            S("bob", "crons.delete", {"cron_id": "@c"}, {"status": 404, "detail": "Not Found"}, label="row36 bob DELETE cron"),
            S(
                "bob",
                "crons.create_for_thread",
                {"thread_id": "@t", "assistant_id": "agent", "schedule": "0 0 1 1 *"},
                {"status": 404, "detail": "Thread with ID '@t' not found. Please verify the ID is correct and the thread hasn't been deleted or expired."},
                label="row36 bob cron on alice's thread",
            ),
            S("alice", "http", {"method": "GET", "path": "/runs/crons/@c"}, {"status": 200, "id": "@c"}, label="alice GET cron"),
            S("bob", "crons.search", {}, {"status": 200, "ids": []}),
            S("alice", "crons.update", {"cron_id": "@c", "schedule": "0 0 2 1 *", "metadata": {"owner": "bob", "z": 1}}, {"status": 200, "metadata_has": {"owner": "alice", "z": 1}}, label="alice PATCH re-stamps owner"),
            S("alice", "crons.delete", {"cron_id": "@c"}, {"status": 204}),
            S("alice", "crons.search", {}, {"status": 200, "ids": []}),
        ],
    ),
    Scenario(
        "cron_search",
        "owner",
        "row 37",
        [
            S("alice", "threads.create", {}, 200, save="ta"),
            S("bob", "threads.create", {}, 200, save="tb"),
            S("alice", "crons.create_for_thread", {"thread_id": "@ta", "assistant_id": "agent", "schedule": "0 0 1 1 *"}, 200, save="ca1"),
            S("alice", "crons.create", {"assistant_id": "agent", "schedule": "0 0 1 1 *"}, 200, save="ca2"),
            S("bob", "crons.create_for_thread", {"thread_id": "@tb", "assistant_id": "agent", "schedule": "0 0 1 1 *"}, 200, save="cb1"),
            S("bob", "crons.create", {"assistant_id": "agent", "schedule": "0 0 1 1 *"}, 200, save="cb2"),
            S("alice", "crons.search", {}, {"status": 200, "ids": ["@ca1", "@ca2"], "total": 2}, label="row37 alice's crons only"),
            S("bob", "crons.search", {}, {"status": 200, "ids": ["@cb1", "@cb2"], "total": 2}),
            S("alice", "crons.search", {"metadata": {"owner": "bob"}}, {"status": 200, "ids": ["@ca1", "@ca2"]}, label="cron search spoof"),
            S("alice", "crons.count", {}, {"status": 200, "body": 2}),
            S("alice", "crons.search", {"limit": 1}, {"status": 200, "count": 1, "total": 2, "x-pagination-next": "1"}, label="cron pagination after filtering"),
        ],
    ),
    Scenario(
        "store_no_isolation",
        "owner",
        "row 27, §6",
        [
            S("bob", "store.put_item", {"namespace": ["bob", "n@run"], "key": "k1", "value": {"v": 1}}, {"status": 204}, label="bob put"),
            S("alice", "store.get_item", {"namespace": ["bob", "n@run"], "key": "k1"}, {"status": 200, "namespace": ["bob", "n@run"], "value": {"v": 1}}, label="row27 alice reads bob's item"),
            S("alice", "store.search_items", {"namespace_prefix": ["bob", "n@run"]}, {"status": 200, "items": []}, label="row27 owner filter on values"),
            S("alice", "store.put_item", {"namespace": ["alice", "n@run"], "key": "k2", "value": {"v": 2, "owner": "alice"}}, 204),
            S("alice", "store.put_item", {"namespace": ["alice", "n@run"], "key": "k3", "value": {"v": 3}}, 204),
            S(
                "alice",
                "store.search_items",
                {"namespace_prefix": ["alice", "n@run"]},
                {"status": 200, "items": [{"namespace": ["alice", "n@run"], "key": "k2", "value": {"v": 2, "owner": "alice"}}]},
                label="only items whose value has owner=alice",
            ),
            S(
                "alice",
                "store.search_items",
                {"namespace_prefix": ["alice", "n@run"], "filter": {"v": 2}},
                {"status": 200, "items": []},
                label="client filter + handler filter: LangGraph's {$and: [...]} matches nothing (§4.5)",
                differs="graphguard writes the handler's equalities over the client's store filter instead of an $and the in-memory store cannot match (a quirk not copied, spec 8.12)",
                gw={"status": 200, "items": [{"namespace": ["alice", "n@run"], "key": "k2", "value": {"v": 2, "owner": "alice"}}]},
            ),
            S("alice", "store.list_namespaces", {"prefix": ["bob"]}, {"status": 200, "namespaces": [["bob", "n@run"]]}, label="alice lists bob's namespaces"),
            S("alice", "store.delete_item", {"namespace": ["bob", "n@run"], "key": "k1"}, {"status": 204}, label="alice deletes bob's item"),
            S("bob", "store.get_item", {"namespace": ["bob", "n@run"], "key": "k1"}, {"status": 200, "body": None}, label="gone"),
        ],
    ),
    Scenario(
        "graph_sees_identity",
        "owner",
        "§2.5, gateway identity headers",
        [
            S("alice", "threads.create", {}, 200, save="t"),
            S(
                "alice",
                "runs.wait",
                {
                    "thread_id": "@t",
                    "assistant_id": "agent",
                    "input": HI,
                    "headers": {
                        "x-graphguard-user-id": "bob",
                        "x-graphguard-user-display-name": "Bob",
                        "x-graphguard-user-permissions": '["assistants:create"]',
                        "x-graphguard-user-roles": '["admin"]',
                    },
                },
                {
                    "status": 200,
                    "output": {"user": "alice", "permissions": []},
                    "gw_extra": {"header_user": "alice", "display_name": "Alice", "roles": []},
                },
                label="client-sent x-graphguard-* headers are replaced",
            ),
            S(
                "alice",
                "runs.stream",
                {"thread_id": "@t", "assistant_id": "agent", "input": HI, "stream_mode": "values", "headers": {"X-GraphGuard-User-Id": "bob"}},
                {"status": 200, "output": {"user": "alice"}, "gw_extra": {"header_user": "alice"}},
                label="spoof via SSE run, mixed-case header",
            ),
            S("admin", "threads.create", {}, 200, save="ta"),
            S(
                "admin",
                "runs.wait",
                {"thread_id": "@ta", "assistant_id": "agent", "input": HI},
                {"status": 200, "output": {"user": "admin", "permissions": ["assistants:create"]}, "gw_extra": {"header_user": "admin", "roles": ["admin"]}},
                label="permissions and roles forwarded",
            ),
            S("alice", "runs.wait", {"thread_id": None, "assistant_id": "agent", "input": HI, "headers": {"x-graphguard-user-id": "bob"}}, {"status": 200, "output": {"user": "alice"}, "gw_extra": {"header_user": "alice"}}, label="stateless run"),
        ],
    ),
    Scenario(
        "protocol_edges",
        "owner",
        "rows 3, 40 analogues; §1.2; §5.1 v2 streaming; §5.2 bulk cancel",
        [
            S("alice", "threads.create", {}, 200, save="t"),
            S("alice", "runs.create", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, 200, save="r"),
            S("alice", "runs.join", {"thread_id": "@t", "run_id": "@r"}, 200),
            S("alice", "http", {"method": "GET", "path": "/threads/not-a-uuid"}, {"status": 422, "detail": "Invalid thread ID: must be a UUID"}, label="validation before authorization"),
            S("alice", "http", {"method": "PUT", "path": "/threads"}, {"status": 405, "detail": "Method Not Allowed"}, label="wrong method on a known path"),
            S("alice", "http", {"method": "DELETE", "path": "/threads/search"}, {"status": 422, "detail": "Invalid thread ID: must be a UUID"}, label="DELETE /threads/search is DELETE /threads/{id}"),
            S(None, "http", {"method": "PUT", "path": "/threads"}, {"status": 401}, label="anon wrong method", differs=WWW, gw={"status": 401, "www_authenticate": True}),
            S("alice", "http", {"method": "POST", "path": "/threads", "content": b"{", "headers": {"content-type": "application/json"}}, {"status": 422, "detail": "Invalid JSON in request body"}, label="malformed JSON"),
            S("alice", "http", {"method": "POST", "path": "/threads", "json": {"metadata": "x"}}, {"status": 422}, label="schema violation", ignore=("detail",)),
            S(None, "http", {"method": "POST", "path": "/threads", "json": {}, "headers": {"x-auth-scheme": "langsmith"}}, {"status": 401}, label="studio header does not bypass authentication", differs=WWW, gw={"status": 401, "www_authenticate": True}),
            S("bob", "http", {"method": "GET", "path": "/threads/@t/history"}, {"status": 404, "detail": NOT_FOUND_T}, label="bob GET history"),
            S("alice", "http", {"method": "GET", "path": "/threads/@t/history"}, {"status": 200, "count": 1}, label="alice GET history"),
            S("bob", "http", {"method": "POST", "path": "/runs/cancel", "json": {"thread_id": "@t", "run_ids": ["@r"]}}, {"status": 404, "detail": "No runs found to cancel."}, label="bob bulk cancel"),
            S("alice", "runs.cancel", {"thread_id": "@t", "run_id": "@r"}, {"status": 404, "detail_contains": "No matching runs to cancel."}, label="alice cancels her finished run"),
            S("bob", "http", {"method": "POST", "path": "/threads/@t/stream/events", "json": {"channels": ["values"]}, "sse": True, "sse_timeout": 5}, {"status": 200, "ctype": "text/event-stream", "events": []}, label="bob v2 event stream: 200, empty stream", differs="graphguard reports the refusal as an SSE error event instead of an empty stream", gw={"status": 200, "ctype": "text/event-stream", "sse_error": {"message": "404: Thread not found"}}),
            S(
                "bob",
                "http",
                {"method": "POST", "path": "/threads/@t/commands", "json": {"id": 1, "method": "run.start", "params": {"assistant_id": "agent", "input": HI}}},
                {"status": 200, "body": {"type": "error", "id": 1, "error": "unknown_error", "message": "404: Thread or assistant not found."}},
                label="bob v2 run.start command: 200 + JSON error",
                differs="graphguard refuses the command before it reaches the server, with the run-creation 404",
                gw={"status": 404, "detail": "Thread or assistant not found."},
            ),
            S("alice", "runs.list", {"thread_id": "@t"}, {"status": 200, "count": 1}, label="no run created by bob"),
        ],
    ),
    Scenario(
        "internal_routes_blocked",
        "owner",
        "§1.1, §5.7",
        [
            S("alice", "threads.create", {}, 200, save="t"),
            S(None, "http", {"method": "GET", "path": "/internal/debug/thread/@t"}, {"status": 200}, label="anon raw thread dump", differs=BLOCKED, gw={"status": "not2xx"}),
            S("bob", "http", {"method": "GET", "path": "/internal/debug/thread/@t"}, {"status": 200}, label="bob raw thread dump", differs=BLOCKED, gw={"status": "not2xx"}),
            S(None, "http", {"method": "GET", "path": "/deploy"}, {"status": 200}, label="anon GET /deploy", differs=BLOCKED, gw={"status": "not2xx"}),
            S(None, "http", {"method": "POST", "path": "/internal/truncate"}, {"status": 200}, label="anon truncate", differs=BLOCKED, gw={"status": "not2xx"}),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 404}, label="data after anon truncate", differs="truncate went through on LangGraph; graphguard blocked it so data survives", gw={"status": 200, "id": "@t"}),
            S("alice", "threads.create", {}, 200, save="t2"),
            S("alice", "http", {"method": "POST", "path": "/internal/truncate"}, {"status": 200}, label="alice truncate", differs=BLOCKED, gw={"status": "not2xx"}),
            S("alice", "threads.get", {"thread_id": "@t2"}, {"status": 404}, label="data after alice truncate", differs="truncate went through on LangGraph; graphguard blocked it so data survives", gw={"status": 200, "id": "@t2"}),
        ],
    ),
]

# Gateway-only: path tricks around the blocked routes. The real server has no notion of them
# being special, so there is nothing to compare; graphguard must refuse each and keep the data.
GATEWAY_ONLY = [
    Scenario(
        "blocked_route_path_tricks",
        "owner",
        "§9 block /internal/* and /deploy*",
        [S("alice", "threads.create", {}, 200, save="t")]
        + [
            S(actor, "http", {"method": m, "path": p, "raw": True}, {"status": "not2xx"}, label=f"{actor or 'anon'} {m} {p}")
            for actor in (None, "alice")
            for m, p in [
                ("POST", "/internal/truncate"),
                ("POST", "/internal/truncate/"),
                ("POST", "//internal/truncate"),
                ("POST", "/internal//truncate"),
                ("POST", "/./internal/truncate"),
                ("POST", "/threads/../internal/truncate"),
                ("POST", "/%69nternal/truncate"),
                ("POST", "/internal%2Ftruncate"),
                ("POST", "/INTERNAL/truncate"),
                ("POST", "/internal/truncate?x=1"),
                ("GET", "/internal/debug/thread/@t"),
                ("GET", "/deploy"),
                ("GET", "/deploy/"),
                ("GET", "/deploy/abc/stream"),
            ]
        ]
        + [S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200, "id": "@t"}, label="data survived")],
    ),
]

# Gateway-only: spellings of a foreign thread's URL that must not get around the policy.
_PROBES = [
    ("GET", "/threads/@t/"),
    ("GET", "//threads/@t"),
    ("GET", "/threads//@t"),
    ("GET", "/threads/@t_upper"),
    ("GET", "/threads/@t_hex"),
    ("GET", "/threads/@t_upper/state"),
    ("GET", "/threads/@t_hex/history"),
    ("GET", "/threads/@t/state/"),
    ("GET", "/threads/@t%2Fstate"),
    ("GET", "/threads/./@t"),
    ("GET", "/threads/x/../@t"),
    ("GET", "/threads/%2e%2e/threads/@t"),
    ("GET", "/threads/@t/../@t"),
    ("GET", "/threads/@t#x"),
    ("GET", "http://127.0.0.1/threads/@t"),
    ("HEAD", "/threads/@t"),
    ("GET", "/threads/@t?thread_id=00000000-0000-0000-0000-000000000000"),
    ("PATCH", "/threads/@t_upper"),
    ("DELETE", "/threads/@t_hex"),
    ("POST", "/threads/@t_upper/copy"),
    ("POST", "/threads/@t_upper/history"),
]
GATEWAY_ONLY.append(
    Scenario(
        "foreign_thread_path_spellings",
        "owner",
        "§9 by-ID routes: classification must survive path spellings",
        [
            S("alice", "threads.create", {"metadata": {"secret": "s3"}}, 200, save="t"),
            S(None, "let", {"t_upper": "upper:t", "t_hex": "hex:t"}, {}),
        ]
        + [
            S("bob", "http", {"method": m, "path": p, "raw": True, **({"json": {"metadata": {"x": 1}}} if m in ("PATCH", "POST") else {})}, {"status": "not2xx"}, label=f"bob {m} {p}")
            for m, p in _PROBES
        ]
        + [
            S("bob", "runs.wait", {"thread_id": "@t_upper", "assistant_id": "agent", "input": HI}, {"status": "not2xx"}, label="bob run on upper-cased id"),
            S("bob", "runs.wait", {"thread_id": "@t_hex", "assistant_id": "agent", "input": HI}, {"status": "not2xx"}, label="bob run on dashless id"),
            S("alice", "threads.get", {"thread_id": "@t"}, {"status": 200, "metadata": {"owner": "alice", "secret": "s3"}}, label="alice's thread unchanged"),
            S("alice", "runs.list", {"thread_id": "@t"}, {"status": 200, "count": 0}, label="no run by bob"),
            S("alice", "threads.search", {}, {"status": 200, "ids": ["@t"]}, label="no copy by bob"),
        ],
    )
)

# ==============================================================================================
# H2 resource
# ==============================================================================================

RESOURCE = [
    Scenario(
        "threads_resource_handlers",
        "resource",
        "H2 thread handlers, rows 4-5, 9, 13",
        [
            S("alice", "threads.create", {"metadata": {"owner": "bob", "topic": "t"}}, {"status": 200, "metadata": {"owner": "alice", "topic": "t"}}, save="t"),
            S("bob", "threads.get", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}),
            S("bob", "threads.update", {"thread_id": "@t", "metadata": {"x": 1}}, {"status": 404, "detail": "Not Found"}),
            S("alice", "threads.search", {"metadata": {"owner": "bob"}}, {"status": 200, "ids": ["@t"]}),
            S("alice", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"echo": "echo: hi", "user": "alice"}}),
            S("bob", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}),
            S("alice", "runs.wait", {"thread_id": None, "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"user": "alice"}}, label="stateless run: create_run stamps owner"),
            # threads.create returns no filter in H2, so LangGraph hands alice's thread to bob.
            # graphguard runs the read check on the existing thread (docs/compatibility.md).
            S(
                "bob",
                "threads.create",
                {"thread_id": "@t", "if_exists": "do_nothing"},
                {"status": 200, "id": "@t", "metadata": {"owner": "alice", "topic": "t", "graph_id": "agent", "assistant_id": "@agent_sys"}},
                label="H2 create has no filter: existing id comes back",
                differs="a create with if_exists: do_nothing answers with the existing thread, so graphguard requires the caller to be able to read it (LangGraph checks only the create filter)",
                gw={"status": 409, "detail": "Thread with ID @t already exists"},
            ),
        ],
    ),
    Scenario(
        "assistants_permission",
        "resource",
        "row 22",
        [
            S("alice", "assistants.create", {"graph_id": "agent"}, {"status": 403, "detail": NO_PERM}, label="row22 alice create"),
            S("admin", "assistants.create", {"graph_id": "agent", "metadata": {"k": 1}}, {"status": 200, "metadata": {"k": 1}}, save="A", label="row22 admin create"),
            S("admin", "assistants.get", {"assistant_id": "@A"}, {"status": 403, "detail": NO_PERM}, label="row22 admin GET own"),
            S("admin", "assistants.search", {}, {"status": 403, "detail": NO_PERM}),
            S("alice", "assistants.search", {}, {"status": 403, "detail": NO_PERM}),
            S("admin", "assistants.count", {}, {"status": 403, "detail": NO_PERM}),
            S("admin", "assistants.update", {"assistant_id": "@A", "metadata": {"x": 1}}, {"status": 403, "detail": NO_PERM}),
            S("admin", "assistants.delete", {"assistant_id": "@A"}, {"status": 403, "detail": NO_PERM}),
            S("admin", "assistants.get", {"assistant_id": "@agent_sys"}, {"status": 403, "detail": NO_PERM}, label="system assistant too"),
        ],
    ),
    Scenario(
        "assistant_read_denied_on_run",
        "resource",
        "row 23",
        [
            S("admin", "assistants.create", {"graph_id": "agent"}, 200, save="A"),
            S("admin", "threads.create", {}, 200, save="t"),
            S("admin", "runs.wait", {"thread_id": "@t", "assistant_id": "@A", "input": HI}, {"status": 403, "detail": NO_PERM}, label="row23 assistants.read deny applies to creator"),
            S("admin", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"user": "admin", "permissions": ["assistants:create"]}}, label="system assistant exempt"),
            S("admin", "runs.list", {"thread_id": "@t"}, {"status": 200, "count": 1}),
        ],
    ),
    Scenario(
        "crons_denied",
        "resource",
        "row 24",
        [
            S("alice", "crons.create", {"assistant_id": "agent", "schedule": "0 0 1 1 *"}, {"status": 403, "detail": NO_PERM}, label="row24 create"),
            S("alice", "crons.search", {}, {"status": 403, "detail": NO_PERM}, label="row24 search"),
            S("alice", "crons.count", {}, {"status": 403, "detail": NO_PERM}),
            S("alice", "threads.create", {}, 200, save="t"),
            S("alice", "crons.create_for_thread", {"thread_id": "@t", "assistant_id": "agent", "schedule": "0 0 1 1 *"}, {"status": 403, "detail": NO_PERM}),
        ],
    ),
    Scenario(
        "store_assert_namespace",
        "resource",
        "rows 25, 26",
        [
            S("alice", "store.put_item", {"namespace": ["bob", "n@run"], "key": "k1", "value": {"v": 1}}, {"status": 403, "detail": "Not authorized"}, label="row25 put foreign"),
            S("alice", "store.get_item", {"namespace": ["bob", "n@run"], "key": "k1"}, {"status": 403, "detail": "Not authorized"}, label="row25 get foreign"),
            S("alice", "store.delete_item", {"namespace": ["bob", "n@run"], "key": "k1"}, {"status": 403, "detail": "Not authorized"}),
            S("alice", "store.search_items", {"namespace_prefix": ["bob"]}, {"status": 403, "detail": "Not authorized"}),
            S("alice", "store.list_namespaces", {"prefix": ["bob"]}, {"status": 403, "detail": "Not authorized"}),
            S("alice", "store.put_item", {"namespace": ["alice", "n@run"], "key": "k1", "value": {"v": 1}}, {"status": 204}, label="row25 own put"),
            S("alice", "store.get_item", {"namespace": ["alice", "n@run"], "key": "k1"}, {"status": 200, "namespace": ["alice", "n@run"], "value": {"v": 1}}, label="row25 own get"),
            S("alice", "store.search_items", {"namespace_prefix": ["alice", "n@run"]}, {"status": 200, "items": [{"namespace": ["alice", "n@run"], "key": "k1", "value": {"v": 1}}]}),
            S("alice", "store.list_namespaces", {"prefix": ["alice"]}, {"status": 200, "namespaces": [["alice", "n@run"]], "first_labels": ["alice"]}),
            S("bob", "store.get_item", {"namespace": ["alice", "n@run"], "key": "k1"}, {"status": 403, "detail": "Not authorized"}),
            S("alice", "store.list_namespaces", {}, {"status": 500}, label="row26 list without prefix", differs=EMPTY_NS, gw={"status": 403}),
            S("alice", "store.search_items", {"namespace_prefix": []}, {"status": 500}, label="search with empty prefix", differs=EMPTY_NS, gw={"status": 403}),
        ],
    ),
]

# ==============================================================================================
# H3 participants
# ==============================================================================================

PARTICIPANTS = [
    Scenario(
        "shared_threads",
        "participants",
        "row 29",
        [
            S("carol", "threads.create", {"metadata": {"participants": ["dave"], "topic": "p"}}, {"status": 200, "metadata": {"participants": ["carol", "shared"], "topic": "p"}}, save="T", label="row29 carol creates T"),
            S("shared", "threads.get", {"thread_id": "@T"}, {"status": 200, "id": "@T"}, label="row29 shared reads T"),
            S("dave", "threads.get", {"thread_id": "@T"}, {"status": 404, "detail": "Thread with ID @T not found"}, label="row29 dave reads T"),
            S("shared", "threads.search", {}, {"status": 200, "ids": ["@T"], "total": 1}, label="row29 shared search"),
            S("dave", "threads.search", {}, {"status": 200, "ids": []}),
            S("dave", "threads.search", {"metadata": {"participants": ["carol", "shared"]}}, {"status": 200, "ids": []}, label="dave filters by the participants list"),
            S("carol", "threads.count", {}, {"status": 200, "body": 1}),
            S("dave", "threads.count", {}, {"status": 200, "body": 0}),
            S("shared", "threads.update", {"thread_id": "@T", "metadata": {"x": 1}}, {"status": 200, "metadata": {"participants": ["carol", "shared"], "topic": "p", "x": 1}}),
            S("dave", "threads.update", {"thread_id": "@T", "metadata": {"y": 1}}, {"status": 404, "detail": "Not Found"}),
            S("dave", "threads.delete", {"thread_id": "@T"}, {"status": 404, "detail": "Thread with ID @T not found"}),
            S("carol", "runs.wait", {"thread_id": "@T", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"user": "carol", "counter": 1}}),
            S("shared", "runs.wait", {"thread_id": "@T", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"user": "shared", "counter": 2}}),
            S("dave", "runs.wait", {"thread_id": "@T", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}),
            S("dave", "runs.stream", {"thread_id": "@T", "assistant_id": "agent", "input": HI}, {"status": 404, "detail": RUN_404}),
            S("carol", "runs.list", {"thread_id": "@T"}, {"status": 200, "count": 2}),
            S("dave", "runs.list", {"thread_id": "@T"}, {"status": 404, "detail": "Thread with ID @T not found"}),
            sse_denied("dave", "/threads/@T/stream", "dave thread stream"),
            S("dave", "threads.copy", {"thread_id": "@T"}, {"status": 409, "detail": "Conflict"}),
            S("shared", "threads.copy", {"thread_id": "@T"}, {"status": 200, "metadata_has": {"participants": ["carol", "shared"]}}, label="copy keeps participants"),
            S("dave", "threads.prune", {"thread_ids": ["@T"]}, {"status": 404, "detail": "At least one thread not found or not authorized"}),
        ],
    ),
    Scenario(
        "participants_search_pagination",
        "participants",
        "§4.3/§8.6/§9: $contains filters and pagination headers after filtering",
        [
            S("carol", "threads.create", {"metadata": {"n": 1}}, 200, save="c1"),
            S("dave", "threads.create", {"metadata": {"n": 1}}, 200, save="d1"),
            S("carol", "threads.create", {"metadata": {"n": 2}}, 200, save="c2"),
            S("dave", "threads.create", {"metadata": {"n": 2}}, 200, save="d2"),
            S("carol", "threads.create", {"metadata": {"n": 3}}, 200, save="c3"),
            S("carol", "threads.search", {"limit": 2}, {"status": 200, "ids": ["@c3", "@c2"], "total": 3, "x-pagination-next": "2"}, label="page 1"),
            S("carol", "threads.search", {"limit": 2, "offset": 2}, {"status": 200, "ids": ["@c1"], "total": 3}, label="page 2"),
            S("carol", "threads.search", {"metadata": {"n": 1}}, {"status": 200, "ids": ["@c1"]}, label="client filter ANDed"),
            S("dave", "threads.search", {"limit": 1}, {"status": 200, "ids": ["@d2"], "total": 2, "x-pagination-next": "1"}),
            S("shared", "threads.search", {"limit": 10}, {"status": 200, "ids": ["@c1", "@c2", "@c3", "@d1", "@d2"], "total": 5}, label="shared sees all"),
            S("shared", "threads.count", {}, {"status": 200, "body": 5}),
            S("carol", "threads.count", {"metadata": {"n": 2}}, {"status": 200, "body": 1}),
            S("alice", "threads.search", {}, {"status": 200, "ids": []}, label="a non-participant sees none"),
        ],
    ),
    Scenario(
        "fail_open_resources",
        "participants",
        "row 34 analogue: no assistants/crons/store handler means allowed",
        [
            S("carol", "assistants.create", {"graph_id": "agent", "metadata": {"k": 1}}, {"status": 200, "metadata": {"k": 1}}, save="A"),
            S("dave", "assistants.get", {"assistant_id": "@A"}, {"status": 200, "id": "@A"}),
            S("dave", "assistants.search", {}, {"status": 200, "ids": ["@A", "@agent_sys"]}),
            S("dave", "assistants.update", {"assistant_id": "@A", "metadata": {"z": 1}}, {"status": 200, "metadata": {"k": 1, "z": 1}}),
            S("dave", "store.put_item", {"namespace": ["carol", "n@run"], "key": "k", "value": {"v": 1}}, {"status": 204}),
            S("carol", "store.get_item", {"namespace": ["carol", "n@run"], "key": "k"}, {"status": 200, "value": {"v": 1}}),
            S("dave", "crons.create", {"assistant_id": "agent", "schedule": "0 0 1 1 *"}, {"status": 200}, save="c"),
            S("carol", "http", {"method": "GET", "path": "/runs/crons/@c"}, {"status": 200, "id": "@c"}),
            S("dave", "threads.create", {}, 200, save="td"),
            S("dave", "runs.wait", {"thread_id": "@td", "assistant_id": "@A", "input": HI}, {"status": 200, "output": {"user": "dave"}}, label="run with carol's assistant"),
        ],
    ),
    Scenario(
        "implicit_threads_without_participants",
        "participants",
        "§5.3: create_run only filters in H3, so implicit threads get no participants",
        [
            S(None, "let", {"tnew": "uuid"}, {}),
            S("carol", "runs.wait", {"thread_id": "@tnew", "assistant_id": "agent", "input": HI, "if_not_exists": "create"}, {"status": 200, "error": "body-not-json"}, label="run on a new thread id: 200, then the join's threads.read fails mid-body", differs="graphguard authorizes before forwarding and does not re-check the join, so the run's output arrives whole", gw={"status": 200}),
            S("carol", "threads.get", {"thread_id": "@tnew"}, {"status": 404, "detail": "Thread with ID @tnew not found"}),
            S("carol", "runs.wait", {"thread_id": None, "assistant_id": "agent", "input": HI}, {"status": 200, "error": "body-not-json"}, label="stateless run: same", differs="as above", gw={"status": 200}),
        ],
    ),
]

# ==============================================================================================
# H4 store-rewrite
# ==============================================================================================

STORE_REWRITE = [
    Scenario(
        "store_namespace_rewrite",
        "store_rewrite",
        "row 28",
        [
            S("alice", "store.put_item", {"namespace": ["notes@run"], "key": "k1", "value": {"v": 1}}, {"status": 204}, label="row28 alice put [notes]"),
            S("alice", "store.get_item", {"namespace": ["notes@run"], "key": "k1"}, {"status": 200, "namespace": ["alice", "notes@run"], "value": {"v": 1}}, label="stored under alice"),
            S("alice", "store.get_item", {"namespace": ["alice", "notes@run"], "key": "k1"}, {"status": 200, "namespace": ["alice", "notes@run"]}, label="already prefixed: unchanged"),
            S("bob", "store.get_item", {"namespace": ["alice", "notes@run"], "key": "k1"}, {"status": 200, "body": None}, label="row28 bob reads alice.notes -> null"),
            S("bob", "store.put_item", {"namespace": ["b@run"], "key": "k", "value": {"v": 2}}, {"status": 204}),
            # bob's GET of ["bob","alice","notes"] left an empty namespace behind in the in-memory store
            S("bob", "store.list_namespaces", {}, {"status": 200, "first_labels": ["bob"], "namespaces": [["bob", "alice", "notes@run"], ["bob", "b@run"]]}, label="row28 bob lists only his"),
            S("alice", "store.list_namespaces", {}, {"status": 200, "first_labels": ["alice"], "namespaces": [["alice", "notes@run"]]}),
            S("bob", "store.delete_item", {"namespace": ["alice", "notes@run"], "key": "k1"}, {"status": 204}, label="bob delete is a no-op"),
            S("alice", "store.get_item", {"namespace": ["notes@run"], "key": "k1"}, {"status": 200, "value": {"v": 1}}, label="still there"),
            S("alice", "store.search_items", {"namespace_prefix": ["notes@run"]}, {"status": 200, "items": [{"namespace": ["alice", "notes@run"], "key": "k1", "value": {"v": 1}}]}),
            S("bob", "store.search_items", {"namespace_prefix": ["alice"]}, {"status": 200, "items": []}),
            S("alice", "store.search_items", {"namespace_prefix": ["notes@run"], "filter": {"v": 1}}, {"status": 200, "items": [{"namespace": ["alice", "notes@run"], "key": "k1", "value": {"v": 1}}]}, label="client filter alone"),
            S("alice", "store.put_item", {"namespace": [], "key": "k0@run", "value": {"v": 0}}, {"status": 204}, label="empty namespace becomes [alice]"),
            S("alice", "store.get_item", {"namespace": ["alice"], "key": "k0@run"}, {"status": 200, "namespace": ["alice"], "value": {"v": 0}}),
        ],
    ),
    Scenario(
        "threads_owner_isolation",
        "store_rewrite",
        "H1 part of H4",
        [
            S("alice", "threads.create", {"metadata": {"owner": "bob"}}, {"status": 200, "metadata": {"owner": "alice"}}, save="t"),
            S("bob", "threads.get", {"thread_id": "@t"}, {"status": 404, "detail": NOT_FOUND_T}),
            S("alice", "runs.wait", {"thread_id": "@t", "assistant_id": "agent", "input": HI}, {"status": 200, "output": {"user": "alice"}}),
        ],
    ),
]

ALL = OWNER + RESOURCE + PARTICIPANTS + STORE_REWRITE


def scenarios_for(handler_set: str) -> list[Scenario]:
    return [s for s in ALL if s.handler_set == handler_set]


def gateway_only_for(handler_set: str) -> list[Scenario]:
    return [s for s in GATEWAY_ONLY if s.handler_set == handler_set]
