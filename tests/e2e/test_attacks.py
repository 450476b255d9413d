"""An attacker's differential suite: alice against bob, through graphguard, judged on the server.

One real agent server (``app/langgraph.json``, no auth of its own) and four graphguard processes
in front of it, one per example policy set: ``owner``, ``resource``, ``participants``, ``abac``.

Before a case, bob's resources are created **directly on the agent server** with the metadata
the policy set reads as "bob's" (``VICTIM_TAGS``): a thread with state, a private assistant
whose ``config.configurable`` holds a secret, a pending run (``after_seconds``) and a cron,
every one carrying the secret ``SECRET`` somewhere. alice (``Bearer alice-demo-key``) then sends
one attack **through the gateway**, with plain httpx (the SDK would normalise ids):

* ``ids``: every request field of the inventory (``/tmp/inventory.md``, ``src/fields.rs``)
  that names a thread, assistant, run or cron, in its path or body position, carrying bob's id
  in every spelling Python's ``uuid.UUID`` accepts (``SPELLINGS``), plus the create-on-existing
  forms (``if_exists: do_nothing``, with and without ``supersteps``);
* ``identity``: runs, crons and assistants whose ``config.configurable`` / ``context`` /
  ``checkpoint`` / command params carry graphguard's identity headers and LangGraph's reserved
  ``langgraph_auth_*`` keys;
* ``webhook``: runs and crons whose webhook points at private, loopback and metadata addresses;
* ``delete_threads``: deleting alice's own assistant with ``?delete_threads=true`` spellings
  while one of bob's threads ran with it.

The verdict never rests on a status code (they are only shown in failure messages). It is read
on the agent server directly, without the gateway (``World.snapshot``): bob's thread, state,
history, runs, assistant (and its versions) and cron are byte for byte as before; no other
object on the server (every thread with its runs and history, every assistant, every cron)
mentions bob's secret or any of bob's ids, so no run used bob's assistant and nothing alice
owns references bob's resources; a non-canonical spelling of bob's thread id has no shadow
checkpoint (the checkpointer keys state by the raw string); and bob's secret is in no response
body alice received (SSE streams and ``do_nothing`` creates included).

Each attack also has a positive control (spelling ``alice-own``): the same request naming
alice's OWN resource, canonically spelled, must work (2xx, no error envelope or SSE error
frame), so a gateway that refused everything would fail. A control exists only where the policy
set lets alice do that at all (``CAN``): e.g. the abac roles give alice no ``threads:update``,
and the resource set denies every assistant and cron action. Assistants and crons are no one's
own under ``participants`` and ``abac`` (no handler, or an RBAC grant to every assistant), so
the assistant and cron id attacks run under ``owner`` and ``resource`` only.

Isolation: a case starts from freshly seeded state. The upstream is wiped with
``POST /internal/truncate`` (sent to the upstream directly, never through the gateway) and
re-seeded, except when the previous case provably left it exactly as seeded (the full snapshot
after that case equals the one before it); controls always start from a fresh seed.
"""

from __future__ import annotations

import functools
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import httpx
import pytest
from langgraph_sdk import get_sync_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TOKEN = uuid.uuid4().hex[:12]
SECRET = f"bobsecret{TOKEN}"  # in every one of bob's resources; no hyphen (see World.foreign)
FORGED = f"forged{TOKEN}"  # identity values alice forges
KEPT = f"kept{TOKEN}"  # an ordinary configurable value next to them: must reach the server
HI = {"messages": [{"role": "user", "content": "hi"}]}
AGENT = harness.SYSTEM_AGENT_ID  # the system assistant of graph "agent"
NEVER = "0 0 1 1 *"  # a cron schedule that does not fire while the suite runs
TIMEOUT = httpx.Timeout(20.0, connect=5.0)

