"""An attacker's differential suite: alice against bob, through graphguard, judged on the server.

One real agent server (``app/langgraph.json``, no auth of its own) and four graphguard processes
in front of it, one per example policy set: ``owner``, ``resource``, ``participants``, ``abac``.

Before a case, bob's resources are created **directly on the agent server** with the metadata
the policy set reads as "bob's" (``VICTIM_TAGS``): a thread with state, a private assistant
whose ``config.configurable`` holds a secret, a pending run (``after_seconds``) and a cron, each
carrying the secret ``SECRET``. alice (``Bearer alice-demo-key``) then attacks **through the
gateway** with plain httpx (the SDK would normalise ids): one request, or a few that put the
same field in the same position on sibling routes. The catalogue (test ids read
``policy | group | field and route(s) | spelling or form``):

* ``thread id`` / ``run id`` / ``assistant id`` / ``cron id`` (``test_ids``): every request
  field of the inventory (``docs/inventory.md``, ``src/routes/fields.rs``) that names one of bob's
  resources, in its path or body position, carrying bob's id in every spelling Python's
  ``uuid.UUID`` accepts (``SPELLINGS``; two, ``FEW``, where the id is not what decides: a run id
  under bob's own thread, a thread id the server overrides), and the create-on-existing forms
  (``if_exists: do_nothing``, with and without ``supersteps``; with the default
  ``if_exists: raise`` the server itself refuses before it writes anything);
* ``identity keys``: alice's own runs, crons, assistants and checkpoints whose
  ``config.configurable`` / ``context`` / ``checkpoint`` / command ``params.config`` carry
  graphguard's identity headers and LangGraph's reserved ``langgraph_auth_*`` keys, forged: the
  request must be stored (an ordinary key next to them, ``KEPT``, is on the server) and no
  forged value anywhere on the server;
* ``webhook``: runs and crons whose webhook is a private, loopback or metadata address: nothing
  at all may be created or changed on the server;
* ``delete_threads`` (the one query field that reaches other users' resources): alice deletes
  her own assistant with ``?delete_threads=true`` spellings while one of bob's threads ran it;
* ``json``: the same fields named or valued through JSON escapes (``assistant\\u005fid``,
  ``do\\u005fnothing``, ``own\\u0065r``) and duplicate keys (the server's orjson decodes
  escapes and keeps the last duplicate), including an attempt to stamp a thread as bob's;
* ``sdk control``: alice's ordinary life through the official SDK next to bob's resources;
* ``Team-B thread`` (``test_abac_runs_on_a_thread_alice_may_not_read``): runs on a thread alice
  may not read, on every run route: refused (the suite first found them crossing, see the
  test's docstring).

The verdict never rests on a status code (codes only appear in failure messages). It is read on
the agent server directly, without the gateway (``World.snapshot``): bob's thread (metadata,
values, status), its checkpoint history, its runs, bob's assistant and cron are exactly as
before; no other object on the server (every thread with its runs and checkpoints, every
assistant, every cron) holds bob's secret or runs on bob's thread or assistant
(``World.foreign``), so no run used bob's assistant and nothing alice owns references bob's
resources; a non-canonical spelling of bob's thread id has no checkpoint of its own (the
checkpointer keys state by the raw string); and bob's secret is in no response body alice
received (SSE streams and ``do_nothing`` creates included).

Every attack has a positive control (spelling ``alice-own``): the same request(s) naming
alice's OWN resource, canonically spelled, must work (2xx, no error envelope or SSE error
frame), so a gateway that refused everything would fail. A control exists where the policy set
lets alice do that at all (``CAN``): the abac roles give alice no ``threads:update``, and the
resource set denies every assistant and cron action (her "own" assistant there is the graph's
system assistant). Assistants and crons are no one's own under ``participants`` and ``abac``
(no handler, or an RBAC grant to every assistant), so the assistant and cron id attacks run
under ``owner`` and ``resource`` only.

Not here: store namespaces (no ids; the scenario suites cover them), headers (the repo's
``configurable_headers`` admit only ``x-graphguard-*``, which graphguard sets itself) and
``input.respond`` commands (the test graph never interrupts).

Isolation: every case starts from the seeded state. The upstream is wiped with
``POST /internal/truncate`` (sent to the upstream directly, never through the gateway) and
re-seeded before a case, unless the previous case proved it left the server exactly as seeded
(its full snapshot after equals the one before).

Run: ``GRAPHGUARD_BIN=$PWD/target/debug/graphguard .venv-e2e/bin/python -m pytest
tests/e2e/test_attacks.py -q`` (``-v`` prints the catalogue; the servers' logs are under pytest's
``tmp_path``, ``attacks-logs*``).
"""

from __future__ import annotations

import functools
import json
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
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
SECRET = f"bobsecret{TOKEN}"  # in every one of bob's resources
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
    "abac": set(),  # roles: threads:create, assistants:read; runs on Team-A threads by policy
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
    params: Any = None
    raw: str | None = None  # a JSON body sent byte for byte (escapes, duplicate keys)

    def __str__(self) -> str:
        q = f"?{httpx.QueryParams(self.params)}" if self.params else ""
        body = self.raw if self.raw is not None else json.dumps(self.json) if self.json is not None else ""
        return f"{self.method} {self.path}{q} {body}"


