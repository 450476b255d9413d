"""H2 (resource): LangGraph's docs' resource-specific handlers. Mirrors policies/resource/handlers.yaml."""

import importlib.util
import sys
from pathlib import Path

from langgraph_sdk import Auth


def _demo_users():
    name = "graphguard_e2e_demo_users"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("demo_users.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


auth = Auth()
auth.authenticate(_demo_users().authenticate)


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