POLICIES = ("owner", "resource", "participants", "abac")
#: metadata that makes a resource bob's, and not alice's, under each policy set
VICTIM_TAGS: dict[str, dict[str, Any]] = {
    "owner": {"owner": "bob"},
    "resource": {"owner": "bob"},
    "participants": {"participants": ["bob", "shared"]},
    "abac": {"Contains-PII": "true", "Annotation-Team": "Team-B"},
}
#: what alice puts on her own thread (graph_id: so that supersteps may write it)
ALICE_TAGS: dict[str, dict[str, Any]] = {p: {"graph_id": "agent"} for p in POLICIES}
ALICE_TAGS["abac"]["Annotation-Team"] = "Team-A"  # her role reads Team-A threads only

#: what alice may legitimately do on her own resources under each set (besides reading her
#: threads and running the system assistant on them), i.e. where a positive control exists
CAN: dict[str, set[str]] = {
    "owner": {"thread:write", "cron", "assistant"},
    "resource": {"thread:write"},  # assistants need a permission alice lacks; crons are denied
    "participants": {"thread:write", "cron", "assistant"},
    "abac": set(),  # roles: threads:create, threads:create_run, assistants:read
}


def spell(u: str, how: str) -> str:
    """`u` spelled `how`; Python's uuid.UUID reads every spelling as `u`."""
    h = uuid.UUID(u).hex
    s = {
        "canonical": u,
        "braces": "{" + u + "}",
        "urn-uuid": "urn:uuid:" + u,
        "uuid-prefix": "uuid:" + u,
        "upper": u.upper(),
        "hex32": h,
        "open-braces": "{{{" + h,
        "moved-hyphens": f"{h[:4]}-{h[4:10]}-{h[10:20]}-{h[20:]}",
    }[how]
    assert uuid.UUID(s) == uuid.UUID(u), s
    return s


SPELLINGS = ("canonical", "braces", "urn-uuid", "uuid-prefix", "upper", "hex32", "open-braces", "moved-hyphens")
CONTROL = "alice-own"


def seg(x: str) -> str:
    """An id as a path segment (braces percent-encoded; the server decodes them)."""
    return quote(x, safe=":")


# --------------------------------------------------------------------------------------------
# The stack, the seeded world, and what alice sees
# --------------------------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None


class Alice:
    """alice's raw client on one gateway; keeps every response body she received."""

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, headers={"Authorization": "Bearer alice-demo-key"}, timeout=TIMEOUT, trust_env=False)
        self.seen: list[str] = []

    def send(self, req: Req) -> httpx.Response | None:
        try:
            r = self.http.request(req.method, req.path, json=req.json, params=req.params)
        except httpx.TimeoutException:
            self.seen.append(f"{req.method} {req.path}: timeout")
            return None
        self.seen.append(r.text)
        return r


@dataclass
class Res:
    """One user's resources (ids, canonical)."""

    thread: str
    run: str
    assistant: str
    cron: str


class Mine:
    """alice's own resources, made through the gateway with the official SDK when first needed."""

    def __init__(self, policy: str, sdk: Any):
        self.policy, self.sdk = policy, sdk
        self.thread = sdk.threads.create(metadata=ALICE_TAGS[policy])["thread_id"]

    @functools.cached_property
    def run(self) -> str:
        return self.sdk.runs.create(self.thread, "agent", input=HI, after_seconds=3600)["run_id"]

    @functools.cached_property
    def assistant(self) -> str:
        if "assistant" not in CAN[self.policy]:
            return AGENT  # the only assistant alice may use there: the graph's system assistant
        return self.sdk.assistants.create("agent", config={"configurable": {"mine": KEPT}}, name="alice")["assistant_id"]

    @functools.cached_property
    def cron(self) -> str:
        return self.sdk.crons.create_for_thread(self.thread, "agent", schedule=NEVER, input=HI)["cron_id"]


