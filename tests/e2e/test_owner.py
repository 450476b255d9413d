"""Handler set H1 (owner): LangGraph's docs' single global owner handler.

graphguard with policies/owner in front of an unauthenticated agent server, against the real
server running app/auth_owner.py. Scenarios: scenarios.py (handler_set "owner").
"""

import pytest

from harness import assert_fidelity, assert_scenario
from scenarios import gateway_only_for, scenarios_for

HANDLER_SET = "owner"
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


@pytest.mark.parametrize("scenario", GATEWAY_ONLY, ids=lambda s: s.name)
def test_gateway_only(gateway_target, scenario):
    """Checks that only make sense for graphguard (nothing to compare against)."""
    assert_scenario(gateway_target, scenario)