class Alice:
    """alice's raw client on one gateway; keeps every response body she received."""

    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, headers={"Authorization": "Bearer alice-demo-key"}, timeout=TIMEOUT, trust_env=False)
        self.seen: list[str] = []

    def send(self, req: Req) -> httpx.Response | None:
        try:
            if req.raw is not None:
                r = self.http.request(req.method, req.path, content=req.raw.encode(), params=req.params, headers={"content-type": "application/json"})
            else:
                r = self.http.request(req.method, req.path, json=req.json, params=req.params)
        except httpx.TimeoutException:
            self.seen.append(f"{req}: timeout")
            return None
        self.seen.append(r.text)
        return r


@dataclass
class Res:
    """bob's resources (canonical ids)."""

    thread: str
    run: str
    assistant: str
    cron: str


class Mine:
    """alice's own resources, made through the gateway with the official SDK on first use."""

    def __init__(self, policy: str, sdk: Any):
        self.policy, self.sdk = policy, sdk
        self.thread = sdk.threads.create(metadata=ALICE_TAGS[policy])["thread_id"]

    @functools.cached_property
    def run(self) -> str:
        return self.sdk.runs.create(self.thread, "agent", input=HI, after_seconds=3600)["run_id"]

    @functools.cached_property
    def assistant(self) -> str:
        if "assistant" not in CAN[self.policy]:
            return AGENT  # the one assistant alice may use there: the graph's system assistant
        return self.sdk.assistants.create("agent", config={"configurable": {"mine": "alice"}}, name="alice")["assistant_id"]

    @functools.cached_property
    def cron(self) -> str:
        return self.sdk.crons.create_for_thread(self.thread, "agent", schedule=NEVER, input=HI)["cron_id"]