class World:
    """bob's seeded resources under one policy set, alice's clients, and server snapshots."""

    def __init__(self, stack: "Stack", policy: str):
        self.policy, self.up = policy, stack.up
        self.up.post("/internal/truncate").raise_for_status()  # on the upstream, never the gateway
        tags = VICTIM_TAGS[policy]
        post = self.ok_post
        a = post("/assistants", {"graph_id": "agent", "config": {"configurable": {"secret": SECRET}}, "metadata": {"owner": "bob"}, "name": "bob"})
        t = post("/threads", {
            "metadata": {**tags, "graph_id": "agent", "note": SECRET},
            "supersteps": [{"updates": [{"values": {"messages": [{"role": "user", "content": SECRET}], "counter": 7}, "as_node": "echo"}]}],
        })
        tid, aid = t["thread_id"], a["assistant_id"]
        r = post(f"/threads/{tid}/runs", {"assistant_id": aid, "input": {"messages": [{"role": "user", "content": SECRET}]}, "after_seconds": 3600, "metadata": tags})
        c = post(f"/threads/{tid}/runs/crons", {"assistant_id": aid, "schedule": NEVER, "input": {"messages": [{"role": "user", "content": SECRET}]}, "metadata": tags})
        self.bob = Res(tid, r["run_id"], aid, c["cron_id"])
        self.alice, self.sdk = stack.alice[policy], stack.sdk[policy]
        self.mine = Mine(policy, self.sdk)
        self.last: dict[str, Any] | None = None  # the snapshot a case proved it left unchanged

    def ok_post(self, path: str, body: Any) -> Any:
        r = self.up.post(path, json=body)
        assert r.status_code == 200, f"seeding {path}: {r.status_code} {r.text}"
        return r.json()

    def _get(self, path: str, body: Any = None) -> Any:
        r = self.up.post(path, json=body) if body is not None else self.up.get(path)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def snapshot(self, histories: bool = False) -> dict[str, Any]:
        """Everything on the agent server, read directly: bob's resources, and all the rest
        (every other thread with its runs, and its checkpoint history if `histories`)."""
        b, g = self.bob, self._get
        crons = g("/runs/crons/search", {"limit": 1000})[1]
        threads = g("/threads/search", {"limit": 1000})[1]
        assistants = g("/assistants/search", {"limit": 1000})[1]
        bob = {
            "thread": g(f"/threads/{b.thread}"),  # metadata, values, status
            "history": g(f"/threads/{b.thread}/history", {"limit": 100}),  # every checkpoint
            "runs": g(f"/threads/{b.thread}/runs"),
            "assistant": g(f"/assistants/{b.assistant}"),
            "cron": [c for c in crons if c["cron_id"] == b.cron],
        }
        rest = {
            "threads": {
                t["thread_id"]: [t, g(f"/threads/{t['thread_id']}/runs"), histories and g(f"/threads/{t['thread_id']}/history", {"limit": 100})]
                for t in threads
                if t["thread_id"] != b.thread
            },
            "assistants": [a for a in assistants if a["assistant_id"] != b.assistant],
            "crons": [c for c in crons if c["cron_id"] != b.cron],
        }
        return {"bob": bob, "rest": rest}

    def foreign(self, kind: str, item: Any) -> list[str]:
        """How an object that is not bob's refers to bob's data or resources: bob's secret
        anywhere in it, or one of bob's ids (in any spelling) where the server reads which
        thread or assistant something runs on. (An id alice wrote elsewhere, e.g. echoed into
        her own run's ``context``, is her own input, not a crossing.)"""
        out = [f"bob's secret" for _ in [0] if SECRET in json.dumps(item)]
        b = self.bob
        refs: list[tuple[str, Any, str]] = []
        if kind == "threads":
            thread, runs, _history = item
            refs.append(("metadata.assistant_id", (thread.get("metadata") or {}).get("assistant_id"), b.assistant))
            for run in runs[1] if isinstance(runs[1], list) else []:
                cfg = ((run.get("kwargs") or {}).get("config") or {}).get("configurable") or {}
                refs += [
                    ("run thread_id", run.get("thread_id"), b.thread),
                    ("run assistant_id", run.get("assistant_id"), b.assistant),
                    ("run configurable.thread_id", cfg.get("thread_id"), b.thread),
                    ("run configurable.assistant_id", cfg.get("assistant_id"), b.assistant),
                ]
        elif kind == "crons":
            refs += [
                ("cron assistant_id", item.get("assistant_id"), b.assistant),
                ("cron thread_id", item.get("thread_id"), b.thread),
                ("cron payload.assistant_id", (item.get("payload") or {}).get("assistant_id"), b.assistant),
            ]
        return out + [f"{where} is bob's" for where, value, bobs in refs if same_id(value, bobs)]


