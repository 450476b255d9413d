"""A one-node graph that needs no model.

The node echoes the last input message, bumps a counter, and records what it was told about
the caller, so a test can prove which identity reached the graph:

* ``seen_user``, ``seen_display_name``, ``seen_permissions``, ``seen_roles``: the
  ``x-graphguard-user-*`` headers graphguard forwards, surfaced in ``config["configurable"]``
  by ``http.configurable_headers`` in langgraph.json (the last two are JSON arrays, as sent);
* ``seen_auth_user_id``, ``seen_auth_permissions``: what LangGraph's own in-process custom auth
  puts into ``configurable`` (``langgraph_auth_user_id``, ``langgraph_auth_permissions``); empty
  behind a pure external gateway.

A last message ``sleep:N`` holds the run N seconds first (tests of streams held open).
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    messages: Annotated[list[dict[str, Any]], operator.add]
    counter: int
    seen_user: str | None
    seen_display_name: str | None
    seen_permissions: str | None
    seen_roles: str | None
    seen_auth_user_id: str | None
    seen_auth_permissions: list[str] | None


def _text(message: Any) -> str:
    if isinstance(message, dict):
        return str(message.get("content", ""))
    return str(getattr(message, "content", message))


def echo(state: State, config: RunnableConfig) -> dict[str, Any]:
    configurable = config.get("configurable") or {}
    messages = state.get("messages") or []
    last = _text(messages[-1]) if messages else ""
    # "sleep:N" holds the run for N seconds (tests of responses held open).
    if last.startswith("sleep:"):
        time.sleep(float(last.split(":", 1)[1]))
    permissions = configurable.get("langgraph_auth_permissions")
    return {
        "messages": [{"role": "assistant", "content": f"echo: {last}"}],
        "counter": (state.get("counter") or 0) + 1,
        "seen_user": configurable.get("x-graphguard-user-id"),
        "seen_display_name": configurable.get("x-graphguard-user-display-name"),
        "seen_permissions": configurable.get("x-graphguard-user-permissions"),
        "seen_roles": configurable.get("x-graphguard-user-roles"),
        "seen_auth_user_id": configurable.get("langgraph_auth_user_id"),
        "seen_auth_permissions": list(permissions) if permissions is not None else None,
    }


builder = StateGraph(State)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
