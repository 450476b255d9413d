"""H3 (participants): shared threads. Mirrors policies/participants/handlers.yaml.

Only thread handlers: assistants, crons and the store have no handler, so they are allowed
(LangGraph fails open when no handler matches).
"""

import sys
from pathlib import Path

from langgraph_sdk import Auth


# langgraph loads this file by path, not as a package: make its directory importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_users import authenticate  # noqa: E402


auth = Auth()
auth.authenticate(authenticate)


@auth.on.threads.create
async def on_thread_create(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create.value):
    metadata = value.setdefault("metadata", {})
    metadata["participants"] = [ctx.user.identity, "shared"]


@auth.on.threads
async def on_threads(ctx: Auth.types.AuthContext, value: dict):
    return {"participants": {"$contains": ctx.user.identity}}