def same_id(value: Any, u: str) -> bool:
    try:
        return uuid.UUID(str(value)) == uuid.UUID(u)
    except ValueError:
        return False


class Stack:
    """The agent server (``up``: no auth, no gateway) and alice's clients on each gateway."""

    def __init__(self, up_url: str, gateways: dict[str, str]):
        self.up = httpx.Client(base_url=up_url, timeout=TIMEOUT, trust_env=False)
        self.alice = {p: Alice(url) for p, url in gateways.items()}
        auth = {"Authorization": "Bearer alice-demo-key"}
        self.sdk = {p: get_sync_client(url=url, api_key=None, headers=auth, timeout=TIMEOUT) for p, url in gateways.items()}
        self.world: World | None = None

    def close(self) -> None:
        for c in [self.up, *(a.http for a in self.alice.values()), *(s.http.client for s in self.sdk.values())]:
            c.close()

    def fresh(self, policy: str, force: bool = False) -> World:
        """A world seeded for `policy` (reused only if the last case proved it untouched)."""
        w = self.world
        if w is None or force or w.policy != policy or w.last is None:
            w = self.world = World(self, policy)
        w.alice.seen.clear()
        return w

    def proved_clean(self, w: World, before: dict[str, Any], after: dict[str, Any]) -> None:
        """After a case: keep the world for the next case only if the server is exactly as seeded."""
        w.last = after if after == before else None
        import os
        if w.last is None and os.environ.get("DBG"):
            for k in ("bob", "rest"):
                for kk in before[k]:
                    if before[k][kk] != after[k][kk]:
                        print("DIRTY", k, kk, json.dumps(before[k][kk])[:300], "\n   ->", json.dumps(after[k][kk])[:300])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    binary, reason = harness.graphguard_bin()
    if binary is None:
        pytest.skip(reason)
    root, logs = tmp_path_factory.mktemp("attacks"), tmp_path_factory.mktemp("attacks-logs")
    procs = []
    try:
        up, up_url = harness.start_langgraph("attacks-upstream", "langgraph.json", root, logs)
        procs.append(up)
        gateways = {}
        for policy in POLICIES:
            gw, gateways[policy] = harness.start_graphguard(f"attacks-{policy}", binary, up_url, harness.POLICIES_DIR / policy, root, logs)
            procs.append(gw)
        s = Stack(up_url, gateways)
        yield s
        s.close()
    finally:
        for p in reversed(procs):
            p.stop()


# --------------------------------------------------------------------------------------------
# Verdicts: read on the server, never inferred from a status code
# --------------------------------------------------------------------------------------------


def shown(r: httpx.Response | None) -> str:
    return "timeout" if r is None else f"{r.status_code} {r.text[:300]}"


def works(r: httpx.Response | None) -> bool:
    """A control's success: 2xx, and no error envelope (commands) or SSE error frame."""
    if r is None or not 200 <= r.status_code < 300:
        return False
    return '"type":"error"' not in r.text[:200] and "event: error" not in r.text


def assert_nothing_crossed(w: World, before: dict[str, Any], after: dict[str, Any], what: str, r: httpx.Response | None) -> None:
    problems = []
    for key, old in before["bob"].items():
        if after["bob"][key] != old:
            problems.append(f"bob's {key} changed:\n    before: {json.dumps(old)[:600]}\n    after:  {json.dumps(after['bob'][key])[:600]}")
    for kind, items in after["rest"].items():
        for item in items.values() if isinstance(items, dict) else items:
            if marks := w.foreign(kind, item):
                problems.append(f"a {kind[:-1]} that is not bob's: {', '.join(marks)}: {json.dumps(item)[:600]}")
    if leaks := [t for t in w.alice.seen if SECRET in t]:
        problems.append(f"bob's secret in a response alice received: {leaks[0][:600]}")
    assert not problems, f"{what} (gateway answered {shown(r)}):\n  " + "\n  ".join(problems)


