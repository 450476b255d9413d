#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: a repeatable measure of a proxy's
own work per request that does not depend on how busy the (shared) machine is.

Starts the fake upstream natively and the proxy under callgrind with collection off; for each
scenario sends warm-up requests, switches collection on, sends N requests on one keep-alive
connection, dumps, switches collection off. Prints instructions (Ir) per request per scenario,
and with --annotate the top functions of each dump (callgrind_annotate, inclusive).

    scripts/bench/instructions.py                       # graphguard (policies/owner), quiet logs
    scripts/bench/instructions.py --target hyper-proxy  # the minimal hyper proxy, for the floor
    scripts/bench/instructions.py --log info            # graphguard with the audit log on
    scripts/bench/instructions.py --annotate 25 --scenarios create_200KB

Needs release builds of graphguard and examples/fake_upstream (with debug info for readable
annotations: CARGO_PROFILE_RELEASE_DEBUG=line-tables-only) and valgrind.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (bodies, ids and keys shared with the load benchmark)

REPO = Path(__file__).resolve().parents[2]


def scenarios() -> dict[str, tuple[str, str, bytes | None, bool]]:
    return {
        "ok": ("GET", "/ok", None, False),
        "get_thread": ("GET", f"/threads/{load.TID}", None, True),
        "search": ("POST", "/threads/search", load.search_body(), True),
        "create_300B": ("POST", "/threads", load.create_body(300), True),
        "create_200KB": ("POST", "/threads", load.create_body(200 * 1024), True),
    }


def send(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, auth: bool) -> None:
    headers = {"Authorization": load.ALICE} if auth else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"{method} {path}: {r.status}")


def wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("proxy exited during start-up")
        try:
            c = http.client.HTTPConnection(host, port, timeout=30)
            c.request("GET", "/ok")
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("proxy did not start")


def dump_and_wait(pid: int, tmp: Path, name: str) -> Path:
    """Ask callgrind for a dump (which also zeroes the counters) and wait until it is written."""
    subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True, capture_output=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        for p in tmp.glob("callgrind.out.*"):
            head = p.read_text(errors="replace")[:2000]
            if f"Trigger: dump {name}\n" in head and ("totals:" in p.read_text(errors="replace") or "summary:" in head):
                return p
        time.sleep(0.1)
    raise RuntimeError(f"callgrind dump {name} not written")


def total_ir(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["graphguard", "hyper-proxy"], default="graphguard")
    ap.add_argument("--log", default="warn", help="GRAPHGUARD_LOG (default warn: no audit line)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--scenarios", default=",".join(scenarios()))
    ap.add_argument("--annotate", type=int, default=0, help="print the top N functions (inclusive) per scenario")
    ap.add_argument("--policies", default=str(REPO / "policies/owner"))
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files")
    args = ap.parse_args()

    rel = REPO / "target/release"
    tmp = Path(tempfile.mkdtemp(prefix="graphguard-ir."))
    up = subprocess.Popen([str(rel / "examples/fake_upstream"), "serve", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = up.stdout.readline().decode().strip() if up.stdout else ""
    up_addr = line.split()[1]
    port = load.free_port()
    out = tmp / "callgrind.out"
    if args.target == "graphguard":
        cmd = [str(rel / "graphguard"), "serve", "--listen", f"127.0.0.1:{port}", "--upstream", f"http://{up_addr}", "--policies", args.policies, "--admin-listen", "off",
               # No periodic policy re-read inside a measured window (it re-compiles the directory).
               "--reload-poll-secs", "3600"]
    else:
        cmd = [str(rel / "examples/fake_upstream"), "proxy", f"127.0.0.1:{port}", up_addr]
    vg = ["valgrind", "--tool=callgrind", "--instr-atstart=yes", f"--callgrind-out-file={out}", "--dump-instr=no"]
    env = {**os.environ, "GRAPHGUARD_LOG": args.log}
    proxy = subprocess.Popen(vg + cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "proxy.log", "wb"), env=env)
    rows = []
    try:
        wait_port("127.0.0.1", port, proxy, 120)
        for key in args.scenarios.split(","):
            method, path, body, auth = scenarios()[key]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for _ in range(args.warmup):
                send(conn, method, path, body, auth)
            dump_and_wait(proxy.pid, tmp, f"warm-{key}")
            for _ in range(args.requests):
                send(conn, method, path, body, auth)
            dump = dump_and_wait(proxy.pid, tmp, key)
            conn.close()
            ir = total_ir(dump)
            rows.append((key, ir / args.requests))
            print(f"{key:14} {ir / args.requests:12,.0f} Ir/request", flush=True)
            if args.annotate:
                r = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)], capture_output=True, text=True)
                lines = [ln for ln in r.stdout.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
                for ln in lines[: args.annotate]:
                    print("    " + ln[:200])
    finally:
        proxy.terminate()
        up.terminate()
        proxy.wait(30)
        up.wait(30)
        if not args.keep:
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
        else:
            print(f"callgrind files in {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