class World:
    """The agent server wiped and seeded with bob's resources for one policy set."""

    def __init__(self, stack: Stack, policy: str, tags: dict[str, Any]):
        self.policy, self.tags, self.up, self.pool = policy, tags, stack.up, stack.pool
        self.up.post("/internal/truncate").raise_for_status()  # on the upstream, never the gateway
        said = {"messages": [{"role": "user", "content": SECRET}]}
        a = self.seed("/assistants", {"graph_id": "agent", "config": {"configurable": {"secret": SECRET}}, "metadata": {"owner": "bob"}, "name": "bob"})
        t = self.seed("/threads", {"metadata": {**tags, "graph_id": "agent", "note": SECRET}, "supersteps": [{"updates": [{"values": {**said, "counter": 7}, "as_node": "echo"}]}]})
        tid, aid = t["thread_id"], a["assistant_id"]
        r = self.seed(f"/threads/{tid}/runs", {"assistant_id": aid, "input": said, "after_seconds": 3600, "metadata": tags})
        c = self.seed(f"/threads/{tid}/runs/crons", {"assistant_id": aid, "schedule": NEVER, "input": said, "metadata": tags})
        self.bob = Res(tid, r["run_id"], aid, c["cron_id"])
        self.alice = stack.alice[policy]
        self.mine = Mine(policy, stack.sdk[policy])
        self.last: dict[str, Any] | None = None  # the snapshot the last case proved unchanged

    def seed(self, path: str, body: Any) -> Any:
        r = self.up.post(path, json=body)
        assert r.status_code == 200, f"seeding {path}: {r.status_code} {r.text}"
        return r.json()

    def get(self, path: str, body: Any = None) -> tuple[int, Any]:
        """A read on the agent server itself (POST when a body is given)."""
        r = self.up.post(path, json=body) if body is not None else self.up.get(path)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def snapshot(self) -> dict[str, Any]:
        """Everything on the agent server: bob's resources, and all the rest (every other
        thread with its runs and checkpoints, every other assistant and cron). Independent
        reads go out together."""
        b = self.bob
        reads = {
            "crons": ("/runs/crons/search", {"limit": 1000}),
            "threads": ("/threads/search", {"limit": 1000}),
            "assistants": ("/assistants/search", {"limit": 1000}),
            "thread": (f"/threads/{b.thread}", None),  # metadata, values, status
            "history": (f"/threads/{b.thread}/history", {"limit": 100}),  # every checkpoint
            "runs": (f"/threads/{b.thread}/runs", None),
            "assistant": (f"/assistants/{b.assistant}", None),
        }
        got = dict(zip(reads, self.pool.map(lambda a: self.get(*a), reads.values())))
        others = [t for t in got["threads"][1] if t["thread_id"] != b.thread]
        runs = self.pool.map(lambda t: self.get(f"/threads/{t['thread_id']}/runs")[1], others)
        history = self.pool.map(lambda t: self.get(f"/threads/{t['thread_id']}/history", {"limit": 100})[1], others)
        crons = got["crons"][1]
        bob = {k: got[k] for k in ("thread", "history", "runs", "assistant")}
        bob["cron"] = [c for c in crons if c["cron_id"] == b.cron]
        rest = {
            "threads": {t["thread_id"]: [t, r, h] for t, r, h in zip(others, runs, history)},
            "assistants": [a for a in got["assistants"][1] if a["assistant_id"] != b.assistant],
            "crons": [c for c in crons if c["cron_id"] != b.cron],
        }
        return {"bob": bob, "rest": rest}

    def foreign(self, kind: str, item: Any) -> list[str]:
        """How an object that is not bob's refers to bob: his secret anywhere in it, or one of
        his ids (in any spelling) where the server reads which thread or assistant something
        runs on. (An id alice wrote elsewhere, e.g. echoed into her own run's ``context``, is
        her own input, not a crossing.)"""
        b = self.bob
        out = ["bob's secret"] if SECRET in json.dumps(item) else []
        refs: list[tuple[str, Any, str]] = []
        if kind == "threads":
            thread, runs, _ = item
            refs.append(("metadata.assistant_id", (thread.get("metadata") or {}).get("assistant_id"), b.assistant))
            for run in runs if isinstance(runs, list) else []:
                cfg = ((run.get("kwargs") or {}).get("config") or {}).get("configurable") or {}
                refs += [
                    ("a run's thread_id", run.get("thread_id"), b.thread),
                    ("a run's assistant_id", run.get("assistant_id"), b.assistant),
                    ("a run's configurable.thread_id", cfg.get("thread_id"), b.thread),
                    ("a run's configurable.assistant_id", cfg.get("assistant_id"), b.assistant),
                ]
        elif kind == "crons":
            refs += [
                ("assistant_id", item.get("assistant_id"), b.assistant),
                ("thread_id", item.get("thread_id"), b.thread),
                ("payload.assistant_id", (item.get("payload") or {}).get("assistant_id"), b.assistant),
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
        self.pool = ThreadPoolExecutor(8)  # a snapshot's independent reads go out together
        self.alice = {p: Alice(url) for p, url in gateways.items()}
        auth = {"Authorization": "Bearer alice-demo-key"}
        self.sdk = {p: get_sync_client(url=url, api_key=None, headers=auth, timeout=TIMEOUT) for p, url in gateways.items()}
        self.world: World | None = None

    def close(self) -> None:
        self.pool.shutdown()
        for c in [self.up, *(a.http for a in self.alice.values()), *(s.http.client for s in self.sdk.values())]:
            c.close()

    def attack(self, policy: str, build: Callable[[World], Req | list[Req]], tags: dict[str, Any] | None = None) -> Case:
        """Send alice's request(s) against a seeded world; snapshot the server around them.

        The world is wiped and re-seeded unless the previous case proved it left the server
        exactly as seeded. `build` runs before the first
        snapshot, so alice's own resources a request needs are part of "before". `tags`: bob's
        metadata, if not the policy set's ``VICTIM_TAGS``."""
        w, tags = self.world, tags or VICTIM_TAGS[policy]
        if w is None or (w.policy, w.tags) != (policy, tags) or w.last is None:
            w = self.world = World(self, policy, tags)
        w.alice.seen.clear()
        made = len(vars(w.mine))
        built = build(w)
        reqs = built if isinstance(built, list) else [built]
        if len(vars(w.mine)) != made:  # alice's resources made on first use: "before" is now
            w.last = None
        before, w.last = w.last or w.snapshot(), None
        sent = [(req, w.alice.send(req)) for req in reqs]
        return Case(w, sent, before, w.snapshot())


@dataclass
class Case:
    w: World
    sent: list[tuple[Req, httpx.Response | None]]  # alice's requests and the gateway's answers
    before: dict[str, Any]
    after: dict[str, Any]

    def __str__(self) -> str:
        return "\n".join(f"{req}\n    -> {shown(r)}" for req, r in self.sent)

    def nothing_crossed(self) -> None:
        """bob's resources are as before, nothing else on the server refers to them, and no
        response alice received holds his secret."""
        w, problems = self.w, []
        for key, old in self.before["bob"].items():
            if self.after["bob"][key] != old:
                problems.append(f"bob's {key} changed:\n    before: {json.dumps(old)[:700]}\n    after:  {json.dumps(self.after['bob'][key])[:700]}")
        for kind, items in self.after["rest"].items():
            for item in items.values() if isinstance(items, dict) else items:
                if marks := w.foreign(kind, item):
                    problems.append(f"a {kind[:-1]} that is not bob's: {', '.join(marks)}: {json.dumps(item)[:700]}")
        if leaks := [t for t in w.alice.seen if SECRET in t]:
            problems.append(f"bob's secret in a response alice received: {leaks[0][:700]}")
        assert not problems, f"{self}\n  " + "\n  ".join(problems)

    def control_works(self) -> None:
        assert all(works(r) for _, r in self.sent), f"alice's own request failed:\n{self}"

    def done(self) -> None:
        """The case passed: if it changed nothing, the next case may reuse the world."""
        if self.after == self.before:
            self.w.last = self.after


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


def shown(r: httpx.Response | None) -> str:
    return "timeout" if r is None else f"{r.status_code} {r.text[:300]}"


def works(r: httpx.Response | None) -> bool:
    """A control's success: 2xx, and no error envelope (commands) or SSE error frame."""
    if r is None or not 200 <= r.status_code < 300:
        return False
    return '"type":"error"' not in r.text[:200] and "event: error" not in r.text


def no_shadow(w: World, spelled: str) -> None:
    """The checkpointer keys state by the raw thread id: another spelling of bob's thread id
    must hold no checkpoint of its own."""
    if spelled == w.bob.thread:
        return
    code, body = w.get(f"/threads/{seg(spelled)}/state")  # the latest checkpoint, if any
    empty = isinstance(body, dict) and not body.get("values") and not body.get("checkpoint")
    assert code == 404 or empty, f"a checkpoint under {spelled!r}: {code} {json.dumps(body)[:400]}"


# --------------------------------------------------------------------------------------------
# 1. bob's ids, spelled every way, in every field and position that names one
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    of: str  # which of bob's ids the field names: thread | run | assistant | cron
    name: str  # the field, its position and route(s)
    build: Callable[[World, Any, str], Req | list[Req]]  # (world, bob's Res or alice's Mine, id as spelled)
    needs: str = ""  # what alice needs (CAN) for the positive control; "" = always possible
    control_id: Callable[[World], str] | None = None  # default: alice's own resource of kind `of`
    spellings: tuple[str, ...] = SPELLINGS

    def policies(self) -> tuple[str, ...]:
        # Assistants and crons are no one's own under participants and abac (module doc).
        return POLICIES if self.of in ("thread", "run") else ("owner", "resource")


#: alice's runs carry her team's tag: under abac, runs are granted on Team-A threads, and a run
#: without a thread makes one from its own metadata (harmless under the other sets)
RUN_TAGS = {"Annotation-Team": "Team-A"}


def run_body(assistant: str, **extra: Any) -> dict[str, Any]:
    return {"assistant_id": assistant, "input": HI, "metadata": dict(RUN_TAGS), **extra}


def start(assistant: str, **params: Any) -> dict[str, Any]:
    return {"id": 1, "method": "run.start", "params": {"assistant_id": assistant, "input": HI, **params}}


def every_run_route(w: World, x: str) -> list[Req]:
    """A run with assistant `x` on every route that starts one (stateless runs kept, so that
    what they did stays on the server to be read)."""
    t, keep = w.mine.thread, {"on_completion": "keep"}
    return [
        Req("POST", f"/threads/{t}/runs", run_body(x)),
        Req("POST", f"/threads/{t}/runs/wait", run_body(x)),
        Req("POST", f"/threads/{t}/runs/stream", run_body(x)),
        Req("POST", "/runs", run_body(x, **keep)),
        Req("POST", "/runs/wait", run_body(x, **keep)),
        Req("POST", "/runs/stream", run_body(x, **keep)),
        Req("POST", "/runs/batch", [run_body(x, **keep)]),
        Req("POST", "/runs/batch", [run_body(AGENT, **keep), run_body(x, **keep)]),
        Req("POST", f"/threads/{t}/commands", start(x)),
    ]


SUPERSTEPS = [{"updates": [{"values": {"messages": [{"role": "user", "content": "alice was here"}], "counter": 99}, "as_node": "echo"}]}]


def my_thread(w: World) -> str:
    return w.mine.thread


#: where the id is not what decides (the server overrides a thread id with the path's, or the
#: path already names bob's thread), the canonical spelling and one other
FEW = ("canonical", "braces")

A = Attack
ATTACKS: list[Attack] = [
    # --- a thread id in a body: creates on an existing thread, bulk and search fields ----------
    A("thread", "POST /threads {thread_id, if_exists: do_nothing}", lambda w, o, x: Req("POST", "/threads", {"thread_id": x, "if_exists": "do_nothing"})),
    A("thread", "POST /threads {thread_id, if_exists: do_nothing, supersteps}", lambda w, o, x: Req("POST", "/threads", {"thread_id": x, "if_exists": "do_nothing", "supersteps": SUPERSTEPS}), "thread:write"),
    A("thread", "POST /threads/prune {thread_ids}", lambda w, o, x: Req("POST", "/threads/prune", {"thread_ids": [x]}), "thread:write"),
    A("thread", "POST /runs/cancel?action=rollback {thread_id, run_ids}", lambda w, o, x: Req("POST", "/runs/cancel", {"thread_id": x, "run_ids": [o.run]}, {"action": "rollback"}), "thread:write"),
    A("thread", "POST /threads/search {ids}", lambda w, o, x: Req("POST", "/threads/search", {"ids": [x]})),
    A("thread", "POST /runs/crons/search {thread_id}", lambda w, o, x: Req("POST", "/runs/crons/search", {"thread_id": x}), "cron"),
    A("thread", "POST /threads/{mine}/runs {config.configurable.thread_id | checkpoint.thread_id}, POST /runs {config.configurable.thread_id}", lambda w, o, x: [
        Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, config={"configurable": {"thread_id": x}})),
        Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, checkpoint={"thread_id": x})),
        Req("POST", "/runs", run_body(AGENT, config={"configurable": {"thread_id": x}}, on_completion="keep")),
    ], "", my_thread, FEW),
    A("thread", "POST /threads/{mine}/state {checkpoint.thread_id}", lambda w, o, x: Req("POST", f"/threads/{w.mine.thread}/state", {"values": {"counter": 99}, "checkpoint": {"thread_id": x}}), "thread:write", my_thread, FEW),
    # --- a thread id in a path -----------------------------------------------------------------
    A("thread", "GET /threads/{id} [/state, /history, /runs], POST /threads/{id}/history", lambda w, o, x: [
        Req("GET", f"/threads/{seg(x)}"),
        Req("GET", f"/threads/{seg(x)}/state"),
        Req("GET", f"/threads/{seg(x)}/history"),
        Req("POST", f"/threads/{seg(x)}/history", {"limit": 10}),
        Req("GET", f"/threads/{seg(x)}/runs"),
    ]),
    A("thread", "PATCH /threads/{id}", lambda w, o, x: Req("PATCH", f"/threads/{seg(x)}", {"metadata": {"hijacked_by": "alice"}}), "thread:write"),
    A("thread", "DELETE /threads/{id}", lambda w, o, x: Req("DELETE", f"/threads/{seg(x)}"), "thread:write"),
    A("thread", "POST /threads/{id}/state", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/state", {"values": {"counter": 99}}), "thread:write"),
    A("thread", "POST /threads/{id}/copy", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/copy")),
    A("thread", "POST /threads/{id}/runs/wait", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/runs/wait", run_body(AGENT))),
    A("thread", "POST /threads/{id}/commands run.start", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/commands", start(AGENT))),
    A("thread", "POST /threads/{id}/runs/crons", lambda w, o, x: Req("POST", f"/threads/{seg(x)}/runs/crons", {"assistant_id": AGENT, "schedule": NEVER}), "cron"),
    # --- a run id: path and body. On bob's thread the thread decides (two spellings suffice);
    # --- under alice's own thread the run id alone names bob's run (every spelling) -----------
    A("run", "GET /threads/{thread}/runs/{id}", lambda w, o, x: Req("GET", f"/threads/{o.thread}/runs/{seg(x)}"), "", None, FEW),
    A("run", "POST /threads/{thread}/runs/{id}/cancel?action=rollback", lambda w, o, x: Req("POST", f"/threads/{o.thread}/runs/{seg(x)}/cancel", None, {"action": "rollback"}), "thread:write", None, FEW),
    A("run", "POST /runs/cancel?action=rollback {thread_id, run_ids}", lambda w, o, x: Req("POST", "/runs/cancel", {"thread_id": o.thread, "run_ids": [x]}, {"action": "rollback"}), "thread:write", None, FEW),
    A("run", "bob's run under my thread: GET /threads/{mine}/runs/{id}, POST /runs/cancel?action=rollback {thread_id: mine, run_ids}", lambda w, o, x: [
        Req("GET", f"/threads/{w.mine.thread}/runs/{seg(x)}"),
        Req("POST", "/runs/cancel", {"thread_id": w.mine.thread, "run_ids": [x]}, {"action": "rollback"}),
    ], "thread:write"),
    # --- an assistant id in a body ---------------------------------------------------------------
    A("assistant", "{assistant_id} of every run-creating route: /threads/{mine}/runs[/wait|/stream], /runs[/wait|/stream], /runs/batch items, /commands run.start", lambda w, o, x: every_run_route(w, x)),
    A("assistant", "POST /assistants {assistant_id, if_exists: do_nothing}", lambda w, o, x: Req("POST", "/assistants", {"assistant_id": x, "graph_id": "agent", "if_exists": "do_nothing"}), "assistant"),
    A("assistant", "POST /runs/crons, /threads/{mine}/runs/crons {assistant_id}", lambda w, o, x: [
        Req("POST", "/runs/crons", {"assistant_id": x, "schedule": NEVER}),
        Req("POST", f"/threads/{w.mine.thread}/runs/crons", {"assistant_id": x, "schedule": NEVER}),
    ], "cron"),
    A("assistant", "POST /runs/crons/search {assistant_id}", lambda w, o, x: Req("POST", "/runs/crons/search", {"assistant_id": x}), "cron"),
    # --- an assistant id in a path -------------------------------------------------------------
    A("assistant", "GET /assistants/{id} [/graph], POST /assistants/{id}/versions", lambda w, o, x: [
        Req("GET", f"/assistants/{seg(x)}"),
        Req("GET", f"/assistants/{seg(x)}/graph"),
        Req("POST", f"/assistants/{seg(x)}/versions", {}),
    ], "assistant"),
    A("assistant", "PATCH /assistants/{id}", lambda w, o, x: Req("PATCH", f"/assistants/{seg(x)}", {"metadata": {"hijacked_by": "alice"}, "config": {"configurable": {"secret": "alice"}}}), "assistant"),
    A("assistant", "DELETE /assistants/{id}", lambda w, o, x: Req("DELETE", f"/assistants/{seg(x)}"), "assistant"),
    A("assistant", "POST /assistants/{id}/latest", lambda w, o, x: Req("POST", f"/assistants/{seg(x)}/latest", {"version": 1}), "assistant"),
    # --- a cron id in a path -------------------------------------------------------------------
    A("cron", "GET /runs/crons/{id}", lambda w, o, x: Req("GET", f"/runs/crons/{seg(x)}"), "cron"),
    A("cron", "PATCH /runs/crons/{id}", lambda w, o, x: Req("PATCH", f"/runs/crons/{seg(x)}", {"enabled": False, "input": {"messages": [{"role": "user", "content": "alice"}]}}), "cron"),
    A("cron", "DELETE /runs/crons/{id}", lambda w, o, x: Req("DELETE", f"/runs/crons/{seg(x)}"), "cron"),
]


def id_cases():
    for policy in POLICIES:
        for a in ATTACKS:
            if policy in a.policies():
                hows = a.spellings + ((CONTROL,) if not a.needs or a.needs in CAN[policy] else ())
                for how in hows:
                    yield pytest.param(policy, a, how, id=f"{policy} | {a.of} id | {a.name} | {how}")


@pytest.mark.parametrize(("policy", "attack", "spelling"), list(id_cases()))
def test_ids(stack: Stack, policy: str, attack: Attack, spelling: str) -> None:
    """bob's id spelled `spelling` in one field and position; or alice's own id (control)."""
    spelled: list[str] = []

    def build(w: World) -> Req | list[Req]:
        if spelling == CONTROL:  # alice's own resource (made on first use), canonically spelled
            x = (attack.control_id or (lambda w: getattr(w.mine, attack.of)))(w)
            return attack.build(w, w.mine, x)
        spelled.append(spell(getattr(w.bob, attack.of), spelling))
        return attack.build(w, w.bob, spelled[0])

    case = stack.attack(policy, build)
    if spelling == CONTROL:
        case.control_works()
    case.nothing_crossed()
    if attack.of == "thread" and spelled:
        no_shadow(case.w, spelled[0])
    case.done()


# --------------------------------------------------------------------------------------------
# 2. identity keys in configuration objects
# --------------------------------------------------------------------------------------------

#: graphguard's identity headers (any case) and LangGraph's reserved auth keys, forged
FORGED_KEYS = {
    "x-graphguard-user-id": FORGED,
    "X-GraphGuard-User-Permissions": json.dumps([FORGED]),
    "x-graphguard-user-roles": json.dumps([FORGED]),
    "langgraph_auth_user_id": FORGED,
    "langgraph_auth_permissions": [FORGED],
    "langgraph_auth_user": {"identity": FORGED},
    "langgraph_request_id": FORGED,
}


def forged() -> dict[str, Any]:
    return {**FORGED_KEYS, "mine": KEPT}


def cfg() -> dict[str, Any]:
    return {"configurable": forged()}


#: (form, what alice needs, request); the forged keys must not be stored, `KEPT` must be
IDENTITY: list[tuple[str, str, Callable[[World], Req]]] = [
    ("POST /threads/{mine}/runs {config.configurable}", "", lambda w: Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, config=cfg()))),
    ("POST /threads/{mine}/runs {context}", "", lambda w: Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, context=forged()))),
    ("POST /threads/{mine}/runs {checkpoint}", "", lambda w: Req("POST", f"/threads/{w.mine.thread}/runs", run_body(AGENT, checkpoint=forged()))),
    ("POST /runs {config.configurable} (stateless)", "", lambda w: Req("POST", "/runs", run_body(AGENT, config=cfg(), on_completion="keep"))),
    ("POST /runs/batch [{context}]", "", lambda w: Req("POST", "/runs/batch", [run_body(AGENT, context=forged(), on_completion="keep")])),
    ("POST /threads/{mine}/commands run.start {params.config.configurable}", "", lambda w: Req("POST", f"/threads/{w.mine.thread}/commands", start(AGENT, config=cfg()))),
    ("POST /threads/{mine}/state {checkpoint}", "thread:write", lambda w: Req("POST", f"/threads/{w.mine.thread}/state", {"values": {"counter": 5}, "checkpoint": forged()})),
    ("POST /threads/{mine}/runs/crons {config.configurable}", "cron", lambda w: Req("POST", f"/threads/{w.mine.thread}/runs/crons", {"assistant_id": AGENT, "schedule": NEVER, "config": cfg()})),
    ("POST /runs/crons {context}", "cron", lambda w: Req("POST", "/runs/crons", {"assistant_id": AGENT, "schedule": NEVER, "context": forged()})),
    ("PATCH /runs/crons/{mine} {config.configurable}", "cron", lambda w: Req("PATCH", f"/runs/crons/{w.mine.cron}", {"config": cfg()})),
    ("POST /assistants {config.configurable}", "assistant", lambda w: Req("POST", "/assistants", {"graph_id": "agent", "config": cfg()})),
    ("POST /assistants {context}", "assistant", lambda w: Req("POST", "/assistants", {"graph_id": "agent", "context": forged()})),
    ("PATCH /assistants/{mine} {config.configurable}", "assistant", lambda w: Req("PATCH", f"/assistants/{w.mine.assistant}", {"config": cfg()})),
]


