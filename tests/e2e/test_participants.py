"""Handler set H3 (participants): shared threads via $contains.

graphguard with policies/participants in front of an unauthenticated agent server, against the real
server running app/auth_participants.py. Scenarios: scenarios.py (handler_set "participants").
"""

from scenario_tests import test_fidelity, test_gateway, test_gateway_only, test_reference  # noqa: F401

HANDLER_SET = "participants"
