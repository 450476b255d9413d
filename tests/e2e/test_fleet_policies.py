"""Access policies managed through LangSmith's API, on a policy store a fleet shares.

Three graphguard replicas in front of one real agent server, sharing one real PostgreSQL
(``--policy-store postgres://...``), with ``policies/abac`` minus its "Block PII Threads" policy,
which the tests create through the API (the seed's example). Everything is checked where it
takes effect: a change made through one replica's API must be *enforced* by every replica (bob's
read of a tagged thread, through each replica, turns from 200 to 403), not merely listed.

Also: the API's own authorization (401, 403, never forwarded), validation (every invalid shape
the file loader refuses is 422 and stores nothing), ``If-Match`` between two admins on two
replicas, the store stopped and restarted under traffic, a replica killed with SIGKILL during a
burst of changes, and the docs' curl examples run as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import services  # noqa: E402

API = "/api/v1/platform/orgs/current/access-policies"
ROLES = "/api/v1/orgs/current/roles"
REVISIONS = "/api/v1/graphguard/policy-store/revisions"
ADMIN = {"X-API-Key": "admin-demo-key"}
BOB = {"Authorization": "Bearer bob-demo-key"}
ALICE = {"Authorization": "Bearer alice-demo-key"}
REPO = Path(__file__).resolve().parents[2]

BLOCK_PII = {
    "name": "Block PII Threads",
    "description": "The seed's example",
    "effect": "deny",
    "condition_groups": [
        {
            "permission": "threads:read",
            "resource_type": "thread",
            "conditions": [
                {"attribute_name": "resource_tag_key", "attribute_key": "Contains-PII", "operator": "equals", "attribute_value": "true"}
            ],
        }
    ],
}


def policy_dir(root: Path) -> Path:
    """policies/abac without its PII policy (the API creates it), with the management API on."""
    d = root / "policies"
    shutil.copytree(REPO / "policies" / "abac", d)
    doc = json.loads((d / "access-policies.json").read_text())
    doc["access_policies"] = [p for p in doc["access_policies"] if p["name"] != BLOCK_PII["name"]]
    (d / "access-policies.json").write_text(json.dumps(doc, indent=2))
    (d / "management.yaml").write_text('settings:\n  management: { permission: "organization:manage" }\n')
    return d


class Replica(harness.Replica):
    def readyz(self) -> dict:
        return httpx.get(f"{self.admin_url}/readyz", timeout=5).json()

    def bob_reads(self, tid: str) -> int:
        return httpx.get(f"{self.url}/threads/{tid}", headers=BOB, timeout=5).status_code


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    binary, reason = harness.graphguard_bin()
    if binary is None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("fleet")
    logs = tmp_path_factory.mktemp("fleet-logs")
    pg = services.Postgres(logs / "postgres.log")
    pg.start()
    up, up_url = harness.start_langgraph("fleet-upstream", "langgraph.json", root, logs)
    stack = {"binary": binary, "root": root, "logs": logs, "pg": pg, "up": up_url, "upstream": up, "policies": policy_dir(root)}
    replicas = [Replica(f"replica-{i}", stack, {"GRAPHGUARD_POLICY_STORE": pg.dsn}) for i in range(3)]
    try:
        for r in replicas:
            r.start()
        stack["replicas"] = replicas
        # bob (role engineer) reads chatbot threads through a file policy; this one also has PII.
        with httpx.Client(base_url=up_url, timeout=10) as c:
            stack["pii"] = c.post("/threads", json={"metadata": {"Application": "chatbot-support", "Contains-PII": "true"}}).json()["thread_id"]
            stack["plain"] = c.post("/threads", json={"metadata": {"Application": "chatbot-support"}}).json()["thread_id"]
        yield stack
    finally:
        for r in replicas:
            r.stop()
        up.stop()
        pg.remove()


def api(replica: Replica, method: str, path: str, **kw) -> httpx.Response:
    headers = {**ADMIN, **kw.pop("headers", {})}
    return httpx.request(method, replica.url + path, headers=headers, timeout=10, **kw)


def wait_all(replicas: list[Replica], tid: str, status: int, started: float, timeout: float = 10.0) -> float:
    """Seconds until every replica answers bob's read with `status`."""
    pending = set(range(len(replicas)))
    while pending:
        for i in list(pending):
            if replicas[i].bob_reads(tid) == status:
                pending.discard(i)
        if time.monotonic() - started > timeout:
            raise AssertionError(f"replicas {sorted(pending)} did not answer {status} within {timeout}s")
        if pending:
            time.sleep(0.01)
    return time.monotonic() - started