@pytest.mark.parametrize(
    ("policy", "build"),
    [pytest.param(p, b, id=f"{p} | identity keys | {form}") for p in POLICIES for form, needs, b in IDENTITY if not needs or needs in CAN[p]],
)
def test_identity_keys(stack: Stack, policy: str, build: Callable[[World], Req]) -> None:
    """alice's own run/cron/assistant/checkpoint with forged identity keys: stored without them."""
    case = stack.attack(policy, build)
    case.control_works()  # the keys are removed, the request itself is alice's right
    case.nothing_crossed()
    stored = json.dumps(case.after)
    assert KEPT in stored, f"alice's ordinary configurable value was not stored: {case}"
    assert FORGED not in stored, f"a forged identity key reached the agent server's storage: {case}\n  {stored[max(0, stored.find(FORGED) - 400):stored.find(FORGED) + 100]}"


# --------------------------------------------------------------------------------------------
# 3. webhooks at private, loopback and metadata addresses
# --------------------------------------------------------------------------------------------

WEBHOOKS = (
    "http://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://127.0.0.1/hook",
    "https://[::1]/hook",
    "https://2130706433/hook",
)


def hooked(body: dict[str, Any], url: str | None) -> dict[str, Any]:
    return body if url is None else {**body, "webhook": url}


