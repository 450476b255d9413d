"""JWT authentication end to end: graphguard with policies/supabase-hs256 in front of the real
agent server; the official SDK carries real HS256 tokens (signed here with the project secret)
for alice and bob, and sees the same isolation as with API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

SECRET = "e2e-" + os.urandom(16).hex() + "-secret-at-least-32-characters"
ISSUER = "http://127.0.0.1:54321/auth/v1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, secret: str = SECRET, **overrides) -> str:
    now = int(time.time())
    claims = {"sub": sub, "email": f"{sub}@example.com", "role": "authenticated", "aud": "authenticated", "iss": ISSUER, "iat": now, "exp": now + 600}
    claims.update(overrides)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def status(call) -> int:
    try:
        call()
        return 200
    except httpx.HTTPStatusError as e:
        return e.response.status_code
    except Exception as e:
        return getattr(getattr(e, "response", None), "status_code", -1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    binary, reason = harness.graphguard_bin()
    if binary is None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("jwt")
    logs = tmp_path_factory.mktemp("jwt-logs")
    os.environ["SUPABASE_JWT_SECRET"] = SECRET
    up, up_url = harness.start_langgraph("jwt-upstream", "langgraph.json", root, logs)
    try:
        gw, url = harness.start_graphguard("jwt-gateway", binary, up_url, harness.POLICIES_DIR / "supabase-hs256", root, logs)
    except Exception:
        up.stop()
        raise
    finally:
        os.environ.pop("SUPABASE_JWT_SECRET", None)
    yield url
    gw.stop()
    up.stop()


def sdk(url: str, tok: str):
    return get_sync_client(url=url, headers={"Authorization": f"Bearer {tok}"})


def test_tokens_isolate_users_like_api_keys(gateway):
    alice, bob = sdk(gateway, token("alice")), sdk(gateway, token("bob"))
    t = alice.threads.create(metadata={"owner": "bob"})
    assert t["metadata"]["owner"] == "alice"
    out = alice.runs.wait(t["thread_id"], "agent", input={"messages": [{"role": "user", "content": "hi"}]})
    assert out["seen_user"] == "alice"
    assert json.loads(out["seen_roles"]) == ["authenticated"]
    assert status(lambda: bob.threads.get(t["thread_id"])) == 404
    assert [x["thread_id"] for x in bob.threads.search(metadata={"owner": "alice"})] == []


@pytest.mark.parametrize(
    "bad,why",
    [
        (lambda: token("alice", exp=int(time.time()) - 3600), "expired"),
        (lambda: token("alice", secret="x" * 40), "signed with another secret"),
        (lambda: token("alice", iss="https://evil.example/auth/v1"), "wrong issuer"),
        (lambda: token("alice", aud="service"), "wrong audience"),
        (lambda: b64(b'{"alg":"none","typ":"JWT"}') + "." + token("alice").split(".")[1] + ".", "alg none"),
    ],
)
def test_bad_tokens_are_401_with_a_bearer_challenge(gateway, bad, why):
    r = httpx.post(f"{gateway}/threads/search", json={}, headers={"Authorization": f"Bearer {bad()}"})
    assert r.status_code == 401, (why, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer"), why
    assert SECRET not in r.text
