"""H1 (owner): LangGraph's docs' single global handler. Mirrors policies/owner/handlers.yaml."""

import sys
from pathlib import Path

from langgraph_sdk import Auth


# langgraph loads this file by path, not as a package: make its directory importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_users import authenticate  # noqa: E402


auth = Auth()
auth.authenticate(authenticate)


@auth.on
async def owner_isolation(ctx: Auth.types.AuthContext, value: dict):
    metadata = value.setdefault("metadata", {})
    metadata["owner"] = ctx.user.identity
    return {"owner": ctx.user.identity}
