"""Alice and bob through graphguard with the official LangGraph SDK (run by scripts/demo)."""

import sys

import httpx
from langgraph_sdk import get_sync_client

url = sys.argv[1]
alice = get_sync_client(url=url, headers={"Authorization": "Bearer alice-demo-key"})
bob = get_sync_client(url=url, headers={"Authorization": "Bearer bob-demo-key"})


def status(call):
    try:
        call()
        return 200
    except httpx.HTTPStatusError as e:
        return e.response.status_code
    except Exception as e:  # the SDK's typed errors carry the response too
        resp = getattr(e, "response", None)
        return getattr(resp, "status_code", repr(e))


t = alice.threads.create(metadata={"owner": "bob", "topic": "demo"})
print(f"alice creates a thread claiming owner=bob -> stored metadata {t['metadata']}")
out = alice.runs.wait(t["thread_id"], "agent", input={"messages": [{"role": "user", "content": "hello"}]})
print(f"alice runs the graph on it -> {out['messages'][-1]['content']!r}, graph saw user {out.get('seen_user')!r}")
print(f"bob reads alice's thread -> {status(lambda: bob.threads.get(t['thread_id']))}")
print(f"bob runs on alice's thread -> {status(lambda: bob.runs.wait(t['thread_id'], 'agent', input={}))}")
print(f"bob searches for owner=alice -> {len(bob.threads.search(metadata={'owner': 'alice'}))} threads")
print(f"alice searches -> {len(alice.threads.search())} thread(s)")
anon = httpx.post(f"{url}/threads/search", json={})
print(f"no credentials -> {anon.status_code} {anon.json()}")
wipe = httpx.post(f"{url}/internal/truncate", headers={"Authorization": "Bearer alice-demo-key"})
print(f"POST /internal/truncate -> {wipe.status_code} (never forwarded)")
