"""Helpers for the Redis tests: private redis-servers, real worker processes, loops in threads."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import redis

from conveyor.worker import Worker


def reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free port, which a test may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on the same port and data directory; waits until it answers."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if reachable(self.url):
                return
            time.sleep(0.05)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then wait)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


SRC = Path(__file__).resolve().parents[2] / "src"
TEST_PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins"
GROUP = "ctest-workers"


def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    """os.environ plus a deployment's variables, with the source tree and test plugins importable."""
    full = {**os.environ, **env}
    full.pop("CONVEYOR_CONFIG", None)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), str(TEST_PLUGIN_DIR),
                                                     os.environ.get("PYTHONPATH", "")) if p)
    return full


class Spawner:
    """Starts real `conveyor` processes and kills whatever is left at the end of the test."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, env: dict[str, str] | None = None, log: str = "proc") -> subprocess.Popen[bytes]:
        """`python -m conveyor ARGS` with this deployment's environment; output goes to WORKDIR/LOG.log."""
        with open(self.workdir / f"{log}.log", "ab") as out:
            p = subprocess.Popen([sys.executable, "-m", "conveyor", "--log-level", "INFO", *args],
                                 env=subprocess_env(env or self.env), cwd=self.workdir, stdout=out,
                                 stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def worker(self, name: str, concurrency: int = 1, grace: float = 1.0) -> subprocess.Popen[bytes]:
        """A worker process named NAME."""
        return self.run("worker", "-c", str(concurrency), "--name", name, "--grace", str(grace), log=name)

    def python(self, code: str, log: str = "script") -> subprocess.Popen[bytes]:
        """A Python process running CODE in this deployment's environment."""
        with open(self.workdir / f"{log}.log", "ab") as out:
            p = subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(self.env), cwd=self.workdir,
                                 stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def output(self, log: str) -> str:
        """What a process wrote so far."""
        path = self.workdir / f"{log}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        """Kill every process still running."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


class Loops:
    """Runs objects with run()/stop() (Worker, Dispatcher, Scheduler) in threads of the test process."""

    def __init__(self, *loops: object) -> None:
        self.loops = loops
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        for lp in self.loops:
            kw = {"install_signals": False} if isinstance(lp, Worker) else {}
            t = threading.Thread(target=lp.run, kwargs=kw, daemon=True)  # type: ignore[attr-defined]
            t.start()
            self.threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        for lp in self.loops:
            lp.stop()  # type: ignore[attr-defined]
        for t in self.threads:
            t.join(timeout=60)


def wait_until(pred, timeout: float = 60.0, what: str = "condition", every: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll PRED until it returns something truthy; fail with WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