#: (routes, what alice needs, requests given the webhook or None)
WEBHOOK_FORMS: list[tuple[str, str, Callable[[World, str | None], list[Req]]]] = [
    ("runs: POST /threads/{mine}/runs, POST /runs, POST /runs/batch", "", lambda w, u: [
        Req("POST", f"/threads/{w.mine.thread}/runs", hooked(run_body(AGENT), u)),
        Req("POST", "/runs", hooked(run_body(AGENT, on_completion="keep"), u)),
        Req("POST", "/runs/batch", [hooked(run_body(AGENT, on_completion="keep"), u)]),
    ]),
    ("crons: POST /threads/{mine}/runs/crons, POST /runs/crons, PATCH /runs/crons/{mine}", "cron", lambda w, u: [
        Req("POST", f"/threads/{w.mine.thread}/runs/crons", hooked({"assistant_id": AGENT, "schedule": NEVER}, u)),
        Req("POST", "/runs/crons", hooked({"assistant_id": AGENT, "schedule": NEVER}, u)),
        Req("PATCH", f"/runs/crons/{w.mine.cron}", hooked({"enabled": True}, u)),
    ]),
]


@pytest.mark.parametrize(
    ("policy", "build", "url"),
    [
        pytest.param(p, b, u, id=f"{p} | webhook | {form} | {u or CONTROL + ' (no webhook)'}")
        for p in POLICIES
        for form, needs, b in WEBHOOK_FORMS
        if not needs or needs in CAN[p]
        for u in (*WEBHOOKS, None)
    ],
)
def test_webhooks(stack: Stack, policy: str, build: Callable[[World, str | None], list[Req]], url: str | None) -> None:
    """A run or cron with a webhook the server must never call: nothing is created or changed."""
    case = stack.attack(policy, lambda w: build(w, url))
    case.nothing_crossed()
    if url is None:
        case.control_works()
        assert case.after != case.before, f"alice's own request changed nothing on the server: {case}"
        return
    assert case.after == case.before, f"the server stored something for a request with webhook {url}: {case}"
    assert url.split("/")[2] not in json.dumps(case.after), f"the webhook host reached the server: {case}"
    case.done()