def no_shadow(w: World, spelled: str) -> None:
    """The checkpointer keys state by the raw thread id: another spelling must hold nothing."""
    if spelled == w.bob.thread:
        return
    for path in (f"/threads/{seg(spelled)}/state", f"/threads/{seg(spelled)}/history"):
        code, body = w._get(path)
        empty = body == [] if path.endswith("history") else isinstance(body, dict) and not body.get("values") and not body.get("checkpoint")
        assert code == 404 or empty, f"shadow state under {spelled!r}: GET {path} -> {code} {json.dumps(body)[:400]}"


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------

Build = Callable[[World, Any, str], Req]  # (world, bob's Res or alice's Mine, id as spelled)


@dataclass(frozen=True)
class Attack:
    of: str  # which of bob's ids the field names: thread | assistant | run | cron
    name: str  # route and field position
    build: Build  # (world, the resources' owner, the id as spelled) -> request
    needs: str = ""  # what alice needs (CAN) for the positive control; "" = always possible
    control_id: Callable[[World], str] | None = None  # default: alice's own resource of kind `of`

    def policies(self) -> tuple[str, ...]:
        return POLICIES if self.of in ("thread", "run") else ("owner", "resource")


def run_body(assistant: str, **extra: Any) -> dict[str, Any]:
    return {"assistant_id": assistant, "input": HI, **extra}


SUPERSTEPS = [{"updates": [{"values": {"messages": [{"role": "user", "content": "alice was here"}], "counter": 99}, "as_node": "echo"}]}]
FRESH = lambda w: str(uuid.uuid4())  # noqa: E731  # a create's legitimate form names a new id
ME = lambda w: w.mine.thread  # noqa: E731


def start(assistant: str, **params: Any) -> dict[str, Any]:
    return {"id": 1, "method": "run.start", "params": {"assistant_id": assistant, "input": HI, **params}}


