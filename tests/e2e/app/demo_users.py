"""The demo API keys of policies/demo-keys.txt as LangGraph users (reference side only).

Shared by the ``auth_<set>.py`` files, which load it by path (the server loads auth files with
``spec_from_file_location``, so a plain sibling import is not guaranteed to resolve).
NEVER use these keys in production.
"""

from __future__ import annotations

from typing import Any

from langgraph_sdk import Auth

USERS: dict[str, dict[str, Any]] = {
    "alice-demo-key": {"identity": "alice", "display_name": "Alice", "permissions": [], "org": "acme"},
    "bob-demo-key": {"identity": "bob", "display_name": "Bob", "permissions": [], "org": "globex"},
    "admin-demo-key": {"identity": "admin", "permissions": ["assistants:create"], "roles": ["admin"]},
    "carol-demo-key": {"identity": "carol", "permissions": []},
    "dave-demo-key": {"identity": "dave", "permissions": []},
    "shared-demo-key": {"identity": "shared", "permissions": []},
}


async def authenticate(authorization: str | None) -> dict[str, Any]:
    """`Authorization: Bearer <name>-demo-key`; anything else is a 401 (never a 400/500)."""
    if not authorization:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Expected a Bearer token")
    user = USERS.get(token)
    if user is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid API key")
    return dict(user)
