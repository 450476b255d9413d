"""Handler set H2 (resource): the docs' resource-specific handlers.

graphguard with policies/resource in front of an unauthenticated agent server, against the real
server running app/auth_resource.py. Scenarios: scenarios.py (handler_set "resource").
"""

import pytest

from harness import assert_fidelity, assert_scenario
from scenarios import gateway_only_for, scenarios_for

HANDLER_SET = "resource"
SCENARIOS = scenarios_for(HANDLER_SET)
GATEWAY_ONLY = gateway_only_for(HANDLER_SET)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_reference(reference_target, scenario):
    """LangGraph's own in-process auth meets the expectations (the spec is right)."""
    assert_scenario(reference_target, scenario)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_gateway(gateway_target, scenario):
    """graphguard meets the same expectations (or its own, where it deliberately differs)."""
    assert_scenario(gateway_target, scenario)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_fidelity(reference_target, gateway_target, scenario):
    """Step by step, graphguard answers like LangGraph: statuses, details, visible resources."""
    assert_fidelity(reference_target, gateway_target, scenario)
