"""Deliberate difference: unknown filter operators.

LangGraph's in-memory matcher ignores an unknown operator, so ``{"owner": {"$ne": "x"}}`` matches
every resource (spec §4.1). graphguard refuses such a policy at load time (spec §4.4
recommendation): ``graphguard check`` fails and ``graphguard serve`` does not start.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

import harness

OPERATORS = ["$ne", "$in", "$gt", "$regex"]


@pytest.mark.parametrize("op", OPERATORS)
def test_reference_unknown_operator_matches_everything(op):
    """The real matcher: `{owner: {<op>: "alice"}}` matches alice's AND bob's metadata."""
    code = textwrap.dedent(
        f"""
        from langgraph_runtime_inmem.ops import _check_filter_match as match
        f = {{"owner": {{"{op}": "alice"}}}}
        assert match({{"owner": "alice"}}, f) is True
        assert match({{"owner": "bob"}}, f) is True
        assert match({{"owner": "bob"}}, {{"owner": "alice"}}) is False
        """
    )
    env = harness.offline_env(
        {"MIGRATIONS_PATH": "__inmem", "DATABASE_URI": ":memory:", "REDIS_URI": "fake", "LANGGRAPH_RUNTIME_EDITION": "inmem"}
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


def _binary():
    binary, reason = harness.graphguard_bin()
    if binary is None:
        pytest.skip(reason)
    if not binary.exists():
        pytest.fail(f"GRAPHGUARD_BIN={binary} does not exist")
    return binary


def _policy_dir(tmp_path, handlers_yaml: str):
    d = tmp_path / "policy"
    d.mkdir()
    shutil.copy(harness.POLICIES_DIR / "owner" / "authenticators.yaml", d / "authenticators.yaml")
    (d / "handlers.yaml").write_text(handlers_yaml)
    return d


@pytest.mark.parametrize("set_dir", sorted(v[0] for v in harness.HANDLER_SETS.values()))
def test_gateway_example_policies_load(set_dir):
    r = subprocess.run([str(_binary()), "check", str(harness.POLICIES_DIR / set_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"graphguard check policies/{set_dir} failed:\n{r.stdout}\n{r.stderr}"


@pytest.mark.parametrize("op", OPERATORS)
def test_gateway_unknown_operator_is_load_error(tmp_path, op):
    policy = _policy_dir(tmp_path, f'handlers:\n  "*":\n    filter: {{ owner: {{ "{op}": "zzz" }} }}\n')
    binary = _binary()
    r = subprocess.run([str(binary), "check", str(policy)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"`graphguard check` accepted an unknown operator {op}:\n{out}"
    assert op in out, f"the error should name the operator {op}:\n{out}"
    port = harness.free_port()
    try:
        r = subprocess.run(
            [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--upstream", "http://127.0.0.1:9", "--policies", str(policy)],
            capture_output=True,
            text=True,
            timeout=20,
            env=harness.offline_env(),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`graphguard serve` kept running with an unknown operator {op} in its policy")
    assert r.returncode != 0, f"`graphguard serve` exited 0 with an unknown operator {op}:\n{r.stdout}\n{r.stderr}"