# --------------------------------------------------------------------------------------------
# 4. DELETE /assistants/{mine}?delete_threads=... while one of bob's threads ran with it
# --------------------------------------------------------------------------------------------

#: the server deletes the threads when the last delete_threads value, lower-cased, is "true"
DELETE_THREADS = {
    "delete_threads=true": [("delete_threads", "true")],
    "delete_threads=TRUE": [("delete_threads", "TRUE")],
    "delete_threads=false&delete_threads=true": [("delete_threads", "false"), ("delete_threads", "true")],
    CONTROL + " (no delete_threads)": None,
}


@pytest.mark.parametrize(
    ("policy", "query"),
    [pytest.param(p, q, id=f"{p} | delete_threads | DELETE /assistants/{{mine}} | {k}") for p in ("owner", "participants") for k, q in DELETE_THREADS.items()],
)
def test_delete_threads(stack: Stack, policy: str, query: Any) -> None:
    """The server deletes every thread whose metadata names the assistant, whoever owns it."""
    ran: list[str] = []

    def build(w: World) -> Req:
        aid = w.mine.assistant
        t = w.seed("/threads", {"metadata": VICTIM_TAGS[policy]})["thread_id"]
        r = w.seed(f"/threads/{t}/runs", {"assistant_id": aid, "input": HI, "after_seconds": 3600})
        w.up.post(f"/threads/{t}/runs/{r['run_id']}/cancel", params={"action": "rollback"}).raise_for_status()
        assert w.get(f"/threads/{t}")[1]["metadata"]["assistant_id"] == aid  # bob's thread ran it
        ran.append(t)
        return Req("DELETE", f"/assistants/{aid}", None, query)

    case = stack.attack(policy, build)
    w, t = case.w, ran[0]
    assert case.after["rest"]["threads"].get(t) == case.before["rest"]["threads"][t], f"bob's thread that ran alice's assistant is gone or changed: {case}"
    case.nothing_crossed()
    if query is None:
        case.control_works()
        assert w.get(f"/assistants/{w.mine.assistant}")[0] == 404, f"alice's assistant was not deleted: {case}"


