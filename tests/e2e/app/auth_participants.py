"""H3 (participants): shared threads. Mirrors policies/participants/handlers.yaml.

Only thread handlers: assistants, crons and the store have no handler, so they are allowed
(LangGraph fails open when no handler matches).
"""

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


@auth.on.threads.create
async def on_thread_create(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.create.value):
    metadata = value.setdefault("metadata", {})
    metadata["participants"] = [ctx.user.identity, "shared"]


@auth.on.threads
async def on_threads(ctx: Auth.types.AuthContext, value: dict):
    return {"participants": {"$contains": ctx.user.identity}}
