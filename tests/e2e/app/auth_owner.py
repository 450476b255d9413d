"""H1 (owner): LangGraph's docs' single global handler. Mirrors policies/owner/handlers.yaml."""

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
