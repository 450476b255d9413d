"""The tests every handler-set module runs (imported by test_<set>.py, which sets HANDLER_SET).

``scenario`` and ``gateway_only_scenario`` are parametrized per module by conftest's
``pytest_generate_tests`` from scenarios.py."""

from harness import assert_fidelity, assert_scenario


def test_reference(reference_target, scenario):
    """LangGraph's own in-process auth meets the expectations (the spec is right)."""
    assert_scenario(reference_target, scenario)


def test_gateway(gateway_target, scenario):
    """graphguard meets the same expectations (or its own, where it deliberately differs)."""
    assert_scenario(gateway_target, scenario)


def test_fidelity(reference_target, gateway_target, scenario):
    """Step by step, graphguard answers like LangGraph: statuses, details, visible resources."""
    assert_fidelity(reference_target, gateway_target, scenario)


def test_gateway_only(gateway_target, gateway_only_scenario):
    """Checks that only make sense for graphguard (nothing to compare against)."""
    assert_scenario(gateway_target, gateway_only_scenario)