A = Attack
ATTACKS: list[Attack] = [
    # --- a thread id in a body -----------------------------------------------------------
    A("thread", "POST /threads {thread_id, if_exists: do_nothing}", lambda w, o, x: Req("POST", "/threads", {"thread_id": x, "if_exists": "do_nothing"})),
    A("thread", "POST /threads {thread_id, if_exists: do_nothing, supersteps}", lambda w, o, x: Req("POST", "/threads", {"thread_id": x, "if_exists": "do_nothing", "supersteps": SUPERSTEPS}), "thread:write"),
    A("thread", "POST /threads {thread_id, supersteps}", lambda w, o, x: Req("POST", "/threads", {"thread_id": x, "metadata": {"graph_id": "agent"}, "supersteps": SUPERSTEPS}), "thread:write", FRESH),
    A("thread", "POST /threads/prune {thread_ids}", lambda w, o, x: Req("POST", "/threads/prune", {"thread_ids": [x]}), "thread:write"),
    A("thread", "POST /runs/cancel?action=rollback {thread_id, run_ids}", lambda w, o, x: Req("POST", "/runs/cancel", {"thread_id": x, "run_ids": [o.run]}, {"action": "rollback"}), "thread:write"),
    A("thread", "POST /threads/search {ids}", lambda w, o, x: Req("POST", "/threads/search", {"ids": [x]})),
    A("thread", "POST /runs/crons/search {thread_id}", lambda w, o, x: Req("POST", "/runs/crons/search", {"thread_id": x}), "cron"),
    A("thread", "POST /threads/{mine}/runs {config.configurable.thread_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, config={"configurable": {"thread_id": x}})), "", ME),
    A("thread", "POST /threads/{mine}/runs {checkpoint.thread_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, checkpoint={"thread_id": x})), "", ME),
    A("thread", "POST /runs {config.configurable.thread_id} (stateless)", lambda w, o, x: Req("POST", "/runs", run_body(AGENT, config={"configurable": {"thread_id": x}}, on_completion="keep")), "", ME),
    A("thread", "POST /threads/{mine}/state {checkpoint.thread_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/state", {"values": {"counter": 99}, "checkpoint": {"thread_id": x}}), "thread:write", ME),
    A("thread", "POST /threads/{mine}/history {checkpoint.thread_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/history", {"checkpoint": {"thread_id": x}}), "", ME),
    # --- a thread id in a path -----------------------------------------------------------
    A("thread", "GET /threads/{id}", lambda w, o, x: Req("GET", f"/threads/{seg(x)}")),
    A("thread", "PATCH /threads/{id}", lambda w, o, x: Req("PATCH", f"/threads/{seg(x)}", {"metadata": {"hijacked_by": "alice"}}), "thread:write"),
    A("thread", "DELETE /threads/{id}", lambda w, o, x: Req("DELETE", f"/threads/{seg(x)}"), "thread:write"),
    A("thread", "POST /threads/{id}/state", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/state", {"values": {"counter": 99}}), "thread:write"),
    A("thread", "POST /threads/{id}/history", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/history", {"limit": 10})),
    A("thread", "POST /threads/{id}/copy", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/copy")),
    A("thread", "GET /threads/{id}/runs", lambda w, o, x: Req("GET", f"/threads/{seg(x)}/runs")),
    A("thread", "POST /threads/{id}/runs/wait", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/runs/wait", run_body(AGENT))),
    A("thread", "POST /threads/{id}/runs/stream", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/runs/stream", run_body(AGENT))),
    A("thread", "POST /threads/{id}/commands run.start", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/commands", start(AGENT))),
    A("thread", "POST /threads/{id}/runs/crons", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/runs/crons", {"assistant_id": AGENT, "schedule": NEVER}), "cron"),
    # --- a run id (path and body) ----------------------------------------------------------
    A("run", "GET /threads/{thread}/runs/{id}", lambda w, o, x: Req("GET", f"/threads/{o.thread}/runs/{seg(x)}")),
    A("run", "POST /threads/{thread}/runs/{id}/cancel?action=rollback", lambda w, o, x: Req("POST", f"/threads/{o.thread}/runs/{seg(x)}/cancel", None, {"action": "rollback"}), "thread:write"),
    A("run", "DELETE /threads/{thread}/runs/{id}", lambda w, o, x: Req("DELETE", f"/threads/{o.thread}/runs/{seg(x)}"), "thread:write"),
    A("run", "POST /runs/cancel?action=rollback {run_ids}", lambda w, o, x: Req("POST", "/runs/cancel", {"thread_id": o.thread, "run_ids": [x]}, {"action": "rollback"}), "thread:write"),
    # --- an assistant id in a body: every route that starts a run, creates or searches ------
    A("assistant", "POST /threads/{mine}/runs {assistant_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/runs", run_body(x))),
    A("assistant", "POST /threads/{mine}/runs/wait {assistant_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/runs/wait", run_body(x))),
    A("assistant", "POST /threads/{mine}/runs/stream {assistant_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/runs/stream", run_body(x))),
    A("assistant", "POST /runs {assistant_id}", lambda w, o, x: Req("POST", "/runs", run_body(x, on_completion="keep"))),
    A("assistant", "POST /runs/wait {assistant_id}", lambda w, o, x: Req("POST", "/runs/wait", run_body(x, on_completion="keep"))),
    A("assistant", "POST /runs/stream {assistant_id}", lambda w, o, x: Req("POST", "/runs/stream", run_body(x, on_completion="keep"))),
    A("assistant", "POST /runs/batch [{assistant_id}]", lambda w, o, x: Req("POST", "/runs/batch", [run_body(x, on_completion="keep")])),
    A("assistant", "POST /threads/{mine}/commands run.start {params.assistant_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/commands", start(x))),
    A("assistant", "POST /assistants {assistant_id, if_exists: do_nothing}", lambda w, o, x: Req("POST", "/assistants", {"assistant_id": x, "graph_id": "agent", "if_exists": "do_nothing"}), "assistant"),
    A("assistant", "POST /runs/crons {assistant_id}", lambda w, o, x: Req("POST", "/runs/crons", {"assistant_id": x, "schedule": NEVER}), "cron"),
    A("assistant", "POST /threads/{mine}/runs/crons {assistant_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/runs/crons", {"assistant_id": x, "schedule": NEVER}), "cron"),
    A("assistant", "POST /runs/crons/search {assistant_id}", lambda w, o, x: Req("POST", "/runs/crons/search", {"assistant_id": x}), "cron"),
    # --- an assistant id in a path ---------------------------------------------------------
    A("assistant", "GET /assistants/{id}", lambda w, o, x: Req("GET", f"/assistants/{seg(x)}"), "assistant"),
    A("assistant", "PATCH /assistants/{id}", lambda w, o, x: Req("PATCH", f"/assistants/{seg(x)}", {"metadata": {"hijacked_by": "alice"}, "config": {"configurable": {"secret": "alice"}}}), "assistant"),
    A("assistant", "DELETE /assistants/{id}", lambda w, o, x: Req("DELETE", f"/assistants/{seg(x)}"), "assistant"),
    A("assistant", "GET /assistants/{id}/graph", lambda w, o, x: Req("GET", f"/assistants/{seg(x)}/graph"), "assistant"),
    A("assistant", "POST /assistants/{id}/versions", lambda w, o, x: Req("POST", f"/assistants/{seg(x)}/versions", {}), "assistant"),
    A("assistant", "POST /assistants/{id}/latest", lambda w, o, x: Req("POST", f"/assistants/{seg(x)}/latest", {"version": 1}), "assistant"),
    # --- a cron id in a path ---------------------------------------------------------------
    A("cron", "GET /runs/crons/{id}", lambda w, o, x: Req("GET", f"/runs/crons/{seg(x)}"), "cron"),
    A("cron", "PATCH /runs/crons/{id}", lambda w, o, x: Req("PATCH", f"/runs/crons/{seg(x)}", {"enabled": False, "input": {"messages": [{"role": "user", "content": "alice"}]}}), "cron"),
    A("cron", "DELETE /runs/crons/{id}", lambda w, o, x: Req("DELETE", f"/runs/crons/{seg(x)}"), "cron"),
]


def id_cases():
    for policy in POLICIES:
        for a in ATTACKS:
            if policy not in a.policies():
                continue
            for how in SPELLINGS:
                yield pytest.param(policy, a, how, id=f"{policy} | {a.of} id | {a.name} | {how}")
            if not a.needs or a.needs in CAN[policy]:
                yield pytest.param(policy, a, CONTROL, id=f"{policy} | {a.of} id | {a.name} | {CONTROL}")


@pytest.mark.parametrize(("policy", "attack", "spelling"), list(id_cases()))
def test_ids(stack: Stack, policy: str, attack: Attack, spelling: str) -> None:
    """bob's id, spelled every way, in one field and position; or alice's own (control)."""
    w = stack.fresh(policy, force=spelling == CONTROL)
    if spelling == CONTROL:  # alice's own resource (made on first use), canonically spelled
        owner, x = w.mine, (attack.control_id or (lambda w: getattr(w.mine, attack.of)))(w)
    else:
        owner, x = w.bob, spell(getattr(w.bob, attack.of), spelling)
    req = attack.build(w, owner, x)
    before, w.last = (w.last if spelling != CONTROL else None) or w.snapshot(), None
    r = w.alice.send(req)
    after = w.snapshot()
    what = f"{req.method} {req.path} {json.dumps(req.json)}"
    if spelling == CONTROL:
        assert works(r), f"alice's own request failed: {what} -> {shown(r)}"
    assert_nothing_crossed(w, before, after, what, r)
    if attack.of == "thread" and spelling != CONTROL:
        no_shadow(w, x)
    stack.proved_clean(w, before, after)
