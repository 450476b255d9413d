"""deploy/: the image and the Kubernetes manifests, checked against the binary.

Run by ``scripts/test-deploy`` (pinned venv ``.venv-deploy``, builds the binaries first):

* every overlay rendered (``deploy/kustomize/render.py``, and compared with ``kubectl kustomize``
  where kubectl exists) and validated, strictly, against the Kubernetes OpenAPI schemas of the
  oldest release the manifests support (1.30: native sidecars, the preStop ``sleep`` action)
  and of the current one;
* the policy ConfigMap and the keys Secret, laid out as the kubelet lays out their volumes,
  pass ``graphguard check``;
* ports, probe endpoints, env vars and the drain period in the manifests agree with
  ``graphguard serve --help`` of the image's binary (parsed, not assumed) and with each other;
  the agent server binds 127.0.0.1; no subPath; security contexts; the shutdown arithmetic;
* the Dockerfile: distroless, non-root, no shell, graphguard as entrypoint, and a binary whose
  shared libraries and glibc symbol versions the runtime base (Debian 12) provides;
* the image's binary, started with the manifest's args and env against a local stand-in agent
  server, serves /healthz, /readyz and /metrics and proxies; in a pod of the test's own making
  (network namespaces, veth), it is reachable from outside and the agent server is not; a
  kubelet-style ConfigMap update (timestamped directory, ``..data`` symlink swap) is hot-reloaded,
  a broken one refused, a rollback taken; SIGTERM drains within the grace period;
* the fleet overlay: native-sidecar plus its replicas, spread, store variables (from a Secret
  documented by an example, never rendered) and management setting; two of its pods on a real
  PostgreSQL (tests/e2e/services.py) report the store healthy in /readyz and converge on a change
  made through one replica's management API.

Binaries: ``GRAPHGUARD_BIN`` (default target/debug/graphguard) for ``check``;
``GRAPHGUARD_IMAGE_BIN`` (default target/image/graphguard, the stripped release binary that
scripts/test-deploy makes exactly as deploy/Dockerfile does) for everything that runs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
OVERLAYS = ["native-sidecar", "classic-sidecar", "fleet"]
FLEET = KUSTOMIZE / "overlays" / "fleet"
# The fleet's Secret is not part of its kustomization (applying a placeholder would overwrite the
# real one): this example documents its shape, and the tests resolve the pod's secretKeyRefs
# from it.
FLEET_SECRET_EXAMPLE = FLEET / "secret-stores.example.yaml"
# The oldest Kubernetes the manifests support (native sidecars are on by default from 1.29, the
# preStop sleep action from 1.30) and the current release.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
GG = "graphguard"
AGENT = "agent-server"
# Debian 12 (distroless cc-debian12): glibc 2.36; what distroless/cc ships besides glibc.
RUNTIME_GLIBC = (2, 36)
RUNTIME_LIBS = {
    "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libstdc++.so.6", "libgomp.so.1",
}
# Read by graphguard but not a clap flag: the log filter (tracing EnvFilter, src/cli/serve.rs).
NON_FLAG_ENV = {"GRAPHGUARD_LOG"}
# Variables of flags not yet in every graphguard the manifests may run: allowed only from an
# optional secretKeyRef (the pod starts with or without them) and ignored by a binary without
# the flag. Once `graphguard serve --help` lists one, it is checked like any other.
FORTHCOMING_ENV = {"GRAPHGUARD_LIMITS_STORE": "limits-store"}
DEMO_KEYS = {"alice": "alice-demo-key", "bob": "bob-demo-key"}

sys.path.insert(0, str(KUSTOMIZE))
sys.dont_write_bytecode = True  # no __pycache__ left in deploy/
import render  # noqa: E402  (deploy/kustomize/render.py)


def _bin(var: str, default: str) -> Path:
    p = Path(os.environ.get(var) or REPO / default)
    if not p.is_file():
        pytest.fail(f"{p} does not exist: run scripts/test-deploy (it builds it) or set {var}")
    return p


@pytest.fixture(scope="session")
def check_bin() -> Path:
    return _bin("GRAPHGUARD_BIN", "target/debug/graphguard")


@pytest.fixture(scope="session")
def image_bin() -> Path:
    return _bin("GRAPHGUARD_IMAGE_BIN", "target/image/graphguard")


# --- rendering -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {o: render.render(KUSTOMIZE / "overlays" / o) for o in OVERLAYS}


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def pod_spec(objs: list[dict]) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def container(spec: dict, name: str) -> dict:
    hits = [c for c in containers(spec) if c["name"] == name]
    assert len(hits) == 1, f"container {name}: {len(hits)} found"
    return hits[0]


def env_of(c: dict) -> dict[str, str]:
    """The literal env values; the only other source allowed is a Secret key (env_refs)."""
    out = {}
    for e in c.get("env") or []:
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            assert set(e.get("valueFrom") or {}) == {"secretKeyRef"}, (
                f"{c['name']}: env {e['name']} must be a literal value or a secretKeyRef")
    return out


def env_refs(c: dict) -> dict[str, dict]:
    """The env vars read from a Secret: name -> secretKeyRef."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c.get("env") or [] if "valueFrom" in e}


def fleet_secret_example() -> dict:
    (sec,) = [d for d in yaml.safe_load_all(FLEET_SECRET_EXAMPLE.read_text()) if d]
    return sec


def resolve_env(c: dict, secrets: list[dict]) -> dict[str, str]:
    """The container's env as the kubelet makes it from `secrets`: a missing Secret or key is
    an error (the pod would not start) unless the reference is optional (then: unset)."""
    env = env_of(c)
    for name, ref in env_refs(c).items():
        sec = [s for s in secrets if s["metadata"]["name"] == ref["name"]]
        payload = secret_payload(sec[0]) if sec else {}
        if ref["key"] in payload:
            env[name] = payload[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{name}: Secret {ref['name']} has no key {ref['key']}"
    return env


def port_named(c: dict, name: str) -> int:
    hits = [p["containerPort"] for p in c.get("ports") or [] if p.get("name") == name]
    assert len(hits) == 1, f"{c['name']}: no port named {name}"
    return hits[0]


def resolve_port(c: dict, port) -> int:
    return port if isinstance(port, int) else port_named(c, port)


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_agrees_with_kubectl_kustomize(overlay, rendered):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: the overlays are rendered by deploy/kustomize/render.py only")
    out = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert rendered[overlay] == theirs


def test_podmonitor_component_renders_and_agrees(tmp_path, rendered):
    # A throwaway overlay adding the optional component to the default one.
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(KUSTOMIZE / "overlays/native-sidecar", tmp_path)],
        "components": [os.path.relpath(KUSTOMIZE / "components/podmonitor", tmp_path)],
    }))
    objs = render.render(tmp_path)
    pm = one(objs, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    spec = pod_spec(objs)
    gg = container(spec, GG)
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert ep["path"] == "/metrics"
    port_named(gg, ep["port"])
    assert port_named(gg, ep["port"]) == port_named(gg, "admin")
    assert [o for o in objs if o["kind"] != "PodMonitor"] == rendered["native-sidecar"]
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert objs == [d for d in yaml.safe_load_all(out.stdout) if d]


# --- schema validation -----------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_validate_against_kubernetes_schemas(overlay, version, rendered):
    import kubernetes_validate

    objs = rendered[overlay]
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "NetworkPolicy", "ConfigMap",
                                        "Secret", "PodDisruptionBudget"}
    for o in objs:
        kubernetes_validate.validate(o, version, strict=True)


