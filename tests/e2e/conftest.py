"""Fixtures of the graphguard end-to-end suite.

Per test module (= per handler set, see ``HANDLER_SET`` in each ``test_<set>.py``):

* ``reference_target``: the real in-memory LangGraph agent server with LangGraph's own
  in-process custom auth (``app/langgraph.<set>.json``);
* ``gateway_target``: graphguard (``$GRAPHGUARD_BIN serve --policies policies/<set>``) in front
  of an unauthenticated agent server (``app/langgraph.json``). Skipped only when
  ``GRAPHGUARD_BIN`` is unset and ``target/debug/graphguard`` does not exist.

Each server runs in a fresh copy of ``app/`` in its own temporary directory (the in-memory
runtime persists ``.langgraph_api/`` in its working directory). Logs go to
``$E2E_LOG_DIR`` (default: a temporary directory printed in the header) and the tail of every
involved process log is attached to a failing test's report.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import HANDLER_SETS, POLICIES_DIR, Target  # noqa: E402

# The test process talks only to 127.0.0.1; never let a proxy or a key from the caller's
# environment interfere (the SDK would send LANGGRAPH_API_KEY & co. as x-api-key).
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
for _k in [k for k in os.environ if k.endswith("_API_KEY")]:
    del os.environ[_k]

_LOG_DIR_GIVEN = bool(os.environ.get("E2E_LOG_DIR"))
_LOG_DIR = Path(os.environ.get("E2E_LOG_DIR") or tempfile.mkdtemp(prefix="graphguard-e2e-logs-"))
_KEEP = os.environ.get("E2E_KEEP_WORKDIRS") == "1"


def pytest_report_header(config):
    binary, reason = harness.graphguard_bin()
    gw = f"graphguard: {binary}" if binary else f"graphguard: SKIPPED ({reason})"
    return [f"e2e logs: {_LOG_DIR}", gw]


def pytest_sessionfinish(session, exitstatus):
    # keep the logs of a failed run (their path is in the report header); drop those of a green one
    if exitstatus == 0 and not _LOG_DIR_GIVEN and not _KEEP:
        shutil.rmtree(_LOG_DIR, ignore_errors=True)


def pytest_generate_tests(metafunc):
    """Parametrize the shared scenario tests (scenario_tests.py) by the module's HANDLER_SET."""
    from scenarios import gateway_only_for, scenarios_for

    handler_set = getattr(metafunc.module, "HANDLER_SET", None)
    for name, source in (("scenario", scenarios_for), ("gateway_only_scenario", gateway_only_for)):
        if name in metafunc.fixturenames and handler_set is not None:
            metafunc.parametrize(name, source(handler_set), ids=lambda s: s.name)


@pytest.fixture(scope="module")
def handler_set(request) -> str:
    name = getattr(request.module, "HANDLER_SET", None)
    if name not in HANDLER_SETS:
        raise RuntimeError(f"{request.module.__name__} must define HANDLER_SET as one of {sorted(HANDLER_SETS)}")
    return name


@pytest.fixture(scope="module")
def reference_target(handler_set):
    _, config = HANDLER_SETS[handler_set]
    root = harness.workroot(f"gg-e2e-ref-{handler_set}-")
    srv = None
    try:
        srv, url = harness.start_langgraph(f"reference-{handler_set}", config, root, _LOG_DIR)
        target = Target(kind="reference", handler_set=handler_set, base_url=url, upstream_url=url, processes=[srv])
        yield target
        target.close()
    finally:
        if srv is not None:
            srv.stop()
        if not _KEEP:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway_target(handler_set):
    binary, reason = harness.graphguard_bin()
    if binary is None:
        pytest.skip(reason)
    if not binary.exists():
        pytest.fail(f"GRAPHGUARD_BIN={binary} does not exist")
    policy_dir, _ = HANDLER_SETS[handler_set]
    root = harness.workroot(f"gg-e2e-gw-{handler_set}-")
    upstream = gateway = None
    try:
        upstream, up_url = harness.start_langgraph(f"upstream-{handler_set}", "langgraph.json", root, _LOG_DIR)
        gateway, gw_url = harness.start_graphguard(
            f"graphguard-{handler_set}", binary, up_url, POLICIES_DIR / policy_dir, root, _LOG_DIR
        )
        target = Target(kind="gateway", handler_set=handler_set, base_url=gw_url, upstream_url=up_url, processes=[gateway, upstream])
        yield target
        target.close()
    finally:
        for p in (gateway, upstream):
            if p is not None:
                p.stop()
        if not _KEEP:
            shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for name in ("reference_target", "gateway_target"):
            target = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(target, Target):
                report.sections.append((f"{name} process logs (tail)", target.logs()))
