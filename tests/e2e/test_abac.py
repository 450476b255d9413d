"""Roles and access policies (policies/abac: the LangSmith ABAC seed's five scenarios) in front of
the real agent server, driven by the official SDK. Gateway only: LangGraph has no ABAC of its own.

Also: SIGTERM during a streaming run lets the stream finish and the process exit 0."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

HI = {"messages": [{"role": "user", "content": "hi"}]}


def client(url: str, who: str):
    return get_sync_client(url=url, headers={"Authorization": f"Bearer {who}-demo-key"})


def status(call) -> int:
    try:
        call()
        return 200
    except httpx.HTTPStatusError as e:
        return e.response.status_code
    except Exception as e:  # the SDK's typed errors
        return getattr(getattr(e, "response", None), "status_code", -1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    binary, reason = harness.graphguard_bin()
    if binary is None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("abac")
    logs = tmp_path_factory.mktemp("abac-logs")
    up, up_url = harness.start_langgraph("abac-upstream", "langgraph.json", root, logs)
    try:
        gw, gw_url = harness.start_graphguard("abac-gateway", binary, up_url, harness.POLICIES_DIR / "abac", root, logs)
    except Exception:
        up.stop()
        raise
    yield {"url": gw_url, "up": up_url, "gw": gw, "binary": binary, "root": root, "logs": logs}
    gw.stop()
    up.stop()


@pytest.fixture(scope="module")
def threads(stack):
    admin = client(stack["url"], "admin")
    tags = {
        "team_a": {"Annotation-Team": "Team-A"},
        "team_b": {"Annotation-Team": "Team-B"},
        "team_a_pii": {"Annotation-Team": "Team-A", "Contains-PII": "true"},
        "chatbot": {"Application": "chatbot-support"},
        "search_app": {"Application": "search"},
        "acme": {"Client": "Acme-Corp"},
        "other_client": {"Client": "Other-Corp"},
        "untagged": {},
    }
    ids = {name: admin.threads.create(metadata=md)["thread_id"] for name, md in tags.items()}
    # More Team-A threads so a search page has to be filled from several upstream items.
    ids["team_a_more"] = [admin.threads.create(metadata={"Annotation-Team": "Team-A", "n": i})["thread_id"] for i in range(4)]
    return ids


def test_team_tags_isolate_annotators(stack, threads):
    alice = client(stack["url"], "alice")
    assert alice.threads.get(threads["team_a"])["thread_id"] == threads["team_a"]
    assert status(lambda: alice.threads.get(threads["team_b"])) == 403
    assert status(lambda: alice.threads.get(threads["untagged"])) == 403


def test_pii_deny_overrides_allow_and_rbac(stack, threads):
    assert status(lambda: client(stack["url"], "alice").threads.get(threads["team_a_pii"])) == 403
    admin = client(stack["url"], "admin")
    assert status(lambda: admin.threads.get(threads["team_a_pii"])) == 403
    assert admin.threads.get(threads["team_b"])["thread_id"] == threads["team_b"]


def test_glob_matched_access(stack, threads):
    bob = client(stack["url"], "bob")
    assert bob.threads.get(threads["chatbot"])["thread_id"] == threads["chatbot"]
    assert status(lambda: bob.threads.get(threads["search_app"])) == 403


def test_if_exists_admits_untagged_and_blocks_other_clients(stack, threads):
    carol = client(stack["url"], "carol")
    assert carol.threads.get(threads["acme"])["thread_id"] == threads["acme"]
    assert carol.threads.get(threads["untagged"])["thread_id"] == threads["untagged"]
    assert status(lambda: carol.threads.get(threads["other_client"])) == 403


def test_search_is_filtered_item_by_item_with_honest_pagination(stack, threads):
    visible = {threads["team_a"], *threads["team_a_more"]}
    with httpx.Client(base_url=stack["url"], headers={"Authorization": "Bearer alice-demo-key"}) as h:
        seen: list[str] = []
        offset = 0
        while True:
            r = h.post("/threads/search", json={"limit": 2, "offset": offset})
            assert r.status_code == 200, r.text
            page = [t["thread_id"] for t in r.json()]
            assert len(page) <= 2
            seen += page
            total = int(r.headers["x-pagination-total"])
            if "x-pagination-next" not in r.headers:
                assert total == offset + len(page)
                break
            assert len(page) == 2, "a page is as full as asked while more remain"
            offset = int(r.headers["x-pagination-next"])
        assert set(seen) == visible and len(seen) == len(visible)
        count = h.post("/threads/count", json={})
        assert count.json() == len(visible)


def test_runs_follow_their_thread_tags(stack, threads):
    alice = client(stack["url"], "alice")
    out = alice.runs.wait(threads["team_a"], "agent", input=HI)
    assert out["messages"][-1]["content"] == "echo: hi"
    assert status(lambda: alice.runs.wait(threads["team_a_pii"], "agent", input=HI)) == 403


def test_consultants_cannot_create_threads_without_a_role_permission(stack):
    carol = client(stack["url"], "carol")
    assert status(lambda: carol.threads.create(metadata={})) == 403


def test_sigterm_during_a_stream_lets_it_finish_and_exits_zero(stack, threads):
    """A second gateway process: start a streaming run through it, SIGTERM it mid-stream."""
    gw, url = harness.start_graphguard("abac-sigterm", stack["binary"], stack["up"], harness.POLICIES_DIR / "abac", stack["root"], stack["logs"])
    try:
        body = {"assistant_id": "agent", "input": HI, "stream_mode": "values"}
        headers = {"Authorization": "Bearer alice-demo-key"}
        with httpx.stream("POST", f"{url}/threads/{threads['team_a']}/runs/stream", json=body, headers=headers, timeout=30) as r:
            assert r.status_code == 200
            chunks = r.iter_text()
            text = next(chunks)  # the first frame is through: the stream is in flight
            gw.proc.send_signal(signal.SIGTERM)
            text += "".join(chunks)
        frames = harness.parse_sse(text)
        values = [d for ev, d in frames if ev == "values"]
        assert values and values[-1]["messages"][-1]["content"] == "echo: hi", text
        code = gw.proc.wait(timeout=30)
        assert code == 0, gw.log_tail()
        # The listener is closed: new connections are refused.
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/ok", timeout=2)
    finally:
        gw.stop()