def test_the_validator_rejects_what_it_should(rendered):
    # The validation above is not vacuous: a misspelt field and a wrong type are refused.
    import kubernetes_validate

    dep = yaml.safe_load(yaml.safe_dump(one(rendered["native-sidecar"], "Deployment")))
    dep["spec"]["template"]["spec"]["initContainers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)
    dep = yaml.safe_load(yaml.safe_dump(one(rendered["native-sidecar"], "Deployment")))
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "fifty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)


# --- the binary's flags ----------------------------------------------------------------------

@dataclass
class Flag:
    name: str
    env: str | None
    default: str | None
    takes_value: bool


@pytest.fixture(scope="session")
def serve_flags(image_bin) -> dict[str, Flag]:
    """`graphguard serve --help`, parsed (with no GRAPHGUARD_* set, which --help would echo)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHGUARD_")}
    out = subprocess.run([str(image_bin), "serve", "--help"], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    flags: dict[str, Flag] = {}
    entries: list[list[str]] = []
    for line in out.stdout.splitlines():
        if re.match(r"^\s{2,}(-\w, )?--[\w-]+", line):
            entries.append([line])
        elif entries and line.startswith(" " * 8):
            entries[-1].append(line)
    for lines in entries:
        head = re.match(r"^\s+(?:-\w, )?--([\w-]+)(?: <(\w+)>)?", lines[0])
        text = " ".join(x.strip() for x in lines)
        env_m = re.search(r"\[env: (\w+)=[^\]]*\]", text)
        def_m = re.search(r"\[default: ([^\]]*)\]", text)
        flags[head.group(1)] = Flag(head.group(1), env_m and env_m.group(1), def_m and def_m.group(1),
                                    bool(head.group(2)))
    assert {"listen", "upstream", "policies", "admin-listen", "drain-secs"} <= flags.keys(), out.stdout
    return flags


def effective(c: dict, flags: dict[str, Flag], name: str) -> str | None:
    """The value a flag takes in the container: --flag in args, else its env var, else the default."""
    args = c.get("args") or []
    for i, a in enumerate(args):
        if a == f"--{name}":
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    env = env_of(c)
    f = flags[name]
    if f.env and f.env in env:
        return env[f.env]
    return f.default


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_graphguard_env_and_args_are_the_binarys(overlay, rendered, serve_flags):
    gg = container(pod_spec(rendered[overlay]), GG)
    args = gg.get("args") or []
    assert args[:1] == ["serve"], "the image's entrypoint is graphguard; args start with the subcommand"
    for a in args[1:]:
        assert a.startswith("--") and a[2:].split("=", 1)[0] in serve_flags, f"unknown argument {a}"
    by_env = {f.env: f for f in serve_flags.values() if f.env}
    sources = "".join(p.read_text() for p in sorted((REPO / "src").rglob("*.rs")))
    refs = env_refs(gg)
    names = [e["name"] for e in gg.get("env") or []]
    assert len(names) == len(set(names)), f"an env var set twice: {names}"
    for name in names:
        assert name.startswith("GRAPHGUARD_"), f"{name}: graphguard reads only GRAPHGUARD_* variables"
        if name in NON_FLAG_ENV:
            assert f'"{name}"' in sources, f"{name} is no longer read by graphguard (src/)"
            continue
        if name in FORTHCOMING_ENV and name not in by_env:
            # Not a flag of this binary (yet): harmless (clap ignores it), and only from an
            # optional Secret key, so that the pod starts whether or not the key exists.
            assert refs.get(name, {}).get("optional") is True, f"{name}: a forthcoming variable must be optional"
            continue
        assert name in by_env, f"{name} is not a variable of `graphguard serve` (see --help)"
    # A value from a Secret is a string flag's (a boolean or number would come from a literal).
    for name in refs:
        flag = by_env.get(name)
        assert flag is None or flag.takes_value, f"{name} is a boolean flag: set it literally"
    # Required flags (no default) are set.
    for f in serve_flags.values():
        if f.takes_value and f.default is None and f.name in ("upstream", "policies"):
            assert effective(gg, serve_flags, f.name), f"--{f.name} is required"
    # Boolean flags given as env must parse as booleans.
    for name, value in env_of(gg).items():
        flag = by_env.get(name)
        if flag and not flag.takes_value:
            assert value in ("true", "false"), f"{name}={value!r}"


def test_both_overlays_run_the_same_graphguard(rendered):
    a = dict(container(pod_spec(rendered["native-sidecar"]), GG))
    b = dict(container(pod_spec(rendered["classic-sidecar"]), GG))
    assert a.pop("restartPolicy") == "Always"
    assert "restartPolicy" not in b
    assert "lifecycle" not in a
    b.pop("lifecycle")
    assert a == b
    na = dict(container(pod_spec(rendered["native-sidecar"]), AGENT))
    nb = dict(container(pod_spec(rendered["classic-sidecar"]), AGENT))
    na.pop("lifecycle"), nb.pop("lifecycle")
    assert na == nb


def test_native_and_classic_topologies(rendered):
    native = pod_spec(rendered["native-sidecar"])
    assert [c["name"] for c in native["initContainers"]] == [GG]
    assert native["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in native["containers"]] == [AGENT]
    classic = pod_spec(rendered["classic-sidecar"])
    assert "initContainers" not in classic
    assert sorted(c["name"] for c in classic["containers"]) == sorted([GG, AGENT])


# --- the fleet overlay ------------------------------------------------------------------------

def test_fleet_is_native_sidecar_plus_replicas_stores_and_management(rendered):
    fleet, native = rendered["fleet"], rendered["native-sidecar"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, fleet)) == sorted(map(key, native))
    by = {key(o): o for o in native}
    for o in fleet:
        if o["kind"] not in ("Deployment", "ConfigMap"):
            assert o == by[key(o)], f"{key(o)} differs from native-sidecar's"
    # The Deployment: replicas, the spread, and graphguard's two store variables; nothing else.
    f_dep, n_dep = copy.deepcopy(one(fleet, "Deployment")), copy.deepcopy(one(native, "Deployment"))
    assert f_dep["spec"].pop("replicas") == 3
    n_dep["spec"].pop("replicas")
    f_spec, n_spec = f_dep["spec"]["template"]["spec"], n_dep["spec"]["template"]["spec"]
    f_spec.pop("topologySpreadConstraints"), n_spec.pop("topologySpreadConstraints")
    f_gg, n_gg = container(f_spec, GG), container(n_spec, GG)
    assert env_of(f_gg) == env_of(n_gg), "the fleet adds variables, it changes none"
    refs = env_refs(f_gg)
    assert refs == {
        "GRAPHGUARD_POLICY_STORE": {"name": "graphguard-stores", "key": "policy-store"},
        "GRAPHGUARD_LIMITS_STORE": {"name": "graphguard-stores", "key": "limits-store", "optional": True},
    }
    f_gg["env"] = [e for e in f_gg["env"] if e["name"] not in refs]
    assert f_dep == n_dep
    # No credential in the manifests themselves: the DSN and the Redis URL come from the Secret.
    text = yaml.safe_dump(fleet)
    assert "postgres://" not in text and "redis://" not in text
    # The ConfigMap: the base's settings plus the management API; the other files unchanged.
    f_cm, n_cm = one(fleet, "ConfigMap")["data"], one(native, "ConfigMap")["data"]
    assert {k: v for k, v in f_cm.items() if k != "settings.yaml"} == {k: v for k, v in n_cm.items() if k != "settings.yaml"}
    f_set = yaml.safe_load(f_cm["settings.yaml"])["settings"]
    n_set = yaml.safe_load(n_cm["settings.yaml"])["settings"]
    permission = f_set.pop("management")["permission"]
    assert f_set == n_set, "the fleet's settings are the base's plus management"
    # Someone holds the permission: the demo admin key (replace it with yours).
    keys = yaml.safe_load(secret_payload(one(fleet, "Secret", "graphguard-keys"))["api-keys.yaml"])
    assert any(permission in (k.get("permissions") or []) for k in keys), f"no API key holds {permission}"


def test_fleet_spread_and_disruption_budget(rendered):
    objs = rendered["fleet"]
    dep = one(objs, "Deployment")
    replicas = dep["spec"]["replicas"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert replicas == 3
    # Node drains and upgrades: one pod at a time, two of three always serving; a rollout
    # adds a pod before it removes one.
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    allowed = pdb["maxUnavailable"] if "maxUnavailable" in pdb else replicas - pdb["minAvailable"]
    assert allowed == 1 and replicas - allowed >= 2
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow", "an unready pod must not block a drain"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = {c["topologyKey"]: c for c in dep["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert spread.keys() == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    node, zone = spread["kubernetes.io/hostname"], spread["topology.kubernetes.io/zone"]
    assert node["maxSkew"] == 1 and node["whenUnsatisfiable"] == "DoNotSchedule"
    assert node["nodeTaintsPolicy"] == "Honor", "nodes the pod cannot run on must not count as empty domains"
    assert zone["whenUnsatisfiable"] == "ScheduleAnyway", "clusters without zones (or with one) still schedule"
    for c in spread.values():
        assert c["labelSelector"]["matchLabels"].items() <= labels.items()
        assert c["matchLabelKeys"] == ["pod-template-hash"], "each rollout's pods are spread on their own"
    # Readiness is graphguard's /readyz (the agent server's /ok fresh, not draining); a store
    # outage does not make a replica unready (it keeps enforcing its last snapshot).
    gg = container(pod_spec(objs), GG)
    assert gg["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_fleet_secret_example(version, rendered):
    import kubernetes_validate

    sec = fleet_secret_example()
    kubernetes_validate.validate(sec, version, strict=True)
    objs = rendered["fleet"]
    assert ("Secret", sec["metadata"]["name"]) not in {(o["kind"], o["metadata"]["name"]) for o in objs}, (
        "the example must not be applied with the overlay: it would overwrite the real Secret")
    payload = secret_payload(sec)
    refs = [r for c in containers(pod_spec(objs)) for r in env_refs(c).values() if r["name"] == sec["metadata"]["name"]]
    assert {r["key"] for r in refs} == set(payload), "the example has exactly the keys the pod reads"
    assert payload["policy-store"].startswith("postgres://")
    assert payload["limits-store"].startswith("redis://")
    for k, v in payload.items():
        assert "REPLACE-ME" in v, f"{k}: the example's values are placeholders"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_agree_with_the_binary(overlay, rendered, serve_flags):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    gg = container(spec, GG)
    listen_host, listen = host_port(effective(gg, serve_flags, "listen"))
    admin_addr = effective(gg, serve_flags, "admin-listen")
    assert admin_addr != "off", "the probes need the admin listener"
    admin_host, admin = host_port(admin_addr)
    assert port_named(gg, "http") == listen
    assert port_named(gg, "admin") == admin
    # The kubelet probes the pod's address: neither listener may be loopback-only.
    assert listen_host in ("0.0.0.0", "::"), listen_host
    assert admin_host in ("0.0.0.0", "::"), f"admin listener {admin_addr} is unreachable for the kubelet"
    probes = {k: gg[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = probes[kind]["httpGet"]
        assert get["path"] == path, kind
        assert resolve_port(gg, get["port"]) == admin, f"{kind} must probe the admin listener"
        assert get.get("scheme", "HTTP") == "HTTP"
    # The Service reaches graphguard's port and nothing else.
    svc = one(objs, "Service")
    assert [resolve_port(gg, p["targetPort"]) for p in svc["spec"]["ports"]] == [listen]
    # Before Kubernetes 1.32, EndpointSlices do not resolve a native sidecar's port names.
    assert all(isinstance(p["targetPort"], int) for p in svc["spec"]["ports"])
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    # Prometheus annotations point at the admin listener's /metrics.
    ann = one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == admin
    assert ann["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_graphguard(overlay, rendered, serve_flags):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    gg = container(spec, GG)
    _, listen = host_port(effective(gg, serve_flags, "listen"))
    _, admin = host_port(effective(gg, serve_flags, "admin-listen"))
    upstream = urllib.parse.urlsplit(effective(gg, serve_flags, "upstream"))
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    nps = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert nps
    open_ports, restricted_ports = set(), set()
    for np in nps:
        assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert np["spec"]["policyTypes"] == ["Ingress"]
        for rule in np["spec"]["ingress"]:
            ports = {resolve_port(gg, p["port"]) for p in rule.get("ports") or []}
            assert ports, f"{np['metadata']['name']}: a rule without ports admits every port"
            (restricted_ports if rule.get("from") else open_ports).update(ports)
            for peer in rule.get("from") or []:
                assert "ipBlock" not in peer
                assert peer.get("namespaceSelector", {}).get("matchLabels"), "an empty namespaceSelector is every namespace"
    assert open_ports == {listen}, "only graphguard's port is open to all"
    assert restricted_ports <= {admin}, "the admin port only to selected scrapers"
    assert upstream.port not in open_ports | restricted_ports, "the agent server's port is in no rule"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_server_listens_on_loopback_only(overlay, rendered, serve_flags):
    spec = pod_spec(rendered[overlay])
    gg = container(spec, GG)
    agent = container(spec, AGENT)
    upstream = urllib.parse.urlsplit(effective(gg, serve_flags, "upstream"))
    assert upstream.scheme == "http" and upstream.hostname == "127.0.0.1"
    cmd = agent["command"] + (agent.get("args") or [])
    assert cmd[:2] == ["uvicorn", "langgraph_api.server:app"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert int(cmd[cmd.index("--port") + 1]) == upstream.port
    env = env_of(agent)
    assert env["LANGGRAPH_SERVER_HOST"] == "127.0.0.1"
    assert int(env["PORT"]) == upstream.port
    assert not agent.get("ports"), "the agent server declares no port: nothing is to reach it"
    assert not spec.get("hostNetwork"), "hostNetwork would put the loopback on the node"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mounts_are_directories_and_match_the_flags(overlay, rendered, serve_flags):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    for c in containers(spec):
        for m in c.get("volumeMounts") or []:
            assert "subPath" not in m and "subPathExpr" not in m, f"{c['name']}: subPath never updates"
    gg = container(spec, GG)
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in gg["volumeMounts"]}
    policies = effective(gg, serve_flags, "policies")
    assert policies in mounts, "--policies must be the ConfigMap's mount point"
    pv = vols[mounts[policies]["name"]]
    cm = one(objs, "ConfigMap", pv["configMap"]["name"])
    assert "items" not in pv["configMap"], "every file of the ConfigMap is a policy file"
    for path, m in mounts.items():
        assert m.get("readOnly") is True
    # keys_file paths in the policies land on the Secret's mount.
    secret_mounts = {p: vols[m["name"]]["secret"]["secretName"] for p, m in mounts.items() if "secret" in vols[m["name"]]}
    for fname, text in cm["data"].items():
        for ref in re.findall(r"keys_file:\s*(\S+)", text):
            target = os.path.normpath(os.path.join(policies, ref))
            owner = [p for p in secret_mounts if target.startswith(p + "/")]
            assert owner, f"{fname}: keys_file {ref} -> {target} is on no Secret mount"
            sec = one(objs, "Secret", secret_mounts[owner[0]])
            key = os.path.relpath(target, owner[0])
            assert key in (sec.get("stringData") or {}) or key in (sec.get("data") or {}), f"{key} not in Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_contexts(overlay, rendered):
    spec = pod_spec(rendered[overlay])
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    uid = dockerfile_user()
    for c in containers(spec):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert not sc.get("privileged"), c["name"]
        assert sc.get("seccompProfile", psc["seccompProfile"])["type"] == "RuntimeDefault"
        assert sc.get("runAsNonRoot", psc["runAsNonRoot"]) is True
    gg = container(spec, GG)
    assert gg["securityContext"]["runAsUser"] == psc["runAsUser"] == uid


# Measured (deploy/README.md, "Resources"): RSS 69 MiB after 400 connections of load; each
# request body in flight costs up to ~2.3 times its size.
MEASURED_LOADED_RSS = 70 * 2**20
BODY_COST = 2.3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_and_disruption_budget(overlay, rendered, serve_flags):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}

    def mem(q: str) -> int:
        return int(q[:-2]) * units[q[-2:]]

    def cpu(q: str) -> float:
        return float(q[:-1]) / 1000 if q.endswith("m") else float(q)

    for c in containers(spec):
        r = c["resources"]
        assert mem(r["limits"]["memory"]) >= mem(r["requests"]["memory"]), c["name"]
        assert cpu(r["requests"]["cpu"]) > 0, c["name"]
    gg = container(spec, GG)
    res = gg["resources"]
    max_body = int(effective(gg, serve_flags, "max-body-bytes"))
    assert mem(res["requests"]["memory"]) >= MEASURED_LOADED_RSS
    # Room for the loaded steady state plus four maximum-size bodies in flight at once.
    assert mem(res["limits"]["memory"]) >= MEASURED_LOADED_RSS + 4 * BODY_COST * max_body, (
        f"memory limit {res['limits']['memory']} is too small for --max-body-bytes {max_body}")
    assert cpu(res["limits"]["cpu"]) >= cpu(res["requests"]["cpu"])
    dep = one(objs, "Deployment")
    pdb = one(objs, "PodDisruptionBudget")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) >= 1 or pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]
    assert dep["spec"]["replicas"] >= 2


def prestop_sleep(c: dict) -> int:
    return ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_budget(overlay, rendered, serve_flags):
    spec = pod_spec(rendered[overlay])
    gg = container(spec, GG)
    agent = container(spec, AGENT)
    drain = int(effective(gg, serve_flags, "drain-secs"))
    cmd = agent["command"]
    agent_drain = int(cmd[cmd.index("--timeout-graceful-shutdown") + 1])
    grace = spec["terminationGracePeriodSeconds"]
    margin = 5
    for c in (gg, agent):
        for hook in ((c.get("lifecycle") or {}).get("preStop") or {}):
            assert hook == "sleep", "no shell in the image: preStop uses the kubelet's sleep action"
    if gg.get("restartPolicy") == "Always":  # native sidecar (native-sidecar, fleet)
        # Main containers stop first: the agent server sleeps (endpoints update), drains; then
        # graphguard gets SIGTERM and drains.
        assert prestop_sleep(agent) >= 5
        assert prestop_sleep(gg) == 0
        assert grace >= prestop_sleep(agent) + agent_drain + drain + margin
    else:
        # All containers stop together: graphguard sleeps then drains; the agent server sleeps
        # for as long, so it serves graphguard's whole drain, then stops.
        assert prestop_sleep(gg) >= 5
        assert prestop_sleep(agent) >= prestop_sleep(gg) + drain
        assert grace >= prestop_sleep(agent) + agent_drain + margin
        assert grace >= prestop_sleep(gg) + drain + margin


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_and_config_references(overlay, rendered):
    objs = rendered[overlay]
    spec = pod_spec(objs)
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    gg_image = container(spec, GG)["image"]
    assert gg_image.rsplit(":", 1)[1] == version, f"{gg_image}: tag the image with the crate version {version}"
    agent_image = container(spec, AGENT)["image"]
    assert ":" in agent_image.rsplit("/", 1)[-1], "set the agent server's image and tag in the overlay"
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for v in spec["volumes"]:
        if "configMap" in v:
            assert ("ConfigMap", v["configMap"]["name"]) in names
        if "secret" in v:
            assert ("Secret", v["secret"]["secretName"]) in names
    for c in containers(spec):
        for name, ref in env_refs(c).items():
            if ("Secret", ref["name"]) in names:
                continue
            # A Secret the overlay leaves to the operator: its example documents every key.
            example = fleet_secret_example()
            assert overlay == "fleet" and example["metadata"]["name"] == ref["name"], (
                f"{c['name']}: {name} reads Secret {ref['name']}, which is neither rendered nor documented")
            assert ref["key"] in secret_payload(example), f"{name}: the example Secret has no key {ref['key']}"


# --- the Dockerfile and the binary it ships --------------------------------------------------

def dockerfile_stages() -> list[dict]:
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    args, stages = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        ins, _, rest = line.partition(" ")
        ins = ins.upper()
        if ins == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
        elif ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            image = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), ""), m.group(1))
            stages.append({"from": image, "name": m.group(2), "ins": []})
        elif stages:
            stages[-1]["ins"].append((ins, rest))
    return stages


def dockerfile_user() -> int:
    final = dockerfile_stages()[-1]
    users = [r for i, r in final["ins"] if i == "USER"]
    return int(users[-1].split(":")[0])


def test_dockerfile_runtime_is_distroless_nonroot_without_shell():
    stages = dockerfile_stages()
    build, runtimes = stages[0], stages[1:]
    assert {s["name"] for s in runtimes} == {"prebuilt", "runtime"}
    assert runtimes[-1]["name"] == "runtime", "the default target builds from source"
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.split()[1]
    assert build["from"].endswith(f":{rustc}-bookworm"), f"builder {build['from']} != host toolchain {rustc} (Debian 12)"
    runs = " ".join(r for i, r in build["ins"] if i == "RUN")
    assert "cargo build --locked --release --bin graphguard" in runs
    assert "objcopy --strip-debug target/release/graphguard" in runs
    script = (REPO / "scripts/test-deploy").read_text()
    assert "cargo build --locked --release --bin graphguard" in script
    assert "objcopy --strip-debug target/release/graphguard target/image/graphguard" in script
    for s in runtimes:
        assert s["from"] == "gcr.io/distroless/cc-debian12:nonroot", s["from"]
        ins = dict((i, r) for i, r in s["ins"])
        assert "RUN" not in ins, "no shell in the runtime image: nothing can RUN"
        assert json.loads(ins["ENTRYPOINT"]) == ["/usr/local/bin/graphguard"]
        assert json.loads(ins["CMD"]) == ["serve"]
        assert ins["USER"] == "65532:65532"
        assert "HEALTHCHECK" not in ins
    # What the stages COPY from the context exists and is let through by the ignore file.
    ignore = [l.strip() for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    assert ignore[0] == "*"
    allowed = [l[1:].rstrip("/") for l in ignore[1:] if l.startswith("!")]
    for s in stages:
        for i, r in s["ins"]:
            if i == "COPY" and "--from=" not in r:
                srcs = [w for w in r.split() if not w.startswith("--")][:-1]
                for src in srcs:
                    assert src.rstrip("/") in allowed, f"COPY {src} is excluded by Dockerfile.dockerignore"
                    if src != "target/image/graphguard":
                        assert (REPO / src).exists(), src


def test_image_binary_runs_on_the_runtime_base(image_bin):
    dyn = subprocess.run(["readelf", "-dW", str(image_bin)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
    assert needed <= RUNTIME_LIBS, f"not in distroless/cc: {needed - RUNTIME_LIBS}"
    syms = subprocess.run(["readelf", "-VW", str(image_bin)], capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", syms)}
    assert versions and max(versions) <= RUNTIME_GLIBC, f"needs glibc {max(versions)} > Debian 12's {RUNTIME_GLIBC}"
    sections = subprocess.run(["readelf", "-SW", str(image_bin)], capture_output=True, text=True, check=True).stdout
    assert ".debug_info" not in sections, "the image ships the binary with its debug info stripped"


# --- kubelet volume layout -------------------------------------------------------------------

class KubeletVolume:
    """A ConfigMap or Secret volume as the kubelet's AtomicWriter writes it: the payload in a
    timestamped directory, `..data` a symlink to it, each key a symlink through `..data`;
    an update writes a new timestamped directory and renames a `..data_tmp` symlink over
    `..data` (one atomic step), then adds and removes the key symlinks and the old directory."""

    def __init__(self, path: Path, mode: int):
        self.path = path
        self.mode = mode
        path.mkdir(parents=True, exist_ok=True)

    def write(self, payload: dict[str, str]) -> None:
        old = os.readlink(self.path / "..data") if (self.path / "..data").is_symlink() else None
        stamp = datetime.now(timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.")
        ts_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=self.path))
        ts_dir.chmod(0o755)
        for key, text in payload.items():
            f = ts_dir / key
            f.write_bytes(text.encode())
            f.chmod(self.mode)
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(ts_dir.name)
        os.rename(tmp, self.path / "..data")
        for key in payload:
            link = self.path / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
        for entry in self.path.iterdir():
            if not entry.name.startswith("..") and entry.name not in payload:
                entry.unlink()
        if old:
            shutil.rmtree(self.path / old)


def secret_payload(sec: dict) -> dict[str, str]:
    import base64

    out = {k: base64.b64decode(v).decode() for k, v in (sec.get("data") or {}).items()}
    out.update(sec.get("stringData") or {})
    return out


@dataclass
class PodFiles:
    root: Path
    volumes: dict[str, KubeletVolume] = field(default_factory=dict)

    def host_path(self, mount_path: str) -> Path:
        return self.root / mount_path.lstrip("/")


def lay_out_volumes(objs: list[dict], root: Path) -> PodFiles:
    """graphguard's ConfigMap and Secret volumes, under `root` at their mount paths."""
    spec = pod_spec(objs)
    gg = container(spec, GG)
    vols = {v["name"]: v for v in spec["volumes"]}
    files = PodFiles(root)
    for m in gg["volumeMounts"]:
        v = vols[m["name"]]
        if "configMap" in v:
            payload = one(objs, "ConfigMap", v["configMap"]["name"])["data"]
            mode = v["configMap"].get("defaultMode", 0o644)
        elif "secret" in v:
            payload = secret_payload(one(objs, "Secret", v["secret"]["secretName"]))
            mode = v["secret"].get("defaultMode", 0o644)
        else:
            continue
        vol = KubeletVolume(files.host_path(m["mountPath"]), mode)
        vol.write(payload)
        files.volumes[m["mountPath"]] = vol
    return files


def graphguard_check(check_bin: Path, directory: Path) -> tuple[int, str]:
    out = subprocess.run([str(check_bin), "check", str(directory)], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def check_version(check_bin: Path, directory: Path) -> str:
    code, out = graphguard_check(check_bin, directory)
    assert code == 0, out
    return re.search(r"ok: policy version (\w+)", out).group(1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_configmap_passes_graphguard_check(overlay, rendered, serve_flags, check_bin, tmp_path):
    objs = rendered[overlay]
    files = lay_out_volumes(objs, tmp_path)
    policies = files.host_path(effective(container(pod_spec(objs), GG), serve_flags, "policies"))
    assert (policies / "..data").is_symlink()
    code, out = graphguard_check(check_bin, policies)
    assert code == 0, out
    assert "ok: policy version" in out
    assert "warning" not in out, out
    # and a broken ConfigMap does not pass (the check is not vacuous)
    vol = next(v for p, v in files.volumes.items() if files.host_path(p) == policies)
    vol.write({**one(objs, "ConfigMap")["data"], "handlers.yaml": "handlers:\n  threads:\n    filtr: {owner: x}\n"})
    code, out = graphguard_check(check_bin, policies)
    assert code != 0 and "filtr" in out, out


def test_render_cli_writes_checkable_volumes(check_bin, serve_flags, rendered, tmp_path):
    # The runbook's pre-apply check: render.py --volumes, then graphguard check.
    out = subprocess.run([sys.executable, str(KUSTOMIZE / "render.py"), "--volumes", str(tmp_path),
                          str(KUSTOMIZE / "overlays/native-sidecar")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    policies = effective(container(pod_spec(rendered["native-sidecar"]), GG), serve_flags, "policies")
    code, text = graphguard_check(check_bin, tmp_path / policies.lstrip("/"))
    assert code == 0, text
    out = subprocess.run([sys.executable, str(KUSTOMIZE / "render.py"), str(KUSTOMIZE / "overlays/native-sidecar")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [d for d in yaml.safe_load_all(out.stdout) if d] == rendered["native-sidecar"]


# --- running the image's binary: the pod, simulated ------------------------------------------

STUB = textwrap.dedent('''
    """A stand-in agent server: /ok, thread create/get/search. A POST body containing "slow"
    creates the marker file (argv[3]) and is answered 3 s later (for the drain test)."""
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def thread(tid, md):
        return {"thread_id": tid, "created_at": "2025-01-01T00:00:00+00:00",
                "updated_at": "2025-01-01T00:00:00+00:00", "metadata": md, "status": "idle",
                "config": {}, "values": {}, "interrupts": {}}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a):
            pass
        def send(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            if self.path == "/ok":
                return self.send(200, {"ok": True})
            if self.path.startswith("/threads/"):
                return self.send(200, thread(self.path.split("/")[2], {"owner": "alice"}))
            self.send(404, {"detail": "Not Found"})
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if b"slow" in body:
                open(sys.argv[3], "w").close()
                time.sleep(3)
            if self.path == "/threads/search":
                return self.send(200, [])
            if self.path == "/threads":
                md = json.loads(body or b"{}").get("metadata") or {}
                return self.send(200, thread("00000000-0000-4000-8000-000000000001", md))
            self.send(404, {"detail": "Not Found"})

    host, port = sys.argv[1], int(sys.argv[2])
    ThreadingHTTPServer((host, port), H).serve_forever()
''')

CLIENT = textwrap.dedent('''
    import http.client, json, sys
    method, url, headers, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    u = __import__("urllib.parse").parse.urlsplit(url)
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
        c.request(method, u.path or "/", body=body.encode() if body else None, headers=headers)
        r = c.getresponse()
        print(json.dumps({"status": r.status, "headers": dict(r.getheaders()), "body": r.read().decode()}))
    except OSError as e:
        print(json.dumps({"error": type(e).__name__, "detail": str(e)}))
''')

POD_IP, NODE_IP = "10.244.213.2", "10.244.213.1"


class Netns:
    """A pod and a node, each a network namespace of the test's own, joined by a veth pair."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.pod, self.node = f"ggtest-pod-{tag}", f"ggtest-node-{tag}"
        self.made: list[str] = []

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)

    def create(self) -> None:
        for ns in (self.pod, self.node):
            self._ip("netns", "add", ns)
            self.made.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")
        tag = self.pod.rsplit("-", 1)[1]
        vn, vp = f"ggn{tag}", f"ggp{tag}"
        self._ip("-n", self.node, "link", "add", vn, "type", "veth", "peer", "name", vp, "netns", self.pod)
        self._ip("-n", self.node, "addr", "add", f"{NODE_IP}/24", "dev", vn)
        self._ip("-n", self.pod, "addr", "add", f"{POD_IP}/24", "dev", vp)
        self._ip("-n", self.node, "link", "set", vn, "up")
        self._ip("-n", self.pod, "link", "set", vp, "up")

    def destroy(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made.clear()

    def prefix(self, ns: str) -> list[str]:
        # nsenter execs the command itself: the pid we signal is the program's.
        return ["nsenter", f"--net=/var/run/netns/{ns}", "--"]


@pytest.fixture(scope="session")
def netns():
    """The pod's network namespaces, or None (and the reason) where they cannot be made.
    DEPLOY_TEST_NO_NETNS=1 runs the loopback fallback on purpose."""
    if os.environ.get("DEPLOY_TEST_NO_NETNS") == "1":
        yield None, "DEPLOY_TEST_NO_NETNS=1"
        return
    if not (shutil.which("ip") and shutil.which("nsenter")):
        yield None, "iproute2 (ip) or nsenter is not installed"
        return
    n = Netns()
    try:
        n.create()
    except (subprocess.CalledProcessError, OSError) as e:
        n.destroy()
        detail = getattr(e, "stderr", "") or str(e)
        yield None, f"cannot create network namespaces here (needs root or CAP_SYS_ADMIN): {detail.strip()}"
        return
    try:
        yield n, ""
    finally:
        n.destroy()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod:
    """graphguard (the image's binary, the manifest's args and env) and a stand-in agent server,
    in the pod's network namespace with the manifest's addresses, or, without namespaces, on
    this machine's loopback with free ports in place of the manifest's."""

    def __init__(self, objs, serve_flags, image_bin: Path, root: Path, ns: Netns | None,
                 secrets: list[dict] | None = None):
        self.objs, self.flags, self.bin, self.root, self.ns = objs, serve_flags, image_bin, root, ns
        root.mkdir(parents=True, exist_ok=True)
        spec = pod_spec(objs)
        self.gg = container(spec, GG)
        self.files = lay_out_volumes(objs, root / "fs")
        listen = effective(self.gg, serve_flags, "listen")
        admin = effective(self.gg, serve_flags, "admin-listen")
        upstream = effective(self.gg, serve_flags, "upstream")
        self.policies_mount = effective(self.gg, serve_flags, "policies")
        up = urllib.parse.urlsplit(upstream)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        # Literal values, and those from Secrets: the rendered ones, then `secrets` (those the
        # overlay leaves to the operator).
        self.env.update(resolve_env(self.gg, [o for o in objs if o["kind"] == "Secret"] + (secrets or [])))
        pol_env = serve_flags["policies"].env
        self.env[pol_env] = str(self.files.host_path(self.policies_mount))
        if ns:
            self.upstream_addr = (up.hostname, up.port)
            self.http = f"http://{POD_IP}:{host_port(listen)[1]}"
            self.admin = f"http://{POD_IP}:{host_port(admin)[1]}"
            self.agent = f"http://{POD_IP}:{up.port}"
        else:
            lp, ap, upp = free_port(), free_port(), free_port()
            self.env[serve_flags["listen"].env] = f"127.0.0.1:{lp}"
            self.env[serve_flags["admin-listen"].env] = f"127.0.0.1:{ap}"
            self.env[serve_flags["upstream"].env] = f"http://127.0.0.1:{upp}"
            self.upstream_addr = ("127.0.0.1", upp)
            self.http, self.admin, self.agent = (f"http://127.0.0.1:{lp}", f"http://127.0.0.1:{ap}",
                                                 f"http://127.0.0.1:{upp}")
        (root / "stub.py").write_text(STUB)
        (root / "client.py").write_text(CLIENT)
        self.procs: list[subprocess.Popen] = []
        self.gg_proc: subprocess.Popen | None = None
        self.gg_log = root / "graphguard.log"

    def _in_pod(self) -> list[str]:
        return self.ns.prefix(self.ns.pod) if self.ns else []

    def start(self) -> None:
        self.slow_marker = self.root / "slow.started"
        stub = subprocess.Popen(self._in_pod() + [sys.executable, str(self.root / "stub.py"),
                                                  self.upstream_addr[0], str(self.upstream_addr[1]),
                                                  str(self.slow_marker)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(stub)
        # The container's command: the image's ENTRYPOINT (graphguard, here the binary the image
        # would contain), then the manifest's args; no command override in the manifest.
        assert "command" not in self.gg
        entrypoint = json.loads(dict(dockerfile_stages()[-1]["ins"])["ENTRYPOINT"])
        assert entrypoint == ["/usr/local/bin/graphguard"]
        argv = [str(self.bin)] + (self.gg.get("args") or [])
        self.gg_proc = subprocess.Popen(self._in_pod() + argv, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=self.gg_log.open("wb"))
        self.procs.append(self.gg_proc)

    def request(self, method: str, url: str, headers: dict | None = None, body: str = "") -> dict:
        cmd = [sys.executable, str(self.root / "client.py"), method, url, json.dumps(headers or {}), body]
        if self.ns:
            cmd = self.ns.prefix(self.ns.node) + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        if "body" in r:
            try:
                r["json"] = json.loads(r["body"])
            except ValueError:
                pass
        return r

    def wait_for(self, url: str, status: int = 200, within: float = 30.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            r = self.request("GET", url)
            if r.get("status") == status:
                return r
            if self.gg_proc and self.gg_proc.poll() is not None:
                pytest.fail(f"graphguard exited with {self.gg_proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{url}: {r} after {within}s\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.gg_log.read_text(errors="replace")[-4000:] if self.gg_log.exists() else ""

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture
def pod(rendered, serve_flags, image_bin, netns, tmp_path):
    ns, _ = netns
    p = Pod(rendered["native-sidecar"], serve_flags, image_bin, tmp_path, ns)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def bearer(user: str) -> dict:
    return {"authorization": f"Bearer {DEMO_KEYS[user]}", "content-type": "application/json"}


def metric_versions(text: str) -> set[str]:
    return set(re.findall(r'^graphguard_policy_version\{version="(\w+)"\}\s+1(?:\.0)?\s*$', text, re.M))


def test_image_binary_serves_the_probes_with_the_manifests_config(pod, check_bin):
    gg = pod.gg
    # Within the startup probe's budget, the probes' own paths answer on the probes' port.
    budget = gg["startupProbe"]["periodSeconds"] * gg["startupProbe"]["failureThreshold"]
    pod.wait_for(pod.admin + gg["startupProbe"]["httpGet"]["path"], 200, within=budget)
    assert pod.request("GET", pod.admin + gg["livenessProbe"]["httpGet"]["path"])["json"] == {"status": "ok"}
    ready = pod.wait_for(pod.admin + gg["readinessProbe"]["httpGet"]["path"], 200, within=15)["json"]
    assert ready["ready"] is True and ready["upstream"]["ok"] is True and ready["draining"] is False
    version = check_version(check_bin, pod.files.host_path(pod.policies_mount))
    assert ready["policy"]["version"] == version
    metrics = pod.request("GET", pod.admin + "/metrics")
    assert metrics["status"] == 200
    assert metric_versions(metrics["body"]) == {version}
    # Through the gateway: the Secret's keys authenticate, the ConfigMap's handlers stamp.
    r = pod.request("POST", pod.http + "/threads", bearer("alice"), '{"metadata": {}}')
    assert r["status"] == 200, r
    assert r["json"]["metadata"]["owner"] == "alice"
    assert r["headers"].get("x-graphguard-policy-version") == version
    assert pod.request("POST", pod.http + "/threads/search", {"content-type": "application/json"}, "{}")["status"] == 401


def test_pod_topology_in_a_network_namespace(pod, netns):
    ns, why = netns
    if not ns:
        pytest.skip(f"pod topology not simulated: {why}")
    pod.wait_for(pod.admin + "/readyz", 200, within=30)
    # From the node (another namespace, over the veth): graphguard answers on the pod address...
    r = pod.request("POST", pod.http + "/threads/search", bearer("bob"), '{"limit": 10}')
    assert r["status"] == 200 and r["json"] == [], r
    assert pod.request("GET", pod.http + "/ok")["status"] == 200
    # ...the agent server does not: it listens on the pod's loopback only.
    r = pod.request("GET", pod.agent + "/ok")
    assert r.get("error") == "ConnectionRefusedError", r
    # The admin listener answers the node (the kubelet's probes); other pods are kept out by the
    # NetworkPolicies (checked above), which always admit the node.
    assert pod.request("GET", pod.admin + "/healthz")["status"] == 200
    # Inside the pod the agent server is there (graphguard's upstream).
    inside = subprocess.run(pod.ns.prefix(pod.ns.pod) + [sys.executable, str(pod.root / "client.py"), "GET",
                            f"http://{pod.upstream_addr[0]}:{pod.upstream_addr[1]}/ok", "{}", ""],
                            capture_output=True, text=True, timeout=30)
    assert json.loads(inside.stdout)["status"] == 200


def test_configmap_update_is_hot_reloaded_and_rolled_back(pod, check_bin, rendered):
    pod.wait_for(pod.admin + "/readyz", 200, within=30)
    original = one(rendered["native-sidecar"], "ConfigMap")["data"]
    vol = pod.files.volumes[pod.policies_mount]
    policies = pod.files.host_path(pod.policies_mount)
    v1 = pod.request("GET", pod.admin + "/readyz")["json"]["policy"]["version"]
    assert pod.request("POST", pod.http + "/threads", bearer("alice"), "{}")["status"] == 200

    def wait_version(v: str, within: float = 15.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            ready = pod.request("GET", pod.admin + "/readyz")["json"]
            if ready["policy"]["version"] == v:
                return ready
            if time.monotonic() > deadline:
                pytest.fail(f"policy version {ready['policy']} is not {v}\n{pod.log()}")
            time.sleep(0.2)

    # 1. kubectl apply of an edited ConfigMap: the kubelet swaps ..data; the new policy serves.
    edited = dict(original)
    edited["handlers.yaml"] = original["handlers.yaml"] + '  threads:create:\n    deny: "Thread creation is frozen."\n'
    vol.write(edited)
    v2 = check_version(check_bin, policies)
    assert v2 != v1
    wait_version(v2)
    assert metric_versions(pod.request("GET", pod.admin + "/metrics")["body"]) == {v2}
    r = pod.request("POST", pod.http + "/threads", bearer("alice"), "{}")
    assert r["status"] == 403 and "frozen" in r["body"], r
    assert r["headers"].get("x-graphguard-policy-version") == v2

    # 2. A broken edit is refused: v2 keeps serving, /readyz says why.
    vol.write({**edited, "handlers.yaml": "handlers:\n  threads:\n    filtr: {owner: x}\n"})
    deadline = time.monotonic() + 15
    while True:
        ready = pod.request("GET", pod.admin + "/readyz")["json"]
        if ready["policy"]["last_reload_error"]:
            break
        assert time.monotonic() < deadline, f"the broken policy was not reported\n{pod.log()}"
        time.sleep(0.2)
    assert ready["policy"]["version"] == v2 and ready["ready"] is True
    assert "filtr" in ready["policy"]["last_reload_error"]
    errors = re.search(r'^graphguard_policy_reloads_total\{reason="error"\}\s+(\d+)',
                       pod.request("GET", pod.admin + "/metrics")["body"], re.M)
    assert errors and int(errors.group(1)) >= 1

    # 3. Roll back: the original ConfigMap again; the original version serves again.
    vol.write(dict(original))
    ready = wait_version(v1)
    assert ready["policy"]["last_reload_error"] is None
    assert pod.request("POST", pod.http + "/threads", bearer("alice"), "{}")["status"] == 200
    assert sorted(p.name for p in policies.iterdir() if not p.name.startswith("..")) == sorted(original)


def test_sigterm_drains_in_flight_requests_within_the_grace_period(pod, rendered, serve_flags):
    pod.wait_for(pod.admin + "/readyz", 200, within=30)
    spec = pod_spec(rendered["native-sidecar"])
    drain = int(effective(pod.gg, serve_flags, "drain-secs"))
    result: dict = {}

    def slow():
        result["r"] = pod.request("POST", pod.http + "/threads/search", bearer("alice"), '{"metadata": {"q": "slow"}}')

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 15
    while not pod.slow_marker.exists():  # in flight: the stand-in has it and answers in 3 s
        assert time.monotonic() < deadline and t.is_alive(), f"the slow request never arrived: {result}"
        time.sleep(0.05)
    started = time.monotonic()
    pod.gg_proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    r = pod.request("GET", pod.admin + "/readyz")
    assert r["status"] == 503 and r["json"]["draining"] is True, r
    assert pod.request("GET", pod.http + "/ok").get("error") == "ConnectionRefusedError"
    t.join(timeout=30)
    assert result["r"]["status"] == 200, result
    code = pod.gg_proc.wait(timeout=drain + 5)
    elapsed = time.monotonic() - started
    assert code == 0, pod.log()
    assert elapsed < drain <= spec["terminationGracePeriodSeconds"]


# --- the fleet overlay's pods on a real PostgreSQL -------------------------------------------

@pytest.fixture(scope="module")
def fleet_stores(tmp_path_factory):
    """A real PostgreSQL (and redis-server, where installed) as the fleet's Secret would name
    them, run as the e2e fleet tests run them (tests/e2e/services.py: Debian's packages, as the
    `postgres` user when the tests run as root, in a directory of its own under /tmp)."""
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    import services  # noqa: E402  (tests/e2e/services.py)

    logs = tmp_path_factory.mktemp("fleet-stores")
    try:
        pg = services.Postgres(logs / "postgres.log")
    except KeyError:
        pytest.skip("running as root without a `postgres` user to run PostgreSQL as (apt-get install postgresql)")
    except (RuntimeError, OSError) as e:
        pytest.skip(f"PostgreSQL cannot run here: {e}")
    redis = None
    try:
        # The port is taken afresh right before the start (initdb took seconds, in which another
        # process on this machine may have bound the one chosen then), and retried on a clash.
        for attempt in range(3):
            pg.port = services.free_port()
            try:
                pg.start()
                break
            except RuntimeError:
                pg.stop()
                if attempt == 2:
                    raise
        payload = {"policy-store": pg.dsn, "password": services.PG_PASSWORD}
        if shutil.which("redis-server"):
            redis = services.Redis(logs, logs / "redis.log")
            redis.start()
            payload["limits-store"] = redis.url
        yield payload
    finally:
        if redis:
            redis.stop()
        pg.remove()


def test_fleet_pods_share_the_policy_store(rendered, serve_flags, image_bin, fleet_stores, tmp_path):
    """Two pods of the fleet overlay (its env and Secret references, its ConfigMap with the
    management API on) on one real PostgreSQL: /readyz reports the store healthy, a change
    through one replica's management API reaches the other within seconds, and both keep
    serving. On loopback (the store runs on this machine), whatever the namespaces allow."""
    objs = rendered["fleet"]
    secret = fleet_secret_example()
    # The operator's Secret: the example's keys with real values; without a redis-server, the
    # optional limits-store key is left out, as a Secret without it would be.
    secret["stringData"] = {k: fleet_stores[k] for k in secret_payload(secret) if k in fleet_stores}
    pods = [Pod(objs, serve_flags, image_bin, tmp_path / f"pod-{i}", None, [secret]) for i in range(2)]
    try:
        for p in pods:
            assert p.env["GRAPHGUARD_POLICY_STORE"] == fleet_stores["policy-store"]
            assert p.env.get("GRAPHGUARD_LIMITS_STORE") == fleet_stores.get("limits-store")
            p.start()
        gg = pods[0].gg
        budget = gg["startupProbe"]["periodSeconds"] * gg["startupProbe"]["failureThreshold"]
        ready = [p.wait_for(p.admin + gg["readinessProbe"]["httpGet"]["path"], 200, within=budget)["json"]
                 for p in pods]
        for r in ready:
            assert r["ready"] is True and r["upstream"]["ok"] is True, r
            assert r["store"]["healthy"] is True and r["store"]["error"] is None, r
            assert "postgres" in r["store"]["backend"]
            assert fleet_stores["password"] not in json.dumps(r), "the store's password in /readyz"
        assert ready[0]["policy"]["version"] == ready[1]["policy"]["version"]
        assert ready[0]["store"]["revision"] == ready[1]["store"]["revision"]
        before = ready[0]["store"]["revision"]

        # The management API (settings.management) on the gateway's listener: the demo admin
        # key holds the permission, alice does not, nobody anonymous.
        api = "/api/v1/platform/orgs/current/access-policies"
        admin = {"x-api-key": "admin-demo-key", "content-type": "application/json"}
        assert pods[0].request("GET", pods[0].http + api)["status"] == 401
        assert pods[0].request("GET", pods[0].http + api, bearer("alice"))["status"] == 403
        policy = {"name": "fleet-deploy-test", "effect": "deny", "condition_groups": [
            {"permission": "threads:read", "resource_type": "thread", "conditions": [
                {"attribute_name": "resource_tag_key", "attribute_key": "Contains-PII",
                 "operator": "equals", "attribute_value": "true"}]}]}
        r = pods[0].request("POST", pods[0].http + api, admin, json.dumps(policy))
        assert r["status"] == 200 and r["json"]["id"], r

        # Replica 1 follows the store (LISTEN/NOTIFY; a 5 s poll as the safety net).
        deadline = time.monotonic() + 10
        while True:
            states = [p.request("GET", p.admin + "/readyz")["json"] for p in pods]
            revs = {s["store"]["revision"] for s in states}
            versions = {s["policy"]["version"] for s in states}
            if len(revs) == 1 and revs != {before} and len(versions) == 1:
                break
            assert time.monotonic() < deadline, f"the replicas did not converge: {states}\n{pods[1].log()}"
            time.sleep(0.2)
        assert versions != {ready[0]["policy"]["version"]}, "a store change is a new policy version"
        listed = pods[1].request("GET", pods[1].http + api, admin)
        assert listed["status"] == 200
        assert "fleet-deploy-test" in [p["name"] for p in listed["json"]["access_policies"]]
        # Both still serve the agent server as before (the policy is attached to no role).
        for p in pods:
            r = p.request("POST", p.http + "/threads", bearer("alice"), '{"metadata": {}}')
            assert r["status"] == 200 and r["json"]["metadata"]["owner"] == "alice", r
            assert fleet_stores["password"] not in p.gg_log.read_text(errors="replace"), "the password in the log"
    finally:
        for p in pods:
            p.stop()
