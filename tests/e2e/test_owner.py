"""Handler set H1 (owner): LangGraph's docs' single global owner handler.

graphguard with policies/owner in front of an unauthenticated agent server, against the real
server running app/auth_owner.py. Scenarios: scenarios.py (handler_set "owner").
"""

from scenario_tests import test_fidelity, test_gateway, test_gateway_only, test_reference  # noqa: F401

HANDLER_SET = "owner"
