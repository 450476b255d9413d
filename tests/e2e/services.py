"""Real PostgreSQL and Redis servers for the fleet tests, as processes in a temporary directory.

Nothing is mocked: Debian's `postgresql` and `redis-server` packages (scripts/test installs
them) run on free loopback ports, are stopped and restarted on the same data for fault tests,
and are stopped when the test module ends. PostgreSQL refuses to run as root, so when the
tests run as root (CI) the server runs as the `postgres` system user that Debian's package
creates, in a directory of its own under the system temporary directory (pytest's are private
to root), removed by `remove()`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_PASSWORD = "graphguard-test-pw"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("postgres")
    if which:
        return Path(which).parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/test does)")


class Postgres:
    """A PostgreSQL server in `root/pg` on a free port; `dsn` for clients."""

    def __init__(self, log: Path):
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="graphguard-pg-"))
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(PG_PASSWORD)
        if self.user:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--pwfile", str(pwfile),
                   "-A", "scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"])

    @property
    def dsn(self) -> str:
        return f"postgres://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def _demote(self):
        if self.user:
            user = self.user

            def fn() -> None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

            return fn
        return None

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(cmd, capture_output=True, preexec_fn=self._demote(), cwd=self.dir)
        if out.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {out.stdout.decode()} {out.stderr.decode()}")

    def start(self) -> None:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._demote(), start_new_session=True, cwd=self.dir,
        )
        log.close()
        wait_port(self.port)
        # Accepting TCP is not accepting queries: wait for the server to be ready.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def remove(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A redis-server on a free port, no persistence; `url` for clients."""

    def __init__(self, root: Path, log: Path, password: str | None = None):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.binary).exists():
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (scripts/test does)")
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/"

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.dir)]
        if self.password:
            cmd += ["--requirepass", self.password]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