def delete_by_name(replica: Replica, name: str) -> None:
    for p in api(replica, "GET", API).json()["access_policies"]:
        if p["name"] == name and p["source"] == "api":
            assert api(replica, "DELETE", f"{API}/{p['id']}").status_code == 204


def test_the_api_is_refused_without_the_management_permission_and_never_forwarded(stack):
    r0 = stack["replicas"][0]
    assert httpx.get(r0.url + API, timeout=5).status_code == 401
    r = httpx.get(r0.url + API, headers=ALICE, timeout=5)
    assert r.status_code == 403 and "organization:manage" in r.json()["detail"]
    r = httpx.post(r0.url + API, headers=ALICE, json=BLOCK_PII, timeout=5)
    assert r.status_code == 403
    assert api(r0, "GET", API).status_code == 200
    # The agent server never saw any of it.
    log = (stack["logs"] / "fleet-upstream.log").read_text(errors="replace")
    assert "/api/v1/" not in log


def test_a_policy_created_on_one_replica_is_enforced_by_all_within_a_second(stack, capsys):
    replicas, pii = stack["replicas"], stack["pii"]
    delete_by_name(replicas[0], BLOCK_PII["name"])
    wait_all(replicas, pii, 200, time.monotonic())
    delays = []
    for i in range(10):
        writer = replicas[i % 3]
        r = api(writer, "POST", API, json={**BLOCK_PII, "role_ids": ["engineer"]})
        assert r.status_code == 200, r.text
        pid = r.json()["id"]
        delays.append(wait_all(replicas, pii, 403, time.monotonic()))
        r = api(replicas[(i + 1) % 3], "DELETE", f"{API}/{pid}")
        assert r.status_code == 204, r.text
        delays.append(wait_all(replicas, pii, 200, time.monotonic()))
    # bob's other chatbot thread was never affected.
    assert all(r.bob_reads(stack["plain"]) == 200 for r in replicas)
    with capsys.disabled():
        print(f"\n  propagation over {len(delays)} changes to 3 replicas: median {statistics.median(delays) * 1000:.0f} ms, worst {max(delays) * 1000:.0f} ms")
    assert max(delays) < 1.0, delays


def test_update_detach_and_delete_reach_every_replica(stack):
    replicas, pii = stack["replicas"], stack["pii"]
    delete_by_name(replicas[0], BLOCK_PII["name"])
    pid = api(replicas[0], "POST", API, json={**BLOCK_PII, "role_ids": ["engineer"]}).json()["id"]
    wait_all(replicas, pii, 403, time.monotonic())
    # Update: the deny becomes an allow (bob reads it again).
    r = api(replicas[1], "PATCH", f"{API}/{pid}", json={"effect": "allow"})
    assert r.status_code == 200 and r.json()["effect"] == "allow"
    wait_all(replicas, pii, 200, time.monotonic(), timeout=1)
    api(replicas[1], "PATCH", f"{API}/{pid}", json={"effect": "deny"})
    wait_all(replicas, pii, 403, time.monotonic(), timeout=1)
    # Detach from engineer: bob is no longer concerned.
    r = api(replicas[2], "DELETE", f"/api/v1/platform/orgs/current/roles/engineer/access-policies", params={"access_policy_ids": pid})
    assert r.status_code == 204, r.text
    wait_all(replicas, pii, 200, time.monotonic(), timeout=1)
    # Attach again, then delete.
    r = api(replicas[0], "POST", "/api/v1/platform/orgs/current/roles/engineer/access-policies", json={"access_policy_ids": [pid]})
    assert r.status_code == 204, r.text
    wait_all(replicas, pii, 403, time.monotonic(), timeout=1)
    assert api(replicas[2], "DELETE", f"{API}/{pid}").status_code == 204
    wait_all(replicas, pii, 200, time.monotonic(), timeout=1)
    for r in replicas:
        assert api(r, "GET", f"{API}/{pid}").status_code == 404


