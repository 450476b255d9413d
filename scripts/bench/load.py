#!/usr/bin/env python3
"""graphguard load benchmark: fake upstream, nginx and graphguard side by side, then LangGraph's
in-process auth against graphguard in front of the real agent server.

Run through `scripts/bench-load` (which builds the binaries, installs nginx and wrk when they
are missing and raises the file limit); this file only needs the Python standard library.

Every figure is the median of interleaved rounds: round r runs every scenario against every
target, the targets' order rotated by r, so drift (thermal, other tenants) spreads evenly.

CPU per request is (utime + stime) of the process tree (from /proc/PID/stat, before and after
the wrk run) divided by the requests wrk completed. Peak RSS is VmHWM, reset before each run by
writing 5 to /proc/PID/clear_refs (summed over nginx's master and workers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALICE = "Bearer alice-demo-key"
BOB = "Bearer bob-demo-key"
TID = "6f1d1a52-3d6a-4a4e-9a57-2b1e1b1e1b1e"

# ------------------------------------------------------------------------------------------
# small utilities
# ------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if body is not None:
        req.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_ok(url: str, proc: subprocess.Popen, timeout: float, name: str, logfile: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile and logfile.exists() else ""
            raise RuntimeError(f"{name} exited with {proc.returncode} before answering {url}\n{tail}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url} within {timeout}s")


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15)
    return total


def status_kb(pids: list[int], key: str) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def reset_hwm(pids: list[int]) -> None:
    for p in pids:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            pass


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    logfile: Path | None = None
    pids: list[int] = field(default_factory=list)  # the process tree measured

    def refresh(self) -> None:
        self.pids = tree(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # Each child leads its own session: signal exactly that group, by id.
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=10)


@dataclass
class ProcGroup(Proc):
    """A process measured together with helpers it needs (graphguard and its Redis)."""

    helpers: list[Proc] = field(default_factory=list)

    def refresh(self) -> None:
        self.pids = tree(self.popen.pid) + [pid for h in self.helpers for pid in tree(h.popen.pid)]


LIMITS_YAML = """
# Every benchmarked request counts against a limit keyed by the caller (a rate far above what
# the run reaches: the cost measured is the check's, never a refusal).
limits:
  - name: bench-per-user
    events: [threads:read, threads:search, threads:create]
    key: "{user.identity}"
    rate: { requests: 1000000, per: 1s }
