"""Process management, targets and the data-driven scenario runner of the e2e suite.

A *target* is one thing under test plus a direct line to the agent server behind it:

* ``reference``: the real LangGraph agent server running LangGraph's own in-process custom auth
  (``app/langgraph.<set>.json`` -> ``app/auth_<set>.py``). Its "upstream" is itself.
* ``gateway``: graphguard (``serve --policies policies/<set>``) in front of the same server
  without any ``auth`` section (``app/langgraph.json``). Its upstream is that server.

A scenario (see ``scenarios.py``) is a list of steps. Running it against a target yields one
*observation* per step: a small JSON-like dict holding the status, the error detail and a
projection of the response (resource ids, metadata, listed ids, run output, SSE frames...).
Ids are normalised to ``@alias`` through a per-target alias map, so the observations of two
targets can be compared step by step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
APP_DIR = HERE / "app"
POLICIES_DIR = REPO / "policies"

#: handler set name -> (policies/ subdirectory, reference langgraph config in app/)
HANDLER_SETS: dict[str, tuple[str, str]] = {
    "owner": ("owner", "langgraph.owner.json"),
    "resource": ("resource", "langgraph.resource.json"),
    "participants": ("participants", "langgraph.participants.json"),
    "store_rewrite": ("store-rewrite", "langgraph.store_rewrite.json"),
}

USERS = ("alice", "bob", "admin", "carol", "dave", "shared")

#: ``uuid5(6ba7b821-9dad-11d1-80b4-00c04fd430c8, graph_id)``: the graph's system assistant.
SYSTEM_ASSISTANT_NS = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
SYSTEM_AGENT_ID = str(uuid.uuid5(SYSTEM_ASSISTANT_NS, "agent"))

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
ALIAS_RE = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")

STARTUP_TIMEOUT = float(os.environ.get("E2E_STARTUP_TIMEOUT", "60"))
REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
#: E2E_TRACE=1 (with pytest -s) prints every step's request and observation
TRACE = os.environ.get("E2E_TRACE") == "1"


# --------------------------------------------------------------------------------------------
# Environment and binaries
# --------------------------------------------------------------------------------------------


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: no keys, no tracing, no outbound traffic."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and "LICENSE" not in k.upper() and not k.startswith("PYTEST_")
    }
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
    if extra:
        env.update(extra)
    return env


def graphguard_bin() -> tuple[Path | None, str]:
    """(path, reason): path is None when the gateway tests must be skipped."""
    explicit = os.environ.get("GRAPHGUARD_BIN")
    if explicit:
        return Path(explicit), ""
    default = REPO / "target" / "debug" / "graphguard"
    if default.exists():
        return default, ""
    return None, f"graphguard binary not built: GRAPHGUARD_BIN is unset and {default} does not exist (cargo build)"


def langgraph_cli() -> str:
    cand = Path(sys.executable).parent / "langgraph"
    if cand.exists():
        return str(cand)
    found = shutil.which("langgraph")
    if not found:
        raise RuntimeError("`langgraph` CLI not found: run the suite with the venv from scripts/e2e-venv")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class ServerProcess:
    """A child process with its log in a file, started in its own session, killed by id."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path):
        self.name = name
        self.cmd = cmd
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"$ (cd {self.cwd} && {' '.join(self.cmd)})\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ok(self, url: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: str = ""
        with httpx.Client(trust_env=False, timeout=2.0) as c:
            while time.monotonic() < deadline:
                if not self.alive():
                    rc = self.proc.returncode if self.proc else None
                    raise RuntimeError(
                        f"{self.name} exited with code {rc} before answering {url}\n--- log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    r = c.get(url)
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    last = repr(e)
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout}s (last: {last})\n--- log {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        # start_new_session=True: the child leads its own process group, so this signals
        # exactly the process we started (and anything it spawned), nothing else.
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


def start_langgraph(name: str, config_name: str, workroot: Path, log_dir: Path) -> tuple[ServerProcess, str]:
    """Start `langgraph dev` on a free port in a fresh copy of app/; return (process, base url)."""
    workdir = workroot / name
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(APP_DIR, workdir, ignore=shutil.ignore_patterns("__pycache__", ".langgraph_api"))
    shutil.rmtree(workdir / ".langgraph_api", ignore_errors=True)
    port = free_port()
    if not port_is_free(port):  # pragma: no cover - racy by nature, checked once more
        port = free_port()
    cmd = [
        langgraph_cli(),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        config_name,
    ]
    srv = ServerProcess(name, cmd, workdir, offline_env(), log_dir / f"{name}.log")
    srv.start()
    url = f"http://127.0.0.1:{port}"
    try:
        srv.wait_ok(url + "/ok")
    except Exception:
        srv.stop()
        raise
    return srv, url


def start_graphguard(
    name: str,
    binary: Path,
    upstream: str,
    policies: Path,
    workroot: Path,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> tuple[ServerProcess, str]:
    port = port or free_port()
    cmd = [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--upstream", upstream, "--policies", str(policies)]
    workdir = workroot / name
    workdir.mkdir(parents=True, exist_ok=True)
    env = offline_env(
        {
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            "RUST_BACKTRACE": "1",
            # via the environment, so a binary without these options still starts
            "GRAPHGUARD_ADMIN_LISTEN": os.environ.get("GRAPHGUARD_ADMIN_LISTEN", f"127.0.0.1:{free_port()}"),
            "GRAPHGUARD_LOG_FORMAT": os.environ.get("GRAPHGUARD_LOG_FORMAT", "compact"),
            **(extra_env or {}),
        }
    )
    srv = ServerProcess(name, cmd, workdir, env, log_dir / f"{name}.log")
    srv.start()
    url = f"http://127.0.0.1:{port}"
    try:
        srv.wait_ok(url + "/ok")
    except Exception:
        srv.stop()
        raise
    return srv, url


class Replica:
    """One graphguard of a fleet, with its own admin listener. `stack` names what the fleet
    shares: `binary`, `up` (the agent server's URL), `policies`, `root` and `logs`; `env` is
    what this fleet's replicas add (the shared store's address, timeouts)."""

    def __init__(self, name: str, stack: dict, env: dict[str, str]):
        self.name = name
        self.stack = stack
        self.env = env
        self.port = free_port()
        self.admin_port = free_port()
        self.proc: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        # Ports are picked ahead; on a shared machine another process may take one meanwhile:
        # then pick new ones and start again.
        for attempt in range(3):
            env = {**self.env, "GRAPHGUARD_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}"}
            try:
                s = self.stack
                self.proc, _ = start_graphguard(self.name, s["binary"], s["up"], s["policies"], s["root"], s["logs"], extra_env=env, port=self.port)
                return
            except RuntimeError as e:
                if "Address already in use" not in str(e) or attempt == 2:
                    raise
                self.port, self.admin_port = free_port(), free_port()

    def kill(self) -> None:
        """SIGKILL, as a node failure would: nothing is flushed or released."""
        if self.proc:
            self.proc.proc.send_signal(signal.SIGKILL)
            self.proc.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


# --------------------------------------------------------------------------------------------
# Targets and clients
# --------------------------------------------------------------------------------------------


def auth_headers(actor: str | None) -> dict[str, str]:
    """Headers that authenticate `actor`. Pseudo actors: None/"anon" (no header), "badkey"
    (an unknown key), "nobearer" (a scheme without a token), "basic" (wrong scheme)."""
    if actor in (None, "anon"):
        return {}
    if actor == "badkey":
        return {"Authorization": "Bearer mallory-demo-key"}
    if actor == "nobearer":
        return {"Authorization": "Bearer"}
    if actor == "basic":
        return {"Authorization": "Basic YWxpY2U6YWxpY2UtZGVtby1rZXk="}
    if actor in USERS:
        return {"Authorization": f"Bearer {actor}-demo-key"}
    raise ValueError(f"unknown actor {actor!r}")


class Recorder:
    """httpx response hook: remembers every response an SDK call saw (status and headers)."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        self.responses.append(response)

    def clear(self) -> None:
        self.responses.clear()


@dataclass
class Target:
    kind: str  # "reference" | "gateway"
    handler_set: str
    base_url: str
    upstream_url: str
    processes: list[ServerProcess] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> real id/value
    _sdk: dict[str, tuple[Any, Recorder]] = field(default_factory=dict)
    _http: dict[str, httpx.Client] = field(default_factory=dict)

    # -- clients -----------------------------------------------------------------------------
    def sdk(self, actor: str | None) -> tuple[Any, Recorder]:
        from langgraph_sdk import get_sync_client

        key = str(actor)
        if key not in self._sdk:
            client = get_sync_client(url=self.base_url, api_key=None, headers=auth_headers(actor), timeout=REQUEST_TIMEOUT)
            rec = Recorder()
            hooks = dict(client.http.client.event_hooks)
            hooks["response"] = list(hooks.get("response", [])) + [rec]
            client.http.client.event_hooks = hooks
            self._sdk[key] = (client, rec)
        return self._sdk[key]

    def http(self, actor: str | None) -> httpx.Client:
        key = str(actor)
        if key not in self._http:
            self._http[key] = httpx.Client(base_url=self.base_url, headers=auth_headers(actor), timeout=REQUEST_TIMEOUT, trust_env=False)
        return self._http[key]

    def drop_clients(self, actor: str | None) -> None:
        """Forget `actor`'s pooled connections (the server closes keep-alive after a 500)."""
        self._drop(str(actor))

    def _drop(self, key: str) -> None:
        if key in self._sdk:
            try:
                self._sdk[key][0].http.client.close()
            except Exception:
                pass
            del self._sdk[key]
        if key in self._http:
            self._http[key].close()
            del self._http[key]

    def close(self) -> None:
        for key in list(set(self._sdk) | set(self._http)):
            self._drop(key)

    # -- state ---------------------------------------------------------------------------------
    def truncate(self) -> None:
        """Wipe threads, runs, assistants and crons: ON THE UPSTREAM DIRECTLY, never through
        the gateway (which must refuse it). The store is not wiped by the runtime, hence the
        per-run token in store namespaces."""
        with httpx.Client(trust_env=False, timeout=30) as c:
            r = c.post(self.upstream_url + "/internal/truncate")
            r.raise_for_status()

    def reset(self) -> None:
        self.truncate()
        self.aliases = {"agent_sys": SYSTEM_AGENT_ID, "run": "r" + uuid.uuid4().hex[:8]}

    def logs(self) -> str:
        out = []
        for p in self.processes:
            out.append(f"===== {p.name} ({p.log_path}) =====\n{p.log_tail()}")
        return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Scenario data model
# --------------------------------------------------------------------------------------------


@dataclass
class Step:
    actor: str | None
    op: str
    args: dict[str, Any]
    expect: dict[str, Any]
    label: str = ""
    save: str | dict[str, str] | None = None
    differs: str | None = None
    gw: dict[str, Any] | None = None  # graphguard's own expectation when `differs`
    ignore: tuple[str, ...] = ()  # observation keys the fidelity comparison skips


@dataclass
class Scenario:
    name: str
    handler_set: str
    rows: str
    steps: list[Step]
    doc: str = ""


def S(actor: str | None, op: str, args: dict[str, Any] | None = None, expect: dict[str, Any] | int | None = None, **kw: Any) -> Step:
    """Build a step. `expect` may be a bare status code."""
    if isinstance(expect, int):
        expect = {"status": expect}
    return Step(actor=actor, op=op, args=args or {}, expect=expect or {}, **kw)


def subst(obj: Any, aliases: dict[str, str]) -> Any:
    """Replace `@alias` tokens inside strings with the real values."""
    if isinstance(obj, str):
        def rep(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in aliases:
                raise KeyError(f"unknown alias @{name} (known: {sorted(aliases)})")
            return aliases[name]

        return ALIAS_RE.sub(rep, obj)
    if isinstance(obj, dict):
        return {subst(k, aliases): subst(v, aliases) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [subst(v, aliases) for v in obj]
    return obj


def normalize(obj: Any, aliases: dict[str, str]) -> Any:
    """Replace known ids/tokens by `@alias` and unknown UUIDs by `@?` (recursively)."""
    if isinstance(obj, str):
        s = obj
        # longest values first so a token inside an id cannot win
        for name, real in sorted(aliases.items(), key=lambda kv: -len(kv[1])):
            if real and real in s:
                s = s.replace(real, "@" + name)
        return UUID_RE.sub("@?", s)
    if isinstance(obj, dict):
        return {normalize(k, aliases): normalize(v, aliases) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalize(v, aliases) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Performing a step
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None
    headers: dict[str, str]
    body: Any  # parsed JSON or text (errors), SDK return value (success)
    error: str | None = None  # transport error / unexpected exception text
    sse: list[tuple[str, Any]] | None = None
    request: str = ""


POSITIONAL = {
    "store.put_item": ["namespace"],
    "store.get_item": ["namespace"],
    "store.delete_item": ["namespace"],
    "store.search_items": ["namespace_prefix"],
}


def _decode(resp: httpx.Response) -> Any:
    try:
        resp.read()
    except Exception:
        pass
    try:
        return resp.json()
    except Exception:
        try:
            return resp.text
        except Exception:
            return None


def parse_sse(text: str) -> list[tuple[str, Any]]:
    frames: list[tuple[str, Any]] = []
    for block in re.split(r"\r?\n\r?\n", text):
        event, data_lines = None, []
        for line in re.split(r"\r?\n", block):
            if line.startswith(":") or not line:
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "event":
                event = v
            elif k == "data":
                data_lines.append(v)
        if event is None and not data_lines:
            continue
        data_s = "\n".join(data_lines)
        try:
            data: Any = json.loads(data_s) if data_s else None
        except ValueError:
            data = data_s
        frames.append((event or "message", data))
    return frames


def error_class(e: BaseException) -> str:
    """A coarse, comparable class for a failed call."""
    if isinstance(e, ValueError) and not isinstance(e, httpx.HTTPError):
        return "body-not-json"  # e.g. a 200 whose body was cut off (orjson.JSONDecodeError)
    if isinstance(e, httpx.TimeoutException):
        return "timeout"
    if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "connection-broken"
    if isinstance(e, httpx.ConnectError):
        return "connect-failed"
    return type(e).__name__


def do_raw(target: Target, actor: str | None, args: dict[str, Any]) -> Outcome:
    """Send the request line byte for byte (httpx would normalise `.`/`..` segments)."""
    method = args.get("method", "GET")
    path = args["path"]
    host_port = target.base_url.split("://", 1)[1]
    host, _, port = host_port.partition(":")
    body = b""
    headers = {"Host": host_port, "Connection": "close", **auth_headers(actor), **(args.get("headers") or {})}
    if "json" in args:
        body = json.dumps(args["json"]).encode()
        headers["Content-Type"] = "application/json"
    if body or method in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    desc = f"raw {method} {path}"
    chunks = []
    try:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(head.encode() + body)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if method == "HEAD" and b"\r\n\r\n" in b"".join(chunks):
                    break
    except OSError as e:
        if not chunks:
            return Outcome(None, {}, None, error=f"connection-broken: {type(e).__name__}: {e}", request=desc)
    raw = b"".join(chunks)
    head_b, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_b.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Outcome(None, {}, None, error=f"bad-response: {lines[0]!r}", request=desc)
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "chunked" in hdrs.get("transfer-encoding", ""):
        out, buf = b"", rest
        while buf:
            size_s, _, buf = buf.partition(b"\r\n")
            try:
                size = int(size_s.split(b";")[0], 16)
            except ValueError:
                break
            if size == 0:
                break
            out, buf = out + buf[:size], buf[size + 2 :]
        rest = out
    try:
        parsed: Any = json.loads(rest) if rest else None
    except ValueError:
        parsed = rest.decode(errors="replace")
    return Outcome(status, hdrs, parsed, request=desc)


def do_http(target: Target, actor: str | None, args: dict[str, Any]) -> Outcome:
    method = args.get("method", "GET")
    path = args["path"]
    if args.get("raw"):
        return do_raw(target, actor, args)
    headers = dict(args.get("headers") or {})
    kw: dict[str, Any] = {"headers": headers}
    if "json" in args:
        kw["json"] = args["json"]
    if "content" in args:
        kw["content"] = args["content"]
    if "params" in args:
        kw["params"] = args["params"]
    desc = f"{method} {path}"
    client = target.http(actor)
    if args.get("sse"):
        # Read at most `max_frames` frames or until the stream ends / `sse_timeout` passes.
        max_frames = int(args.get("max_frames", 1))
        deadline = time.monotonic() + float(args.get("sse_timeout", 15))
        buf = ""
        try:
            with client.stream(method, path, timeout=httpx.Timeout(20.0, connect=5.0), **kw) as r:
                hdrs = dict(r.headers)
                if not r.headers.get("content-type", "").startswith("text/event-stream"):
                    return Outcome(r.status_code, hdrs, _decode(r), request=desc)
                for chunk in r.iter_text():
                    buf += chunk
                    if len(parse_sse(buf.rsplit("\n\n", 1)[0] if "\n\n" in buf else "")) >= max_frames:
                        break
                    if time.monotonic() > deadline:
                        break
                frames = parse_sse(buf)[:max_frames]
                return Outcome(r.status_code, hdrs, None, sse=frames, request=desc)
        except httpx.HTTPError as e:
            frames = parse_sse(buf)[:max_frames] if buf else None
            return Outcome(None, {}, None, error=f"{error_class(e)}: {type(e).__name__}: {e}", sse=frames, request=desc)
    try:
        r = client.request(method, path, **kw)
    except httpx.HTTPError as e:
        target.drop_clients(actor)
        return Outcome(None, {}, None, error=f"{error_class(e)}: {type(e).__name__}: {e}", request=desc)
    if r.status_code >= 500:
        target.drop_clients(actor)
    return Outcome(r.status_code, dict(r.headers), _decode(r), request=desc)


def do_sdk(target: Target, actor: str | None, op: str, args: dict[str, Any]) -> Outcome:
    client, rec = target.sdk(actor)
    rec.clear()
    group, _, meth = op.partition(".")
    fn: Callable[..., Any] = getattr(getattr(client, group), meth)
    kwargs = dict(args)
    pos = [kwargs.pop(name) for name in POSITIONAL.get(op, []) if name in kwargs]
    desc = f"sdk {op}({json.dumps(args, default=str, sort_keys=True)})"
    try:
        result = fn(*pos, **kwargs)
        if op in ("runs.stream", "threads.join_stream", "runs.join_stream"):
            parts = []
            deadline = time.monotonic() + 30
            for part in result:
                parts.append((part.event, part.data))
                if time.monotonic() > deadline:
                    break
            result = parts
    except httpx.HTTPStatusError as e:  # SDK typed errors subclass this; runs.wait/join raise it plain
        resp = e.response
        if resp.status_code >= 500:
            target.drop_clients(actor)
        return Outcome(resp.status_code, dict(resp.headers), _decode(resp), request=desc)
    except Exception as e:  # transport errors, and bodies cut off after a 200 (JSON decode)
        target.drop_clients(actor)
        first = rec.responses[0] if rec.responses else None
        return Outcome(
            first.status_code if first is not None else None,
            dict(first.headers) if first is not None else {},
            None,
            error=f"{error_class(e)}: {type(e).__name__}: {e}",
            request=desc,
        )
    first = rec.responses[0] if rec.responses else None
    status = first.status_code if first is not None else None
    hdrs = dict(first.headers) if first is not None else {}
    if op in ("runs.stream",):
        return Outcome(status, hdrs, None, sse=result, request=desc)
    return Outcome(status, hdrs, result, request=desc)


def perform(target: Target, step: Step) -> Outcome:
    if step.op == "let":
        args = step.args
        # register fresh values under alias names, no request
        for name, kind in args.items():
            kind = str(kind)
            if kind == "uuid":
                target.aliases[name] = str(uuid.uuid4())
            elif kind.startswith("upper:"):  # an existing alias, upper-cased
                target.aliases[name] = target.aliases[kind[6:]].upper()
            elif kind.startswith("hex:"):  # an existing UUID alias without dashes
                target.aliases[name] = target.aliases[kind[4:]].replace("-", "")
            else:
                target.aliases[name] = kind
        return Outcome(None, {}, None, request="let")
    args = subst(step.args, target.aliases)
    if step.op == "sleep":
        time.sleep(float(args.get("seconds", 0.5)))
        return Outcome(None, {}, None, request="sleep")
    if step.op == "http":
        return do_http(target, step.actor, args)
    return do_sdk(target, step.actor, step.op, args)


def save_aliases(target: Target, step: Step, out: Outcome) -> None:
    if not step.save or out.body is None:
        return
    spec = step.save if isinstance(step.save, dict) else {step.save: _primary_id_key(out.body)}
    for name, key in spec.items():
        val: Any = out.body
        for part in (key or "").split("."):
            if not part:
                continue
            if isinstance(val, list):
                val = val[int(part)]
            elif isinstance(val, dict):
                val = val.get(part)
            else:
                val = None
        if val is not None:
            target.aliases[name] = str(val)


def _primary_id_key(body: Any) -> str:
    if isinstance(body, dict):
        for k in ("run_id", "cron_id", "assistant_id", "thread_id"):
            if k in body:
                return k
    return ""


# --------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------


def _graph_view(values: dict[str, Any], kind: str) -> dict[str, Any]:
    msgs = values.get("messages") or []
    last = msgs[-1] if msgs else None
    echo = last.get("content") if isinstance(last, dict) else None
    view: dict[str, Any] = {"echo": echo, "counter": values.get("counter")}
    if kind == "gateway":
        perms = values.get("seen_permissions")
        try:
            perms = json.loads(perms) if isinstance(perms, str) else perms
        except ValueError:
            pass
        view["user"] = values.get("seen_user")
        view["permissions"] = perms
    else:
        view["user"] = values.get("seen_auth_user_id")
        view["permissions"] = values.get("seen_auth_permissions")
    return view


def _gateway_extra(values: dict[str, Any]) -> dict[str, Any]:
    roles = values.get("seen_roles")
    try:
        roles = json.loads(roles) if isinstance(roles, str) else roles
    except ValueError:
        pass
    return {
        "header_user": values.get("seen_user"),
        "display_name": values.get("seen_display_name"),
        "roles": roles,
        "auth_user_id": values.get("seen_auth_user_id"),
    }


def _run_token_filter(obj: Any, token: str) -> bool:
    return token in json.dumps(obj, default=str)


def project(target: Target, body: Any) -> dict[str, Any]:
    """What of a successful response body is compared."""
    token = target.aliases.get("run", "\0")
    if body is None:
        return {"body": None}
    if isinstance(body, (bool, int, float, str)):
        return {"body": body}
    if isinstance(body, list):
        if all(isinstance(x, dict) for x in body):
            ids = []
            for x in body:
                k = _primary_id_key(x)
                ids.append(x.get(k) if k else json.dumps(x, sort_keys=True, default=str))
            out: dict[str, Any] = {"ids": sorted(normalize(ids, target.aliases)), "count": len(body)}
            if body and "checkpoint" in body[0]:  # history
                out = {"count": len(body)}
            return out
        return {"body": normalize(body, target.aliases)}
    if not isinstance(body, dict):
        return {"body": repr(body)}
    if "run_id" in body:
        return {
            "kind": "run",
            "id": normalize(body["run_id"], target.aliases),
            "thread": normalize(body.get("thread_id"), target.aliases),
            "metadata": normalize(body.get("metadata"), target.aliases),
        }
    if "cron_id" in body:
        return {
            "kind": "cron",
            "id": normalize(body["cron_id"], target.aliases),
            "thread": normalize(body.get("thread_id"), target.aliases),
            "metadata": normalize(body.get("metadata"), target.aliases),
        }
    if "assistant_id" in body and "graph_id" in body:
        return {
            "kind": "assistant",
            "id": normalize(body["assistant_id"], target.aliases),
            "graph_id": body.get("graph_id"),
            "metadata": normalize(body.get("metadata"), target.aliases),
        }
    if "thread_id" in body and "metadata" in body:
        return {
            "kind": "thread",
            "id": normalize(body["thread_id"], target.aliases),
            "metadata": normalize(body.get("metadata"), target.aliases),
        }
    if "namespace" in body and "key" in body:
        return {"kind": "item", "namespace": normalize(body["namespace"], target.aliases), "key": normalize(body["key"], target.aliases), "value": normalize(body.get("value"), target.aliases)}
    if "items" in body and isinstance(body["items"], list):
        items = [
            {"namespace": normalize(i.get("namespace"), target.aliases), "key": normalize(i.get("key"), target.aliases), "value": normalize(i.get("value"), target.aliases)}
            for i in body["items"]
            if _run_token_filter(i.get("namespace"), token)
        ]
        return {"kind": "items", "items": sorted(items, key=lambda i: json.dumps(i, sort_keys=True))}
    if "namespaces" in body and isinstance(body["namespaces"], list):
        nss = body["namespaces"]
        return {
            "kind": "namespaces",
            "namespaces": sorted(normalize([n for n in nss if _run_token_filter(n, token)], target.aliases)),
            "first_labels": sorted({n[0] for n in nss if n}),
        }
    if "values" in body and "next" in body:  # thread state
        vals = body.get("values") or {}
        return {"kind": "state", "graph": _graph_view(vals, target.kind) if vals else None}
    if "messages" in body or "counter" in body:  # run output (runs.wait / join)
        out = {"kind": "output", "output": _graph_view(body, target.kind)}
        if target.kind == "gateway":
            out["gw_extra"] = _gateway_extra(body)
        return out
    return {"body": normalize(body, target.aliases)}


def observe(target: Target, step: Step, out: Outcome) -> dict[str, Any]:
    obs: dict[str, Any] = {"status": out.status}
    if out.error:
        obs["error"] = out.error.split(":")[0]
        obs["error_text"] = out.error.split("\n")[0][:300]
    h = {k.lower(): v for k, v in out.headers.items()}
    obs["www_authenticate"] = "www-authenticate" in h
    if "x-pagination-total" in h:
        obs["total"] = h["x-pagination-total"]
    for name in ("location", "content-location", "x-pagination-next"):
        if name in h:
            obs[name] = normalize(h[name], target.aliases)
    ctype = h.get("content-type", "")
    if ctype:
        obs["ctype"] = ctype.split(";")[0].strip()
    if out.status is not None and out.status >= 400:
        if isinstance(out.body, dict):
            obs["detail"] = normalize(out.body.get("detail", out.body), target.aliases)
        else:
            obs["detail"] = normalize(out.body if out.body is None else str(out.body)[:300], target.aliases)
        return obs
    if out.sse is not None:
        events = [ev for ev, _ in out.sse]
        obs["events"] = events
        errs = [d for ev, d in out.sse if ev == "error"]
        if errs:
            obs["sse_error"] = normalize(errs[0], target.aliases)
        values = [d for ev, d in out.sse if ev == "values" and isinstance(d, dict)]
        if values:
            obs["output"] = _graph_view(values[-1], target.kind)
            if target.kind == "gateway":
                obs["gw_extra"] = _gateway_extra(values[-1])
        if out.sse:
            obs["first_event"] = out.sse[0][0]
        return obs
    if out.status is None and not out.error:
        return {}  # pseudo step
    obs.update(project(target, out.body))
    return obs


# --------------------------------------------------------------------------------------------
# Expectations
# --------------------------------------------------------------------------------------------


def _status_ok(want: Any, got: int | None) -> bool:
    if want == "2xx":
        return got is not None and 200 <= got < 300
    if want == "not2xx":
        return got is None or not (200 <= got < 300)
    if isinstance(want, (list, tuple, set)):
        return got in want
    return got == want


def _subset(want: Any, got: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in want.items())
    return want == got


def check(expect: dict[str, Any], obs: dict[str, Any], kind: str) -> list[str]:
    """Return human-readable mismatches between an expectation and an observation."""
    errs: list[str] = []

    def bad(key: str, want: Any, got: Any) -> None:
        errs.append(f"{key}: expected {json.dumps(want, default=str)}, got {json.dumps(got, default=str)}")

    for key, want in expect.items():
        if key == "status":
            if not _status_ok(want, obs.get("status")):
                bad("status", want, obs.get("status"))
        elif key in ("detail", "body", "metadata", "total", "ctype", "kind", "id", "graph_id", "first_event", "value", "key", "namespace", "items", "namespaces", "first_labels", "count", "events", "thread", "x-pagination-next", "location", "content-location"):
            if key == "total":
                want = str(want)
            if obs.get(key) != want:
                bad(key, want, obs.get(key))
        elif key == "detail_contains":
            if not isinstance(obs.get("detail"), str) or want not in obs["detail"]:
                bad("detail (contains)", want, obs.get("detail"))
        elif key == "metadata_has":
            if not _subset(want, obs.get("metadata")):
                bad("metadata (superset of)", want, obs.get("metadata"))
        elif key == "metadata_lacks":
            md = obs.get("metadata") or {}
            if any(k in md for k in want):
                bad("metadata (lacks keys)", want, md)
        elif key == "ids":
            if obs.get("ids") != sorted(want):
                bad("ids", sorted(want), obs.get("ids"))
        elif key == "ids_has":
            if not set(want) <= set(obs.get("ids") or []):
                bad("ids (include)", want, obs.get("ids"))
        elif key == "ids_lacks":
            if set(want) & set(obs.get("ids") or []):
                bad("ids (exclude)", want, obs.get("ids"))
        elif key == "output":
            if not _subset(want, obs.get("output")):
                bad("graph output (subset)", want, obs.get("output"))
        elif key == "gw_extra":
            if kind == "gateway" and not _subset(want, obs.get("gw_extra")):
                bad("graph sees (gateway headers)", want, obs.get("gw_extra"))
        elif key == "sse_error":
            if not _subset(want, obs.get("sse_error")):
                bad("first SSE error frame", want, obs.get("sse_error"))
        elif key == "events_has":
            if not set(want) <= set(obs.get("events") or []):
                bad("SSE events (include)", want, obs.get("events"))
        elif key == "www_authenticate":
            if obs.get("www_authenticate") != want:
                bad("WWW-Authenticate present", want, obs.get("www_authenticate"))
        elif key == "item":
            if not _subset(want, obs):
                bad("item", want, {k: obs.get(k) for k in ("namespace", "key", "value")})
        elif key == "error":
            if obs.get("error") != want:
                bad("client-side failure", want, obs.get("error_text"))
        else:
            raise KeyError(f"unknown expectation key {key!r}")
    if "error" in obs and "error" not in expect and expect.get("status") != "not2xx":
        errs.append(f"unexpected client-side failure: {obs['error_text']}")
    return errs


def expectation_for(step: Step, kind: str) -> dict[str, Any]:
    if kind == "gateway" and step.gw is not None:
        return step.gw
    return step.expect


# --------------------------------------------------------------------------------------------
# Running scenarios
# --------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    step: Step
    request: str
    obs: dict[str, Any]
    errors: list[str]


def run_scenario(target: Target, scenario: Scenario) -> list[StepResult]:
    target.reset()
    results = []
    for step in scenario.steps:
        out = perform(target, step)
        req = f"{step.actor or 'anon'}: {out.request}"
        if step.op == "http" and ("json" in step.args or "params" in step.args):
            extra = {k: step.args[k] for k in ("json", "params") if k in step.args}
            req += " " + json.dumps(subst(extra, target.aliases), default=str)
        save_aliases(target, step, out)
        obs = observe(target, step, out)
        errs = check(expectation_for(step, target.kind), obs, target.kind) if obs else []
        results.append(StepResult(step, req, obs, errs))
        if TRACE:
            print(f"[{target.kind}/{scenario.name}] {step.label or step.op}: {req}\n    -> {json.dumps(obs, default=str, sort_keys=True)}")
    return results


def format_failures(target_name: str, results: list[StepResult]) -> str:
    lines = []
    for i, r in enumerate(results):
        if r.errors:
            lbl = r.step.label or r.step.op
            lines.append(f"[{target_name}] step {i} ({lbl}): {r.request}")
            for e in r.errors:
                lines.append(f"      {e}")
            lines.append(f"      observed: {json.dumps(r.obs, default=str, sort_keys=True)}")
    return "\n".join(lines)


def assert_scenario(target: Target, scenario: Scenario) -> list[StepResult]:
    results = run_scenario(target, scenario)
    msg = format_failures(f"{target.kind}/{target.handler_set}", results)
    if msg:
        raise AssertionError(f"scenario {scenario.name} ({scenario.rows}) against {target.kind}:\n{msg}")
    return results


#: observation keys never compared between targets (gateway-only or inherently volatile)
FIDELITY_SKIP = {"gw_extra", "error_text"}


def compare(scenario: Scenario, ref: list[StepResult], gw: list[StepResult]) -> list[str]:
    problems = []
    for i, (r, g) in enumerate(zip(ref, gw)):
        step = r.step
        lbl = step.label or step.op
        if not r.obs and not g.obs:
            continue
        if step.differs:
            # deliberate difference: each side must meet its own expectation
            if r.errors:
                problems.append(f"step {i} ({lbl}) reference side of a deliberate difference [{step.differs}]: {'; '.join(r.errors)}")
            if g.errors:
                problems.append(
                    f"step {i} ({lbl}) [{step.differs}]\n      request: {g.request}\n      expected (graphguard): {json.dumps(step.gw, default=str)}\n      got: {json.dumps(g.obs, default=str, sort_keys=True)}\n      errors: {'; '.join(g.errors)}"
                )
            continue
        keys = (set(r.obs) | set(g.obs)) - FIDELITY_SKIP - set(step.ignore)
        diffs = {k: (r.obs.get(k), g.obs.get(k)) for k in sorted(keys) if r.obs.get(k) != g.obs.get(k)}
        if diffs:
            problems.append(
                f"step {i} ({lbl})\n      request: {g.request}\n      "
                + "\n      ".join(f"{k}: reference={json.dumps(a, default=str)} graphguard={json.dumps(b, default=str)}" for k, (a, b) in diffs.items())
            )
    if len(ref) != len(gw):
        problems.append(f"step count differs: {len(ref)} vs {len(gw)}")
    return problems


def assert_fidelity(reference: Target, gateway: Target, scenario: Scenario) -> None:
    ref = run_scenario(reference, scenario)
    gw = run_scenario(gateway, scenario)
    problems = compare(scenario, ref, gw)
    ref_fail = format_failures("reference", ref)
    if problems:
        extra = f"\n(note: the reference side itself missed expectations:\n{ref_fail})" if ref_fail else ""
        raise AssertionError(f"graphguard differs from LangGraph in-process auth, scenario {scenario.name} ({scenario.rows}):\n  " + "\n  ".join(problems) + extra)


def workroot(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
