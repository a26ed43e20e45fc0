"""Fixtures for the Redis tests: the shared Redis (one key prefix per test) and private redis-servers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor.queue.redis import RedisQueue

REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis (fails on CI when absent, skips elsewhere)."""
    if not _reachable(REDIS_URL):
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required on CI and is not reachable")
        pytest.skip(f"Redis at {REDIS_URL} not reachable")
    return REDIS_URL


@pytest.fixture
def stream_key(redis_url: str) -> Iterator[str]:
    """A stream key no other test uses; every key under it is deleted afterwards."""
    prefix = f"ctest:{uuid.uuid4().hex[:12]}"
    yield f"{prefix}:jobs"
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{prefix}:*"))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture
def rqueue(redis_url: str, stream_key: str) -> Iterator[RedisQueue]:
    """An empty RedisQueue with its group created."""
    q = RedisQueue(redis_url, stream=stream_key, group="ctest-workers")
    q.ensure_group()
    yield q
    q.close()


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
            if _reachable(self.url):
                return
            time.sleep(0.05)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then wait)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server with append-only persistence, stopped after the test."""
    srv = PrivateRedis(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