# --------------------------------------------------------------------------------------------
# 5. the same fields spelled at the JSON level: escaped and duplicate keys
# --------------------------------------------------------------------------------------------


def raw(path: str, template: str, w: World) -> Req:
    """A POST whose body is `template` with ``{A}`` / ``{T}`` bob's assistant / thread, ``{S}``
    the system assistant and ``{F}`` the forged identity value (the server's orjson decodes
    ``\\u`` escapes in keys and values, and keeps the last of duplicate keys)."""
    body = template.replace("{A}", w.bob.assistant).replace("{T}", w.bob.thread).replace("{S}", AGENT).replace("{F}", FORGED)
    return Req("POST", path, raw=body)


OWNERS = ("owner", "resource")  # where bob's assistant is his own and metadata.owner makes him owner
JSON_FORMS: list[tuple[str, tuple[str, ...], Callable[[World], Req]]] = [
    ("duplicate key: POST /threads/{mine}/runs {assistant_id: system, assistant_id: bob's}", OWNERS, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant_id": "{S}", "input": {}, "assistant_id": "{A}"}', w)),
    ("escaped key: POST /threads/{mine}/runs {assistant_id: system, assistant\\u005fid: bob's}", OWNERS, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant_id": "{S}", "input": {}, "assistant\\u005fid": "{A}"}', w)),
    ("escaped value: POST /threads/{mine}/runs {assistant_id: bob's with \\u002d}", OWNERS, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant_id": "%s", "input": {}}' % w.bob.assistant.replace("-", "\\u002d"), w)),
    ("escaped key: POST /threads {thread\\u005fid: bob's, if_exists: do_nothing}", POLICIES, lambda w: raw("/threads", '{"thread\\u005fid": "{T}", "if_exists": "do_nothing"}', w)),
    ("escaped value: POST /threads {thread_id: bob's, if_exists: do\\u005fnothing}", POLICIES, lambda w: raw("/threads", '{"thread_id": "{T}", "if_exists": "do\\u005fnothing"}', w)),
    ("escaped key: POST /threads/{mine}/runs {checkpoint: {x-graphguard-user-\\u0069d}}", POLICIES, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant_id": "{S}", "input": {}, "checkpoint": {"x-graphguard-user-\\u0069d": "{F}"}}', w)),
    ("escaped keys: POST /threads/{mine}/runs {config: {configur\\u0061ble: {langgraph\\u005fauth_user_id}}}", POLICIES, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant_id": "{S}", "input": {}, "config": {"configur\\u0061ble": {"langgraph\\u005fauth_user_id": "{F}", "x-graphguard-user-id": "{F}"}}}', w)),
    ("duplicate key: POST /threads/{mine}/runs {context: {x-graphguard-user-id, x-graphguard-user-id}}", POLICIES, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant_id": "{S}", "input": {}, "context": {"x-graphguard-user-id": "{F}", "x-graphguard-user-id": "{F}"}}', w)),
    ("escaped key: POST /threads {metadata: {own\\u0065r: bob}}", OWNERS, lambda w: raw("/threads", '{"metadata": {"own\\u0065r": "bob"}}', w)),
    ("duplicate key: POST /threads {metadata: {owner: bob, owner: bob}}", OWNERS, lambda w: raw("/threads", '{"metadata": {"owner": "bob", "owner": "bob"}}', w)),
    # the positive control: escapes in alice's own legitimate request are no reason to refuse it
    (f"escaped keys and values, {CONTROL}: POST /threads/{{mine}}/runs {{assistant\\u005fid: system, input, metadata: {{n\\u0061me}}}}", POLICIES, lambda w: raw(f"/threads/{w.mine.thread}/runs", '{"assistant\\u005fid": "%s", "input": {}, "metadata": {"n\\u0061me": "\\u0061lice"}}' % AGENT.replace("-", "\\u002d"), w)),
]


@pytest.mark.parametrize(
    ("policy", "build", "control"),
    [pytest.param(p, b, CONTROL in form, id=f"{p} | json | {form}") for form, policies, b in JSON_FORMS for p in policies],
)
def test_json_spellings(stack: Stack, policy: str, build: Callable[[World], Req], control: bool) -> None:
    """A field named or valued through JSON escapes or duplicate keys reaches no more than its
    plain spelling: nothing of bob's crosses, no forged identity is stored, and alice cannot
    make a thread of hers bob's (``owner`` metadata is stamped whatever its spelling)."""
    case = stack.attack(policy, build)
    if control:
        case.control_works()
    case.nothing_crossed()
    stored = json.dumps(case.after)
    assert FORGED not in stored, f"a forged identity key reached the agent server's storage: {case}"
    if policy in OWNERS:
        planted = [t for t, *_ in case.after["rest"]["threads"].values() if (t.get("metadata") or {}).get("owner") == "bob"]
        assert not planted, f"alice made a thread bob's: {case}\n  {json.dumps(planted)[:700]}"
    case.done()


# --------------------------------------------------------------------------------------------
# 6. alice's ordinary life through the official SDK, next to bob's seeded resources
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p} | sdk control")
def test_sdk_control(stack: Stack, policy: str) -> None:
    """The positive control for the whole catalogue: with the SDK, alice creates a thread,
    runs the graph on it, reads it back and searches; she sees her own work and none of bob's."""
    sdk = stack.sdk[policy]
    got: list[Any] = []

    def build(w: World) -> Req:
        t = w.mine.thread
        got.append(sdk.runs.wait(t, "agent", input=HI))
        got.extend([sdk.threads.get(t), sdk.threads.get_state(t), sdk.threads.get_history(t), sdk.threads.search(limit=100)])
        if "assistant" in CAN[policy]:
            got.append(sdk.runs.wait(t, w.mine.assistant, input=HI))
        return Req("GET", f"/threads/{t}")

    case = stack.attack(policy, build)
    case.control_works()
    output, thread, state, history, found = got[:5]
    assert output["messages"][-1]["content"] == "echo: hi" and output["seen_user"] == "alice", output
    assert thread["thread_id"] == case.w.mine.thread and state["values"]["counter"] >= 1 and history
    assert {t["thread_id"] for t in found} == {case.w.mine.thread}, found
    assert SECRET not in json.dumps(got)
    case.nothing_crossed()


# --------------------------------------------------------------------------------------------
# 7. Runs on a thread alice may not read (under abac)
# --------------------------------------------------------------------------------------------

TEAM_B = {"Annotation-Team": "Team-B"}  # not alice's team, and no PII tag (whose deny covers runs)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda w: Req("POST", f"/threads/{w.bob.thread}/runs/wait", run_body(AGENT)), id="abac | thread id | Team-B thread | POST /threads/{id}/runs/wait | canonical"),
        pytest.param(lambda w: Req("POST", f"/threads/{w.bob.thread}/runs/stream", run_body(AGENT)), id="abac | thread id | Team-B thread | POST /threads/{id}/runs/stream | canonical"),
        pytest.param(lambda w: Req("POST", f"/threads/{w.bob.thread}/runs", run_body(AGENT)), id="abac | thread id | Team-B thread | POST /threads/{id}/runs | canonical"),
        pytest.param(lambda w: Req("POST", f"/threads/{w.bob.thread}/commands", start(AGENT)), id="abac | thread id | Team-B thread | POST /threads/{id}/commands run.start | canonical"),
    ],
)
def test_abac_runs_on_a_thread_alice_may_not_read(stack: Stack, build: Callable[[World], Req]) -> None:
    """bob's thread tagged Team-B only: alice may not read it (GET is refused), nor run on it:
    a run writes the thread's state, and /wait and /stream return it. (The suite found this:
    the abac roles granted threads:create_run on every thread, and /wait answered with a state
    alice may not read; runs are now granted by access policies on tags, and /wait and /stream
    run the read check, as LangGraph's join does.)"""
    case = stack.attack("abac", lambda w: [Req("GET", f"/threads/{w.bob.thread}"), build(w)], tags=TEAM_B)
    assert not works(case.sent[0][1]), f"alice may read bob's Team-B thread: {case}"  # the premise
    case.nothing_crossed()