def test_two_admins_on_two_replicas_one_wins_one_gets_412(stack):
    replicas = stack["replicas"]
    delete_by_name(replicas[0], "Concurrent")
    body = {**BLOCK_PII, "name": "Concurrent", "effect": "allow"}
    pid = api(replicas[0], "POST", API, json=body).json()["id"]
    tag = api(replicas[0], "GET", f"{API}/{pid}").headers["etag"]
    results: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def edit(i: int) -> None:
        barrier.wait()
        results[i] = api(replicas[i], "PATCH", f"{API}/{pid}", json={"description": f"admin {i}"}, headers={"If-Match": tag})

    threads = [threading.Thread(target=edit, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 412], {i: (r.status_code, r.text) for i, r in results.items()}
    winner = next(f"admin {i}" for i, r in results.items() if r.status_code == 200)
    deadline = time.monotonic() + 2
    while True:
        seen = [api(r, "GET", f"{API}/{pid}").json()["description"] for r in replicas]
        if seen == [winner] * 3 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert seen == [winner] * 3
    # A write with the winner's ETag succeeds; the stale one never will.
    assert api(replicas[0], "DELETE", f"{API}/{pid}", headers={"If-Match": tag}).status_code == 412
    assert api(replicas[0], "DELETE", f"{API}/{pid}").status_code == 204


INVALID = [
    ("unknown operator", {"condition_groups": [{"permission": "threads:read", "resource_type": "thread", "conditions": [{"attribute_name": "resource_tag_key", "attribute_key": "k", "operator": "eq", "attribute_value": "v"}]}]}, "operator"),
    ("unknown permission", {"condition_groups": [{"permission": "threads:frobnicate", "resource_type": "thread", "conditions": []}]}, "threads:frobnicate"),
    ("unknown resource type", {"condition_groups": [{"permission": "threads:read", "resource_type": "project", "conditions": []}]}, "project"),
    ("unknown attribute name", {"condition_groups": [{"permission": "threads:read", "resource_type": "thread", "conditions": [{"attribute_name": "resource_name", "attribute_key": "k", "operator": "equals", "attribute_value": "v"}]}]}, "attribute_name"),
    ("unknown effect", {"effect": "maybe"}, "effect"),
    ("unknown field", {"priority": 3}, "priority"),
    ("missing groups", {"condition_groups": None}, "condition_groups"),
    ("resource type for another permission", {"condition_groups": [{"permission": "threads:read", "resource_type": "assistant", "conditions": []}]}, "assistant"),
    ("a non-scalar value", {"condition_groups": [{"permission": "threads:read", "resource_type": "thread", "conditions": [{"attribute_name": "resource_tag_key", "attribute_key": "k", "operator": "equals", "attribute_value": ["v"]}]}]}, "attribute_value"),
    ("no condition groups", {"condition_groups": []}, "condition_groups"),
    ("an unknown role", {"role_ids": ["no-such-role"]}, "no-such-role"),
]


@pytest.mark.parametrize("label,change,needle", INVALID, ids=[i[0] for i in INVALID])
def test_every_invalid_policy_is_422_and_nothing_is_stored(stack, label, change, needle):
    r0 = stack["replicas"][0]
    before = api(r0, "GET", REVISIONS).json()["revisions"][:1]
    body = {**BLOCK_PII, "name": f"invalid {label}"}
    for k, v in change.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    r = api(r0, "POST", API, json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"], r.text
    assert api(r0, "GET", REVISIONS).json()["revisions"][:1] == before
    names = [p["name"] for p in api(r0, "GET", API).json()["access_policies"]]
    assert body["name"] not in names


def test_file_policies_and_roles_are_listed_and_read_only(stack):
    r0 = stack["replicas"][0]
    policies = api(r0, "GET", API).json()["access_policies"]
    files = [p for p in policies if p["source"] == "file"]
    assert any(p["name"] == "Annotator Team A Access" for p in files)
    fid = next(p["id"] for p in files if p["name"] == "Annotator Team A Access")
    r = api(r0, "PATCH", f"{API}/{fid}", json={"effect": "deny"})
    assert r.status_code == 409 and "policy file" in r.json()["detail"]
    assert api(r0, "DELETE", f"{API}/{fid}").status_code == 409
    roles = api(r0, "GET", ROLES).json()
    assert {"engineer", "admin"} <= {r["name"] for r in roles if r["source"] == "file"}
    assert api(r0, "PATCH", f"{ROLES}/engineer", json={"permissions": ["*"]}).status_code == 409


def test_the_store_down_keeps_enforcement_refuses_writes_and_catches_up(stack):
    replicas, pii, pg = stack["replicas"], stack["pii"], stack["pg"]
    delete_by_name(replicas[0], BLOCK_PII["name"])
    pid = api(replicas[0], "POST", API, json={**BLOCK_PII, "role_ids": ["engineer"]}).json()["id"]
    wait_all(replicas, pii, 403, time.monotonic())
    pg.stop()
    try:
        for r in replicas:
            assert r.bob_reads(pii) == 403, "enforcement changed with the store down"
            assert r.bob_reads(stack["plain"]) == 200
        w = api(replicas[1], "DELETE", f"{API}/{pid}")
        assert w.status_code == 503, w.text
        assert api(replicas[1], "GET", f"{API}/{pid}").status_code == 200, "reads answer from the snapshot"
        deadline = time.monotonic() + 10
        while not all(r.readyz().get("store", {}).get("healthy") is False for r in replicas):
            assert time.monotonic() < deadline, [r.readyz() for r in replicas]
            time.sleep(0.1)
    finally:
        pg.start()
    # Back: every replica reconnects; a change through one reaches all.
    deadline = time.monotonic() + 15
    while not all(r.readyz().get("store", {}).get("healthy") for r in replicas):
        assert time.monotonic() < deadline, [r.readyz() for r in replicas]
        time.sleep(0.1)
    assert api(replicas[2], "DELETE", f"{API}/{pid}").status_code == 204
    wait_all(replicas, pii, 200, time.monotonic(), timeout=2)


def test_a_replica_killed_during_a_burst_loads_the_latest_state(stack):
    replicas = stack["replicas"]
    victim = replicas[2]
    stop = threading.Event()
    made: list[str] = []

    def burst() -> None:
        i = 0
        while not stop.is_set():
            r = api(replicas[i % 2], "POST", API, json={**BLOCK_PII, "name": f"burst {i}", "effect": "allow"})
            if r.status_code == 200:
                made.append(r.json()["id"])
            i += 1

    t = threading.Thread(target=burst)
    t.start()
    time.sleep(0.5)
    victim.kill()
    time.sleep(0.5)
    stop.set()
    t.join()
    assert len(made) > 5
    # The others were unaffected and agree.
    lists = [sorted(p["id"] for p in api(r, "GET", API).json()["access_policies"]) for r in replicas[:2]]
    assert lists[0] == lists[1] and set(made) <= set(lists[0])
    victim.start()
    assert sorted(p["id"] for p in api(victim, "GET", API).json()["access_policies"]) == lists[0]
    for pid in made:
        api(replicas[0], "DELETE", f"{API}/{pid}")


def test_history_shows_every_change_and_restores_one(stack):
    replicas, pii = stack["replicas"], stack["pii"]
    delete_by_name(replicas[0], BLOCK_PII["name"])
    head = api(replicas[0], "GET", REVISIONS).json()["revisions"][0]["number"]
    api(replicas[0], "POST", API, json={**BLOCK_PII, "role_ids": ["engineer"]})
    wait_all(replicas, pii, 403, time.monotonic())
    revs = api(replicas[1], "GET", REVISIONS).json()["revisions"]
    assert revs[0]["number"] == head + 1 and revs[0]["actor"] == "admin"
    assert "Block PII Threads" in revs[0]["summary"]
    r = api(replicas[1], "POST", f"{REVISIONS}/{head}/restore")
    assert r.status_code == 200, r.text
    wait_all(replicas, pii, 200, time.monotonic(), timeout=2)


def test_the_docs_curl_examples_run_as_written(stack):
    r0 = stack["replicas"][0]
    delete_by_name(r0, BLOCK_PII["name"])
    text = (REPO / "docs" / "access-control.md").read_text()
    section = text[text.index("### Examples"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "GRAPHGUARD": r0.url}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    for line in filter(None, out.stdout.splitlines()):
        assert "detail" not in line, line
    policies = api(r0, "GET", API).json()["access_policies"]
    assert any(p["name"] == "Block PII Threads" and p["role_ids"] == ["engineer"] for p in policies)
    assert any(r["display_name"] == "Contractor" and r["name"] == "contractor" for r in api(r0, "GET", ROLES).json())
    delete_by_name(r0, BLOCK_PII["name"])
