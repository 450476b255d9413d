"""H2 (resource): LangGraph's docs' resource-specific handlers. Mirrors policies/resource/handlers.yaml."""

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


@auth.on.threads.create
async def on_thread_create(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create.value):
    metadata = value.setdefault("metadata", {})
    metadata["owner"] = ctx.user.identity


@auth.on.threads.read
async def on_thread_read(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.read.value):
    return {"owner": ctx.user.identity}


@auth.on.threads.create_run
async def on_run_create(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create_run.value):
    metadata = value.setdefault("metadata", {})
    metadata["owner"] = ctx.user.identity
    return {"owner": ctx.user.identity}


@auth.on.assistants.create
async def on_assistant_create(ctx: Auth.types.AuthContext, value: Auth.types.on.assistants.create.value):
    if "assistants:create" not in ctx.permissions:
        raise Auth.exceptions.HTTPException(status_code=403, detail="User lacks the required permissions.")


@auth.on.assistants
async def on_assistants(ctx: Auth.types.AuthContext, value: dict):
    raise Auth.exceptions.HTTPException(status_code=403, detail="User lacks the required permissions.")


@auth.on.crons
async def on_crons(ctx: Auth.types.AuthContext, value: dict):
    raise Auth.exceptions.HTTPException(status_code=403, detail="User lacks the required permissions.")


@auth.on.store()
async def authorize_store(ctx: Auth.types.AuthContext, value: dict):
    # The docs' version: crashes (500) when the namespace is empty or absent.
    namespace: tuple = value["namespace"]
    assert namespace[0] == ctx.user.identity, "Not authorized"
