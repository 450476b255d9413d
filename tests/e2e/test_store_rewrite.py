"""Handler set H4 (store-rewrite): per-user store by namespace rewriting.

graphguard with policies/store-rewrite in front of an unauthenticated agent server, against the real
server running app/auth_store_rewrite.py. Scenarios: scenarios.py (handler_set "store_rewrite").
"""

from scenario_tests import test_fidelity, test_gateway, test_gateway_only, test_reference  # noqa: F401

HANDLER_SET = "store_rewrite"