"""


def limits_policy(tmp: Path) -> Path:
    d = tmp / "policies-limits"
    if d.exists():
        return d
    shutil.copytree(REPO / "policies/owner", d)
    (d / "limits.yaml").write_text(LIMITS_YAML)
    return d


def start_redis(procs: Procs, tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    p = procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], tmp / "redis.log")
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return p, f"redis://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


class Procs:
    def __init__(self) -> None:
        self.all: list[Proc] = []

    def start(self, name: str, cmd: list[str], logfile: Path, cwd: Path | None = None, env: dict[str, str] | None = None, stdout_pipe: bool = False) -> Proc:
        out = open(logfile, "ab")
        p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else out,
            stderr=out,
            start_new_session=True,
        )
        out.close()
        proc = Proc(name, p, logfile)
        self.all.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in reversed(self.all):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                log(f"stop {p.name}: {e}")


# ------------------------------------------------------------------------------------------
# wrk
# ------------------------------------------------------------------------------------------

LUA_DONE = r"""
done = function(summary, latency, requests)
  local out = io.open(os.getenv("WRK_OUT"), "w")
  local e = summary.errors
  out:write(string.format(
    '{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50":%.0f,"p90":%.0f,"p99":%.0f,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
  out:close()
end
"""


def lua_script(path: Path, method: str, headers: dict[str, str], body_file: Path | None) -> Path:
    lines = [f'wrk.method = "{method}"']
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if body_file is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()')
    path.write_text("\n".join(lines) + "\n" + LUA_DONE)
    return path


def run_wrk(url: str, script: Path, duration: float, conns: int, threads: int, out: Path) -> dict[str, Any]:
    if out.exists():
        out.unlink()
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script), url]
    r = subprocess.run(cmd, env={**os.environ, "WRK_OUT": str(out)}, capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr}\n{r.stdout}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------
# request bodies
# ------------------------------------------------------------------------------------------


SEARCH_NOTE_KEY = "note"


def search_body() -> bytes:
    """A 300 B thread search. Its metadata filter is the client's own (topic and a padding note);
    graphguard merges {"owner": "alice"} into it. The LangGraph comparison creates threads with
    the same metadata, so the search matches them."""
    b: dict[str, Any] = {"metadata": {"topic": "bench", SEARCH_NOTE_KEY: ""}, "status": "idle", "limit": 10, "offset": 0, "sort_by": "created_at", "sort_order": "desc"}
    base = len(json.dumps(b, separators=(",", ":")).encode())
    b["metadata"][SEARCH_NOTE_KEY] = "n" * (300 - base)
    return json.dumps(b, separators=(",", ":")).encode()


def search_metadata() -> dict[str, Any]:
    return json.loads(search_body())["metadata"]


def create_body(size: int) -> bytes:
    md = {"source": "bench", "owner": "spoofed"}
    if size <= 1024:
        # Padded inside the metadata: graphguard refuses top-level fields the server's schema
        # does not name.
        md["note"] = ""
        base = len(json.dumps({"metadata": md, "if_exists": "raise"}, separators=(",", ":")).encode())
        md["note"] = "x" * max(0, size - base)
        return json.dumps({"metadata": md, "if_exists": "raise"}, separators=(",", ":")).encode()
    msgs, i = [], 0
    while True:
        msgs.append({"type": "human", "content": f"message {i}: please summarise the \"quarterly\" report {{draft}} \u00e9", "id": f"m-{i}"})
        i += 1
        raw = json.dumps({"metadata": md, "supersteps": [{"updates": [{"values": {"messages": msgs}, "as_node": "__input__"}]}]}, separators=(",", ":")).encode()
        if len(raw) >= size:
            return raw


# ------------------------------------------------------------------------------------------
# the fast-upstream comparison
# ------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    proxy: Proc | None  # None for direct
    note: str = ""


@dataclass
class Scenario:
    key: str
    title: str
    method: str
    path: str
    body: bytes | None
    auth: bool


def nginx_conf(tmp: Path, port: int, upstream: str) -> Path:
    d = tmp / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)
    for root, dirs, _ in os.walk(d):
        for x in dirs:
            os.chmod(Path(root) / x, 0o777)
    os.chmod(d, 0o777)
    proxy_common = f"""
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
"""
    conf = d / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process on;
worker_processes {os.cpu_count() or 2};
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 32m;
    client_body_buffer_size 1m;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream backend {{
        server {upstream};
        keepalive 256;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ /runs/stream$ {{
            {proxy_common}
            proxy_buffering off;
        }}
        location / {{
            {proxy_common}
        }}
    }}
}}
"""
    )
    return conf


def fast_comparison(args: argparse.Namespace, tmp: Path, procs: Procs, bins: dict[str, Path]) -> dict[str, Any]:
    # --- processes
    up_log = tmp / "fake_upstream.log"
    up = procs.start("fake_upstream", [str(bins["fake"]), "serve", "127.0.0.1:0"], up_log, stdout_pipe=True)
    line = up.popen.stdout.readline().decode().strip() if up.popen.stdout else ""
    if not line.startswith("listening "):
        raise RuntimeError(f"fake upstream did not start: {line!r} {up_log.read_text()}")
    up_addr = line.split()[1]
    up_url = f"http://{up_addr}"
    wait_ok(up_url + "/ok", up.popen, 10, "fake upstream")

    ng_port = free_port()
    conf = nginx_conf(tmp, ng_port, up_addr)
    ng = procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(tmp / "nginx"), "-e", str(tmp / "nginx" / "error.log")], tmp / "nginx" / "stderr.log")
    ng_url = f"http://127.0.0.1:{ng_port}"
    wait_ok(ng_url + "/ok", ng.popen, 10, "nginx", tmp / "nginx" / "error.log")

    hp = procs.start("hyper-proxy", [str(bins["fake"]), "proxy", "127.0.0.1:0", up_addr], tmp / "hyper-proxy.log", stdout_pipe=True)
    line = hp.popen.stdout.readline().decode().strip() if hp.popen.stdout else ""
    if not line.startswith("listening "):
        raise RuntimeError(f"hyper proxy did not start: {line!r}")
    hp_url = "http://" + line.split()[1]
    wait_ok(hp_url + "/ok", hp.popen, 10, "hyper proxy")

    def start_gg(name: str, log_filter: str | None, policies: Path = REPO / "policies/owner", more: list[str] | None = None) -> tuple[Proc, str]:
        port, admin = free_port(), free_port()
        env = {**os.environ}
        env.pop("GRAPHGUARD_LOG", None)
        if log_filter:
            env["GRAPHGUARD_LOG"] = log_filter
        logf = tmp / f"{name}.log"
        p = procs.start(
            name,
            [str(bins["graphguard"]), "serve", "--listen", f"127.0.0.1:{port}", "--upstream", up_url, "--policies", str(policies), "--admin-listen", f"127.0.0.1:{admin}", *(more or [])],
            logf,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        wait_ok(url + "/ok", p.popen, 15, name, logf)
        return p, url

    wanted = args.targets.split(",")
    gg, gg_url = start_gg("graphguard", None)
    ggq = ggq_url = None
    if "graphguard-quiet" in wanted:
        ggq, ggq_url = start_gg("graphguard-quiet", "warn")
    extra_targets: list[Target] = []
    if "graphguard-limits" in wanted:
        ggl, ggl_url = start_gg("graphguard-limits", "warn", limits_policy(tmp))
        extra_targets.append(Target("graphguard-limits", ggl_url, ggl, "graphguard-quiet with a limit every request counts against, in-process (--limits-store local)"))
    if "graphguard-redis" in wanted:
        redis, redis_url = start_redis(procs, tmp)
        ggr, ggr_url = start_gg("graphguard-redis", "warn", limits_policy(tmp), ["--limits-store", redis_url])
        group = ProcGroup(ggr.name, ggr.popen, ggr.logfile, helpers=[redis])
        procs.all.append(group)
        extra_targets.append(Target("graphguard-redis", ggr_url, group, "the same limit counted in Redis on loopback (--limits-store redis://); CPU includes redis-server's"))
    time.sleep(0.5)
    for p in procs.all:
        p.refresh()
    log(f"fake upstream {up_url} (pid {up.popen.pid}), nginx {ng_url} (pids {ng.pids}), hyper proxy {hp_url}, graphguard {gg_url} (pid {gg.popen.pid})")

    targets = [
        Target("direct", up_url, None, "the fake upstream itself"),
        Target("nginx", ng_url, ng, "plain reverse proxy: no authentication, no rewrite"),
        Target("hyper-proxy", hp_url, hp, "minimal hyper 1.x proxy (examples/fake_upstream.rs proxy): no authentication, no rewrite"),
        Target("graphguard", gg_url, gg, "policies/owner, default settings (JSON audit log line per request at INFO)"),
    ]
    if ggq is not None and ggq_url is not None:
        targets.append(Target("graphguard-quiet", ggq_url, ggq, "the same with GRAPHGUARD_LOG=warn (no per-request log line)"))
    targets.extend(extra_targets)
    targets = [t for t in targets if t.name in wanted or t.name in ("direct", "nginx", "graphguard")]
    idle = {t.name: status_kb((t.proxy or up).pids, "VmRSS") for t in targets}

    # --- bodies and scenarios
    bodies = tmp / "bodies"
    bodies.mkdir()
    scenarios = [
        Scenario("ok", "GET /ok (public passthrough)", "GET", "/ok", None, False),
        Scenario("get_thread", "GET /threads/{id} (API key, warm lookup cache)", "GET", f"/threads/{TID}", None, True),
        Scenario("search", "POST /threads/search 300 B (filter injection)", "POST", "/threads/search", search_body(), True),
        Scenario("create_300B", "POST /threads 300 B (metadata stamping)", "POST", "/threads", create_body(300), True),
        Scenario("create_200KB", "POST /threads 200 KB (metadata stamping)", "POST", "/threads", create_body(200 * 1024), True),
    ]
    if args.scenarios:
        scenarios = [s for s in scenarios if s.key in args.scenarios.split(",")]
    scripts: dict[str, Path] = {}
    for s in scenarios:
        bf = None
        if s.body is not None:
            bf = bodies / f"{s.key}.json"
            bf.write_bytes(s.body)
        scripts[s.key] = lua_script(tmp / f"{s.key}.lua", s.method, {"Authorization": ALICE} if s.auth else {}, bf)

    # --- correctness: every target answers every scenario with 200; graphguard authorizes
    checks = correctness(targets, scenarios, [t.url for t in targets if t.name.startswith("graphguard")])

    # --- warm-up (lookup cache, connection pools, allocator)
    for t in targets:
        for s in scenarios[:2]:
            run_wrk(t.url + s.path, scripts[s.key], 1, args.connections, 1, tmp / "warm.json")

    # --- interleaved rounds
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for s in scenarios:
            order = targets[r % len(targets):] + targets[: r % len(targets)]
            for t in order:
                m = measure(t, up, s, scripts[s.key], args, tmp)
                rows.setdefault((s.key, t.name), []).append(m)
                log(f"round {r + 1}/{args.rounds} {s.key:13s} {t.name:10s} {m['rps']:9.0f} req/s p50 {m['p50_ms']:.3f} ms p99 {m['p99_ms']:.3f} ms proxy {fmt(m['proxy_cpu_us'])} us/req upstream {m['upstream_cpu_us']:.1f} us/req")

    # --- SSE: time to first event
    sse: dict[str, list[dict[str, Any]]] = {}
    if not args.no_sse:
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[: r % len(targets)]
            for t in order:
                res = sse_probe(bins["fake"], t, args.sse_n)
                sse.setdefault(t.name, []).append(res)
                log(f"round {r + 1}/{args.rounds} sse           {t.name:10s} first event p50 {res['p50_us']} us p99 {res['p99_us']} us")

    # --- 1,000 idle keep-alive connections
    conns: dict[str, dict[str, Any]] = {}
    if args.idle_conns:
        for t in targets:
            pids = (t.proxy or up).pids
            before = status_kb(pids, "VmRSS")
            holder = subprocess.Popen([str(bins["fake"]), "hold-conns", t.url.removeprefix("http://"), str(args.idle_conns), "/ok"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            line = holder.stdout.readline().decode().strip() if holder.stdout else ""
            time.sleep(0.5)
            after = status_kb(pids, "VmRSS")
            if holder.stdin:
                holder.stdin.close()
            holder.wait(timeout=30)
            if not line.startswith("ready"):
                err = holder.stderr.read().decode() if holder.stderr else ""
                raise RuntimeError(f"hold-conns via {t.name}: {line!r} {err}")
            conns[t.name] = {"rss_before_kb": before, "rss_after_kb": after, "n": int(line.split()[1])}
            log(f"idle connections via {t.name}: RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB with {line.split()[1]} open")
            time.sleep(0.5)

    return {
        "targets": [{"name": t.name, "note": t.note} for t in targets],
        "scenarios": [{"key": s.key, "title": s.title, "body_bytes": len(s.body or b"")} for s in scenarios],
        "rows": {f"{k[0]}|{k[1]}": v for k, v in rows.items()},
        "sse": sse,
        "idle_rss_kb": idle,
        "conns": conns,
        "checks": checks,
        "pids": {p.name: p.popen.pid for p in procs.all},
    }


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def measure(t: Target, up: Proc, s: Scenario, script: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    proxy_pids = t.proxy.pids if t.proxy else []
    reset_hwm(proxy_pids)
    c0p, c0u = cpu_ticks(proxy_pids), cpu_ticks(up.pids)
    w = run_wrk(t.url + s.path, script, args.duration, args.connections, args.threads, tmp / "wrk.json")
    c1p, c1u = cpu_ticks(proxy_pids), cpu_ticks(up.pids)
    n = max(1, int(w["requests"]))
    bad = w["status"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
    if bad:
        raise RuntimeError(f"{s.key} via {t.name}: {w} (non-2xx or socket errors)")
    us = 1e6 / CLK_TCK
    time.sleep(args.pause)
    return {
        "requests": n,
        "rps": n / (w["duration_us"] / 1e6),
        "p50_ms": w["p50"] / 1000,
        "p90_ms": w["p90"] / 1000,
        "p99_ms": w["p99"] / 1000,
        "proxy_cpu_us": (c1p - c0p) * us / n if t.proxy else None,
        "upstream_cpu_us": (c1u - c0u) * us / n,
        "peak_rss_kb": status_kb(proxy_pids, "VmHWM") if t.proxy else None,
        "mb_per_s": w["bytes"] / (w["duration_us"] / 1e6) / 1e6,
    }


def sse_probe(fake: Path, t: Target, n: int) -> dict[str, Any]:
    url = f"{t.url}/threads/{TID}/runs/stream"
    r = subprocess.run([str(fake), "sse-probe", url, str(n), f"Authorization:{ALICE}"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"sse-probe via {t.name}: {r.stderr}")
    return json.loads(r.stdout)


def correctness(targets: list[Target], scenarios: list[Scenario], gg_urls: list[str]) -> list[str]:
    out: list[str] = []
    for t in targets:
        for s in scenarios:
            st, _, body = http(s.method, t.url + s.path, s.body, {"Authorization": ALICE} if s.auth else {})
            if st != 200:
                raise RuntimeError(f"check: {s.method} {s.path} via {t.name} answered {st}: {body[:300]!r}")
    out.append("every scenario answers 200 through every target")
    for gg_url in gg_urls:
        gg_checks(targets, scenarios, gg_url)
    out.append("graphguard: bob gets 404 on alice's thread, no key gets 401")
    out.append("graphguard: the upstream receives metadata.owner=alice (search filter, create stamp) and x-graphguard-user-id; nginx forwards bodies unchanged")
    return out


def gg_checks(targets: list[Target], scenarios: list[Scenario], gg_url: str) -> None:
    # graphguard really authorizes: bob does not see alice's thread, anonymous is refused
    st, _, _ = http("GET", f"{gg_url}/threads/{TID}", None, {"Authorization": BOB})
    if st != 404:
        raise RuntimeError(f"check: bob reading alice's thread through graphguard got {st}, expected 404")
    st, _, _ = http("GET", f"{gg_url}/threads/{TID}")
    if st != 401:
        raise RuntimeError(f"check: anonymous read through graphguard got {st}, expected 401")
    # stamping and filter injection reach the upstream (it echoes the body with x-bench-echo)
    for s in scenarios:
        if s.key not in ("search", "create_300B"):
            continue
        st, hdr, body = http("POST", gg_url + s.path, s.body, {"Authorization": ALICE, "x-bench-echo": "1"})
        md = json.loads(body).get("metadata", {})
        if st != 200 or md.get("owner") != "alice" or hdr.get("x-bench-seen-user") != "alice":
            raise RuntimeError(f"check: {s.key} through graphguard reached the upstream as {body[:300]!r} (user {hdr.get('x-bench-seen-user')})")
        st, _, body = http("POST", targets[1].url + s.path, s.body, {"Authorization": ALICE, "x-bench-echo": "1"})
        if body != s.body:
            raise RuntimeError(f"check: nginx changed the {s.key} body")


# ------------------------------------------------------------------------------------------
# LangGraph's in-process auth vs graphguard in front of the real agent server
# ------------------------------------------------------------------------------------------


def offline_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and "LICENSE" not in k.upper()}
    env.update(
        {
            "LANGGRAPH_NO_VERSION_CHECK": "true",
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGSMITH_TRACING": "false",
            "LANGCHAIN_TRACING_V2": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "LOG_COLOR": "false",
        }
    )
    env.update(extra)
    return env


def start_langgraph(procs: Procs, venv: Path, tmp: Path, name: str, config: str, log_level: str) -> tuple[Proc, str]:
    work = tmp / name
    shutil.copytree(REPO / "tests/e2e/app", work, ignore=shutil.ignore_patterns("__pycache__", ".langgraph_api"))
    port = free_port()
    cmd = [str(venv / "bin/langgraph"), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port), "--config", config]
    env = offline_env({"LOG_LEVEL": log_level} if log_level else {})
    p = procs.start(name, cmd, tmp / f"{name}.log", cwd=work, env=env)
    url = f"http://127.0.0.1:{port}"
    return p, url


def langgraph_comparison(args: argparse.Namespace, tmp: Path, procs: Procs, bins: dict[str, Path], venv: Path) -> dict[str, Any]:
    level = "" if args.lg_default_logs else "WARNING"
    a, a_url = start_langgraph(procs, venv, tmp, "lg-inprocess-auth", "langgraph.owner.json", level)
    b, b_url = start_langgraph(procs, venv, tmp, "lg-behind-graphguard", "langgraph.json", level)
    wait_ok(a_url + "/ok", a.popen, 120, "agent server (in-process auth)", a.logfile)
    wait_ok(b_url + "/ok", b.popen, 120, "agent server (no auth)", b.logfile)
    gg_port = free_port()
    gg_log = tmp / "graphguard-lg.log"
    gg = procs.start(
        "graphguard-lg",
        [str(bins["graphguard"]), "serve", "--listen", f"127.0.0.1:{gg_port}", "--upstream", b_url, "--policies", str(REPO / "policies/owner"), "--admin-listen", "off"],
        gg_log,
    )
    gg_url = f"http://127.0.0.1:{gg_port}"
    wait_ok(gg_url + "/ok", gg.popen, 15, "graphguard", gg_log)
    # The same with one request-serving thread (--worker-threads 1): no cross-thread wake-ups.
    gg1_port = free_port()
    gg1_log = tmp / "graphguard-lg-1t.log"
    gg1 = procs.start(
        "graphguard-lg-1t",
        [str(bins["graphguard"]), "serve", "--listen", f"127.0.0.1:{gg1_port}", "--upstream", b_url, "--policies", str(REPO / "policies/owner"), "--admin-listen", "off", "--worker-threads", "1"],
        gg1_log,
    )
    gg1_url = f"http://127.0.0.1:{gg1_port}"
    wait_ok(gg1_url + "/ok", gg1.popen, 15, "graphguard (1 thread)", gg1_log)
    hp = None
    if not args.lg_no_hyper:
        hp = procs.start("hyper-proxy-lg", [str(bins["fake"]), "proxy", "127.0.0.1:0", b_url.removeprefix("http://")], tmp / "hyper-proxy-lg.log", stdout_pipe=True)
        line = hp.popen.stdout.readline().decode().strip() if hp.popen.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"hyper proxy did not start: {line!r}")
        hp_url = "http://" + line.split()[1]
    for p in (a, b, gg, gg1) + ((hp,) if hp else ()):
        p.refresh()
    log(f"agent server with in-process auth {a_url} (pids {a.pids}); without auth {b_url} (pids {b.pids}) behind graphguard {gg_url}")

    @dataclass
    class LgTarget:
        name: str
        front: str
        upstream: str
        server: Proc
        gateway: Proc | None

    targets = [
        LgTarget("in-process auth", a_url, a_url, a, None),
        LgTarget("graphguard + server without auth", gg_url, b_url, b, gg),
        LgTarget("graphguard --worker-threads 1 + server without auth", gg1_url, b_url, b, gg1),
    ]
    if hp:
        # The floor of any hyper-based sidecar at this load: forwards, authorizes nothing.
        targets.append(LgTarget("minimal hyper proxy + server without auth (no authorization)", hp_url, b_url, b, hp))
    search = search_body()
    create = create_body(300)
    scen = [("get_thread", "GET own thread", "GET", None), ("search", "search 300 B", "POST", search), ("create", "create 300 B", "POST", create)]
    scripts = {}
    for key, _, method, body in scen:
        bf = None
        if body is not None:
            bf = tmp / f"lg-{key}.json"
            bf.write_bytes(body)
        scripts[key] = lua_script(tmp / f"lg-{key}.lua", method, {"Authorization": ALICE}, bf)

    def setup(t: LgTarget) -> str:
        """Wipe the target's server and create 10 threads for alice and 10 for bob through the
        target's authorizing front; alice's first thread id."""
        st, _, body = http("POST", t.upstream + "/internal/truncate")
        if st >= 300:
            raise RuntimeError(f"truncate {t.name}: {st} {body[:200]!r}")
        tid = ""
        for who, key in (("alice", ALICE), ("bob", BOB)):
            for i in range(10):
                st, _, body = http("POST", t.front + "/threads", json.dumps({"metadata": {**search_metadata(), "i": i}}).encode(), {"Authorization": key})
                if st != 200:
                    raise RuntimeError(f"create via {t.name} as {who}: {st} {body[:200]!r}")
                if who == "alice" and not tid:
                    tid = json.loads(body)["thread_id"]
        # isolation holds on both sides
        st, _, _ = http("GET", f"{t.front}/threads/{tid}", None, {"Authorization": BOB})
        if st != 404:
            raise RuntimeError(f"{t.name}: bob read alice's thread ({st})")
        return tid

    rows: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.lg_rounds):
        for key, _, method, body in scen:
            order = targets[r % len(targets):] + targets[: r % len(targets)]
            for t in order:
                # Every measurement starts from the same store: wiped, 10 threads each for alice
                # and bob, created through the authorizing front (so they carry metadata.owner).
                # Targets (b) and (c) share one server, and the in-memory runtime's background
                # work grows with the store.
                front = t if t.gateway is None or t is targets[1] else targets[1]

                def path_for(tid: str) -> str:
                    return f"/threads/{tid}" if key == "get_thread" else ("/threads/search" if key == "search" else "/threads")

                if r == 0:
                    run_wrk(t.front + path_for(setup(front)), scripts[key], 1, args.lg_connections, 1, tmp / "warm.json")
                path = path_for(setup(front))
                srv_pids = tree(t.server.popen.pid)
                gw_pids = t.gateway.pids if t.gateway else []
                s0, g0 = cpu_ticks(srv_pids), cpu_ticks(gw_pids)
                w = run_wrk(t.front + path, scripts[key], args.lg_duration, args.lg_connections, 1, tmp / "wrk.json")
                s1, g1 = cpu_ticks(srv_pids), cpu_ticks(gw_pids)
                n = max(1, int(w["requests"]))
                bad = w["status"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
                if bad:
                    raise RuntimeError(f"langgraph {key} via {t.name}: {w}")
                us = 1e6 / CLK_TCK
                m = {
                    "requests": n,
                    "rps": n / (w["duration_us"] / 1e6),
                    "p50_ms": w["p50"] / 1000,
                    "p99_ms": w["p99"] / 1000,
                    "server_cpu_us": (s1 - s0) * us / n,
                    "gateway_cpu_us": (g1 - g0) * us / n if t.gateway else 0.0,
                }
                m["total_cpu_us"] = m["server_cpu_us"] + m["gateway_cpu_us"]
                rows.setdefault(f"{key}|{t.name}", []).append(m)
                log(f"langgraph round {r + 1}/{args.lg_rounds} {key:10s} {t.name:34s} {m['rps']:7.0f} req/s p50 {m['p50_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms server {m['server_cpu_us']:.0f} us/req gateway {m['gateway_cpu_us']:.1f} us/req")
                time.sleep(args.pause)
    for p in ((hp,) if hp else ()) + (gg1, gg, b, a):
        p.stop()
    return {"targets": [t.name for t in targets], "scenarios": [[k, title] for k, title, _, _ in scen], "rows": rows, "server_logs": "default (INFO)" if args.lg_default_logs else "LOG_LEVEL=WARNING"}


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def ratio(x: float | None, base: float | None) -> str:
    if x is None or base is None or base == 0:
        return "-"
    return f"{x / base:.2f}x"


def cell(x: float | None, spec: str, ngx: float | None, direct: float | None) -> str:
    if x is None:
        return "-"
    parts = [format(x, spec)]
    extra = []
    if ngx is not None:
        extra.append(f"{ratio(x, ngx)} ngx")
    if direct is not None:
        extra.append(f"{ratio(x, direct)} dir")
    if extra:
        parts.append("(" + ", ".join(extra) + ")")
    return " ".join(parts)


def report(meta: dict[str, Any], fast: dict[str, Any] | None, lg: dict[str, Any] | None) -> str:
    L: list[str] = []
    L.append(f"date: {meta['date']}  ")
    L.append(f"machine: {meta['nproc']} cores, {meta['cpu']}, {meta['mem']}, Linux {meta['kernel']}  ")
    L.append(f"tools: {meta['nginx']}, {meta['wrk']}, {meta['rustc']}  ")
    L.append(f"commit: {meta['commit']}  ")
    L.append(f"command: `{meta['command']}`  ")
    L.append(f"settings: {meta['settings']}  ")
    L.append(f"load average (1 min) at start / end: {meta['load_start']} / {meta.get('load_end', '?')} (other tenants of the machine show here)")
    L.append("")
    if fast:
        med: dict[str, dict[str, float | None]] = {}
        for k, runs in fast["rows"].items():
            med[k] = {f: median([r[f] for r in runs]) for f in runs[0]}
        L.append("### Fast upstream: direct, nginx, graphguard")
        L.append("")
        L.append("Medians of the rounds. Ratios: `ngx` = this target / nginx, `dir` = this target / direct. "
                 "nginx is a plain reverse proxy (no authentication, no rewrite): it forwards the same requests, "
                 "Authorization header and bodies included, unchanged. Proxy CPU is the proxy process(es) alone; "
                 "total CPU adds the fake upstream's CPU (for direct, the upstream alone). Peak RSS is VmHWM "
                 "during the run (nginx: master + workers).")
        L.append("")
        L.append("Targets: " + "; ".join(f"**{t['name']}**: {t['note']}" for t in fast["targets"]) + ".")
        L.append("")
        L.append("| scenario | target | req/s | p50 ms | p99 ms | proxy CPU us/req | total CPU us/req | peak RSS MB |")
        L.append("|---|---|---|---|---|---|---|---|")
        for s in fast["scenarios"]:
            d = med.get(f"{s['key']}|direct")
            n = med.get(f"{s['key']}|nginx")
            for t in fast["targets"]:
                m = med.get(f"{s['key']}|{t['name']}")
                if not m:
                    continue
                tot = (m["proxy_cpu_us"] or 0) + (m["upstream_cpu_us"] or 0)
                dtot = (d["upstream_cpu_us"] or 0) if d else None
                ntot = ((n["proxy_cpu_us"] or 0) + (n["upstream_cpu_us"] or 0)) if n else None
                is_n = t["name"] == "nginx"
                is_d = t["name"] == "direct"
                L.append(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                        s["title"],
                        t["name"] + (" (plain)" if t["name"] in ("nginx", "hyper-proxy") and s["key"] != "ok" else ""),
                        cell(m["rps"], ",.0f", None if is_n or is_d else n and n["rps"], None if is_d else d and d["rps"]),
                        cell(m["p50_ms"], ".3f", None if is_n or is_d else n and n["p50_ms"], None if is_d else d and d["p50_ms"]),
                        cell(m["p99_ms"], ".3f", None if is_n or is_d else n and n["p99_ms"], None if is_d else d and d["p99_ms"]),
                        "-" if is_d else cell(m["proxy_cpu_us"], ".1f", None if is_n else n and n["proxy_cpu_us"], None),
                        cell(tot, ".1f", None if is_n or is_d else ntot, None if is_d else dtot),
                        "-" if is_d else cell((m["peak_rss_kb"] or 0) / 1024, ".1f", None if is_n else n and (n["peak_rss_kb"] or 0) / 1024, None),
                    )
                )
        L.append("")
        if fast["sse"]:
            L.append("### SSE: time to the first event (POST /threads/{id}/runs/stream)")
            L.append("")
            L.append("The fake upstream sends the first event as soon as it has read the request; time measured by the client "
                     "from sending the request to having the first complete event, one keep-alive connection, sequential. "
                     "`+direct` is the time the proxy adds.")
            L.append("")
            L.append("| target | p50 us | p90 us | p99 us | p50 +direct us | p99 +direct us |")
            L.append("|---|---|---|---|---|---|")
            d50 = median([r["p50_us"] for r in fast["sse"].get("direct", [])])
            d99 = median([r["p99_us"] for r in fast["sse"].get("direct", [])])
            for t in fast["targets"]:
                rs = fast["sse"].get(t["name"], [])
                if not rs:
                    continue
                p50, p90, p99 = (median([r[k] for r in rs]) for k in ("p50_us", "p90_us", "p99_us"))
                L.append(f"| {t['name']} | {p50:.0f} | {p90:.0f} | {p99:.0f} | {p50 - d50:+.0f} | {p99 - d99:+.0f} |")
            L.append("")
        if fast["conns"]:
            L.append("### Memory: idle and with 1,000 idle keep-alive connections")
            L.append("")
            L.append("RSS (VmRSS) of the serving process(es): at start (before any load), before opening the connections "
                     "(after the load above), and with the connections open (each has served one GET /ok). "
                     "For direct, the fake upstream itself (a bare hyper server).")
            L.append("")
            L.append("| target | RSS at start MB | RSS before MB | RSS with 1,000 conns MB | per connection KB |")
            L.append("|---|---|---|---|---|")
            for t in fast["targets"]:
                c = fast["conns"].get(t["name"])
                if not c:
                    continue
                per = (c["rss_after_kb"] - c["rss_before_kb"]) / max(1, c["n"])
                L.append(f"| {t['name']} | {fast['idle_rss_kb'][t['name']] / 1024:.1f} | {c['rss_before_kb'] / 1024:.1f} | {c['rss_after_kb'] / 1024:.1f} | {per:.1f} |")
            L.append("")
        L.append("Checks before the load: " + "; ".join(fast["checks"]) + ".")
        L.append("")
    if lg:
        L.append("### LangGraph's in-process auth vs graphguard in front of the agent server")
        L.append("")
        L.append(f"The real agent server (`langgraph dev`, in-memory runtime, server logs: {lg['server_logs']}); alice's API key; "
                 "(a) the server with `langgraph.owner.json` (auth_owner.py: authenticate + the owner handler), "
                 "(b) the server with `langgraph.json` (no auth) behind graphguard with policies/owner (default logs), "
                 "also with `--worker-threads 1` (one request-serving thread); "
                 "(c) for reference, the same server behind the minimal hyper proxy, which authorizes nothing (the floor of any hyper sidecar at this load). "
                 "CPU per request: the server's process tree, plus the gateway's for (b) and (c). "
                 "In-process auth cost = server CPU (a) - server CPU (b); graphguard's cost = gateway CPU (b).")
        L.append("")
        L.append("| request | target | req/s | p50 ms | p99 ms | server CPU us/req | gateway CPU us/req | total CPU us/req |")
        L.append("|---|---|---|---|---|---|---|---|")
        med = {k: {f: median([r[f] for r in v]) for f in v[0]} for k, v in lg["rows"].items()}
        for key, title in lg["scenarios"]:
            for t in lg["targets"]:
                m = med.get(f"{key}|{t}")
                if m:
                    L.append(f"| {title} | {t} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['server_cpu_us']:.0f} | {m['gateway_cpu_us']:.1f} | {m['total_cpu_us']:.0f} |")
        L.append("")
        L.append("In-process auth's cost is the server's CPU with auth minus without, paired round by round "
                 "(median, and the range over rounds: a difference of two large, noisy numbers); graphguard's is its own CPU.")
        L.append("")
        L.append("| request | in-process auth: added server CPU us/req (range) | graphguard CPU us/req | graphguard / in-process | p50 difference ms (b - a) |")
        L.append("|---|---|---|---|---|")
        for key, title in lg["scenarios"]:
            ra = lg["rows"].get(f"{key}|{lg['targets'][0]}", [])
            for gname in [t for t in lg["targets"] if t.startswith("graphguard")]:
                rb = lg["rows"].get(f"{key}|{gname}", [])
                if not ra or not rb:
                    continue
                # Paired with the default graphguard's rounds (the same server (b) without auth).
                rbase = lg["rows"].get(f"{key}|{lg['targets'][1]}", rb)
                diffs = [x["server_cpu_us"] - y["server_cpu_us"] for x, y in zip(ra, rbase)]
                added = median(diffs)
                gw = median([y["gateway_cpu_us"] for y in rb])
                p50 = median([y["p50_ms"] for y in rb]) - median([x["p50_ms"] for x in ra])
                r = f"{gw / added:.2f}" if added and added > 0 else "n/a (no measurable in-process cost)"
                label = title if gname == lg["targets"][1] else f"{title} (`--worker-threads 1`)"
                L.append(f"| {label} | {added:.0f} ({min(diffs):.0f} to {max(diffs):.0f}) | {gw:.1f} | {r} | {p50:+.2f} |")
        L.append("")
    return "\n".join(L)


def machine_meta(args: argparse.Namespace) -> dict[str, Any]:
    def sh(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    commit = sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": " ".join(sh(["wrk", "--version"]).split()[:2]),
        "rustc": sh(["rustc", "--version"]),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "command": args.command_line,
        "load_start": Path("/proc/loadavg").read_text().split()[0],
        "settings": f"{args.rounds} rounds x {args.duration:g} s per scenario and target, wrk -t{args.threads} -c{args.connections}; "
        f"SSE {args.sse_n} requests per round; {args.idle_conns} idle connections; "
        f"LangGraph: {args.lg_rounds} rounds x {args.lg_duration:g} s, wrk -t1 -c{args.lg_connections}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-size run (~1 min): 1 round, 2 s runs")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int, help="seconds per wrk run (whole seconds)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--targets", help="default: all five (--quick: direct,nginx,graphguard);  comma-separated from direct,nginx,hyper-proxy,graphguard,graphguard-quiet,graphguard-limits,graphguard-redis (direct, nginx and graphguard always run)")
    ap.add_argument("--scenarios", help="comma-separated subset: ok,get_thread,search,create_300B,create_200KB")
    ap.add_argument("--sse-n", type=int)
    ap.add_argument("--no-sse", action="store_true")
    ap.add_argument("--idle-conns", type=int, default=1000, help="0 skips the connection-memory scenario")
    ap.add_argument("--no-fast", action="store_true", help="skip the fast-upstream comparison")
    ap.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph comparison")
    ap.add_argument("--venv", help="the e2e venv (scripts/e2e-venv) with langgraph dev")
    ap.add_argument("--lg-rounds", type=int)
    ap.add_argument("--lg-duration", type=int)
    ap.add_argument("--lg-connections", type=int, default=4)
    ap.add_argument("--lg-no-hyper", action="store_true", help="skip the minimal hyper proxy in the LangGraph comparison")
    ap.add_argument("--lg-default-logs", action="store_true", help="the agent servers log at INFO (default: LOG_LEVEL=WARNING)")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between runs")
    ap.add_argument("--bin-dir", default=str(REPO / "target/release"))
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--json", help="also write every raw measurement here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    ap.add_argument("--command-line", default="scripts/bench-load")
    args = ap.parse_args()
    q = args.quick
    args.rounds = args.rounds or (1 if q else 3)
    args.targets = args.targets or ("direct,nginx,graphguard" if q else "direct,nginx,hyper-proxy,graphguard,graphguard-quiet")
    args.duration = args.duration or (2 if q else 3)
    args.sse_n = args.sse_n or (100 if q else 200)
    args.lg_rounds = args.lg_rounds or (1 if q else 3)
    args.lg_duration = args.lg_duration or (2 if q else 3)

    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not (tool == "nginx" and Path("/usr/sbin/nginx").exists()):
            log(f"bench-load: {tool} not found (apt-get install -y nginx wrk)")
            return 1
    if not shutil.which("nginx"):
        os.environ["PATH"] += ":/usr/sbin"

    tmp = Path(tempfile.mkdtemp(prefix="ggload-"))
    # Private copies: a concurrent `cargo build` must not swap a binary under a running round.
    bins = {}
    # (Named so that a colleague's `pkill graphguard` does not end a benchmark mid-round.)
    for name, rel, copy in (("graphguard", "graphguard", "gg-under-test"), ("fake", "examples/fake_upstream", "fake_upstream")):
        src = Path(args.bin_dir) / rel
        if not src.exists():
            log(f"bench-load: {src} missing (cargo build --release --bin graphguard --example fake_upstream)")
            return 1
        bins[name] = tmp / copy
        shutil.copy2(src, bins[name])
    procs = Procs()
    meta = machine_meta(args)
    fast = lg = None
    t0 = time.monotonic()
    try:
        if not args.no_fast:
            fast = fast_comparison(args, tmp, procs, bins)
        procs.stop_all()
        if not args.no_langgraph:
            if not args.venv:
                log("bench-load: --venv missing, skipping the LangGraph comparison")
            else:
                lg = langgraph_comparison(args, tmp, procs, bins, Path(args.venv))
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {tmp}")
    meta["elapsed_s"] = round(time.monotonic() - t0)
    meta["load_end"] = Path("/proc/loadavg").read_text().split()[0]
    text = report(meta, fast, lg)
    text += f"\n(harness wall time {meta['elapsed_s']} s)\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "fast": fast, "langgraph": lg}, indent=1, default=str))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
