"""Handler set H2 (resource): the docs' resource-specific handlers.

graphguard with policies/resource in front of an unauthenticated agent server, against the real
server running app/auth_resource.py. Scenarios: scenarios.py (handler_set "resource").
"""

from scenario_tests import test_fidelity, test_gateway, test_gateway_only, test_reference  # noqa: F401

HANDLER_SET = "resource"
